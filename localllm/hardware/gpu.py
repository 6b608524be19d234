"""GPUs and accelerators: NVIDIA through NVML, AMD and Intel through sysfs, Jetson and
Apple Silicon as unified memory, NPUs from /dev.

Each reader returns (items, notes) and never raises. `pynvml` is imported inside
`nvidia_gpus()` only, so tests fake it by putting a module into sys.modules.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from localllm.hardware.facts import Accelerator, GPUInfo
from localllm.hardware.linux import read_text

__all__ = [
    "accelerators",
    "apple_gpu",
    "apple_gpu_budget",
    "jetson_gpu",
    "nvidia_gpus",
    "nvidia_present",
    "sysfs_gpus",
]

# PCI vendor ids
_AMD, _INTEL, _NVIDIA = "0x1002", "0x8086", "0x10de"

# Apple: Metal's recommendedMaxWorkingSetSize, as llama.cpp logs it: 2/3 of RAM up to
# 32 GiB (16 GB -> 10922.67 MiB, llama-cpp-python#687; 32 GB -> 21845.34 MiB, ollama#434),
# 3/4 above (64 GB -> 49152 MiB, llama.cpp#1870; 96 GB -> 73728 MiB, llama.cpp#3213).
APPLE_SMALL_RAM = 32 * 2**30
APPLE_SMALL_FRACTION = 2 / 3
APPLE_LARGE_FRACTION = 3 / 4

# Jetson: the GPU allocates from system RAM; keep what the OS itself needs (JetPack's
# headless Ubuntu idles at roughly 0.8-1 GiB; we keep 1 GiB).
JETSON_OS_RESERVE = 1 * 2**30

# Apple Silicon unified-memory bandwidth, GB/s, from Apple's product pages / newsroom.
# Max chips differ by binning; the lower figure is used where one name covers two.
APPLE_BANDWIDTH_GBS = {
    "Apple M1": 68.25,
    "Apple M1 Pro": 200,
    "Apple M1 Max": 400,
    "Apple M1 Ultra": 800,
    "Apple M2": 100,
    "Apple M2 Pro": 200,
    "Apple M2 Max": 400,
    "Apple M2 Ultra": 800,
    "Apple M3": 100,
    "Apple M3 Pro": 150,
    "Apple M3 Max": 300,
    "Apple M3 Ultra": 819,
    "Apple M4": 120,
    "Apple M4 Pro": 273,
    "Apple M4 Max": 410,
}


def _s(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvidia_present(root: Path = Path("/")) -> bool:
    """Cheap check before loading NVML: the NVIDIA kernel driver is there (or, under WSL2,
    the paravirtual GPU device through which NVML reaches the Windows driver)."""
    return any((root / p).exists() for p in ("proc/driver/nvidia", "dev/nvidiactl", "dev/dxg"))


def nvidia_gpus() -> tuple[list[GPUInfo], list[str]]:
    """NVIDIA GPUs through NVML (the `pynvml` module from nvidia-ml-py)."""
    try:
        import pynvml
    except Exception as exc:  # not installed, or broken
        return [], [f"gpu: NVML unavailable (pynvml not importable: {exc}); NVIDIA GPUs not probed"]
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return [], [f"gpu: NVML could not start ({exc}); NVIDIA GPUs not probed"]
    gpus: list[GPUInfo] = []
    notes: list[str] = []
    try:
        driver = cuda = None
        try:
            driver = _s(pynvml.nvmlSystemGetDriverVersion())
        except Exception as exc:
            notes.append(f"gpu: NVIDIA driver version unknown ({exc})")
        try:
            v = int(pynvml.nvmlSystemGetCudaDriverVersion())
            cuda = f"{v // 1000}.{(v % 1000) // 10}"
        except Exception as exc:
            notes.append(f"gpu: CUDA driver version unknown ({exc})")
        count = int(pynvml.nvmlDeviceGetCount())
        for i in range(count):
            try:
                gpus.append(_nvidia_one(pynvml, i, driver, cuda, notes))
            except Exception as exc:
                notes.append(f"gpu: NVIDIA GPU {i} could not be queried ({exc}); left out")
    except Exception as exc:
        notes.append(f"gpu: NVML query failed ({exc})")
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return gpus, notes


def _nvidia_one(nv, i: int, driver, cuda, notes: list[str]) -> GPUInfo:
    h = nv.nvmlDeviceGetHandleByIndex(i)
    name = _s(nv.nvmlDeviceGetName(h))
    total = free = uuid = cc = bandwidth = None
    try:
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        total, free = int(mem.total), int(mem.free)
    except Exception as exc:
        notes.append(f"gpu: memory of GPU {i} ({name}) unknown: {exc}; it gets no layers")
    with contextlib.suppress(Exception):
        uuid = _s(nv.nvmlDeviceGetUUID(h))
    try:
        major, minor = nv.nvmlDeviceGetCudaComputeCapability(h)
        cc = f"{major}.{minor}"
    except Exception as exc:
        notes.append(f"gpu: compute capability of GPU {i} unknown ({exc})")
    try:
        # peak bandwidth = bus width (bytes) x max memory clock x 2 (double data rate)
        bus_bits = int(nv.nvmlDeviceGetMemoryBusWidth(h))
        mem_mhz = int(nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM))
        bandwidth = round(bus_bits / 8 * mem_mhz * 2 / 1000, 1) or None
    except Exception:
        pass
    return GPUInfo(
        index=i,
        vendor="nvidia",
        name=name,
        memory_total=total,
        memory_free=free,
        backend="cuda",
        compute_capability=cc,
        uuid=uuid,
        driver_version=driver,
        cuda_version=cuda,
        bandwidth_gbs=bandwidth,
    )


def sysfs_gpus(root: Path = Path("/"), *, first_index: int = 0) -> tuple[list[GPUInfo], list[str]]:
    """AMD and Intel GPUs from /sys/class/drm/card*/device (NVIDIA cards are NVML's)."""
    base = root / "sys/class/drm"
    try:
        cards = sorted(
            (n for n in os.listdir(base) if n.startswith("card") and n[4:].isdigit()), key=lambda n: int(n[4:])
        )
    except OSError:
        return [], []
    gpus: list[GPUInfo] = []
    notes: list[str] = []
    for card in cards:
        dev = base / card / "device"
        vendor = (read_text(dev / "vendor") or "").strip().lower()
        if vendor not in (_AMD, _INTEL):
            continue
        device_id = (read_text(dev / "device") or "").strip().lower()
        name = (read_text(dev / "product_name") or "").strip()
        total = _int(dev / "mem_info_vram_total")
        used = _int(dev / "mem_info_vram_used")
        if vendor == _INTEL:
            total = total or _int(dev / "lmem_total_bytes")
            if total is None:
                notes.append(f"gpu: Intel GPU {device_id} at {card}: memory not exposed in sysfs; not listed")
                continue
        vname = "AMD" if vendor == _AMD else "Intel"
        if total is None:
            notes.append(f"gpu: {vname} GPU {device_id} at {card}: VRAM size unreadable; not listed")
            continue
        backend = ("rocm" if (root / "dev/kfd").exists() else "vulkan") if vendor == _AMD else "sycl"
        gpus.append(
            GPUInfo(
                index=first_index + len(gpus),
                vendor=vname.lower(),
                name=name or f"{vname} GPU {device_id}",
                memory_total=total,
                memory_free=(total - used) if used is not None else None,
                backend=backend,
            )
        )
    return gpus, notes


def _int(path: Path) -> int | None:
    text = read_text(path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def jetson_gpu(
    root: Path, *, ram_total: int | None, ram_available: int | None, index: int = 0
) -> tuple[list[GPUInfo], list[str]]:
    """NVIDIA Jetson: an integrated GPU on system RAM, announced by /etc/nv_tegra_release."""
    release = read_text(root / "etc/nv_tegra_release")
    if release is None:
        return [], []
    model = (read_text(root / "proc/device-tree/model") or "NVIDIA Jetson").strip("\x00 \n")
    budget = basis = None
    if ram_available is not None:
        budget = ram_available
        basis = "Jetson: GPU shares system RAM; budget = MemAvailable at probe time"
    elif ram_total is not None:
        budget = max(0, ram_total - JETSON_OS_RESERVE)
        basis = "Jetson: GPU shares system RAM; budget = RAM minus 1 GiB for the OS"
    first = release.splitlines()[0].strip() if release.strip() else ""
    notes = [f"gpu: Jetson detected ({first})"] if first else []
    return [
        GPUInfo(
            index=index,
            vendor="nvidia",
            name=model,
            memory_total=ram_total,
            memory_free=ram_available,
            unified=True,
            budget=budget,
            budget_basis=basis,
            backend="cuda",
        )
    ], notes


def apple_gpu_budget(ram_total: int) -> tuple[int, str]:
    """Metal's recommendedMaxWorkingSetSize as a fraction of RAM, and the basis used."""
    if ram_total <= APPLE_SMALL_RAM:
        return int(ram_total * APPLE_SMALL_FRACTION), ("Metal recommendedMaxWorkingSetSize: 2/3 of RAM at <= 32 GiB")
    return int(ram_total * APPLE_LARGE_FRACTION), ("Metal recommendedMaxWorkingSetSize: 3/4 of RAM above 32 GiB")


def apple_gpu(brand: str | None, *, ram_total: int | None) -> GPUInfo:
    budget = basis = None
    if ram_total:
        budget, basis = apple_gpu_budget(ram_total)
    name = (brand or "Apple Silicon").strip()
    return GPUInfo(
        index=0,
        vendor="apple",
        name=f"{name} GPU",
        memory_total=ram_total,
        unified=True,
        budget=budget,
        budget_basis=basis,
        backend="metal",
        bandwidth_gbs=APPLE_BANDWIDTH_GBS.get(name),
    )


# /dev entries of accelerators: Linux accel subsystem (Intel NPU, AMD XDNA), AWS
# Inferentia/Trainium, Google Coral Edge TPU, Hailo.
_DEV_ACCELERATORS = (
    ("accel", "npu", "NPU (Linux accel)"),
    ("neuron", "neuron", "AWS Neuron"),
    ("apex_", "tpu", "Google Coral Edge TPU"),
    ("hailo", "npu", "Hailo NPU"),
)


def accelerators(root: Path = Path("/"), *, system: str = "linux", arch: str = "") -> list[Accelerator]:
    found: list[Accelerator] = []
    if system == "darwin" and arch == "arm64":
        found.append(Accelerator(kind="ane", name="Apple Neural Engine"))
    if system != "linux":
        return found
    dev = root / "dev"
    try:
        names = sorted(os.listdir(dev))
    except OSError:
        return found
    for name in names:
        if name == "accel":  # /dev/accel/accel0 ...
            try:
                subs = sorted(os.listdir(dev / "accel"))
            except OSError:
                subs = []
            for sub in subs:
                found.append(Accelerator(kind="npu", name="NPU (Linux accel)", path=f"/dev/accel/{sub}"))
            continue
        for prefix, kind, label in _DEV_ACCELERATORS:
            if name.startswith(prefix) and name[len(prefix) :].isdigit():
                found.append(Accelerator(kind=kind, name=label, path=f"/dev/{name}"))
    return found
