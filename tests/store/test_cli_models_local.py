"""`localllm models --local`: every model on disk, ours and other tools', with its fit."""

from __future__ import annotations

import json

from discoverhelp import SMOLLM2_SHA256

from localllm.cli import main


def test_models_local_lists_every_store_with_a_fit(stores, capsys):
    (stores.dirs[1] / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 40)  # one bad file: a row, not a failure
    rc = main(["models", "--local"])
    out = capsys.readouterr().out
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "source", "size", "fit"]
    assert all(len(line) <= 80 for line in lines if not line.startswith("/"))  # long paths keep their own line
    smol = next(line for line in lines if line.startswith("ollama:smollm2:135m "))
    assert smol.split()[1:4] == ["ollama", "98.4", "MB"] and ", ctx " in smol
    assert "CPU" in smol or "GPU" in smol or "partial" in smol
    for name in (
        "ollama:hf.co/someone/Tiny-GGUF:Q8_0",
        "lmstudio:someone/Tiny-GGUF/tiny-Q8_0.gguf",
        "gpt4all:tiny-f32.gguf",
        "hf:someone/Tiny-GGUF/tiny-Q8_0.gguf",
        str(stores.dirs[0] / "nested" / "x" / "a.gguf"),
    ):
        assert any(line.startswith(name) for line in lines), name
    at = lines.index(str(stores.dirs[1] / "broken.gguf"))
    assert lines[at + 1].split()[:3] == ["dirs", "0.0", "MB"] and lines[at + 1].rstrip().endswith("invalid")
    assert lines[at + 2].startswith("    this file is not a valid GGUF file")  # why, on the next line
    assert "ollama:smollm2:latest" not in out  # the same blob as :135m: one row


def test_models_local_json_and_fits(stores, capsys):
    (stores.dirs[1] / "broken.gguf").write_bytes(b"GGUF" + b"\xff" * 40)
    assert main(["models", "--local", "--json", "--ctx", "512"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    smol = rows["ollama:smollm2:135m"]
    assert smol["source"] == "ollama" and smol["sha256"] == SMOLLM2_SHA256 and smol["size"] == 98_362_432
    assert smol["fits"] is True and smol["n_ctx"] == 512 and smol["needed"] <= smol["available"]
    assert smol["path"].endswith("sha256-" + SMOLLM2_SHA256)
    broken = rows[str(stores.dirs[1] / "broken.gguf")]
    assert broken["fit"] == "invalid" and broken["fits"] is False and "broken.gguf" in broken["why"]
    assert main(["models", "--local", "--json", "--fits"]) == 0
    fitting = json.loads(capsys.readouterr().out)
    assert (
        fitting
        and all(r["fits"] for r in fitting)
        and str(stores.dirs[1] / "broken.gguf") not in {r["name"] for r in fitting}
    )


def test_models_local_on_a_small_profile_says_what_does_not_fit(stores, capsys):
    assert main(["models", "--local", "--profile", "container-4gib", "--ctx", "1000000", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    smol = next(r for r in rows if r["name"] == "ollama:smollm2:135m")
    assert smol["fits"] is False and smol["fit"] == "none" and "needs" in smol["why"]
    assert main(["models", "--local", "--profile", "container-4gib", "--ctx", "1000000"]) == 0
    out = capsys.readouterr().out
    assert "DOES NOT FIT" in out and "    needs " in out


def test_models_local_with_nothing_on_disk(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "none"))
    monkeypatch.delenv("LOCALLLM_MODEL_DIRS", raising=False)
    from localllm.store import discover_layouts

    monkeypatch.setattr(discover_layouts, "OLLAMA_SYSTEM_MODELS", ())
    assert main(["models", "--local", "--profile", "container-4gib"]) == 0
    out = capsys.readouterr().out
    assert "no model files on disk yet" in out or "starter" in out
