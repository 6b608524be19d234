"""A validated GGUF file is remembered by identity and not walked again; any change revalidates it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from localllm.errors import InvalidModelError
from localllm.formats import gguf_memo
from localllm.validate import validate_gguf


@pytest.fixture
def no_racy_window(monkeypatch):
    """Files made by the test are seconds old at most: remember them anyway."""
    monkeypatch.setattr(gguf_memo, "RACY_S", 0.0)


def _memos() -> list[Path]:
    return sorted((Path(os.environ["LOCALLLM_HOME"]) / "validated").glob("*.json"))


def test_the_real_model_comes_back_from_its_memo_unchanged(smollm2_gguf, no_racy_window):
    first = validate_gguf(smollm2_gguf)
    assert len(_memos()) == 1
    again = gguf_memo.recall(smollm2_gguf, os.stat(smollm2_gguf))
    assert again is not None
    assert again == first  # header facts, every metadata value (template, arrays) and every tensor
    assert dict(again.metadata) == dict(first.metadata)
    assert again.array("tokenizer.ggml.tokens") == first.array("tokenizer.ggml.tokens")


def test_a_second_validation_reads_no_header(tiny_gguf, tmp_path, no_racy_window, monkeypatch):
    path = shutil.copy(tiny_gguf, tmp_path / "m.gguf")
    first = validate_gguf(path)

    def no_parse(*a, **k):
        raise AssertionError("the header was parsed again")

    monkeypatch.setattr("localllm.formats.gguf.parse", no_parse)
    assert validate_gguf(path) == first


def test_a_file_rewritten_in_place_is_validated_again(tiny_gguf, tmp_path, no_racy_window):
    path = Path(shutil.copy(tiny_gguf, tmp_path / "m.gguf"))
    validate_gguf(path)
    st = os.stat(path)
    data = bytearray(path.read_bytes())
    data[4:8] = (99).to_bytes(4, "little")  # an unsupported version, same size, same inode
    with open(path, "r+b") as f:
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # even with its old mtime back: ctime moved
    assert os.stat(path).st_ino == st.st_ino
    with pytest.raises(InvalidModelError, match="unsupported GGUF version 99"):
        validate_gguf(path)


def test_a_fresh_file_is_not_remembered(tiny_gguf, tmp_path):
    """Within RACY_S of its last change a file could change again within one timestamp tick."""
    path = shutil.copy(tiny_gguf, tmp_path / "m.gguf")
    validate_gguf(path)
    assert _memos() == []


def test_a_damaged_or_foreign_memo_is_ignored_and_rewritten(tiny_gguf, tmp_path, no_racy_window):
    path = Path(shutil.copy(tiny_gguf, tmp_path / "m.gguf"))
    first = validate_gguf(path)
    (memo,) = _memos()
    memo.write_text("{not json", encoding="utf-8")
    assert gguf_memo.recall(path, os.stat(path)) is None
    assert validate_gguf(path) == first
    assert json.loads(memo.read_text(encoding="utf-8"))["file_size"] == first.file_size
    body = json.loads(memo.read_text(encoding="utf-8"))
    memo.write_text(json.dumps({**body, "key": "0" * 64}), encoding="utf-8")  # a prefix collision
    assert gguf_memo.recall(path, os.stat(path)) is None


def test_new_rules_validate_every_file_again(tiny_gguf, tmp_path, no_racy_window, monkeypatch):
    path = Path(shutil.copy(tiny_gguf, tmp_path / "m.gguf"))
    validate_gguf(path)
    assert gguf_memo.recall(path, os.stat(path)) is not None
    monkeypatch.setattr(gguf_memo, "_rules_digest", "other rules")
    assert gguf_memo.recall(path, os.stat(path)) is None


def test_memos_are_bounded_and_forgotten(tiny_gguf, tmp_path, no_racy_window, monkeypatch):
    monkeypatch.setattr(gguf_memo, "MAX_MEMOS", 3)
    for i in range(5):
        validate_gguf(shutil.copy(tiny_gguf, tmp_path / f"m{i}.gguf"))
    assert len(_memos()) == 3
    assert gguf_memo.forget() == 3
    assert _memos() == []
