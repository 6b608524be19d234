"""The runtime a plan takes: by measurement where `localllm bench --runtimes` compared both here,
by rule (place, then llama.cpp, with a hint to measure on a VNNI CPU) where it did not. Pure:
a Hardware by hand and a Calibration with records."""

from __future__ import annotations

import dataclasses

import pytest

from localllm import planner
from localllm.calibration import Calibration, RuntimeRecord, model_signature
from localllm.catalog import load_catalog
from localllm.hardware import CPUInfo, Hardware, MemoryInfo
from localllm.planner.runtime import RUNTIME_SWITCH_MARGIN, faster_runtime, onnx_cpu_hint
from localllm.units import GIB, MIB

QWEN = "qwen2.5-0.5b-instruct"
VNNI = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma")


def _hw(flags=VNNI, *, ram: int = 16 * GIB) -> Hardware:
    return Hardware(
        os="linux",
        cpu=CPUInfo(arch="x86_64", brand="Test EPYC", physical_cores=2, logical_cores=2, flags=flags),
        memory=MemoryInfo(total=ram, available=ram, bandwidth_gbs=20.0),
    )


def _variants():
    """The variants the planner picks for QWEN with each runtime on _hw()."""
    cal = Calibration()
    llama = planner.plan(QWEN, hardware=_hw(), calibration=cal, runtime="llama.cpp").variant
    onnx = planner.plan(QWEN, hardware=_hw(), calibration=cal, runtime="onnxruntime").variant
    return llama, onnx


def _rec(variant, runtime, tps, *, session="2026-12-01T10:00:00", threads=2, where="cpu", rss=600 * MIB, **kw):
    return RuntimeRecord(
        runtime=runtime,
        signature=model_signature(variant.family),
        weight_bytes=variant.size,
        variant=variant.name,
        n_threads=threads,
        where=where,
        n_ctx=2048,
        decode_tps=tps,
        prompt_tps=100.0,
        peak_rss=rss,
        date=session,
        session=session,
        runs=3,
        **kw,
    )


def _pair(llama_tps, onnx_tps, **kw) -> Calibration:
    llama, onnx = _variants()
    return Calibration(runtimes=(_rec(llama, "llama.cpp", llama_tps, **kw), _rec(onnx, "onnxruntime", onnx_tps, **kw)))


def test_a_measured_faster_onnxruntime_is_chosen_and_explained_with_the_numbers():
    llama, onnx = _variants()
    assert (llama.format, onnx.format) == ("gguf", "onnx")
    p = planner.plan(QWEN, hardware=_hw(), calibration=_pair(25.2, 31.0))
    assert p.runtime == "onnxruntime" and p.variant == onnx
    reason = "runtime onnxruntime: 31.0 tok/s measured here vs llama.cpp 25.2 (localllm bench --runtimes, 2026-12-01)"
    assert reason in p.reasons and reason in p.explain()
    # the measured speed is the plan's (same threads), and the loser is listed with its number
    assert p.tokens_per_s == 31.0 and "localllm bench --runtimes" in p.tokens_per_s_basis
    lost = p.rejected[0]
    assert lost.name == f"{llama.name} (llama.cpp)" and "measured 25.2 tok/s here with llama.cpp" in lost.why


def test_a_measured_faster_llama_cpp_stays_and_a_gain_within_the_margin_does_not_switch():
    p = planner.plan(QWEN, hardware=_hw(), calibration=_pair(30.0, 20.0))
    assert p.runtime == "llama.cpp"
    assert (
        "runtime llama.cpp: 30.0 tok/s measured here vs onnxruntime 20.0 (localllm bench --runtimes, 2026-12-01)"
        in (p.reasons)
    )
    assert p.tokens_per_s == 30.0
    close = planner.plan(QWEN, hardware=_hw(), calibration=_pair(30.0, 30.0 * (RUNTIME_SWITCH_MARGIN - 0.01)))
    assert close.runtime == "llama.cpp"
    assert any("within 5%, so llama.cpp is kept" in r for r in close.reasons)
    clear = planner.plan(QWEN, hardware=_hw(), calibration=_pair(30.0, 30.0 * (RUNTIME_SWITCH_MARGIN + 0.01)))
    assert clear.runtime == "onnxruntime"


def test_faster_runtime_needs_the_margin():
    assert faster_runtime(25.2, 31.0) == "onnxruntime"
    assert faster_runtime(25.2, 26.0) == "llama.cpp"
    assert faster_runtime(0.0, 5.0) == "llama.cpp"  # nothing measured for llama.cpp: no comparison


def test_other_threads_keep_the_choice_but_not_the_speed():
    """Measured at 1 thread, planned at 2: the comparison still picks the runtime; the plan's speed
    stays the formula's, since the record is not this placement's."""
    p = planner.plan(QWEN, hardware=_hw(), calibration=_pair(10.0, 14.0, threads=1))
    assert p.runtime == "onnxruntime" and p.tokens_per_s != 14.0
    assert not p.tokens_per_s_basis.startswith("measured")


def test_records_that_do_not_pair_are_not_a_comparison():
    llama, onnx = _variants()
    # two sessions: no comparison of the two under the same conditions
    apart = Calibration(
        runtimes=(
            _rec(llama, "llama.cpp", 25.0, session="2026-12-01T10:00:00"),
            _rec(onnx, "onnxruntime", 40.0, session="2026-12-02T10:00:00"),
        )
    )
    assert planner.plan(QWEN, hardware=_hw(), calibration=apart).runtime == "llama.cpp"
    # another variant measured (a different quant) says nothing about the planned one
    other = dataclasses.replace(
        next(v for v in load_catalog().variants_of(QWEN) if v.quant == "Q2_K"), size=llama.size // 2
    )
    stale = Calibration(runtimes=(_rec(other, "llama.cpp", 25.0), _rec(onnx, "onnxruntime", 40.0)))
    p = planner.plan(QWEN, hardware=_hw(), calibration=stale)
    assert p.runtime == "llama.cpp" and any(r.startswith("runtime llama.cpp: preferred") for r in p.reasons)
    # measured where the plan would not run (a GPU then, the CPU now): not this plan's comparison
    gpu = _pair(25.0, 40.0, where="gpu")
    assert planner.plan(QWEN, hardware=_hw(), calibration=gpu).runtime == "llama.cpp"
    # the newest session wins
    both = Calibration(runtimes=_pair(25.0, 40.0).runtimes + _pair(30.0, 20.0, session="2026-12-03T00:00:00").runtimes)
    assert planner.plan(QWEN, hardware=_hw(), calibration=both).runtime == "llama.cpp"


def test_a_faster_runtime_whose_measured_memory_is_over_the_budget_is_not_taken():
    cal = _pair(25.0, 40.0, rss=3 * GIB)
    p = planner.plan(QWEN, hardware=_hw(ram=3 * GIB), calibration=cal)
    assert p.fits and p.runtime == "llama.cpp"
    why = next(r for r in p.reasons if r.startswith("runtime llama.cpp"))
    assert "ONNX Runtime decoded faster here (40.0 tok/s vs 25.0" in why and "peak memory" in why


def test_without_measurements_llama_cpp_is_kept_with_a_hint_only_where_vnni_could_favour_onnx():
    assert onnx_cpu_hint(_hw()) is not None and "AVX-512 VNNI" in onnx_cpu_hint(_hw())
    assert onnx_cpu_hint(_hw(("avx2", "fma"))) is None
    # the pair the hint is about: a K-quant GGUF against an int4 export, both on the CPU
    cat = load_catalog()
    k_quant = next(v for v in cat.variants_of(QWEN) if v.quant == "Q4_K_M")
    int4 = next(v for v in cat.variants_of(QWEN) if v.name.endswith("onnx-q4"))
    q8 = next(v for v in cat.variants_of(QWEN) if v.quant == "Q8_0")
    for flags, hinted in ((VNNI, True), (("avx2", "fma"), False)):
        p = planner.plan_among([k_quant, int4], hardware=_hw(flags), calibration=Calibration(), auto=False)
        assert p.runtime == "llama.cpp"
        reason = next(r for r in p.reasons if r.startswith("runtime llama.cpp: preferred"))
        assert ("not measured here" in reason) is hinted
        if hinted:
            assert f"localllm bench --runtimes {QWEN}" in reason and "K-quant GGUF" in reason
    # ggml's Q8_0 kernels use VNNI too: no hint for it
    p = planner.plan_among([q8, int4], hardware=_hw(), calibration=Calibration(), auto=False)
    assert p.runtime == "llama.cpp" and not any("not measured here" in r for r in p.reasons)
    # two different models ("auto" weighs the whole catalog): no one comparison to suggest
    other = next(v for v in cat.variants_of("llama-3.2-1b-instruct") if v.name.endswith("onnx-q4"))
    p = planner.plan_among([k_quant, other], hardware=_hw(), calibration=Calibration(), auto=False)
    assert p.runtime == "llama.cpp" and not any("not measured here" in r for r in p.reasons)


@pytest.mark.parametrize("runtime", ["llama.cpp", "onnxruntime"])
def test_an_asked_runtime_is_never_overridden_by_measurements(runtime):
    p = planner.plan(
        QWEN,
        hardware=_hw(),
        calibration=_pair(25.0, 40.0) if runtime == "llama.cpp" else _pair(40.0, 25.0),
        runtime=runtime,
    )
    assert p.runtime == runtime
