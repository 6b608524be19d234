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

An ONNX variant (format "onnx") is a folder: the decoder `.onnx`, its external data
(`<file>_data` or `<file>.data`, where published), config.json, tokenizer.json,
tokenizer_config.json, generation_config.json and genai_config.json / chat_template.jinja
where the repository has them, mirrored under `<cache>/<owner>--<repo>/`. Each file is
downloaded like a GGUF (resume, size/ETag check, atomic rename); the variant counts as
present only once `.<file>.complete` is written beside the `.onnx`, after every file
arrived and the folder passed `validate_onnx_folder`. fetch/resolve return the `.onnx`
path (several variants of a repository share one folder; the path names which).

sha256 results are remembered in `<cache_dir>/.verified/` (keyed by path, checked against
size and mtime) so multi-GB files are hashed once, not on every load. A record also says
what the hash was checked against at download ("hub", "catalog", or null: nothing); a file
checked against the Hub's own sha256 is not rejected later for a catalog figure that
disagrees with the Hub.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from localllm.errors import ChecksumMismatchError, DiskFullError, InsufficientDiskError, ModelUnavailableError
from localllm.paths import home

__all__ = [
    "DISK_HEADROOM_BYTES",
    "LocalFile",
    "ProgressCallback",
    "Pulled",
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

ProgressCallback = Callable[[int, "int | None"], None]  # (done_bytes, total_bytes or None)

OFFLINE_ENVS = ("LOCALLLM_OFFLINE", "HF_HUB_OFFLINE")
DEFAULT_ENDPOINT = "https://huggingface.co"  # huggingface_hub.constants._HF_DEFAULT_ENDPOINT
DEFAULT_REVISION = "main"
METADATA_TIMEOUT_S = 10.0  # HEAD request; huggingface_hub's DEFAULT_ETAG_TIMEOUT
# Body reads time out after huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT (10 s by default,
# per read, not per file); http_get resumes up to 5 times on a dropped connection.
# keep this much free after a download (and, when a file's size is not known, while it is written):
# a full disk breaks everything else
DISK_HEADROOM_BYTES = 256 * 1024**2
HASH_CHUNK = 8 * 1024**2
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))  # no space / over quota

VerifiedBy = Literal["hub", "catalog", "package"]


class _VariantLike(Protocol):
    name: str
    repo: str | None
    filename: str | None
    size: int | None
    sha256: str | None


@dataclass(frozen=True)
class LocalFile:
    """A model file on disk."""

    path: Path
    size: int
    variant: str | None  # catalog name ("qwen2.5-1.5b-instruct:q4_k_m") when known
    source: str  # "localllm" (our cache), "huggingface" (the HF cache) or "package"


@dataclass(frozen=True)
class Pulled:
    """What `pull` got: the path, whether it was downloaded now, and what its content was checked against."""

    path: Path
    downloaded: bool  # fetched from the source now (False: found on disk)
    # "hub": sha256 equal to the Hub's LFS oid; "catalog": to models.toml's; "package": ships inside
    # localllm; None: no published sha256 to check it against (see `sha256` and `unverified`)
    verified_by: VerifiedBy | None
    sha256: str | None = None  # the file's sha256 when known (computed, and recorded under <cache>/.verified)
    unverified: tuple[str, ...] = ()  # repository files with no published sha256: hashed and recorded, not checked
    warnings: tuple[str, ...] = ()  # catalog figures that disagree with the Hub's (also logged as warnings)


# -- locations -----------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where localllm keeps downloaded models (not created here)."""
    return home() / "models"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, from the environment as it is now."""
    for env in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(env):
            return Path(os.path.expandvars(os.environ[env])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def is_offline(offline: bool | None = None) -> bool:
    """An explicit argument wins; else LOCALLLM_OFFLINE or HF_HUB_OFFLINE, read now."""
    if offline is not None:
        return offline
    return any(os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on") for env in OFFLINE_ENVS)


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def _target(variant: _VariantLike) -> Path:
    """Our cache path for a variant: <cache>/<owner>--<repo>/<filename>."""
    repo, filename = _source(variant)
    parts = filename.split("/")
    if any(p in ("", ".", "..") for p in parts) or filename.startswith("/") or "\\" in filename:
        raise ModelUnavailableError(f"{variant.name}: refusing the file name {filename!r} (it leaves its folder).")
    return cache_dir().joinpath(repo.replace("/", "--"), *parts)


def _source(variant: _VariantLike) -> tuple[str, str]:
    repo, filename = getattr(variant, "repo", None), getattr(variant, "filename", None)
    if not repo or not filename:
        raise ModelUnavailableError(f"{variant.name} has no download source (repository and file name) in the catalog.")
    return repo, filename


def _url(variant: _VariantLike, endpoint: str | None = None) -> str:
    repo, filename = _source(variant)
    return f"{endpoint or _endpoint()}/{repo}/resolve/{DEFAULT_REVISION}/{filename}"


def _package_file(variant: _VariantLike) -> Path | None:
    path = getattr(variant, "path", None)
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else Path(__file__).resolve().parent / p


# -- verification ----------------------------------------------------------------------------


def _expected_size(variant: _VariantLike) -> int | None:
    """The catalog's size if it is exact (published), None if it is only an estimate."""
    if getattr(variant, "size_estimated", False):
        return None
    return variant.size


def _record_path(path: Path) -> Path:
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / ".verified" / f"{key}.json"


def sha256_of(path: Path) -> str:
    """sha256 of a file, remembered by (path, size, mtime) so it is computed once."""
    data = _current_record(path)
    if data is not None:
        return data["sha256"]
    st = path.stat()
    digest = _hash_file(path).hexdigest()
    _remember(path, digest, st)
    return digest


def _hash_file(path: Path, limit: int | None = None) -> Any:
    """A sha256 object fed with the file's first `limit` bytes (all of it by default)."""
    h = hashlib.sha256()
    left = float("inf") if limit is None else limit
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(int(min(HASH_CHUNK, left)))):
            h.update(chunk)
            left -= len(chunk)
    return h


def _read_record(path: Path) -> dict | None:
    try:
        data = json.loads(_record_path(path).read_text())
        if isinstance(data["size"], int) and isinstance(data["mtime_ns"], int) and _SHA256.fullmatch(data["sha256"]):
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _current_record(path: Path) -> dict | None:
    """The file's sha256 record if it still describes the file (same size and mtime)."""
    data = _read_record(path)
    if data is None:
        return None
    st = path.stat()
    return data if data["size"] == st.st_size and data["mtime_ns"] == st.st_mtime_ns else None


def _remember(
    path: Path, digest: str, st: os.stat_result | None = None, *, verified_by: VerifiedBy | None = None
) -> None:
    st = st or path.stat()
    rec = _record_path(path)
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


def _mismatch(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why a local file does not match the expected size/sha256, or None if it does."""
    rec = _current_record(path)
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
        rec = _read_record(path)
        sha256 = rec["sha256"] if rec else None
    if sha256:
        digest = sha256_of(path)
        if digest != sha256.lower():
            return f"its sha256 is {digest}, expected {sha256.lower()}"
    return None


# -- lookup ------------------------------------------------------------------------------------


def resolve(variant: _VariantLike) -> Path | None:
    """A verified local copy of a variant (ours, the HF cache's or the package's), or None. No network."""
    packaged = _package_file(variant)
    if packaged is not None:
        return packaged if packaged.is_file() or (packaged.is_dir() and _is_onnx(variant)) else None
    if not getattr(variant, "repo", None) or not getattr(variant, "filename", None):
        return None
    if _is_onnx(variant):
        return _onnx_complete(variant)
    size, sha = _expected_size(variant), variant.sha256
    ours = _target(variant)
    if ours.is_file():
        why = _mismatch(ours, size, sha)
        if why is None:
            return ours
        log.warning("ignoring %s: %s", ours, why)
    hf = _hf_cached(variant)
    if hf is not None:
        why = _mismatch(hf, size, sha)
        if why is None:
            return hf
        log.warning("ignoring the Hugging Face cache copy %s: %s", hf, why)
    return None


def _hf_cached(variant: _VariantLike) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    repo, filename = _source(variant)
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
        from localllm.catalog import load_catalog

        catalog = load_catalog()
    variants: Iterable[Any] = getattr(catalog, "variants", ())
    by_target: dict[Path, str] = {}
    out: list[LocalFile] = []
    seen: set[Path] = set()
    for v in variants:
        packaged = _package_file(v)
        if packaged is not None:
            if packaged.is_file():
                out.append(LocalFile(packaged, packaged.stat().st_size, v.name, "package"))
                seen.add(packaged.resolve())
            continue
        if not getattr(v, "repo", None) or not getattr(v, "filename", None):
            continue
        try:
            by_target[_target(v).resolve()] = v.name
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


# -- download ----------------------------------------------------------------------------------


def fetch(
    variant: _VariantLike,
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
    variant: _VariantLike,
    *,
    progress: ProgressCallback | None = None,
    offline: bool | None = None,
    force_download: bool = False,
) -> Pulled:
    """Like `fetch`, but says what the file was verified against and which catalog figures disagreed.

    Args and Raises: as `fetch`.
    """
    packaged = _package_file(variant)
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
    target = _target(variant)
    if is_offline(offline):
        what = "the model folder is not complete in the cache" if _is_onnx(variant) else "the file is not cached"
        raise _unavailable(
            variant, target, f"offline mode is on (LOCALLLM_OFFLINE / HF_HUB_OFFLINE or offline=True) and {what}"
        )
    if _is_onnx(variant):
        return _fetch_onnx(variant, target, progress=progress, force_download=force_download)
    target.parent.mkdir(parents=True, exist_ok=True)
    import filelock  # a dependency of huggingface_hub

    # one download of a file at a time, across processes: two writers would interleave the .part file
    with filelock.FileLock(str(target) + ".lock"):
        if (
            not force_download
            and target.is_file()
            and _mismatch(target, _expected_size(variant), variant.sha256) is None
        ):
            return _on_disk(variant, target)  # another process finished it while we waited
        got = _download(variant, target, progress)
        return Pulled(
            target,
            downloaded=True,
            verified_by=got.verified_by,
            sha256=got.sha256,
            unverified=() if got.verified_by else (_source(variant)[1],),
            warnings=got.warnings,
        )


def _on_disk(variant: _VariantLike, path: Path) -> Pulled:
    """How a file that `resolve` accepted was verified, from its record (no hashing here)."""
    if _is_onnx(variant):
        return _onnx_on_disk(variant, path)
    verified_by, sha = _checked(path, variant.sha256)
    return Pulled(
        path,
        downloaded=False,
        verified_by=verified_by,
        sha256=sha,
        unverified=() if verified_by else (_source(variant)[1],),
    )


def _checked(path: Path, catalog_sha: str | None) -> tuple[VerifiedBy | None, str | None]:
    """(what a verified file on disk was checked against, its sha256) as far as records tell."""
    rec = _current_record(path)
    if rec is not None and rec.get("verified_by") in ("hub", "catalog"):
        return rec["verified_by"], rec["sha256"]
    if catalog_sha and (rec is None or rec["sha256"] == catalog_sha.lower()):
        return "catalog", catalog_sha.lower()  # resolve() held it to the catalog's sha256
    return None, rec["sha256"] if rec else None


def _part_paths(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".part"), target.with_name(target.name + ".part.json")


def _check_disk(variant: _VariantLike, folder: Path, needed: int | None) -> None:
    """Room for `needed` more bytes plus the headroom; with `needed` None (size unknown), the headroom alone."""
    free = shutil.disk_usage(folder).free
    if free < (needed or 0) + DISK_HEADROOM_BYTES:
        if needed is None:
            what = (
                f"its size is not known before the download, so at least {_gb(DISK_HEADROOM_BYTES)} must be "
                f"free to start (and stays free while it downloads), but {folder} has {_gb(free)} free"
            )
        else:
            what = f"{_gb(needed)} needed plus {_gb(DISK_HEADROOM_BYTES)} kept free, but {folder} has {_gb(free)} free"
        raise InsufficientDiskError(
            f"Not enough free disk to download {variant.name}: {what}. Free some space, or point LOCALLLM_HOME at "
            "a bigger disk.",
            needed=(needed or 0) + DISK_HEADROOM_BYTES,
            available=free,
        )


@dataclass(frozen=True)
class _Got:
    """One downloaded file: its sha256, what that was checked against, and what disagreed with the Hub."""

    sha256: str
    verified_by: VerifiedBy | None
    warnings: tuple[str, ...]


def _download(variant: _VariantLike, target: Path, progress: ProgressCallback | None) -> _Got:
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.utils import build_hf_headers

    from localllm import __version__

    part, part_meta = _part_paths(target)
    have = part.stat().st_size if part.is_file() else 0
    if variant.size:  # disk first, before any network: a size estimate is close enough here
        _check_disk(variant, target.parent, max(variant.size - have, 0))

    endpoint = _endpoint()
    url = _url(variant, endpoint)
    headers = build_hf_headers(library_name="localllm", library_version=__version__)
    try:
        meta = get_hf_file_metadata(url, timeout=METADATA_TIMEOUT_S, headers=headers, endpoint=endpoint)
    except Exception as exc:  # connection refused, DNS, 404, 401 (gated), offline mode...
        raise _unavailable(variant, target, _why(exc)) from exc

    # The Hub's own figures for this file win; the catalog's count only where the Hub gives none.
    catalog_size, catalog_sha = _expected_size(variant), (variant.sha256 or "").lower() or None
    etag = (meta.etag or "").strip('"').lower()
    hub_sha = etag if _SHA256.fullmatch(etag) else None  # an LFS file's ETag is its sha256 (the LFS oid)
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
    sha, verified_by, against = (
        (hub_sha, "hub", "the Hub's")
        if hub_sha
        else (catalog_sha, "catalog", "the catalog's")
        if catalog_sha
        else (None, None, "")
    )

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
        _check_disk(variant, target.parent, None)  # nothing to size it by: at least keep the floor
    elif total != variant.size:
        _check_disk(variant, target.parent, max(total - have, 0))  # the Hub's size, not the catalog's
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
    _remember(target, digest, verified_by=verified_by)
    if verified_by is None:
        # a whole model unverified deserves a warning; an ONNX folder's small non-LFS side files are routine
        log.log(
            logging.INFO if isinstance(variant, _RepoFile) else logging.WARNING,
            "%s: no published sha256 to check %s against (no LFS oid from the Hub, none in the catalog); "
            "recorded its sha256 %s",
            variant.name,
            target.name,
            digest,
        )
    return _Got(digest, verified_by, tuple(warnings))


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
                raise _DiskFull(free, f"the free disk would fall under the {_gb(DISK_HEADROOM_BYTES)} kept free")
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
    hasher = _hash_file(part, have) if have else hashlib.sha256()  # the saved bytes first, then as they arrive
    try:
        # unbuffered: every byte is on disk (or has failed) when write returns, none left for close() to fail on
        with open(part, "ab", buffering=0) as f:
            writer = _PartWriter(f, hasher, part.parent, keep_floor=total is None)
            http_get(
                url,
                writer,
                resume_size=have,
                headers=dict(headers),
                expected_size=total,
                tqdm_class=bar,
                displayed_filename=variant.name,
            )
    except _DiskFull as full:
        written = part.stat().st_size if part.is_file() else 0
        part.unlink(missing_ok=True)  # it can never complete here, and it keeps the disk full
        _part_paths(target)[1].unlink(missing_ok=True)
        of = f" of {total:,}" if total is not None else " (its size was not known beforehand)"
        needed = (total if total is not None else written) + DISK_HEADROOM_BYTES
        raise DiskFullError(
            f"The disk filled while downloading {variant.name}: {full.reason} after {written:,} bytes{of} were "
            f"written to {part.parent}, which has {_gb(full.free)} free. The partial file was deleted. Free at least "
            f"{_gb(needed)} (the file plus {_gb(DISK_HEADROOM_BYTES)} kept free), or point LOCALLLM_HOME at a bigger "
            "disk, then run the command again.",
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
        raise _unavailable(variant, target, _why(exc), partial=part) from exc
    except Exception as exc:
        # huggingface_hub's HTTP client (httpx2 in 2.x, httpx in 1.x) or its own errors: the network failed
        if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2", "huggingface_hub"):
            raise _unavailable(variant, target, _why(exc), partial=part) from exc
        raise
    return hasher.hexdigest() if writer.hashed else _hash_file(part).hexdigest()


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


def _unavailable(
    variant: _VariantLike, target: Path, why: str, *, partial: Path | None = None
) -> ModelUnavailableError:
    size = variant.size
    size_text = f"{size:,} bytes ({_gb(size)})" if size else "size unknown"
    if size and getattr(variant, "size_estimated", False):
        size_text = f"about {_gb(size)}"
    url = _url(variant)
    resume = (
        f" {partial.stat().st_size:,} bytes are saved in {partial}; running again resumes from there."
        if partial is not None and partial.is_file() and partial.stat().st_size
        else ""
    )
    err = ModelUnavailableError(
        f"Cannot get {variant.name}: {why}.{resume} The file is {Path(_source(variant)[1]).name}, {size_text}, from "
        f"{url}. To install it by hand, download it and put it at {target} (or run `localllm pull {variant.name}` "
        "when online)."
    )
    err.path = str(target)
    err.url = url
    err.size = size
    return err


def _gb(n: int | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


# -- ONNX folders --------------------------------------------------------------------------

# Files beside an ONNX decoder, at the model folder's root (the .onnx's folder, or its
# parent when that is `onnx/`, as onnx-community and optimum publish them). Required ones
# must download; optional ones may be missing upstream (a 404 is accepted).
ONNX_REQUIRED_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
ONNX_OPTIONAL_FILES = ("generation_config.json", "genai_config.json", "chat_template.jinja")
ONNX_DATA_SUFFIXES = ("_data", ".data")  # external data: model.onnx_data (optimum) or model.onnx.data (genai)


@dataclass(frozen=True)
class _RepoFile:
    """One file of a repository, shaped like a variant for `_download`."""

    name: str
    repo: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    size_estimated: bool = True  # no catalog size per file: the Hub's size and ETag are checked


def _is_onnx(variant: _VariantLike) -> bool:
    return getattr(variant, "format", "gguf") == "onnx"


def _onnx_files(variant: _VariantLike) -> list[tuple[str, bool]]:
    """(repo path, required) for every file of an ONNX variant, the decoder first."""
    _, filename = _source(variant)
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


def _marker(variant: _VariantLike) -> Path:
    target = _target(variant)
    return target.with_name(f".{target.name}.complete")


def _onnx_complete(variant: _VariantLike) -> Path | None:
    """The .onnx path when the variant's folder is complete: marker written, every file there at its size."""
    marker = _marker(variant)
    try:
        record = json.loads(marker.read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    root = cache_dir() / _source(variant)[0].replace("/", "--")
    for rel, size in files.items():
        p = root.joinpath(*rel.split("/"))
        if not p.is_file() or p.stat().st_size != size:
            log.warning("ignoring %s: %s is missing or changed", _target(variant), p)
            return None
    return _target(variant)


def _onnx_on_disk(variant: _VariantLike, path: Path) -> Pulled:
    """How a complete ONNX folder's files were verified, from their records."""
    root = cache_dir() / _source(variant)[0].replace("/", "--")
    try:
        files = list(json.loads(_marker(variant).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        files = []
    checks = {rel: _checked(root.joinpath(*rel.split("/")), None) for rel in files}
    verified_by, sha = checks.get(_source(variant)[1], (None, None))
    return Pulled(
        path,
        downloaded=False,
        verified_by=verified_by,
        sha256=sha,
        unverified=tuple(rel for rel, (by, _) in checks.items() if by is None),
    )


def _fetch_onnx(
    variant: _VariantLike, target: Path, *, progress: ProgressCallback | None, force_download: bool
) -> Pulled:
    """Download an ONNX variant's folder (fetch() has already looked in the cache and at offline mode)."""
    repo = _source(variant)[0]
    root = cache_dir() / repo.replace("/", "--")
    target.parent.mkdir(parents=True, exist_ok=True)
    import filelock  # a dependency of huggingface_hub

    marker = _marker(variant)
    with filelock.FileLock(str(marker) + ".lock"):
        if not force_download and (found := _onnx_complete(variant)) is not None:
            return _onnx_on_disk(variant, found)  # another process completed it while we waited
        marker.unlink(missing_ok=True)
        files = _onnx_files(variant)
        have = sum(p.stat().st_size for rel, _ in files if (p := root.joinpath(*rel.split("/"))).is_file())
        if variant.size:  # disk first, before any network: the catalog's size is close enough
            _check_disk(variant, root, max(variant.size - have, 0))
        got: dict[str, int] = {}
        checks: dict[str, tuple[VerifiedBy | None, str | None]] = {}
        warnings: list[str] = []
        done = 0
        total = variant.size or None
        for rel, required in files:
            path = root.joinpath(*rel.split("/"))
            if not force_download and path.is_file() and _mismatch(path, None, None) is None:
                got[rel] = path.stat().st_size
                checks[rel] = _checked(path, None)
                done += got[rel]
                continue
            one = _RepoFile(name=f"{variant.name} ({rel})", repo=repo, filename=rel)

            def report(n: int, _t: int | None, base: int = done) -> None:
                if progress is not None:
                    progress(base + n, max(total or 0, base + n))

            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                one_got = _download(one, path, report if progress is not None else None)
            except ModelUnavailableError as exc:
                if not required and type(exc.__cause__).__name__ in _NOT_FOUND:
                    log.debug("%s: %s is not in the repository (optional)", variant.name, rel)
                    continue
                raise
            got[rel] = path.stat().st_size
            checks[rel] = (one_got.verified_by, one_got.sha256)
            warnings += one_got.warnings
            done += got[rel]
        from localllm.formats.onnx_folder import validate_onnx_folder

        validate_onnx_folder(target)  # InvalidModelError names the bad file; no marker is written
        tmp = marker.with_name(marker.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"variant": variant.name, "files": got}))
        os.replace(tmp, marker)
    verified_by, sha = checks[_source(variant)[1]]
    return Pulled(
        target,
        downloaded=True,
        verified_by=verified_by,
        sha256=sha,
        unverified=tuple(rel for rel, (by, _) in checks.items() if by is None),
        warnings=tuple(warnings),
    )


_NOT_FOUND = ("RemoteEntryNotFoundError", "EntryNotFoundError")
