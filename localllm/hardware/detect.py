"""The hardware probe: what this machine has, best effort, never raising.

`probe()` reads /proc, /sys and cgroup files on Linux, one `sysctl` call on macOS, NVML
for NVIDIA GPUs (only when the NVIDIA driver is present) and py-cpuinfo only where
neither exists. A failed query leaves the value unknown and says why in `notes`.
Results are cached per process; the runtimes part imports the backends, so it is
computed only on request and cached on its own.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from localllm import paths
from localllm.errors import LocalLLMError, ProfileNotFoundError
from localllm.hardware import gpu as probe_gpu, linux as pl
from localllm.hardware.facts import Accelerator, CPUInfo, GPUInfo, Hardware, MemoryInfo, RuntimeInfo
from localllm.repack import features_from_system_info

__all__ = ["collect", "list_profiles", "load_profile", "probe", "probe_runtimes"]

T = TypeVar("T")

_lock = threading.Lock()
_cached: Hardware | None = None
_cached_runtimes: tuple[tuple[RuntimeInfo, ...], tuple[str, ...]] | None = None


def probe(*, runtimes: bool = False, refresh: bool = False) -> Hardware:
    """Describe this machine. Never raises; unknown facts are None, with reasons in `notes`.

    Args:
        runtimes: also report installed runtimes (imports llama_cpp and onnxruntime).
        refresh: probe again instead of returning the cached result.
    """
    global _cached, _cached_runtimes
    with _lock:
        if _cached is None or refresh:
            _cached = _with_measured_bandwidth(collect())
        hw = _cached
        if not runtimes:
            return hw
        if _cached_runtimes is None or refresh:
            _cached_runtimes = probe_runtimes()
        found, notes = _cached_runtimes
        return dataclasses.replace(hw, runtimes=found, notes=hw.notes + notes)


def collect(
    *, root: Path = Path("/"), system: str | None = None, machine: str | None = None, cache_dir: Path | None = None
) -> Hardware:
    """One uncached probe. `root`, `system` and `machine` are for tests (fixture trees)."""
    notes: list[str] = []
    live = root == Path("/")
    uname = _uname()
    system = (system or uname[0]).lower()
    machine = machine if machine is not None else uname[1]
    os_version = _safe(notes, "os", lambda: _os_version(system, uname[2]), None)

    if system == "linux":
        memory, cpu = _linux(root, machine, notes, live=live)
    elif system == "darwin":
        memory, cpu = _safe(notes, "macos", lambda: _macos(notes), (MemoryInfo(), CPUInfo()))
    else:
        memory, cpu = _safe(notes, "system", lambda: _other(machine, notes), (MemoryInfo(), CPUInfo()))

    no_gpus: list[GPUInfo] = []
    gpus = _safe(notes, "gpu", lambda: _gpus(root, system, cpu, memory, notes), no_gpus)
    no_accels: list[Accelerator] = []
    accels = _safe(notes, "accelerators", lambda: probe_gpu.accelerators(root, system=system, arch=cpu.arch), no_accels)
    no_disk: tuple[str | None, int | None] = (None, None)
    disk_path, disk_free = _safe(notes, "disk", lambda: _disk(cache_dir), no_disk)
    battery = _safe(notes, "battery", lambda: _on_battery(root, system), None)
    return Hardware(
        os=system,
        os_version=os_version,
        python=_python_version(),
        memory=memory,
        cpu=cpu,
        gpus=tuple(gpus),
        accelerators=tuple(accels),
        disk_free=disk_free,
        disk_path=disk_path,
        on_battery=battery,
        notes=tuple(notes),
    )


def _with_measured_bandwidth(hw: Hardware) -> Hardware:
    """Fill memory.bandwidth_gbs from this machine's kept measurement (localllm.hardware.bandwidth), if any."""
    if hw.memory.bandwidth_gbs is not None:
        return hw
    try:
        if not (paths.home() / "machines").is_dir():  # nothing measured: one stat, no imports
            return hw
        # imported here: calibration (~5 ms) loads only on a machine with a kept measurement
        from localllm.calibration import load_calibration

        kept = load_calibration(hw).bandwidth
    except Exception:  # the probe never raises
        import logging

        logging.getLogger(__name__).debug("reading the kept bandwidth failed", exc_info=True)
        return hw
    if kept is None:
        return hw
    return dataclasses.replace(hw, memory=dataclasses.replace(hw.memory, bandwidth_gbs=kept.gbs))


def _safe(notes: list[str], label: str, fn: Callable[[], T], default: T) -> T:
    try:
        return fn()
    except Exception as exc:  # the probe never raises: a failure becomes a note
        import logging  # only on failure: logging costs ~4 ms of a cold probe

        logging.getLogger(__name__).debug("probe %s failed", label, exc_info=True)
        notes.append(f"{label}: probe failed ({type(exc).__name__}: {exc})")
        return default


def _uname() -> tuple[str, str, str]:
    """(system, machine, release); os.uname where it exists, as `platform` (~2 ms) is not needed."""
    if hasattr(os, "uname"):
        u = os.uname()
        return u.sysname, u.machine, u.release
    import platform

    return platform.system(), platform.machine(), platform.release()


def _os_version(system: str, release: str) -> str | None:
    if system == "darwin":
        import platform

        return platform.mac_ver()[0] or release
    return release or None


def _python_version() -> str:
    v = sys.version_info
    return f"{v.major}.{v.minor}.{v.micro}" + ("" if v.releaselevel == "final" else f"{v.releaselevel[0]}{v.serial}")


def _linux(root: Path, machine: str, notes: list[str], *, live: bool) -> tuple[MemoryInfo, CPUInfo]:
    # each reader on its own: one failing leaves the others' facts standing
    no_ram: tuple[dict[str, int], list[str]] = ({}, [])
    ram, n = _safe(notes, "memory", lambda: pl.read_memory(root), no_ram)
    notes += n
    no_cpu: tuple[pl.CpuFacts, list[str]] = ({"arch": pl.normalize_arch(machine)}, [])
    info, n = _safe(notes, "cpu", lambda: pl.read_cpu(root, machine=machine), no_cpu)
    notes += n
    no_cgroup: tuple[pl.CgroupFacts, list[str]] = (pl.CgroupFacts(), [])
    cg, n = _safe(notes, "cgroup", lambda: pl.read_cgroup(root), no_cgroup)
    notes += n
    affinity = None
    if live and hasattr(os, "sched_getaffinity"):
        affinity = _safe(notes, "cpu affinity", lambda: len(os.sched_getaffinity(0)), None)
    if live and not info.get("brand") and not info.get("flags"):  # /proc/cpuinfo unreadable
        brand, vendor, flags = _py_cpuinfo(notes)
        info.update({"brand": brand, "vendor": vendor, "flags": flags})
    logical = info.get("logical") or (os.cpu_count() if live else None)
    cpu = CPUInfo(
        arch=info["arch"],
        vendor=info.get("vendor"),
        brand=info.get("brand"),
        physical_cores=info.get("physical"),
        logical_cores=logical,
        quota_cores=cg.cpu_quota,
        affinity_cores=affinity,
        flags=info.get("flags", ()),
    )
    memory = MemoryInfo(
        total=ram.get("MemTotal"),
        available=ram.get("MemAvailable"),
        swap_total=ram.get("SwapTotal"),
        swap_free=ram.get("SwapFree"),
        cgroup_version=cg.version,
        cgroup_limit=cg.memory_limit,
        cgroup_usage=cg.memory_usage,
    )
    return memory, cpu


def _macos(notes: list[str]) -> tuple[MemoryInfo, CPUInfo]:
    # imported here: only macOS needs it, and it loads subprocess (~4 ms of a cold probe)
    from localllm.hardware.macos import cpu_from_sysctl, memory_from_sysctl, parse_sysctl, run_sysctl

    values = parse_sysctl(run_sysctl())
    info = cpu_from_sysctl(values)
    mem = memory_from_sysctl(values)
    available = None
    try:
        import psutil

        available = int(psutil.virtual_memory().available)
    except Exception as exc:
        notes.append(f"memory: available RAM unknown (psutil: {exc})")
    cpu = CPUInfo(
        arch=info["arch"],
        vendor=info["vendor"],
        brand=info["brand"],
        physical_cores=info["physical"],
        logical_cores=info["logical"],
        flags=info["flags"],
    )
    memory = MemoryInfo(
        total=mem.get("total"), available=available, swap_total=mem.get("swap_total"), swap_free=mem.get("swap_free")
    )
    return memory, cpu


def _other(machine: str, notes: list[str]) -> tuple[MemoryInfo, CPUInfo]:
    """Windows and the rest: psutil for memory, py-cpuinfo (slow: a subprocess) for flags."""
    import psutil

    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    memory = MemoryInfo(
        total=int(vm.total), available=int(vm.available), swap_total=int(sw.total), swap_free=int(sw.free)
    )
    brand, vendor, flags = _py_cpuinfo(notes)
    cpu = CPUInfo(
        arch=pl.normalize_arch(machine),
        vendor=vendor,
        brand=brand,
        physical_cores=psutil.cpu_count(logical=False),
        logical_cores=psutil.cpu_count(logical=True),
        flags=flags,
    )
    return memory, cpu


def _py_cpuinfo(notes: list[str]) -> tuple[str | None, str | None, tuple[str, ...]]:
    """Brand, vendor and normalized flags from py-cpuinfo: ~1 s (a subprocess), so last resort."""
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
    except Exception as exc:
        notes.append(f"cpu: brand and flags unknown (py-cpuinfo: {exc})")
        return None, None, ()
    return info.get("brand_raw"), info.get("vendor_id_raw"), pl.normalize_flags(set(info.get("flags", ())))


def _gpus(root: Path, system: str, cpu: CPUInfo, memory: MemoryInfo, notes: list[str]) -> list[GPUInfo]:
    gpus: list[GPUInfo] = []
    if system == "darwin":
        if cpu.arch == "arm64":
            gpus.append(probe_gpu.apple_gpu(cpu.brand, ram_total=memory.total))
        return gpus
    if system == "windows" or probe_gpu.nvidia_present(root):
        found, n = probe_gpu.nvidia_gpus()
        gpus += found
        notes += n
    if system == "linux":
        if not gpus:
            found, n = probe_gpu.jetson_gpu(root, ram_total=memory.total, ram_available=memory.usable)
            gpus += found
            notes += n
        found, n = probe_gpu.sysfs_gpus(root, first_index=len(gpus))
        gpus += found
        notes += n
    return gpus


def _disk(cache_dir: Path | None) -> tuple[str | None, int | None]:
    path = cache_dir or paths.home()
    probe_at = path
    while not probe_at.exists() and probe_at.parent != probe_at:  # not created yet: its volume
        probe_at = probe_at.parent
    if hasattr(os, "statvfs"):  # what shutil.disk_usage does on POSIX, without its imports
        st = os.statvfs(probe_at)
        return str(path), st.f_bavail * st.f_frsize
    import shutil

    return str(path), int(shutil.disk_usage(probe_at).free)


def _on_battery(root: Path, system: str) -> bool | None:
    if system == "linux":
        return pl.read_on_battery(root)
    if root != Path("/"):
        return None
    import psutil

    battery = psutil.sensors_battery()
    if battery is None:  # no battery: mains powered
        return False
    return not battery.power_plugged if battery.power_plugged is not None else None


# -- runtimes (imports the backends) ---------------------------------------------


def probe_runtimes() -> tuple[tuple[RuntimeInfo, ...], tuple[str, ...]]:
    """Installed runtimes, llama.cpp GPU offload support and ONNX Runtime providers."""
    notes: list[str] = []
    llama = _safe(notes, "runtime llama.cpp", lambda: _llama_cpp(notes), RuntimeInfo("llama.cpp"))
    ort = _safe(notes, "runtime onnxruntime", lambda: _onnxruntime(notes), RuntimeInfo("onnxruntime"))
    return (llama, ort), tuple(notes)


def _dist_version(*names: str) -> str | None:
    from importlib import metadata

    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def _llama_cpp(notes: list[str]) -> RuntimeInfo:
    version = _dist_version("llama_cpp_python", "llama-cpp-python")
    try:
        import llama_cpp
    except Exception as exc:
        if version is not None:
            notes.append(f"runtime llama.cpp: installed ({version}) but import failed: {exc}")
        return RuntimeInfo("llama.cpp", installed=False, version=version)
    version = version or getattr(llama_cpp, "__version__", None)
    offload = None
    try:
        offload = bool(llama_cpp.llama_supports_gpu_offload())
    except Exception as exc:
        notes.append(f"runtime llama.cpp: GPU offload support unknown ({exc})")
    features: tuple[str, ...] = ()
    try:
        features = tuple(
            sorted(features_from_system_info(llama_cpp.llama_print_system_info().decode("utf-8", errors="replace")))
        )
    except Exception as exc:  # noqa: BLE001 - a probe never raises
        notes.append(f"runtime llama.cpp: build features unknown ({exc})")
    return RuntimeInfo("llama.cpp", installed=True, version=version, gpu_offload=offload, cpu_features=features)


def _onnxruntime(notes: list[str]) -> RuntimeInfo:
    version = _dist_version(
        "onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-qnn"
    )
    try:
        import onnxruntime
    except Exception as exc:
        if version is not None:
            notes.append(f"runtime onnxruntime: installed ({version}) but import failed: {exc}")
        return RuntimeInfo("onnxruntime", installed=False, version=version)
    providers: tuple[str, ...] = ()
    try:
        providers = tuple(onnxruntime.get_available_providers())
    except Exception as exc:
        notes.append(f"runtime onnxruntime: execution providers unknown ({exc})")
    return RuntimeInfo(
        "onnxruntime", installed=True, version=version or getattr(onnxruntime, "__version__", None), providers=providers
    )


# -- profiles --------------------------------------------------------------------


def list_profiles() -> list[str]:
    """Names of the bundled hardware profiles (file stems in profiles/)."""
    from localllm.resources import profiles_dir  # here: importlib.resources costs a probe ~5 ms

    try:
        return sorted(p.stem for p in profiles_dir().glob("*.toml"))
    except OSError:
        return []


def load_profile(name_or_path: str | os.PathLike[str]) -> Hardware:
    """A bundled profile by name (`list_profiles()`), or a profile file by path.

    Raises:
        ProfileNotFoundError: no such profile; the message lists the available names.
        LocalLLMError: the file is not a valid profile.
    """
    from localllm.resources import profiles_dir  # here: importlib.resources costs a probe ~5 ms

    text = os.fspath(name_or_path)
    looks_like_path = isinstance(name_or_path, os.PathLike) or text.endswith(".toml") or os.sep in text or "/" in text
    path = Path(text) if looks_like_path else profiles_dir() / f"{text}.toml"
    if not path.is_file():
        names = ", ".join(list_profiles()) or "(none)"
        what = f"file {text!r}" if looks_like_path else f"{text!r}"
        raise ProfileNotFoundError(
            f"hardware profile {what} not found. Available profiles: {names}. "
            "Pass one of these names or a path to a .toml file (`localllm probe --save FILE` "
            "writes one)."
        )
    try:
        return Hardware.from_toml(path)
    except LocalLLMError:
        raise
    except Exception as exc:
        raise LocalLLMError(
            f"hardware profile {str(path)!r} is not valid: {exc}. "
            "Compare it with a file from `localllm probe --save FILE`."
        ) from exc
