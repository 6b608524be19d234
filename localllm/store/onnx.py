"""ONNX variants: a folder mirrored from its repository, present only once it is complete.

An ONNX variant (format "onnx") is the decoder `.onnx`, its external data (`<file>_data` or
`<file>.data`, where published), config.json, tokenizer.json, tokenizer_config.json, and
generation_config.json, genai_config.json and chat_template.jinja where the repository has
them, mirrored under `<cache>/<owner>--<repo>/`. Each file is downloaded like a GGUF; the
variant counts as present only once `.<file>.complete` is written beside the `.onnx`, after
every file arrived and the folder passed `validate_onnx_folder`.

    onnx_complete(variant)   the .onnx path when the folder is complete, else None
    onnx_on_disk(variant)    how a complete folder's files were verified (a Pulled)
    fetch_onnx(variant, ...) download the folder, then write the marker
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from localllm.errors import ModelUnavailableError
from localllm.formats.onnx_folder import validate_onnx_folder
from localllm.store.download import check_disk, download_file
from localllm.store.locations import cache_dir, cache_path, source_of
from localllm.store.records import checked, mismatch
from localllm.store.values import ProgressCallback, Pulled, RepoFile, VariantLike, VerifiedBy

__all__ = [
    "ONNX_DATA_SUFFIXES",
    "ONNX_OPTIONAL_FILES",
    "ONNX_REQUIRED_FILES",
    "fetch_onnx",
    "marker_path",
    "onnx_complete",
    "onnx_files",
    "onnx_on_disk",
]

log = logging.getLogger(__name__)

# Files beside an ONNX decoder, at the model folder's root (the .onnx's folder, or its
# parent when that is `onnx/`, as onnx-community and optimum publish them). Required ones
# must download; optional ones may be missing upstream (a 404 is accepted).
ONNX_REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
ONNX_OPTIONAL_FILES = ("generation_config.json", "genai_config.json", "chat_template.jinja")
ONNX_DATA_SUFFIXES = ("_data", ".data")  # external data: model.onnx_data (optimum) or model.onnx.data (genai)
_NOT_FOUND = ("RemoteEntryNotFoundError", "EntryNotFoundError")


def onnx_files(variant: VariantLike) -> list[tuple[str, bool]]:
    """(repo path, required) for every file of an ONNX variant, the decoder first."""
    _, filename = source_of(variant)
    parent = filename.rsplit("/", 1)[0] if "/" in filename else ""
    root = (
        parent.rsplit("/", 1)[0]
        if parent.split("/")[-1] == "onnx" and "/" in parent
        else ("" if parent == "onnx" else parent)
    )
    prefix = f"{root}/" if root else ""
    files = [(filename, True)] + [(filename + s, False) for s in ONNX_DATA_SUFFIXES]
    files += [(prefix + n, True) for n in ONNX_REQUIRED_FILES] + [(prefix + n, False) for n in ONNX_OPTIONAL_FILES]
    return files


def marker_path(variant: VariantLike) -> Path:
    """`.<file>.complete` beside the .onnx: written once the whole folder arrived and passed validation."""
    target = cache_path(variant)
    return target.with_name(f".{target.name}.complete")


def onnx_complete(variant: VariantLike) -> Path | None:
    """The .onnx path when the variant's folder is complete: marker written, every file there at its size."""
    marker = marker_path(variant)
    try:
        record = json.loads(marker.read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    root = cache_dir() / source_of(variant)[0].replace("/", "--")
    for rel, size in files.items():
        p = root.joinpath(*rel.split("/"))
        if not p.is_file() or p.stat().st_size != size:
            log.warning("ignoring %s: %s is missing or changed", cache_path(variant), p)
            return None
    return cache_path(variant)


def onnx_on_disk(variant: VariantLike, path: Path) -> Pulled:
    """How a complete ONNX folder's files were verified, from their records."""
    root = cache_dir() / source_of(variant)[0].replace("/", "--")
    try:
        files = list(json.loads(marker_path(variant).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        files = []
    checks = {rel: checked(root.joinpath(*rel.split("/")), None) for rel in files}
    verified_by, sha = checks.get(source_of(variant)[1], (None, None))
    return Pulled(
        path,
        downloaded=False,
        verified_by=verified_by,
        sha256=sha,
        unverified=tuple(rel for rel, (by, _) in checks.items() if by is None),
    )


def fetch_onnx(
    variant: VariantLike, target: Path, *, progress: ProgressCallback | None, force_download: bool
) -> Pulled:
    """Download an ONNX variant's folder (fetch() has already looked in the cache and at offline mode)."""
    repo = source_of(variant)[0]
    root = cache_dir() / repo.replace("/", "--")
    target.parent.mkdir(parents=True, exist_ok=True)
    import filelock  # a dependency of huggingface_hub

    marker = marker_path(variant)
    with filelock.FileLock(str(marker) + ".lock"):
        if not force_download and (found := onnx_complete(variant)) is not None:
            return onnx_on_disk(variant, found)  # another process completed it while we waited
        marker.unlink(missing_ok=True)
        files = onnx_files(variant)
        have = sum(p.stat().st_size for rel, _ in files if (p := root.joinpath(*rel.split("/"))).is_file())
        if variant.size:  # disk first, before any network: the catalog's size is close enough
            check_disk(variant, root, max(variant.size - have, 0))
        got: dict[str, int] = {}
        checks: dict[str, tuple[VerifiedBy | None, str | None]] = {}
        warnings: list[str] = []
        done = 0
        total = variant.size or None
        for rel, required in files:
            path = root.joinpath(*rel.split("/"))
            if not force_download and path.is_file() and mismatch(path, None, None) is None:
                got[rel] = path.stat().st_size
                checks[rel] = checked(path, None)
                done += got[rel]
                continue
            one = RepoFile(name=f"{variant.name} ({rel})", repo=repo, filename=rel)

            def report(n: int, _t: int | None, base: int = done) -> None:
                if progress is not None:
                    progress(base + n, max(total or 0, base + n))

            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                one_got = download_file(one, path, report if progress is not None else None)
            except ModelUnavailableError as exc:
                if not required and type(exc.__cause__).__name__ in _NOT_FOUND:
                    log.debug("%s: %s is not in the repository (optional)", variant.name, rel)
                    continue
                raise
            got[rel] = path.stat().st_size
            checks[rel] = (one_got.verified_by, one_got.sha256)
            warnings += one_got.warnings
            done += got[rel]
        validate_onnx_folder(target)  # InvalidModelError names the bad file; no marker is written
        tmp = marker.with_name(marker.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"variant": variant.name, "files": got}))
        os.replace(tmp, marker)
    verified_by, sha = checks[source_of(variant)[1]]
    return Pulled(
        target,
        downloaded=True,
        verified_by=verified_by,
        sha256=sha,
        unverified=tuple(rel for rel, (by, _) in checks.items() if by is None),
        warnings=tuple(warnings),
    )
