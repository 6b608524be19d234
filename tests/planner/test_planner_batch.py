"""Batch work in the planner: KV and memory for N sequences, the choice of N, its throughput."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import pytest

from localllm.calibration import BenchRecord, Calibration, model_signature
from localllm.catalog import load_catalog
from localllm.errors import InvalidOptionError, InvalidOptionTypeError
from localllm.estimator import estimate, kv_cache_bytes
from localllm.hardware import CPUInfo, Hardware, MemoryInfo
from localllm.hardware.detect import load_profile
from localllm.planner import BATCH_CONTEXT, BATCH_NEAR_BEST, MAX_PARALLEL, batch_throughput, plan
from localllm.planner.batch import parallel_cap
from localllm.planner.machine import prepare
from localllm.resolve import plan_for
from localllm.units import GIB, MIB

SMOLLM2 = "smollm2-135m-instruct:q8_0"
LLAMA_1B = "llama-3.2-1b-instruct:q4_k_m"


def _variant(name: str):
    v = load_catalog().find(name)
    assert not isinstance(v, type(None))
    return v


def _cpu_box(ram_gib: float, *, bandwidth: float = 20.0, cores: int = 4) -> Hardware:
    return Hardware(
        name="hand-built",
        os="linux",
        cpu=CPUInfo(arch="x86_64", physical_cores=cores, logical_cores=cores, flags=("avx2",)),
        memory=MemoryInfo(total=int(ram_gib * GIB), available=int(ram_gib * GIB), bandwidth_gbs=bandwidth),
    )


@pytest.mark.parametrize("n_seq", [2, 4, 16])
def test_kv_is_exactly_n_times_one_sequence_on_every_device(n_seq):
    v = _variant(LLAMA_1B)
    for ngl in (0, 8, v.family.n_layer + 1):  # CPU, partial offload, all on the GPU
        one = estimate(v, n_ctx=1000, n_gpu_layers=ngl)
        many = estimate(v, n_ctx=1000, n_gpu_layers=ngl, n_seq=n_seq)
        assert many.n_seq == n_seq
        for d1, dn in zip(one.devices, many.devices, strict=True):
            assert dn.kv_cache == n_seq * d1.kv_cache
        # the output buffer grows one f32 row of logits per sequence (and the resident logits
        # in the compute buffer, where they are its peak); nothing else on the host
        grown = many.host.total - one.host.total - (n_seq - 1) * one.host.kv_cache
        row = v.family.n_vocab * 4
        assert (n_seq - 1) * row <= grown <= 2 * (n_seq - 1) * row


def test_kv_and_output_buffer_match_what_llama_cpp_allocates(smollm2_gguf):
    """llama.cpp with n_seq_max = N and N x n_ctx cells: its KV and output buffers are the estimate's."""
    script = (
        "import sys, llama_cpp as L\n"
        "m = L.llama_model_load_from_file(sys.argv[1].encode(), L.llama_model_default_params())\n"
        "for n in (1, 4):\n"
        "    p = L.llama_context_default_params(); p.n_ctx = 1000 * n; p.n_seq_max = n; p.n_threads = 1\n"
        "    c = L.llama_init_from_model(m, p); L.llama_free(c)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(smollm2_gguf)], capture_output=True, text=True, timeout=120, check=True
    ).stderr
    kv = [float(x) for x in re.findall(r"llama_kv_cache: size =\s+([\d.]+) MiB", out)]
    outbuf = [float(x) for x in re.findall(r"CPU\s+output buffer size =\s+([\d.]+) MiB", out)]
    assert len(kv) == 2 and len(outbuf) == 2, out[-2000:]
    f = _variant(SMOLLM2).family
    for n, got_kv, got_out in zip((1, 4), kv, outbuf, strict=True):
        assert got_kv == pytest.approx(n * kv_cache_bytes(f, 1000) / MIB, abs=0.01)
        assert got_out == pytest.approx(n * f.n_vocab * 4 / MIB, abs=0.01)
    assert kv[1] == pytest.approx(4 * kv[0], abs=0.01)


def test_a_batch_plan_with_parallel_sizes_everything_for_n_sequences():
    hw = load_profile("laptop-x86-16gb")
    one = plan(LLAMA_1B, hardware=hw, workload="batch", parallel=1, context=2048)
    eight = plan(LLAMA_1B, hardware=hw, workload="batch", parallel=8, context=2048)
    assert (one.placement.n_seq, eight.placement.n_seq) == (1, 8)
    assert eight.placement.n_ctx == 2048  # per sequence
    assert eight.memory.host.kv_cache == 8 * one.memory.host.kv_cache
    assert eight.needed >= one.needed + 7 * one.memory.host.kv_cache
    assert eight.aggregate_tokens_per_s > one.aggregate_tokens_per_s


def test_little_ram_gets_fewer_sequences_than_more_ram():
    # a slow bus and many cores: memory-bound, so only memory limits the sequences
    small = plan(LLAMA_1B, hardware=_cpu_box(2.2, bandwidth=5, cores=16), workload="batch", context=4096)
    large = plan(LLAMA_1B, hardware=_cpu_box(32, bandwidth=5, cores=16), workload="batch", context=4096)
    assert small.fits and large.fits
    assert large.n_seq == MAX_PARALLEL
    assert 1 <= small.n_seq < large.n_seq
    assert small.needed <= small.available
    assert small.placement.n_ctx == large.placement.n_ctx == 4096


def test_parallel_that_does_not_fit_shrinks_the_context_then_says_what_would_fit():
    hw = _cpu_box(2.2, bandwidth=5, cores=16)
    # no context asked: the per-sequence context shrinks toward the floor, the sequences stay
    shrunk = plan(LLAMA_1B, hardware=hw, workload="batch", parallel=16)
    assert shrunk.n_seq == 16
    assert shrunk.placement.n_ctx < BATCH_CONTEXT
    # a context asked is kept: the plan does not fit, and says how many sequences would
    refused = plan(LLAMA_1B, hardware=hw, workload="batch", parallel=16, context=8192)
    assert not refused.fits and refused.n_seq == 16 and refused.placement.n_ctx == 8192
    assert any(re.search(r"parallel=16; parallel=\d+ would fit", r) for r in refused.reasons), refused.reasons


def test_parallel_none_on_a_cpu_takes_the_fewest_near_the_best_predicted():
    # a fast bus and two cores: compute-bound from two sequences on, where the batch gain
    # (BATCH_COMPUTE_GAIN, measured by bench_batch on a 2-core EPYC) keeps rising to 16
    hw = _cpu_box(32, bandwidth=50, cores=2)
    p = plan(LLAMA_1B, hardware=hw, workload="batch")
    req, m, _ = prepare(hw, context=None, workload="batch", runtime=None, kv_type=None, headroom=None)
    n, why = parallel_cap(p.variant, p.memory, m)
    assert n == p.n_seq
    sizes = [1, 2, 4, 8, 16]
    tps = {k: batch_throughput(p.variant, p.memory, m, k)[0] for k in sizes}
    best = max(tps.values())
    assert tps[n] >= BATCH_NEAR_BEST * best
    assert all(tps[k] < BATCH_NEAR_BEST * best for k in sizes if k < n)
    assert "compute-bound" in batch_throughput(p.variant, p.memory, m, 2 * n if n < 16 else n)[1]
    assert any("sequences decoded together" in r for r in p.reasons)


def test_the_cpu_prediction_follows_the_measured_1b_table():
    """On a 2-core box the predicted aggregate rises to 16 as bench_batch measured it (not flat past 2)."""
    hw = _cpu_box(32, bandwidth=20, cores=2)
    p = plan(LLAMA_1B, hardware=hw, workload="batch", context=256)
    _, m, _ = prepare(hw, context=256, workload="batch", runtime=None, kv_type=None, headroom=None)
    tps = [batch_throughput(p.variant, p.memory, m, k)[0] for k in (1, 2, 4, 8, 16)]
    assert tps == sorted(tps) and tps[-1] > 2 * tps[0]
    assert p.n_seq == MAX_PARALLEL


def test_a_gpu_batch_takes_many_sequences_and_predicts_near_linear_throughput():
    p = plan(LLAMA_1B, hardware=load_profile("desktop-rtx4090-64gb"), workload="batch")
    assert p.where == "gpu" and p.n_seq == MAX_PARALLEL
    assert p.aggregate_tokens_per_s > 8 * p.tokens_per_s  # memory-bound: weights read once for all
    assert not any("CPU only" in w for w in p.warnings)


def test_measured_prompt_speed_caps_the_batch():
    hw = _cpu_box(32, bandwidth=5, cores=16)
    v = _variant(LLAMA_1B)
    free = plan(LLAMA_1B, hardware=hw, workload="batch")
    rec = BenchRecord(
        signature=model_signature(v.family),
        weight_bytes=v.size,
        n_threads=16,
        n_gpu_layers=0,
        n_ctx=2048,
        decode_tps=free.tokens_per_s,
        prompt_tps=2 * free.tokens_per_s,  # compute allows only two tokens a step
        peak_rss=0,
        date="2026-01-01T00:00:00",
    )
    capped = plan(LLAMA_1B, hardware=hw, workload="batch", calibration=Calibration(bench=(rec,)))
    assert free.n_seq == MAX_PARALLEL
    assert capped.n_seq == 2
    assert "measured" in capped.aggregate_basis


def test_explain_and_to_dict_show_the_batch_numbers():
    p = plan(LLAMA_1B, hardware=load_profile("laptop-x86-8gb"), workload="batch", parallel=4)
    text = p.explain()
    agg = p.aggregate_tokens_per_s
    assert f"batch: 4 sequences decoded together, {p.placement.n_ctx} tokens of context each" in text
    assert f"~{agg:.1f} tokens/s in all, ~{agg / 4:.1f} per sequence" in text
    # the seed's rule: batch work belongs on a GPU; on a CPU, say what to expect, with numbers
    warning = next(w for w in p.warnings if "batch work on the CPU only" in w)
    assert f"~{agg:.1f} tokens/s in all over 4 sequences" in warning
    d = p.to_dict()
    assert d["n_seq"] == d["placement"]["n_seq"] == 4
    assert d["context_per_sequence"] == p.placement.n_ctx
    assert d["aggregate_tokens_per_s"] == agg
    assert d["per_sequence_tokens_per_s"] == pytest.approx(agg / 4)


def test_interactive_plans_decode_one_sequence_and_refuse_parallel():
    hw = load_profile("laptop-x86-16gb")
    p = plan(LLAMA_1B, hardware=hw)
    assert p.n_seq == 1 and p.aggregate_tokens_per_s is None and "batch:" not in p.explain()
    assert plan(LLAMA_1B, hardware=hw, parallel=1).placement == p.placement
    with pytest.raises(InvalidOptionError, match="workload='batch'") as e:
        plan(LLAMA_1B, hardware=hw, parallel=4)
    assert e.value.option == "parallel"
    with pytest.raises(InvalidOptionError):
        plan(LLAMA_1B, hardware=hw, workload="batch", parallel=0)
    with pytest.raises(InvalidOptionTypeError):
        plan(LLAMA_1B, hardware=hw, workload="batch", parallel="4")


def test_resolve_passes_parallel_for_a_local_file(tiny_gguf):
    hw = load_profile("laptop-x86-16gb")
    p = plan_for(tiny_gguf, hardware=hw, workload="batch", parallel=4)
    assert p.placement.n_seq == 4 and p.fits
    chosen = plan_for(tiny_gguf, hardware=hw, workload="batch")
    assert chosen.placement.n_seq >= 1 and chosen.aggregate_tokens_per_s is not None


def test_onnx_batch_plans_size_the_batch_dimension():
    hw = load_profile("laptop-x86-16gb")
    onnx = [v for v in load_catalog().variants if v.format == "onnx"][0]
    one = plan(onnx, hardware=hw, workload="batch", parallel=1, context=1024)
    four = plan(onnx, hardware=hw, workload="batch", parallel=4, context=1024)
    assert four.runtime == "onnxruntime" and four.n_seq == 4
    assert four.memory.host.kv_cache == 4 * one.memory.host.kv_cache


def test_no_profile_is_asked_for_more_sequences_than_fit():
    for name in ("laptop-x86-8gb", "laptop-x86-16gb", "desktop-rtx4090-64gb", "container-4gib"):
        p = plan("auto", hardware=load_profile(name), workload="batch")
        assert p.fits and 1 <= p.n_seq <= MAX_PARALLEL
        assert dataclasses.asdict(p.placement)["n_seq"] == p.n_seq
