"""Runtime adapters; each imports its backend only when chosen.

`load_engine(path, placement)` is the one dispatch point from a local model to an
engine (see `base.Engine`). A `.gguf` file goes to llama.cpp; a folder is an ONNX
model for ONNX Runtime.
"""

from __future__ import annotations

import os
from pathlib import Path

from localllm.errors import InvalidModelError, RuntimeUnavailableError
from localllm.placement import Placement

__all__ = ["load_engine"]


def load_engine(path: str | os.PathLike[str], placement: Placement):
    """Load the model at `path` with the runtime `placement.runtime` names; returns an Engine.

    Raises:
        RuntimeUnavailableError: the runtime is unknown or not installed.
        InvalidModelError: the file does not suit the runtime or fails to load.
    """
    path = Path(path)
    if placement.runtime == "llama.cpp":
        if path.is_dir():
            raise InvalidModelError(f"{path} is a folder; llama.cpp loads a single .gguf file", path=str(path))
        from localllm.runtimes.llamacpp import LlamaCppEngine

        return LlamaCppEngine(path, placement)
    if placement.runtime == "onnxruntime":
        from localllm.runtimes.onnx import OnnxEngine

        return OnnxEngine(path, placement)
    raise RuntimeUnavailableError(f"unknown runtime {placement.runtime!r}; localllm runs 'llama.cpp' and 'onnxruntime'")
