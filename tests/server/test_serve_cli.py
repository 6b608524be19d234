"""`localllm serve` refuses what it cannot serve before it listens: a clear error, exit 1, no traceback."""

from __future__ import annotations

import socket
import subprocess
import sys


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localllm", "serve", *args], capture_output=True, text=True, timeout=120
    )


def test_a_model_that_cannot_load_is_an_error_before_the_server_listens(tmp_path):
    r = _serve(str(tmp_path / "missing.gguf"), "--port", "0")
    assert r.returncode == 1
    assert "error: no such file" in r.stderr and "Traceback" not in r.stderr
    assert "Started server" not in r.stderr


def test_a_port_in_use_is_named_with_what_to_do():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = _serve("--port", str(port))
    assert r.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "--port N" in r.stderr


def test_serve_is_in_the_help():
    r = subprocess.run(
        [sys.executable, "-m", "localllm", "serve", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and "--keep-alive" in r.stdout and "--api-key" in r.stdout
