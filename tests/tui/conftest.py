"""Fixtures for the TUI tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def tui_db(tmp_path):
    return tmp_path / "chats.sqlite3"


@pytest.fixture(scope="session")
def paced_gguf(tmp_path_factory):
    """A random model large enough to decode at a real model's pace here (a few hundred
    tokens/s, not the tiny model's thousands): for measuring the UI while a reply streams."""
    from localllm.testing import Shape, write_llama_gguf

    shape = Shape(n_layer=8, n_embd=512, n_head=8, n_head_kv=4, n_ff=1536)
    return write_llama_gguf(tmp_path_factory.mktemp("paced") / "paced.gguf", shape, seed=3)
