"""A GGUF file's header read from the Hub with HTTP range requests, bounded, validated and cached.

    fetch_header(repo, commit, file, part=, offline=)  -> Header: the bytes up to the end of the
                                                          tensor-info section and what they parse to
    INITIAL_BYTES, MAX_HEADER_BYTES                    the first request, and where reading gives up

The first request asks for INITIAL_BYTES; while the parser says it needs more (NeedMore), the
next asks for what it needs, at least double what is at hand, never past MAX_HEADER_BYTES. A
server that ignores Range (200 with the whole body) is read only as far as needed and closed.
The bytes are checked by localllm.validate's rules with the file's real size, then kept under
the listing's commit folder (`<file>.header`), so planning again sends no request at all.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from localllm import __version__
from localllm.errors import InvalidModelError, ModelUnavailableError
from localllm.formats.gguf import GGUFInfo
from localllm.formats.gguf_reader import NeedMore
from localllm.hub.listing import HubFile, cache_file, hub_error, write_cache_file
from localllm.store.locations import hub_endpoint, is_offline
from localllm.units import file_size
from localllm.validate import validate_gguf_header

__all__ = ["INITIAL_BYTES", "MAX_HEADER_BYTES", "Header", "fetch_header", "file_url"]

log = logging.getLogger(__name__)

INITIAL_BYTES = 2 * 1024 * 1024  # a 32k-152k-token vocabulary fits in 1-5 MiB: most headers in one request
# far above any real header (Qwen/Gemma 256k vocabularies: ~8 MiB) and far below a model
MAX_HEADER_BYTES = 64 * 1024 * 1024
READ_TIMEOUT_S = 10.0  # per read, as huggingface_hub's HF_HUB_DOWNLOAD_TIMEOUT
MAX_STALLS = 3  # consecutive requests that bring no new byte before giving up


@dataclass(frozen=True)
class Header:
    """A file's header bytes (a prefix of the file) and what they parse to (structure checked)."""

    file: HubFile
    data: bytes
    info: GGUFInfo
    cached: bool  # read from the cache: no request was made


def file_url(repo: str, commit: str, filename: str) -> str:
    return f"{hub_endpoint()}/{repo}/resolve/{commit}/{filename}"


def fetch_header(repo: str, commit: str, file: HubFile, *, part: bool = False, offline: bool | None = None) -> Header:
    """The header of `file` at `commit`: from the cache, else read with range requests.

    `part`: the file is one part of a split model, checked for structure only here (the
    model's rules need every part: validate_gguf_parts); otherwise every rule of validate_gguf.

    Raises:
        InvalidModelError: the header is malformed, cut short, or larger than MAX_HEADER_BYTES.
        ModelUnavailableError: offline without it cached, the Hub unreachable, or access denied.
    """
    label = f"{repo}/{file.filename}"
    path = cache_file(repo, commit, file.filename)
    try:
        data = path.read_bytes()
    except OSError:
        data = b""
    if data:
        try:
            return Header(file, data, validate_gguf_header(data, file.size, label, part=part), cached=True)
        except (NeedMore, InvalidModelError):  # a damaged cache file: read it again
            log.warning("%s: the cached header %s is unusable; reading it again", label, path)
    if is_offline(offline):
        raise ModelUnavailableError(
            f"{label}: offline (LOCALLLM_OFFLINE / HF_HUB_OFFLINE) and its header is not cached. Plan it once "
            "online, or unset offline mode.",
            url=file_url(repo, commit, file.filename),
        )
    data, info = _read(repo, commit, file, label, part)
    write_cache_file(repo, commit, file.filename, data)
    return Header(file, data, info, cached=False)


def _read(repo: str, commit: str, file: HubFile, label: str, part: bool) -> tuple[bytes, GGUFInfo]:
    from huggingface_hub.utils import build_hf_headers, get_session

    url = file_url(repo, commit, file.filename)
    headers = build_hf_headers(library_name="localllm", library_version=__version__)
    session = get_session()
    buf = bytearray()
    want = min(INITIAL_BYTES, file.size)
    stalls = 0
    while True:
        before = len(buf)
        _get(session, url, headers, buf, want, file, label, repo)
        stalls = stalls + 1 if len(buf) == before else 0
        if stalls >= MAX_STALLS:
            raise ModelUnavailableError(
                f"{label}: the Hub's answers for bytes {len(buf)} to {want} of {url} came back empty "
                f"{MAX_STALLS} times (the connection is cut short). Try again later.",
                url=url,
            )
        if len(buf) < want:
            continue  # cut short: ask again from where it stopped
        try:
            return bytes(buf), validate_gguf_header(bytes(buf), file.size, label, part=part)
        except NeedMore as more:
            if more.offset > MAX_HEADER_BYTES:
                raise InvalidModelError(
                    f"{label}: its header (metadata and tensor table) runs past {file_size(MAX_HEADER_BYTES)} "
                    f"(byte {more.offset:,} of {file.size:,} is needed); real GGUF headers are a few MiB. "
                    "Refusing to read further: the file is malformed or hostile.",
                    path=label,
                ) from None
            want = min(file.size, max(more.offset, 2 * len(buf)), MAX_HEADER_BYTES)


def _get(session, url: str, headers: dict, buf: bytearray, want: int, file: HubFile, label: str, repo: str) -> None:
    """Append bytes len(buf)..want of the file to `buf` (fewer when the server cuts the body)."""
    start = len(buf)
    rng = {"Range": f"bytes={start}-{want - 1}"}
    try:
        with session.stream("GET", url, headers={**headers, **rng}, follow_redirects=True, timeout=READ_TIMEOUT_S) as r:
            if r.status_code >= 400:
                from huggingface_hub.utils import hf_raise_for_status

                r.read()
                hf_raise_for_status(r)
            total = _total(r, file)
            if total is not None and total != file.size:
                raise InvalidModelError(
                    f"{label}: the Hub lists it as {file.size:,} bytes but serves {total:,}; refusing a file "
                    "that does not match its listing (plan again to refresh it).",
                    path=label,
                )
            skip = 0 if r.status_code == 206 else start  # 200: the server ignored Range, the body starts at 0
            if skip:
                log.info("%s: the server ignored the Range request; reading only what is needed", url)
            for chunk in r.iter_bytes():
                if skip:
                    drop = min(skip, len(chunk))
                    chunk, skip = chunk[drop:], skip - drop
                buf += chunk[: want - len(buf)]
                if len(buf) >= want:
                    break  # leaving the block closes the stream: no more of the body is read
    except (InvalidModelError, ModelUnavailableError):
        raise
    except Exception as exc:  # a cut body: keep what came, the caller asks for the rest
        from huggingface_hub import errors as hf

        if isinstance(exc, hf.HfHubHTTPError):
            raise hub_error(exc, repo, f"read the header of {file.filename}") from exc
        if len(buf) > start:
            log.info("%s: the body was cut after %d bytes (%s); asking for the rest", url, len(buf) - start, exc)
            return
        if type(exc).__name__ in ("RemoteProtocolError", "ReadError"):
            return  # no byte came: a stall, counted by the caller
        raise hub_error(exc, repo, f"read the header of {file.filename}") from exc


def _total(r, file: HubFile) -> int | None:
    """The file size the server states (Content-Range's total, or a 200's Content-Length)."""
    cr = r.headers.get("content-range", "")
    if "/" in cr and cr.rsplit("/", 1)[1].isdigit():
        return int(cr.rsplit("/", 1)[1])
    if r.status_code == 200 and r.headers.get("content-length", "").isdigit():
        return int(r.headers["content-length"])
    return None
