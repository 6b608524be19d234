"""llama.cpp RPC workers (issue 19, first part): the worker built from the installed llama-cpp-python's
own source, its protocol checked before llama.cpp's client meets it, and a real model split across two
real workers on 127.0.0.1 writing what it writes alone.

The build (about a minute on 2 cores, after a 75 MB download) is kept outside the repository and
the per-test LOCALLLM_HOME, like the real model, and found again by its stamp. Anything that
loads the RPC backend runs in a child process: it changes that process's llama.cpp device list
for good, and llama.cpp's client aborts its process when a worker goes away.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from localllm.cli import main
from localllm.errors import InvalidOptionError
from localllm.repack import EXTRA_BUFFERS_ENV
from localllm.runtimes import rpc
from localllm.runtimes.rpc_build import BUILD_ENV, protocol_version
from tests.runtimes import rpchelp
from tests.runtimes.rpchelp import free_port

rpc_build, worker_procs, workers = rpchelp.rpc_build, rpchelp.worker_procs, rpchelp.workers  # fixtures

# the first test here builds the worker when no build is kept yet: minutes, in its setup
pytestmark = pytest.mark.timeout(1800)


def test_the_build_speaks_the_protocol_of_its_source(rpc_build, workers):
    header = (
        "#define RPC_PROTO_MAJOR_VERSION    7\n#define RPC_PROTO_MINOR_VERSION 1\n#define RPC_PROTO_PATCH_VERSION 2\n"
    )
    assert protocol_version(header) == (7, 1, 2)
    assert rpc_build.protocol[0] >= 1
    for endpoint in workers:  # what the running worker says is what the build's header said
        assert rpc.check_worker(endpoint, rpc_build.protocol) == rpc_build.protocol
        info = rpc.describe(endpoint, rpc_build.protocol)  # and what it offers, asked over the protocol
        assert info.protocol == rpc_build.protocol
        ((free, total),) = info.memory  # one CPU device
        assert 0 < free <= total


def test_a_worker_that_is_not_there_is_refused_at_once_with_what_to_do():
    port = free_port()  # nothing listens there
    started = time.monotonic()
    with pytest.raises(rpc.WorkerUnavailableError, match=rf"127.0.0.1:{port} cannot be reached.*--port {port}"):
        rpc.check_worker(f"127.0.0.1:{port}", (7, 0, 0))
    assert time.monotonic() - started < 5
    with pytest.raises(InvalidOptionError, match="not host:port"):
        rpc.check_worker("no-port-here", (7, 0, 0))


class FakePeer:
    """A TCP peer on 127.0.0.1 that answers HELLO with `version`, or never answers (None)."""

    def __init__(self, version: tuple[int, int, int] | None, answer: bytes | None = None) -> None:
        self.version, self.answer = version, answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            request = conn.recv(1 + 8 + rpc.CAPS_SIZE)
            self.requests.append(request)
            if self.answer is not None:
                conn.sendall(self.answer)
                return
            if self.version is None:
                time.sleep(5)
                return
            conn.sendall(struct.pack("<Q", 4 + rpc.CAPS_SIZE) + bytes([*self.version, 0]) + bytes(rpc.CAPS_SIZE))


def test_a_worker_of_another_protocol_version_is_refused_before_llama_cpp_meets_it():
    peer = FakePeer((99, 0, 0))
    with pytest.raises(rpc.WorkerVersionError, match=r"protocol 99\.0\.0 and this llama.cpp 7\.0\.0"):
        rpc.check_worker(peer.endpoint, (7, 0, 0))
    assert peer.requests[0][0] == rpc.HELLO  # the HELLO command, the request size, the capabilities
    assert struct.unpack("<Q", peer.requests[0][1:9]) == (rpc.CAPS_SIZE,)
    newer_minor = FakePeer((7, 3, 0))
    with pytest.raises(rpc.WorkerVersionError):
        rpc.describe(newer_minor.endpoint, (7, 0, 0))  # refused before it is asked anything else
    older_patch = FakePeer((7, 0, 0))
    assert rpc.check_worker(older_patch.endpoint, (7, 0, 1)) == (7, 0, 0)


def test_a_peer_that_answers_something_else_is_refused_saying_so():
    peer = FakePeer(None, answer=struct.pack("<Q", 1) + b"x")  # one byte where a version takes 28
    with pytest.raises(rpc.WorkerUnavailableError, match="answered command 14 with 1 bytes: not a llama.cpp RPC"):
        rpc.check_worker(peer.endpoint, (7, 0, 0))


def test_a_peer_that_never_answers_is_refused_after_the_timeout_not_waited_on():
    peer = FakePeer(None)
    started = time.monotonic()
    with pytest.raises(rpc.WorkerUnavailableError, match="did not answer within 1 s"):
        rpc.check_worker(peer.endpoint, (7, 0, 0), timeout=1.0)
    assert time.monotonic() - started < 3


SPLIT = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path
    import numpy as np
    from localllm.placement import Placement
    from localllm.runtimes import rpc
    from localllm.runtimes.llamacpp import LlamaCppEngine
    from localllm.runtimes.rpc_build import find_rpc_build
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)  # llama.cpp says where each buffer went
    model, folder, endpoints = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    def write(**kw):
        e = LlamaCppEngine(model, Placement(n_ctx=256, n_threads=1, **kw))
        logits, out = e.eval(e.tokenize("Once upon a time")), []
        for _ in range(TOKENS):
            out.append(int(np.argmax(logits)))
            logits = e.eval([out[-1]])
        e.close()
        return out
    alone = write()
    build = find_rpc_build(folder)
    described = [rpc.describe(ep, build.protocol).memory[0][1] for ep in endpoints]
    workers = rpc.attach(endpoints, build)
    split = write(n_gpu_layers=99, tensor_split=(1.0, 1.0))
    out = {"alone": alone, "split": split, "workers": [w.__dict__ for w in workers], "described": described}
    print(json.dumps(out))
    """
)
TOKENS = 64


def test_a_real_model_split_across_two_workers_writes_what_it_writes_alone(rpc_build, workers, smollm2_gguf):
    """64 greedy tokens, the same: the workers are built for this llama.cpp's instruction sets
    (rpc_build.cpu_flags), so they run its kernels; an RPC server never repacks weights, so the
    run alone here does not either (extra buffers off, which also keeps an AMX build whose
    kernels fault on this machine out of it)."""
    env = {**os.environ, EXTRA_BUFFERS_ENV: "0"}
    proc = subprocess.run(
        [sys.executable, "-c", SPLIT.replace("TOKENS", str(TOKENS)), str(smollm2_gguf), str(rpc_build.folder)]
        + workers,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(out["alone"]) == TOKENS and out["split"] == out["alone"]
    assert [w["endpoint"] for w in out["workers"]] == workers
    assert all(w["total"] > 0 and w["free"] > 0 for w in out["workers"])
    # the memory read over the protocol in Python is what llama.cpp's own client reads
    assert [w["total"] for w in out["workers"]] == out["described"]
    for endpoint in workers:  # each worker holds part of the weights and of the KV cache
        assert f"[{endpoint}] model buffer size" in proc.stderr
        assert f"[{endpoint}] KV buffer size" in proc.stderr


def test_localllm_worker_builds_once_and_warns_when_bound_beyond_this_machine(rpc_build, monkeypatch, capsys):
    monkeypatch.setenv(BUILD_ENV, str(rpc_build.folder))
    assert main(["worker", "--build-only"]) == 0
    assert capsys.readouterr().out.strip() == str(rpc_build.server)
    port = free_port()
    env = {**os.environ, BUILD_ENV: str(rpc_build.folder)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "localllm", "worker", "--host", "0.0.0.0", "--port", str(port), "--threads", "1"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "RPC protocol" in line:
                break
        assert any("WARNING" in line and "no authentication" in line for line in lines), lines
        deadline = time.monotonic() + 30
        while True:  # and it serves: the protocol the build speaks
            try:
                assert rpc.hello(f"127.0.0.1:{port}", timeout=1.0) == rpc_build.protocol
                break
            except rpc.WorkerUnavailableError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_a_plan_leaves_out_a_worker_of_another_version_or_not_there_saying_why(rpc_build, workers, monkeypatch):
    from localllm.hardware.detect import load_profile
    from localllm.planner import plan

    monkeypatch.setenv(BUILD_ENV, str(rpc_build.folder))
    other = FakePeer((rpc_build.protocol[0] + 1, 0, 0))
    gone = f"127.0.0.1:{free_port()}"
    found = rpc.find_workers([workers[0], other.endpoint, gone, workers[0]])
    assert [w.endpoint for w in found] == [workers[0], other.endpoint, gone]  # each once, in order
    assert found[0].error is None and found[0].free > 0 and found[0].rtt_s is not None and found[0].rtt_s < 0.1
    assert "speaks RPC protocol" in (found[1].error or "") and "left out of the plan" in (found[1].error or "")
    assert f"{gone} cannot be reached" in (found[2].error or "")
    again = FakePeer((rpc_build.protocol[0] + 1, 0, 0))  # a fake answers one connection
    p = plan("qwen3-8b:q4_k_m", hardware=load_profile("container-4gib"), workers=[again.endpoint, gone])
    assert p.placement.workers == () and not p.fits  # nothing usable: the plan is this machine's
    assert any("speaks RPC protocol" in w for w in p.warnings) and any("cannot be reached" in w for w in p.warnings)
