"""Issue 19 end to end: two `localllm worker --mem` processes on 127.0.0.1, a machine whose RAM is
too small for the real SmolLM2, and `localllm.load(..., workers=...)`: the planner splits the
model across the workers within what each offers, the model writes what it writes alone, and a
worker killed mid-reply ends that reply with GenerationError, in this process, at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

import localllm
from localllm.errors import GenerationError, InsufficientMemoryError
from localllm.hardware.detect import probe
from localllm.repack import EXTRA_BUFFERS_ENV
from localllm.runtimes import rpc
from localllm.runtimes.rpc_build import BUILD_ENV
from localllm.units import MIB
from tests.runtimes import rpchelp
from tests.runtimes.rpchelp import free_port

rpc_build = rpchelp.rpc_build  # the fixture

pytestmark = pytest.mark.timeout(1800)  # the first RPC test of a run may build the worker

WORKER_MEM = 160 * MIB  # each worker's --mem: about half of the model at this context
CONTEXT = 1024
PROMPT = "The capital of France is"
TOKENS = 64


def start_cli_worker(build, mem: int, log: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    env = {**os.environ, BUILD_ENV: str(build.folder)}
    cmd = [sys.executable, "-m", "localllm", "worker", "--port", str(port), "--threads", "1", "--mem", str(mem)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=out)
    endpoint = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            rpc.hello(endpoint, timeout=1.0)
            return endpoint, proc
        except rpc.WorkerUnavailableError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"worker did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


@pytest.fixture
def cli_workers(rpc_build, monkeypatch, tmp_path):
    monkeypatch.setenv(BUILD_ENV, str(rpc_build.folder))  # the hosted engine's child finds the build here
    started = []
    try:
        for i in range(2):
            started.append(start_cli_worker(rpc_build, WORKER_MEM, tmp_path / f"worker{i}.log"))
        yield started
    finally:
        for _, proc in started:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def small_machine():
    """This machine with 200 MiB of RAM free: SmolLM2 at 1,024 tokens needs more than that here."""
    hw = probe()
    return replace(hw, memory=replace(hw.memory, available=200 * MIB, cgroup_limit=None, cgroup_usage=None))


def test_a_model_too_big_here_runs_across_two_workers_and_writes_what_it_writes_alone(
    cli_workers, small_machine, smollm2_gguf, monkeypatch
):
    endpoints = [endpoint for endpoint, _ in cli_workers]
    for endpoint in endpoints:  # --mem is what each worker reports over the protocol
        ((free, total),) = rpc.describe(endpoint, (7, 0, 0)).memory
        assert free == total == WORKER_MEM
    with pytest.raises(InsufficientMemoryError):  # alone, it does not fit this machine
        localllm.load(smollm2_gguf, context=CONTEXT, hardware=small_machine, workers=[])
    # the workers' kernels are this llama.cpp's (rpc_build.cpu_flags), but an RPC server never
    # repacks weights: compared with a run here that does not either
    monkeypatch.setenv(EXTRA_BUFFERS_ENV, "0")
    with localllm.load(smollm2_gguf, context=CONTEXT, threads=1, workers=[]) as alone:
        want = alone.generate(PROMPT, max_tokens=TOKENS, temperature=0)
        want_chat = alone.chat([{"role": "user", "content": "Name three colours."}], max_tokens=24, temperature=0)
    with localllm.load(smollm2_gguf, context=CONTEXT, threads=1, hardware=small_machine, workers=endpoints) as m:
        plan = m.plan
        assert plan is not None and plan.fits
        assert plan.placement.workers == tuple(endpoints)
        assert plan.placement.n_gpu_layers > 0 and len(plan.placement.tensor_split) == 2
        for d in plan.memory.devices:  # within what each worker offers, and within this machine
            budget = {b.device: b.available for b in plan.budgets}[d.device]
            assert d.total <= budget, (d, budget)
        assert "llama.cpp RPC workers" in plan.explain()
        got = m.generate(PROMPT, max_tokens=TOKENS, temperature=0)
        assert got.text == want.text and got.text.strip()
        assert got.finish_reason == want.finish_reason
        # the same model object streams and chats as a local one does
        assert "".join(c.text for c in m.stream(PROMPT, max_tokens=TOKENS, temperature=0)) == want.text
        chat = [{"role": "user", "content": "Name three colours."}]
        assert m.chat(chat, max_tokens=24, temperature=0).text == want_chat.text


def test_a_worker_killed_mid_reply_ends_it_with_generation_error(cli_workers, small_machine, smollm2_gguf):
    endpoints = [endpoint for endpoint, _ in cli_workers]
    with localllm.load(smollm2_gguf, context=CONTEXT, threads=1, hardware=small_machine, workers=endpoints) as m:
        story = [{"role": "user", "content": "Write a long story about a dragon and a knight."}]
        pieces = m.chat_stream(story, max_tokens=400, temperature=0)
        got = [next(pieces).text for _ in range(4)]  # the reply is under way
        assert "".join(got).strip()
        cli_workers[1][1].kill()
        started = time.monotonic()
        with pytest.raises(GenerationError) as caught:
            for _ in pieces:
                pass
        assert time.monotonic() - started < 15
        message = str(caught.value)
        assert endpoints[1] in message and "localllm worker" in message
        with pytest.raises(GenerationError):  # and later calls say so too (this process lives on)
            m.generate(PROMPT, max_tokens=4, temperature=0)
