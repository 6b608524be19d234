"""Off Linux and macOS: psutil for memory, py-cpuinfo (faked at its module) for flags, NVML always tried."""

from __future__ import annotations

import sys
import types

import psutil

from localllm.hardware.detect import collect


def fake_cpuinfo(calls: list) -> types.ModuleType:
    m = types.ModuleType("cpuinfo")

    def get_cpu_info():
        calls.append(1)
        return {
            "brand_raw": "AMD Ryzen 9 7950X 16-Core Processor",
            "vendor_id_raw": "AuthenticAMD",
            "flags": ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "pni", "mmx"],
        }

    m.get_cpu_info = get_cpu_info
    return m


def test_windows_uses_psutil_and_py_cpuinfo(monkeypatch):
    calls: list = []
    monkeypatch.setitem(sys.modules, "cpuinfo", fake_cpuinfo(calls))
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML on this box
    hw = collect(system="windows", machine="AMD64")
    assert calls == [1]
    assert hw.os == "windows" and hw.cpu.arch == "x86_64"
    assert hw.cpu.brand == "AMD Ryzen 9 7950X 16-Core Processor"
    assert set(hw.cpu.flags) == {
        "sse3",
        "sse4_2",
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
    }
    assert hw.memory.total == psutil.virtual_memory().total
    assert hw.cpu.logical_cores == psutil.cpu_count()
    assert any("pynvml not importable" in n for n in hw.notes)  # NVML is tried on Windows


def test_windows_without_py_cpuinfo_is_a_note(monkeypatch):
    monkeypatch.setitem(sys.modules, "cpuinfo", None)
    monkeypatch.setitem(sys.modules, "pynvml", None)
    hw = collect(system="windows", machine="AMD64")
    assert hw.cpu.flags == () and hw.cpu.brand is None
    assert any("py-cpuinfo" in n for n in hw.notes)
    assert hw.memory.total  # psutil still answers
