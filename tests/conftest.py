"""Shared fixtures: an isolated cache folder for every test, tiny real models built once."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Point localllm's cache at a temporary folder so no test touches a real cache."""
    home = tmp_path / "localllm-home"
    monkeypatch.setenv("LOCALLLM_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("LOCALLLM_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LOCALLLM_DEBUG", raising=False)
    # tests never reach the real Hub: anything not pointed at a local server fails fast
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return home


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny random-weight Llama GGUF (F32) with a ChatML template, built once per run."""
    from localllm.tinymodels import write_llama_gguf

    return write_llama_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=1)


@pytest.fixture(scope="session")
def tiny_gguf_q8(tiny_gguf, tmp_path_factory) -> Path:
    """The tiny model quantized to Q8_0 by llama.cpp's quantizer."""
    from localllm.tinymodels import quantize_gguf

    return quantize_gguf(tiny_gguf, tmp_path_factory.mktemp("models-q") / "tiny-q8_0.gguf", "Q8_0")
