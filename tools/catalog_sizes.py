"""Compute GGUF file sizes for the catalog from tensor shapes and llama.cpp's quantization rules.

    python tools/catalog_sizes.py            # table of sizes + check against published sizes
    python tools/catalog_sizes.py --write    # regenerate the variants block in models.toml

The rules follow llama.cpp `src/llama-quant.cpp` (`llama_tensor_get_type`): the output
(or tied token embedding) goes to Q6_K (Q8_0 for Falcon or rows not a multiple of 256),
attn_v / ffn_down / attn_output / attn_qkv get more bits in the _M mixes, and a K-quant
whose row length is not a multiple of 256 falls back (Q2_K/Q3_K -> IQ4_NL, Q4_K -> Q5_0,
Q5_K -> Q5_1, Q6_K -> Q8_0). Not modelled: the imatrix-only Q4_0 guard on the first
ffn_down layers (a few MB at most). GGUF metadata (mostly the tokenizer) is estimated.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "models.toml"

QK_K = 256
# ggml type -> (block size in weights, bytes per block): ggml-common.h block structs
TYPES = {
    "F32": (1, 4), "F16": (1, 2),
    "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24), "Q8_0": (32, 34),
    "IQ4_NL": (32, 18),
    "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144), "Q5_K": (256, 176), "Q6_K": (256, 210),
}
# file type (what the variant is called) -> default tensor type
FTYPE_DEFAULT = {
    "Q2_K": "Q2_K", "Q3_K_M": "Q3_K", "Q4_0": "Q4_0", "Q4_K_M": "Q4_K",
    "Q5_K_M": "Q5_K", "Q6_K": "Q6_K", "Q8_0": "Q8_0", "F16": "F16",
}
QUANTS = tuple(FTYPE_DEFAULT)
FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

# Published file sizes (bytes) and where they come from. Variants listed here are
# written with size_estimated = false; the others are computed.
PUBLISHED = {
    ("llama-3.2-3b-instruct", "Q4_K_M"): (2_019_393_189, "Ollama llama3.2:3b blob (Q4_K_M)"),
    ("qwen2.5-7b-instruct", "Q4_K_M"): (4_677_120_000, "published Q4_K_M size given in issue 3"),
}
# Published sizes used only as checks (a different file of the same shapes, or rounded).
CHECKS = {
    ("llama-3.2-1b-instruct", "Q4_K_M"): (0.81e9, 0.005e9, "bartowski Llama-3.2-1B-Instruct-Q4_K_M.gguf, 0.81 GB"),
    ("llama-3.2-1b-instruct", "Q8_0"): (1.32e9, 0.005e9, "bartowski Llama-3.2-1B-Instruct-Q8_0.gguf, 1.32 GB"),
    ("llama-3.2-1b-instruct", "F16"): (2.48e9, 0.005e9, "bartowski Llama-3.2-1B-Instruct-f16.gguf, 2.48 GB"),
    ("llama-3.2-3b-instruct", "Q4_K_M"): (2_019_393_189, 0, "Ollama llama3.2:3b"),
    ("qwen2.5-7b-instruct", "Q4_K_M"): (4_677_120_000, 0, "issue 3"),
    ("falcon-7b-instruct", "Q4_0"): (4_210_994_112, 0, "GPT4All gpt4all-falcon-newbpe-q4_0.gguf (Falcon-7B shapes)"),
}

# GGUF metadata estimate: bytes per vocabulary entry (length-prefixed string + token
# type, plus a float score for SentencePiece) and per BPE merge; calibrated on the
# published sizes above to within a few MB.
TOKEN_BYTES = {"bpe": 8 + 7 + 4, "spm": 8 + 7 + 4 + 4}
MERGE_BYTES = 8 + 12
GGUF_FIXED_BYTES = 16 * 1024  # header, hyperparameters, chat template
TENSOR_INFO_BYTES = 80  # name, dims, type, offset, plus average alignment padding


def tensors(f: dict) -> list[tuple[str, int, int]]:
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
    if arch == "phi3":
        out += [("rope_factors_long.weight", hd // 2, 1), ("rope_factors_short.weight", hd // 2, 1)]
    for i in range(L):
        b = f"blk.{i}."
        out.append((b + "attn_norm.weight", e, 1))
        if arch == "falcon":
            out += [(b + "attn_norm.bias", e, 1), (b + "attn_qkv.weight", e, q + 2 * kv),
                    (b + "attn_output.weight", q, e), (b + "ffn_up.weight", e, ff),
                    (b + "ffn_down.weight", ff, e)]
            continue
        if arch == "phi3":
            out += [(b + "attn_qkv.weight", e, q + 2 * kv), (b + "attn_output.weight", q, e),
                    (b + "ffn_norm.weight", e, 1), (b + "ffn_up.weight", e, 2 * ff),
                    (b + "ffn_down.weight", ff, e)]
            continue
        out += [(b + "attn_q.weight", e, q), (b + "attn_k.weight", e, kv),
                (b + "attn_v.weight", e, kv), (b + "attn_output.weight", q, e),
                (b + "ffn_norm.weight", e, 1), (b + "ffn_gate.weight", e, ff),
                (b + "ffn_up.weight", e, ff), (b + "ffn_down.weight", ff, e)]
        if arch == "qwen2":
            out += [(b + "attn_q.bias", q, 1), (b + "attn_k.bias", kv, 1), (b + "attn_v.bias", kv, 1)]
        if arch == "gemma2":
            out += [(b + "post_attention_norm.weight", e, 1), (b + "post_ffw_norm.weight", e, 1)]
    return out


def use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(f: dict, ftype: str, name: str, nx: int, ny: int, counters: dict) -> str:
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
            t = ("Q5_K" if i < L // 16 else
                 "Q4_K" if arch != "falcon" or use_more_bits(i, L) else "Q3_K")
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


def metadata_bytes(f: dict) -> int:
    kind = f.get("tokenizer", "bpe")
    n = f["n_vocab"]
    merges = n if kind == "bpe" else 0
    if kind == "bpe" and n == 128256:
        merges = 280_147  # Llama 3 tokenizer merges
    return GGUF_FIXED_BYTES + n * TOKEN_BYTES[kind] + merges * MERGE_BYTES


def file_size(f: dict, ftype: str) -> tuple[int, dict[str, int]]:
    """Estimated file size in bytes and bytes per ggml type."""
    counters = {"wv": 0, "down": 0}
    by_type: dict[str, int] = {}
    ts = tensors(f)
    total = metadata_bytes(f) + TENSOR_INFO_BYTES * len(ts)
    for name, nx, ny in ts:
        t = tensor_type(f, ftype, name, nx, ny, counters)
        nb = tensor_bytes(t, nx, ny)
        by_type[t] = by_type.get(t, 0) + nb
        total += nb
    return total, by_type


def published(families: dict) -> dict:
    """Families published on the Hub; the packaged starter has one hand-written variant."""
    return {name: f for name, f in families.items() if "gguf_repo" in f}


def variants_block(families: dict) -> str:
    lines = []
    for fname, f in published(families).items():
        for quant in QUANTS:
            if (fname, quant) in PUBLISHED:
                size, source = PUBLISHED[(fname, quant)]
                est = False
            else:
                size, _ = file_size(f, quant)
                source, est = None, True
            lines.append("[[variants]]")
            lines.append(f'family = "{fname}"')
            lines.append(f'quant = "{quant}"')
            lines.append(f"size = {size}")
            if est:
                lines.append("size_estimated = true")
            else:
                lines.append(f'size_source = "{source}"')
            if quant == "F16" and f.get("gguf_repo", "").startswith("bartowski/"):
                lines.append(f'filename = "{f["gguf_filename"].replace("{quant}", "f16")}"')
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the variants block in models.toml")
    args = parser.parse_args(argv)
    text = CATALOG.read_text(encoding="utf-8")
    families = published(tomllib.loads(text)["families"])
    print(f"{'family':28} " + " ".join(f"{q:>8}" for q in QUANTS) + "   (GB, 10^9 bytes)")
    for fname, f in families.items():
        row = [file_size(f, q)[0] / 1e9 for q in QUANTS]
        print(f"{fname:28} " + " ".join(f"{s:8.3f}" for s in row))
    print("\nchecks against published sizes:")
    worst = 0.0
    for (fname, quant), (expected, rounding, source) in CHECKS.items():
        est, by_type = file_size(families[fname], quant)
        err = est - expected
        rel = err / expected
        worst = max(worst, abs(rel))
        print(f"  {fname}:{quant}: estimated {est:,} vs published {expected:,.0f} "
              f"({err / 1e6:+.1f} MB, {100 * rel:+.2f} %, published rounding ±{rounding / 1e6:.0f} MB)"
              f"  [{source}]")
    print(f"worst relative error: {100 * worst:.2f} %")
    if args.write:
        block = variants_block(families)
        new = re.sub(r"(# BEGIN GENERATED VARIANTS[^\n]*\n).*?(# END GENERATED VARIANTS)",
                     lambda m: m.group(1) + block + m.group(2), text, flags=re.S)
        CATALOG.write_text(new, encoding="utf-8")
        print(f"wrote {CATALOG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
