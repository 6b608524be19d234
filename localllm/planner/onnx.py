"""A local ONNX folder for the planner: a Family synthesised from what `validate_onnx_folder`
read (the graph's facts, then config.json / genai_config.json), and `plan_local_onnx`."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from localllm.calibration import Calibration
from localllm.catalog import Family, Variant
from localllm.hardware import Hardware
from localllm.hardware.detect import probe
from localllm.planner.machine import calibration_for, prepare
from localllm.planner.rank import choose
from localllm.planner.values import Plan

if TYPE_CHECKING:  # pragma: no cover
    from localllm.formats.onnx_folder import OnnxFolderInfo

__all__ = ["family_from_onnx", "plan_local_onnx"]


def plan_local_onnx(
    info: OnnxFolderInfo,
    *,
    path: str | None = None,
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    headroom: int | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
    parallel: int | None = None,
) -> Plan:
    """Plan a local ONNX folder for ONNX Runtime from what `validate_onnx_folder` read.

    `info` is an `OnnxFolderInfo`: weights from `weights_bytes` (the .onnx and its external
    data), KV cache from `kv_bytes_per_token()` (the graph's cache type and shape), the
    rest of the architecture from its config.json. Other arguments as for `plan`.
    """
    family = family_from_onnx(info)
    variant = Variant(
        family=family, quant="local", size=int(info.weights_bytes), format="onnx", path=path or str(info.model_file)
    )
    hardware = hardware if hardware is not None else probe(runtimes=True)
    req, m, runtime = prepare(
        hardware,
        context=context,
        workload=workload,
        runtime="onnxruntime",
        kv_type=None,
        headroom=headroom,
        calibration=calibration_for(hardware, calibration),
        threads=threads,
        parallel=parallel,
    )
    req = replace(
        req,
        onnx_kv_type="f16" if info.kv_dtype in ("float16", "bfloat16") else "f32",
        onnx_kv_per_token=info.kv_bytes_per_token(),
    )
    return choose([variant], m, req, runtime, auto=False, catalog=None)


def family_from_onnx(info: OnnxFolderInfo) -> Family:
    """A Family for a local ONNX folder: the graph's facts first, then config.json / genai_config.json."""
    cfg = dict(info.config or {})
    dec = ((info.genai_config or {}).get("model", {}) or {}).get("decoder", {}) or {}
    n_head = int(cfg.get("num_attention_heads") or dec.get("num_attention_heads") or info.n_head_kv or 1)
    n_head_kv = int(info.n_head_kv or cfg.get("num_key_value_heads") or n_head)
    n_embd = int(cfg.get("hidden_size") or dec.get("hidden_size") or 0)
    head_dim = int(info.head_dim or cfg.get("head_dim") or (n_embd // n_head if n_embd else 64))
    n_embd = n_embd or n_head * head_dim
    n_vocab = int(info.n_vocab or cfg.get("vocab_size") or 32000)
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
    name = info.folder.name
    return Family(
        name=name,
        display_name=name,
        arch=str(info.architecture or "onnx"),
        n_layer=int(info.n_layer),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_embd=n_embd,
        n_ctx_train=int(info.context_length or 2048),
        n_vocab=n_vocab,
        n_ff=int(cfg["intermediate_size"]) if cfg.get("intermediate_size") else None,
        tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        sliding_window=int(window) if window else None,
        quality=None,
        quality_source="local folder: no benchmark score",
        chat=info.chat_template is not None,
    )
