"""macOS facts from one `sysctl` call (about 5 ms), parsed by pure functions that tests feed."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from localllm.hardware.linux import CpuFacts

__all__ = ["SYSCTL_KEYS", "cpu_from_sysctl", "memory_from_sysctl", "parse_sysctl", "run_sysctl"]

SYSCTL = "/usr/sbin/sysctl"
SYSCTL_TIMEOUT_S = 3.0

SYSCTL_KEYS = (
    "hw.memsize",
    "hw.physicalcpu",
    "hw.logicalcpu",
    "hw.optional.arm64",
    "machdep.cpu.brand_string",
    "machdep.cpu.vendor",
    "machdep.cpu.features",
    "machdep.cpu.leaf7_features",
    "vm.swapusage",
    "hw.optional.AdvSIMD",
    "hw.optional.neon",
    "hw.optional.arm.FEAT_DotProd",
    "hw.optional.arm.FEAT_I8MM",
    "hw.optional.arm.FEAT_BF16",
    "hw.optional.arm.FEAT_FP16",
    "hw.optional.arm.FEAT_SME",
    "hw.optional.avx1_0",
    "hw.optional.avx2_0",
    "hw.optional.fma",
    "hw.optional.sse4_2",
    "hw.optional.avx512f",
    "hw.optional.avx512vnni",
)

# sysctl key set to 1 -> normalized flag
_BOOL_FLAGS = {
    "hw.optional.AdvSIMD": ("neon", "asimd"),
    "hw.optional.neon": ("neon", "asimd"),
    "hw.optional.arm.FEAT_DotProd": ("dotprod",),
    "hw.optional.arm.FEAT_I8MM": ("i8mm",),
    "hw.optional.arm.FEAT_BF16": ("bf16",),
    "hw.optional.arm.FEAT_FP16": ("fp16",),
    "hw.optional.avx1_0": ("avx",),
    "hw.optional.avx2_0": ("avx2",),
    "hw.optional.fma": ("fma",),
    "hw.optional.sse4_2": ("sse4_2",),
    "hw.optional.avx512f": ("avx512f",),
    "hw.optional.avx512vnni": ("avx512_vnni",),
}
# tokens of machdep.cpu.features / leaf7_features (Intel Macs) -> normalized flag
_FEATURE_WORDS = {
    "SSE3": "sse3",
    "SSSE3": "ssse3",
    "SSE4.1": "sse4_1",
    "SSE4.2": "sse4_2",
    "AVX1.0": "avx",
    "F16C": "f16c",
    "FMA": "fma",
    "AVX2": "avx2",
    "AVX512F": "avx512f",
    "AVX512VNNI": "avx512_vnni",
}


def run_sysctl(keys: tuple[str, ...] = SYSCTL_KEYS) -> str:
    """Raw `sysctl` output; unknown keys only add errors on stderr."""
    done = subprocess.run([SYSCTL, *keys], capture_output=True, text=True, timeout=SYSCTL_TIMEOUT_S, check=False)
    return done.stdout


def parse_sysctl(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _int(values: dict[str, str], key: str) -> int | None:
    try:
        return int(values[key])
    except (KeyError, ValueError):
        return None


def cpu_from_sysctl(values: dict[str, str]) -> CpuFacts:
    flags: set[str] = set()
    for key, names in _BOOL_FLAGS.items():
        if values.get(key) == "1":
            flags.update(names)
    words = (values.get("machdep.cpu.features", "") + " " + values.get("machdep.cpu.leaf7_features", "")).split()
    flags.update(_FEATURE_WORDS[w] for w in words if w in _FEATURE_WORDS)
    brand = values.get("machdep.cpu.brand_string") or None
    arm = values.get("hw.optional.arm64") == "1" or (brand or "").startswith("Apple")
    vendor = (
        "Apple"
        if arm
        else {"GenuineIntel": "Intel"}.get(values.get("machdep.cpu.vendor", ""), values.get("machdep.cpu.vendor"))
    )
    return {
        "arch": "arm64" if arm else "x86_64",
        "vendor": vendor,
        "brand": brand,
        "physical": _int(values, "hw.physicalcpu"),
        "logical": _int(values, "hw.logicalcpu"),
        "flags": tuple(sorted(flags)),
    }


def _size(text: str) -> int | None:
    """'2048.00M' -> bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    text = text.strip()
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(float(text))
    except ValueError:
        return None


def memory_from_sysctl(values: dict[str, str]) -> dict[str, int | None]:
    """total RAM and swap; 'vm.swapusage: total = 2048.00M  used = 1024.00M  free = 1024.00M'."""
    out: dict[str, int | None] = {"total": _int(values, "hw.memsize")}
    parts = values.get("vm.swapusage", "").replace("=", " ").split()
    for name in ("total", "free"):
        if name in parts and parts.index(name) + 1 < len(parts):
            out[f"swap_{name}"] = _size(parts[parts.index(name) + 1])
    return out
