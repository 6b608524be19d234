"""`localllm probe`: table, --json, --save, --profile, errors, `python -m localllm`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from localllm import Hardware, load_profile, probe
from localllm.cli import main

GIB = 2**30


def test_table_tells_the_truth(capsys):
    assert main(["probe", "--no-runtimes"]) == 0
    out = capsys.readouterr().out
    hw = probe()
    assert f"{hw.memory.total / GIB:.2f} GiB total" in out
    assert f"{hw.cpu.physical_cores} physical / {hw.cpu.logical_cores} logical cores" in out
    assert hw.cpu.brand in out
    for flag in hw.cpu.flags:
        assert flag in out
    assert "GPUs" in out and "Disk" in out and "Runtimes" not in out


def test_table_with_runtimes(capsys):
    assert main(["probe"]) == 0
    out = capsys.readouterr().out
    assert "llama.cpp" in out and "onnxruntime" in out and "CPUExecutionProvider" in out


def test_json_is_valid_and_a_profile(capsys):
    assert main(["probe", "--json", "--no-runtimes"]) == 0
    data = json.loads(capsys.readouterr().out)
    hw = Hardware.from_dict(data)
    assert hw.memory.total == probe().memory.total
    assert data["cpu"]["flags"] == list(probe().cpu.flags)


def test_save_writes_a_loadable_profile(tmp_path, capsys):
    path = tmp_path / "sub" / "me.toml"
    assert main(["probe", "--save", str(path), "--no-runtimes"]) == 0
    assert str(path) in capsys.readouterr().out
    saved = Hardware.from_toml(path)
    assert saved == load_profile(path)
    assert saved.memory.total == probe().memory.total


def test_show_a_profile(capsys):
    assert main(["probe", "--profile", "workstation-2x-rtx3090"]) == 0
    out = capsys.readouterr().out
    assert out.count("NVIDIA GeForce RTX 3090") == 2
    assert "24.00 GiB" in out and "936 GB/s" in out and "compute 8.6" in out


def test_container_profile_shows_the_cgroup(capsys):
    assert main(["probe", "--profile", "container-4gib"]) == 0
    out = capsys.readouterr().out
    assert "cgroup v2 limit 4.00 GiB" in out and "cgroup quota 2" in out


def test_unified_gpu_budget_shown(capsys):
    assert main(["probe", "--profile", "macbook-air-m2-8gb"]) == 0
    out = capsys.readouterr().out
    assert "budget 5.33 GiB" in out and "recommendedMaxWorkingSetSize" in out


def test_list_profiles(capsys):
    assert main(["probe", "--list-profiles"]) == 0
    assert "raspberry-pi-5-8gb" in capsys.readouterr().out.split()


def test_unknown_profile_is_an_error_message_not_a_traceback(capsys):
    assert main(["probe", "--profile", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: hardware profile 'nope' not found")
    assert "Traceback" not in err and "container-4gib" in err


def test_python_dash_m(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "localllm", "probe", "--json", "--no-runtimes"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["os"] == probe().os


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("localllm ")
    with pytest.raises(SystemExit):
        main(["probe", "-h"])
    assert "--save FILE" in capsys.readouterr().out
