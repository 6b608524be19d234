"""localllm bench, memory bandwidth, the calibration store, and the estimator held against measured RSS."""

from __future__ import annotations

import dataclasses
import json

import pytest

from localllm.calibration import (
    BandwidthRecord,
    BenchRecord,
    Calibration,
    load_calibration,
    machine_file,
    machine_key,
    model_signature,
    save_bandwidth,
    save_bench,
)
from localllm.catalog import Family
from localllm.hardware import CPUInfo, Hardware, MemoryInfo
from localllm.planner import THREAD_SWITCH_MARGIN, plan_local
from localllm.testing import write_llama_gguf

MiB = 2**20


def _hw(**memory) -> Hardware:
    return Hardware(
        os="linux",
        cpu=CPUInfo(arch="x86_64", brand="Test CPU", physical_cores=4, logical_cores=8),
        memory=MemoryInfo(total=16 * 2**30, available=12 * 2**30, **memory),
    )


FAMILY = Family(
    name="shape",
    display_name="shape",
    arch="llama",
    n_layer=30,
    n_head=9,
    n_head_kv=3,
    head_dim=64,
    n_embd=576,
    n_ctx_train=8192,
    n_vocab=49152,
    n_ff=1536,
    tied_embeddings=True,
)
WEIGHTS = 100 * MiB


def _record(threads: int, tps: float, *, weight_bytes: int = WEIGHTS, date: str = "2025-03-04T10:00:00") -> BenchRecord:
    return BenchRecord(
        signature=model_signature(FAMILY),
        weight_bytes=weight_bytes,
        n_threads=threads,
        n_gpu_layers=0,
        n_ctx=2048,
        decode_tps=tps,
        prompt_tps=100.0,
        peak_rss=300 * MiB,
        date=date,
    )


# -- the estimator against a real process ------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm_shape_gguf(tmp_path_factory):
    """A random-weight model with SmolLM2-135M's shape (F16, 270 MB), built once."""
    return write_llama_gguf(
        tmp_path_factory.mktemp("smollm") / "smollm2-135m-random-f16.gguf",
        "smollm2-135m",
        f16=True,
        name="smollm2-135m-random",
    )


@pytest.mark.parametrize("ctx", [512, 8192])
def test_estimate_is_within_target_of_measured_peak_rss(smollm_shape_gguf, ctx):
    """Regression check of benchmarks/estimator_accuracy.py: a fresh process loads the model, generates a few
    tokens; its VmHWM (mapped weights included) is within 10 % or 100 MiB of the planner's host estimate."""
    from localllm.bench import bench

    r = bench(smollm_shape_gguf, n_prompt=16, n_gen=4, context=ctx, repeat=1, warmup=False)
    measured, predicted = r.peak_rss, r.predicted.host_bytes
    assert r.placement["n_ctx"] == ctx and r.runs[0].decode_tokens >= 1
    assert measured > 270e6  # the F16 weights are really resident
    assert abs(predicted - measured) <= max(0.10 * measured, 100 * MiB), (predicted / MiB, measured / MiB)
    assert predicted >= measured * 0.95  # errs high, never far below: an under-estimate is an OOM


# -- bandwidth -----------------------------------------------------------------------------------------


def test_bandwidth_measurement_is_sane():
    from localllm.hardware.bandwidth import measure_bandwidth

    r = measure_bandwidth(nbytes=64 * MiB, threads=2, passes=2)
    assert 0.5 < r.per_thread_gbs < 2000 and r.per_thread_gbs <= r.gbs < 4000
    assert r.threads == 2 and r.bytes == 64 * MiB and r.date[:2] == "20"
    with pytest.raises(ValueError, match="at least 1 MiB"):
        measure_bandwidth(nbytes=1000)


def test_bandwidth_is_kept_per_machine_and_reported_by_probe():
    from localllm.hardware.bandwidth import machine_bandwidth
    from localllm.hardware.detect import probe

    hw = probe(refresh=True)
    assert hw.memory.bandwidth_gbs is None  # nothing kept in this test's empty home
    first = machine_bandwidth(hw)
    assert machine_file(hw).is_file()
    assert machine_bandwidth(hw) == first  # kept: not measured again
    assert probe(refresh=True).memory.bandwidth_gbs == first.gbs
    save_bandwidth(hw, dataclasses.replace(first, gbs=123.0))
    assert probe(refresh=True).memory.bandwidth_gbs == 123.0
    probe(refresh=True)


# -- the calibration store -----------------------------------------------------------------------------


def test_calibration_round_trip_and_matching():
    hw = _hw()
    assert load_calibration(hw) == Calibration(key=machine_key(hw))
    save_bench(hw, _record(2, 40.0))
    save_bench(hw, _record(2, 42.0, date="2025-03-05T10:00:00"))  # same model/threads: replaces
    save_bench(hw, _record(1, 30.0))
    cal = load_calibration(hw)
    assert len(cal.bench) == 2
    assert cal.lookup(FAMILY, WEIGHTS, n_threads=2).decode_tps == 42.0
    assert cal.lookup(FAMILY, int(WEIGHTS * 1.02), n_threads=2) is not None  # header bytes differ a little
    assert cal.lookup(FAMILY, WEIGHTS * 2, n_threads=2) is None  # another quant
    assert cal.lookup(dataclasses.replace(FAMILY, n_layer=31), WEIGHTS) is None
    other = dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, brand="Other CPU"))
    assert machine_key(other) != machine_key(hw) and load_calibration(other).bench == ()


def test_malformed_calibration_file_is_ignored(caplog):
    hw = _hw()
    path = machine_file(hw)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert load_calibration(hw).bench == ()
    path.write_text(json.dumps({"bench": [{"signature": "x"}], "bandwidth": {"gbs": 1}}))
    cal = load_calibration(hw)
    assert cal.bench == () and cal.bandwidth is None


def test_planner_prefers_measured_speed_and_says_so():
    hw = _hw(bandwidth_gbs=20.0)
    formula = plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048, calibration=Calibration())
    assert formula.tokens_per_s_basis.startswith("estimated from bandwidth")
    cal = Calibration(key="k", bench=(_record(4, 17.5),))
    measured = plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048, calibration=cal)
    assert measured.tokens_per_s == 17.5 != formula.tokens_per_s
    assert "measured on this machine on 2025-03-04" in measured.tokens_per_s_basis
    assert "measured on this machine on 2025-03-04" in measured.explain()
    # a record for other threads is not this plan's speed
    assert (
        plan_local(
            FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048, calibration=Calibration(bench=(_record(3, 9.0),))
        ).tokens_per_s
        == formula.tokens_per_s
    )


def test_planner_reads_this_machines_store_for_a_live_probe_but_not_a_profile():
    hw = _hw(bandwidth_gbs=20.0)
    save_bench(hw, _record(4, 17.5))
    assert plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048).tokens_per_s == 17.5
    profile = dataclasses.replace(hw, name="some-laptop")
    assert plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=profile, context=2048).tokens_per_s != 17.5


def test_planner_takes_the_thread_count_bench_measured_fastest():
    hw = _hw(bandwidth_gbs=20.0)
    cal = Calibration(bench=(_record(4, 10.0), _record(2, 16.0), _record(1, 12.0)))
    p = plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048, calibration=cal)
    assert p.placement.n_threads == 2 and p.tokens_per_s == 16.0
    assert any("fastest measured here" in r and "2: 16.0" in r for r in p.reasons)
    # one measured count is no comparison; an explicit count always wins
    assert (
        plan_local(
            FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048, calibration=Calibration(bench=(_record(2, 16.0),))
        ).placement.n_threads
        == 4
    )
    assert (
        plan_local(
            FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048, calibration=cal, threads=3
        ).placement.n_threads
        == 3
    )
    with pytest.raises(ValueError, match="threads"):
        plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=hw, threads=0)


def test_planner_keeps_the_default_threads_for_a_gain_within_bench_noise():
    hw = _hw(bandwidth_gbs=20.0)  # 4 cores: the default is 4 threads
    close = Calibration(bench=(_record(4, 10.0), _record(2, 10.5)))  # +5 %: noise
    p = plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048, calibration=close)
    assert p.placement.n_threads == 4 and p.tokens_per_s == 10.0
    clear = Calibration(bench=(_record(4, 10.0), _record(2, 11.5)))  # +15 %: a real gain
    assert (
        plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=hw, context=2048, calibration=clear).placement.n_threads == 2
    )


# -- the CLI -------------------------------------------------------------------------------------------


def test_bench_cli_json_on_a_tiny_model(tiny_gguf, capsys):
    from localllm.cli import main
    from localllm.hardware.detect import probe

    rc = main(
        [
            "bench",
            str(tiny_gguf),
            "--json",
            "--repeat",
            "2",
            "--prompt",
            "8",
            "--gen",
            "6",
            "--ctx",
            "256",
            "--threads",
            "1",
        ]
    )
    out = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert out["placement"]["n_ctx"] == 256 and out["placement"]["n_threads"] == 1
    assert len(out["runs"]) == 2 and all(r["decode_tokens"] >= 1 and r["peak_rss"] > 0 for r in out["runs"])
    s = out["summary"]
    assert s["decode_tps"]["mean"] > 0 and s["decode_tps"]["stdev"] >= 0 and s["load_s"]["mean"] > 0
    assert out["predicted"]["host_bytes"] > 0 and out["ratios"]["peak_rss"] > 0
    assert out["bandwidth"]["gbs"] > 0
    # kept (the median of the runs): the next plan for this file here uses the measured speed; or,
    # when the runs disagreed on a busy machine, nothing is kept and the output says why
    cal = load_calibration(probe(refresh=True))
    if out["unsteady"] is None:
        assert [r.n_threads for r in cal.bench] == [1] and out["saved_to"]
        median = sorted(r["decode_tps"] for r in out["runs"])
        assert cal.bench[0].decode_tps == pytest.approx(sum(median) / 2, rel=1e-3)
    else:
        assert "varied too much" in out["unsteady"] and not cal.bench and out["saved_to"] is None


def test_bench_cli_text_and_errors(tiny_gguf, capsys, tmp_path):
    from localllm.cli import main

    assert (
        main(
            [
                "bench",
                str(tiny_gguf),
                "--repeat",
                "1",
                "--prompt",
                "4",
                "--gen",
                "3",
                "--ctx",
                "128",
                "--threads",
                "1",
                "--no-save",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "decode tokens/s" in text and "peak resident memory" in text and "predicted" in text
    assert "kept in" not in text
    assert main(["bench", str(tmp_path / "missing.gguf")]) == 1
    assert "no model file" in capsys.readouterr().err
    assert main(["bench", "--synthetic", "gpt-9"]) == 1
    assert "unknown --synthetic shape" in capsys.readouterr().err
    assert main(["bench"]) == 1  # nothing downloaded in this test's home
    err = capsys.readouterr().err
    assert "is not on disk" in err and "--synthetic" in err and "localllm pull" in err


def test_bench_cli_thread_sweep_feeds_the_planner(tiny_gguf, capsys):
    from localllm.catalog import family_from_gguf_metadata
    from localllm.cli import main
    from localllm.hardware.detect import probe
    from localllm.validate import validate_gguf

    assert (
        main(
            ["bench", str(tiny_gguf), "--sweep-threads", "--repeat", "1", "--prompt", "4", "--gen", "4", "--ctx", "128"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "decode tokens/s by threads" in out and "fastest" in out
    hw = probe(refresh=True)
    cal = load_calibration(hw)
    cores = int(hw.cpu.effective_cores)
    assert sorted(r.n_threads for r in cal.bench) == list(range(1, cores + 1))
    info = validate_gguf(tiny_gguf)
    family = family_from_gguf_metadata(info.metadata, name="tiny", tied_embeddings=False)
    p = plan_local(family, weight_bytes=info.tensor_bytes, hardware=hw, context=128)
    fastest = max(cal.bench, key=lambda r: r.decode_tps)
    default = next(r for r in cal.bench if r.n_threads == cores)
    chosen = fastest if fastest.decode_tps >= THREAD_SWITCH_MARGIN * default.decode_tps else default
    assert p.placement.n_threads == chosen.n_threads and p.tokens_per_s == chosen.decode_tps
    assert "measured on this machine" in p.tokens_per_s_basis


def test_gpu_memory_is_this_processes_share_from_nvml(monkeypatch):
    """No GPU here: NVML is faked at the pynvml module boundary."""
    import os
    import sys
    import types

    from localllm.bench import _gpu_memory

    proc = types.SimpleNamespace
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None
    fake.nvmlShutdown = lambda: None
    fake.nvmlDeviceGetCount = lambda: 2
    fake.nvmlDeviceGetHandleByIndex = lambda i: i
    fake.nvmlDeviceGetComputeRunningProcesses = lambda h: [
        proc(pid=os.getpid(), usedGpuMemory=(300 + h) * MiB),
        proc(pid=1, usedGpuMemory=9 * 2**30),
    ]
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert _gpu_memory() == 601 * MiB
    fake.nvmlDeviceGetComputeRunningProcesses = lambda h: [proc(pid=1, usedGpuMemory=5)]
    assert _gpu_memory() is None

    def broken():
        raise RuntimeError("NVML Shared Library Not Found")

    fake.nvmlInit = broken
    assert _gpu_memory() is None


# -- robust calibration --------------------------------------------------------------------------


def _result(decode: list[float]):
    from localllm.bench import BenchResult, Prediction, RunMeasurement

    runs = tuple(
        RunMeasurement(
            load_s=0.5,
            ttft_s=0.1,
            prompt_tokens=16,
            prompt_tps=100.0,
            decode_tokens=32,
            decode_tps=d,
            peak_rss=300 * MiB,
            rss_before_load=50 * MiB,
        )
        for d in decode
    )
    return BenchResult(
        model="/m/shape.gguf",
        weight_bytes=WEIGHTS,
        signature=model_signature(FAMILY),
        placement={"n_threads": 2, "n_gpu_layers": 0, "n_ctx": 2048, "flash_attn": True},
        n_prompt=16,
        n_gen=32,
        runs=runs,
        predicted=Prediction(decode_tps=70.0, decode_basis="x", host_bytes=300 * MiB, gpu_bytes=None),
        date="2026-12-01T10:00:00",
    )


def test_bench_keeps_the_median_so_one_busy_run_does_not_count(tmp_path):
    """Issue 11: runs at 2.4, 72 and 75 tok/s once saved "50.1 +- 41.3"; the plan then used 50.1."""
    from localllm.bench import record
    from localllm.commands.bench import _render

    r = _result([2.4, 72.0, 75.0])
    assert r.unsteady is None and r.outliers == (0,)
    bw = BandwidthRecord(gbs=30.0, per_thread_gbs=15.0, threads=2, bytes=1 << 28, date="2026-12-01")
    assert "not counted in it: run 1 (2.4 tok/s)" in _render(r, bw, None, None, _hw())
    assert r.to_record().decode_tps == 72.0
    path = record(r, _hw())
    assert path is not None
    kept = load_calibration(_hw()).lookup(FAMILY, WEIGHTS, n_threads=2)
    assert kept.decode_tps == 72.0
    p = plan_local(FAMILY, weight_bytes=WEIGHTS, hardware=_hw(), calibration=load_calibration(_hw()), threads=2)
    assert p.tokens_per_s == pytest.approx(72.0) and p.tokens_per_s_basis.startswith("measured")


def test_bench_refuses_to_keep_runs_that_disagree():
    from localllm.bench import record

    r = _result([10.0, 40.0, 70.0])
    assert r.unsteady and "varied too much" in r.unsteady and "10.0, 40.0, 70.0" in r.unsteady
    assert record(r, _hw()) is None
    assert load_calibration(_hw()).lookup(FAMILY, WEIGHTS, n_threads=2) is None
