"""The model store against a real HTTP server on 127.0.0.1 that speaks the Hub's file API.

huggingface_hub reads HF_ENDPOINT once, when it is imported (into
`huggingface_hub.constants.ENDPOINT`). localllm.store reads HF_ENDPOINT at call time and
passes it to huggingface_hub explicitly, so setting it with monkeypatch per test is enough,
whether or not huggingface_hub was imported before. Same for HF_HOME (the HF cache folder).
"""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections import namedtuple
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from localllm import store
from localllm.errors import ChecksumMismatchError, InsufficientDiskError, ModelUnavailableError

MiB = 1024 * 1024
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = "tester/tiny-GGUF"
FILENAME = "tiny-q4_k_m.gguf"
# huggingface_hub's http_get writes in 10 MiB chunks (constants.DOWNLOAD_CHUNK_SIZE): the file
# must span several for a cut download to leave a partial file to resume from.
CONTENT = random.Random(0).randbytes(24 * MiB)
SHA = hashlib.sha256(CONTENT).hexdigest()


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
        self.requests: list[tuple[str, str, dict]] = []
        self.api_requests: list[tuple[str, str, dict]] = []
        self.cut_next_get_after: int | None = None  # close the connection after this many body bytes, once
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
        self.send_header("X-Linked-Size", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")

    def do_HEAD(self):
        body = self._lookup()
        if body is None:
            return
        self.send_response(200)
        self._common_headers(body)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()

    def do_GET(self):
        body = self._lookup()
        if body is None:
            return
        start = 0
        rng = self.headers.get("Range")
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
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:])) and len(seen) >= 3
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


def test_remote_size_differs_from_catalog(hub):
    with pytest.raises(ChecksumMismatchError, match="catalog expects 1,000"):
        store.fetch(FakeVariant(size=1000, sha256=None))
    assert hub.gets() == []  # refused before downloading anything


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
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5 * MiB, 5 * MiB))
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
    assert [(f.path, f.variant, f.source, f.size) for f in files] == [(hf_path, "tiny:q4_k_m", "huggingface",
                                                                       len(CONTENT))]


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
        (packaged, "starter:f16", "package"), (path, "tiny:q4_k_m", "localllm"), (stray, None, "localllm")]


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
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: usage(10**12, 0, 10**12))
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
def onnx_repo(tmp_path_factory):
    """A tiny ONNX decoder folder as published (onnx/model.onnx + model.onnx_data, config, tokenizer)."""
    from localllm.tinyonnx import write_onnx_folder

    folder = write_onnx_folder(tmp_path_factory.mktemp("onnx-repo") / "tiny-onnx", seed=5)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _serve_onnx(hub, files, *, drop=()):
    for rel, body in files.items():
        if rel not in drop:
            hub.files[f"/{ONNX_REPO}/resolve/main/{rel}"] = body


def test_onnx_variant_downloads_a_folder_that_loads_and_generates(hub, onnx_repo):
    import localllm
    from localllm.hwprobe import load_profile

    assert "onnx/model.onnx_data" in onnx_repo and "genai_config.json" in onnx_repo
    _serve_onnx(hub, onnx_repo)
    variant = FakeOnnxVariant(size=sum(len(b) for b in onnx_repo.values()))
    seen = []
    path = store.fetch(variant, progress=lambda d, t: seen.append((d, t)))
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
