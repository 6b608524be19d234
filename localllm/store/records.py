"""sha256 records under <cache_dir>/.verified/, so a multi-GB file is hashed once, not on every load.

A record is keyed by the file's resolved path and holds its size, mtime and sha256, and what
the hash was checked against at download ("hub", "catalog", or null: nothing). A file checked
against the Hub's own sha256 is not rejected later for a catalog figure that disagrees.

    sha256_of(path)                   the file's sha256, from its record when that still holds
    remember(path, digest, ...)       write the record
    mismatch(path, size, sha256)      why a local file does not match, or None
    checked(path, catalog_sha)        (what it was checked against, its sha256) as records tell
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from localllm.store.locations import cache_dir
from localllm.store.values import VerifiedBy

__all__ = [
    "HASH_CHUNK",
    "SHA256_HEX",
    "checked",
    "current_record",
    "hash_file",
    "mismatch",
    "read_record",
    "record_path",
    "remember",
    "sha256_of",
]

log = logging.getLogger(__name__)

HASH_CHUNK = 8 * 1024**2
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def record_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / ".verified" / f"{key}.json"


def sha256_of(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so it is computed once."""
    data = current_record(path)
    if data is not None:
        return data["sha256"]
    st = path.stat()
    digest = hash_file(path).hexdigest()
    remember(path, digest, st)
    return digest


def hash_file(path: Path, limit: int | None = None) -> Any:
    """A sha256 object fed with the file's first `limit` bytes (all of it by default)."""
    h = hashlib.sha256()
    left = float("inf") if limit is None else limit
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(int(min(HASH_CHUNK, left)))):
            h.update(chunk)
            left -= len(chunk)
    return h


def read_record(path: Path) -> dict | None:
    try:
        data = json.loads(record_path(path).read_text())
        if isinstance(data["size"], int) and isinstance(data["mtime_ns"], int) and SHA256_HEX.fullmatch(data["sha256"]):
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def current_record(path: Path) -> dict | None:
    """The file's sha256 record if it still describes the file (same size and mtime)."""
    data = read_record(path)
    if data is None:
        return None
    st = path.stat()
    return data if data["size"] == st.st_size and data["mtime_ns"] == st.st_mtime_ns else None


def remember(
    path: Path, digest: str, st: os.stat_result | None = None, *, verified_by: VerifiedBy | None = None
) -> None:
    st = st or path.stat()
    rec = record_path(path)
    try:
        rec.parent.mkdir(parents=True, exist_ok=True)
        tmp = rec.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps(
                {
                    "path": str(path.resolve()),
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "sha256": digest,
                    "verified_by": verified_by,
                }
            )
        )
        os.replace(tmp, rec)
    except OSError as exc:  # a read-only cache still works, it just rehashes
        log.debug("could not record the sha256 of %s: %s", path, exc)


def mismatch(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why a local file does not match the expected size/sha256, or None if it does."""
    rec = current_record(path)
    if rec is not None and rec.get("verified_by") == "hub":
        # checked against the Hub's own size and LFS sha256 when it was downloaded: the Hub outranks
        # a catalog figure (a catalog that disagrees was a warning at download, not a refusal)
        if (size is not None and rec["size"] != size) or (sha256 and rec["sha256"] != sha256.lower()):
            log.debug("%s: the catalog disagrees with the Hub-verified download; keeping the Hub's", path)
        return None
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"it is {actual:,} bytes, expected {size:,}"
    if not sha256:
        # no hash in the catalog: hold the file to the hash it had when it was downloaded, if recorded
        rec = read_record(path)
        sha256 = rec["sha256"] if rec else None
    if sha256:
        digest = sha256_of(path)
        if digest != sha256.lower():
            return f"its sha256 is {digest}, expected {sha256.lower()}"
    return None


def checked(path: Path, catalog_sha: str | None) -> tuple[VerifiedBy | None, str | None]:
    """(what a verified file on disk was checked against, its sha256) as far as records tell."""
    rec = current_record(path)
    if rec is not None and rec.get("verified_by") in ("hub", "catalog"):
        return rec["verified_by"], rec["sha256"]
    if catalog_sha and (rec is None or rec["sha256"] == catalog_sha.lower()):
        return "catalog", catalog_sha.lower()  # resolve() held it to the catalog's sha256
    return None, rec["sha256"] if rec else None
