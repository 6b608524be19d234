"""One file from the Hub into the cache: resumable, checked, atomic, stopped before the disk fills.

    download_file(variant, target, progress)  -> Got: the HEAD, the body into <target>.part
                                                 (resumed with a Range request), size and
                                                 sha256 checked, then os.replace
    check_disk(variant, folder, needed)       InsufficientDiskError unless there is room plus
                                                 DISK_HEADROOM_BYTES
    unavailable(variant, target, why)         the ModelUnavailableError that says how to get
                                                 the file by hand

huggingface_hub's lower-level API does the HTTP (`get_hf_file_metadata`, `file_download.http_get`);
the sha256 is computed while the bytes are written, so a multi-GB file is not read back.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localllm import __version__
from localllm.errors import ChecksumMismatchError, DiskFullError, InsufficientDiskError, ModelUnavailableError
from localllm.store.locations import expected_size, file_url, hub_endpoint, source_of
from localllm.store.records import SHA256_HEX, hash_file, remember
from localllm.store.values import ProgressCallback, RepoFile, VariantLike, VerifiedBy
from localllm.units import file_size

__all__ = [
    "DISK_HEADROOM_BYTES",
    "METADATA_TIMEOUT_S",
    "Got",
    "check_disk",
    "download_file",
    "part_paths",
    "unavailable",
]

log = logging.getLogger(__name__)

METADATA_TIMEOUT_S = 10.0  # HEAD request; huggingface_hub's DEFAULT_ETAG_TIMEOUT
# Body reads time out after huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT (10 s by default,
# per read, not per file); http_get resumes up to 5 times on a dropped connection.
# keep this much free after a download (and, when a file's size is not known, while it is written):
# a full disk breaks everything else
DISK_HEADROOM_BYTES = 256 * 1024**2
_DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # no space / over quota


def part_paths(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".part"), target.with_name(target.name + ".part.json")


def check_disk(variant: VariantLike, folder: Path, needed: int | None) -> None:
    """Room for `needed` more bytes plus the headroom; with `needed` None (size unknown), the headroom alone."""
    free = shutil.disk_usage(folder).free
    if free < (needed or 0) + DISK_HEADROOM_BYTES:
        if needed is None:
            what = (
                f"its size is not known before the download, so at least {file_size(DISK_HEADROOM_BYTES)} must be "
                f"free to start (and stays free while it downloads), but {folder} has {file_size(free)} free"
            )
        else:
            what = (
                f"{file_size(needed)} needed plus {file_size(DISK_HEADROOM_BYTES)} kept free, but {folder} has "
                f"{file_size(free)} free"
            )
        raise InsufficientDiskError(
            f"Not enough free disk to download {variant.name}: {what}. Free some space, or point LOCALLLM_HOME at "
            "a bigger disk.",
            needed=(needed or 0) + DISK_HEADROOM_BYTES,
            available=free,
        )


@dataclass(frozen=True)
class Got:
    """One downloaded file: its sha256, what that was checked against, and what disagreed with the Hub."""

    sha256: str
    verified_by: VerifiedBy | None
    warnings: tuple[str, ...]


def download_file(variant: VariantLike, target: Path, progress: ProgressCallback | None) -> Got:
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.utils import build_hf_headers

    part, part_meta = part_paths(target)
    have = part.stat().st_size if part.is_file() else 0
    if variant.size:  # disk first, before any network: a size estimate is close enough here
        check_disk(variant, target.parent, max(variant.size - have, 0))

    endpoint = hub_endpoint()
    url = file_url(variant, endpoint)
    headers = build_hf_headers(library_name="localllm", library_version=__version__)
    try:
        meta = get_hf_file_metadata(url, timeout=METADATA_TIMEOUT_S, headers=headers, endpoint=endpoint)
    except Exception as exc:  # connection refused, DNS, 404, 401 (gated), offline mode...
        raise unavailable(variant, target, _why(exc)) from exc

    # The Hub's own figures for this file win; the catalog's count only where the Hub gives none.
    catalog_size, catalog_sha = expected_size(variant), (variant.sha256 or "").lower() or None
    etag = (meta.etag or "").strip('"').lower()
    hub_sha = etag if SHA256_HEX.fullmatch(etag) else None  # an LFS file's ETag is its sha256 (the LFS oid)
    warnings = []
    if catalog_size is not None and meta.size is not None and meta.size != catalog_size:
        warnings.append(
            f"{variant.name}: the catalog says {catalog_size:,} bytes but the Hub's file {url} is "
            f"{meta.size:,} bytes; checking the download against the Hub's size. The catalog entry "
            "is out of date (models.toml)."
        )
    if catalog_sha and hub_sha and hub_sha != catalog_sha:
        warnings.append(
            f"{variant.name}: the catalog's sha256 {catalog_sha} differs from the Hub's {hub_sha} for "
            f"{url}; checking the download against the Hub's. The catalog entry is out of date "
            "(models.toml)."
        )
    for w in warnings:
        log.warning("%s", w)
    total = meta.size if meta.size is not None else catalog_size
    sha: str | None
    verified_by: VerifiedBy | None
    if hub_sha:
        sha, verified_by, against = hub_sha, "hub", "the Hub's"
    elif catalog_sha:
        sha, verified_by, against = catalog_sha, "catalog", "the catalog's"
    else:
        sha, verified_by, against = None, None, ""

    # resume only a partial file of this very version of the file
    try:
        previous = json.loads(part_meta.read_text())
    except (OSError, ValueError):
        previous = None
    if have and (
        not isinstance(previous, dict) or previous.get("etag") != meta.etag or (total is not None and have > total)
    ):
        log.info("discarding a partial download of another version: %s", part)
        part.unlink(missing_ok=True)
        have = 0
    if total is None:
        check_disk(variant, target.parent, None)  # nothing to size it by: at least keep the floor
    elif total != variant.size:
        check_disk(variant, target.parent, max(total - have, 0))  # the Hub's size, not the catalog's
    part_meta.write_text(json.dumps({"etag": meta.etag, "url": url, "size": total, "commit": meta.commit_hash}))

    download_url = meta.location if getattr(meta, "xet_file_data", None) is None else url
    log.info("downloading %s from %s (%s bytes, resuming at %d)", variant.name, download_url, total, have)
    digest = _http_get(variant, target, download_url, part, have, total, headers, progress)

    actual = part.stat().st_size
    why = None
    if total is not None and actual != total:
        source = "the Hub's" if meta.size is not None else "the catalog's"
        why = f"it is {actual:,} bytes, {source} size is {total:,}"
    elif sha and digest != sha:
        why = f"its sha256 is {digest}, {against} is {sha}"
    if why is not None:
        part.unlink(missing_ok=True)
        part_meta.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"The download of {variant.name} from {url} is corrupt: {why}. The file was deleted; run the command "
            "again to download it afresh. If this keeps happening, the source repository has changed."
        )
    os.replace(part, target)
    part_meta.unlink(missing_ok=True)
    # a rename keeps size and mtime: the record holds without hashing again; with no published sha256 it is
    # the only thing later loads can hold the file to
    remember(target, digest, verified_by=verified_by)
    if verified_by is None:
        # a whole model unverified deserves a warning; an ONNX folder's small non-LFS side files are routine
        log.log(
            logging.INFO if isinstance(variant, RepoFile) else logging.WARNING,
            "%s: no published sha256 to check %s against (no LFS oid from the Hub, none in the catalog); "
            "recorded its sha256 %s",
            variant.name,
            target.name,
            digest,
        )
    return Got(digest, verified_by, tuple(warnings))


class _DiskFull(Exception):
    """Raised inside http_get's write loop; turned into DiskFullError once the file is closed."""

    def __init__(self, free: int, reason: str):
        super().__init__(reason)
        self.free, self.reason = free, reason


class _PartWriter:
    """The .part file as http_get writes to it: hashes what is written and stops when the disk fills.

    With `keep_floor` (no size known beforehand) it also stops before the free disk falls under
    DISK_HEADROOM_BYTES, instead of writing until nothing is left.
    """

    def __init__(self, f: Any, hasher: Any, folder: Path, *, keep_floor: bool):
        self._f, self.hasher, self._folder, self._keep_floor = f, hasher, folder, keep_floor
        self.hashed = True  # False once http_get rewinds (a server that ignored Range): hash the file instead

    def write(self, data: bytes) -> int:
        if self._keep_floor:
            free = shutil.disk_usage(self._folder).free
            if free - len(data) < DISK_HEADROOM_BYTES:
                raise _DiskFull(free, f"the free disk would fall under the {file_size(DISK_HEADROOM_BYTES)} kept free")
        view = memoryview(data)
        try:
            while view:  # an unbuffered write may take only part of it (it does just before the disk is full)
                n = self._f.write(view)
                view = view[n:]
        except OSError as exc:
            if exc.errno in _DISK_FULL_ERRNOS:
                raise _DiskFull(shutil.disk_usage(self._folder).free, f"the disk is full ({exc.strerror})") from exc
            raise
        self.hasher.update(data)
        return len(data)

    def tell(self) -> int:
        return self._f.tell()

    def seek(self, *args: Any) -> int:
        self.hashed = False
        return self._f.seek(*args)

    def truncate(self, *args: Any) -> int:
        self.hashed = False
        return self._f.truncate(*args)

    def flush(self) -> None:
        self._f.flush()


def _http_get(
    variant,
    target: Path,
    url: str,
    part: Path,
    have: int,
    total: int | None,
    headers: dict,
    progress: ProgressCallback | None,
) -> str:
    """Download into `part` (appending after `have` bytes); returns the whole file's sha256."""
    from huggingface_hub.file_download import http_get

    bar = _progress_class(progress, total)
    hasher = hash_file(part, have) if have else hashlib.sha256()  # the saved bytes first, then as they arrive
    try:
        # unbuffered: every byte is on disk (or has failed) when write returns, none left for close() to fail on
        with open(part, "ab", buffering=0) as f:
            writer = _PartWriter(f, hasher, part.parent, keep_floor=total is None)
            http_get(
                url,
                writer,  # type: ignore[arg-type]  # a file-like: http_get calls write, tell, seek, truncate, flush
                resume_size=have,
                headers=dict(headers),
                expected_size=total,
                tqdm_class=bar,
                displayed_filename=variant.name,
            )
    except _DiskFull as full:
        written = part.stat().st_size if part.is_file() else 0
        part.unlink(missing_ok=True)  # it can never complete here, and it keeps the disk full
        part_paths(target)[1].unlink(missing_ok=True)
        of = f" of {total:,}" if total is not None else " (its size was not known beforehand)"
        needed = (total if total is not None else written) + DISK_HEADROOM_BYTES
        raise DiskFullError(
            f"The disk filled while downloading {variant.name}: {full.reason} after {written:,} bytes{of} were "
            f"written to {part.parent}, which has {file_size(full.free)} free. The partial file was deleted. Free at "
            f"least {file_size(needed)} (the file plus {file_size(DISK_HEADROOM_BYTES)} kept free), or point "
            "LOCALLLM_HOME at a bigger disk, then run the command again.",
            needed=needed,
            available=full.free,
            written=written,
            path=str(part),
        ) from full.__cause__
    except OSError as exc:
        if "Consistency check failed" in str(exc):  # the server sent a different number of bytes
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"The download of {variant.name} from {url} has the wrong size ({exc}). The partial file was "
                "deleted; run the command again."
            ) from exc
        raise unavailable(variant, target, _why(exc), partial=part) from exc
    except Exception as exc:
        # huggingface_hub's HTTP client (httpx2 in 2.x, httpx in 1.x) or its own errors: the network failed
        if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2", "huggingface_hub"):
            raise unavailable(variant, target, _why(exc), partial=part) from exc
        raise
    return hasher.hexdigest() if writer.hashed else hash_file(part).hexdigest()


def _progress_class(progress: ProgressCallback | None, total: int | None):
    """A tqdm stand-in for http_get that forwards to our progress(done, total) callback."""

    class _Bar:
        def __init__(self, *args, total=None, initial=0, **kwargs):
            self.n = initial or 0
            self.total = total if total is not None else fallback_total
            self._report()

        def update(self, n=1):
            self.n += n
            self._report()

        def _report(self):
            if progress is not None:
                progress(self.n, self.total)

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    fallback_total = total
    return _Bar


def _why(exc: BaseException) -> str:
    name = type(exc).__name__
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if name in ("GatedRepoError",) or "401" in text or "403" in text:
        return (
            f"the repository refused access ({name}: {text}); it may be gated: accept its license on "
            "huggingface.co and log in with `hf auth login`"
        )
    if name in ("RepositoryNotFoundError", "RemoteEntryNotFoundError", "EntryNotFoundError", "RevisionNotFoundError"):
        return f"the source has no such file ({name}: {text})"
    if name == "OfflineModeIsEnabled":
        return f"huggingface_hub is in offline mode ({text})"
    return f"the source could not be reached ({name}: {text})"


def unavailable(variant: VariantLike, target: Path, why: str, *, partial: Path | None = None) -> ModelUnavailableError:
    size = variant.size
    size_text = f"{size:,} bytes ({file_size(size)})" if size else "size unknown"
    if size and getattr(variant, "size_estimated", False):
        size_text = f"about {file_size(size)}"
    url = file_url(variant)
    resume = (
        f" {partial.stat().st_size:,} bytes are saved in {partial}; running again resumes from there."
        if partial is not None and partial.is_file() and partial.stat().st_size
        else ""
    )
    err = ModelUnavailableError(
        f"Cannot get {variant.name}: {why}.{resume} The file is {Path(source_of(variant)[1]).name}, {size_text}, from "
        f"{url}. To install it by hand, download it and put it at {target} (or run `localllm pull {variant.name}` "
        "when online).",
        path=str(target),
        url=url,
        size=size,
    )
    return err
