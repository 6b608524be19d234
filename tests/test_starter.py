"""The shipped starter model: both runtimes load it, it answers held-out sums, the catalog knows its hash."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import localllm
from localllm.starter import starter_gguf, starter_onnx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))
import starter_corpus as corpus  # noqa: E402

MAX_BYTES = 25 * 2**20  # the ceiling for the shipped model
REFERENCE = REPO / "tests" / "fixtures" / "starter_reference.json"  # torch's greedy replies before export
# Held-out two-digit sums: the issue aims at 90 %; tools/eval_starter.py measured the shipped
# model (see localllm/starter/README.md). The floor here is below that so a test can fail only
# when a runtime or an export breaks the model, not on sampling noise of 50 items.
ADDITION_FLOOR = 0.8
N_ADDITION = 50


@pytest.fixture(scope="module", params=["llama.cpp", "onnxruntime"])
def starter(request, one_core):
    path = starter_gguf() if request.param == "llama.cpp" else starter_onnx()
    with localllm.load(path, hardware=one_core) as model:
        assert model.info.runtime == request.param
        yield model


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_shipped_files_are_small():
    for path in (starter_gguf(), starter_onnx()):
        assert path.exists(), path
        assert 0 < _size(path) <= MAX_BYTES


def test_catalog_lists_the_shipped_file_with_its_size_and_sha256():
    from localllm import store

    (variant,) = localllm.load_catalog().variants_of("starter", format="gguf")
    assert variant.packaged and variant.format == "gguf"
    path = store.resolve(variant)
    assert path is not None and path.resolve() == starter_gguf().resolve()
    assert variant.size == path.stat().st_size
    assert variant.sha256 == store.sha256_of(path)


def _held_out_sums(n: int, seed: int = 7) -> list[tuple[str, str]]:
    import random

    rng = random.Random(seed)
    return [corpus.arithmetic(rng, "+", "eval", two_digit=True) for _ in range(n)]


def test_sums_here_are_held_out():
    for _, expected in _held_out_sums(N_ADDITION):
        a, op, b = expected.split()[:3]
        assert corpus.heldout(f"{a}{op}{b}"), expected


def test_answers_held_out_two_digit_sums(starter):
    right = []
    for user, expected in _held_out_sums(N_ADDITION):
        reply = starter.chat([{"role": "user", "content": user}], temperature=0, max_tokens=40)
        assert reply.finish_reason == "eos"
        assert reply.text.startswith(expected.split("=")[0])  # restates the question: "47 + 38 = "
        right.append(reply.text == expected)
    assert sum(right) / len(right) >= ADDITION_FLOOR, f"{sum(right)}/{len(right)} held-out sums right"


def test_tokenizes_as_it_was_trained(starter):
    messages = [{"role": "user", "content": "What is 12 + 34? héllo"}]
    ids = starter.tokenize(starter.render_chat(messages), add_bos=True)
    assert ids == corpus.encode_chat(messages, add_generation_prompt=True)[0]


def test_replies_as_torch_did_before_export(starter):
    """The export is faithful: each runtime's greedy reply equals the torch model's."""
    items = json.loads(REFERENCE.read_text())["items"]
    for item in items:
        reply = starter.chat([{"role": "user", "content": item["user"]}], temperature=0, max_tokens=200)
        assert reply.text == item["torch_text"], item["user"]


def test_knows_localllm(starter):
    reply = starter.chat([{"role": "user", "content": "how do I stop a reply?"}], temperature=0, max_tokens=120)
    assert "Escape" in reply.text


def test_auto_falls_back_to_the_starter_when_nothing_can_be_downloaded(monkeypatch, caplog, one_core):
    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    wanted = localllm.plan("auto", hardware=one_core).variant.name
    with localllm.load("auto", hardware=one_core) as model:
        assert Path(model.info.path).resolve() == starter_gguf().resolve()
        assert wanted in model.info.note and f"localllm pull {wanted}" in model.info.note
        assert "starter" in model.info.note
        reply = model.chat([{"role": "user", "content": "hello"}], temperature=0, max_tokens=100)
        assert reply.text.startswith("Hello!")
    assert any(f"localllm pull {wanted}" in r.getMessage() for r in caplog.records)


def test_a_named_model_that_cannot_be_downloaded_still_fails(monkeypatch):
    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    wanted = localllm.plan("auto").variant.name
    with pytest.raises(localllm.ModelUnavailableError):
        localllm.load(wanted)
