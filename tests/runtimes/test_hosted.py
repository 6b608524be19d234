"""A model split across llama.cpp RPC workers runs in a child process (issue 19): it writes what an
in-process engine writes, and a worker lost mid-generation ends the generation with a
GenerationError that says what happened, instead of llama.cpp aborting this process or hanging.

Real workers on 127.0.0.1 (tests/runtimes/rpchelp.py), the real SmolLM2. Greedy runs are 16
tokens long: the workers compute with the build's AVX2 kernels, and on a longer reply a near-tie
may flip (see test_rpc.py).
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from localllm.errors import GenerationError, InvalidModelError, RuntimeUnavailableError
from localllm.model import Model
from localllm.placement import Placement
from localllm.runtimes import hosted, load_engine, rpc
from localllm.runtimes.base import BatchEngine
from localllm.runtimes.hosted import STALL_S, EngineProcessError, HostedEngine
from localllm.runtimes.llamacpp import LlamaCppEngine
from localllm.runtimes.rpc_build import BUILD_ENV
from tests.runtimes import rpchelp
from tests.runtimes.rpchelp import free_port

rpc_build, worker_procs = rpchelp.rpc_build, rpchelp.worker_procs  # fixtures

pytestmark = pytest.mark.timeout(600)  # the build, when none is kept yet, is made in the first setup
PROMPT = "The capital of France is"


@pytest.fixture
def workers_here(rpc_build, worker_procs, monkeypatch):
    """Two real workers [(endpoint, process)], and the build where the child finds it."""
    monkeypatch.setenv(BUILD_ENV, str(rpc_build.folder))
    return worker_procs


def split(endpoints, n_ctx=256) -> Placement:
    return Placement(n_ctx=n_ctx, n_gpu_layers=99, workers=tuple(endpoints), tensor_split=(1.0, 1.0), n_threads=1)


def greedy(engine, n: int = 16) -> list[int]:
    logits, out = engine.eval(engine.tokenize(PROMPT)), []
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = engine.eval([out[-1]])
    return out


def children(marker: str = "localllm.runtimes.hosted_child") -> list[psutil.Process]:
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if marker in " ".join(p.cmdline()) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


class InterruptOnce:
    """The parent's end of the socket pair, raising KeyboardInterrupt the first time it waits."""

    def __init__(self, conn) -> None:
        self.conn, self.armed = conn, True

    def poll(self, timeout):
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt
        return self.conn.poll(timeout)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def test_a_model_on_two_workers_in_a_child_writes_what_an_in_process_engine_writes(
    workers_here, smollm2_gguf, monkeypatch
):
    endpoints = [ep for ep, _ in workers_here]
    alone = LlamaCppEngine(smollm2_gguf, Placement(n_ctx=256, n_threads=1))
    try:
        expected = greedy(alone)
        alone.rewind(0)
        alone_text = Model(alone, name="smol", path=smollm2_gguf, placement=alone.placement).generate(
            PROMPT, max_tokens=16, temperature=0
        )
    finally:
        alone.close()
    engine = load_engine(smollm2_gguf, split(endpoints))
    try:
        assert isinstance(engine, HostedEngine) and isinstance(engine, BatchEngine)
        assert engine.child_pid != os.getpid() and [w.endpoint for w in engine.workers] == endpoints
        assert sorted(port for _, port in engine.keepalive) == sorted(int(ep.split(":")[1]) for ep in endpoints)
        assert greedy(engine) == expected
        assert list(engine.cached_tokens) == list(engine._call("seq_tokens", 0))  # the copy here is exact
        rows = engine.eval_all(expected[:3])  # three more positions, every row's logits
        assert rows.shape == (3, engine.n_vocab) and engine.n_past == len(engine.tokenize(PROMPT)) + 19
        engine.rewind(4)
        assert engine.n_past == 4 and list(engine._call("seq_tokens", 0)) == list(engine.cached_tokens)
        engine.rewind(0)
        prompt = engine.tokenize(PROMPT)
        engine._conn = InterruptOnce(engine._conn)  # Ctrl-C while the child evaluates the prompt
        with pytest.raises(KeyboardInterrupt):
            engine.eval(prompt)
        assert engine.n_past == len(prompt)  # its answer is read first: the prompt is in the cache
        logits = engine.eval([expected[0]])
        assert engine.n_past == len(prompt) + 1 and int(logits.argmax()) == expected[1]
        llm = Model(engine, name="smol", path=smollm2_gguf, placement=engine.placement)
        monkeypatch.setattr(hosted, "STALL_S", 0.002)  # the workers are looked at all the time: found alive
        first = llm.generate(PROMPT, max_tokens=16, temperature=0)
        again = llm.generate(PROMPT, max_tokens=16, temperature=0)  # the cached prefix is reused
        assert first.text == again.text == alone_text.text and first.text.strip()
        llm.close()
        assert engine._proc is not None and engine._proc.returncode == 0  # asked to end, it ended by itself
    finally:
        engine.close()


def test_a_worker_killed_mid_generation_ends_it_with_a_generation_error_saying_which(workers_here, smollm2_gguf):
    (alive, alive_proc), (dead, dead_proc) = workers_here
    engine = load_engine(smollm2_gguf, split([alive, dead], n_ctx=512))
    llm = Model(engine, name="smol", path=smollm2_gguf, placement=engine.placement)
    chunks, killed = 0, None
    with pytest.raises(GenerationError) as info:  # the kill lands mid-stream
        for _ in llm.stream("Once upon a time", max_tokens=400, temperature=0):
            chunks += 1
            if chunks == 4:
                dead_proc.kill()
                dead_proc.wait()
                killed = time.monotonic()
    assert killed is not None and chunks < 400
    waited = time.monotonic() - killed
    assert waited < 5, waited
    err = info.value
    assert isinstance(err, EngineProcessError) and err.lost_workers == (dead,)
    assert err.returncode == -signal.SIGABRT  # llama.cpp's client aborted the child, not this process
    message = str(err)
    assert f"worker {dead} cannot be reached" in message and alive not in message.split("llama.cpp:")[0]
    assert f"localllm worker --port {dead.rpartition(':')[2]}" in message and "load the model again" in message
    assert "was killed by SIGABRT during a call to the model (eval)" in message
    assert alive_proc.poll() is None and rpc.hello(alive, timeout=2.0)  # the other worker lives on
    with pytest.raises(GenerationError, match=dead):  # and so does every later call, at once
        llm.generate("Hello", max_tokens=2)
    started = time.monotonic()
    with pytest.raises(EngineProcessError, match=dead):
        engine.eval([1])
    assert time.monotonic() - started < 0.5
    llm.close()
    engine.close()
    assert not children()


def test_a_worker_that_stops_answering_mid_generation_ends_it_within_seconds(workers_here, smollm2_gguf):
    (stopped, stopped_proc), (other, _) = workers_here
    engine = load_engine(smollm2_gguf, split([stopped, other], n_ctx=512))
    llm = Model(engine, name="smol", path=smollm2_gguf, placement=engine.placement)
    chunks, since = 0, None
    try:
        with pytest.raises(GenerationError) as info:  # the stop lands mid-stream
            for _ in llm.stream("Once upon a time", max_tokens=400, temperature=0):
                chunks += 1
                if chunks == 4:
                    stopped_proc.send_signal(signal.SIGSTOP)  # its kernel still answers TCP; it does not
                    since = time.monotonic()
    finally:
        stopped_proc.send_signal(signal.SIGCONT)
    assert since is not None and chunks < 400
    waited = time.monotonic() - since
    assert STALL_S <= waited < 2 * STALL_S + 3, (chunks, waited)
    message = str(info.value)
    assert (
        f"worker {stopped} (process {stopped_proc.pid}) is stopped" in message
        and "was ended by localllm during a call to the model (eval)" in message
    )
    assert info.value.lost_workers == (stopped,)  # type: ignore[attr-defined]
    with pytest.raises(GenerationError):
        engine.eval([1])
    llm.close()
    assert not children()


def test_a_load_error_in_the_child_comes_back_as_its_own_class_quickly(workers_here, smollm2_gguf, tmp_path):
    nobody = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(rpc.WorkerUnavailableError, match=rf"{nobody} cannot be reached.*--port {nobody[10:]}"):
        load_engine(smollm2_gguf, split([nobody, nobody]))
    assert time.monotonic() - started < 15
    endpoints = [ep for ep, _ in workers_here]
    garbage = tmp_path / "not-a-model.gguf"
    garbage.write_bytes(b"GGUF" + bytes(200))
    with pytest.raises(InvalidModelError, match="llama.cpp could not load") as info:
        load_engine(garbage, split(endpoints))
    assert info.value.path == str(garbage)  # the attributes travel with the message
    with pytest.raises(ValueError, match="unknown KV cache type 'q3'"):
        load_engine(smollm2_gguf, Placement(n_ctx=256, workers=tuple(endpoints), kv_type="q3"))  # type: ignore[arg-type]
    assert not children()
    for endpoint in endpoints:  # the children let go of the workers: they answer again
        assert rpc.hello(endpoint, timeout=2.0)


ORPHAN = textwrap.dedent(
    """
    import json, sys
    from localllm.placement import Placement
    from localllm.runtimes import load_engine
    e = load_engine(sys.argv[1], Placement(n_ctx=128, n_gpu_layers=99, workers=tuple(sys.argv[2:]), n_threads=1))
    print(json.dumps(e.child_pid), flush=True)
    sys.stdin.read()
    """
)


def test_close_and_collection_and_a_killed_parent_leave_no_child(workers_here, smollm2_gguf):
    endpoints = [ep for ep, _ in workers_here]
    engine = load_engine(smollm2_gguf, split(endpoints))
    pid = engine.child_pid
    assert [p.pid for p in children()] == [pid]
    engine.close()
    engine.close()  # idempotent
    assert not psutil.pid_exists(pid)  # ended and reaped
    assert not children()
    with pytest.raises(GenerationError, match="closed"):
        engine.tokenize("x")
    engine = load_engine(smollm2_gguf, split(endpoints))
    pid = engine.child_pid
    del engine
    gc.collect()
    assert not psutil.pid_exists(pid)
    # a parent killed outright (no atexit, no close): the child sees it and ends
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, str(smollm2_gguf), *endpoints], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        child = json.loads(parent.stdout.readline())
        assert psutil.pid_exists(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    while True:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break  # ended; whoever adopted it reaps it
        except psutil.NoSuchProcess:
            break
        assert time.monotonic() < deadline, "the child outlived its killed parent"
        time.sleep(0.1)


def test_without_the_rpc_build_the_load_says_how_to_make_it(smollm2_gguf, monkeypatch, tmp_path):
    monkeypatch.setenv(BUILD_ENV, str(tmp_path / "no-build-here"))
    with pytest.raises(RuntimeUnavailableError, match="localllm worker --build-only"):
        load_engine(smollm2_gguf, split([f"127.0.0.1:{free_port()}"] * 2))
    assert not children()
