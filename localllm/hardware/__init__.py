"""What this machine has: the hardware facts as values, and the probe that reads them.

    facts.py      Hardware and its parts (frozen values; a profile file is the same type)
    detect.py     probe(), collect(), the runtimes' build facts, profiles
    linux.py      /proc, /sys and cgroup readers (take a root folder, so tests use fixtures)
    macos.py      sysctl readers
    gpu.py        NVIDIA (NVML), AMD (sysfs), Apple and accelerator readers
    bandwidth.py  a measured memory bandwidth, kept per machine

The package is not named `probe`: that is the public function `localllm.probe()`, and a
subpackage of the same name would replace it as an attribute of `localllm` when imported.
Nothing here imports a C extension at import time.
"""

from __future__ import annotations

from localllm.hardware.detect import collect, list_profiles, load_profile, probe, probe_runtimes
from localllm.hardware.facts import Accelerator, CPUInfo, GPUInfo, Hardware, MemoryInfo, RuntimeInfo

__all__ = [
    "Accelerator",
    "CPUInfo",
    "GPUInfo",
    "Hardware",
    "MemoryInfo",
    "RuntimeInfo",
    "collect",
    "list_profiles",
    "load_profile",
    "probe",
    "probe_runtimes",
]
