"""Linux readers against fixture trees: /proc/cpuinfo, /proc/meminfo, cgroup v1/v2, power."""

from __future__ import annotations

from pathlib import Path

import pytest

from localllm.hardware.detect import collect
from localllm.hardware.linux import (
    normalize_arch,
    parse_cpuinfo,
    parse_meminfo,
    read_cgroup,
    read_cpu,
    read_on_battery,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ROOTS = FIXTURES / "roots"
GIB = 2**30
MIB = 2**20


def cpuinfo(name: str) -> dict:
    return parse_cpuinfo((FIXTURES / "cpuinfo" / name).read_text())


def test_x86_avx512_cpuinfo():
    info = cpuinfo("x86_avx512.txt")
    assert info["vendor"] == "Intel"
    assert info["brand"] == "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz"
    assert info["logical"] == 4
    assert info["physical"] == 2  # two hyper-threads per core
    flags = set(info["flags"])
    assert {"sse3", "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni"} <= flags
    # Ice Lake: no bf16, no AMX, no VEX AVX-VNNI; no ARM names leak in
    assert not flags & {"avx512_bf16", "amx_int8", "avx_vnni", "neon", "asimd"}
    assert list(info["flags"]) == sorted(info["flags"])


def test_arm64_server_cpuinfo():
    info = cpuinfo("arm64_graviton3.txt")
    assert info["vendor"] == "ARM"
    assert info["brand"] == "Neoverse-V1"
    assert info["logical"] == 4
    assert set(info["flags"]) == {"asimd", "neon", "dotprod", "fp16", "i8mm", "sve", "bf16"}


def test_raspberry_pi_cpuinfo():
    info = cpuinfo("raspberry_pi5.txt")
    assert info["brand"] == "Raspberry Pi 5 Model B Rev 1.0 (Cortex-A76)"
    assert info["logical"] == 4
    assert set(info["flags"]) == {"asimd", "neon", "dotprod", "fp16"}
    assert "i8mm" not in info["flags"] and "sve" not in info["flags"]


def test_arm_physical_cores_from_sysfs_topology(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text((FIXTURES / "cpuinfo/raspberry_pi5.txt").read_text())
    for cpu in range(4):
        topo = tmp_path / f"sys/devices/system/cpu/cpu{cpu}/topology"
        topo.mkdir(parents=True)
        (topo / "core_cpus_list").write_text(f"{cpu}\n")
    info, notes = read_cpu(tmp_path, machine="aarch64")
    assert info["physical"] == 4 and info["arch"] == "arm64"
    assert notes == []


def test_physical_unknown_is_assumed_logical_with_a_note():
    info, notes = read_cpu(ROOTS / "cgroup_v1", machine="aarch64")  # graviton cpuinfo, no sysfs
    assert info["physical"] == 4
    assert any("physical core count unknown" in n for n in notes)


@pytest.mark.parametrize(
    "machine,arch",
    [
        ("x86_64", "x86_64"),
        ("AMD64", "x86_64"),
        ("aarch64", "arm64"),
        ("arm64", "arm64"),
        ("armv7l", "armv7"),
        ("", "unknown"),
    ],
)
def test_normalize_arch(machine, arch):
    assert normalize_arch(machine) == arch


def test_meminfo_in_bytes():
    info = parse_meminfo("MemTotal:       16384 kB\nMemAvailable:    8192 kB\nHugePages_Total:       0\n")
    assert info == {"MemTotal": 16 * MIB, "MemAvailable": 8 * MIB, "HugePages_Total": 0}


def test_cgroup_v2_limit_minus_inactive_file_and_cpu_max():
    cg, _ = read_cgroup(ROOTS / "cgroup_v2")
    assert cg.version == 2
    assert cg.memory_limit == 4 * GIB
    assert cg.memory_usage == 1 * GIB - 256 * MIB  # memory.current - inactive_file
    assert cg.cpu_quota == 1.5


def test_cgroup_v2_tightest_ancestor_wins():
    cg, _ = read_cgroup(ROOTS / "cgroup_v2_nested")
    # user.slice: 8 GiB limit, 2 GiB working set -> 6 GiB headroom
    # user-1000.slice: 6 GiB limit, 4.5 GiB working set -> 1.5 GiB headroom (tightest)
    assert cg.memory_limit == 6 * GIB
    assert cg.memory_usage == 5 * GIB - 512 * MIB
    assert cg.cpu_quota == 4.0


def test_cgroup_v1_limit_minus_total_inactive_file_and_cfs_quota():
    cg, _ = read_cgroup(ROOTS / "cgroup_v1")
    assert cg.version == 1
    assert cg.memory_limit == 2 * GIB  # the unlimited root (2**63 - 4096) is ignored
    assert cg.memory_usage == 512 * MIB - 128 * MIB
    assert cg.cpu_quota == 2.0


def test_no_cgroup_files_means_no_limit(tmp_path):
    cg, notes = read_cgroup(tmp_path)
    assert (cg.version, cg.memory_limit, cg.cpu_quota) == (None, None, None)
    assert notes == []


def test_collect_container_v2_usable_is_cgroup_headroom():
    hw = collect(root=ROOTS / "cgroup_v2", system="linux", machine="x86_64")
    m = hw.memory
    assert m.total == 64 * GIB and m.available == 50 * GIB
    assert m.cgroup_limit == 4 * GIB
    assert m.limit == 4 * GIB
    assert m.usable == 4 * GIB - (1 * GIB - 256 * MIB)  # headroom, far below host-available
    assert hw.cpu.quota_cores == 1.5 and hw.cpu.effective_cores == 1.5
    assert hw.cpu.logical_cores == 4 and hw.cpu.physical_cores == 2
    assert hw.cpu.affinity_cores is None  # only measured on the live machine
    assert hw.gpus == ()


def test_collect_v1_arm_server():
    hw = collect(root=ROOTS / "cgroup_v1", system="linux", machine="aarch64")
    assert hw.cpu.arch == "arm64" and hw.cpu.has("sve")
    assert hw.memory.cgroup_version == 1
    assert hw.memory.usable == 2 * GIB - 384 * MIB
    assert hw.cpu.effective_cores == 2.0


def test_collect_on_an_empty_root_never_raises(tmp_path):
    hw = collect(root=tmp_path, system="linux", machine="x86_64")
    assert hw.memory.total is None and hw.memory.usable is None
    assert any("meminfo" in n for n in hw.notes)
    assert any("cpuinfo" in n for n in hw.notes)


def _supply(root: Path, name: str, **files: str) -> None:
    d = root / "sys/class/power_supply" / name
    d.mkdir(parents=True)
    for key, value in files.items():
        (d / key).write_text(value + "\n")


def test_battery_discharging(tmp_path):
    _supply(tmp_path, "AC", type="Mains", online="0")
    _supply(tmp_path, "BAT0", type="Battery", status="Discharging")
    assert read_on_battery(tmp_path) is True


def test_battery_charging_on_mains(tmp_path):
    _supply(tmp_path, "AC", type="Mains", online="1")
    _supply(tmp_path, "BAT0", type="Battery", status="Charging")
    assert read_on_battery(tmp_path) is False


def test_no_battery_means_mains(tmp_path):
    assert read_on_battery(tmp_path) is False
    _supply(tmp_path, "ucsi-source-psy-USBC000:001", type="USB", online="0")
    assert read_on_battery(tmp_path) is False
