"""What llama.cpp's own loader asserts on, checked on a parsed GGUF header first.

localllm.formats.gguf checks that a GGUF file is well formed (every length and offset
inside the file). A well-formed file can still carry numbers that make llama.cpp abort (a
GGML_ASSERT, an uncaught std::out_of_range), hang in its tokenizer, or make localllm's
own planner loop or divide by zero. Each rule here turns one of those into a refusal
before any native code sees the file; the comment on each names the llama.cpp source
(the copy vendored by llama-cpp-python 0.3.36) it comes from.

    check_alignment(alignment)                       gguf.cpp / ggml-backend.cpp
    check_hparams(arch, metadata, types, elems)      llama-model.cpp load_hparams
    check_tensors(arch, metadata, tensors, n_vocab)  llama-model-loader.cpp, models/*.cpp

The tokenizer's rules (check_tokenizer, llama-vocab.cpp) are in localllm.formats.gguf_tokenizer.

Each raises RuleError(message, key): `key` names the metadata key at fault, so the
caller can say where it is in the file. Pure Python, no imports beyond the standard library.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = [
    "LLAMA_MAX_EXPERTS",
    "LLAMA_MAX_LAYERS",
    "MAX_CONTEXT_LENGTH",
    "MAX_WIDTH",
    "NO_TEXT_ARCHITECTURES",
    "RuleError",
    "TENSOR_ALIGNMENT",
    "ZERO_HEAD_ARCHITECTURES",
    "check_alignment",
    "check_hparams",
    "check_tensors",
]

LLAMA_MAX_LAYERS = 512  # llama-hparams.h:11; llama-model.cpp:1328 asserts 0 < block_count <= it
LLAMA_MAX_EXPERTS = 1024  # llama-hparams.h:12; llama-model.cpp:1361
# ggml-impl.h:44: the CPU backend wraps the mapped file in a buffer whose start must be a
# multiple of this (ggml-backend.cpp:2527 "buffer pointer must be aligned"), and the data
# section starts at a multiple of general.alignment.
TENSOR_ALIGNMENT = 32
# Caps far above any real model (Llama 4 Scout trains on 10M tokens; hidden sizes, heads and
# head dims are at most tens of thousands) and far below what overflows the planner's sums.
MAX_CONTEXT_LENGTH = 1 << 24
MAX_WIDTH = 1 << 20

# Architectures whose layers may have no attention heads (recurrent and hybrid models,
# attention-free DeciLM layers): llama-arch.cpp llm_arch_is_recurrent / llm_arch_is_hybrid,
# models/deci.cpp and models/hy-v4.cpp, and the audio decoder wavtokenizer-dec.
ZERO_HEAD_ARCHITECTURES = frozenset(
    [
        "mamba",
        "mamba2",
        "rwkv6",
        "rwkv6qwen2",
        "rwkv7",
        "arwkv7",
        "jamba",
        "falcon-h1",
        "plamo2",
        "granitehybrid",
        "lfm2",
        "lfm2moe",
        "nemotron_h",
        "nemotron_h_moe",
        "qwen3next",
        "kimi-linear",
        "bailingmoe3",
        "kimi-k3",
        "glm5-next",
        "qwen35",
        "qwen35moe",
        "qwen4exp",
        "deepseek4",
        "minimax-01",
        "deci",
        "hy_v4",
        "wavtokenizer-dec",
    ]
)
# Not a text model: its "tokens" are audio codes and its tensors are not in blk.N layers.
NO_TEXT_ARCHITECTURES = frozenset({"wavtokenizer-dec"})
# hunyuan treats n_expert <= 1 as dense (llama-model.cpp:1337) before the expert asserts.
_DENSE_IF_ONE_EXPERT = frozenset({"hunyuan-vl", "hunyuan-dense", "hunyuan_vl"})

# llama-model.cpp:1318-1327: get_key without `false` throws when these are missing.
_REQUIRED_KEYS = ("block_count", "context_length", "embedding_length")
# Keys llama.cpp reads into a uint32_t (GKV::get_kv refuses any other type,
# llama-model-loader.cpp:166); the first group may also be per-layer arrays (get_key_or_arr).
_PER_LAYER_KEYS = ("feed_forward_length", "attention.head_count", "attention.head_count_kv", "expert_used_count")
_UINT32_KEYS = (
    "block_count",
    "context_length",
    "embedding_length",
    "vocab_size",
    "expert_count",
    "expert_group_count",
    "expert_group_used_count",
    "nextn_predict_layers",
    "attention.key_length",
    "attention.value_length",
    "rope.dimension_count",
    "attention.sliding_window",
)
_FLOAT32_KEYS = (
    "attention.layer_norm_epsilon",
    "attention.layer_norm_rms_epsilon",
    "rope.freq_base",
    "rope.freq_base_swa",
    "rope.scaling.factor",
    "rope.scale_linear",
)
# Element types get_arr accepts for a uint32 array (llama-model-loader.cpp:367-370).
_UINT32_ARRAY_ELEMENTS = ("uint32", "int32", "bool")
_ROPE_SCALING_TYPES = ("none", "linear", "yarn", "longrope")  # llama-model.cpp:1034-1039


class RuleError(Exception):
    """A value llama.cpp would abort, hang or fail on; `key` is the metadata key at fault."""

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


class _Tensor(Protocol):
    # read-only, so a frozen dataclass (formats.gguf.TensorInfo) matches
    @property
    def name(self) -> str: ...
    @property
    def shape(self) -> tuple[int, ...]: ...
    @property
    def ggml_type(self) -> str: ...


# -- alignment ---------------------------------------------------------------------------


def check_alignment(alignment: int) -> None:
    """general.alignment: a power of two (gguf.cpp:632) of at least TENSOR_ALIGNMENT."""
    key = "general.alignment"
    if alignment == 0 or alignment & (alignment - 1):
        raise RuleError(f"general.alignment is {alignment}, not a power of two (llama.cpp's gguf.cpp refuses it)", key)
    if alignment < TENSOR_ALIGNMENT:
        raise RuleError(
            f"general.alignment is {alignment}; llama.cpp maps tensor data in place and aborts unless it "
            f'starts on a multiple of {TENSOR_ALIGNMENT} bytes ("buffer pointer must be aligned"), so '
            f"the alignment must be a power of two of at least {TENSOR_ALIGNMENT}",
            key,
        )


# -- hyperparameters ---------------------------------------------------------------------


def check_hparams(arch: str, metadata: Mapping[str, Any], types: Mapping[str, str], elems: Mapping[str, str]) -> None:
    """The `<arch>.*` hyperparameters: types llama.cpp accepts, counts in range, floats finite.

    `types` maps each key to its GGUF type name ("uint32", "float32", "array", ...),
    `elems` each array key to its element type name.
    """
    pre = f"{arch}."
    for name in _REQUIRED_KEYS:
        if pre + name not in metadata:
            raise RuleError(f"the key {pre + name} is missing; llama.cpp needs it to load a {arch!r} model", pre + name)
    for name in _UINT32_KEYS:
        _want_type(pre + name, types, ("uint32",))
    for name in _PER_LAYER_KEYS:
        key = pre + name
        if types.get(key) == "array":
            if elems.get(key) not in _UINT32_ARRAY_ELEMENTS:
                raise RuleError(f"{key} is an array of {elems.get(key)}; llama.cpp reads it as uint32 per layer", key)
        else:
            _want_type(key, types, ("uint32",))
    for name in _FLOAT32_KEYS:
        _want_type(pre + name, types, ("float32",))
    _check_floats_finite(pre, metadata, types)

    n_layer = _count(
        metadata,
        pre + "block_count",
        1,
        LLAMA_MAX_LAYERS,
        "llama.cpp asserts 0 < block_count <= LLAMA_MAX_LAYERS and aborts otherwise",
    )
    _count(
        metadata,
        pre + "context_length",
        1,
        MAX_CONTEXT_LENGTH,
        "a model trained on no tokens, or on more than any model has been, is a corrupt header",
    )
    n_embd = _count(metadata, pre + "embedding_length", 1, MAX_WIDTH, "a hidden size must be at least 1")
    nextn = metadata.get(pre + "nextn_predict_layers")
    if nextn is not None and nextn > n_layer:  # llama-model.cpp:1330
        raise RuleError(
            f"{pre}nextn_predict_layers is {nextn}, more than the {n_layer} layers (block_count); "
            "llama.cpp asserts on it",
            pre + "nextn_predict_layers",
        )
    for name, hi in (
        ("vocab_size", 2**31 - 1),
        ("attention.sliding_window", MAX_CONTEXT_LENGTH),
        ("rope.dimension_count", MAX_WIDTH),
    ):
        _count(metadata, pre + name, 0, hi, "out of range")
    _check_heads(arch, metadata, n_layer, n_embd)
    ff = _per_layer(metadata, pre + "feed_forward_length", n_layer)
    if ff is not None and any(not 0 <= v <= MAX_WIDTH for v in ff):
        raise RuleError(
            f"{pre}feed_forward_length holds {_outside(ff, 0, MAX_WIDTH)}, outside 0..{MAX_WIDTH}",
            pre + "feed_forward_length",
        )
    _check_experts(arch, metadata, n_layer)
    _check_norm_and_rope(pre, metadata)
    if arch == "wavtokenizer-dec":  # llama-model.cpp:1354-1355
        for part in ("posnet", "convnext"):
            key = f"{pre}{part}.block_count"
            if isinstance(metadata.get(key), int) and metadata[key] > n_layer:
                raise RuleError(
                    f"{key} is {metadata[key]}, more than block_count {n_layer}; llama.cpp asserts on it", key
                )


def _want_type(key: str, types: Mapping[str, str], allowed: Sequence[str]) -> None:
    t = types.get(key)
    if t is not None and t not in allowed:
        raise RuleError(
            f"{key} is a {t}, but llama.cpp reads it as a {' or '.join(allowed)} and refuses any other type", key
        )


def _check_floats_finite(pre: str, metadata: Mapping[str, Any], types: Mapping[str, str]) -> None:
    # a NaN or infinite hyperparameter is never meaningful: it poisons every activation
    for key, value in metadata.items():
        if not key.startswith(pre):
            continue
        if types.get(key) in ("float32", "float64"):
            if not math.isfinite(value):
                raise RuleError(f"{key} is {value}, not a finite number", key)
        elif types.get(key) == "array" and isinstance(value, tuple) and value and isinstance(value[0], float):
            bad = next((v for v in value if not math.isfinite(v)), None)
            if bad is not None:
                raise RuleError(f"{key} holds {bad}, not a finite number", key)


def _count(metadata: Mapping[str, Any], key: str, lo: int, hi: int, why: str) -> int:
    value = metadata.get(key)
    if value is None:
        return 0
    if not lo <= value <= hi:
        raise RuleError(f"{key} is {value}, outside {lo}..{hi} ({why})", key)
    return value


def _per_layer(metadata: Mapping[str, Any], key: str, n_layer: int) -> tuple[int, ...] | None:
    """A key-or-array value as one entry per layer (llama-model-loader.cpp get_key_or_arr)."""
    value = metadata.get(key)
    if value is None:
        return None
    if isinstance(value, tuple):
        if len(value) != n_layer:  # llama-model-loader.cpp:477
            raise RuleError(f"{key} has {len(value)} entries for {n_layer} layers (block_count)", key)
        return tuple(int(v) for v in value)
    if not isinstance(value, int):  # a long array, summarized: longer than any layer count
        raise RuleError(f"{key} has {getattr(value, 'length', '?')} entries for {n_layer} layers (block_count)", key)
    return (value,)


def _outside(values: Sequence[int], lo: int, hi: int) -> int:
    return next(v for v in values if not lo <= v <= hi)


def _check_heads(arch: str, metadata: Mapping[str, Any], n_layer: int, n_embd: int) -> None:
    pre = f"{arch}."
    k_head, k_kv = pre + "attention.head_count", pre + "attention.head_count_kv"
    heads = _per_layer(metadata, k_head, n_layer)
    kvs = _per_layer(metadata, k_kv, n_layer)
    strict = arch not in ZERO_HEAD_ARCHITECTURES
    if heads is None:
        if strict:
            raise RuleError(f"the key {k_head} is missing; a {arch!r} model has attention heads in every layer", k_head)
        return
    kvs = kvs if kvs is not None else heads  # llama-model.cpp:1402: head_count_kv defaults to head_count
    if len(heads) == 1:  # a scalar applies to every layer; _per_layer checked array lengths
        heads = heads * len(kvs)
    if len(kvs) == 1:
        kvs = kvs * len(heads)
    for il, (h, kv) in enumerate(zip(heads, kvs, strict=False)):
        where = f" (layer {il})" if len(heads) > 1 else ""
        if not 0 <= h <= MAX_WIDTH:
            raise RuleError(f"{k_head} is {h}{where}, outside 0..{MAX_WIDTH}", k_head)
        if not 0 <= kv <= MAX_WIDTH:
            raise RuleError(f"{k_kv} is {kv}{where}, outside 0..{MAX_WIDTH}", k_kv)
        if strict and h < 1:
            raise RuleError(
                f"{k_head} is {h}{where}; a {arch!r} model needs at least one attention head per layer", k_head
            )
        if strict and kv < 1:
            raise RuleError(
                f"{k_kv} is {kv}{where}; a {arch!r} model needs at least one key/value head per layer", k_kv
            )
        # llama-hparams.cpp n_gqa() = n_head / n_head_kv, and ggml_mul_mat asserts the K/V heads
        # broadcast over the query heads (ggml.c:3346, 3354)
        if h and kv and h % kv:
            raise RuleError(
                f"{k_head} {h} is not a multiple of {k_kv} {kv}{where}: llama.cpp shares each key/value "
                "head among a whole number of query heads and aborts otherwise",
                k_kv,
            )
    h0 = heads[0]
    if strict and h0:
        for name in ("attention.key_length", "attention.value_length"):
            dim = metadata.get(pre + name)
            if dim is not None and not 1 <= dim <= MAX_WIDTH:
                raise RuleError(f"{pre}{name} is {dim}, outside 1..{MAX_WIDTH}", pre + name)
        if metadata.get(pre + "attention.key_length") is None and n_embd < h0:
            raise RuleError(
                f"{pre}embedding_length {n_embd} is smaller than {k_head} {h0}: the head size "
                "(embedding_length / head_count) would be 0",
                pre + "embedding_length",
            )


def _check_experts(arch: str, metadata: Mapping[str, Any], n_layer: int) -> None:
    """llama-model.cpp:1361-1373: GGML_ASSERTs on the mixture-of-experts counts."""
    pre = f"{arch}."
    n_expert = metadata.get(pre + "expert_count") or 0
    used = _per_layer(metadata, pre + "expert_used_count", n_layer) or (0,)
    groups = metadata.get(pre + "expert_group_count") or 0
    group_used = metadata.get(pre + "expert_group_used_count") or 0
    if arch in _DENSE_IF_ONE_EXPERT and n_expert <= 1:
        return
    used_max = max(used)
    key = pre + "expert_count"
    why = "llama.cpp asserts on it"
    if n_expert > LLAMA_MAX_EXPERTS:
        raise RuleError(f"{key} is {n_expert}, more than llama.cpp's LLAMA_MAX_EXPERTS {LLAMA_MAX_EXPERTS}", key)
    if used_max > n_expert:
        raise RuleError(
            f"{pre}expert_used_count is {used_max}, more than {key} {n_expert}; {why}", pre + "expert_used_count"
        )
    if n_expert > 0:
        if used_max == 0:
            raise RuleError(
                f"{key} is {n_expert} but {pre}expert_used_count is 0 or missing; {why}", pre + "expert_used_count"
            )
        if groups >= n_expert:
            raise RuleError(
                f"{pre}expert_group_count {groups} is not below {key} {n_expert}; {why}", pre + "expert_group_count"
            )
        if groups > 1 and (n_expert % groups or not 0 < group_used < groups):
            raise RuleError(
                f"{key} {n_expert} with {pre}expert_group_count {groups} and "
                f"{pre}expert_group_used_count {group_used}: the experts must split evenly into the "
                f"groups and 0 < groups used < groups; {why}",
                pre + "expert_group_count",
            )
    elif groups:
        raise RuleError(
            f"{pre}expert_group_count is {groups} on a model without experts; {why}", pre + "expert_group_count"
        )


def _check_norm_and_rope(pre: str, metadata: Mapping[str, Any]) -> None:
    for key, value in metadata.items():
        # ggml-cpu/ops.cpp:4026 (norm) and :4132 (rms_norm) GGML_ASSERT(eps >= 0.0f); 0 or NaN
        # pass that and then divide by zero or poison every activation
        if key.startswith(pre) and key.endswith("epsilon") and isinstance(value, float) and not value > 0:
            raise RuleError(
                f"{key} is {value}; a normalization epsilon must be a finite number above 0 (llama.cpp "
                "asserts eps >= 0 and aborts on a negative one)",
                key,
            )
    for name in ("rope.freq_base", "rope.freq_base_swa"):
        value = metadata.get(pre + name)
        if isinstance(value, float) and not value > 0:
            raise RuleError(f"{pre}{name} is {value}; the rotary base must be a finite number above 0", pre + name)
    for name in ("rope.scaling.factor", "rope.scale_linear"):
        value = metadata.get(pre + name)  # 0 means "no scaling" (llama-model.cpp:1429)
        if isinstance(value, float) and value < 0:
            raise RuleError(f"{pre}{name} is {value}; a rotary scaling factor must be 0 (none) or above", pre + name)
    kind = metadata.get(pre + "rope.scaling.type")
    if kind is not None and kind not in _ROPE_SCALING_TYPES:  # llama-model.cpp:1420 GGML_ASSERT
        raise RuleError(
            f"{pre}rope.scaling.type is {str(kind)[:40]!r}; llama.cpp knows {', '.join(_ROPE_SCALING_TYPES)} "
            "and aborts on anything else",
            pre + "rope.scaling.type",
        )


# -- tensors -----------------------------------------------------------------------------

_LAYER = re.compile(r"(?:^|\.)blk\.(\d+)\.")
# Tensors llama.cpp multiplies or adds onto f32 activations: ggml-cpu/binary-ops.cpp:135 aborts
# ("binary_op: unsupported types") unless the second operand is f32 too; rope frequency
# factors are asserted f32 (ggml.c:4304). Converters and llama-quantize keep them f32.
_F32_NAME = re.compile(r"(?:_norm\.(?:weight|bias)|(?:^|\.)rope_(?:freqs|factors_long|factors_short)\.weight)$")

# The llama-family architectures whose tensors are checked one by one (models/llama.cpp,
# qwen2.cpp, qwen3.cpp, gemma.cpp, gemma2.cpp, gemma3.cpp, phi3.cpp load_arch_tensors).
_LLAMA_LIKE = frozenset({"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3"})


def check_tensors(arch: str, metadata: Mapping[str, Any], tensors: Sequence[_Tensor], n_vocab: int | None) -> None:
    """Tensor types and presence: f32 where llama.cpp needs it, every layer present, and for
    the llama family every tensor its loader requires, with the shapes it requires."""
    by_name = {t.name: t for t in tensors}
    for t in tensors:
        if t.ggml_type != "F32" and (_F32_NAME.search(t.name) or (t.name.endswith(".bias") and len(t.shape) == 1)):
            raise RuleError(
                f"tensor {t.name!r} is {t.ggml_type}, but llama.cpp uses it in an f32-only operation and "
                'aborts ("binary_op: unsupported types"): norm weights and biases must be F32'
            )
    n_layer = metadata.get(f"{arch}.block_count") or 0
    if arch not in NO_TEXT_ARCHITECTURES:
        top = -1
        for name in by_name:
            m = _LAYER.search(name)
            if m:
                top = max(top, int(m.group(1)))
        if n_layer > top + 1:
            have = f"layers up to blk.{top}" if top >= 0 else "no blk.N layer tensors at all"
            raise RuleError(
                f"{arch}.block_count is {n_layer} but the tensor table has {have}; llama.cpp would look "
                "for tensors that are not there",
                f"{arch}.block_count",
            )
    if arch in _LLAMA_LIKE:
        _check_llama_like(arch, metadata, by_name, n_layer, n_vocab)


def _check_llama_like(
    arch: str, metadata: Mapping[str, Any], by_name: Mapping[str, _Tensor], n_layer: int, n_vocab: int | None
) -> None:
    pre = f"{arch}."

    def first(key: str, default: int) -> int:
        value = metadata.get(pre + key, default)
        return int(value[0]) if isinstance(value, tuple) else int(value)

    # these loaders size every layer's tensors from layer 0's head counts (LLAMA_LOAD_LOCALS,
    # llama-model.h:860) while the graph reshapes by each layer's own: the two must agree
    for key in ("attention.head_count", "attention.head_count_kv"):
        value = metadata.get(pre + key)
        if isinstance(value, tuple) and len(set(value)) > 1:
            raise RuleError(
                f"{pre}{key} differs between layers ({', '.join(map(str, value[:8]))}"
                f"{', ...' if len(value) > 8 else ''}); llama.cpp's {arch!r} loader sizes every layer "
                "like layer 0 and its graph would not fit the tensors",
                pre + key,
            )

    n_embd = first("embedding_length", 0)
    n_head = first("attention.head_count", 0)
    n_head_kv = first("attention.head_count_kv", n_head)
    n_ff = first("feed_forward_length", 0)
    n_expert = first("expert_count", 0)
    # llama-model.cpp:1439-1442: head sizes default to n_embd / n_head; the *_swa variants apply
    # to sliding layers (llama-hparams.cpp:140), so with them present the head-size checks are skipped
    head_k = first("attention.key_length", n_embd // n_head if n_head else 0)
    head_v = first("attention.value_length", n_embd // n_head if n_head else 0)
    heads_known = not any(pre + k in metadata for k in ("attention.key_length_swa", "attention.value_length_swa"))
    q_out = n_embd if arch in ("qwen2", "phi3") else head_k * n_head  # qwen2.cpp / phi3.cpp pass n_embd
    kv_k, kv_v = head_k * n_head_kv, head_v * n_head_kv
    if arch in ("qwen2", "qwen3", "phi3"):  # these pass n_embd_gqa (the V width) for K too
        kv_k = kv_v
    vocab = n_vocab if n_vocab else None

    def need(name: str, *shape: int | None) -> None:
        t = by_name.get(name)
        if t is None:
            raise RuleError(f"the tensor {name!r} is missing; llama.cpp's {arch!r} loader requires it")
        expect(t, shape)

    def expect(t: _Tensor, shape: Sequence[int | None]) -> None:
        dims = tuple(t.shape) + (1,) * (len(shape) - len(t.shape))
        if (
            len(t.shape) > len(shape)
            and any(d != 1 for d in t.shape[len(shape) :])
            or any(want is not None and have != want for have, want in zip(dims, shape, strict=False))
        ):
            shown = ", ".join("?" if d is None else str(d) for d in shape)
            raise RuleError(
                f"tensor {t.name!r} has shape {list(t.shape)}, but the header's hyperparameters "
                f"(embedding_length {n_embd}, head_count {n_head}, head_count_kv {n_head_kv}, "
                f"feed_forward_length {n_ff}, {n_vocab} tokens) make llama.cpp expect [{shown}]"
            )

    need("token_embd.weight", n_embd, vocab)
    need("output_norm.weight", n_embd)
    if "output.weight" in by_name:
        expect(by_name["output.weight"], (n_embd, vocab))
    post_norms = arch in ("gemma2", "gemma3")
    qk_norms = arch in ("gemma3", "qwen3")
    n_layer -= metadata.get(pre + "nextn_predict_layers") or 0  # llama-hparams.cpp:348 n_layer()
    for i in range(n_layer):  # n_layer <= LLAMA_MAX_LAYERS: check_hparams ran first
        b = f"blk.{i}."
        need(b + "attn_norm.weight", n_embd)
        if b + "attn_qkv.weight" in by_name:
            expect(by_name[b + "attn_qkv.weight"], (n_embd, q_out + kv_k + kv_v if heads_known else None))
        else:
            need(b + "attn_q.weight", n_embd, q_out if heads_known else None)
            need(b + "attn_k.weight", n_embd, kv_k if heads_known else None)
            need(b + "attn_v.weight", n_embd, kv_v if heads_known else None)
        need(b + "attn_output.weight", q_out if heads_known else None, n_embd)
        need(b + "ffn_norm.weight", n_embd)
        if post_norms:  # llama-arch.cpp:464, 468: LLM_TENSOR_ATTN_POST_NORM, LLM_TENSOR_FFN_POST_NORM
            need(b + "post_attention_norm.weight", n_embd)
            need(b + "post_ffw_norm.weight", n_embd)
        if qk_norms:
            need(b + "attn_q_norm.weight", head_k if heads_known else None)
            need(b + "attn_k_norm.weight", head_k if heads_known else None)
        if arch == "llama" and n_expert > 0:
            need(b + "ffn_gate_inp.weight", n_embd, n_expert)
            need(b + "ffn_up_exps.weight", n_embd, None, n_expert)
            need(b + "ffn_down_exps.weight", None, n_embd, n_expert)
        elif arch == "phi3":  # gate and up are one tensor (phi3.cpp)
            need(b + "ffn_up.weight", n_embd, 2 * n_ff if n_ff else None)
            need(b + "ffn_down.weight", n_ff or None, n_embd)
        else:
            need(b + "ffn_gate.weight", n_embd, n_ff or None)
            need(b + "ffn_up.weight", n_embd, n_ff or None)
            need(b + "ffn_down.weight", n_ff or None, n_embd)
