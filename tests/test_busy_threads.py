"""Threads that fit the machine as it is now: a real llama.cpp context's count changes, and a real
Model re-chooses it between generations while real hog processes keep every CPU busy."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time

import pytest

import localllm
from localllm.hardware.cpu_load import MIN_WINDOW_S, choose_threads
from localllm.placement import Placement
from localllm.runtimes.llamacpp import LlamaCppEngine
from localllm.testing.hogs import start_hog

HOG_SECONDS = 120  # a bound far above any test here; the fixture kills them at once anyway


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


@pytest.fixture
def hogs():
    procs: list[subprocess.Popen] = []

    def start(n: int) -> None:
        for _ in range(n):
            procs.append(start_hog(HOG_SECONDS))

    yield start
    for p in procs:
        p.kill()
    for p in procs:
        p.wait()


@pytest.fixture
def two_or_more(one_core):
    """This machine with max(2, its CPUs) cores, so the plan's ceiling is above one thread."""
    n = max(2, _cpus())
    return dataclasses.replace(one_core, cpu=dataclasses.replace(one_core.cpu, physical_cores=n)), n


def test_set_threads_changes_the_contexts_count(tiny_gguf):
    engine = LlamaCppEngine(tiny_gguf, Placement(n_ctx=128, n_threads=1, n_batch=32, n_ubatch=32))
    try:
        assert engine.adaptive_threads is None  # a placement built by hand keeps its count
        assert (engine.n_threads, engine.n_threads_batch) == (1, 1)
        engine.set_threads(2, 3)
        assert (engine.n_threads, engine.n_threads_batch) == (2, 3)
        first = engine.eval(engine.tokenize("hello world", add_bos=True)).copy()
        engine.set_threads(1)
        assert (engine.n_threads, engine.n_threads_batch) == (1, 1)
        engine.rewind(0)
        again = engine.eval(engine.tokenize("hello world", add_bos=True))
        assert int(first.argmax()) == int(again.argmax())  # the same model, whatever the threads
    finally:
        engine.close()


def test_the_plan_marks_threads_as_adapting_unless_the_caller_fixed_them(tiny_gguf, two_or_more, tiny_onnx):
    hw, n = two_or_more
    adaptive = localllm.plan_for(str(tiny_gguf), hardware=hw, context=256)
    assert adaptive.placement.adapt_threads and adaptive.placement.n_threads == n
    assert "re-chosen before each generation" in adaptive.explain()
    fixed = localllm.plan_for(str(tiny_gguf), hardware=hw, context=256, threads=2)
    assert not fixed.placement.adapt_threads and "re-chosen" not in fixed.explain()
    onnx = localllm.plan_for(str(tiny_onnx), hardware=hw, context=256)
    assert not onnx.placement.adapt_threads  # ONNX Runtime fixes its threads per session


def test_a_model_rechooses_threads_between_generations_when_hogs_start(tiny_gguf, two_or_more, hogs):
    hw, ceiling = two_or_more
    with localllm.load(tiny_gguf, hardware=hw, context=256) as llm:
        engine: LlamaCppEngine = llm._engine  # type: ignore[assignment]
        fit = engine.adaptive_threads
        assert fit is not None and fit.ceiling == ceiling
        llm.generate("hello", max_tokens=4, temperature=0)
        before = fit.last
        assert before is not None
        assert engine.n_threads == before.n_threads == llm.info.placement.n_threads
        # every CPU this process may use kept busy for a whole window, while this one waits
        hogs(_cpus())
        time.sleep(4 * MIN_WINDOW_S)
        llm.generate("hello", max_tokens=4, temperature=0)
        after = fit.last
        assert after is not before and after.load.window_s >= MIN_WINDOW_S
        load = after.load
        assert after.n_threads == choose_threads(
            ceiling, cores=load.cores, others_busy=load.others_busy, quota=load.quota
        )
        # before may already be below the ceiling on a shared machine; with every CPU busy it is
        assert after.n_threads < ceiling and after.n_threads <= before.n_threads
        assert engine.n_threads == engine.n_threads_batch == after.n_threads
        assert llm.info.placement.n_threads == after.n_threads  # what the user sees
        assert llm.plan is not None and llm.plan.placement.n_threads == ceiling  # the plan keeps the ceiling


def test_threads_the_caller_fixed_are_never_changed(tiny_gguf, one_core, hogs):
    with localllm.load(tiny_gguf, hardware=one_core, context=256, threads=2) as llm:
        engine: LlamaCppEngine = llm._engine  # type: ignore[assignment]
        assert not llm.info.placement.adapt_threads and engine.adaptive_threads is None
        hogs(_cpus())
        time.sleep(2 * MIN_WINDOW_S)
        llm.generate("hello", max_tokens=4, temperature=0)
        assert engine.n_threads == 2 and llm.info.placement.n_threads == 2


def test_a_batch_rechooses_threads_too(tiny_gguf, two_or_more):
    hw, ceiling = two_or_more
    with localllm.load(tiny_gguf, hardware=hw, context=128, parallel=2) as llm:
        engine: LlamaCppEngine = llm._engine  # type: ignore[assignment]
        fit = engine.adaptive_threads
        assert fit is not None and fit.last is None
        out = llm.generate_batch(["hello", "world"], max_tokens=3, temperature=0)
        assert [c.finish_reason for c in out] == ["length", "length"]
        assert fit.last is not None and engine.n_threads == fit.last.n_threads <= ceiling


def _spinning_entry(engine) -> str | None:
    try:
        return engine._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:  # ONNX Runtime raises for a key never set: its default, spinning on
        return None


@pytest.mark.parametrize(("loadavg", "spinning"), [("9.00", False), ("0.00", True)])
def test_onnx_threads_wait_without_spinning_when_the_cpu_is_busy_at_load(
    tiny_onnx, tmp_path, monkeypatch, loadavg, spinning
):
    from localllm.hardware import cpu_load
    from localllm.runtimes import onnx as onnx_runtime
    from localllm.runtimes.onnx import OnnxEngine

    # the machine's load is the edge a test cannot set: a /proc tree with only a load average
    # (the window from the engine's start to its session is too short for /proc/stat)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/loadavg").write_text(f"{loadavg} 1.00 0.50 3/100 42\n")
    monkeypatch.setattr(onnx_runtime, "CpuMeter", lambda: cpu_load.CpuMeter(tmp_path, affinity=frozenset({0, 1})))
    placement = Placement(runtime="onnxruntime", n_ctx=64, n_threads=2, provider="CPUExecutionProvider")
    engine = OnnxEngine(tiny_onnx, placement)
    try:
        assert engine.spinning is spinning
        assert _spinning_entry(engine) == (None if spinning else "0")
        assert engine.eval(engine.tokenize("hello", add_bos=True)).shape == (engine.n_vocab,)
    finally:
        engine.close()
