"""`localllm plan` and `localllm models` through the real CLI entry point."""

from __future__ import annotations

import json

from localllm.cli import main


def test_plan_falcon_on_the_16gb_laptop_prints_choice_breakdown_and_reasons(capsys):
    rc = main(["plan", "falcon-7b", "--profile", "laptop-x86-16gb"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("falcon-7b-instruct:q8_0")
    assert "weights" in out and "KV" in out and "why:" in out and "rejected:" in out
    assert "falcon-7b-instruct:f16: does not fit" in out


def test_plan_json(capsys):
    rc = main(["plan", "--profile", "container-4gib", "--json", "--ctx", "2048"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["fits"] is True and data["placement"]["n_ctx"] == 2048
    assert data["needed"] <= data["available"] <= 4 * 2**30
    assert set(data["memory"]["cpu"]) >= {"weights", "kv_cache", "compute", "overhead", "total"}


def test_plan_that_does_not_fit_exits_1(capsys):
    rc = main(["plan", "llama-3.1-8b-instruct:f16", "--profile", "container-4gib"])
    assert rc == 1 and "DOES NOT FIT" in capsys.readouterr().out


def test_unknown_model_and_quant_are_clear_errors(capsys):
    assert main(["plan", "qwen2.5-1.5b-instrukt"]) == 1
    err = capsys.readouterr().err
    assert "did you mean" in err and "qwen2.5-1.5b-instruct" in err
    assert main(["plan", "qwen2.5-1.5b-instruct:q9"]) == 1
    assert "available: q2_k" in capsys.readouterr().err


def test_models_lists_every_variant_with_its_fit(capsys):
    rc = main(["models", "--profile", "laptop-x86-8gb"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "falcon-7b-instruct:f16" in out and "does not fit" in out and "CPU" in out


def test_models_fits_on_this_machine(capsys):
    rc = main(["models", "--fits", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rc == 0 and rows and all(r["fits"] for r in rows)
    assert all(r["needed"] <= r["available"] for r in rows if r["available"] is not None)


def test_models_on_a_gpu_profile_shows_gpu_and_partial(capsys):
    main(["models", "--profile", "laptop-rtx4060-16gb"])
    out = capsys.readouterr().out
    assert " GPU " in out and "partial" in out


def test_plan_file_and_onnx_folder_json_as_a_new_user_types_them():
    """`localllm plan FILE.gguf --json` and `localllm plan ONNX_FOLDER --json`, in a real process."""
    import subprocess
    import sys

    from localllm.starter import starter_gguf, starter_onnx

    for target, fmt in ((starter_gguf(), "gguf"), (starter_onnx(), "onnx")):
        done = subprocess.run(
            [sys.executable, "-m", "localllm", "plan", str(target), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert data["format"] == fmt and data["fits"] is True and data["placement"]["n_ctx"] > 0
        assert "catalog" not in done.stderr


def test_plan_of_a_path_that_is_not_there_is_not_a_catalog_miss(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "model.gguf")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: no such file: {tmp_path / 'model.gguf'}") and "no model called" not in err
