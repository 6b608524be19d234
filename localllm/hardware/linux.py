"""Linux facts from /proc and /sys: CPU, memory and the cgroup (v1 or v2) limits.

Every reader takes `root` so tests point it at a fixture tree. Readers return values
and a list of notes; they never raise on missing or malformed files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

__all__ = [
    "CgroupFacts",
    "CpuFacts",
    "normalize_arch",
    "normalize_flags",
    "parse_cpuinfo",
    "parse_meminfo",
    "read_cgroup",
    "read_cpu",
    "read_memory",
    "read_text",
]

# cgroup v1 writes "no limit" as LONG_MAX rounded down to a page (9223372036854771712);
# anything this large is no limit.
UNLIMITED = 1 << 60

# /proc/cpuinfo flag -> normalized name. x86 names are the kernel's own; ARM "Features"
# names map to the names the planner and llama.cpp use (asimddp = dot product, etc.).
_X86_FLAGS = {
    "pni": "sse3",
    "ssse3": "ssse3",
    "sse4_1": "sse4_1",
    "sse4_2": "sse4_2",
    "avx": "avx",
    "avx2": "avx2",
    "fma": "fma",
    "f16c": "f16c",
    "avx512f": "avx512f",
    "avx512bw": "avx512bw",
    "avx512vl": "avx512vl",
    "avx512_vnni": "avx512_vnni",
    "avx512_bf16": "avx512_bf16",
    "avx512_fp16": "avx512_fp16",
    "avx_vnni": "avx_vnni",
    "amx_tile": "amx_tile",
    "amx_int8": "amx_int8",
    "amx_bf16": "amx_bf16",
}
_ARM_FLAGS = {
    "asimd": ("asimd", "neon"),
    "neon": ("neon",),
    "asimddp": ("dotprod",),
    "i8mm": ("i8mm",),
    "sve": ("sve",),
    "sve2": ("sve2",),
    "bf16": ("bf16",),
    "asimdhp": ("fp16",),
}

# ARM "CPU implementer" / "CPU part" -> core name, for brand strings on ARM Linux
# (the kernel gives no model name there). Source: Linux arch/arm64/include/asm/cputype.h.
_ARM_IMPLEMENTERS = {
    "0x41": "ARM",
    "0x48": "HiSilicon",
    "0x51": "Qualcomm",
    "0x61": "Apple",
    "0xc0": "Ampere",
    "0x4e": "NVIDIA",
}
_ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd04"): "Cortex-A35",
    ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd40"): "Neoverse-V1",
    ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd44"): "Cortex-X1",
    ("0x41", "0xd49"): "Neoverse-N2",
    ("0x41", "0xd4f"): "Neoverse-V2",
    ("0x48", "0xd01"): "Kunpeng-920",
    ("0xc0", "0xac3"): "AmpereOne",
}


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _read_int(path: Path) -> int | None:
    text = read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip().split()[0])
    except (ValueError, IndexError):
        return None


class CpuFacts(TypedDict, total=False):
    """What a CPU reader found (Linux /proc/cpuinfo or macOS sysctl); absent keys are unknown."""

    arch: str
    vendor: str | None
    brand: str | None
    physical: int | None
    logical: int | None
    flags: tuple[str, ...]


def normalize_flags(raw: Iterable[str]) -> tuple[str, ...]:
    """Kernel / py-cpuinfo flag names -> the sorted names the planner and llama.cpp use."""
    flags: set[str] = set()
    for f in raw:
        if f in _X86_FLAGS:
            flags.add(_X86_FLAGS[f])
        flags.update(_ARM_FLAGS.get(f, ()))
    return tuple(sorted(flags))


def normalize_arch(machine: str) -> str:
    m = machine.lower()
    if m in ("x86_64", "amd64", "x64"):
        return "x86_64"
    if m in ("aarch64", "arm64", "armv8l"):
        return "arm64"
    if m.startswith("armv7"):
        return "armv7"
    if m in ("i386", "i686", "x86"):
        return "x86"
    return m or "unknown"


# -- CPU -------------------------------------------------------------------------


def parse_cpuinfo(text: str) -> CpuFacts:
    """vendor, brand, logical and physical core counts and normalized flags from /proc/cpuinfo."""
    blocks = [b for b in text.split("\n\n") if b.strip()]
    procs: list[dict[str, str]] = []
    extra: dict[str, str] = {}  # trailing machine-wide lines (Raspberry Pi "Model", "Hardware")
    for block in blocks:
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "processor" in fields:
            procs.append(fields)
        else:
            extra.update(fields)
    first = procs[0] if procs else {}
    out: CpuFacts = {"logical": len(procs) or None}
    out["flags"] = normalize_flags((first.get("flags") or first.get("Features") or "").split())

    if "vendor_id" in first:  # x86
        out["vendor"] = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(first["vendor_id"], first["vendor_id"])
        out["brand"] = first.get("model name")
        pairs = {(p.get("physical id", "0"), p["core id"]) for p in procs if "core id" in p}
        out["physical"] = len(pairs) or None
    else:  # ARM: implementer/part codes, machine model on single-board computers
        impl = first.get("CPU implementer", "").lower()
        part = first.get("CPU part", "").lower()
        out["vendor"] = _ARM_IMPLEMENTERS.get(impl, impl or None)
        core = _ARM_PARTS.get((impl, part))
        model = extra.get("Model") or first.get("model name")
        if model and core:
            out["brand"] = f"{model} ({core})"
        else:
            out["brand"] = model or core
        out["physical"] = None  # from sysfs topology
    return out


def _physical_from_topology(root: Path) -> int | None:
    """Count distinct SMT sibling sets in sysfs (works on ARM, where cpuinfo has no core id)."""
    base = root / "sys/devices/system/cpu"
    try:
        names = [n for n in os.listdir(base) if n.startswith("cpu") and n[3:].isdigit()]
    except OSError:
        return None
    sets = set()
    for name in names:
        topo = base / name / "topology"
        text = read_text(topo / "core_cpus_list") or read_text(topo / "thread_siblings_list")
        if text is None:
            continue
        sets.add(text.strip())
    return len(sets) or None


def read_cpu(root: Path = Path("/"), *, machine: str = "") -> tuple[CpuFacts, list[str]]:
    """CPU facts from /proc/cpuinfo and sysfs (no quota; see read_cgroup)."""
    notes: list[str] = []
    text = read_text(root / "proc/cpuinfo")
    if text is None:
        notes.append("cpu: /proc/cpuinfo unreadable; CPU brand and flags unknown")
        info: CpuFacts = {"flags": ()}
    else:
        info = parse_cpuinfo(text)
    info["arch"] = normalize_arch(machine)
    if not info.get("physical"):
        info["physical"] = _physical_from_topology(root)
    if info.get("physical") is None and info.get("logical"):
        info["physical"] = info["logical"]
        notes.append("cpu: physical core count unknown; assumed equal to logical cores")
    return info, notes


# -- memory ----------------------------------------------------------------------


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo as bytes."""
    out = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            out[key.strip()] = int(parts[0]) * (1024 if parts[1:2] == ["kB"] else 1)
    return out


def read_memory(root: Path = Path("/")) -> tuple[dict[str, int], list[str]]:
    text = read_text(root / "proc/meminfo")
    if text is None:
        return {}, ["memory: /proc/meminfo unreadable; RAM size unknown"]
    info = parse_meminfo(text)
    notes = []
    if "MemAvailable" not in info and "MemFree" in info:  # kernels before 3.14
        info["MemAvailable"] = info["MemFree"] + info.get("Cached", 0)
        notes.append("memory: no MemAvailable in /proc/meminfo; estimated as MemFree + Cached")
    return info, notes


# -- cgroups ---------------------------------------------------------------------


@dataclass(frozen=True)
class CgroupFacts:
    version: int | None = None  # set when a memory limit applies
    memory_limit: int | None = None
    memory_usage: int | None = None  # working set: usage minus inactive file cache
    cpu_quota: float | None = None  # cores


@dataclass(frozen=True)
class _Mount:
    version: int
    controllers: frozenset[str]
    root: str  # the cgroup path mounted there ("/" unless the host's tree is bind-mounted)
    point: str


def _mounts(root: Path) -> list[_Mount]:
    text = read_text(root / "proc/self/mountinfo")
    mounts = []
    if text:
        for line in text.splitlines():
            fields = line.split()
            if "-" not in fields:
                continue
            sep = fields.index("-")
            if len(fields) < 5 or sep + 1 >= len(fields):
                continue
            fstype = fields[sep + 1]
            if fstype == "cgroup2":
                mounts.append(_Mount(2, frozenset(), fields[3], fields[4]))
            elif fstype == "cgroup" and sep + 3 < len(fields):
                opts = frozenset(fields[sep + 3].split(","))
                mounts.append(_Mount(1, opts, fields[3], fields[4]))
    if not mounts:  # no mountinfo: the usual layouts
        base = root / "sys/fs/cgroup"
        if (base / "cgroup.controllers").exists():
            mounts.append(_Mount(2, frozenset(), "/", "/sys/fs/cgroup"))
        for ctl in ("memory", "cpu"):
            for name in (ctl, "cpu,cpuacct" if ctl == "cpu" else ctl):
                if (base / name).is_dir():
                    mounts.append(_Mount(1, frozenset({ctl}), "/", f"/sys/fs/cgroup/{name}"))
                    break
    return mounts


def _memberships(root: Path) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; the v2 unified entry is under ""."""
    text = read_text(root / "proc/self/cgroup") or ""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            out[""] = path
        for c in controllers.split(","):
            if c:
                out[c] = path
    return out


def _levels(root: Path, mount: _Mount, path: str) -> list[Path]:
    """The process's cgroup folder and its ancestors up to the mount point, leaf first."""
    top = root / mount.point.lstrip("/")
    rel = path
    if mount.root != "/" and rel.startswith(mount.root):
        rel = rel[len(mount.root) :]
    leaf = top / rel.lstrip("/")
    if not leaf.is_dir():  # a namespaced view that shows the host path: the mount is our cgroup
        leaf = top
    levels = [leaf]
    while levels[-1] != top and top in levels[-1].parents:
        levels.append(levels[-1].parent)
    return levels


def _stat_value(folder: Path, key: str) -> int:
    text = read_text(folder / "memory.stat") or ""
    for line in text.splitlines():
        k, _, v = line.partition(" ")
        if k == key:
            try:
                return int(v)
            except ValueError:
                return 0
    return 0


def _memory_v2(levels: list[Path]) -> tuple[int, int] | None:
    best = None
    for folder in levels:
        text = read_text(folder / "memory.max")
        if text is None or text.strip() == "max":
            continue
        try:
            limit = int(text.strip())
        except ValueError:
            continue
        current = _read_int(folder / "memory.current") or 0
        usage = max(0, current - _stat_value(folder, "inactive_file"))
        if best is None or limit - usage < best[0] - best[1]:
            best = (limit, usage)
    return best


def _memory_v1(levels: list[Path]) -> tuple[int, int] | None:
    best = None
    for folder in levels:
        limit = _read_int(folder / "memory.limit_in_bytes")
        hier = _stat_value(folder, "hierarchical_memory_limit")  # covers ancestors we cannot see
        candidates = [v for v in (limit, hier) if v and v < UNLIMITED]
        if not candidates:
            continue
        limit = min(candidates)
        usage_raw = _read_int(folder / "memory.usage_in_bytes") or 0
        usage = max(0, usage_raw - _stat_value(folder, "total_inactive_file"))
        if best is None or limit - usage < best[0] - best[1]:
            best = (limit, usage)
    return best


def _cpu_quota_v2(levels: list[Path]) -> float | None:
    quotas = []
    for folder in levels:
        parts = (read_text(folder / "cpu.max") or "").split()
        if len(parts) == 2 and parts[0] != "max":
            with contextlib.suppress(ValueError, ZeroDivisionError):
                quotas.append(int(parts[0]) / int(parts[1]))
    return min(quotas) if quotas else None


def _cpu_quota_v1(levels: list[Path]) -> float | None:
    quotas = []
    for folder in levels:
        quota = _read_int(folder / "cpu.cfs_quota_us")
        period = _read_int(folder / "cpu.cfs_period_us")
        if quota and quota > 0 and period:
            quotas.append(quota / period)
    return min(quotas) if quotas else None


def read_cgroup(root: Path = Path("/")) -> tuple[CgroupFacts, list[str]]:
    """Memory limit, working set and CPU quota of this process's cgroup (v2 preferred, then v1)."""
    members = _memberships(root)
    if not members:
        return CgroupFacts(), []
    mounts = _mounts(root)
    v2 = next((m for m in mounts if m.version == 2), None)
    v2_levels = _levels(root, v2, members[""]) if v2 and "" in members else []

    def v1_levels(ctl: str) -> list[Path]:
        m = next((m for m in mounts if m.version == 1 and ctl in m.controllers), None)
        return _levels(root, m, members[ctl]) if m and ctl in members else []

    version = None
    memory = _memory_v2(v2_levels)
    if memory:
        version = 2
    else:
        memory = _memory_v1(v1_levels("memory"))
        version = 1 if memory else None
    quota = _cpu_quota_v2(v2_levels)
    if quota is None:
        quota = _cpu_quota_v1(v1_levels("cpu"))
    return CgroupFacts(
        version=version,
        memory_limit=memory[0] if memory else None,
        memory_usage=memory[1] if memory else None,
        cpu_quota=quota,
    ), []


# -- power -----------------------------------------------------------------------


def read_on_battery(root: Path = Path("/")) -> bool | None:
    """True when running from a discharging battery, from /sys/class/power_supply.

    The same files psutil.sensors_battery() reads on Linux, without its ~15 ms import.
    No battery at all means mains power (False).
    """
    base = root / "sys/class/power_supply"
    try:
        names = sorted(os.listdir(base))
    except OSError:
        return False  # no power_supply class: a server or container without batteries
    mains_online = battery = discharging = False
    for name in names:
        kind = (read_text(base / name / "type") or "").strip()
        if kind == "Mains" and (read_text(base / name / "online") or "").strip() == "1":
            mains_online = True
        elif kind == "Battery":
            battery = True
            discharging |= (read_text(base / name / "status") or "").strip() == "Discharging"
    if mains_online or not battery:
        return False
    return discharging
