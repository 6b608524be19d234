"""llama.cpp's quantization mixes: the ggml type of every tensor of a model quantized to a file type.

The tensor list covers llama, qwen2, qwen3, gemma2, gemma3, phi3, falcon and smollm3 (llama's
tensors: its NoPE layers change no shapes). The rules follow llama.cpp `src/llama-quant.cpp`
(`llama_tensor_get_type`): the output
(or tied token embedding) goes to Q6_K (Q8_0 for Falcon or rows not a multiple of 256),
attn_v / ffn_down / attn_output / attn_qkv get more bits in the _M mixes, and a K-quant
whose row length is not a multiple of 256 falls back (Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0,
Q5_K -> Q5_1, Q6_K -> Q8_0). Not modelled: the imatrix-only Q4_0 guard on the first
ffn_down layers (a few MB at most).

Used by `tools/catalog_sizes.py` (file sizes for the catalog) and by the estimator (which
weights ggml's CPU backend repacks, see `localllm.repack`). Pure arithmetic on shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from localllm.catalog import Family

__all__ = [
    "FALLBACK",
    "FILE_TYPES",
    "FTYPE_DEFAULT",
    "QK_K",
    "QUANTS",
    "TYPES",
    "TensorInfo",
    "block_of",
    "facts",
    "file_type_quant",
    "gguf_weights",
    "quantized_tensors",
    "tensor_bytes",
    "tensor_type",
    "tensors",
    "use_more_bits",
]

# llama.cpp's llama_ftype (a GGUF's general.file_type): the quant a file was made as
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K", 11: "Q3_K_S",
    12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S", 17: "Q5_K_M", 18: "Q6_K",
    19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS", 23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL",
    26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16",
    36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}  # fmt: skip


def file_type_quant(file_type: object) -> str | None:
    """The quant name of a GGUF general.file_type value ("Q4_K_M"), None when it names none."""
    return FILE_TYPES.get(file_type) if isinstance(file_type, int) else None


QK_K = 256
# ggml type -> (block size in weights, bytes per block): ggml-common.h block structs
TYPES = {
    "F32": (1, 4),
    "F16": (1, 2),
    "Q4_0": (32, 18),
    "Q4_1": (32, 20),
    "Q5_0": (32, 22),
    "Q5_1": (32, 24),
    "Q8_0": (32, 34),
    "IQ4_NL": (32, 18),
    "Q2_K": (256, 84),
    "Q3_K": (256, 110),
    "Q4_K": (256, 144),
    "Q5_K": (256, 176),
    "Q6_K": (256, 210),
}
# file type (what the variant is called) -> default tensor type
FTYPE_DEFAULT = {
    "Q2_K": "Q2_K",
    "Q3_K_M": "Q3_K",
    "Q4_0": "Q4_0",
    "Q4_K_M": "Q4_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "Q8_0": "Q8_0",
    "F16": "F16",
}
QUANTS = tuple(FTYPE_DEFAULT)
FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

# (name, ggml type, ne0 = row length, ne1 = rows, bytes, block: layer index, -1 input, -2 output)
TensorInfo = tuple[str, str, int, int, int, int]


def facts(family: Family) -> dict[str, Any]:
    """The shape facts of a catalog Family in the form the rules below read (models.toml's keys)."""
    return {
        "arch": family.arch,
        "n_embd": family.n_embd,
        "n_vocab": family.n_vocab,
        "n_layer": family.n_layer,
        "head_dim": family.head_dim,
        "n_head": family.n_head,
        "n_head_kv": family.n_head_kv,
        "n_ff": family.n_ff or 4 * family.n_embd,
        "tied_embeddings": family.tied_embeddings,
    }


def tensors(f: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(name, ne0 = row length, ne1 = rows) for every tensor; 1-D tensors have ne1 = 1."""
    arch = f["arch"]
    e, v, L = f["n_embd"], f["n_vocab"], f["n_layer"]
    hd, nh, nkv, ff = f["head_dim"], f["n_head"], f["n_head_kv"], f["n_ff"]
    q, kv = nh * hd, nkv * hd
    out = [("token_embd.weight", e, v), ("output_norm.weight", e, 1)]
    if arch == "falcon":
        out.append(("output_norm.bias", e, 1))
    if not f["tied_embeddings"]:
        out.append(("output.weight", e, v))
    if arch == "llama" and f["n_vocab"] == 128256:
        out.append(("rope_freqs.weight", hd // 2, 1))  # Llama 3.1/3.2 rope scaling factors
    if arch == "phi3":  # LongRoPE factors (Phi-4-mini rotates 3/4 of each head: 48, not 64; a few bytes)
        out += [("rope_factors_long.weight", hd // 2, 1), ("rope_factors_short.weight", hd // 2, 1)]
    for i in range(L):
        b = f"blk.{i}."
        out.append((b + "attn_norm.weight", e, 1))
        if arch == "falcon":
            out += [
                (b + "attn_norm.bias", e, 1),
                (b + "attn_qkv.weight", e, q + 2 * kv),
                (b + "attn_output.weight", q, e),
                (b + "ffn_up.weight", e, ff),
                (b + "ffn_down.weight", ff, e),
            ]
            continue
        if arch == "phi3":
            out += [
                (b + "attn_qkv.weight", e, q + 2 * kv),
                (b + "attn_output.weight", q, e),
                (b + "ffn_norm.weight", e, 1),
                (b + "ffn_up.weight", e, 2 * ff),
                (b + "ffn_down.weight", ff, e),
            ]
            continue
        out += [
            (b + "attn_q.weight", e, q),
            (b + "attn_k.weight", e, kv),
            (b + "attn_v.weight", e, kv),
            (b + "attn_output.weight", q, e),
            (b + "ffn_norm.weight", e, 1),
            (b + "ffn_gate.weight", e, ff),
            (b + "ffn_up.weight", e, ff),
            (b + "ffn_down.weight", ff, e),
        ]
        if arch == "qwen2":
            out += [(b + "attn_q.bias", q, 1), (b + "attn_k.bias", kv, 1), (b + "attn_v.bias", kv, 1)]
        if arch in ("qwen3", "gemma3"):  # per-head RMS norms of q and k (F32, a few KB)
            out += [(b + "attn_q_norm.weight", hd, 1), (b + "attn_k_norm.weight", hd, 1)]
        if arch in ("gemma2", "gemma3"):
            out += [(b + "post_attention_norm.weight", e, 1), (b + "post_ffw_norm.weight", e, 1)]
    return out


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(f: Mapping[str, Any], ftype: str, name: str, nx: int, ny: int, counters: dict) -> str:
    """llama.cpp's choice of ggml type for one tensor of a model quantized to `ftype`."""
    if ny == 1 or not name.endswith(".weight"):
        return "F32"  # norms, biases, rope factors stay F32
    default = FTYPE_DEFAULT[ftype]
    if ftype == "F16":
        return "F16"
    arch, L = f["arch"], f["n_layer"]
    t = default
    is_output = name == "output.weight" or (f["tied_embeddings"] and name == "token_embd.weight")
    if is_output:
        if arch == "falcon" or nx % QK_K != 0:
            t = "Q8_0"
        elif t != "Q8_0":
            t = "Q6_K"
    elif "attn_v.weight" in name:
        i = counters["wv"]
        counters["wv"] += 1
        gqa = f["n_head"] // f["n_head_kv"]
        if ftype == "Q2_K":
            t = "Q4_K" if gqa >= 4 else "Q3_K"
        elif ftype == "Q3_K_M":
            t = "Q5_K" if i < 2 else "Q4_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and use_more_bits(i, L):
            t = "Q6_K"
    elif "ffn_down" in name:
        i = counters["down"]
        counters["down"] += 1
        if ftype == "Q2_K":
            t = "Q3_K"
        elif ftype == "Q3_K_M":
            t = "Q5_K" if i < L // 16 else "Q4_K" if arch != "falcon" or use_more_bits(i, L) else "Q3_K"
        elif ftype == "Q4_K_M":
            if arch == "falcon":
                t = "Q6_K" if i < L // 16 else "Q5_K" if use_more_bits(i, L) else "Q4_K"
            elif use_more_bits(i, L):
                t = "Q6_K"
        elif ftype == "Q5_K_M" and use_more_bits(i, L):
            t = "Q6_K"
    elif "attn_output.weight" in name:
        if arch != "falcon":
            if ftype == "Q2_K":
                t = "Q3_K"
            elif ftype == "Q3_K_M":
                t = "Q4_K"
    elif "attn_qkv.weight" in name:
        if ftype == "Q3_K_M":
            t = "Q4_K"
        elif ftype == "Q4_K_M":
            t = "Q5_K"
        elif ftype == "Q5_K_M":
            t = "Q6_K"
    if nx % TYPES[t][0] != 0:  # llama.cpp's convert_incompatible_tensor fallback
        t = FALLBACK.get(t, t)
        if nx % TYPES[t][0] != 0:
            t = "F16"
    return t


def tensor_bytes(t: str, nx: int, ny: int) -> int:
    blck, size = TYPES[t]
    return ny * (nx // blck) * size


def block_of(name: str) -> int:
    """The repeating layer a tensor belongs to; -1 for the input side (token embedding), -2 the output."""
    if name.startswith("blk."):
        part = name[4:].split(".", 1)[0]
        if part.isdigit():
            return int(part)
    if name.startswith("token_embd") or name.startswith("token_types") or name.startswith("position_embd"):
        return -1
    return -2


def quantized_tensors(f: Mapping[str, Any], ftype: str) -> list[TensorInfo]:
    """Every 2-D weight of a model in llama.cpp's mix for `ftype`, with its type and bytes."""
    counters = {"wv": 0, "down": 0}
    out: list[TensorInfo] = []
    for name, nx, ny in tensors(f):
        t = tensor_type(f, ftype, name, nx, ny, counters)
        if ny > 1:
            out.append((name, t, nx, ny, tensor_bytes(t, nx, ny), block_of(name)))
    return out


def gguf_weights(tensors: Any) -> tuple[TensorInfo, ...]:
    """The 2-D weights of a GGUF file's tensor table (`validate.GGUFInfo.tensors`) as TensorInfo."""
    out = []
    for t in tensors:
        shape = tuple(t.shape)
        if len(shape) == 2 and shape[1] > 1:
            out.append((t.name, t.ggml_type, int(shape[0]), int(shape[1]), int(t.nbytes), block_of(t.name)))
    return tuple(out)
