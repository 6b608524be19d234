"""Where and how a model runs: the planner's decision, handed as is to a runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["KV_TYPES", "KVType", "Placement", "RUNTIMES", "Runtime", "WHERE", "Where"]

Runtime = Literal["llama.cpp", "onnxruntime"]
# KV cache element types: llama.cpp takes f16, q8_0 and q4_0 (f32/bf16 too); ONNX folders are f16 or f32
KVType = Literal["f16", "q8_0", "q4_0", "f32", "bf16"]
# where a plan runs: all layers on GPUs, split GPU/CPU, or all on the CPU ("none": nothing fits)
Where = Literal["gpu", "partial", "cpu", "none"]

RUNTIMES: tuple[Runtime, ...] = get_args(Runtime)
KV_TYPES: tuple[KVType, ...] = ("f16", "q8_0", "q4_0")  # what the planner tries, best first
WHERE: tuple[Where, ...] = get_args(Where)


@dataclass(frozen=True)
class Placement:
    runtime: Runtime = "llama.cpp"
    n_ctx: int = 2048
    n_gpu_layers: int = 0  # llama.cpp: layers offloaded (-1: all); 0 on CPU
    n_threads: int = 1  # generation threads
    n_threads_batch: int | None = None  # prompt-processing threads; None: same as n_threads
    n_batch: int = 512  # logical batch for prompt processing
    n_ubatch: int = 512  # physical batch
    flash_attn: bool = False
    kv_type: KVType = "f16"
    use_mmap: bool = True
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()  # per-GPU share of layers; () for one GPU or none
    provider: str | None = None  # ONNX Runtime execution provider, e.g. "CPUExecutionProvider"
    # sequences decoded together (batch work, Model.generate_batch): each gets n_ctx tokens of
    # context, so the KV cache holds n_ctx * n_seq cells; 1 for interactive work
    n_seq: int = 1
    # n_threads is a ceiling, re-chosen before each generation from the CPU other programs leave
    # free (localllm.hardware.cpu_load); False: exactly n_threads (the caller fixed it, or a
    # placement built by hand)
    adapt_threads: bool = False
    # llama.cpp RPC workers ("host:port") holding layers as devices of their own, in the order
    # of `tensor_split` (localllm.runtimes.rpc); () for a plan on this machine alone. llama.cpp
    # offloads the last n_gpu_layers layers to them; the layers before stay on this machine's CPU.
    workers: tuple[str, ...] = ()
