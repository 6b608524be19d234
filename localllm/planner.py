"""Choose the model variant, runtime and placement that truly fit a machine, and say why.

A pure function of (Hardware, Catalog, request): no I/O once the hardware is known.

Search order for each variant: fully on the GPU(s) at the target context; fully on the
GPU(s) with the context shrunk toward a floor; partial offload (as many layers as fit);
CPU at the target context; CPU with the context shrunk. Across variants, "auto" takes
the best tier first, then (for interactive work) variants predicted to decode at least
INTERACTIVE_MIN_TOKENS_PER_S, then the highest quality, then the smaller file.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from dataclasses import replace as _replace
from typing import TYPE_CHECKING, Any

from localllm.catalog import Catalog, Family, Variant, load_catalog, local_variant
from localllm.errors import ModelNotFoundError, NoFittingVariantError
from localllm.estimator import HOST_RUNTIME_OVERHEAD, MemoryEstimate, decode_tokens_per_second, estimate_onnx
from localllm.estimator import estimate as _estimate
from localllm.hardware import GPUInfo, Hardware
from localllm.placement import Placement
from localllm.repack import EXTRA_BUFFERS_ENV, features_from_cpu_flags, repack_rule

if TYPE_CHECKING:  # pragma: no cover
    from localllm.calibration import Calibration, LoadRecord

__all__ = [
    "CONTEXT_FLOOR",
    "DEFAULT_CONTEXT",
    "DeviceBudget",
    "GPU_MARGIN",
    "INTERACTIVE_MIN_TOKENS_PER_S",
    "Plan",
    "RAM_FRACTION",
    "Rejected",
    "VariantFit",
    "fit_table",
    "plan",
    "plan_local",
    "plan_local_onnx",
]

MiB = 1024**2
GiB = 1024**3

# Context the planner aims for when none is asked: llama.cpp's --fit shrinks toward 4096
# before it moves layers off the GPU, so 4096 is what a tuned llama.cpp would keep.
DEFAULT_CONTEXT = 4096
# ...and the least it shrinks to when memory is short (a chat turn plus its history).
CONTEXT_FLOOR = 2048

# Part of the usable RAM (MemAvailable, or the cgroup headroom, whichever is smaller) a
# plan may take: the rest stays for page cache growth, the app and the user's other
# programs. llama.cpp's own fitter assumes unlimited system RAM and ignores cgroups; we
# do not.
RAM_FRACTION = 0.90

# Device memory kept free on every GPU beyond our estimate: Ollama reserves 457 MiB per
# CUDA/ROCm GPU and 512 MiB on Metal (its gpu overhead defaults); our estimate already
# counts the runtime context (estimator.GPU_RUNTIME_OVERHEAD).
GPU_MARGIN = {"cuda": 457 * MiB, "rocm": 457 * MiB, "metal": 512 * MiB}
GPU_MARGIN_DEFAULT = 512 * MiB  # vulkan, sycl, unknown

# Apple GPUs may use recommendedMaxWorkingSetSize, about 65-75 % of RAM; when the probe
# could not read it, take the low end.
APPLE_WORKING_SET_FRACTION = 0.65

# Interactive work wants replies at least as fast as people read (about 4-5 words/s,
# roughly 5-7 tokens/s); slower variants rank below faster ones for interactive use.
INTERACTIVE_MIN_TOKENS_PER_S = 5.0

# Threads when the CPU core count is unknown.
DEFAULT_THREADS = 4

# How many rejected alternatives a plan keeps.
MAX_REJECTED = 6

WORKLOADS = ("interactive", "batch")
KV_TYPES = ("f16", "q8_0", "q4_0")
RUNTIMES = ("llama.cpp", "onnxruntime")
RUNTIME_ALIASES = {"onnx": "onnxruntime", "ort": "onnxruntime", "llamacpp": "llama.cpp", "llama_cpp": "llama.cpp"}
_FLASH_ATTN_BACKENDS = ("cuda", "metal")

# tiers, best first
_GPU, _GPU_SHRUNK, _PARTIAL, _CPU, _CPU_SHRUNK = range(5)
_TIER_WHERE = {_GPU: "gpu", _GPU_SHRUNK: "gpu", _PARTIAL: "partial", _CPU: "cpu", _CPU_SHRUNK: "cpu"}


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
    where: str  # gpu | partial | cpu | none
    fits: bool
    needed: int  # bytes, all devices
    available: int | None
    n_ctx: int
    n_gpu_layers: int
    tokens_per_s: float | None
    why: str


@dataclass(frozen=True)
class Plan:
    """The planner's decision: what to run, where, with how much memory, and why."""

    variant: Variant
    placement: Placement
    fits: bool
    where: str  # gpu | partial | cpu (where it would run; "cpu" for a plan that does not fit)
    memory: MemoryEstimate  # breakdown per device
    budgets: tuple[DeviceBudget, ...]
    needed: int  # bytes, all devices
    available: int | None  # bytes, all budgets (one pool on unified memory)
    tokens_per_s: float | None
    tokens_per_s_basis: str
    reasons: tuple[str, ...] = ()
    rejected: tuple[Rejected, ...] = ()
    warnings: tuple[str, ...] = ()
    workload: str = "interactive"
    hardware_name: str | None = None

    @property
    def family(self) -> Family:
        return self.variant.family

    @property
    def runtime(self) -> str:
        return self.placement.runtime

    def explain(self) -> str:
        """The plan in words, for people."""
        v, p = self.variant, self.placement
        on = {"gpu": "fully on the GPU", "partial": "split between GPU and CPU", "cpu": "on the CPU"}[self.where]
        est = " (size estimated)" if v.size_estimated else ""
        with_rt = f"{p.runtime} ({p.provider})" if p.provider else p.runtime
        lines = [f"{v.name}  ({v.family.display_name}, {v.quant}, {_gb(v.size)}{est}) {on} with {with_rt}"]
        if self.hardware_name:
            lines[0] += f"  [profile {self.hardware_name}]"
        verdict = "fits" if self.fits else "DOES NOT FIT"
        avail = f" of {_gb(self.available)} available" if self.available is not None else ""
        lines.append(f"  {verdict}: needs {_gb(self.needed)}{avail}")
        split = f", tensor_split {list(p.tensor_split)}" if p.tensor_split else ""
        lines.append(
            f"  placement: n_gpu_layers={p.n_gpu_layers}, n_ctx={p.n_ctx}, threads={p.n_threads}, "
            f"batch={p.n_batch}/{p.n_ubatch}, kv={p.kv_type}, flash_attn={'on' if p.flash_attn else 'off'}"
            f"{split}"
        )
        lines.append("  memory:")
        budgets = {b.device: b for b in self.budgets}
        for d in self.memory.devices:
            if not d.total:
                continue
            b = budgets.get(d.device)
            of = f"  of {_gb(b.available)} ({b.basis})" if b else ""
            layers = f", {d.n_layers} layers" if d.n_layers else ""
            repacked = f" + repacked {_gb(d.repacked)}" if d.repacked else ""
            if d.measured:
                repacked += f" {'+' if d.measured > 0 else '-'} measured {_gb(abs(d.measured))}"
            lines.append(
                f"    {d.device:5} weights {_gb(d.weights)}{repacked} + KV {_gb(d.kv_cache)} + compute "
                f"{_gb(d.compute)} + runtime {_gb(d.overhead)} = {_gb(d.total)}{layers}{of}"
            )
        if "pool" in budgets:
            b = budgets["pool"]
            lines.append(f"    pool  {_gb(self.needed)} of {_gb(b.available)} ({b.basis})")
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
        }


# -- the request and the machine, as the search sees them ---------------------------------------


@dataclass(frozen=True)
class _Machine:
    hw: Hardware
    ram: int | None  # bytes a plan may use in RAM (None: unknown)
    ram_basis: str
    gpus: tuple[GPUInfo, ...]  # GPUs the runtime can use
    gpu_budgets: tuple[int, ...]
    gpu_bases: tuple[str, ...]
    unified: bool
    threads: int  # decode threads
    notes: tuple[str, ...] = ()
    calibration: Calibration | None = None  # measured figures for this machine
    threads_explicit: bool = False  # the caller fixed the thread count
    provider: str | None = None  # ONNX Runtime execution provider (runtime onnxruntime)
    provider_why: str = ""
    batch_threads: int = 0  # prompt-processing threads (0: as decode)
    threads_basis: str = ""
    # llama.cpp's CPU backend features where it repacks weights (empty: no repacking), whether
    # an AMX build's AMX buffer works here, and where the facts come from
    repack: frozenset[str] = frozenset()  # empty: extra buffers off (env or a failed AMX trial)
    amx_usable: bool = True
    repack_basis: str = ""
    loads: tuple[LoadRecord, ...] = ()  # measured loads of the local file being planned

    def budgets(self, *, with_gpus: bool) -> tuple[DeviceBudget, ...]:
        out = [
            DeviceBudget(
                "cpu" if not self.unified else "pool", self.ram if self.ram is not None else -1, self.ram_basis
            )
        ]
        if with_gpus:
            out += [
                DeviceBudget(f"gpu{i}", b, basis) for i, (b, basis) in enumerate(zip(self.gpu_budgets, self.gpu_bases))
            ]
        return tuple(out)


@dataclass(frozen=True)
class _Request:
    ctx_target: int | None  # None: DEFAULT_CONTEXT capped by the family
    ctx_explicit: bool
    workload: str
    runtime: str | None
    kv_type: str
    onnx_kv_type: str | None = None  # a local ONNX folder's cache type (from its graph)
    onnx_kv_per_token: int | None = None  # ...and its bytes per token


@dataclass(frozen=True)
class _Candidate:
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

    @property
    def fits(self) -> bool:
        return self.tier is not None

    def key(self, workload: str, *, prefer_fast: bool = True) -> tuple:
        fast = (
            not prefer_fast
            or workload != "interactive"
            or self.tokens_per_s is None
            or self.tokens_per_s >= INTERACTIVE_MIN_TOKENS_PER_S
        )
        return (
            -(self.tier if self.tier is not None else 99),
            fast,
            not self.demoted,
            round(self.variant.quality, 1),
            -self.variant.size,
        )


def _machine(
    hw: Hardware, *, runtime: str, headroom: int, calibration: Calibration | None = None, threads: int | None = None
) -> _Machine:
    mem = hw.memory
    notes: list[str] = []
    usable = mem.usable if mem.usable is not None else mem.limit
    if usable is None:
        ram, basis = None, "system memory unknown"
        notes.append("could not learn how much memory is free; the plan assumes it is enough")
    else:
        ram = max(0, int(usable * RAM_FRACTION) - headroom)
        src = (
            "cgroup headroom"
            if (mem.cgroup_headroom is not None and mem.cgroup_headroom == usable)
            else ("available RAM" if mem.usable is not None else "RAM limit")
        )
        basis = f"{RAM_FRACTION:.0%} of {_gb(usable)} {src}"
        if mem.cgroup_limit is not None:
            basis += f", cgroup limit {_gb(mem.cgroup_limit)}"
        if headroom:
            basis += f", minus {_gb(headroom)} headroom"
    llama = hw.runtime("llama.cpp")
    gpus: list[GPUInfo] = []
    if runtime == "llama.cpp" and llama is not None and llama.gpu_offload is False and hw.gpus:
        notes.append("llama.cpp here is built without GPU offload: the GPU is not used")
    elif runtime == "llama.cpp":
        gpus = [g for g in hw.gpus if _gpu_memory(g, hw) and _backend(g)]
    provider, provider_why = None, ""
    if runtime == "onnxruntime":
        provider, provider_why, gpus, onnx_notes = _onnx_machine(hw)
        notes += onnx_notes
    unified = bool(gpus) and all(g.unified for g in gpus)
    budgets, bases = [], []
    for g in gpus:
        raw = _gpu_memory(g, hw)
        margin = GPU_MARGIN.get(_backend(g) or "", GPU_MARGIN_DEFAULT)
        budgets.append(max(0, raw - margin))
        what = "working-set budget" if g.budget is not None else ("free" if g.memory_free is not None else "total")
        bases.append(f"{_gb(raw)} {what} on {g.name} minus {_gb(margin)} margin")
    repack, amx_usable, repack_basis = _repack(hw, calibration) if runtime == "llama.cpp" else (frozenset(), True, "")
    if threads is not None:
        decode, batch, t_basis = threads, threads, "as asked"
    else:
        decode = batch = _threads(hw)
        t_basis = _threads_basis(hw)
    return _Machine(
        hw=hw,
        ram=ram,
        ram_basis=basis,
        gpus=tuple(gpus),
        gpu_budgets=tuple(budgets),
        gpu_bases=tuple(bases),
        unified=unified,
        threads=decode,
        notes=tuple(notes),
        calibration=calibration,
        threads_explicit=threads is not None,
        batch_threads=batch,
        threads_basis=t_basis,
        provider=provider,
        provider_why=provider_why,
        repack=repack,
        amx_usable=amx_usable,
        repack_basis=repack_basis,
    )


def _repack(hw: Hardware, calibration: Calibration | None) -> tuple[frozenset[str], bool, str]:
    """(CPU backend features that make ggml repack weights, AMX usable, the basis in words).

    From the installed llama.cpp build's own feature list when the probe read it, else from
    the CPU's flags (what a native or all-variants build picks). LOCALLLM_LLAMA_EXTRA_BUFFERS=0
    turns repacking off, as it does in the engine; an AMX build whose one-off trial failed on
    this machine runs with it off too (runtimes.llamacpp.use_extra_buffers).
    """
    setting = os.environ.get(EXTRA_BUFFERS_ENV, "").strip()
    if setting == "0":
        return frozenset(), False, f"weight repacking off ({EXTRA_BUFFERS_ENV}=0)"
    llama = hw.runtime("llama.cpp")
    if llama is not None and llama.cpu_features:
        feats, src = frozenset(llama.cpu_features), "the installed llama.cpp build"
    else:
        feats, src = features_from_cpu_flags(hw.cpu.flags, hw.cpu.arch), "this CPU's features"
    amx_usable = True
    if "AMX_INT8" in feats and setting != "1":
        verdict = calibration.extra_buffers if calibration is not None else None
        if verdict is not None and not verdict.ok:
            return frozenset(), False, f"weight repacking off: AMX kernels failed their trial here ({verdict.detail})"
        amx_usable = verdict is None or verdict.ok
    types, _, amx = repack_rule(feats, amx_usable=amx_usable)
    if not types and not amx:  # extra buffers stay on (a load record says so), nothing to repack
        return feats, amx_usable, f"no weight repacking on {src}"
    return (
        feats,
        amx_usable,
        (
            f"ggml repacks {', '.join(sorted(types | amx))} weights on {src}: "
            "the copy is resident beside the mapped file"
        ),
    )


def _gpu_memory(g: GPUInfo, hw: Hardware) -> int | None:
    if g.usable_memory is not None:
        return g.usable_memory
    if g.vendor == "apple" and hw.memory.total:
        return int(hw.memory.total * APPLE_WORKING_SET_FRACTION)
    return None


def _backend(g: GPUInfo) -> str | None:
    if g.backend:
        return g.backend
    return {"nvidia": "cuda", "apple": "metal", "amd": "rocm"}.get(g.vendor)


def _threads(hw: Hardware) -> int:
    cpu = hw.cpu
    n = cpu.physical_cores
    if not n and cpu.logical_cores:
        n = max(1, cpu.logical_cores // 2) if cpu.logical_cores > 1 else 1
    n = n or DEFAULT_THREADS
    if cpu.quota_cores is not None:
        n = min(n, max(1, int(cpu.quota_cores)))
    return n


# -- one variant ----------------------------------------------------------------------------------


def _contexts(family: Family, req: _Request) -> list[int]:
    """Context sizes to try, largest first: the target, halved down to the floor.

    Every size is at least 1 whatever the family says (a header's context_length of 0 once
    made this loop forever), so the halving ends after at most log2(target) steps.
    """
    target = req.ctx_target or DEFAULT_CONTEXT
    target = min(target, family.n_ctx_train) if not req.ctx_explicit else target
    target = max(1, int(target))
    floor = target if req.ctx_explicit else max(1, min(target, CONTEXT_FLOOR))
    out = [target]
    c = target
    while c // 2 >= floor:
        c //= 2
        out.append(c)
    if out[-1] != floor:
        out.append(floor)
    return out


def _check(est: MemoryEstimate, m: _Machine) -> tuple[bool, str, int, int | None]:
    """(fits, the binding constraint in words, needed, available) for one estimate."""
    gpu_devs = [d for d in est.devices if d.device != "cpu"]
    for d in gpu_devs:
        i = int(d.device[3:])
        if d.total > m.gpu_budgets[i]:
            return (
                False,
                (f"needs {_gb(d.total)} on {d.device} ({m.gpus[i].name}), {_gb(m.gpu_budgets[i])} usable there"),
                d.total,
                m.gpu_budgets[i],
            )
    if m.unified and gpu_devs:
        need = est.total
        if m.ram is not None and need > m.ram:
            return False, f"needs {_gb(need)} of unified memory, {_gb(m.ram)} usable", need, m.ram
        return True, "", need, m.ram
    host = est.host.total
    if m.ram is not None and host > m.ram:
        return False, f"needs {_gb(host)} of RAM, {_gb(m.ram)} usable ({m.ram_basis})", host, m.ram
    avail = None if m.ram is None else m.ram + sum(m.gpu_budgets[int(d.device[3:])] for d in gpu_devs)
    return True, "", est.total, avail


def _assess(v: Variant, m: _Machine, req: _Request) -> _Candidate:
    if v.format == "onnx":
        return _assess_onnx(v, m, req)
    f = v.family
    ctxs = _contexts(f, req)
    kv = req.kv_type
    L = f.n_layer
    shares = tuple(float(b) for b in m.gpu_budgets) or (1.0,)
    backend = _backend(m.gpus[0]) if m.gpus else None
    fa_gpu = backend in _FLASH_ATTN_BACKENDS or kv != "f16"
    # Flash attention on the CPU too: llama.cpp's own default (flash_attn_type AUTO turns it on
    # for CPU), needed for a quantized V cache, and it keeps the n_head x n_ctx x n_ubatch
    # attention scores out of memory, so long contexts cost only their KV cache
    # (benchmarks/estimator_accuracy.py; decode was no slower with it here).
    fa_cpu = True
    rp = {"repack_features": m.repack, "amx_usable": m.amx_usable}

    def estimate(*args, **kwargs):  # the estimator's figure, corrected by a measured load of this file
        return _measured(_estimate(*args, **kwargs, **rp), v, m, rp)

    def cand(tier, est, ctx, why, need, avail):
        tps, basis = _speed(v, est, m)
        return _Candidate(v, tier, est, ctx, tps, basis, why, need, avail)

    first_fail = None
    if m.gpus and v.format == "gguf":
        for i, ctx in enumerate(ctxs):
            est = estimate(
                v, n_ctx=ctx, n_gpu_layers=L + 1, kv_type=kv, flash_attn=fa_gpu, gpu_shares=shares, gpu_backend=backend
            )
            ok, why, need, avail = _check(est, m)
            if ok:
                return cand(
                    _GPU if i == 0 else _GPU_SHRUNK,
                    est,
                    ctx,
                    "fits fully on the GPU" + ("" if i == 0 else f" with the context shrunk to {ctx}"),
                    need,
                    avail,
                )
            first_fail = first_fail or (why, need, avail)
        ctx = ctxs[0]
        for ngl in range(L, 0, -1):
            est = estimate(
                v, n_ctx=ctx, n_gpu_layers=ngl, kv_type=kv, flash_attn=fa_gpu, gpu_shares=shares, gpu_backend=backend
            )
            ok, _, need, avail = _check(est, m)
            if ok:
                return cand(
                    _PARTIAL, est, ctx, f"{ngl} of {L} layers fit on the GPU ({first_fail[0]} for all)", need, avail
                )
    last = None
    for i, ctx in enumerate(ctxs):
        est = estimate(v, n_ctx=ctx, n_gpu_layers=0, kv_type=kv, flash_attn=fa_cpu)
        ok, why, need, avail = _check(est, m)
        if ok:
            gpu_note = f" ({first_fail[0]} to run on the GPU)" if first_fail else ""
            return cand(
                _CPU if i == 0 else _CPU_SHRUNK,
                est,
                ctx,
                "fits in RAM" + ("" if i == 0 else f" with the context shrunk to {ctx}") + gpu_note,
                need,
                avail,
            )
        last = (est, ctx, why, need, avail)
    est, ctx, why, need, avail = last
    return cand(None, est, ctx, why, need, avail)


def _measured(est: MemoryEstimate, v: Variant, m: _Machine, rp: dict[str, Any]) -> MemoryEstimate:
    """`est` with the host figure moved by what the newest measured load of the same file at the
    same placement (but for the context) was off the estimate for that load."""
    r = _load_for(est, v, m)
    if r is None:
        return est
    then = _estimate(
        v,
        n_ctx=r.n_ctx,
        n_gpu_layers=est.n_gpu_layers,
        kv_type=r.kv_type,
        flash_attn=r.flash_attn,
        gpu_shares=(1.0,),
        **rp,
    )
    # the load's growth excludes the interpreter and libraries (HOST_RUNTIME_OVERHEAD)
    correction = r.resident_bytes - (then.host.total - HOST_RUNTIME_OVERHEAD)
    devices = tuple(_replace(d, measured=correction) if d.device == "cpu" else d for d in est.devices)
    return _replace(est, devices=devices)


def _load_for(est: MemoryEstimate, v: Variant, m: _Machine) -> LoadRecord | None:
    """The newest measured load of the planned file at `est`'s placement (any context)."""
    ngl = -1 if est.n_gpu_layers > v.family.n_layer else est.n_gpu_layers  # the Placement's spelling
    found = [
        r
        for r in m.loads
        if (r.n_gpu_layers, r.kv_type, r.flash_attn, r.extra_buffers)
        == (ngl, est.kv_type, est.flash_attn, bool(m.repack))
    ]
    return max(found, key=lambda r: r.date) if found else None


def _speed(v: Variant, est: MemoryEstimate, m: _Machine, threads: int | None = None) -> tuple[float | None, str]:
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
        m.calibration.lookup(v.family, v.size, n_threads=threads, n_gpu_layers=_ngl_key(est, v))
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
    return tps, basis


def _ngl_key(est: MemoryEstimate, v: Variant) -> int:
    """n_gpu_layers as a Placement (and a bench record) holds it: -1 for everything."""
    return -1 if est.n_gpu_layers > v.family.n_layer else est.n_gpu_layers


# Leave the default thread count only for a measured gain above this factor: one bench round
# on a 2-core machine spreads 5-10 % (estimator_accuracy.py's thread sweep picked 3 threads
# over 2 on a 2 % difference and then ran at 0.91 of the best).
THREAD_SWITCH_MARGIN = 1.10


def _measured_threads(c: _Candidate, m: _Machine) -> tuple[int, float, str] | None:
    """(threads, tokens/s, basis) when bench measured this model at two or more thread
    counts here and another count than the default decoded faster."""
    if m.calibration is None or m.threads_explicit:
        return None
    v = c.variant
    key = _ngl_key(c.est, v)
    sig_records = [r for r in m.calibration.bench if r.matches(_signature(v), v.size, n_gpu_layers=key)]
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


def _signature(v: Variant) -> str:
    from localllm.calibration import model_signature

    return model_signature(v.family)


def _placement(c: _Candidate, m: _Machine, req: _Request, runtime: str) -> Placement:
    L = c.variant.family.n_layer
    ngl = c.est.n_gpu_layers
    tensor_split: tuple[float, ...] = ()
    if ngl and len(m.gpus) > 1:
        total = sum(m.gpu_budgets) or 1
        tensor_split = tuple(round(b / total, 4) for b in m.gpu_budgets)
    provider = kv = None
    if runtime == "onnxruntime":
        provider, kv = c.provider or m.provider or _ONNX_CPU, c.est.kv_type
    return Placement(
        runtime=runtime,
        n_ctx=c.n_ctx,
        n_gpu_layers=-1 if ngl > L else ngl,
        n_threads=m.threads,
        n_threads_batch=max(m.threads, m.batch_threads),
        n_batch=512,
        n_ubatch=512,
        flash_attn=c.est.flash_attn,
        kv_type=kv or req.kv_type,
        use_mmap=True,
        main_gpu=0,
        tensor_split=tensor_split,
        provider=provider,
    )


# -- the public functions -------------------------------------------------------------------------


def plan(
    model: str | Family | Variant = "auto",
    *,
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    runtime: str | None = None,
    kv_type: str | None = None,
    headroom: int | None = None,
    catalog: Catalog | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
) -> Plan:
    """Choose what to run and where.

    Args:
        model: "auto", a catalog name ("family" or "family:quant"), a Family or a Variant.
        hardware: the machine; None probes this one.
        context: minimum context in tokens; None aims for DEFAULT_CONTEXT and may shrink
            toward CONTEXT_FLOOR.
        workload: "interactive" (real-time) or "batch".
        runtime: "llama.cpp" or "onnxruntime" ("onnx"); None weighs both: llama.cpp unless
            ONNX Runtime has a better place for the model (a GPU llama.cpp cannot use).
        kv_type: KV cache type for llama.cpp, "f16" (default), "q8_0" or "q4_0" (an ONNX
            export fixes its own, f16 or f32).
        headroom: bytes of RAM to leave free beyond the planner's own margin.
        catalog: the catalog; None loads the bundled one.
        calibration: measured figures (localllm.calibration); None reads this machine's
            kept figures when `hardware` is a live probe (not a profile). Measured decode
            speeds are preferred to the bandwidth formula.
        threads: CPU threads; None chooses (cores, or what bench measured fastest).

    Returns a Plan; for a named model that does not fit, `fits` is False (the caller
    decides). Raises:
        NoFittingVariantError: "auto" and nothing in the catalog fits.
        ModelNotFoundError: unknown model, quant or runtime choice.
    """
    catalog = catalog or load_catalog()
    runtime = _runtime_name(runtime)
    auto = isinstance(model, str) and model.strip().lower() == "auto"
    found = None if auto else (catalog.find(model) if isinstance(model, str) else model)
    if isinstance(found, Variant):
        if runtime is not None and runtime != _runtime_for(found):
            raise ModelNotFoundError(
                f"{found.name} is a {found.format} file, which {runtime} does not run; "
                f"use runtime {_runtime_for(found)!r}",
                name=found.name,
            )
        pools = {_runtime_for(found): [found]}
    else:
        # the packaged starter is a fallback load() takes when nothing can be fetched, not a
        # candidate "auto" weighs (else nothing would ever fail to fit)
        every = [v for v in catalog.variants if not v.packaged] if auto else catalog.variants_of(found)
        pools = {rt: [v for v in every if _runtime_for(v) == rt] for rt in ((runtime,) if runtime else RUNTIMES)}
        if runtime is None and kv_type is not None:  # a KV type is a llama.cpp option
            pools.pop("onnxruntime")
        pools = {rt: pool for rt, pool in pools.items() if pool} or pools
        if not any(pools.values()):
            what = "the catalog" if auto else found.name
            raise ModelNotFoundError(
                f"{what} has no variants for runtime {runtime!r}", name=None if auto else found.name
            )
    if hardware is None:
        hardware = _probe()
        if "onnxruntime" in pools and (runtime == "onnxruntime" or _onnx_may_accelerate(hardware)):
            hardware = _probe(runtimes=True)  # which execution providers this onnxruntime has
    calibration = _calibration(hardware, calibration)
    plans: dict[str, Plan | NoFittingVariantError] = {}
    for rt, pool in pools.items():
        req, m, _ = _prepare(
            hardware,
            context=context,
            workload=workload,
            runtime=rt,
            kv_type=kv_type,
            headroom=headroom,
            calibration=calibration,
            threads=threads,
        )
        try:
            plans[rt] = _choose(pool, m, req, rt, auto=auto, catalog=catalog)
        except NoFittingVariantError as exc:
            if len(pools) == 1:
                raise
            plans[rt] = exc
    if len(plans) == 1:
        return next(iter(plans.values()))
    return _pick_runtime(plans)


def plan_local(
    family: Family,
    *,
    weight_bytes: int,
    path: str | None = None,
    quant: str = "local",
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    runtime: str | None = None,
    kv_type: str | None = None,
    headroom: int | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
    weights: tuple = (),
) -> Plan:
    """Plan a local GGUF file: `family` from its header (catalog.family_from_gguf_metadata),
    `weight_bytes` its exact tensor bytes, `weights` its tensor table (quantmix.gguf_weights:
    which weights the CPU backend repacks). `calibration` and `threads` as for `plan`; a
    measured load of the same file (calibration.LoadRecord) corrects the memory estimate.
    (A local ONNX folder: `plan_local_onnx`.)"""
    variant = local_variant(family, weight_bytes=weight_bytes, path=path, quant=quant, weights=weights)
    hardware = hardware if hardware is not None else _probe()
    calibration = _calibration(hardware, calibration)
    req, m, runtime = _prepare(
        hardware,
        context=context,
        workload=workload,
        runtime=runtime,
        kv_type=kv_type,
        headroom=headroom,
        calibration=calibration,
        threads=threads,
    )
    if path is not None and calibration is not None and calibration.loads:
        m = _replace(m, loads=_loads_of(path, calibration))
    return _choose([variant], m, req, runtime, auto=False, catalog=None)


def _loads_of(path: str, calibration: Calibration) -> tuple[LoadRecord, ...]:
    """The measured loads of this very file (same path, size and modification time)."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    where = os.path.abspath(path)
    return tuple(r for r in calibration.loads if r.same_file(where, st.st_size, st.st_mtime_ns))


def fit_table(
    hardware: Hardware | None = None,
    *,
    catalog: Catalog | None = None,
    context: int | None = None,
    workload: str = "interactive",
    kv_type: str | None = None,
    headroom: int | None = None,
) -> tuple[VariantFit, ...]:
    """Every catalog variant with where it would run here (the `localllm models --fits` table)."""
    catalog = catalog or load_catalog()
    hardware = hardware if hardware is not None else _probe()
    calibration = _calibration(hardware, None)
    rows = []
    for v in catalog.variants:
        req, m, runtime = _prepare(
            hardware,
            context=context,
            workload=workload,
            runtime=_runtime_for(v),
            kv_type=kv_type,
            headroom=headroom,
            calibration=calibration,
        )
        c = _assess(v, m, req)
        rows.append(
            VariantFit(
                variant=v,
                where=_TIER_WHERE.get(c.tier, "none"),
                fits=c.fits,
                needed=c.needed,
                available=c.available,
                n_ctx=c.n_ctx,
                n_gpu_layers=c.est.n_gpu_layers,
                tokens_per_s=c.tokens_per_s,
                why=c.why,
            )
        )
    return tuple(rows)


def _probe(*, runtimes: bool = False) -> Hardware:
    from localllm.hardware.detect import probe

    return probe(runtimes=runtimes)


def _calibration(hw: Hardware, given: Calibration | None) -> Calibration | None:
    """The measured figures to plan with: those given, else this machine's kept ones for a
    live probe (a profile describes another machine)."""
    if given is not None or hw.name is not None:
        return given
    from localllm.calibration import load_calibration

    return load_calibration(hw)


def _runtime_for(v: Variant) -> str:
    return "onnxruntime" if v.format == "onnx" else "llama.cpp"


def _prepare(hw: Hardware, *, context, workload, runtime, kv_type, headroom, calibration=None, threads=None):
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    kv = kv_type or "f16"
    runtime = _runtime_name(runtime)
    if runtime == "onnxruntime" and kv_type is not None:
        raise ValueError(
            f"kv_type {kv_type!r} is a llama.cpp option: an ONNX export fixes its KV-cache type "
            "(f16 or f32) in its graph; leave kv_type unset for onnxruntime"
        )
    if kv not in KV_TYPES:
        raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
    if context is not None and (not isinstance(context, int) or context < 16):
        raise ValueError(f"context must be a whole number of tokens >= 16, got {context!r}")
    if headroom is not None and headroom < 0:
        raise ValueError(f"headroom must be >= 0 bytes, got {headroom!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
    runtime = runtime or "llama.cpp"
    req = _Request(ctx_target=context, ctx_explicit=context is not None, workload=workload, runtime=runtime, kv_type=kv)
    return req, _machine(hw, runtime=runtime, headroom=headroom or 0, calibration=calibration, threads=threads), runtime


def _choose(
    pool: list[Variant], m: _Machine, req: _Request, runtime: str, *, auto: bool, catalog: Catalog | None
) -> Plan:
    cands = [_assess(v, m, req) for v in pool]
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
    best = max(fitting, key=lambda c: c.key(req.workload, prefer_fast=auto))
    reasons = [
        _tier_reason(best, m),
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
    if req.workload == "batch" and best.tier in (_CPU, _CPU_SHRUNK):
        warnings.append(
            "batch work on the CPU only: it belongs on a GPU or accelerator; expect it to be slow"
            " and to keep the CPU busy"
        )
    if req.ctx_explicit and req.ctx_target > best.variant.family.n_ctx_train:
        warnings.append(
            f"context {req.ctx_target} is beyond the {best.variant.family.n_ctx_train} tokens "
            f"{best.variant.family.name} was trained on: quality may drop"
        )
    rejected = _rejected_for_fit(best, cands, req)
    return _make_plan(best, m, req, runtime, fits=True, reasons=reasons, rejected=rejected, warnings=warnings)


def _tier_reason(c: _Candidate, m: _Machine) -> str:
    if c.tier in (_CPU, _CPU_SHRUNK) and not m.gpus:
        return f"{c.why}; no usable GPU here, and interactive work may run on a CPU that holds it comfortably"
    return c.why


def _penalty_note(v: Variant) -> str:
    if v.quality_penalty:
        return f"; {v.quant} costs +{v.quality_penalty:g} perplexity per llama.cpp"
    return ""


def _rejected_for_fit(best: _Candidate, cands: list[_Candidate], req: _Request) -> tuple[Rejected, ...]:
    """The nearest better-quality alternatives and why they lost."""
    out = []
    better = sorted(
        (c for c in cands if c is not best and round(c.variant.quality, 1) >= round(best.variant.quality, 1)),
        key=lambda c: c.variant.quality,
    )
    for c in better:
        if not c.fits:
            out.append(Rejected(c.variant.name, f"does not fit: {c.why}", c.needed, c.available))
        elif c.demoted and not best.demoted:
            out.append(
                Rejected(
                    c.variant.name,
                    f"fits, but an fp16 graph on {c.provider}: ONNX Runtime's CPU "
                    "kernels are float32, so it runs through casts",
                    c.needed,
                    c.available,
                )
            )
        elif c.tier > best.tier:
            out.append(
                Rejected(
                    c.variant.name,
                    f"a later resort: {c.why}, while {best.variant.name} {best.why}",
                    c.needed,
                    c.available,
                )
            )
        elif round(c.variant.quality, 1) == round(best.variant.quality, 1):
            out.append(
                Rejected(
                    c.variant.name,
                    f"fits, but no better in quality and larger ({_gb(c.variant.size)} vs {_gb(best.variant.size)})",
                    c.needed,
                    c.available,
                )
            )
        else:
            out.append(
                Rejected(
                    c.variant.name,
                    f"predicted {c.tokens_per_s or 0:.1f} tokens/s, below "
                    f"{INTERACTIVE_MIN_TOKENS_PER_S:g} for interactive work",
                    c.needed,
                    c.available,
                )
            )
        if len(out) >= MAX_REJECTED:
            break
    return tuple(out)


def _rejected_for_unfit(
    chosen: _Candidate, cands: list[_Candidate], m: _Machine, req: _Request, catalog: Catalog | None
) -> tuple[Rejected, ...]:
    """For a plan that does not fit: the other variants of the family that would."""
    out = [Rejected(c.variant.name, f"does not fit: {c.why}", c.needed, c.available) for c in cands if c is not chosen]
    if catalog is not None:
        others = [
            _assess(v, m, req)
            for v in catalog.variants_of(chosen.variant.family)
            if v.name != chosen.variant.name and all(v.name != c.variant.name for c in cands)
        ]
        out = [Rejected(c.variant.name, f"would fit: {c.why}", c.needed, c.available) for c in others if c.fits] + out
    return tuple(out[:MAX_REJECTED])


def _make_plan(
    c: _Candidate,
    m: _Machine,
    req: _Request,
    runtime: str,
    *,
    fits: bool,
    reasons: list[str],
    rejected: tuple[Rejected, ...],
    warnings: list[str],
) -> Plan:
    measured = _measured_threads(c, m) if fits else None
    if measured is not None:  # bench found another thread count faster on this machine
        n, tps, basis = measured
        m = _replace(m, threads=n)
        c = _replace(c, tokens_per_s=tps, basis=basis)
    placement = _placement(c, m, req, runtime)
    where = _TIER_WHERE.get(c.tier, "cpu")
    reasons = list(reasons)
    if measured is not None:
        reasons.append(f"{placement.n_threads} threads: fastest measured here ({measured[2]})")
    else:
        reasons.append(f"{placement.n_threads} threads: {m.threads_basis}")
    if placement.provider:
        reasons.append(_provider_reason(placement.provider, m))
    if runtime == "llama.cpp" and c.est.host.repacked:
        reasons.append(f"memory: {m.repack_basis}")
    r = _load_for(c.est, c.variant, m) if c.est.host.measured else None
    if r is not None:
        reasons.append(
            f"memory: measured at the last load of this file ({_gb(r.resident_bytes)} resident at "
            f"n_ctx {r.n_ctx}, {r.date}): the estimate is corrected by {c.est.host.measured / 2**20:+.0f} MiB"
        )
    if c.n_ctx != (req.ctx_target or DEFAULT_CONTEXT):
        if not req.ctx_explicit and c.n_ctx == c.variant.family.n_ctx_train:
            reasons.append(f"context {c.n_ctx}: all {c.variant.family.name} was trained on")
    return Plan(
        variant=c.variant,
        placement=placement,
        fits=fits,
        where=where,
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
    )


def _threads_basis(hw: Hardware) -> str:
    cpu = hw.cpu
    parts = [
        f"{cpu.physical_cores} physical cores"
        if cpu.physical_cores
        else (f"{cpu.logical_cores} logical cores / 2" if cpu.logical_cores else f"default {DEFAULT_THREADS}")
    ]
    if cpu.quota_cores is not None:
        parts.append(f"capped by the cgroup CPU quota of {cpu.quota_cores:g}")
    return ", ".join(parts)


def _gb(n: int | None) -> str:
    if n is None:
        return "?"
    if abs(n) >= 10**9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.0f} MB"


# -- ONNX Runtime ---------------------------------------------------------------------------------

_ONNX_CPU = "CPUExecutionProvider"
# Which GPUs each execution provider drives (onnxruntime.ai/docs/execution-providers).
_ONNX_GPU_VENDORS = {
    "CUDAExecutionProvider": ("nvidia",),
    "TensorrtExecutionProvider": ("nvidia",),
    "ROCMExecutionProvider": ("amd",),
    "MIGraphXExecutionProvider": ("amd",),
    "CoreMLExecutionProvider": ("apple",),
    "DmlExecutionProvider": ("nvidia", "amd", "intel", "apple"),
}
# What `pip install onnxruntime` brings per OS when the runtime was not probed: the macOS
# wheels are built with CoreML, the others with the CPU provider only (onnxruntime.ai, install).
_DEFAULT_PROVIDERS = {"darwin": ("CoreMLExecutionProvider", "CPUExecutionProvider")}
_WHERE_RANK = {"gpu": 0, "partial": 1, "cpu": 2}
_WHERE_WORDS = {"gpu": "fully on the GPU", "partial": "split between GPU and CPU", "cpu": "on the CPU"}


def plan_local_onnx(
    info: Any,
    *,
    path: str | None = None,
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    headroom: int | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
) -> Plan:
    """Plan a local ONNX folder for ONNX Runtime from what `validate_onnx_folder` read.

    `info` is an `OnnxFolderInfo`: weights from `weights_bytes` (the .onnx and its external
    data), KV cache from `kv_bytes_per_token()` (the graph's cache type and shape), the
    rest of the architecture from its config.json. Other arguments as for `plan`.
    """
    family = _family_from_onnx(info)
    variant = Variant(
        family=family, quant="local", size=int(info.weights_bytes), format="onnx", path=path or str(info.model_file)
    )
    hardware = hardware if hardware is not None else _probe(runtimes=True)
    req, m, runtime = _prepare(
        hardware,
        context=context,
        workload=workload,
        runtime="onnxruntime",
        kv_type=None,
        headroom=headroom,
        calibration=_calibration(hardware, calibration),
        threads=threads,
    )
    req = _replace(
        req,
        onnx_kv_type="f16" if info.kv_dtype in ("float16", "bfloat16") else "f32",
        onnx_kv_per_token=info.kv_bytes_per_token(),
    )
    return _choose([variant], m, req, runtime, auto=False, catalog=None)


def _family_from_onnx(info: Any) -> Family:
    """A Family for a local ONNX folder: the graph's facts first, then config.json / genai_config.json."""
    cfg = dict(info.config or {})
    dec = ((info.genai_config or {}).get("model", {}) or {}).get("decoder", {}) or {}
    n_head = int(cfg.get("num_attention_heads") or dec.get("num_attention_heads") or info.n_head_kv or 1)
    n_head_kv = int(info.n_head_kv or cfg.get("num_key_value_heads") or n_head)
    n_embd = int(cfg.get("hidden_size") or dec.get("hidden_size") or 0)
    head_dim = int(info.head_dim or cfg.get("head_dim") or (n_embd // n_head if n_embd else 64))
    n_embd = n_embd or n_head * head_dim
    n_vocab = int(info.n_vocab or cfg.get("vocab_size") or 32000)
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
    name = info.folder.name
    return Family(
        name=name,
        display_name=name,
        arch=str(info.architecture or "onnx"),
        n_layer=int(info.n_layer),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_embd=n_embd,
        n_ctx_train=int(info.context_length or 2048),
        n_vocab=n_vocab,
        n_ff=int(cfg["intermediate_size"]) if cfg.get("intermediate_size") else None,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        sliding_window=int(window) if window else None,
        quality=None,
        quality_source="local folder: no benchmark score",
        chat=info.chat_template is not None,
    )


def _runtime_name(runtime: str | None) -> str | None:
    if runtime is None:
        return None
    name = RUNTIME_ALIASES.get(runtime.strip().lower(), runtime.strip().lower())
    if name not in RUNTIMES:
        raise ModelNotFoundError(
            f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)} (or 'onnx' for onnxruntime)"
        )
    return name


def _onnx_may_accelerate(hw: Hardware) -> bool:
    """True when an ONNX Runtime provider could beat the CPU here (a GPU, an NPU, Apple
    Silicon): only then is the runtime probe (importing onnxruntime) worth it for "auto"."""
    return (
        bool(hw.gpus) or any(a.kind == "npu" for a in hw.accelerators) or (hw.os == "darwin" and hw.cpu.arch == "arm64")
    )


def _onnx_machine(hw: Hardware) -> tuple[str, str, list[GPUInfo], list[str]]:
    """(provider, why, the one GPU it runs on or none, notes) for ONNX Runtime on `hw`."""
    from localllm.providers import choose_provider  # pure; imports no onnxruntime

    info = hw.runtime("onnxruntime")
    if info is not None and info.providers:
        provider, why = choose_provider(hw, info.providers)
    else:  # not probed (a profile): assume the standard PyPI wheel for the OS
        assumed = _DEFAULT_PROVIDERS.get(hw.os, (_ONNX_CPU,))
        provider, why = choose_provider(hw, assumed)
        why += f"; providers assumed ({', '.join(assumed)}): the PyPI onnxruntime wheel for {hw.os}, not probed"
    vendors = _ONNX_GPU_VENDORS.get(provider, ())
    gpus = [g for g in hw.gpus if g.vendor in vendors and _gpu_memory(g, hw)]
    notes = []
    if len(gpus) > 1:
        notes.append(
            f"ONNX Runtime runs a model on one GPU ({gpus[0].name}); it does not split it across the {len(gpus)} here"
        )
    return provider, why, gpus[:1], notes


def _assess_onnx(v: Variant, m: _Machine, req: _Request) -> _Candidate:
    """Where an ONNX export runs: all on the provider's GPU, or all in RAM (ONNX Runtime
    has no partial offload), at the target context or shrunk toward the floor."""
    ctxs = _contexts(v.family, req)
    kv, per_token = req.onnx_kv_type, req.onnx_kv_per_token

    def cand(tier, est, ctx, why, need, avail, provider):
        tps, basis = _speed(v, est, m)
        # ONNX Runtime's CPU kernels are float32: an fp16 graph runs through casts there
        demoted = provider == _ONNX_CPU and est.kv_type == "f16"
        return _Candidate(v, tier, est, ctx, tps, basis, why, need, avail, provider=provider, demoted=demoted)

    first_fail = None
    if m.gpus:
        backend = _backend(m.gpus[0])
        for i, ctx in enumerate(ctxs):
            est = estimate_onnx(
                v, n_ctx=ctx, on_gpu=True, kv_type=kv, gpu_backend=backend, kv_bytes_per_token=per_token
            )
            ok, why, need, avail = _check(est, m)
            if ok:
                return cand(
                    _GPU if i == 0 else _GPU_SHRUNK,
                    est,
                    ctx,
                    f"fits fully on the GPU with {m.provider}"
                    + ("" if i == 0 else f" with the context shrunk to {ctx}"),
                    need,
                    avail,
                    m.provider,
                )
            first_fail = first_fail or (why, need, avail)
    cpu_provider = _ONNX_CPU if m.gpus else (m.provider or _ONNX_CPU)
    last = None
    for i, ctx in enumerate(ctxs):
        est = estimate_onnx(v, n_ctx=ctx, on_gpu=False, kv_type=kv, kv_bytes_per_token=per_token)
        ok, why, need, avail = _check(est, m)
        if ok:
            gpu_note = (
                (
                    f" ({first_fail[0]} to run with {m.provider}, and ONNX Runtime cannot split a model "
                    "between GPU and CPU)"
                )
                if first_fail
                else ""
            )
            return cand(
                _CPU if i == 0 else _CPU_SHRUNK,
                est,
                ctx,
                "fits in RAM" + ("" if i == 0 else f" with the context shrunk to {ctx}") + gpu_note,
                need,
                avail,
                cpu_provider,
            )
        last = (est, ctx, why, need, avail)
    est, ctx, why, need, avail = last
    return cand(None, est, ctx, why, need, avail, cpu_provider)


def _provider_reason(provider: str, m: _Machine) -> str:
    if provider == m.provider:
        return f"ONNX Runtime provider {provider}: {m.provider_why}"
    return (
        f"ONNX Runtime provider {provider}: the model does not fit on the GPU for {m.provider} "
        f"({m.provider_why}), so it runs on the CPU"
    )


def _pick_runtime(plans: dict[str, Plan | NoFittingVariantError]) -> Plan:
    """llama.cpp unless ONNX Runtime fits where llama.cpp does not, or on a better device
    with a provider other than the CPU (a GPU llama.cpp cannot use here)."""
    llama, onnx = plans["llama.cpp"], plans["onnxruntime"]
    if isinstance(llama, NoFittingVariantError) and isinstance(onnx, NoFittingVariantError):
        raise llama
    llama_ok = isinstance(llama, Plan) and llama.fits
    onnx_ok = isinstance(onnx, Plan) and onnx.fits
    use_onnx = onnx_ok and (
        not llama_ok or (_WHERE_RANK[onnx.where] < _WHERE_RANK[llama.where] and onnx.placement.provider != _ONNX_CPU)
    )
    if not isinstance(llama, Plan):
        use_onnx = True
    chosen, other = (onnx, llama) if use_onnx else (llama, onnx)
    if isinstance(other, NoFittingVariantError):
        reason = f"runtime {chosen.runtime}: with the other runtime nothing fits ({other})"
        return _replace(chosen, reasons=(*chosen.reasons, reason))
    if not isinstance(chosen, Plan):  # only llama.cpp planned; ONNX raised and llama did not
        return other
    how = f"{_WHERE_WORDS[other.where]}" + (f" with {other.placement.provider}" if other.placement.provider else "")
    other_fit = "would fit" if other.fits else "does not fit"
    if use_onnx:
        if not llama_ok:
            reason = (
                f"runtime onnxruntime: no llama.cpp variant fits ({other.variant.name} needs "
                f"{_gb(other.needed)}), and {chosen.variant.name} does with ONNX Runtime"
            )
        else:
            reason = (
                f"runtime onnxruntime: {chosen.variant.name} runs {_WHERE_WORDS[chosen.where]} with "
                f"{chosen.placement.provider}, while llama.cpp's best, {other.variant.name}, would run {how}"
            )
        notes = [w for w in other.warnings if "llama.cpp" in w]
        if notes:
            reason += f" ({'; '.join(notes)})"
        why = f"llama.cpp {other_fit} {how}; ONNX Runtime has the better place here"
    else:
        reason = (
            f"runtime llama.cpp: preferred; ONNX Runtime's best, {other.variant.name}, {other_fit} {how}, "
            "no better place than llama.cpp's"
        )
        why = (
            f"ONNX Runtime {other_fit} {how}; llama.cpp is preferred unless ONNX "
            "Runtime reaches a device llama.cpp cannot"
        )
    rejected = (
        Rejected(f"{other.variant.name} ({other.runtime})", why, other.needed, other.available),
        *chosen.rejected[: MAX_REJECTED - 1],
    )
    return _replace(chosen, reasons=(*chosen.reasons, reason), rejected=rejected)
