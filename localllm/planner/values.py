"""What the planner hands back: Plan (with explain() and to_dict()), VariantFit, Rejected, DeviceBudget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from localllm.catalog import Family, Variant
from localllm.estimator import MemoryEstimate
from localllm.placement import Placement, Runtime, Where
from localllm.units import file_size

__all__ = [
    "BATCH_CONTEXT",
    "BATCH_CONTEXT_FLOOR",
    "DeviceBudget",
    "MAX_PARALLEL",
    "MAX_REJECTED",
    "MAX_SEQ",
    "Plan",
    "Rejected",
    "VariantFit",
    "WHERE_WORDS",
    "WORKLOADS",
    "Workload",
]

# real-time use (replies as fast as people read) or throughput work
Workload = Literal["interactive", "batch"]
WORKLOADS: tuple[Workload, ...] = get_args(Workload)

# How many rejected alternatives a plan keeps.
MAX_REJECTED = 6

# Batch work: the most sequences the planner chooses to decode together when none is asked
# (llama.cpp's server defaults to 4 slots; past 16, CPU throughput has long stopped rising and
# a GPU's KV cache is better spent on context), and the most a caller may ask for
# (llama.cpp's LLAMA_MAX_SEQ).
MAX_PARALLEL = 16
MAX_SEQ = 256
# Context each sequence of a batch gets when none is asked: a batch item is one prompt and its
# answer (a ticket to label, a file to summarise), not a growing chat; the planner shrinks it
# toward the floor, as it does a chat context, before it takes fewer sequences.
BATCH_CONTEXT = 2048
BATCH_CONTEXT_FLOOR = 1024

# where a plan runs, in words (a Plan is never "none": one that does not fit says "cpu")
WHERE_WORDS: dict[Where, str] = {"gpu": "fully on the GPU", "partial": "split between GPU and CPU", "cpu": "on the CPU"}


@dataclass(frozen=True)
class DeviceBudget:
    device: str  # "cpu", "gpu0", ...
    available: int  # bytes a plan may use there
    basis: str  # how that number was reached


@dataclass(frozen=True)
class Rejected:
    name: str  # variant name
    why: str
    needed: int | None = None
    available: int | None = None


@dataclass(frozen=True)
class VariantFit:
    """How one variant would run here: the row of `localllm models --fits`."""

    variant: Variant
    where: Where
    fits: bool
    needed: int  # bytes, all devices
    available: int | None
    n_ctx: int
    n_gpu_layers: int
    tokens_per_s: float | None
    why: str
    n_seq: int = 1  # batch work: sequences decoded together, n_ctx tokens each


@dataclass(frozen=True)
class Plan:
    """The planner's decision: what to run, where, with how much memory, and why."""

    variant: Variant
    placement: Placement
    fits: bool
    where: Where  # gpu | partial | cpu (where it would run; "cpu" for a plan that does not fit)
    memory: MemoryEstimate  # breakdown per device
    budgets: tuple[DeviceBudget, ...]
    needed: int  # bytes, all devices
    available: int | None  # bytes, all budgets (one pool on unified memory)
    tokens_per_s: float | None
    tokens_per_s_basis: str
    reasons: tuple[str, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    warnings: tuple[str, ...] = ()
    workload: Workload = "interactive"
    hardware_name: str | None = None
    # where the model's file came from, for "auto" as load() obtained it: each candidate tried
    # before (why it could not be had) and the source used; empty for a plan not yet loaded
    sources: tuple[str, ...] = ()
    # batch work (placement.n_seq sequences decoded together): the predicted tokens/s of all
    # of them together, and its basis; None for interactive plans
    aggregate_tokens_per_s: float | None = None
    aggregate_basis: str = ""

    @property
    def n_seq(self) -> int:
        """Sequences decoded together (1 for interactive work)."""
        return self.placement.n_seq

    @property
    def per_sequence_tokens_per_s(self) -> float | None:
        """Each sequence's decode speed while all n_seq run together."""
        if self.aggregate_tokens_per_s is None:
            return None
        return self.aggregate_tokens_per_s / self.n_seq

    @property
    def family(self) -> Family:
        return self.variant.family

    @property
    def where_words(self) -> str:
        """Where it runs, in words ("fully on the GPU", "split between 2 workers and this CPU"...)."""
        n = len(self.placement.workers)
        if n and self.where == "gpu":
            return f"across {n} llama.cpp RPC worker{'s' if n != 1 else ''}"
        if n and self.where == "partial":
            return f"split between {n} llama.cpp RPC worker{'s' if n != 1 else ''} and this CPU"
        return WHERE_WORDS[self.where]

    @property
    def runtime(self) -> Runtime:
        return self.placement.runtime

    def explain(self) -> str:
        """The plan in words, for people."""
        v, p = self.variant, self.placement
        est = " (size estimated)" if v.size_estimated else ""
        with_rt = f"{p.runtime} ({p.provider})" if p.provider else p.runtime
        lines = [
            f"{v.name}  ({v.family.display_name}, {v.quant}, {file_size(v.size)}{est}) "
            f"{self.where_words} with {with_rt}"
        ]
        if self.hardware_name:
            lines[0] += f"  [profile {self.hardware_name}]"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        avail = f" of {file_size(self.available)} available" if self.available is not None else ""
        lines.append(f"  {verdict}: needs {file_size(self.needed)}{avail}")
        split = f", tensor_split {list(p.tensor_split)}" if p.tensor_split else ""
        lines.append(
            f"  placement: n_gpu_layers={p.n_gpu_layers}, n_ctx={p.n_ctx}, threads={p.n_threads}, "
            f"batch={p.n_batch}/{p.n_ubatch}, kv={p.kv_type}, flash_attn={'on' if p.flash_attn else 'off'}"
            f"{split}"
        )
        if p.workers:
            lines.append(
                f"  workers: {', '.join(p.workers)} (llama.cpp RPC; the layers run one after another, so the "
                "workers add memory, not speed)"
            )
        if self.workload == "batch":
            lines.append(_batch_line(self))
        lines.append("  memory:")
        budgets = {b.device: b for b in self.budgets}
        for d in self.memory.devices:
            if not d.total:
                continue
            b = budgets.get(d.device)
            of = f"  of {file_size(b.available)} ({b.basis})" if b else ""
            layers = f", {d.n_layers} layers" if d.n_layers else ""
            repacked = f" + repacked {file_size(d.repacked)}" if d.repacked else ""
            if d.measured:
                repacked += f" {'+' if d.measured > 0 else '-'} measured {file_size(abs(d.measured))}"
            device = f"rpc{d.device[3:]}" if p.workers and d.device.startswith("gpu") else d.device
            lines.append(
                f"    {device:5} weights {file_size(d.weights)}{repacked} + KV {file_size(d.kv_cache)} + compute "
                f"{file_size(d.compute)} + runtime {file_size(d.overhead)} = {file_size(d.total)}{layers}{of}"
            )
        if "pool" in budgets:
            b = budgets["pool"]
            lines.append(f"    pool  {file_size(self.needed)} of {file_size(b.available)} ({b.basis})")
        if self.tokens_per_s:
            how = "measured" if self.tokens_per_s_basis.startswith("measured") else "predicted"
            lines.append(f"  speed: ~{self.tokens_per_s:.1f} tokens/s decode, {how} ({self.tokens_per_s_basis})")
        else:
            lines.append(f"  speed: not predicted ({self.tokens_per_s_basis})")
        if self.reasons:
            lines.append("  why:")
            lines += [f"    - {r}" for r in self.reasons]
        if self.rejected:
            lines.append("  rejected:")
            lines += [f"    - {r.name}: {r.why}" for r in self.rejected]
        if self.sources:
            lines.append("  sources:")
            lines += [f"    - {s}" for s in self.sources]
        if self.warnings:
            lines.append("  warnings:")
            lines += [f"    ! {w}" for w in self.warnings]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for --json."""
        v = self.variant
        return {
            "variant": v.name,
            "family": v.family.name,
            "quant": v.quant,
            "format": v.format,
            "repo": v.repo,
            "filename": v.filename,
            "path": v.path,
            "size": v.size,
            "size_estimated": v.size_estimated,
            "quality": round(v.quality, 3),
            "fits": self.fits,
            "where": self.where,
            "workload": self.workload,
            "hardware": self.hardware_name,
            "sources": list(self.sources),
            "placement": {k: (list(x) if isinstance(x, tuple) else x) for k, x in asdict(self.placement).items()},
            "memory": {
                d.device: {
                    "weights": d.weights,
                    "repacked": d.repacked,
                    "measured": d.measured,
                    "kv_cache": d.kv_cache,
                    "compute": d.compute,
                    "overhead": d.overhead,
                    "total": d.total,
                    "n_layers": d.n_layers,
                }
                for d in self.memory.devices
            },
            "budgets": {b.device: {"available": b.available, "basis": b.basis} for b in self.budgets},
            "needed": self.needed,
            "available": self.available,
            "tokens_per_s": self.tokens_per_s,
            "tokens_per_s_basis": self.tokens_per_s_basis,
            "reasons": list(self.reasons),
            "rejected": [asdict(r) for r in self.rejected],
            "warnings": list(self.warnings),
            "n_seq": self.n_seq,
            "context_per_sequence": self.placement.n_ctx,
            "aggregate_tokens_per_s": self.aggregate_tokens_per_s,
            "per_sequence_tokens_per_s": self.per_sequence_tokens_per_s,
            "aggregate_tokens_per_s_basis": self.aggregate_basis,
        }


def _batch_line(p: Plan) -> str:
    """The batch part of explain(): sequences, context each, and the predicted throughput."""
    n, ctx = p.n_seq, p.placement.n_ctx
    head = f"  batch: {n} sequence{'s' if n != 1 else ''} decoded together, {ctx} tokens of context each"
    if p.aggregate_tokens_per_s is None:
        return f"{head}; throughput not predicted ({p.aggregate_basis or p.tokens_per_s_basis})"
    each = p.per_sequence_tokens_per_s or 0.0
    how = " " if p.aggregate_basis.startswith("measured") else ", predicted "  # a bench_batch record: no "predicted"
    return (
        f"{head}; ~{p.aggregate_tokens_per_s:.1f} tokens/s in all, ~{each:.1f} per sequence{how}({p.aggregate_basis})"
    )
