"""Measured batch throughput: kept per machine and file by bench_batch, used by the planner to pick N."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from localllm.calibration import BatchRecord, LoadRecord, load_calibration, machine_file, save_batch, save_load
from localllm.hardware import CPUInfo, Hardware, MemoryInfo
from localllm.planner import MAX_PARALLEL
from localllm.planner.batch import BATCH_COMPUTE_GAIN, compute_gain
from localllm.resolve import plan_for
from localllm.units import GIB

# benchmarks/bench_batch.py on the project's 2-core EPYC, Llama-3.2-1B-shaped Q4_K_M (tokens/s in all)
MEASURED_1B = {1: 32.8, 2: 35.8, 4: 45.7, 8: 50.9, 16: 88.5}


def _box(*, cores: int = 2, bandwidth: float | None = 20.0) -> Hardware:
    # name None: planned like a live probe, so this machine's calibration file is read
    return Hardware(
        os="linux",
        cpu=CPUInfo(arch="x86_64", brand="Test CPU", physical_cores=cores, logical_cores=cores, flags=("avx2",)),
        memory=MemoryInfo(total=32 * GIB, available=32 * GIB, bandwidth_gbs=bandwidth),
    )


def _record(path: Path, n: int, tps: float, *, threads: int = 2, size: int | None = None) -> BatchRecord:
    st = path.stat()
    return BatchRecord(
        path=os.path.abspath(path),
        file_size=st.st_size if size is None else size,
        mtime_ns=st.st_mtime_ns,
        n_seq=n,
        n_threads=threads,
        n_gpu_layers=0,
        n_ctx=256,
        aggregate_tps=tps,
        step_ms=1000 * n / tps,
        date="2026-01-01T00:00:00+00:00",
        model=path.name,
    )


def _keep(hw: Hardware, path: Path, table: dict[int, float], **kw) -> None:
    for n, tps in table.items():
        save_batch(hw, _record(path, n, tps, **kw))


def test_batch_records_round_trip_and_replace_the_same_measurement(tiny_gguf):
    hw = _box()
    save_batch(hw, _record(tiny_gguf, 4, 40.0))
    save_batch(hw, _record(tiny_gguf, 8, 50.0))
    save_batch(hw, _record(tiny_gguf, 4, 45.0))  # the same file, sequences and threads: replaces
    got = load_calibration(hw).batch
    assert sorted((r.n_seq, r.aggregate_tps) for r in got) == [(4, 45.0), (8, 50.0)]
    assert got[0].path == os.path.abspath(tiny_gguf)


def test_old_calibration_files_without_batch_records_load(tiny_gguf):
    hw = _box()
    path = machine_file(hw)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = {
        "key": "x",
        "bench": [],
        "bandwidth": {"gbs": 10.0, "per_thread_gbs": 5.0, "threads": 2, "bytes": 1, "date": "d"},
    }
    path.write_text(json.dumps(old))
    cal = load_calibration(hw)
    assert cal.batch == () and cal.bandwidth is not None and cal.bandwidth.gbs == 10.0
    save_load(hw, LoadRecord(str(tiny_gguf), 1, 1, 256, 0, "f16", False, True, 1, "d"))
    save_batch(hw, _record(tiny_gguf, 2, 20.0))  # adding a section keeps the others
    cal = load_calibration(hw)
    assert len(cal.batch) == 1 and len(cal.loads) == 1 and cal.bandwidth is not None
    # a malformed record is skipped, not fatal
    data = json.loads(path.read_text())
    data["batch"].append({"n_seq": "?"})
    path.write_text(json.dumps(data))
    assert len(load_calibration(hw).batch) == 1


def test_a_record_where_16_is_best_makes_the_plan_take_16(tiny_gguf):
    hw = _box()
    _keep(hw, tiny_gguf, MEASURED_1B)
    p = plan_for(tiny_gguf, hardware=hw, workload="batch")
    assert p.fits and p.n_seq == 16
    assert p.aggregate_tokens_per_s == 88.5
    assert p.aggregate_basis.startswith("measured by bench_batch on this machine")
    text = p.explain()
    assert "~88.5 tokens/s in all" in text and "measured by bench_batch on this machine" in text
    assert "predicted (measured" not in text
    assert any("measured 88.5 tokens/s in all by bench_batch" in r for r in p.reasons), p.reasons


def test_the_fewest_sequences_within_5_percent_of_the_best_are_taken(tiny_gguf):
    hw = _box()
    _keep(hw, tiny_gguf, {1: 30.0, 2: 40.0, 4: 48.0, 8: 50.0, 16: 49.0})  # 4 is within 5 % of 50
    p = plan_for(tiny_gguf, hardware=hw, workload="batch")
    assert p.n_seq == 4 and p.aggregate_tokens_per_s == 48.0
    assert any("within 5% of the best measured (50.0 at 8)" in r for r in p.reasons), p.reasons


def test_an_asked_parallel_reports_the_measured_throughput(tiny_gguf):
    hw = _box()
    _keep(hw, tiny_gguf, MEASURED_1B)
    p = plan_for(tiny_gguf, hardware=hw, workload="batch", parallel=8)
    assert p.n_seq == 8 and p.aggregate_tokens_per_s == 50.9


@pytest.mark.parametrize("other", ["size", "threads", "file"])
def test_records_of_another_file_or_threads_are_ignored(tiny_gguf, tiny_gguf_q8, other):
    hw = _box()
    free = plan_for(tiny_gguf, hardware=hw, workload="batch")
    if other == "size":
        _keep(hw, tiny_gguf, {1: 10.0, 2: 100.0}, size=tiny_gguf.stat().st_size + 1)
    elif other == "threads":
        _keep(hw, tiny_gguf, {1: 10.0, 2: 100.0}, threads=1)
    else:
        _keep(hw, tiny_gguf_q8, {1: 10.0, 2: 100.0})
    p = plan_for(tiny_gguf, hardware=hw, workload="batch")
    assert (p.n_seq, p.aggregate_tokens_per_s) == (free.n_seq, free.aggregate_tokens_per_s)
    assert not p.aggregate_basis.startswith("measured")


def test_the_compute_gain_follows_the_measured_table():
    assert [compute_gain(n) for n in sorted(BATCH_COMPUTE_GAIN)] == [
        BATCH_COMPUTE_GAIN[n] for n in sorted(BATCH_COMPUTE_GAIN)
    ]
    assert BATCH_COMPUTE_GAIN[4] < compute_gain(6) < BATCH_COMPUTE_GAIN[8]
    assert compute_gain(256) == BATCH_COMPUTE_GAIN[max(BATCH_COMPUTE_GAIN)]
    assert max(BATCH_COMPUTE_GAIN) == MAX_PARALLEL


def test_without_a_bandwidth_figure_the_prediction_still_takes_more_than_one(tiny_gguf):
    hw = _box(bandwidth=None)
    p = plan_for(tiny_gguf, hardware=hw, workload="batch")
    assert p.n_seq > 1 and p.aggregate_tokens_per_s is not None
