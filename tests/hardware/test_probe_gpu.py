"""GPUs and accelerators: NVML faked at the `pynvml` module boundary, sysfs/Jetson fixture trees."""

from __future__ import annotations

import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import localllm
from localllm.hardware.detect import collect
from localllm.hardware.gpu import (
    accelerators,
    apple_gpu,
    apple_gpu_budget,
    jetson_gpu,
    nvidia_gpus,
    nvidia_present,
    sysfs_gpus,
)

ROOTS = Path(__file__).resolve().parents[1] / "fixtures" / "roots"
GIB = 2**30
MIB = 2**20


class NVMLError(Exception):
    pass


def fake_pynvml(gpus: list[dict], *, init_error: str | None = None) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's `pynvml` with the calls localllm makes."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError
    m.NVML_CLOCK_MEM = 2
    m.calls = {"init": 0, "shutdown": 0}

    def init():
        if init_error:
            raise NVMLError(init_error)
        m.calls["init"] += 1

    def memory(h):
        if h.get("memory_error"):
            raise NVMLError("Unknown Error")
        return types.SimpleNamespace(total=h["total"], free=h["free"], used=h["total"] - h["free"])

    m.nvmlInit = init
    m.nvmlShutdown = lambda: m.calls.__setitem__("shutdown", m.calls["shutdown"] + 1)
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    m.nvmlSystemGetCudaDriverVersion = lambda: 12040
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]
    m.nvmlDeviceGetName = lambda h: h["name"]
    m.nvmlDeviceGetUUID = lambda h: h["uuid"]
    m.nvmlDeviceGetMemoryInfo = memory
    m.nvmlDeviceGetCudaComputeCapability = lambda h: h["cc"]
    m.nvmlDeviceGetMemoryBusWidth = lambda h: h["bus"]
    m.nvmlDeviceGetMaxClockInfo = lambda h, kind: h["mem_mhz"] if kind == 2 else 0
    return m


RTX_4090 = dict(
    name="NVIDIA GeForce RTX 4090",
    uuid="GPU-4090",
    total=24564 * MIB,
    free=23000 * MIB,
    cc=(8, 9),
    bus=384,
    mem_mhz=10501,
)
RTX_3090 = dict(
    name=b"NVIDIA GeForce RTX 3090",
    uuid=b"GPU-3090",
    total=24576 * MIB,
    free=24000 * MIB,
    cc=(8, 6),
    bus=384,
    mem_mhz=9751,
)


def test_no_pynvml_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    gpus, notes = nvidia_gpus()
    assert gpus == []
    assert any("pynvml not importable" in n for n in notes)


def test_real_pynvml():
    """The real nvidia-ml-py: without a driver (CI here) NVML fails to start and we get a note."""
    gpus, notes = nvidia_gpus()
    if nvidia_present():  # a machine with an NVIDIA driver: real GPUs come back
        assert gpus and all(g.memory_total for g in gpus)
    else:
        assert gpus == []
        assert any("NVML could not start" in n for n in notes)


def test_nvml_init_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([], init_error="Driver Not Loaded"))
    gpus, notes = nvidia_gpus()
    assert gpus == [] and "Driver Not Loaded" in notes[0]


def test_zero_gpus(monkeypatch):
    fake = fake_pynvml([])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert nvidia_gpus() == ([], [])
    assert fake.calls == {"init": 1, "shutdown": 1}


def test_one_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([RTX_4090]))
    gpus, notes = nvidia_gpus()
    assert notes == []
    (g,) = gpus
    assert (g.index, g.vendor, g.name, g.uuid) == (0, "nvidia", "NVIDIA GeForce RTX 4090", "GPU-4090")
    assert g.memory_total == 24564 * MIB and g.memory_free == 23000 * MIB
    assert g.usable_memory == 23000 * MIB
    assert g.compute_capability == "8.9" and g.backend == "cuda"
    assert g.driver_version == "550.54.15" and g.cuda_version == "12.4"
    assert g.bandwidth_gbs == pytest.approx(1008, rel=0.01)  # spec sheet: 1008 GB/s
    assert not g.unified


def test_two_gpus_bytes_names(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([RTX_4090, RTX_3090]))
    gpus, _ = nvidia_gpus()
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[1].name == "NVIDIA GeForce RTX 3090" and gpus[1].uuid == "GPU-3090"
    assert gpus[1].compute_capability == "8.6"
    assert gpus[1].bandwidth_gbs == pytest.approx(936, rel=0.01)  # spec sheet: 936 GB/s


def test_gpu_whose_memory_query_fails(monkeypatch):
    broken = dict(RTX_3090, memory_error=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([RTX_4090, broken]))
    gpus, notes = nvidia_gpus()
    assert len(gpus) == 2
    assert gpus[1].memory_total is None and gpus[1].usable_memory is None
    assert gpus[0].memory_total == 24564 * MIB
    assert any("memory of GPU 1" in n and "Unknown Error" in n for n in notes)


def test_collect_uses_nvml_only_when_the_driver_is_there(monkeypatch, tmp_path):
    fake = fake_pynvml([RTX_4090])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    hw = collect(root=tmp_path, system="linux", machine="x86_64")
    assert hw.gpus == () and fake.calls["init"] == 0  # no driver: NVML is not even loaded
    (tmp_path / "proc/driver/nvidia").mkdir(parents=True)
    assert nvidia_present(tmp_path)
    hw = collect(root=tmp_path, system="linux", machine="x86_64")
    assert [g.name for g in hw.gpus] == ["NVIDIA GeForce RTX 4090"]


def test_wsl2_gpu_device_counts_as_nvidia_driver(tmp_path):
    assert not nvidia_present(tmp_path)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/dxg").write_text("")
    assert nvidia_present(tmp_path)


def test_amd_sysfs():
    gpus, notes = sysfs_gpus(ROOTS / "amd_sysfs")
    (g,) = gpus
    assert (g.vendor, g.name, g.backend) == ("amd", "AMD Radeon RX 7900 XTX", "rocm")
    assert g.memory_total == 25753026560
    assert g.memory_free == 25753026560 - 805306368
    # the Intel iGPU exposes no memory size: reported, not listed
    assert any("Intel GPU 0xa780" in n and "not listed" in n for n in notes)


def test_amd_gpu_follows_nvidia_indices():
    gpus, _ = sysfs_gpus(ROOTS / "amd_sysfs", first_index=2)
    assert gpus[0].index == 2


def test_intel_gpu_with_local_memory(tmp_path):
    dev = tmp_path / "sys/class/drm/card0/device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x8086\n")
    (dev / "device").write_text("0x56a0\n")
    (dev / "lmem_total_bytes").write_text(f"{16 * GIB}\n")
    (g,), notes = sysfs_gpus(tmp_path)
    assert (g.vendor, g.memory_total, g.backend) == ("intel", 16 * GIB, "sycl")
    assert notes == []


def test_jetson_is_unified_memory():
    hw = collect(root=ROOTS / "jetson", system="linux", machine="aarch64")
    (g,) = hw.gpus
    assert g.vendor == "nvidia" and g.unified and g.backend == "cuda"
    assert g.name == "NVIDIA Jetson Orin Nano Developer Kit"
    assert g.memory_total == 7990 * MIB
    assert g.budget == 6 * GIB == g.usable_memory  # MemAvailable at probe time
    assert "Jetson" in g.budget_basis
    assert any("R36" in n for n in hw.notes)


def test_jetson_absent():
    assert jetson_gpu(ROOTS / "amd_sysfs", ram_total=GIB, ram_available=GIB) == ([], [])


@pytest.mark.parametrize(
    "ram_gib,budget_mib", [(8, 5461.33), (16, 10922.67), (32, 21845.33), (64, 49152.0), (96, 73728.0)]
)
def test_apple_budget_matches_metal_recommended_working_set(ram_gib, budget_mib):
    budget, basis = apple_gpu_budget(ram_gib * GIB)
    assert budget / MIB == pytest.approx(budget_mib, abs=0.01)
    assert "recommendedMaxWorkingSetSize" in basis


def test_apple_gpu():
    g = apple_gpu("Apple M2", ram_total=8 * GIB)
    assert g.unified and g.backend == "metal" and g.vendor == "apple"
    assert g.usable_memory == g.budget < 8 * GIB
    assert g.bandwidth_gbs == 100


def test_accelerators_from_dev(tmp_path):
    (tmp_path / "dev/accel").mkdir(parents=True)
    (tmp_path / "dev/accel/accel0").write_text("")
    (tmp_path / "dev/neuron0").write_text("")
    (tmp_path / "dev/neuron1").write_text("")
    (tmp_path / "dev/null").write_text("")
    found = accelerators(tmp_path, system="linux")
    assert [(a.kind, a.path) for a in found] == [
        ("npu", "/dev/accel/accel0"),
        ("neuron", "/dev/neuron0"),
        ("neuron", "/dev/neuron1"),
    ]


def test_apple_neural_engine_listed():
    assert [a.kind for a in accelerators(Path("/nonexistent"), system="darwin", arch="arm64")] == ["ane"]
    assert accelerators(Path("/nonexistent"), system="darwin", arch="x86_64") == []


# -- a real NVIDIA GPU (pytest -m gpu) ---------------------------------------------------------


@pytest.mark.gpu
def test_real_nvidia_gpu_matches_nvidia_smi():
    """The probe sees the GPUs nvidia-smi sees: same count and names, total memory within 1 %."""
    smi = shutil.which("nvidia-smi")
    assert smi, "the gpu marker needs a machine with the NVIDIA driver (nvidia-smi on PATH)"
    out = subprocess.run(
        [smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = [line.rsplit(",", 1) for line in out.splitlines() if line.strip()]
    expected = [(name.strip(), int(mib) * MIB) for name, mib in rows]  # nvidia-smi: MiB
    assert expected, f"nvidia-smi lists no GPU:\n{out}"

    hw = localllm.probe(refresh=True)
    gpus = [g for g in hw.gpus if g.vendor == "nvidia"]
    assert [g.name for g in gpus] == [name for name, _ in expected], hw.notes
    for g, (name, total) in zip(gpus, expected, strict=True):
        assert g.memory_total is not None, hw.notes
        assert abs(g.memory_total - total) <= 0.01 * total, (name, g.memory_total, total)
