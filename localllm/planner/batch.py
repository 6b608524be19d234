"""Batch work: how many sequences to decode together and how fast they go in all.

`assess_for` is `search.assess` for any workload: for batch work it sizes the plan for
`Request.n_seq` sequences, or, when none is asked, takes the most that fit at the best
place the model reaches (powers of two up to MAX_PARALLEL), capped where throughput stops
rising. `batch_throughput` predicts the aggregate decode speed of N sequences.

The throughput model: one decode step for N sequences reads every weight once and each
sequence's KV cache, and computes N tokens. Its time is the larger of the memory time
(the single-sequence decode prediction, `search.speed`, with N caches read) and the
compute time (N x FLOPs per token / the device's FLOPs). So aggregate tokens/s grows about
N-fold while the weights' reading dominates and flattens once compute does; the planner
stops doubling N when that gains less than BATCH_GAIN_MIN.
"""

from __future__ import annotations

from dataclasses import replace

from localllm.catalog import Family, Variant
from localllm.estimator import MemoryEstimate, decode_tokens_per_second
from localllm.planner.machine import Machine, Request
from localllm.planner.search import Candidate, assess, ngl_key, speed
from localllm.planner.values import MAX_PARALLEL

__all__ = [
    "BATCH_GAIN_MIN",
    "BATCH_COMPUTE_GAIN",
    "GPU_FLOPS_PER_BYTE",
    "assess_for",
    "batch_throughput",
    "flops_per_token",
    "parallel_cap",
]

# Stop doubling the sequences once the predicted aggregate throughput rises less than this
# factor: each doubling also doubles the KV cache and halves each sequence's own speed.
BATCH_GAIN_MIN = 1.2

# How much faster a CPU thread computes a token inside a batch than in one sequence's decode:
# for N > 1, llama.cpp multiplies the weights by N activations at once (llamafile's tinyBLAS
# and the repacked GEMM kernels), so each weight block is unpacked once for N tokens. On this
# project's Xeon (AVX-512) prompt processing of SmolLM2 Q4_1 ran at 31 GFLOP/s a thread
# (230 tokens/s on 2 threads, 0.27 GFLOP a token) against the 21 GFLOP/s a thread that
# decode's per-thread rate (estimator.CPU_THREAD_BANDWIDTH_GBS, 6 GB/s of Q4_K) implies.
BATCH_COMPUTE_GAIN = 1.5

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
    if n == 1:  # one sequence: the decode prediction itself
        tps, basis = speed(v, _with_seqs(est, 1), m)
        return tps, basis
    t_mem, mem_basis = _memory_time(v, _with_seqs(est, n), m)
    if t_mem is None:
        return None, mem_basis
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
        host_only = replace(_with_seqs(est, 1), devices=(est.host,))
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
        seconds += n / (tps * BATCH_COMPUTE_GAIN)
        parts.append(
            f"cpu {BATCH_COMPUTE_GAIN:g} x the {tps:.1f} tokens/s {m.threads} thread(s) decode one sequence at"
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
    """The sequences past which doubling gains less than BATCH_GAIN_MIN in predicted aggregate
    throughput (at most MAX_PARALLEL), and the reason in words."""
    n, prev = 1, batch_throughput(v, est, m, 1)[0]
    if prev is None:
        return MAX_PARALLEL, "throughput not predicted (memory bandwidth unknown)"
    while n * 2 <= MAX_PARALLEL:
        nxt = batch_throughput(v, est, m, n * 2)[0] or 0.0
        if nxt < BATCH_GAIN_MIN * prev:
            return n, (
                f"predicted {prev:.1f} tokens/s in all at {n}, and {n * 2} would give {nxt:.1f} "
                f"(under {BATCH_GAIN_MIN - 1:.0%} more)"
            )
        n, prev = n * 2, nxt
    return n, f"predicted {prev:.1f} tokens/s in all at {n}, the most the planner takes (MAX_PARALLEL)"


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
