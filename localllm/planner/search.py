"""Where one variant runs: `assess` tries the GPU(s), then (llama.cpp) partial offload, then
the CPU, each at the target context shrunk toward a floor (one ladder, `_ladder`, for both
runtimes), and returns a `Candidate` with its memory, speed and the binding constraint.

Tiers, best first: fully on the GPU(s) at the target context; on the GPU(s) with the
context shrunk; partial offload (as many layers as fit); CPU at the target context; CPU
with the context shrunk.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

from localllm.calibration import LoadRecord
from localllm.catalog import Family, Variant
from localllm.estimator import HOST_RUNTIME_OVERHEAD, MemoryEstimate, decode_tokens_per_second, estimate, estimate_onnx
from localllm.placement import Where
from localllm.planner.machine import Machine, Request, gpu_api
from localllm.planner.values import BATCH_CONTEXT, BATCH_CONTEXT_FLOOR
from localllm.planner.workers import link_seconds
from localllm.providers import CPU
from localllm.units import file_size

__all__ = [
    "CONTEXT_FLOOR",
    "Candidate",
    "DEFAULT_CONTEXT",
    "TIER_CPU",
    "TIER_CPU_SHRUNK",
    "TIER_GPU",
    "TIER_GPU_SHRUNK",
    "TIER_PARTIAL",
    "assess",
    "contexts",
    "ngl_key",
    "speed",
    "where_of",
]

# Context the planner aims for when none is asked: llama.cpp's --fit shrinks toward 4096
# before it moves layers off the GPU, so 4096 is what a tuned llama.cpp would keep.
DEFAULT_CONTEXT = 4096
# ...and the least it shrinks to when memory is short (a chat turn plus its history).
CONTEXT_FLOOR = 2048

# GPU APIs whose llama.cpp backend runs flash attention with an f16 cache
_FLASH_ATTN_GPU_APIS = ("cuda", "metal", "rpc")  # rpc: a worker's CPU device, as fa_cpu below

# tiers, best first
TIER_GPU, TIER_GPU_SHRUNK, TIER_PARTIAL, TIER_CPU, TIER_CPU_SHRUNK = range(5)
_TIER_WHERE: dict[int, Where] = {
    TIER_GPU: "gpu",
    TIER_GPU_SHRUNK: "gpu",
    TIER_PARTIAL: "partial",
    TIER_CPU: "cpu",
    TIER_CPU_SHRUNK: "cpu",
}


def where_of(tier: int | None, *, unfit: Where) -> Where:
    """Where a tier runs; `unfit` for a candidate that fits nowhere."""
    return unfit if tier is None else _TIER_WHERE[tier]


class Fit(NamedTuple):
    """One estimate against the machine's budgets."""

    ok: bool
    why: str  # the binding constraint in words ("" when it fits)
    needed: int
    available: int | None


@dataclass(frozen=True)
class _Step:
    """One rung of the context ladder: an estimate at one context and how it fits."""

    n_ctx: int
    est: MemoryEstimate
    fit: Fit
    shrunk: bool  # below the target context

    @property
    def shrunk_note(self) -> str:
        return f" with the context shrunk to {self.n_ctx}" if self.shrunk else ""


@dataclass(frozen=True)
class Candidate:
    variant: Variant
    tier: int | None  # None: does not fit anywhere
    est: MemoryEstimate
    n_ctx: int
    tokens_per_s: float | None
    basis: str
    why: str  # a line on the outcome (or why it does not fit)
    needed: int
    available: int | None
    provider: str | None = None  # ONNX Runtime execution provider for this outcome
    demoted: bool = False  # ranks after its peers (an fp16 ONNX graph on the CPU provider)
    n_seq: int = 1  # batch work: sequences decoded together, n_ctx tokens each (planner.batch)

    @property
    def fits(self) -> bool:
        return self.tier is not None

    @property
    def resort(self) -> int:
        """How late a resort this outcome is: its tier, or past every tier when it does not fit."""
        return self.tier if self.tier is not None else 99


def contexts(family: Family, req: Request) -> list[int]:
    """Context sizes to try, largest first: the target, halved down to the floor (per sequence:
    batch work aims for BATCH_CONTEXT and shrinks toward BATCH_CONTEXT_FLOOR).

    Every size is at least 1 whatever the family says (a header's context_length of 0 once
    made this loop forever), so the halving ends after at most log2(target) steps.
    """
    batch = req.workload == "batch"
    target = req.ctx_target or (BATCH_CONTEXT if batch else DEFAULT_CONTEXT)
    target = min(target, family.n_ctx_train) if not req.ctx_explicit else target
    target = max(1, int(target))
    floor = target if req.ctx_explicit else max(1, min(target, BATCH_CONTEXT_FLOOR if batch else CONTEXT_FLOOR))
    out = [target]
    c = target
    while c // 2 >= floor:
        c //= 2
        out.append(c)
    if out[-1] != floor:
        out.append(floor)
    return out


def check(est: MemoryEstimate, m: Machine) -> Fit:
    """Whether one estimate fits the machine, the binding constraint in words, needed and available."""
    gpu_devs = [d for d in est.devices if d.device != "cpu"]
    for d in gpu_devs:
        i = int(d.device[3:])
        if d.total > m.gpu_budgets[i]:
            return Fit(
                False,
                (
                    f"needs {file_size(d.total)} on {d.device} ({m.gpus[i].name}), "
                    f"{file_size(m.gpu_budgets[i])} usable there"
                ),
                d.total,
                m.gpu_budgets[i],
            )
    if m.unified and gpu_devs:
        need = est.total
        if m.ram is not None and need > m.ram:
            return Fit(False, f"needs {file_size(need)} of unified memory, {file_size(m.ram)} usable", need, m.ram)
        return Fit(True, "", need, m.ram)
    host = est.host.total
    if m.ram is not None and host > m.ram:
        return Fit(False, f"needs {file_size(host)} of RAM, {file_size(m.ram)} usable ({m.ram_basis})", host, m.ram)
    avail = None if m.ram is None else m.ram + sum(m.gpu_budgets[int(d.device[3:])] for d in gpu_devs)
    return Fit(True, "", est.total, avail)


def _ladder(
    ctxs: Sequence[int], m: Machine, estimate_at: Callable[[int], MemoryEstimate]
) -> tuple[_Step | None, list[_Step]]:
    """Try each context, largest first: (the first step that fits or None, the steps that did not)."""
    failed: list[_Step] = []
    for i, ctx in enumerate(ctxs):
        est = estimate_at(ctx)
        step = _Step(ctx, est, check(est, m), shrunk=i > 0)
        if step.fit.ok:
            return step, failed
        failed.append(step)
    return None, failed


def assess(v: Variant, m: Machine, req: Request) -> Candidate:
    """Where `v` runs best on `m` (the first tier that fits), or why it fits nowhere."""
    ctxs = contexts(v.family, req)
    if v.format == "onnx":
        return _assess_onnx(v, m, req, ctxs)
    return _assess_gguf(v, m, req, ctxs)


def _candidate(
    v: Variant, m: Machine, tier: int | None, step: _Step, why: str, *, provider: str | None = None
) -> Candidate:
    tps, basis = speed(v, step.est, m)
    # ONNX Runtime's CPU kernels are float32: an fp16 graph runs through casts there
    demoted = provider == CPU and step.est.kv_type == "f16"
    return Candidate(
        v,
        tier,
        step.est,
        step.n_ctx,
        tps,
        basis,
        why,
        step.fit.needed,
        step.fit.available,
        provider,
        demoted,
        n_seq=step.est.n_seq,
    )


def _assess_gguf(v: Variant, m: Machine, req: Request, ctxs: list[int]) -> Candidate:
    kv = req.kv_type
    n_seq = req.n_seq or 1
    L = v.family.n_layer
    shares = tuple(float(b) for b in m.gpu_budgets) or (1.0,)
    api = gpu_api(m.gpus[0]) if m.gpus else None
    fa_gpu = api in _FLASH_ATTN_GPU_APIS or kv != "f16"
    # Flash attention on the CPU too: llama.cpp's own default (flash_attn_type AUTO turns it on
    # for CPU), needed for a quantized V cache, and it keeps the n_head x n_ctx x n_ubatch
    # attention scores out of memory, so long contexts cost only their KV cache
    # (benchmarks/estimator_accuracy.py; decode was no slower with it here).
    fa_cpu = True

    def on_gpu(ctx: int, ngl: int) -> MemoryEstimate:
        est = estimate(
            v,
            n_ctx=ctx,
            n_gpu_layers=ngl,
            kv_type=kv,
            flash_attn=fa_gpu,
            gpu_shares=shares,
            gpu_api=api,
            repack_features=m.repack,
            amx_usable=m.amx_usable,
            n_seq=n_seq,
        )
        return measured(est, v, m)

    def on_cpu(ctx: int) -> MemoryEstimate:
        est = estimate(
            v,
            n_ctx=ctx,
            n_gpu_layers=0,
            kv_type=kv,
            flash_attn=fa_cpu,
            repack_features=m.repack,
            amx_usable=m.amx_usable,
            n_seq=n_seq,
        )
        return measured(est, v, m)

    gpu_failed: list[_Step] = []
    if m.workers:  # a split only adds link time: here alone when the target context fits here
        alone = replace(m, gpus=(), gpu_budgets=(), gpu_bases=())
        est = on_cpu(ctxs[0])
        here = _Step(ctxs[0], est, check(est, alone), shrunk=False)
        if here.fit.ok:
            why = "fits in RAM here: the workers are not needed (a layer split adds memory, not speed)"
            return _candidate(v, alone, TIER_CPU, here, why)
    if m.gpus and v.format == "gguf":
        fit, gpu_failed = _ladder(ctxs, m, lambda ctx: on_gpu(ctx, L + 1))
        if fit is not None:
            tier = TIER_GPU_SHRUNK if fit.shrunk else TIER_GPU
            on = f"on the {len(m.workers)} workers" if m.workers else "on the GPU"
            return _candidate(v, m, tier, fit, f"fits fully {on}" + fit.shrunk_note + _here_note(m))
        for ngl in range(L, 0, -1):  # partial offload, at the target context
            est = on_gpu(ctxs[0], ngl)
            step = _Step(ctxs[0], est, check(est, m), shrunk=False)
            if step.fit.ok:
                on = f"the {len(m.workers)} workers" if m.workers else "the GPU"
                why = f"{ngl} of {L} layers fit on {on} ({gpu_failed[0].fit.why} for all)" + _here_note(m)
                return _candidate(v, m, TIER_PARTIAL, step, why)
    fit, cpu_failed = _ladder(ctxs, m, on_cpu)
    if fit is not None:
        gpu_note = f" ({gpu_failed[0].fit.why} to run on the GPU)" if gpu_failed else ""
        tier = TIER_CPU_SHRUNK if fit.shrunk else TIER_CPU
        return _candidate(v, m, tier, fit, "fits in RAM" + fit.shrunk_note + gpu_note)
    last = cpu_failed[-1]
    return _candidate(v, m, None, last, last.fit.why)


def _here_note(m: Machine) -> str:
    """Why a plan across workers does not run here alone."""
    return "; it does not fit in RAM here alone" if m.workers else ""


def _assess_onnx(v: Variant, m: Machine, req: Request, ctxs: list[int]) -> Candidate:
    """Where an ONNX export runs: all on the provider's GPU, or all in RAM (ONNX Runtime
    has no partial offload), at the target context or shrunk toward the floor."""
    kv, per_token, n_seq = req.onnx_kv_type, req.onnx_kv_per_token, req.n_seq or 1
    gpu_failed: list[_Step] = []
    if m.gpus:
        api = gpu_api(m.gpus[0])
        fit, gpu_failed = _ladder(
            ctxs,
            m,
            lambda ctx: estimate_onnx(
                v, n_ctx=ctx, on_gpu=True, kv_type=kv, gpu_api=api, kv_bytes_per_token=per_token, n_seq=n_seq
            ),
        )
        if fit is not None:
            tier = TIER_GPU_SHRUNK if fit.shrunk else TIER_GPU
            why = f"fits fully on the GPU with {m.provider}" + fit.shrunk_note
            return _candidate(v, m, tier, fit, why, provider=m.provider)
    cpu_provider = CPU if m.gpus else (m.provider or CPU)
    fit, cpu_failed = _ladder(
        ctxs,
        m,
        lambda ctx: estimate_onnx(v, n_ctx=ctx, on_gpu=False, kv_type=kv, kv_bytes_per_token=per_token, n_seq=n_seq),
    )
    if fit is not None:
        gpu_note = (
            (
                f" ({gpu_failed[0].fit.why} to run with {m.provider}, and ONNX Runtime cannot split a model "
                "between GPU and CPU)"
            )
            if gpu_failed
            else ""
        )
        tier = TIER_CPU_SHRUNK if fit.shrunk else TIER_CPU
        return _candidate(v, m, tier, fit, "fits in RAM" + fit.shrunk_note + gpu_note, provider=cpu_provider)
    last = cpu_failed[-1]
    return _candidate(v, m, None, last, last.fit.why, provider=cpu_provider)


def measured(est: MemoryEstimate, v: Variant, m: Machine) -> MemoryEstimate:
    """`est` with the host figure moved by what the newest measured load of the same file at the
    same placement (but for the context) was off the estimate for that load."""
    r = load_for(est, v, m)
    if r is None:
        return est
    then = estimate(
        v,
        n_ctx=r.n_ctx,
        n_gpu_layers=est.n_gpu_layers,
        kv_type=r.kv_type,
        flash_attn=r.flash_attn,
        gpu_shares=(1.0,),
        repack_features=m.repack,
        amx_usable=m.amx_usable,
    )
    # the load's growth excludes the interpreter and libraries (HOST_RUNTIME_OVERHEAD)
    correction = r.resident_bytes - (then.host.total - HOST_RUNTIME_OVERHEAD)
    devices = tuple(replace(d, measured=correction) if d.device == "cpu" else d for d in est.devices)
    return replace(est, devices=devices)


def load_for(est: MemoryEstimate, v: Variant, m: Machine) -> LoadRecord | None:
    """The newest measured load of the planned file at `est`'s placement (any context)."""
    ngl = ngl_key(est, v)
    found = [
        r
        for r in m.loads
        if (r.n_gpu_layers, r.kv_type, r.flash_attn, r.extra_buffers)
        == (ngl, est.kv_type, est.flash_attn, bool(m.repack))
    ]
    return max(found, key=lambda r: r.date) if found else None


def ngl_key(est: MemoryEstimate, v: Variant) -> int:
    """n_gpu_layers as a Placement (and a bench record or a load record) holds it: -1 for everything."""
    return -1 if est.n_gpu_layers > v.family.n_layer else est.n_gpu_layers


def speed(v: Variant, est: MemoryEstimate, m: Machine, threads: int | None = None) -> tuple[float | None, str]:
    """Decode tokens/s for `est` with `threads`: measured on this machine when a bench record
    matches (model shape and size, threads, offloaded layers), else from bandwidth."""
    threads = threads or m.threads
    bw = m.calibration.bandwidth if m.calibration is not None else None
    tps, basis = decode_tokens_per_second(
        v,
        est,
        cpu_bandwidth_gbs=m.hw.memory.bandwidth_gbs,
        gpu_bandwidth_gbs=tuple(g.bandwidth_gbs for g in m.gpus),
        cpu_threads=threads,
        cpu_thread_bandwidth_gbs=bw.per_thread_gbs if bw is not None else None,
    )
    if bw is not None and m.hw.memory.bandwidth_gbs is not None:
        basis += f"; bandwidth measured here on {bw.date[:10]}"
    rec = (
        m.calibration.lookup(v.family, v.size, n_threads=threads, n_gpu_layers=ngl_key(est, v))
        if m.calibration is not None
        else None
    )
    if rec is not None and rec.decode_tps > 0:
        formula = f"; estimated from bandwidth: {tps:.1f}" if tps else ""
        return rec.decode_tps, (
            f"measured on this machine on {rec.date[:10]} by localllm bench "
            f"({rec.n_threads} threads, n_ctx {rec.n_ctx}){formula}"
        )
    if basis and tps:
        basis = "estimated from bandwidth: " + basis
    link, how = link_seconds(v, est, m.gpus, m.worker_rtts) if m.workers else (0.0, "")
    if tps and link:  # the layers run one after another: the link adds to every token
        tps = 1.0 / (1.0 / tps + link)
        basis += f"; {how}"
    return tps, basis
