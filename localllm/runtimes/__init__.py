"""Runtime adapters; each imports its backend only when chosen.

`load_engine(path, placement)` is the one dispatch point from a local model to an
engine (see `base.Engine`). A `.gguf` file goes to llama.cpp; a folder is an ONNX
model for ONNX Runtime. A llama.cpp placement with workers (RPC servers holding layers) runs in
a child process (`hosted.HostedEngine`), so that a lost worker cannot abort this one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from localllm.errors import InvalidModelError, RuntimeUnavailableError
from localllm.hardware.detect import probe
from localllm.placement import Placement

if TYPE_CHECKING:  # pragma: no cover
    from localllm.hardware import Hardware
    from localllm.runtimes.base import Engine

__all__ = ["load_engine"]


def load_engine(path: str | os.PathLike[str], placement: Placement, *, hardware: Hardware | None = None) -> Engine:
    """Load the model at `path` with the runtime `placement.runtime` names; returns an Engine.

    `hardware` is the machine, for an ONNX placement without a provider (None: probe this
    one then); a plan's placement names its provider, so no probe is needed.

    Raises:
        RuntimeUnavailableError: the runtime is unknown or not installed.
        InvalidModelError: the file does not suit the runtime or fails to load.
    """
    path = Path(path)
    # each adapter is imported only when chosen: a llama.cpp load never reads the ONNX one
    if placement.runtime == "llama.cpp":
        if path.is_dir():
            raise InvalidModelError(f"{path} is a folder; llama.cpp loads a single .gguf file", path=str(path))
        if placement.workers:  # llama.cpp's RPC client aborts its process when a worker is lost
            from localllm.runtimes.hosted import HostedEngine

            return HostedEngine(path, placement)
        from localllm.runtimes.llamacpp import LlamaCppEngine

        return LlamaCppEngine(path, placement)
    if placement.runtime == "onnxruntime":
        from localllm.runtimes.onnx import OnnxEngine

        if not placement.provider and hardware is None:
            hardware = probe()  # the engine never probes: the provider choice needs the machine
        return OnnxEngine(path, placement, hardware=hardware)
    raise RuntimeUnavailableError(f"unknown runtime {placement.runtime!r}; localllm runs 'llama.cpp' and 'onnxruntime'")
