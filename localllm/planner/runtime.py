"""Which runtime: the names and aliases, which runtime a variant needs, and the choice
between a llama.cpp plan and an ONNX Runtime plan (`pick_runtime`)."""

from __future__ import annotations

from dataclasses import replace

from localllm.catalog import Variant
from localllm.errors import ModelNotFoundError, NoFittingVariantError
from localllm.hardware import Hardware
from localllm.placement import RUNTIMES, Runtime, Where
from localllm.planner.values import MAX_REJECTED, WHERE_WORDS, Plan, Rejected
from localllm.providers import CPU
from localllm.units import file_size

__all__ = ["RUNTIME_ALIASES", "onnx_may_accelerate", "pick_runtime", "runtime_for", "runtime_name"]

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


def pick_runtime(llama: Plan | NoFittingVariantError, onnx: Plan | NoFittingVariantError) -> Plan:
    """llama.cpp unless ONNX Runtime fits where llama.cpp does not, or on a better device
    with a provider other than the CPU (a GPU llama.cpp cannot use here)."""
    if isinstance(llama, NoFittingVariantError):
        if isinstance(onnx, NoFittingVariantError):
            raise llama
        return _with_reason(onnx, f"runtime {onnx.runtime}: with the other runtime nothing fits ({llama})")
    if isinstance(onnx, NoFittingVariantError):
        return _with_reason(llama, f"runtime {llama.runtime}: with the other runtime nothing fits ({onnx})")
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
        why = (
            f"ONNX Runtime {other_fit} {how}; llama.cpp is preferred unless ONNX "
            "Runtime reaches a device llama.cpp cannot"
        )
    rejected = (
        Rejected(f"{other.variant.name} ({other.runtime})", why, other.needed, other.available),
        *chosen.rejected[: MAX_REJECTED - 1],
    )
    return replace(chosen, reasons=(*chosen.reasons, reason), rejected=rejected)


def _with_reason(p: Plan, reason: str) -> Plan:
    return replace(p, reasons=(*p.reasons, reason))
