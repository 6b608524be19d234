"""Where and how a model runs: the planner's decision, handed as is to a runtime."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Placement"]


@dataclass(frozen=True)
class Placement:
    runtime: str = "llama.cpp"  # "llama.cpp" | "onnxruntime"
    n_ctx: int = 2048
    n_gpu_layers: int = 0  # llama.cpp: layers offloaded (-1: all); 0 on CPU
    n_threads: int = 1  # generation threads
    n_threads_batch: int | None = None  # prompt-processing threads; None: same as n_threads
    n_batch: int = 512  # logical batch for prompt processing
    n_ubatch: int = 512  # physical batch
    flash_attn: bool = False
    kv_type: str = "f16"  # f16 | q8_0 | q4_0 (llama.cpp); f16 | f32 (ONNX)
    use_mmap: bool = True
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()  # per-GPU share of layers; () for one GPU or none
    provider: str | None = None  # ONNX Runtime execution provider, e.g. "CPUExecutionProvider"
