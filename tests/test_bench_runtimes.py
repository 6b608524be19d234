"""`localllm bench --runtimes`: both runtimes on one model in alternating fresh processes, kept as
RuntimeRecords in this machine's calibration, and read back by a later plan. Real llama.cpp on a
tiny GGUF and real ONNX Runtime on a tiny ONNX folder."""

from __future__ import annotations

import json

import pytest

from localllm.calibration import (
    LoadRecord,
    RuntimeRecord,
    load_calibration,
    machine_file,
    save_load,
    save_runtimes,
)
from localllm.cli import main
from localllm.hardware import CPUInfo, Hardware, MemoryInfo
from localllm.planner import plan_among
from localllm.planner.runtime import faster_runtime
from localllm.resolve import resolve


def _hw() -> Hardware:
    return Hardware(
        os="linux",
        cpu=CPUInfo(arch="x86_64", brand="Test CPU", physical_cores=2, logical_cores=2, flags=("avx2",)),
        memory=MemoryInfo(total=16 * 2**30, available=12 * 2**30),
    )


def _rec(runtime: str, session: str, tps: float, *, variant: str = "m:q4_k_m") -> RuntimeRecord:
    return RuntimeRecord(
        runtime=runtime,
        signature="sig",
        weight_bytes=1000,
        variant=variant if runtime == "llama.cpp" else "m:onnx-q4",
        n_threads=2,
        where="cpu",
        n_ctx=512,
        decode_tps=tps,
        prompt_tps=50.0,
        peak_rss=10,
        date=session,
        session=session,
    )


# -- the calibration store ---------------------------------------------------------------------------


def test_runtime_records_round_trip_replace_and_drop_orphans():
    hw = _hw()
    s1, s2 = "2026-12-01T10:00:00", "2026-12-02T10:00:00"
    save_runtimes(hw, [_rec("llama.cpp", s1, 25.0), _rec("onnxruntime", s1, 31.0)])
    got = load_calibration(hw).runtimes
    assert [(r.runtime, r.decode_tps, r.session) for r in got] == [("llama.cpp", 25.0, s1), ("onnxruntime", 31.0, s1)]
    # the same two measured again: replaced, not added
    save_runtimes(hw, [_rec("llama.cpp", s2, 26.0), _rec("onnxruntime", s2, 30.0)])
    assert [(r.decode_tps, r.session) for r in load_calibration(hw).runtimes] == [(26.0, s2), (30.0, s2)]
    # another GGUF variant against the same ONNX one: that ONNX record is replaced, and s2's
    # llama.cpp record, left without a partner from its own session, is dropped
    s3 = "2026-12-03T00:00:00"
    save_runtimes(hw, [_rec("llama.cpp", s3, 27.0, variant="m:q5_k_m"), _rec("onnxruntime", s3, 29.0)])
    got = load_calibration(hw).runtimes
    assert [(r.runtime, r.variant, r.session) for r in got] == [
        ("llama.cpp", "m:q5_k_m", s3),
        ("onnxruntime", "m:onnx-q4", s3),
    ]


def test_old_calibration_files_without_runtime_records_load_and_keep_their_sections(tiny_gguf):
    hw = _hw()
    path = machine_file(hw)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = {
        "key": "x",
        "bench": [],
        "batch": [],
        "bandwidth": {"gbs": 10.0, "per_thread_gbs": 5.0, "threads": 2, "bytes": 1, "date": "d"},
    }
    path.write_text(json.dumps(old))
    cal = load_calibration(hw)
    assert cal.runtimes == () and cal.bandwidth is not None
    save_load(hw, LoadRecord(str(tiny_gguf), 1, 1, 256, 0, "f16", False, True, 1, "d"))
    save_runtimes(hw, [_rec("llama.cpp", "s", 1.0), _rec("onnxruntime", "s", 2.0)])
    cal = load_calibration(hw)
    assert len(cal.runtimes) == 2 and len(cal.loads) == 1 and cal.bandwidth is not None
    # a malformed record is skipped; fields a later version adds are ignored
    data = json.loads(path.read_text())
    data["runtimes"].append({"runtime": "llama.cpp"})
    data["runtimes"][0]["from_the_future"] = 1
    path.write_text(json.dumps(data))
    assert [r.runtime for r in load_calibration(hw).runtimes] == ["llama.cpp", "onnxruntime"]


# -- the command, end to end ------------------------------------------------------------------------


def test_bench_runtimes_on_a_tiny_pair_keeps_records_that_a_later_plan_reads(tiny_gguf, tiny_onnx, capsys):
    from localllm.hardware.detect import probe

    args = ["bench", "--runtimes", str(tiny_onnx), str(tiny_gguf), "--json", "--repeat", "1"]
    rc = main([*args, "--prompt", "8", "--gen", "6", "--ctx", "256", "--threads", "1"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["saved_to"] and out["unsteady"] is None
    for key, runtime in (("llama.cpp", "llama.cpp"), ("onnxruntime", "onnxruntime")):
        side = out[key]
        assert side["runtime"] == runtime and side["decode_tps_median"] > 0
        runs = side["bench"]["runs"]
        assert len(runs) == 1 and runs[0]["decode_tokens"] >= 1 and runs[0]["peak_rss"] > 0
        assert side["bench"]["placement"]["n_threads"] == 1 and side["bench"]["placement"]["n_ctx"] == 256
    hw = probe(refresh=True)
    cal = load_calibration(hw)
    assert sorted(r.runtime for r in cal.runtimes) == ["llama.cpp", "onnxruntime"]
    assert len({r.session for r in cal.runtimes}) == 1 and all(r.n_threads == 1 for r in cal.runtimes)
    assert [r.n_threads for r in cal.bench] == [1]  # llama.cpp's side is also a plain bench record
    # a later plan over both files reads the comparison and takes the faster runtime, saying so
    gguf, onnx = resolve(tiny_gguf, context=256), resolve(tiny_onnx, context=256)
    assert gguf.plan is not None and onnx.plan is not None
    p = plan_among([gguf.plan.variant, onnx.plan.variant], hardware=hw, context=256, threads=1)
    rec = {r.runtime: r for r in cal.runtimes}
    expected = faster_runtime(rec["llama.cpp"].decode_tps, rec["onnxruntime"].decode_tps)
    assert p.runtime == expected
    day = rec["llama.cpp"].session[:10]
    assert any(r.startswith(f"runtime {expected}: ") and f"(localllm bench --runtimes, {day})" in r for r in p.reasons)
    assert p.tokens_per_s == rec[expected].decode_tps  # measured at the plan's threads


def test_bench_runtimes_text_output_and_no_save(tiny_gguf, tiny_onnx, capsys):
    args = ["bench", "--runtimes", str(tiny_gguf), str(tiny_onnx), "--repeat", "2", "--no-save"]
    assert main([*args, "--prompt", "4", "--gen", "4", "--ctx", "128", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    text = captured.out
    assert "tiny:local (llama.cpp) vs tiny-onnx:local (ONNX Runtime): 2 runs each, alternating" in text
    assert "ONNX Runtime / llama.cpp decode:" in text and "kept in" not in text
    # the runs alternated: llama.cpp, ONNX Runtime, then ONNX Runtime, llama.cpp
    order = [ln.split()[0] for ln in captured.err.splitlines() if " run " in ln]
    assert order == ["llama.cpp", "onnxruntime", "onnxruntime", "llama.cpp"]


def test_bench_runtimes_says_what_is_wrong_or_what_it_would_download(tiny_gguf, tiny_onnx, capsys, tmp_path):
    assert main(["bench", "--runtimes", str(tiny_gguf)]) == 1
    err = capsys.readouterr().err
    assert "both formats" in err and "qwen2.5-0.5b-instruct" in err
    assert main(["bench", "--runtimes", str(tiny_gguf), str(tiny_gguf)]) == 1
    assert "are both llama.cpp models" in capsys.readouterr().err
    assert main(["bench", "--runtimes", "smollm2-135m-instruct"]) == 1
    err = capsys.readouterr().err
    assert "has no ONNX variant in the catalog" in err and "llama-3.2-1b-instruct" in err
    # nothing on disk in this test's home: bench names what it would fetch and does not fetch it
    assert main(["bench", "--runtimes", "qwen2.5-0.5b-instruct"]) == 1
    err = capsys.readouterr().err
    assert "bench would download" in err and "--pull" in err and "onnx-community/Qwen2.5-0.5B-Instruct" in err
    assert main(["bench", str(tiny_gguf), str(tiny_onnx)]) == 1
    assert "go with --runtimes" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--synthetic", "--sweep-threads"])
def test_bench_runtimes_refuses_options_it_does_not_take(flag, capsys):
    extra = [flag, "tiny"] if flag == "--synthetic" else [flag]
    assert main(["bench", "--runtimes", *extra]) == 1
    assert "--runtimes measures a real model in both formats" in capsys.readouterr().err
