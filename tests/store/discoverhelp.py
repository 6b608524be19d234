"""Builders for other tools' model stores (tests/store): Ollama manifests and blobs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
MANIFEST_MEDIA = "application/vnd.docker.distribution.manifest.v2+json"


@dataclass(frozen=True)
class Stores:
    home: Path
    ollama: Path  # ~/.ollama/models
    lmstudio: Path  # ~/.lmstudio/models
    gpt4all: Path
    hf: Path  # the hub cache
    dirs: tuple[Path, Path]
    tiny_sha256: str


def link_or_copy(src: Path, dst: Path) -> Path:
    """A hardlink (same filesystem: no 98 MB copy), else a copy. Ollama would take either: a blob
    is opened by its path, and a hardlink is an ordinary file."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


def write_manifest(root: Path, rel: str, layers: list[dict], config_digest: str | None = None) -> Path:
    """An Ollama manifest as `ollama pull` writes it: manifests/<host>/<namespace>/<model>/<tag>."""
    path = root / "manifests" / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": config_digest or "sha256:" + "c" * 64,
            "size": 2,
        },
        "layers": layers,
    }
    path.write_text(json.dumps(manifest))
    return path


def add_blob(root: Path, data: bytes, media: str) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(data)
    return {"mediaType": media, "digest": f"sha256:{digest}", "size": len(data)}


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
