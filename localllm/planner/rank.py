"""From candidates to a Plan: `choose` ranks the assessed variants, words the reasons,
warnings and rejected alternatives, and builds the Placement (`make_plan`).

Across variants "auto" takes the best tier first, then (for interactive work) variants
predicted to decode at least INTERACTIVE_MIN_TOKENS_PER_S, then the highest quality, then
the smaller file.
"""

from __future__ import annotations

from dataclasses import replace

from localllm.calibration import model_signature
from localllm.catalog import Catalog, Variant
from localllm.errors import NoFittingVariantError
from localllm.placement import Placement, Runtime
from localllm.planner.batch import assess_for, batch_throughput
from localllm.planner.machine import Machine, Request
from localllm.planner.search import (
    DEFAULT_CONTEXT,
    TIER_CPU,
    TIER_CPU_SHRUNK,
    Candidate,
    load_for,
    ngl_key,
    where_of,
)
from localllm.planner.values import MAX_REJECTED, Plan, Rejected
from localllm.providers import CPU
from localllm.units import MIB, file_size

__all__ = ["ADAPT_WORDS", "INTERACTIVE_MIN_TOKENS_PER_S", "THREAD_SWITCH_MARGIN", "choose", "rank_key"]

# Interactive work wants replies at least as fast as people read (about 4-5 words/s,
# roughly 5-7 tokens/s); slower variants rank below faster ones for interactive use.
INTERACTIVE_MIN_TOKENS_PER_S = 5.0

# Leave the default thread count only for a measured gain above this factor: one bench round
# on a 2-core machine spreads 5-10 % (estimator_accuracy.py's thread sweep picked 3 threads
# over 2 on a 2 % difference and then ran at 0.91 of the best).
THREAD_SWITCH_MARGIN = 1.10

# What the plan says of a thread count that adapts (llama.cpp; the caller did not fix it):
# ggml's threads wait for each other at every step of a token, so on a busy machine fewer
# threads are faster (localllm.hardware.cpu_load, benchmarks/bench_busy.py).
ADAPT_WORDS = (
    "a ceiling: re-chosen before each generation from the CPU time other programs leave free, "
    "fewer while they keep cores busy"
)


def rank_key(c: Candidate, workload: str, *, prefer_fast: bool = True) -> tuple[int, bool, bool, float, int]:
    """Larger is better: tier, then real-time speed for interactive work, then not demoted,
    then quality, then the smaller file."""
    fast = (
        not prefer_fast
        or workload != "interactive"
        or c.tokens_per_s is None
        or c.tokens_per_s >= INTERACTIVE_MIN_TOKENS_PER_S
    )
    return (-c.resort, fast, not c.demoted, round(c.variant.quality, 1), -c.variant.size)


def choose(
    pool: list[Variant], m: Machine, req: Request, runtime: Runtime, *, auto: bool, catalog: Catalog | None
) -> Plan:
    """The plan for the best of `pool` on `m`; for nothing that fits, the smallest (`fits`
    False), or NoFittingVariantError when `auto`."""
    cands = [assess_for(v, m, req) for v in pool]
    fitting = [c for c in cands if c.fits]
    warnings = list(m.notes)
    if not fitting:
        smallest = min(cands, key=lambda c: c.needed)
        if auto:
            raise NoFittingVariantError(
                f"no model in the catalog fits this machine: the smallest, {smallest.variant.name}, "
                f"{smallest.why}. Free some memory, or pass a smaller context or a headroom of 0.",
                needed=smallest.needed,
                available=smallest.available,
            )
        chosen = smallest if len(pool) > 1 else cands[0]
        reasons = [f"{chosen.variant.name} {chosen.why}"]
        if len(pool) > 1:
            reasons.append(f"no variant of {chosen.variant.family.name} fits; this is the smallest")
        reasons.append("loading it anyway needs force=True and may swap or be killed for memory")
        rejected = _rejected_for_unfit(chosen, cands, m, req, catalog)
        return _make_plan(chosen, m, req, runtime, fits=False, reasons=reasons, rejected=rejected, warnings=warnings)
    # a named model: its best quality that fits; "auto" also prefers real-time speed
    best = max(fitting, key=lambda c: rank_key(c, req.workload, prefer_fast=auto))
    reasons = [
        _tier_reason(best, m, req.workload),
        f"quality {best.variant.quality:.1f} ({best.variant.family.quality_source}{_penalty_note(best.variant)})",
    ]
    if auto:
        reasons.insert(0, f"best-ranked of {len(fitting)} fitting variants out of {len(cands)}")
    elif len(pool) > 1:
        reasons.insert(0, f"best-ranked of {len(fitting)} fitting variants of {best.variant.family.name}")
    if (
        req.workload == "interactive"
        and best.tokens_per_s is not None
        and best.tokens_per_s < INTERACTIVE_MIN_TOKENS_PER_S
    ):
        warnings.append(
            f"predicted {best.tokens_per_s:.1f} tokens/s is below the "
            f"{INTERACTIVE_MIN_TOKENS_PER_S:g} tokens/s that reads as real time"
        )
    if req.ctx_target is not None and req.ctx_explicit and req.ctx_target > best.variant.family.n_ctx_train:
        warnings.append(
            f"context {req.ctx_target} is beyond the {best.variant.family.n_ctx_train} tokens "
            f"{best.variant.family.name} was trained on: quality may drop"
        )
    rejected = _rejected_for_fit(best, cands)
    return _make_plan(best, m, req, runtime, fits=True, reasons=reasons, rejected=rejected, warnings=warnings)


def _tier_reason(c: Candidate, m: Machine, workload: str) -> str:
    if c.tier in (TIER_CPU, TIER_CPU_SHRUNK) and not m.gpus and workload == "batch":
        return f"{c.why}; no usable GPU here, so the batch runs on the CPU"
    if c.tier in (TIER_CPU, TIER_CPU_SHRUNK) and not m.gpus:
        return f"{c.why}; no usable GPU here, and interactive work may run on a CPU that holds it comfortably"
    return c.why


def _penalty_note(v: Variant) -> str:
    if v.quality_penalty:
        return f"; {v.quant} costs +{v.quality_penalty:g} perplexity per llama.cpp"
    return ""


def _rejected_for_fit(best: Candidate, cands: list[Candidate]) -> tuple[Rejected, ...]:
    """The nearest better-quality alternatives and why they lost."""
    out = []
    better = sorted(
        (c for c in cands if c is not best and round(c.variant.quality, 1) >= round(best.variant.quality, 1)),
        key=lambda c: c.variant.quality,
    )
    for c in better:
        if not c.fits:
            why = f"does not fit: {c.why}"
        elif c.demoted and not best.demoted:
            why = (
                f"fits, but an fp16 graph on {c.provider}: ONNX Runtime's CPU "
                "kernels are float32, so it runs through casts"
            )
        elif c.resort > best.resort:
            why = f"a later resort: {c.why}, while {best.variant.name} {best.why}"
        elif round(c.variant.quality, 1) == round(best.variant.quality, 1):
            why = (
                f"fits, but no better in quality and larger ({file_size(c.variant.size)} "
                f"vs {file_size(best.variant.size)})"
            )
        else:
            why = (
                f"predicted {c.tokens_per_s or 0:.1f} tokens/s, below "
                f"{INTERACTIVE_MIN_TOKENS_PER_S:g} for interactive work"
            )
        out.append(Rejected(c.variant.name, why, c.needed, c.available))
        if len(out) >= MAX_REJECTED:
            break
    return tuple(out)


def _rejected_for_unfit(
    chosen: Candidate, cands: list[Candidate], m: Machine, req: Request, catalog: Catalog | None
) -> tuple[Rejected, ...]:
    """For a plan that does not fit: the other variants of the family that would."""
    out = [Rejected(c.variant.name, f"does not fit: {c.why}", c.needed, c.available) for c in cands if c is not chosen]
    if catalog is not None:
        others = [
            assess_for(v, m, req)
            for v in catalog.variants_of(chosen.variant.family)
            if v.name != chosen.variant.name and all(v.name != c.variant.name for c in cands)
        ]
        out = [Rejected(c.variant.name, f"would fit: {c.why}", c.needed, c.available) for c in others if c.fits] + out
    return tuple(out[:MAX_REJECTED])


def _make_plan(
    c: Candidate,
    m: Machine,
    req: Request,
    runtime: Runtime,
    *,
    fits: bool,
    reasons: list[str],
    rejected: tuple[Rejected, ...],
    warnings: list[str],
) -> Plan:
    measured = _measured_threads(c, m) if fits else None
    if measured is not None:  # bench found another thread count faster on this machine
        n, tps, basis = measured
        m = replace(m, threads=n)
        c = replace(c, tokens_per_s=tps, basis=basis)
    placement = _placement(c, m, req, runtime)
    aggregate, aggregate_basis = batch_throughput(c.variant, c.est, m) if req.workload == "batch" else (None, "")
    warnings = list(warnings)
    if req.workload == "batch" and c.tier in (TIER_CPU, TIER_CPU_SHRUNK):
        warnings.append(_cpu_batch_warning(c, aggregate))
    reasons = list(reasons)
    if measured is not None:
        threads_why = f"{placement.n_threads} threads: fastest measured here ({measured[2]})"
    else:
        threads_why = f"{placement.n_threads} threads: {m.threads_basis}"
    if placement.adapt_threads:
        threads_why += f" ({ADAPT_WORDS})"
    reasons.append(threads_why)
    if placement.provider:
        reasons.append(_provider_reason(placement.provider, m))
    if runtime == "llama.cpp" and c.est.host.repacked:
        reasons.append(f"memory: {m.repack_basis}")
    r = load_for(c.est, c.variant, m) if c.est.host.measured else None
    if r is not None:
        reasons.append(
            f"memory: measured at the last load of this file ({file_size(r.resident_bytes)} resident at "
            f"n_ctx {r.n_ctx}, {r.date}): the estimate is corrected by {c.est.host.measured / MIB:+.0f} MiB"
        )
    if (
        c.n_ctx != (req.ctx_target or DEFAULT_CONTEXT)
        and not req.ctx_explicit
        and c.n_ctx == c.variant.family.n_ctx_train
    ):
        reasons.append(f"context {c.n_ctx}: all {c.variant.family.name} was trained on")
    return Plan(
        variant=c.variant,
        placement=placement,
        fits=fits,
        where=where_of(c.tier, unfit="cpu"),
        memory=c.est,
        budgets=m.budgets(with_gpus=bool(c.est.n_gpu_layers)),
        needed=c.needed,
        available=c.available,
        tokens_per_s=c.tokens_per_s,
        tokens_per_s_basis=c.basis,
        reasons=tuple(reasons),
        rejected=rejected,
        warnings=tuple(warnings),
        workload=req.workload,
        hardware_name=m.hw.name,
        aggregate_tokens_per_s=aggregate,
        aggregate_basis=aggregate_basis,
    )


def _cpu_batch_warning(c: Candidate, aggregate: float | None) -> str:
    """The seed's rule for batch work on a CPU, with what to expect there."""
    head = "batch work on the CPU only: it belongs on a GPU or accelerator"
    if aggregate is None:
        return f"{head}; expect it to be slow and to keep the CPU busy"
    n = c.n_seq
    each = f" over {n} sequences (~{aggregate / n:.1f} each)" if n > 1 else " (one sequence at a time)"
    return (
        f"{head}; here expect ~{aggregate:.1f} tokens/s in all{each}, "
        f"{c.n_ctx} tokens of context each, with the CPU kept busy"
    )


def _provider_reason(provider: str, m: Machine) -> str:
    if provider == m.provider:
        return f"ONNX Runtime provider {provider}: {m.provider_why}"
    return (
        f"ONNX Runtime provider {provider}: the model does not fit on the GPU for {m.provider} "
        f"({m.provider_why}), so it runs on the CPU"
    )


def _measured_threads(c: Candidate, m: Machine) -> tuple[int, float, str] | None:
    """(threads, tokens/s, basis) when bench measured this model at two or more thread
    counts here and another count than the default decoded faster."""
    if m.calibration is None or m.threads_explicit:
        return None
    v = c.variant
    key = ngl_key(c.est, v)
    sig_records = [r for r in m.calibration.bench if r.matches(model_signature(v.family), v.size, n_gpu_layers=key)]
    if len({r.n_threads for r in sig_records}) < 2:
        return None
    best = max(sig_records, key=lambda r: r.decode_tps)
    if best.n_threads == m.threads:
        return None
    default = [r.decode_tps for r in sig_records if r.n_threads == m.threads]
    if default and best.decode_tps < THREAD_SWITCH_MARGIN * max(default):
        return None  # within the noise of one bench round: keep the default
    counts = ", ".join(f"{r.n_threads}: {r.decode_tps:.1f}" for r in sorted(sig_records, key=lambda r: r.n_threads))
    return (
        best.n_threads,
        best.decode_tps,
        (f"measured on this machine on {best.date[:10]} by localllm bench (tokens/s by threads: {counts})"),
    )


def _placement(c: Candidate, m: Machine, req: Request, runtime: Runtime) -> Placement:
    L = c.variant.family.n_layer
    ngl = c.est.n_gpu_layers
    tensor_split: tuple[float, ...] = ()
    if ngl and (len(m.gpus) > 1 or m.workers):
        total = sum(m.gpu_budgets) or 1
        tensor_split = tuple(round(b / total, 4) for b in m.gpu_budgets)
    workers = tuple(w.endpoint for w in m.workers) if ngl else ()
    provider, kv = None, req.kv_type
    if runtime == "onnxruntime":  # an ONNX graph fixes its own cache type
        provider, kv = c.provider or m.provider or CPU, c.est.kv_type
    return Placement(
        runtime=runtime,
        n_ctx=c.n_ctx,
        n_gpu_layers=-1 if ngl > L else ngl,
        n_threads=m.threads,
        n_threads_batch=max(m.threads, m.batch_threads),
        n_batch=512,
        n_ubatch=512,
        flash_attn=c.est.flash_attn,
        kv_type=kv,
        use_mmap=True,
        main_gpu=0,
        tensor_split=tensor_split,
        provider=provider,
        workers=workers,
        n_seq=c.n_seq,
        # ONNX Runtime fixes its threads per session (its engine checks the load once, at load)
        adapt_threads=runtime == "llama.cpp" and not m.threads_explicit,
    )
