"""The starter model that ships inside localllm: a tiny chat model trained by tools/train_starter.py.

See README.md here for what it knows, how it was trained and how well it does.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["STARTER_NAME", "starter_gguf", "starter_onnx"]

STARTER_NAME = "localllm-starter"
_HERE = Path(__file__).resolve().parent


def starter_gguf() -> Path:
    """Path of the shipped GGUF file (llama.cpp)."""
    return _HERE / "starter.gguf"


def starter_onnx() -> Path:
    """Path of the shipped ONNX folder (ONNX Runtime)."""
    return _HERE / "starter-onnx"
