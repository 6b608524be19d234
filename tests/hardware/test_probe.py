"""The live probe on this machine: held against `free -b`, `nproc` and /proc/cpuinfo; caching; runtimes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import localllm
import localllm.paths
from localllm import Hardware, probe


def _free_b() -> dict[str, int]:
    """`free -b` (procps) as {"Mem.total": ..., "Mem.available": ..., "Swap.total": ...}."""
    out = subprocess.run(["free", "-b"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    header = lines[0].split()
    values = {}
    for line in lines[1:]:
        label, *numbers = line.split()
        for key, number in zip(header, numbers, strict=False):  # "Swap:" has fewer columns than "Mem:"
            values[f"{label.rstrip(':')}.{key}"] = int(number)
    return values


def test_memory_matches_free():
    hw = probe(refresh=True)
    free = _free_b()
    assert hw.memory.total == free["Mem.total"]
    assert hw.memory.swap_total == free["Swap.total"]
    # available moves between the two reads; 256 MiB is far more than it moves here
    assert abs(hw.memory.available - free["Mem.available"]) < 256 * 2**20
    assert 0 < hw.memory.usable <= hw.memory.available


def test_cores_match_nproc_and_cpuinfo():
    hw = probe()
    nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout)
    assert hw.cpu.affinity_cores == nproc
    assert hw.cpu.effective_cores <= nproc
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert hw.cpu.logical_cores == cpuinfo.count("processor\t:")
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), None
    )
    if model:  # x86
        assert hw.cpu.brand == model
        flags = next(line for line in cpuinfo.splitlines() if line.startswith("flags")).split()
        for name in ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "amx_int8"):
            assert hw.cpu.has(name) == (name in flags), name
    assert 1 <= hw.cpu.physical_cores <= hw.cpu.logical_cores


def test_disk_free_at_localllm_home(tmp_path, monkeypatch):
    home = tmp_path / "not-yet-created" / "cache"
    monkeypatch.setenv("LOCALLLM_HOME", str(home))
    hw = probe(refresh=True)
    assert hw.disk_path == str(home)
    assert abs(hw.disk_free - shutil.disk_usage(tmp_path).free) < 512 * 2**20
    assert not home.exists()  # probing creates nothing


def test_cached_until_refresh():
    first = probe()
    assert probe() is first
    again = probe(refresh=True)
    assert again is not first and isinstance(again, Hardware)
    assert probe() is again


def test_live_probe_round_trips_through_toml_and_json():
    hw = probe()
    assert Hardware.from_toml(hw.to_toml()) == hw
    assert Hardware.from_dict(json.loads(json.dumps(hw.to_dict()))) == hw


def test_runtimes_are_separate_and_lazy():
    code = (
        "import sys, localllm\n"
        "hw = localllm.probe()\n"
        "assert hw.runtimes == (), hw.runtimes\n"
        "heavy = [m for m in ('llama_cpp', 'onnxruntime', 'pynvml', 'textual', 'cpuinfo') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "hw2 = localllm.probe(runtimes=True)\n"
        "assert 'llama_cpp' in sys.modules and 'onnxruntime' in sys.modules\n"
        "assert localllm.probe(runtimes=True).runtimes is hw2.runtimes  # cached\n"
        "assert localllm.probe() is hw  # the base probe is unchanged\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_runtimes_report_installed_backends():
    hw = probe(runtimes=True)
    llama = hw.runtime("llama.cpp")
    ort = hw.runtime("onnxruntime")
    import llama_cpp
    import onnxruntime

    assert llama.installed and llama.version == llama_cpp.__version__
    assert llama.gpu_offload == bool(llama_cpp.llama_supports_gpu_offload())
    assert ort.installed and ort.version == onnxruntime.__version__
    assert "CPUExecutionProvider" in ort.providers


def test_probe_never_raises_when_everything_fails(monkeypatch):
    from localllm.hardware import linux as probe_linux

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(probe_linux, "read_memory", boom)
    monkeypatch.setattr(localllm.paths, "home", boom)
    hw = localllm.probe(refresh=True)
    assert hw.memory.total is None and hw.disk_free is None
    assert any("memory: probe failed (RuntimeError: simulated failure)" in n for n in hw.notes)
    assert hw.cpu.logical_cores and hw.cpu.flags  # the other readers still answered
    monkeypatch.undo()
    assert localllm.probe(refresh=True).memory.total  # and recovers


def test_localllm_home_read_at_call_time(monkeypatch, tmp_path):
    from localllm.paths import home

    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path / "a"))
    assert home() == tmp_path / "a"
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path / "b"))
    assert home() == tmp_path / "b"
    monkeypatch.delenv("LOCALLLM_HOME")
    assert home().name == "localllm" and os.path.isabs(home())


def test_default_home_matches_platformdirs(monkeypatch, tmp_path):
    from platformdirs import user_cache_dir

    from localllm.paths import home

    monkeypatch.delenv("LOCALLLM_HOME")
    for xdg in (None, str(tmp_path / "xdg")):
        if xdg is None:
            monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        else:
            monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        assert home() == Path(user_cache_dir("localllm", appauthor=False))
