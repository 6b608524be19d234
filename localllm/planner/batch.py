"""Batch work: how many sequences to decode together and how fast they go in all.

`assess_for` is `search.assess` for any workload: for batch work it sizes the plan for
`Request.n_seq` sequences, or, when none is asked, takes the most that fit at the best
place the model reaches (powers of two up to MAX_PARALLEL), capped where throughput stops
rising: measured throughput when benchmarks/bench_batch.py measured this file here
(calibration.BatchRecord), else predicted. `batch_throughput` gives the aggregate decode
speed of N sequences, measured or predicted.

The throughput model: one decode step for N sequences reads every weight once and each
sequence's KV cache, and computes N tokens. Its time is the larger of the memory time
(the single-sequence decode prediction, `search.speed`, with N caches read) and the
compute time (N x FLOPs per token / the device's FLOPs). So aggregate tokens/s grows about
N-fold while the weights' reading dominates and flattens once compute does. Measured or
predicted, the planner takes the fewest sequences whose aggregate is within BATCH_NEAR_BEST
of the best one.
"""

from __future__ import annotations

import math
from dataclasses import replace

from localllm.calibration import BatchRecord
from localllm.catalog import Family, Variant
from localllm.estimator import MemoryEstimate, decode_tokens_per_second
from localllm.planner.machine import Machine, Request, batches_of
from localllm.planner.search import Candidate, assess, ngl_key, speed
from localllm.planner.values import MAX_PARALLEL

__all__ = [
    "BATCH_COMPUTE_GAIN",
    "BATCH_NEAR_BEST",
    "GPU_FLOPS_PER_BYTE",
    "assess_for",
    "batch_throughput",
    "compute_gain",
    "flops_per_token",
    "measured_batch",
    "parallel_cap",
]

# The planner takes the fewest sequences whose aggregate throughput (measured or predicted)
# is within this share of the best: more buy almost nothing and cost KV memory and each
# sequence's own speed.
BATCH_NEAR_BEST = 0.95

# How much faster a CPU computes each token of an N-token decode step than one sequence's
# decode does (N x one token's step time / the N-token step time): llama.cpp multiplies the
# weights by N activations at once, unpacking each weight block once for N tokens. Measured
# by benchmarks/bench_batch.py on this project's 2-core AMD EPYC (2 threads, 32 tokens an
# item), step times of the Llama-3.2-1B-shaped Q4_K_M / SmolLM2-135M Q4_1: one 30.5/9.8 ms,
# 2: 55.9/17.0 (gain 1.09/1.15), 4: 87.5/28.2 (1.39/1.39), 8: 157/50.0 (1.55/1.57),
# 16: 180.8/83.3 (2.70/1.88; the step stops growing past 8 tokens on this build). 16 takes
# 2.3, between the two; more than 16 keeps 16's gain (not measured). This replaces one flat
# 1.5 (a Xeon's prompt processing), which predicted no gain past 2 sequences while the
# measured aggregate kept rising to 16.
BATCH_COMPUTE_GAIN = {1: 1.0, 2: 1.1, 4: 1.4, 8: 1.55, 16: 2.3}


def compute_gain(n: int) -> float:
    """BATCH_COMPUTE_GAIN at `n` tokens a step, interpolated in log2(n) between its sizes."""
    sizes = sorted(BATCH_COMPUTE_GAIN)
    if n <= sizes[0]:
        return BATCH_COMPUTE_GAIN[sizes[0]]
    for lo, hi in zip(sizes, sizes[1:], strict=False):
        if n <= hi:
            t = (math.log2(n) - math.log2(lo)) / (math.log2(hi) - math.log2(lo))
            return BATCH_COMPUTE_GAIN[lo] + t * (BATCH_COMPUTE_GAIN[hi] - BATCH_COMPUTE_GAIN[lo])
    return BATCH_COMPUTE_GAIN[sizes[-1]]


# GPU FLOPs per byte of memory bandwidth at which decode turns compute-bound (the roofline's
# ridge): 4090 165 TFLOP/s fp16 tensor over 1.0 TB/s, A100 312 over 2.0, M-series GPUs lower;
# 100 errs low, so a GPU batch is capped no later than it should be.
GPU_FLOPS_PER_BYTE = 100.0


def flops_per_token(f: Family, n_ctx: int) -> float:
    """FLOPs to decode one token: 2 per weight of the repeating layers and the output
    projection, plus attention over half a full cache (QK and AV, 2 FLOPs per multiply-add)."""
    weights = f.n_layer * f.layer_params + f.embedding_params
    attention = 2 * 2 * f.n_layer * f.n_head * f.head_dim * (n_ctx / 2)
    return 2.0 * weights + attention


def _with_seqs(est: MemoryEstimate, n_seq: int) -> MemoryEstimate:
    """`est` with its KV caches for `n_seq` sequences (the KV cache is n_seq times one sequence's)."""
    devices = tuple(replace(d, kv_cache=d.kv_cache * n_seq // max(1, est.n_seq)) for d in est.devices)
    return replace(est, devices=devices, n_seq=n_seq)


def batch_throughput(v: Variant, est: MemoryEstimate, m: Machine, n_seq: int | None = None) -> tuple[float | None, str]:
    """Predicted decode tokens/s of `n_seq` sequences together (default: est.n_seq), all of them,
    at `est`'s placement, and the basis in words. None when the memory bandwidth is unknown."""
    n = n_seq or est.n_seq
    rec = measured_batch(v, est, m, n)
    if rec is not None:
        return rec.aggregate_tps, _measured_basis(rec)
    if n == 1:  # one sequence: the decode prediction itself
        tps, basis = speed(v, _with_seqs(est, 1), m)
        return tps, basis
    t_mem, mem_basis = _memory_time(v, _with_seqs(est, n), m)
    if t_mem is None:  # no bus figure: a step takes at least one sequence's decode step (the threads' rate)
        tps1, _ = speed(v, _with_seqs(est, 1), m)
        if not tps1:
            return None, mem_basis
        t_mem, mem_basis = 1.0 / tps1, f"at least one sequence's {tps1:.1f} steps/s (memory bandwidth unknown)"
    t_comp, comp_basis = _compute_time(v, est, m, n)
    if t_comp is None or t_comp <= t_mem:
        bound = f"memory-bound: each step reads the weights once for all {n}" if n > 1 else "memory-bound"
        why = f"{bound} ({mem_basis})"
        if t_comp is not None:
            why += f"; compute {comp_basis}"
        return n / t_mem, why
    return n / t_comp, f"compute-bound: {comp_basis}; memory {mem_basis}"


def _memory_time(v: Variant, est: MemoryEstimate, m: Machine) -> tuple[float | None, str]:
    """Seconds per step to read the weights once and every sequence's KV cache over the memory
    bus (the threads' own limit is compute: `_compute_time`)."""
    tps, basis = decode_tokens_per_second(
        v,
        est,
        cpu_bandwidth_gbs=m.hw.memory.bandwidth_gbs,
        gpu_bandwidth_gbs=tuple(g.bandwidth_gbs for g in m.gpus),
    )
    if not tps:
        return None, basis or "memory bandwidth unknown"
    return 1.0 / tps, f"{tps:.1f} steps/s from the memory bandwidth"


def _compute_time(v: Variant, est: MemoryEstimate, m: Machine, n: int) -> tuple[float | None, str]:
    """Seconds per step to compute `n` tokens: measured prompt processing when localllm bench
    ran this model here (compute-bound by nature), else FLOPs over the devices' FLOP/s."""
    f = v.family
    rec = (
        m.calibration.lookup(f, v.size, n_threads=m.threads, n_gpu_layers=ngl_key(est, v))
        if m.calibration is not None
        else None
    )
    if rec is not None and rec.prompt_tps > 0:
        return n / rec.prompt_tps, (
            f"{n} tokens a step at {rec.prompt_tps:.0f} tokens/s, prompt processing measured here on "
            f"{rec.date[:10]} by localllm bench"
        )
    flops = flops_per_token(f, est.n_ctx)
    cpu_share = est.host.n_layers / f.n_layer if f.n_layer else 1.0
    seconds, parts = 0.0, []
    if cpu_share > 0:  # the host's part of one sequence's decode at the threads' own rate, sped up
        one = _with_seqs(est, 1)  # one sequence's rate: its own KV cache, not all N of them
        host_only = replace(one, devices=(one.host,))
        measured_bw = m.calibration.bandwidth if m.calibration is not None else None
        tps, _ = decode_tokens_per_second(
            v,
            host_only,
            cpu_bandwidth_gbs=None,
            cpu_threads=m.threads,
            cpu_thread_bandwidth_gbs=measured_bw.per_thread_gbs if measured_bw is not None else None,
        )
        if not tps:
            return None, "CPU compute unknown"
        gain = compute_gain(n)
        seconds += n / (tps * gain)
        parts.append(
            f"cpu {gain:.2g} x the {tps:.1f} tokens/s {m.threads} thread(s) decode one sequence at "
            "(the batch gain measured by bench_batch on a 2-core EPYC)"
        )
    if cpu_share < 1:
        bw = m.gpus[0].bandwidth_gbs if m.gpus else None
        if not bw:
            return None, "GPU FLOP/s unknown"
        gpu_flops = GPU_FLOPS_PER_BYTE * bw * 1e9
        seconds += n * flops * (1 - cpu_share) / gpu_flops
        parts.append(f"gpu {GPU_FLOPS_PER_BYTE:g} FLOP per byte of its {bw:.0f} GB/s")
    return seconds, f"{n} tokens ({flops / 1e9:.2f} GFLOP each) a step at " + " + ".join(parts)


def parallel_cap(v: Variant, est: MemoryEstimate, m: Machine) -> tuple[int, str]:
    """The fewest sequences (a power of two up to MAX_PARALLEL) whose predicted aggregate
    throughput is within BATCH_NEAR_BEST of the best predicted one, and the reason in words."""
    sizes = [1 << i for i in range(MAX_PARALLEL.bit_length()) if 1 << i <= MAX_PARALLEL]
    tps = {n: batch_throughput(v, est, m, n)[0] for n in sizes}
    if tps[1] is None:
        return MAX_PARALLEL, "throughput not predicted (memory bandwidth unknown)"
    best_n = max(sizes, key=lambda n: tps[n] or 0.0)
    best = tps[best_n] or 0.0
    n = next(n for n in sizes if (tps[n] or 0.0) >= BATCH_NEAR_BEST * best)
    if n == best_n:
        return n, f"predicted {best:.1f} tokens/s in all at {n}, the most of {', '.join(map(str, sizes))}"
    return n, (
        f"predicted {tps[n] or 0.0:.1f} tokens/s in all at {n}, within {1 - BATCH_NEAR_BEST:.0%} of "
        f"the best predicted ({best:.1f} at {best_n})"
    )


def measured_batch(v: Variant, est: MemoryEstimate, m: Machine, n: int) -> BatchRecord | None:
    """The newest bench_batch record of this very file with `n` sequences at `est`'s placement
    and the machine's threads, if any."""
    layers = ngl_key(est, v)
    found = [r for r in batches_of(v.path, m) if r.n_seq == n and r.n_gpu_layers == layers]
    return max(found, key=lambda r: r.date) if found else None


def _measured_basis(rec: BatchRecord) -> str:
    return (
        f"measured by bench_batch on this machine: {rec.aggregate_tps:.1f} tokens/s in all over {rec.n_seq}, "
        f"{rec.step_ms:.0f} ms a step, {rec.n_ctx} tokens of context each, {rec.date[:10]}"
    )


def _measured_choice(v: Variant, m: Machine, req: Request, one: Candidate) -> Candidate | None:
    """The fewest measured sequences within BATCH_NEAR_BEST of the best measured aggregate among
    those that fit where one sequence runs; None when nothing measured fits there."""
    sizes = sorted({r.n_seq for r in batches_of(v.path, m)})
    fit: list[tuple[int, float, Candidate]] = []
    for n in sizes:
        c = one if n == 1 else assess(v, m, replace(req, n_seq=n))
        rec = measured_batch(v, c.est, m, n) if c.fits and c.tier == one.tier else None
        if rec is not None:
            fit.append((n, rec.aggregate_tps, c))
    if not fit:
        return None
    best_n, best, _ = max(fit, key=lambda t: t[1])
    n, agg, c = next(t for t in fit if t[1] >= BATCH_NEAR_BEST * best)
    why = f"measured {agg:.1f} tokens/s in all by bench_batch on this machine, " + (
        "the best of the measured sizes that fit"
        if n == best_n
        else f"within {1 - BATCH_NEAR_BEST:.0%} of the best measured ({best:.1f} at {best_n})"
    )
    if n == 1:
        return replace(one, why=f"{one.why}; one sequence at a time: {why}")
    return replace(c, why=f"{c.why}; {n} sequences decoded together: {why}")


def assess_for(v: Variant, m: Machine, req: Request) -> Candidate:
    """`search.assess` for any workload: batch work with `req.n_seq` sequences, or the planner's
    choice of them when it is None."""
    if req.workload != "batch":
        return assess(v, m, replace(req, n_seq=1))
    if req.n_seq is not None:
        return _asked(v, m, req, req.n_seq)
    one = assess(v, m, replace(req, n_seq=1))
    if not one.fits:
        return replace(one, why=f"{one.why} (with one sequence)")
    measured = _measured_choice(v, m, req, one)
    if measured is not None:
        return measured
    cap, cap_why = parallel_cap(v, one.est, m)
    n = cap
    while n > 1:  # the most sequences, up to the cap, that fit at the place one sequence reaches
        c = assess(v, m, replace(req, n_seq=n))
        if c.fits and c.tier == one.tier:
            why = "the most that fit there" if n < cap else cap_why
            return replace(c, why=f"{c.why}; {n} sequences decoded together: {why}")
        n //= 2
    why = cap_why if cap == 1 else "two do not fit there"
    return replace(one, why=f"{one.why}; one sequence at a time: {why}")


def _asked(v: Variant, m: Machine, req: Request, n_seq: int) -> Candidate:
    """The candidate for the sequences the caller asked; never fewer (the context shrinks
    instead, unless it was given); when they do not fit, the most that would."""
    c = assess(v, m, req)
    if c.fits or n_seq == 1:
        return c
    n = 1 << ((n_seq - 1).bit_length() - 1)  # the largest power of two below n_seq
    while n >= 1:
        smaller = assess(v, m, replace(req, n_seq=n))
        if smaller.fits:
            return replace(c, why=f"{c.why} with parallel={n_seq}; parallel={n} would fit")
        n //= 2
    return replace(c, why=f"{c.why} with parallel={n_seq}; not even one sequence fits")
