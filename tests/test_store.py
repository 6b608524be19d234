"""The model store against a real HTTP server on 127.0.0.1 that speaks the Hub's file API.

huggingface_hub reads HF_ENDPOINT once, when it is imported (into
`huggingface_hub.constants.ENDPOINT`). localllm.store reads HF_ENDPOINT at call time and
passes it to huggingface_hub explicitly, so setting it with monkeypatch per test is enough,
whether or not huggingface_hub was imported before. Same for HF_HOME (the HF cache folder).
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import random
import threading
from collections import namedtuple
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from localllm import store
from localllm.errors import ChecksumMismatchError, DiskFullError, InsufficientDiskError, ModelUnavailableError
from localllm.store import download as store_download  # the module that downloads, writes and checks disk

MiB = 1024 * 1024
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "tester/tiny-GGUF"
FILENAME = "tiny-q4_k_m.gguf"
# huggingface_hub's http_get writes in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE): the file
# must span several for a cut download to leave a partial file to resume from.
CONTENT = random.Random(0).randbytes(24 * MiB)
SHA = hashlib.sha256(CONTENT).hexdigest()
FILE_URL = f"/{REPO}/resolve/main/{FILENAME}"
GIT_BLOB_ETAG = "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # a non-LFS file's ETag: a git blob sha1, no sha256
Usage = namedtuple("Usage", "total used free")


@dataclass(frozen=True)
class FakeVariant:
    name: str = "tiny:q4_k_m"
    repo: str | None = REPO
    filename: str | None = FILENAME
    size: int | None = len(CONTENT)
    sha256: str | None = SHA
    path: str | None = None


class Hub:
    """What the server serves and what it saw."""

    def __init__(self):
        self.files: dict[str, bytes] = {f"/{REPO}/resolve/main/{FILENAME}": CONTENT}
        self.etags: dict[str, str] = {}
        self.no_size: set[str] = set()  # paths whose HEAD gives no size (neither X-Linked-Size nor Content-Length)
        self.requests: list[tuple[str, str, dict]] = []
        self.api_requests: list[tuple[str, str, dict]] = []
        self.cut_next_get_after: int | None = None  # close the connection after this many body bytes, once
        self.ignore_range = False  # answer a Range request with the whole file (200), as some CDNs do
        self.lock = threading.Lock()
        self.url = ""

    def gets(self) -> list[dict]:
        return [h for m, _, h in self.requests if m == "GET"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: Hub

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _lookup(self):
        hub = self.hub
        with hub.lock:
            # huggingface_hub also fetches /api/agent-harnesses (telemetry, once a day, from the endpoint it
            # saw at import): kept apart so `requests` holds only file requests
            log = hub.api_requests if self.path.startswith("/api/") else hub.requests
            log.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = hub.files.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return body

    def _common_headers(self, body: bytes):
        # what huggingface_hub's get_hf_file_metadata reads: the commit, the (LFS) ETag, the size
        etag = self.hub.etags.get(self.path, hashlib.sha256(body).hexdigest())
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("X-Linked-Etag", f'"{etag}"')
        if self.path not in self.hub.no_size:
            self.send_header("X-Linked-Size", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")

    def do_HEAD(self):
        body = self._lookup()
        if body is None:
            return
        self.send_response(200)
        self._common_headers(body)
        if self.path not in self.hub.no_size:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_GET(self):
        body = self._lookup()
        if body is None:
            return
        start = 0
        rng = None if self.hub.ignore_range else self.headers.get("Range")
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self._common_headers(body)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with self.hub.lock:
            cut, self.hub.cut_next_get_after = self.hub.cut_next_get_after, None
        if cut is not None:
            self.wfile.write(payload[:cut])
            self.wfile.flush()
            self.close_connection = True  # the body ends early: the client sees a broken transfer
            return
        self.wfile.write(payload)


@pytest.fixture
def hub(monkeypatch):
    state = Hub()
    handler = type("Handler", (_Handler,), {"hub": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", state.url)
    yield state
    server.shutdown()
    server.server_close()


def _leftovers() -> list[Path]:
    root = store.cache_dir()
    return [p for p in root.rglob("*") if p.is_file() and ".verified" not in p.parts] if root.exists() else []


# -- tests ---------------------------------------------------------------------------------


def test_clean_download_with_progress(hub):
    seen = []
    path = store.fetch(FakeVariant(), progress=lambda done, total: seen.append((done, total)))
    assert path.read_bytes() == CONTENT
    assert path == store.cache_dir() / "tester--tiny-GGUF" / FILENAME
    assert seen[0] == (0, len(CONTENT)) and seen[-1] == (len(CONTENT), len(CONTENT))
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:], strict=False)) and len(seen) >= 3
    assert [m for m, _, _ in hub.requests] == ["HEAD", "GET"], hub.requests
    assert "range" not in hub.gets()[0]
    assert sorted(p.name for p in path.parent.iterdir()) == [FILENAME, FILENAME + ".lock"]  # no .part left
    # a second fetch reuses the verified file without touching the network or rehashing
    n = len(hub.requests)
    assert store.fetch(FakeVariant()) == path and len(hub.requests) == n
    assert store.resolve(FakeVariant()) == path


def test_cut_download_is_resumed_with_range(hub):
    hub.cut_next_get_after = 15 * MiB  # the server drops the connection mid-body
    path = store.fetch(FakeVariant())
    assert path.read_bytes() == CONTENT
    gets = hub.gets()
    assert len(gets) == 2
    assert "range" not in gets[0]
    start = int(gets[1]["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 15 * MiB  # resumed from what was saved, not from zero


def test_interrupted_download_resumes_on_next_call(hub):
    class Stop(Exception):
        pass

    def stop_halfway(done, total):
        if done >= 20 * MiB:
            raise Stop  # like Ctrl-C during a download

    with pytest.raises(Stop):
        store.fetch(FakeVariant(), progress=stop_halfway)
    target = store.cache_dir() / "tester--tiny-GGUF" / FILENAME
    part = target.with_name(target.name + ".part")
    assert not target.exists() and part.is_file() and 0 < part.stat().st_size < len(CONTENT)
    assert store.resolve(FakeVariant()) is None  # a partial file is never a model
    saved = part.stat().st_size
    seen = []
    path = store.fetch(FakeVariant(), progress=lambda d, t: seen.append(d))
    assert path.read_bytes() == CONTENT and not part.exists()
    assert hub.gets()[-1]["range"] == f"bytes={saved}-"
    assert seen[0] == saved  # progress starts where the saved part ends


def test_resume_against_a_server_that_ignores_range(hub):
    class Stop(Exception):
        pass

    def stop_halfway(done, total):
        if done >= 20 * MiB:
            raise Stop

    with pytest.raises(Stop):
        store.fetch(FakeVariant(), progress=stop_halfway)
    hub.ignore_range = True  # the whole file comes back: huggingface_hub rewinds the partial file and starts over
    got = store.pull(FakeVariant())
    assert got.path.read_bytes() == CONTENT and got.verified_by == "hub" and got.sha256 == SHA
    assert hub.gets()[-1]["range"].startswith("bytes=")  # it did ask to resume


def test_checksum_mismatch_keeps_nothing(hub):
    corrupt = bytearray(CONTENT)
    corrupt[5 * MiB] ^= 0xFF
    hub.files[f"/{REPO}/resolve/main/{FILENAME}"] = bytes(corrupt)
    hub.etags[f"/{REPO}/resolve/main/{FILENAME}"] = SHA  # the server claims the right hash
    with pytest.raises(ChecksumMismatchError) as err:
        store.fetch(FakeVariant())
    assert SHA in str(err.value) and "deleted" in str(err.value)
    assert [p.name for p in _leftovers()] == [FILENAME + ".lock"]
    assert store.resolve(FakeVariant()) is None
    assert store.list_local(catalog=_Catalog()) == []
    # offline, nothing is there to be picked up either
    with pytest.raises(ModelUnavailableError):
        store.fetch(FakeVariant(), offline=True)
    # once the source is right again, a fresh download succeeds
    hub.files[f"/{REPO}/resolve/main/{FILENAME}"] = CONTENT
    assert store.fetch(FakeVariant()).read_bytes() == CONTENT


def test_checksum_from_etag_when_catalog_has_none(hub):
    hub.files[f"/{REPO}/resolve/main/{FILENAME}"] = CONTENT[:-1] + b"\0"
    hub.etags[f"/{REPO}/resolve/main/{FILENAME}"] = SHA  # LFS ETag = sha256 of the real file
    with pytest.raises(ChecksumMismatchError):
        store.fetch(FakeVariant(sha256=None))
    assert store.resolve(FakeVariant(sha256=None)) is None


def test_hub_size_and_oid_win_over_a_wrong_catalog(hub, caplog):
    # the catalog's figures are hand-typed and wrong; the Hub's own size and LFS oid are right
    wrong = FakeVariant(size=1000, sha256="0" * 64)
    with caplog.at_level(logging.WARNING, logger="localllm.store"):
        got = store.pull(wrong)
    assert got.path.read_bytes() == CONTENT and got.downloaded
    assert got.verified_by == "hub" and got.sha256 == SHA and got.unverified == ()
    assert len(got.warnings) == 2
    assert "1,000 bytes" in got.warnings[0] and f"{len(CONTENT):,} bytes" in got.warnings[0]
    assert "0" * 64 in got.warnings[1] and SHA in got.warnings[1]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert logged == list(got.warnings)
    # the Hub-verified file is kept: the catalog's figures do not make it re-download on every call
    n = len(hub.requests)
    assert store.resolve(wrong) == got.path
    again = store.pull(wrong)
    assert again.path == got.path and not again.downloaded and again.verified_by == "hub"
    assert len(hub.requests) == n


def test_hub_size_larger_than_the_catalogs_is_checked_for_disk(hub, monkeypatch):
    # the catalog's small size passes the first disk check; the Hub's real size must be checked too
    monkeypatch.setattr(
        store_download.shutil, "disk_usage", lambda p: Usage(10**12, 0, store.DISK_HEADROOM_BYTES + 2 * MiB)
    )
    with pytest.raises(InsufficientDiskError) as err:
        store.fetch(FakeVariant(size=1000))
    assert err.value.needed == len(CONTENT) + store.DISK_HEADROOM_BYTES
    assert hub.gets() == []


def test_bytes_that_differ_from_the_hubs_oid_are_an_error(hub):
    # the catalog's sha256 matches the bytes served, but the Hub's LFS oid says the file is another:
    # the Hub's is what the download is held to
    other = hashlib.sha256(b"another file").hexdigest()
    hub.etags[FILE_URL] = other
    with pytest.raises(ChecksumMismatchError) as err:
        store.fetch(FakeVariant())
    assert f"its sha256 is {SHA}, the Hub's is {other}" in str(err.value) and "deleted" in str(err.value)
    assert [p.name for p in _leftovers()] == [FILENAME + ".lock"]
    assert store.resolve(FakeVariant()) is None


def test_catalog_sha256_is_used_when_the_hub_gives_none(hub):
    hub.etags[FILE_URL] = GIT_BLOB_ETAG  # no LFS oid
    bad = FakeVariant(sha256=hashlib.sha256(b"not this").hexdigest())
    with pytest.raises(ChecksumMismatchError, match="the catalog's is"):
        store.fetch(bad)
    assert [p.name for p in _leftovers()] == [FILENAME + ".lock"]
    got = store.pull(FakeVariant())
    assert got.verified_by == "catalog" and got.unverified == () and got.path.read_bytes() == CONTENT


def _records() -> list[dict]:
    folder = store.cache_dir() / ".verified"
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []


def test_file_with_no_sha256_anywhere_is_hashed_recorded_and_flagged_unverified(hub, caplog):
    hub.etags[FILE_URL] = GIT_BLOB_ETAG
    v = FakeVariant(sha256=None)
    with caplog.at_level(logging.WARNING, logger="localllm.store"):
        got = store.pull(v)
    assert got.path.read_bytes() == CONTENT
    assert got.verified_by is None and got.unverified == (FILENAME,) and got.sha256 == SHA
    assert any("no published sha256" in r.getMessage() and SHA in r.getMessage() for r in caplog.records)
    assert [(r["path"], r["sha256"], r["verified_by"]) for r in _records()] == [(str(got.path), SHA, None)]
    assert store.pull(v).unverified == (FILENAME,)  # still unverified when found on disk later
    # later loads are held to the recorded hash
    st = got.path.stat()
    with open(got.path, "r+b") as f:
        f.write(b"X")
    os.utime(got.path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert store.resolve(v) is None


def test_disk_fills_mid_download(hub, monkeypatch):
    room = 12 * MiB  # the disk takes this many bytes of the file, then writes fail with ENOSPC
    real_open = open

    class FullDisk(io.FileIO):
        def write(self, data):
            n = min(len(data), room - self.tell())
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
            return super().write(bytes(data[:n]))  # a short write, as the kernel gives just before full

    def fake_open(file, mode="r", *args, **kwargs):
        return FullDisk(file, mode) if "a" in mode else real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(store_download, "open", fake_open, raising=False)
    with pytest.raises(DiskFullError) as err:
        store.fetch(FakeVariant())
    assert isinstance(err.value, InsufficientDiskError) and err.value.written == room
    msg = str(err.value)
    assert "disk is full" in msg and f"{room:,} bytes of {len(CONTENT):,}" in msg
    assert "partial file was deleted" in msg and "LOCALLLM_HOME" in msg
    assert [p.name for p in _leftovers()] == [FILENAME + ".lock"]  # no .part, no .part.json
    assert store.resolve(FakeVariant()) is None
    # with room again, the next call downloads it whole, from the start
    monkeypatch.undo()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert store.fetch(FakeVariant()).read_bytes() == CONTENT
    assert "range" not in hub.gets()[-1]


def test_free_disk_floor_when_no_size_is_known(hub, monkeypatch):
    hub.no_size.add(FILE_URL)
    v = FakeVariant(size=None)
    target = store.cache_dir() / "tester--tiny-GGUF" / FILENAME
    part = target.with_name(FILENAME + ".part")
    capacity = {"free": store.DISK_HEADROOM_BYTES - 1}

    def usage(path):  # a disk whose free space shrinks as the partial file grows
        return Usage(10**12, 0, capacity["free"] - (part.stat().st_size if part.exists() else 0))

    monkeypatch.setattr(store_download.shutil, "disk_usage", usage)
    # before: under the floor, nothing is downloaded
    with pytest.raises(InsufficientDiskError) as err:
        store.fetch(v)
    assert not isinstance(err.value, DiskFullError) and "not known" in str(err.value)
    assert err.value.needed == store.DISK_HEADROOM_BYTES and hub.gets() == []
    # while: room for one 10 MiB chunk above the floor; the download stops there instead of filling the disk
    capacity["free"] = store.DISK_HEADROOM_BYTES + 10 * MiB
    with pytest.raises(DiskFullError) as err:
        store.fetch(v)
    assert err.value.written == 10 * MiB and err.value.available == store.DISK_HEADROOM_BYTES
    assert "not known" in str(err.value) and "kept free" in str(err.value)
    assert len(hub.gets()) == 1 and [p.name for p in _leftovers()] == [FILENAME + ".lock"]
    # with room, a download of unknown size completes (its Hub oid still checks it)
    capacity["free"] = 10**12
    got = store.pull(v)
    assert got.path.read_bytes() == CONTENT and got.verified_by == "hub"


def test_offline_with_file_cached(hub, monkeypatch):
    path = store.fetch(FakeVariant())
    n = len(hub.requests)
    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    assert store.fetch(FakeVariant()) == path
    monkeypatch.delenv("LOCALLLM_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert store.fetch(FakeVariant()) == path
    assert store.fetch(FakeVariant(), offline=True) == path
    assert len(hub.requests) == n  # no request reached the server


def test_offline_without_file(hub, monkeypatch):
    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError) as err:
        store.fetch(FakeVariant())
    msg = str(err.value)
    target = store.cache_dir() / "tester--tiny-GGUF" / FILENAME
    assert "offline" in msg and FILENAME in msg and f"{len(CONTENT):,} bytes" in msg
    assert str(target) in msg and f"{hub.url}/{REPO}/resolve/main/{FILENAME}" in msg
    assert err.value.path == str(target) and err.value.size == len(CONTENT)
    assert hub.requests == []


def test_unreachable_source(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(ModelUnavailableError) as err:
        store.fetch(FakeVariant())
    assert "could not be reached" in str(err.value) and "127.0.0.1:9" in str(err.value)


def test_missing_remote_file(hub):
    with pytest.raises(ModelUnavailableError, match="no such file"):
        store.fetch(FakeVariant(filename="nope.gguf"))


def test_not_enough_disk(hub, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(store_download.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5 * MiB, 5 * MiB))
    with pytest.raises(InsufficientDiskError) as err:
        store.fetch(FakeVariant())
    assert err.value.available == 5 * MiB and err.value.needed == len(CONTENT) + store.DISK_HEADROOM_BYTES
    assert "5.2 MB free" in str(err.value) and "LOCALLLM_HOME" in str(err.value)
    assert hub.requests == []  # checked before any network


def test_reuses_hugging_face_cache(hub, monkeypatch):
    from huggingface_hub import hf_hub_download

    # huggingface_hub itself fills its cache from our server
    hf_path = Path(hf_hub_download(REPO, FILENAME, cache_dir=str(store.hf_cache_dir()), endpoint=hub.url))
    assert str(hf_path).startswith(str(store.hf_cache_dir()))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    n = len(hub.requests)
    assert store.fetch(FakeVariant()) == hf_path
    assert store.resolve(FakeVariant()) == hf_path
    assert len(hub.requests) == n and not (store.cache_dir() / "tester--tiny-GGUF" / FILENAME).exists()
    files = store.list_local(catalog=_Catalog())
    assert [(f.path, f.variant, f.source, f.size) for f in files] == [
        (hf_path, "tiny:q4_k_m", "huggingface", len(CONTENT))
    ]


def test_verified_hash_is_remembered(hub):
    path = store.fetch(FakeVariant())
    st = path.stat()
    # change a byte but keep size and mtime: the remembered hash is trusted (no rehash)
    with open(path, "r+b") as f:
        f.write(b"X")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.resolve(FakeVariant()) == path
    # a new mtime invalidates the record: the file is hashed again and rejected
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert store.resolve(FakeVariant()) is None


def test_packaged_variant_and_list_local(hub, tmp_path):
    packaged = tmp_path / "starter.gguf"
    packaged.write_bytes(b"GGUF")
    v = FakeVariant(name="starter:f16", repo=None, filename=None, path=str(packaged))
    assert store.fetch(v, offline=True) == packaged and hub.requests == []
    path = store.fetch(FakeVariant())
    stray = store.cache_dir() / "other--repo" / "stray.gguf"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"x" * 10)
    files = store.list_local(catalog=_Catalog(FakeVariant(), v))
    assert [(f.path, f.variant, f.source) for f in files] == [
        (packaged, "starter:f16", "package"),
        (path, "tiny:q4_k_m", "localllm"),
        (stray, None, "localllm"),
    ]


def test_home_is_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path / "a"))
    assert store.cache_dir() == tmp_path / "a" / "models"
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path / "b"))
    assert store.cache_dir() == tmp_path / "b" / "models"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert store.hf_cache_dir() == tmp_path / "hf" / "hub"


class _Catalog:
    def __init__(self, *variants):
        self.variants = variants or (FakeVariant(),)


def test_pull_command_downloads_a_catalog_variant(hub, monkeypatch, capsys):
    from localllm.catalog import load_catalog
    from localllm.cli import main

    variant = load_catalog().find("qwen2.5-0.5b-instruct:q2_k")
    hub.files[f"/{variant.repo}/resolve/main/{variant.filename}"] = CONTENT
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(store_download.shutil, "disk_usage", lambda p: usage(10**12, 0, 10**12))
    assert main(["pull", "qwen2.5-0.5b-instruct:q2_k"]) == 0
    out = capsys.readouterr()
    path = Path(out.out.strip())
    assert path.read_bytes() == CONTENT and path == store.resolve(variant)
    assert "verified" in out.err
    n = len(hub.requests)
    assert main(["pull", "qwen2.5-0.5b-instruct:q2_k"]) == 0  # already there: no network
    assert "already on disk" in capsys.readouterr().err and len(hub.requests) == n
    assert main(["pull", "no-such-model"]) == 1
    assert "error:" in capsys.readouterr().err


def test_pull_command_says_what_was_verified_and_what_disagreed(hub, monkeypatch, capsys):
    from localllm.catalog import load_catalog
    from localllm.cli import main

    monkeypatch.setattr(store_download.shutil, "disk_usage", lambda p: Usage(10**12, 0, 10**12))
    cat = load_catalog()
    exact = cat.find("llama-3.2-3b-instruct:q4_k_m")  # a published (not estimated) catalog size
    assert not exact.size_estimated and exact.size != len(CONTENT)
    hub.files[f"/{exact.repo}/resolve/main/{exact.filename}"] = CONTENT
    assert main(["pull", exact.name]) == 0
    err = capsys.readouterr().err
    assert f"warning: {exact.name}: the catalog says {exact.size:,} bytes" in err
    assert "verified against the Hub's sha256" in err and "unverified" not in err
    # no sha256 anywhere: the command says so, with the hash it recorded
    plain = cat.find("qwen2.5-0.5b-instruct:q2_k")
    assert plain.sha256 is None
    url = f"/{plain.repo}/resolve/main/{plain.filename}"
    hub.files[url], hub.etags[url] = CONTENT, GIT_BLOB_ETAG
    assert main(["pull", plain.name]) == 0
    err = capsys.readouterr().err
    assert f"{plain.name}: unverified: no published sha256; recorded sha256 {SHA}" in err
    assert main(["pull", plain.name]) == 0  # found on disk: still said to be unverified
    err = capsys.readouterr().err
    assert "already on disk" in err and "unverified: no published sha256" in err


def test_progress_bar_renders_on_a_terminal():
    import io

    from localllm.commands.pull import ProgressBar

    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    bar = ProgressBar("tiny:q4_k_m", stream=stream)
    bar(0, 2_000_000)
    bar(2_000_000, 2_000_000)
    bar.finish()
    text = stream.getvalue()
    assert "100%" in text and "2.0 MB/2.0 MB" in text and text.endswith("\n")


def test_file_without_catalog_hash_is_held_to_its_download_hash(hub):
    v = FakeVariant(sha256=None, size=None)  # only the server's ETag gave a hash
    path = store.fetch(v)
    assert store.resolve(v) == path
    st = path.stat()
    with open(path, "r+b") as f:  # damaged on disk later
        f.write(b"X")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert store.resolve(v) is None


# -- ONNX folders ----------------------------------------------------------------------------

ONNX_REPO = "tester/tiny-ONNX"


@dataclass(frozen=True)
class FakeOnnxVariant:
    name: str = "tiny-onnx:fp32"
    repo: str | None = ONNX_REPO
    filename: str | None = "onnx/model.onnx"
    size: int | None = None
    sha256: str | None = None
    path: str | None = None
    format: str = "onnx"
    size_estimated: bool = True


@pytest.fixture(scope="module")
def onnx_repo(tiny_onnx):
    """A tiny ONNX decoder folder as published (onnx/model.onnx + model.onnx_data, config, tokenizer)."""
    folder = tiny_onnx
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _serve_onnx(hub, files, *, drop=()):
    for rel, body in files.items():
        if rel not in drop:
            hub.files[f"/{ONNX_REPO}/resolve/main/{rel}"] = body


def test_onnx_variant_downloads_a_folder_that_loads_and_generates(hub, onnx_repo):
    import localllm
    from localllm.hardware.detect import load_profile

    assert "onnx/model.onnx_data" in onnx_repo and "genai_config.json" in onnx_repo
    _serve_onnx(hub, onnx_repo)
    hub.etags[f"/{ONNX_REPO}/resolve/main/config.json"] = GIT_BLOB_ETAG  # a small non-LFS file: no sha256 published
    variant = FakeOnnxVariant(size=sum(len(b) for b in onnx_repo.values()))
    seen = []
    got = store.pull(variant, progress=lambda d, t: seen.append((d, t)))
    path = got.path
    assert got.downloaded and got.verified_by == "hub" and got.unverified == ("config.json",)
    assert got.sha256 == hashlib.sha256(onnx_repo["onnx/model.onnx"]).hexdigest()
    root = store.cache_dir() / "tester--tiny-ONNX"
    assert path == root / "onnx" / "model.onnx"
    for rel, body in onnx_repo.items():  # the repository's layout, byte for byte
        assert (root / rel).read_bytes() == body, rel
    assert (root / "onnx" / ".model.onnx.complete").is_file()
    assert not [p for p in root.rglob("*.part")]
    assert seen and seen[-1][0] == variant.size
    # the optional files that 404 (model.onnx.data, chat_template.jinja) were asked for and skipped
    asked = {p for m, p, _ in hub.requests if m == "HEAD"}
    assert f"/{ONNX_REPO}/resolve/main/onnx/model.onnx.data" in asked
    with localllm.load(path, context=64, hardware=load_profile("laptop-x86-8gb")) as m:
        assert m.info.runtime == "onnxruntime"
        assert m.generate("Hello", max_tokens=3, temperature=0).text is not None
    # offline, and online again: the complete folder is reused without a request
    n = len(hub.requests)
    assert store.fetch(variant, offline=True) == path
    assert store.fetch(variant) == path and store.resolve(variant) == path
    again = store.pull(variant)
    assert not again.downloaded and again.verified_by == "hub" and again.unverified == ("config.json",)
    assert len(hub.requests) == n


def test_onnx_folder_without_a_required_file_is_never_complete(hub, onnx_repo, monkeypatch):
    _serve_onnx(hub, onnx_repo, drop=("tokenizer.json", "genai_config.json"))
    variant = FakeOnnxVariant()
    with pytest.raises(ModelUnavailableError, match="no such file"):
        store.fetch(variant)
    assert store.resolve(variant) is None
    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="offline"):
        store.fetch(variant)
    monkeypatch.delenv("LOCALLLM_OFFLINE")
    # once the repository has it, the next fetch completes the folder, reusing what arrived
    _serve_onnx(hub, onnx_repo, drop=("genai_config.json",))
    n = len(hub.requests)
    path = store.fetch(variant)
    assert store.resolve(variant) == path
    got = {q.rsplit("/main/", 1)[1] for m, q, _ in hub.requests[n:] if m == "GET"}
    assert got == {"tokenizer.json", "tokenizer_config.json", "generation_config.json"}  # the rest was kept
    # a file that changes on disk afterwards makes the folder incomplete again
    (path.parent / "model.onnx_data").write_bytes(b"short")
    assert store.resolve(variant) is None
