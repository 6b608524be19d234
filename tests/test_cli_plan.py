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
