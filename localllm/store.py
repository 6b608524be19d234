"""Model files on disk: find them, download them, verify them.

    fetch(variant)   -> Path   cached (ours or the Hugging Face cache) or downloaded + verified
    resolve(variant) -> Path | None   a verified local copy, never touching the network
    list_local()     -> list[LocalFile]   what is on disk
    cache_dir()      -> Path   where downloads go: <localllm.paths.home()>/models

Downloads go through huggingface_hub's lower-level API (`get_hf_file_metadata` for the
HEAD, `file_download.http_get` for the body) into a `.part` file next to the target, so
that an interrupted download is resumed with an HTTP Range request on the next call and
a file only takes its final name after its size and sha256 check out (`os.replace`).
A file that fails the check is deleted: nothing unverified is ever left where a later
`resolve`/`fetch` would pick it up.

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
size and mtime) so multi-GB files are hashed once, not on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .errors import ChecksumMismatchError, InsufficientDiskError, ModelUnavailableError
from .paths import home

__all__ = [
    "DISK_HEADROOM_BYTES",
    "LocalFile",
    "ProgressCallback",
    "cache_dir",
    "fetch",
    "hf_cache_dir",
    "is_offline",
    "list_local",
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
DISK_HEADROOM_BYTES = 256 * 1024**2  # keep this much free after a download: a full disk breaks everything else
HASH_CHUNK = 8 * 1024**2
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
        raise ModelUnavailableError(
            f"{variant.name} has no download source (repository and file name) in the catalog.")
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
    st = path.stat()
    data = _read_record(path)
    if data and data["size"] == st.st_size and data["mtime_ns"] == st.st_mtime_ns:
        return data["sha256"]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    _remember(path, digest, st)
    return digest


def _read_record(path: Path) -> dict | None:
    try:
        data = json.loads(_record_path(path).read_text())
        if isinstance(data["size"], int) and isinstance(data["mtime_ns"], int) and _SHA256.fullmatch(data["sha256"]):
            return data
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _remember(path: Path, digest: str, st: os.stat_result | None = None) -> None:
    st = st or path.stat()
    rec = _record_path(path)
    try:
        rec.parent.mkdir(parents=True, exist_ok=True)
        tmp = rec.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   "sha256": digest}))
        os.replace(tmp, rec)
    except OSError as exc:  # a read-only cache still works, it just rehashes
        log.debug("could not record the sha256 of %s: %s", path, exc)


def _mismatch(path: Path, size: int | None, sha256: str | None) -> str | None:
    """Why a local file does not match the expected size/sha256, or None if it does."""
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
        from .catalog import load_catalog

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
            if (p.is_file() and not p.name.startswith(".") and p.suffix not in (".part", ".json", ".lock", ".tmp")
                    and ".verified" not in p.parts and p.resolve() not in seen):
                seen.add(p.resolve())
                out.append(LocalFile(p, p.stat().st_size, by_target.get(p.resolve()), "localllm"))
    return sorted(out, key=lambda f: (f.variant is None, f.variant or "", str(f.path)))


# -- download ----------------------------------------------------------------------------------


def fetch(variant: _VariantLike, *, progress: ProgressCallback | None = None, offline: bool | None = None,
          force_download: bool = False) -> Path:
    """A verified local path for a variant: from a cache, the package, or downloaded now.

    Args:
        variant: a catalog Variant (name, repo, filename, size, sha256; path for packaged files).
        progress: called as progress(done_bytes, total_bytes) while downloading.
        offline: never touch the network; default from LOCALLLM_OFFLINE / HF_HUB_OFFLINE.
        force_download: download again even when a verified copy exists.

    Raises:
        ModelUnavailableError: offline and not cached, or the source cannot be reached.
        InsufficientDiskError: not enough free disk for the download.
        ChecksumMismatchError: the download's size or sha256 is wrong (the file is deleted).
    """
    packaged = _package_file(variant)
    if packaged is not None:
        if packaged.is_file():
            return packaged
        raise ModelUnavailableError(
            f"{variant.name} should ship inside the package at {packaged}, but that file is missing. "
            "Reinstall localllm.")
    if not force_download:
        found = resolve(variant)  # a complete folder for ONNX variants
        if found is not None:
            log.debug("%s: using %s", variant.name, found)
            return found
    target = _target(variant)
    if is_offline(offline):
        what = "the model folder is not complete in the cache" if _is_onnx(variant) else "the file is not cached"
        raise _unavailable(variant, target, "offline mode is on (LOCALLLM_OFFLINE / HF_HUB_OFFLINE or "
                                            f"offline=True) and {what}")
    if _is_onnx(variant):
        return _fetch_onnx(variant, target, progress=progress, force_download=force_download)
    target.parent.mkdir(parents=True, exist_ok=True)
    import filelock  # a dependency of huggingface_hub

    # one download of a file at a time, across processes: two writers would interleave the .part file
    with filelock.FileLock(str(target) + ".lock"):
        if not force_download and target.is_file() and _mismatch(target, _expected_size(variant),
                                                                 variant.sha256) is None:
            return target  # another process finished it while we waited
        return _download(variant, target, progress)


def _part_paths(target: Path) -> tuple[Path, Path]:
    return target.with_name(target.name + ".part"), target.with_name(target.name + ".part.json")


def _check_disk(variant: _VariantLike, folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed + DISK_HEADROOM_BYTES:
        raise InsufficientDiskError(
            f"Not enough free disk to download {variant.name}: {_gb(needed)} needed plus {_gb(DISK_HEADROOM_BYTES)} "
            f"kept free, but {folder} has {_gb(free)} free. Free some space, or point LOCALLLM_HOME at a bigger disk.",
            needed=needed + DISK_HEADROOM_BYTES, available=free)


def _download(variant: _VariantLike, target: Path, progress: ProgressCallback | None) -> Path:
    from huggingface_hub import get_hf_file_metadata
    from huggingface_hub.utils import build_hf_headers

    from . import __version__

    part, part_meta = _part_paths(target)
    size = _expected_size(variant)
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
    remote_size = meta.size
    if size is not None and remote_size is not None and remote_size != size:
        raise ChecksumMismatchError(
            f"{variant.name}: the source file {url} is {remote_size:,} bytes but the catalog expects {size:,}. "
            "The repository changed or the catalog is wrong; nothing was downloaded.")
    total = size or remote_size
    sha = (variant.sha256 or "").lower() or None
    etag = (meta.etag or "").strip('"').lower()
    if sha is None and _SHA256.fullmatch(etag):
        sha = etag  # for LFS files the Hub's ETag is the file's sha256

    # resume only a partial file of this very version of the file
    try:
        previous = json.loads(part_meta.read_text())
    except (OSError, ValueError):
        previous = None
    if have and (not isinstance(previous, dict) or previous.get("etag") != meta.etag
                 or (total is not None and have > total)):
        log.info("discarding a partial download of another version: %s", part)
        part.unlink(missing_ok=True)
        have = 0
    if total is not None and not variant.size:
        _check_disk(variant, target.parent, max(total - have, 0))
    part_meta.write_text(json.dumps({"etag": meta.etag, "url": url, "size": total, "commit": meta.commit_hash}))

    download_url = meta.location if getattr(meta, "xet_file_data", None) is None else url
    log.info("downloading %s from %s (%s bytes, resuming at %d)", variant.name, download_url, total, have)
    _http_get(variant, target, download_url, part, have, total, headers, progress)

    why = _mismatch(part, total, sha)
    if why is not None:
        part.unlink(missing_ok=True)
        part_meta.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"The download of {variant.name} from {url} is corrupt: {why}. The file was deleted; run the command "
            "again to download it afresh. If this keeps happening, the source repository has changed.")
    os.replace(part, target)
    part_meta.unlink(missing_ok=True)
    if sha:
        _remember(target, sha)  # a rename keeps size and mtime: no need to hash it again
    return target


def _http_get(variant, target: Path, url: str, part: Path, have: int, total: int | None, headers: dict,
              progress: ProgressCallback | None) -> None:
    from huggingface_hub.file_download import http_get

    bar = _progress_class(progress, total)
    try:
        with open(part, "ab") as f:
            http_get(url, f, resume_size=have, headers=dict(headers), expected_size=total, tqdm_class=bar,
                     displayed_filename=variant.name)
    except OSError as exc:
        if "Consistency check failed" in str(exc):  # the server sent a different number of bytes
            part.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"The download of {variant.name} from {url} has the wrong size ({exc}). The partial file was "
                "deleted; run the command again.") from exc
        raise _unavailable(variant, target, _why(exc), partial=part) from exc
    except Exception as exc:
        # huggingface_hub's HTTP client (httpx2 in 2.x, httpx in 1.x) or its own errors: the network failed
        if type(exc).__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2", "huggingface_hub"):
            raise _unavailable(variant, target, _why(exc), partial=part) from exc
        raise


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
        return (f"the repository refused access ({name}: {text}); it may be gated: accept its license on "
                "huggingface.co and log in with `hf auth login`")
    if name in ("RepositoryNotFoundError", "RemoteEntryNotFoundError", "EntryNotFoundError", "RevisionNotFoundError"):
        return f"the source has no such file ({name}: {text})"
    if name == "OfflineModeIsEnabled":
        return f"huggingface_hub is in offline mode ({text})"
    return f"the source could not be reached ({name}: {text})"


def _unavailable(variant: _VariantLike, target: Path, why: str, *, partial: Path | None = None) -> ModelUnavailableError:
    size = variant.size
    size_text = f"{size:,} bytes ({_gb(size)})" if size else "size unknown"
    if size and getattr(variant, "size_estimated", False):
        size_text = f"about {_gb(size)}"
    url = _url(variant)
    resume = (f" {partial.stat().st_size:,} bytes are saved in {partial}; running again resumes from there."
              if partial is not None and partial.is_file() and partial.stat().st_size else "")
    err = ModelUnavailableError(
        f"Cannot get {variant.name}: {why}.{resume} The file is {Path(_source(variant)[1]).name}, {size_text}, from "
        f"{url}. To install it by hand, download it and put it at {target} (or run `localllm pull {variant.name}` "
        "when online).")
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
    root = parent.rsplit("/", 1)[0] if parent.split("/")[-1] == "onnx" and "/" in parent else \
        ("" if parent == "onnx" else parent)
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


def _fetch_onnx(variant: _VariantLike, target: Path, *, progress: ProgressCallback | None,
                force_download: bool) -> Path:
    """Download an ONNX variant's folder (fetch() has already looked in the cache and at offline mode)."""
    repo = _source(variant)[0]
    root = cache_dir() / repo.replace("/", "--")
    target.parent.mkdir(parents=True, exist_ok=True)
    import filelock  # a dependency of huggingface_hub

    marker = _marker(variant)
    with filelock.FileLock(str(marker) + ".lock"):
        if not force_download and (found := _onnx_complete(variant)) is not None:
            return found  # another process completed it while we waited
        marker.unlink(missing_ok=True)
        files = _onnx_files(variant)
        have = sum(p.stat().st_size for rel, _ in files if (p := root.joinpath(*rel.split("/"))).is_file())
        if variant.size:  # disk first, before any network: the catalog's size is close enough
            _check_disk(variant, root, max(variant.size - have, 0))
        got: dict[str, int] = {}
        done = 0
        total = variant.size or None
        for rel, required in files:
            path = root.joinpath(*rel.split("/"))
            if not force_download and path.is_file() and _mismatch(path, None, None) is None:
                got[rel] = path.stat().st_size
                done += got[rel]
                continue
            one = _RepoFile(name=f"{variant.name} ({rel})", repo=repo, filename=rel)

            def report(n: int, _t: int | None, base: int = done) -> None:
                if progress is not None:
                    progress(base + n, max(total or 0, base + n))

            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                _download(one, path, report if progress is not None else None)
            except ModelUnavailableError as exc:
                if not required and type(exc.__cause__).__name__ in _NOT_FOUND:
                    log.debug("%s: %s is not in the repository (optional)", variant.name, rel)
                    continue
                raise
            got[rel] = path.stat().st_size
            done += got[rel]
        from .runtimes.onnx_folder import validate_onnx_folder

        validate_onnx_folder(target)  # InvalidModelError names the bad file; no marker is written
        tmp = marker.with_name(marker.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"variant": variant.name, "files": got}))
        os.replace(tmp, marker)
    return target


_NOT_FOUND = ("RemoteEntryNotFoundError", "EntryNotFoundError")
