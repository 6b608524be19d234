"""macOS: `sysctl` output (captured from real machines' key set) parsed into Hardware."""

from __future__ import annotations

from localllm.hardware import macos as probe_macos
from localllm.hardware.detect import collect
from localllm.hardware.macos import cpu_from_sysctl, memory_from_sysctl, parse_sysctl

GIB = 2**30
MIB = 2**20

M2 = """hw.memsize: 8589934592
hw.physicalcpu: 8
hw.logicalcpu: 8
hw.optional.arm64: 1
machdep.cpu.brand_string: Apple M2
vm.swapusage: total = 1024.00M  used = 343.25M  free = 680.75M  (encrypted)
hw.optional.AdvSIMD: 1
hw.optional.neon: 1
hw.optional.arm.FEAT_DotProd: 1
hw.optional.arm.FEAT_I8MM: 1
hw.optional.arm.FEAT_BF16: 1
hw.optional.arm.FEAT_FP16: 1
hw.optional.arm.FEAT_SME: 0
"""

INTEL_MAC = """hw.memsize: 17179869184
hw.physicalcpu: 6
hw.logicalcpu: 12
machdep.cpu.brand_string: Intel(R) Core(TM) i7-9750H CPU @ 2.60GHz
machdep.cpu.vendor: GenuineIntel
machdep.cpu.features: FPU VME DE PSE TSC MSR SSE SSE2 SS HTT SSE3 PCLMULQDQ SSSE3 FMA CX16 SSE4.1 SSE4.2 x2APIC MOVBE POPCNT AES XSAVE OSXSAVE AVX1.0 RDRAND F16C
machdep.cpu.leaf7_features: RDWRFSGS SGX BMI1 HLE AVX2 SMEP BMI2 ERMS INVPCID RTM RDSEED ADX SMAP CLFSOPT IPT
vm.swapusage: total = 2048.00M  used = 1024.50M  free = 1023.50M  (encrypted)
hw.optional.avx1_0: 1
hw.optional.avx2_0: 1
hw.optional.fma: 1
hw.optional.sse4_2: 1
hw.optional.avx512f: 0
"""  # noqa: E501 - sysctl output, verbatim


def test_apple_silicon_cpu():
    cpu = cpu_from_sysctl(parse_sysctl(M2))
    assert cpu["arch"] == "arm64" and cpu["vendor"] == "Apple" and cpu["brand"] == "Apple M2"
    assert (cpu["physical"], cpu["logical"]) == (8, 8)
    assert set(cpu["flags"]) == {"neon", "asimd", "dotprod", "i8mm", "bf16", "fp16"}


def test_intel_mac_cpu():
    cpu = cpu_from_sysctl(parse_sysctl(INTEL_MAC))
    assert cpu["arch"] == "x86_64" and cpu["vendor"] == "Intel"
    assert (cpu["physical"], cpu["logical"]) == (6, 12)
    assert {"sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c"} <= set(cpu["flags"])
    assert "avx512f" not in cpu["flags"]  # hw.optional.avx512f: 0


def test_memory_and_swap():
    mem = memory_from_sysctl(parse_sysctl(M2))
    assert mem["total"] == 8 * GIB
    assert mem["swap_total"] == 1024 * MIB
    assert mem["swap_free"] == int(680.75 * MIB)


def test_collect_darwin_apple_silicon(monkeypatch):
    monkeypatch.setattr(probe_macos, "run_sysctl", lambda keys=probe_macos.SYSCTL_KEYS: M2)
    hw = collect(system="darwin", machine="arm64")
    assert hw.os == "darwin" and hw.cpu.brand == "Apple M2"
    assert hw.memory.total == 8 * GIB
    (gpu,) = hw.gpus
    assert gpu.vendor == "apple" and gpu.unified and gpu.backend == "metal"
    assert gpu.budget == int(8 * GIB * 2 / 3)
    assert "2/3" in gpu.budget_basis
    assert [a.kind for a in hw.accelerators] == ["ane"]


def test_collect_darwin_sysctl_failure_is_a_note(monkeypatch):
    def broken(keys=()):
        raise FileNotFoundError("/usr/sbin/sysctl")

    monkeypatch.setattr(probe_macos, "run_sysctl", broken)
    hw = collect(system="darwin", machine="arm64")
    assert hw.memory.total is None
    assert any("sysctl" in n for n in hw.notes)
