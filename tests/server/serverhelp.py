"""Running a real `localllm serve` process on 127.0.0.1, for the official openai and ollama clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

START_TIMEOUT_S = 120.0  # a cold import of llama.cpp plus a load, on a busy 2-core machine


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(tmp_path: Path, *args: str, api_key: str | None = None) -> Iterator[Server]:
    """`localllm serve ARGS` on a free port, waited for until /health answers; SIGTERM at the end."""
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "localllm", "serve", *args, "--port", str(port), "--threads", "1"]
    if api_key:
        cmd += ["--api-key", api_key]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ))
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"localllm serve exited {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"localllm serve did not answer in {START_TIMEOUT_S}s:\n{server.output()}")
            time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def isolate(mp: pytest.MonkeyPatch, tmp: Path) -> None:
    """What tests/conftest.py's per-test isolation sets, for a server started before any test
    of its module: no real Hub, package index, Ollama models or network."""
    mp.setenv("LOCALLLM_HOME", str(tmp / "home"))
    mp.setenv("HF_HOME", str(tmp / "hf-home"))
    mp.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    mp.setenv("PIP_CONFIG_FILE", os.devnull)
    mp.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
    mp.setenv("OLLAMA_MODELS", str(tmp / "no-ollama"))
    mp.setenv("LOCALLLM_OFFLINE", "1")
