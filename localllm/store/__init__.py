"""Model files on disk: find them, download them, verify them.

    fetch(variant)   -> Path   cached (ours or the Hugging Face cache) or downloaded + verified
    pull(variant)    -> Pulled   the same, saying how the file was verified and what disagreed
    resolve(variant) -> Path | None   a verified local copy, never touching the network
    list_local()     -> list[LocalFile]   what is on disk
    cache_dir()      -> Path   where downloads go: <localllm.paths.home()>/models

Downloads go through huggingface_hub's lower-level API (`get_hf_file_metadata` for the
HEAD, `file_download.http_get` for the body) into a `.part` file next to the target, so
that an interrupted download is resumed with an HTTP Range request on the next call and
a file only takes its final name after its size and sha256 check out (`os.replace`).
A file that fails the check is deleted: nothing unverified is ever left where a later
`resolve`/`fetch` would pick it up.

What a download is checked against comes from the Hub's own metadata for that file (the
HEAD's X-Linked-Size and X-Linked-Etag, which for an LFS file is its sha256, the LFS oid),
not from hand-typed catalog numbers: a catalog size or sha256 that disagrees with the Hub's
is a logged warning (and `Pulled.warnings`), never a refusal. The catalog's figures are
used only where the Hub gives none. A file with no sha256 anywhere (a non-LFS file, a
catalog without one) is hashed as it is written and the hash is recorded, so later loads
are held to it; `Pulled.unverified` names it. The sha256 is computed while the bytes are
written, so a multi-GB file is not read back a second time.

Free disk: checked before any request (the catalog's size, an estimate is close enough),
again once the Hub's size is known, and, where no size is known at all, kept above
DISK_HEADROOM_BYTES while the file is written. A disk that fills during a download
(ENOSPC, or that floor) deletes the partial file and raises DiskFullError: a `.part` that
can never complete would only keep the disk full.

The environment is read at call time: LOCALLLM_HOME, LOCALLLM_OFFLINE / HF_HUB_OFFLINE,
HF_ENDPOINT and HF_HOME / HF_HUB_CACHE. huggingface_hub itself reads HF_ENDPOINT and
HF_HOME once, at its import (`huggingface_hub.constants.ENDPOINT`, `HF_HUB_CACHE`), so
we pass the endpoint and the cache folder to it explicitly on every call.

An ONNX variant (format "onnx") is a folder mirrored from its repository, present only
once every file arrived and it passed `validate_onnx_folder`; fetch/resolve return its
`.onnx` path (several variants of a repository share one folder; the path names which).
sha256 results are remembered under `<cache_dir>/.verified/`, so a multi-GB file is hashed
once, not on every load.

The modules under it:

    values.py     VariantLike (what is read of a variant), LocalFile, Pulled, RepoFile
    locations.py  cache_dir, hf_cache_dir, is_offline; a variant's cache path and URL
    records.py    sha256 records: sha256_of, and what a file on disk was checked against
    download.py   one file: HEAD, resumable body into a .part, checks, free disk, errors
    onnx.py       ONNX folders: their files, the completion marker, the folder download
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from localllm.catalog import load_catalog
from localllm.errors import ModelUnavailableError
from localllm.store.download import DISK_HEADROOM_BYTES, download_file, unavailable
from localllm.store.locations import (
    DEFAULT_ENDPOINT,
    DEFAULT_REVISION,
    cache_dir,
    cache_path,
    expected_size,
    hf_cache_dir,
    is_offline,
    is_onnx,
    package_file,
    source_of,
)
from localllm.store.onnx import fetch_onnx, onnx_complete, onnx_on_disk
from localllm.store.records import checked, mismatch, sha256_of
from localllm.store.values import LocalFile, ProgressCallback, Pulled, VariantLike

__all__ = [
    "DEFAULT_ENDPOINT",
    "DISK_HEADROOM_BYTES",
    "LocalFile",
    "ProgressCallback",
    "Pulled",
    "VariantLike",
    "cache_dir",
    "fetch",
    "hf_cache_dir",
    "is_offline",
    "list_local",
    "pull",
    "resolve",
    "sha256_of",
]

log = logging.getLogger(__name__)


def resolve(variant: VariantLike) -> Path | None:
    """A verified local copy of a variant (ours, the HF cache's or the package's), or None. No network."""
    packaged = package_file(variant)
    if packaged is not None:
        return packaged if packaged.is_file() or (packaged.is_dir() and is_onnx(variant)) else None
    if not getattr(variant, "repo", None) or not getattr(variant, "filename", None):
        return None
    if is_onnx(variant):
        return onnx_complete(variant)
    size, sha = expected_size(variant), variant.sha256
    ours = cache_path(variant)
    if ours.is_file():
        why = mismatch(ours, size, sha)
        if why is None:
            return ours
        log.warning("ignoring %s: %s", ours, why)
    hf = _hf_cached(variant)
    if hf is not None:
        why = mismatch(hf, size, sha)
        if why is None:
            return hf
        log.warning("ignoring the Hugging Face cache copy %s: %s", hf, why)
    return None


def _hf_cached(variant: VariantLike) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    repo, filename = source_of(variant)
    try:
        found = try_to_load_from_cache(repo, filename, cache_dir=str(hf_cache_dir()), revision=DEFAULT_REVISION)
    except (OSError, ValueError) as exc:
        log.debug("HF cache lookup for %s failed: %s", variant.name, exc)
        return None
    return Path(found) if isinstance(found, str) else None


def list_local(catalog: Any | None = None) -> list[LocalFile]:
    """Model files on disk: our cache, plus Hugging Face cache hits for catalog variants.

    `catalog` defaults to `localllm.catalog.load_catalog()`. Files are not re-hashed here.
    """
    if catalog is None:
        catalog = load_catalog()
    variants: Iterable[Any] = getattr(catalog, "variants", ())
    by_target: dict[Path, str] = {}
    out: list[LocalFile] = []
    seen: set[Path] = set()
    for v in variants:
        packaged = package_file(v)
        if packaged is not None:
            if packaged.is_file():
                out.append(LocalFile(packaged, packaged.stat().st_size, v.name, "package"))
                seen.add(packaged.resolve())
            continue
        if not getattr(v, "repo", None) or not getattr(v, "filename", None):
            continue
        try:
            by_target[cache_path(v).resolve()] = v.name
        except ModelUnavailableError:
            continue
        hf = _hf_cached(v)
        if hf is not None and hf.resolve() not in seen:
            seen.add(hf.resolve())
            out.append(LocalFile(hf, hf.stat().st_size, v.name, "huggingface"))
    root = cache_dir()
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            if (
                p.is_file()
                and not p.name.startswith(".")
                and p.suffix not in (".part", ".json", ".lock", ".tmp")
                and ".verified" not in p.parts
                and p.resolve() not in seen
            ):
                seen.add(p.resolve())
                out.append(LocalFile(p, p.stat().st_size, by_target.get(p.resolve()), "localllm"))
    return sorted(out, key=lambda f: (f.variant is None, f.variant or "", str(f.path)))


def fetch(
    variant: VariantLike,
    *,
    progress: ProgressCallback | None = None,
    offline: bool | None = None,
    force_download: bool = False,
) -> Path:
    """A verified local path for a variant: from a cache, the package, or downloaded now.

    Args:
        variant: a catalog Variant (name, repo, filename, size, sha256; path for packaged files).
        progress: called as progress(done_bytes, total_bytes) while downloading.
        offline: never touch the network; default from LOCALLLM_OFFLINE / HF_HUB_OFFLINE.
        force_download: download again even when a verified copy exists.

    Raises:
        ModelUnavailableError: offline and not cached, or the source cannot be reached.
        InsufficientDiskError: not enough free disk for the download (DiskFullError: it filled meanwhile).
        ChecksumMismatchError: the download's size or sha256 differs from the Hub's (the file is deleted).
    """
    return pull(variant, progress=progress, offline=offline, force_download=force_download).path


def pull(
    variant: VariantLike,
    *,
    progress: ProgressCallback | None = None,
    offline: bool | None = None,
    force_download: bool = False,
) -> Pulled:
    """Like `fetch`, but says what the file was verified against and which catalog figures disagreed.

    Args and Raises: as `fetch`.
    """
    packaged = package_file(variant)
    if packaged is not None:
        if packaged.is_file():
            return Pulled(packaged, downloaded=False, verified_by="package")
        raise ModelUnavailableError(
            f"{variant.name} should ship inside the package at {packaged}, but that file is missing. "
            "Reinstall localllm."
        )
    if not force_download:
        found = resolve(variant)  # a complete folder for ONNX variants
        if found is not None:
            log.debug("%s: using %s", variant.name, found)
            return _on_disk(variant, found)
    target = cache_path(variant)
    if is_offline(offline):
        what = "the model folder is not complete in the cache" if is_onnx(variant) else "the file is not cached"
        raise unavailable(
            variant, target, f"offline mode is on (LOCALLLM_OFFLINE / HF_HUB_OFFLINE or offline=True) and {what}"
        )
    if is_onnx(variant):
        return fetch_onnx(variant, target, progress=progress, force_download=force_download)
    target.parent.mkdir(parents=True, exist_ok=True)
    import filelock  # a dependency of huggingface_hub

    # one download of a file at a time, across processes: two writers would interleave the .part file
    with filelock.FileLock(str(target) + ".lock"):
        if not force_download and target.is_file() and mismatch(target, expected_size(variant), variant.sha256) is None:
            return _on_disk(variant, target)  # another process finished it while we waited
        got = download_file(variant, target, progress)
        return Pulled(
            target,
            downloaded=True,
            verified_by=got.verified_by,
            sha256=got.sha256,
            unverified=() if got.verified_by else (source_of(variant)[1],),
            warnings=got.warnings,
        )


def _on_disk(variant: VariantLike, path: Path) -> Pulled:
    """How a file that `resolve` accepted was verified, from its record (no hashing here)."""
    if is_onnx(variant):
        return onnx_on_disk(variant, path)
    verified_by, sha = checked(path, variant.sha256)
    return Pulled(
        path,
        downloaded=False,
        verified_by=verified_by,
        sha256=sha,
        unverified=() if verified_by else (source_of(variant)[1],),
    )
