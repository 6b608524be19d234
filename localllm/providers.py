"""ONNX Runtime execution providers: the facts about each, and the choice for a machine.

Pure: functions take a `Hardware` (a probe or a profile) and provider names and return
values; nothing here imports onnxruntime or probes. The planner and the ONNX engine
(runtimes/onnx.py) both choose through `choose_provider`.

- names: CPU, CUDA, TENSORRT, COREML, DML, OPENVINO, ROCM, MIGRAPHX, QNN
- INSTALL_HINTS: the package that brings each provider
- GPU_VENDORS: which GPUs each provider drives
- DEFAULT_PROVIDERS / assumed_providers: what a plain `pip install onnxruntime` brings per OS
- choose_provider: the provider for a machine and a list of providers, and why
- provider_for: the same for a machine whose onnxruntime may not have been probed
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from localllm.hardware import Hardware

__all__ = [
    "COREML",
    "CPU",
    "CUDA",
    "DEFAULT_PROVIDERS",
    "DML",
    "GPU_VENDORS",
    "INSTALL_HINTS",
    "MIGRAPHX",
    "OPENVINO",
    "QNN",
    "ROCM",
    "TENSORRT",
    "assumed_providers",
    "choose_provider",
    "probed_providers",
    "provider_for",
]

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
COREML = "CoreMLExecutionProvider"
DML = "DmlExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
ROCM = "ROCMExecutionProvider"
MIGRAPHX = "MIGraphXExecutionProvider"
QNN = "QNNExecutionProvider"

# The pip package that brings each provider (onnxruntime.ai/docs/execution-providers).
INSTALL_HINTS = {
    CUDA: "pip install onnxruntime-gpu",
    TENSORRT: "pip install onnxruntime-gpu (and NVIDIA TensorRT)",
    DML: "pip install onnxruntime-directml",
    OPENVINO: "pip install onnxruntime-openvino",
    COREML: "pip install onnxruntime (the macOS wheels include CoreML)",
    ROCM: "install onnxruntime built with ROCm (AMD's onnxruntime-rocm wheels)",
    MIGRAPHX: "install onnxruntime built with MIGraphX (AMD's onnxruntime-rocm wheels)",
    QNN: "pip install onnxruntime-qnn",
}

# Which GPUs each execution provider drives (onnxruntime.ai/docs/execution-providers).
GPU_VENDORS: dict[str, tuple[str, ...]] = {
    CUDA: ("nvidia",),
    TENSORRT: ("nvidia",),
    ROCM: ("amd",),
    MIGRAPHX: ("amd",),
    COREML: ("apple",),
    DML: ("nvidia", "amd", "intel", "apple"),
}

# What `pip install onnxruntime` brings per OS when the runtime was not probed: the macOS
# wheels are built with CoreML, the others with the CPU provider only (onnxruntime.ai, install).
DEFAULT_PROVIDERS: dict[str, tuple[str, ...]] = {"darwin": (COREML, CPU)}


def probed_providers(hardware: Hardware) -> tuple[str, ...]:
    """The providers the probe found in this machine's onnxruntime; () when it was not probed."""
    info = hardware.runtime("onnxruntime")
    return tuple(info.providers) if info is not None and info.providers else ()


def assumed_providers(os_name: str) -> tuple[str, ...]:
    """The providers the standard PyPI onnxruntime wheel brings on `os_name`."""
    return DEFAULT_PROVIDERS.get(os_name, (CPU,))


def choose_provider(hardware: Hardware, available: Sequence[str] | None = None) -> tuple[str, str]:
    """The ONNX Runtime execution provider for this hardware, and why. Pure: no probing.

    Args:
        hardware: a probe result or a profile.
        available: `onnxruntime.get_available_providers()`; None reads the onnxruntime
            entry of `hardware.runtimes`, and assumes CPU only when there is none.

    Order: NVIDIA GPU -> TensorRT, then CUDA; AMD GPU -> MIGraphX, then ROCm; Apple
    Silicon -> CoreML; Windows with a GPU -> DirectML; Intel CPU/GPU/NPU -> OpenVINO;
    Qualcomm NPU -> QNN; otherwise (or when the wheel lacks the provider) CPU.
    """
    avail = tuple(available) if available is not None else (probed_providers(hardware) or (CPU,))
    candidates: list[tuple[str, str]] = []
    gpus = hardware.gpus
    vendors = {g.vendor for g in gpus}
    names = {g.vendor: g.name for g in gpus}
    if "nvidia" in vendors:
        candidates += [
            (TENSORRT, f"NVIDIA GPU ({names['nvidia']}): TensorRT, CUDA as fallback"),
            (CUDA, f"NVIDIA GPU ({names['nvidia']}): CUDA"),
        ]
    if "amd" in vendors:
        candidates += [(MIGRAPHX, f"AMD GPU ({names['amd']}): MIGraphX"), (ROCM, f"AMD GPU ({names['amd']}): ROCm")]
    apple = hardware.os == "darwin" and (hardware.cpu.arch == "arm64" or "apple" in vendors)
    if apple:
        candidates.append((COREML, "Apple Silicon: CoreML (GPU and Neural Engine)"))
    if hardware.os == "windows" and gpus:
        candidates.append((DML, f"Windows with a GPU ({gpus[0].name}): DirectML"))
    cpu_text = f"{hardware.cpu.vendor or ''} {hardware.cpu.brand or ''}".lower()
    npus = [a for a in hardware.accelerators if a.kind == "npu"]
    intel = "intel" in cpu_text or "intel" in vendors or any("intel" in a.name.lower() for a in npus)
    if intel:
        what = "Intel GPU" if "intel" in vendors else "Intel NPU" if npus else "Intel CPU"
        candidates.append((OPENVINO, f"{what}: OpenVINO"))
    if any("qualcomm" in a.name.lower() or "hexagon" in a.name.lower() for a in npus):
        candidates.append((QNN, "Qualcomm NPU: QNN"))
    for provider, why in candidates:
        if provider in avail:
            return provider, f"{why} (available in this onnxruntime)"
    threads = hardware.cpu.physical_cores or hardware.cpu.logical_cores
    cpu_why = f"CPU ({threads} cores)" if threads else "CPU"
    if not candidates:
        return CPU, f"{cpu_why}: no GPU or accelerator that ONNX Runtime can use was found"
    missing = list(dict.fromkeys(p for p, _ in candidates))
    best, why = candidates[0]
    hint = INSTALL_HINTS.get(best, "")
    return CPU, (
        f"{cpu_why}: {why.split(':')[0]} found, but this onnxruntime offers only {', '.join(avail)} "
        f"(not {', '.join(missing)})" + (f"; for it: {hint}" if hint else "")
    )


def provider_for(hardware: Hardware) -> tuple[str, str]:
    """`choose_provider` over the providers the probe found, or, for a machine whose
    onnxruntime was not probed (a profile), over those the PyPI wheel for its OS brings."""
    probed = probed_providers(hardware)
    if probed:
        return choose_provider(hardware, probed)
    assumed = assumed_providers(hardware.os)
    provider, why = choose_provider(hardware, assumed)
    why += f"; providers assumed ({', '.join(assumed)}): the PyPI onnxruntime wheel for {hardware.os}, not probed"
    return provider, why
