"""Weight repacking: which weights ggml's CPU backend copies, held against llama.cpp's own buffers."""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import pytest

import localllm
from localllm import calibration, quantmix, repack
from localllm.calibration import load_calibration
from localllm.catalog import family_from_gguf_metadata, load_catalog, local_variant
from localllm.estimator import HOST_RUNTIME_OVERHEAD, estimate
from localllm.hardware import RuntimeInfo
from localllm.hardware.detect import load_profile, probe
from localllm.placement import Placement
from localllm.planner import plan
from localllm.runtimes import llamacpp
from localllm.runtimes.llamacpp import LlamaCppEngine, trial_extra_buffers, trial_outcome, use_extra_buffers
from localllm.testing import Shape, quantize_gguf, write_llama_gguf
from localllm.validate import validate_gguf

AVX2 = frozenset({"AVX2", "REPACK"})
AVX512 = frozenset({"AVX2", "AVX512", "REPACK"})
ARM = frozenset({"NEON", "DOTPROD", "REPACK"})


def test_rules_follow_the_cpu_backend():
    types, rows, amx = repack.repack_rule(AVX2)
    assert types == {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"} and rows == 8 and not amx
    assert "Q2_K" in repack.repack_rule(AVX512)[0]
    arm_types, arm_rows, _ = repack.repack_rule(ARM)
    assert {"Q8_0", "Q6_K", "Q5_K"} <= arm_types and arm_rows == 4
    assert repack.repack_rule({"AVX2"})[0] == frozenset()  # a build without GGML_CPU_REPACK
    assert repack.repack_rule({"NEON", "REPACK"})[0] == frozenset()  # no dot product: nothing
    assert repack.repack_rule(AVX512 | {"AMX_INT8"})[2] == repack.AMX_TYPES
    assert repack.repack_rule(AVX512 | {"AMX_INT8"}, amx_usable=False)[2] == frozenset()


def test_features_from_system_info_and_from_cpu_flags():
    info = (
        "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | AVX512 = 1 | AVX512_VNNI = 1 | "
        "AMX_INT8 = 0 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
    )
    feats = repack.features_from_system_info(info)
    assert {"AVX2", "AVX512", "REPACK", "AVX512_VNNI"} <= feats and "AMX_INT8" not in feats
    assert repack.features_from_cpu_flags(["avx", "avx2", "fma"]) == {"AVX2", "REPACK"}
    assert repack.features_from_cpu_flags(["asimd", "asimddp"], "arm64") == {"NEON", "DOTPROD", "REPACK"}
    assert "AMX_INT8" in repack.features_from_cpu_flags(["avx2", "avx512f", "avx512_vnni", "amx_int8"])


def _variant(name):
    return load_catalog().find(name)


def test_estimate_counts_the_repacked_share_of_cpu_weights_only():
    v = _variant("llama-3.2-1b-instruct:q4_k_m")
    off = estimate(v, n_ctx=4096, flash_attn=True)
    on = estimate(v, n_ctx=4096, flash_attn=True, repack_features=AVX2)
    weights = quantmix.quantized_tensors(quantmix.facts(v.family), "Q4_K_M")
    q4k = sum(b for _, t, _, _, b, blk in weights if t == "Q4_K" and blk >= 0)
    assert off.host.repacked == 0
    assert on.host.repacked == q4k and on.host.total == off.host.total + q4k
    # Q6_K (attn_v/ffn_down in the "more bits" layers, the tied output) is not repacked on x86
    assert q4k < sum(b for *_, b, blk in weights if blk >= 0)
    # layers on a GPU are not repacked: half the layers offloaded leaves about half
    half = estimate(v, n_ctx=4096, flash_attn=True, n_gpu_layers=8, repack_features=AVX2)
    assert 0.3 * q4k < half.host.repacked < 0.7 * q4k
    assert estimate(v, n_ctx=4096, n_gpu_layers=17, repack_features=AVX2).host.repacked == 0
    # Q8_0 is repacked on ARM only
    q8 = _variant("llama-3.2-1b-instruct:q8_0")
    assert estimate(q8, n_ctx=4096, repack_features=AVX2).host.repacked == 0
    assert estimate(q8, n_ctx=4096, repack_features=ARM).host.repacked > 0.9 * q8.size - 300e6


def test_plans_say_when_weights_are_repacked(monkeypatch):
    on = plan("llama-3.2-1b-instruct:q4_k_m", hardware=load_profile("laptop-x86-16gb"), context=4096)
    assert on.memory.host.repacked > 0
    assert any("repacks" in r and "Q4_K" in r for r in on.reasons)
    assert "repacked" in on.explain() and on.to_dict()["memory"]["cpu"]["repacked"] == on.memory.host.repacked
    monkeypatch.setenv(repack.EXTRA_BUFFERS_ENV, "0")
    off = plan("llama-3.2-1b-instruct:q4_k_m", hardware=load_profile("laptop-x86-16gb"), context=4096)
    assert off.memory.host.repacked == 0 and off.needed == on.needed - on.memory.host.repacked
    monkeypatch.delenv(repack.EXTRA_BUFFERS_ENV)
    # a Raspberry Pi 5 (dot product) repacks the Q6_K layers too
    pi = plan("llama-3.2-1b-instruct:q4_k_m", hardware=load_profile("raspberry-pi-5-8gb"), context=4096)
    assert pi.memory.host.repacked > on.memory.host.repacked


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, request):
    d = tmp_path_factory.mktemp("repack")
    # rows of whole K-quant blocks (256), so Q4_K stays Q4_K; untied, so output.weight is its own tensor
    f16 = write_llama_gguf(d / "t.gguf", Shape(n_layer=2, n_embd=256, n_head=4, n_head_kv=2, n_ff=512), seed=3)
    return {q: quantize_gguf(f16, d / f"t-{q}.gguf", q, threads=1) for q in ("Q4_0", "Q4_K_M", "Q8_0")}


def _buffer_mib(records, name):
    sizes = [
        float(m.group(1))
        for r in records
        if (m := re.search(rf"\b{name} model buffer size = +([0-9.]+) MiB", r.getMessage()))
    ]
    return sum(sizes)


@pytest.mark.parametrize("quant", ["Q4_0", "Q4_K_M", "Q8_0"])
def test_predicted_repack_equals_llama_cpps_repack_buffer(quantized, quant, caplog, monkeypatch):
    """The estimate's repacked bytes for a real file are what llama.cpp puts in its CPU_REPACK buffer."""
    import llama_cpp.llama_cpp as lib

    monkeypatch.delenv(repack.EXTRA_BUFFERS_ENV, raising=False)
    path = quantized[quant]
    info = validate_gguf(path)
    feats = repack.features_from_system_info(lib.llama_print_system_info().decode())
    weights = quantmix.gguf_weights(info.tensors)

    fam = family_from_gguf_metadata(info.metadata, name="t", tied_embeddings=False)
    v = local_variant(fam, weight_bytes=info.tensor_bytes, path=str(path), weights=weights)
    # the engine's own choice: an AMX build whose trial faulted on this machine loads without
    # extra buffers (runtimes.llamacpp.use_extra_buffers), and the planner predicts it so
    extra = use_extra_buffers()
    predicted = estimate(v, n_ctx=256, repack_features=feats if extra else frozenset()).host.repacked
    caplog.set_level(logging.DEBUG, logger="localllm.runtimes.llamacpp.native")
    e = LlamaCppEngine(path, Placement(n_ctx=256, n_threads=1, n_batch=32, n_ubatch=32))
    try:
        e.eval(e.tokenize("hello world", add_bos=True))
    finally:
        e.close()
    measured = _buffer_mib(caplog.records, "CPU_REPACK") * 2**20
    assert measured == pytest.approx(predicted, rel=0.02, abs=64 * 1024), (quant, sorted(feats))
    if extra and "AVX2" in feats and quant != "Q8_0":
        assert predicted > 0  # this build repacks these types: the comparison is not 0 == 0


def test_extra_buffers_trial_runs_for_real_and_reads_signals():
    import llama_cpp.llama_cpp as lib

    ok, detail = trial_extra_buffers()
    if not ok:  # seen on a Xeon VM that reports and grants AMX: its kernels fault (SIGSEGV)
        assert "AMX_INT8 = 1" in lib.llama_print_system_info().decode()  # only an AMX build runs it for real
        assert re.fullmatch(r"the trial was killed by SIG[A-Z]+", detail), detail
    else:
        assert detail
    assert trial_outcome(-4, "", "") == (False, "the trial was killed by SIGILL")
    assert trial_outcome(1, "", "Traceback\nRuntimeError: boom") == (
        False,
        "the trial exited with status 1: RuntimeError: boom",
    )


def test_an_amx_build_follows_its_kept_verdict(monkeypatch):
    """An AMX build runs the trial once; a failed verdict turns extra buffers off in the engine and the plan."""
    amx_info = "CPU : AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 | "
    calls = []

    def fake_trial(**_):
        calls.append(1)
        return False, "the trial was killed by SIGILL"

    monkeypatch.delenv(repack.EXTRA_BUFFERS_ENV, raising=False)
    monkeypatch.setattr(llamacpp, "trial_extra_buffers", fake_trial)
    first = llamacpp.extra_buffers_verdict(amx_info)
    again = llamacpp.extra_buffers_verdict(amx_info)
    assert not first.ok and again == first and calls == [1]  # kept: the trial ran once
    kept = calibration.load_calibration(probe()).extra_buffers
    assert kept == first and "SIGILL" in kept.detail
    # a different build is tried again
    assert llamacpp.extra_buffers_verdict(amx_info + "OPENMP = 1 |").ok is False and calls == [1, 1]
    # the planner reads the same verdict: an AMX CPU with a failed trial plans no repacked copy

    hw = probe()
    amx_hw = replace(
        hw,
        runtimes=(
            RuntimeInfo("llama.cpp", installed=True, cpu_features=tuple(repack.features_from_system_info(amx_info))),
        ),
    )
    cal = replace(calibration.load_calibration(hw), extra_buffers=replace(first, ok=False))
    p = plan("llama-3.2-1b-instruct:q4_k_m", hardware=amx_hw, calibration=cal, context=2048)
    assert p.memory.host.repacked == 0
    good = plan(
        "llama-3.2-1b-instruct:q4_k_m", hardware=amx_hw, calibration=replace(cal, extra_buffers=None), context=2048
    )
    assert good.memory.host.repacked > 0  # unknown: the larger figure (AMX takes Q6_K too)


def test_a_load_keeps_its_measured_memory_and_the_next_plan_of_that_file_uses_it(quantized, monkeypatch, one_core):
    """Close the loop: after a load the resident growth is kept per (file, placement); a later
    plan of the same file corrects its estimate with it and says so."""
    monkeypatch.delenv(repack.EXTRA_BUFFERS_ENV, raising=False)
    extra = use_extra_buffers()
    if not extra:  # an AMX build whose trial faulted here: the one-core profile's plans must know it too
        monkeypatch.setenv(repack.EXTRA_BUFFERS_ENV, "0")
    hw = one_core
    path = quantized["Q4_K_M"]
    before = localllm.plan_for(path, hardware=hw, context=256)
    assert not before.memory.host.measured
    with localllm.load(path, hardware=hw, context=256) as m:
        m.generate("hello world", max_tokens=4, temperature=0)
        growth = m._engine.resident_growth
    assert growth and growth > 0
    (rec,) = load_calibration(hw).loads
    assert rec.resident_bytes == growth and rec.n_ctx == 256 and rec.extra_buffers is extra
    assert rec.file_size == path.stat().st_size
    after = localllm.plan_for(path, hardware=hw, context=256)
    # the host figure is now the measured growth plus the interpreter's share

    assert after.memory.host.total == growth + HOST_RUNTIME_OVERHEAD
    assert after.memory.host.measured == after.memory.host.total - before.memory.host.total
    assert any("measured at the last load of this file" in r for r in after.reasons)
    # another context of the same file keeps the correction; another placement (repacking the other
    # way) does not
    longer = localllm.plan_for(path, hardware=hw, context=512)
    assert longer.memory.host.measured == after.memory.host.measured
    monkeypatch.setenv(repack.EXTRA_BUFFERS_ENV, "0" if extra else "1")
    assert not localllm.plan_for(path, hardware=hw, context=256).memory.host.measured
