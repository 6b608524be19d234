"""Which runtime: the names and aliases, which runtime a variant needs, and the choice
between a llama.cpp plan and an ONNX Runtime plan (`pick_runtime`).

Where `localllm bench --runtimes` measured both plans' variants on this machine, the faster
one that fits wins (by RUNTIME_SWITCH_MARGIN; llama.cpp within it). Without measurements the
rule is place first (a device llama.cpp cannot use), else llama.cpp, because on a CPU the
winner depends on the files as much as on the CPU:

- ONNX Runtime's 4-bit MatMulNBits computes in int8 with VNNI dot products (AVX-512 VNNI,
  AVX-VNNI) only when the export asks for it (accuracy_level 4, onnxruntime-genai's CPU
  default); at level 0 it dequantizes to fp32 and decoded at 0.6x the int8 speed here.
- ggml's K-quant kernels (Q4_K, Q5_K, Q6_K; repacked Q4_K too) have no VNNI path on x86:
  they scale 16-bit products per sub-block before widening. Q4_0 (repacked to Q4_0x8), Q5_0
  and Q8_0 go through helpers that use VNNI where the build has it.
- A K-quant file is often not K-quants: a width that is not a multiple of 256 (Qwen2.5-0.5B's
  896) falls back to Q5_0/Q8_0, and a tied output stays Q8_0, which an int4 export reads at
  about half the bytes.

Measured here (benchmarks/bench_runtimes.py, random weights, 1 thread, 3-5 alternating runs
each, AVX-512 VNNI EPYC shared with other work, load average 2-6): int4 at level 4 over
Q4_K_M decoded 0.92-0.97x (SmolLM2-135M shape) and 1.17-1.27x (Qwen2.5-0.5B shape, whose
"Q4_K_M" is mostly Q5_0 with a Q8_0 output); over Q4_0 0.74x and 0.87-0.90x; level 0 decoded
at about 0.6x level 4. So ONNX Runtime can win against a K-quant GGUF on a VNNI
CPU and loses to Q4_0: a plan on such a CPU says so and how to measure (`onnx_cpu_hint`), and
keeps llama.cpp. What would change the rule: comparisons from CPUs without VNNI and with AMX
(each RuntimeRecord keeps the CPU's kernel flags), and ONNX exports whose accuracy level the
planner can read.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from localllm.catalog import Variant
from localllm.errors import ModelNotFoundError, NoFittingVariantError
from localllm.hardware import Hardware
from localllm.placement import RUNTIMES, Runtime, Where
from localllm.planner.values import MAX_REJECTED, WHERE_WORDS, Plan, Rejected
from localllm.providers import CPU
from localllm.units import file_size

if TYPE_CHECKING:  # pragma: no cover
    from localllm.calibration import Calibration, RuntimeRecord

__all__ = [
    "RUNTIME_ALIASES",
    "RUNTIME_SWITCH_MARGIN",
    "faster_runtime",
    "onnx_cpu_hint",
    "onnx_may_accelerate",
    "pick_runtime",
    "runtime_for",
    "runtime_name",
]

# Leave llama.cpp for ONNX Runtime only when it decoded this much faster in the same
# comparison: both were measured in alternating fresh processes, so a neighbour's load falls on
# both, and the median of three runs each spreads a few percent on a quiet 2-core machine;
# within it llama.cpp stays (its GGUF files carry the chat template, constraints and repacking
# the rest of localllm was built around).
RUNTIME_SWITCH_MARGIN = 1.05

# ONNX exports whose weights are 4-bit (MatMulNBits): where VNNI kernels could make ONNX Runtime faster
_INT4_QUANTS = frozenset({"Q4", "Q4F16", "INT4", "BNB4"})
# GGUF quants made mostly of K-quant blocks, whose x86 kernels multiply by 16-bit sub-block
# scales before widening and so have no VNNI path (Q4_0, Q5_0 and Q8_0 have one)
_K_QUANTS = frozenset({"Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q3_K_S", "Q4_K_S", "Q5_K_S"})

RUNTIME_ALIASES: dict[str, Runtime] = {
    "onnx": "onnxruntime",
    "ort": "onnxruntime",
    "llamacpp": "llama.cpp",
    "llama_cpp": "llama.cpp",
}
# better places first: a runtime that reaches a better one wins
_WHERE_RANK: dict[Where, int] = {"gpu": 0, "partial": 1, "cpu": 2}


def runtime_name(runtime: str | None) -> Runtime | None:
    """The runtime a caller's spelling names (None: not chosen). Raises ModelNotFoundError."""
    if runtime is None:
        return None
    name = RUNTIME_ALIASES.get(runtime.strip().lower(), runtime.strip().lower())
    if name not in RUNTIMES:
        raise ModelNotFoundError(
            f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)} (or 'onnx' for onnxruntime)"
        )
    return name  # narrowed to a Runtime by the check above


def runtime_for(v: Variant) -> Runtime:
    """The runtime that runs a variant's file format."""
    return "onnxruntime" if v.format == "onnx" else "llama.cpp"


def onnx_may_accelerate(hw: Hardware) -> bool:
    """True when an ONNX Runtime provider could beat the CPU here (a GPU, an NPU, Apple
    Silicon): only then is the runtime probe (importing onnxruntime) worth it for "auto"."""
    return (
        bool(hw.gpus) or any(a.kind == "npu" for a in hw.accelerators) or (hw.os == "darwin" and hw.cpu.arch == "arm64")
    )


def onnx_cpu_hint(hw: Hardware) -> str | None:
    """Why ONNX Runtime may decode an int4 export faster than a K-quant GGUF on this CPU, or None:
    the CPU has VNNI dot products (AVX-512 VNNI or AVX-VNNI), which ONNX Runtime's int4 kernels
    with int8 compute use and ggml's K-quant kernels do not (see the module docstring)."""
    flags = {f.lower() for f in hw.cpu.flags}
    have = [name for flag, name in (("avx512_vnni", "AVX-512 VNNI"), ("avx_vnni", "AVX-VNNI")) if flag in flags]
    if not have:
        return None
    return (
        f"this CPU has {' and '.join(have)}, where an int4 ONNX export decoded 0.9-1.3x as fast as a "
        "K-quant GGUF of the same shape in localllm's measurements"
    )


def faster_runtime(llama_tps: float, onnx_tps: float) -> Runtime:
    """The runtime to plan with for two measured decode speeds (llama.cpp within RUNTIME_SWITCH_MARGIN)."""
    return "onnxruntime" if onnx_tps >= RUNTIME_SWITCH_MARGIN * llama_tps > 0 else "llama.cpp"


def pick_runtime(
    llama: Plan | NoFittingVariantError,
    onnx: Plan | NoFittingVariantError,
    calibration: Calibration | None = None,
    hardware: Hardware | None = None,
) -> Plan:
    """The faster runtime where `calibration` holds a comparison of both plans' variants here (and
    it fits); else llama.cpp unless ONNX Runtime fits where llama.cpp does not, or on a better
    device with a provider other than the CPU (a GPU llama.cpp cannot use here). `hardware`
    words the hint to measure where the CPU could favour ONNX Runtime."""
    if isinstance(llama, NoFittingVariantError):
        if isinstance(onnx, NoFittingVariantError):
            raise llama
        return _with_reason(onnx, f"runtime {onnx.runtime}: with the other runtime nothing fits ({llama})")
    if isinstance(onnx, NoFittingVariantError):
        return _with_reason(llama, f"runtime {llama.runtime}: with the other runtime nothing fits ({onnx})")
    pair = calibration.runtime_pair(llama.variant, onnx.variant) if calibration is not None else None
    if pair is not None and llama.fits and onnx.fits and (pair[0].where, pair[1].where) == (llama.where, onnx.where):
        return _by_measurement(llama, onnx, *pair)
    use_onnx = onnx.fits and (
        not llama.fits or (_WHERE_RANK[onnx.where] < _WHERE_RANK[llama.where] and onnx.placement.provider != CPU)
    )
    chosen, other = (onnx, llama) if use_onnx else (llama, onnx)
    how = f"{WHERE_WORDS[other.where]}" + (f" with {other.placement.provider}" if other.placement.provider else "")
    other_fit = "would fit" if other.fits else "does not fit"
    if use_onnx:
        if not llama.fits:
            reason = (
                f"runtime onnxruntime: no llama.cpp variant fits ({other.variant.name} needs "
                f"{file_size(other.needed)}), and {chosen.variant.name} does with ONNX Runtime"
            )
        else:
            reason = (
                f"runtime onnxruntime: {chosen.variant.name} runs {WHERE_WORDS[chosen.where]} with "
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
        hint = _measure_hint(chosen, other, hardware)
        if hint:
            reason += f"; {hint}"
        why = (
            f"ONNX Runtime {other_fit} {how}; llama.cpp is preferred unless ONNX "
            "Runtime reaches a device llama.cpp cannot"
            + ("" if not hint else " or is measured faster here (localllm bench --runtimes)")
        )
    rejected = (
        Rejected(f"{other.variant.name} ({other.runtime})", why, other.needed, other.available),
        *chosen.rejected[: MAX_REJECTED - 1],
    )
    return replace(chosen, reasons=(*chosen.reasons, reason), rejected=rejected)


def _by_measurement(llama: Plan, onnx: Plan, rl: RuntimeRecord, ro: RuntimeRecord) -> Plan:
    """The faster of two fitting plans by a comparison measured here, unless its measured peak
    memory is over the RAM the plan may use."""
    day = ro.session[:10]
    runtime = faster_runtime(rl.decode_tps, ro.decode_tps)
    chosen, other, rc, rother = (onnx, llama, ro, rl) if runtime == "onnxruntime" else (llama, onnx, rl, ro)
    ram = next((b.available for b in chosen.budgets if b.device in ("cpu", "pool") and b.available >= 0), None)
    over = runtime == "onnxruntime" and ram is not None and rc.peak_rss > ram
    if over:  # the faster runtime took more memory than there is now: the other one
        chosen, other, rc, rother = llama, onnx, rl, ro
    measured = (
        f"{rc.runtime}: {rc.decode_tps:.1f} tok/s measured here vs {rother.runtime} {rother.decode_tps:.1f} "
        f"(localllm bench --runtimes, {day})"
    )
    if over:
        reason = (
            f"runtime llama.cpp: ONNX Runtime decoded faster here ({ro.decode_tps:.1f} tok/s vs "
            f"{rl.decode_tps:.1f}, localllm bench --runtimes, {day}) but its measured peak memory, "
            f"{file_size(ro.peak_rss)}, is over the {file_size(ram or 0)} a plan may use now"
        )
    elif runtime == "llama.cpp" and ro.decode_tps > rl.decode_tps:
        reason = f"runtime {measured}: within {RUNTIME_SWITCH_MARGIN - 1:.0%}, so llama.cpp is kept"
    else:
        reason = f"runtime {measured}"
    why = (
        f"measured {rother.decode_tps:.1f} tok/s here with {rother.runtime} vs {rc.decode_tps:.1f} with "
        f"{rc.runtime} (localllm bench --runtimes, {day})"
    )
    if over:
        why = f"{why}; its peak memory {file_size(ro.peak_rss)} is over the {file_size(ram or 0)} usable now"
    rejected = (
        Rejected(f"{other.variant.name} ({other.runtime})", why, other.needed, other.available),
        *chosen.rejected[: MAX_REJECTED - 1],
    )
    plan = replace(chosen, reasons=(*chosen.reasons, reason), rejected=rejected)
    if rc.n_threads == chosen.placement.n_threads and rc.decode_tps > 0:
        basis = (
            f"measured on this machine on {day} by localllm bench --runtimes ({rc.n_threads} threads, "
            f"n_ctx {rc.n_ctx}, median of {rc.runs} runs)"
        )
        plan = replace(plan, tokens_per_s=rc.decode_tps, tokens_per_s_basis=basis)
    return plan


def _measure_hint(llama: Plan, onnx: Plan, hw: Hardware | None) -> str | None:
    """On a CPU where ONNX Runtime's int4 kernels may be faster, and both would run on it: say how to measure."""
    if hw is None or llama.where != "cpu" or onnx.where != "cpu" or not onnx.fits:
        return None
    local = bool(llama.variant.path and onnx.variant.path)
    if not local and llama.variant.family.name != onnx.variant.family.name:
        return None  # "auto" weighed two different models: no one comparison to suggest
    if onnx.variant.quant.upper() not in _INT4_QUANTS and onnx.variant.quant != "local":
        return None
    if llama.variant.quant.upper() not in _K_QUANTS and llama.variant.quant != "local":
        return None  # Q4_0, Q5_0, Q8_0: ggml's kernels for these use VNNI too
    why = onnx_cpu_hint(hw)
    if why is None:
        return None
    # a local pair is measured by its paths, a catalog family by its name
    what = f"{llama.variant.path} {onnx.variant.path}" if local else llama.variant.family.name
    return (
        f"not measured here: {why}, so ONNX Runtime may decode faster; `localllm bench --runtimes {what}` "
        "measures both and later plans take the faster"
    )


def _with_reason(p: Plan, reason: str) -> Plan:
    return replace(p, reasons=(*p.reasons, reason))
