"""Shared by the tests of llama.cpp RPC workers: the build (kept outside the repository and the
per-test LOCALLLM_HOME, like the real model, and found again by its stamp) and real workers on
127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from localllm.runtimes import rpc
from localllm.runtimes.rpc_build import build_rpc, installed_llama_cpp_version


@pytest.fixture(scope="session")
def rpc_build():
    from platformdirs import user_cache_dir

    root = Path(os.environ.get("LOCALLLM_TEST_RPC") or user_cache_dir("localllm-test-rpc"))
    return build_rpc(root / f"llama-cpp-python-{installed_llama_cpp_version()}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_worker(build, port: int) -> subprocess.Popen:
    env = {**os.environ, "LD_LIBRARY_PATH": str(build.folder)}
    cmd = [str(build.server), "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            rpc.hello(f"127.0.0.1:{port}", timeout=1.0)
            return proc
        except rpc.WorkerUnavailableError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)


@pytest.fixture
def worker_procs(rpc_build):
    """Two real workers: [(endpoint, process)], killed after the test (a stopped one too)."""
    started: list[tuple[str, subprocess.Popen]] = []
    try:
        for _ in range(2):
            port = free_port()
            started.append((f"127.0.0.1:{port}", start_worker(rpc_build, port)))
        yield started
    finally:
        for _, proc in started:
            proc.kill()  # SIGKILL ends a stopped process as well
            proc.wait(timeout=10)


@pytest.fixture
def workers(worker_procs):
    """The two workers' endpoints."""
    return [endpoint for endpoint, _ in worker_procs]
