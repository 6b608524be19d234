"""Compute GGUF file sizes for the catalog from tensor shapes and llama.cpp's quantization rules.

    python tools/catalog_sizes.py            # table of sizes + check against published sizes
    python tools/catalog_sizes.py --write    # regenerate the variants block in models.toml

The per-tensor types follow llama.cpp's quantization mixes as `localllm.quantmix` models
them (the estimator uses the same rules to tell which weights the CPU backend repacks).
GGUF metadata (mostly the tokenizer) is estimated.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "localllm" / "data" / "models.toml"

sys.path.insert(0, str(ROOT))  # run from a checkout: the rules live in the package
from localllm.quantmix import QUANTS, tensor_bytes, tensor_type, tensors  # noqa: E402

# Published file sizes (bytes) and where they come from: the byte count of the very file
# the variant downloads (the Hub's X-Linked-Size), never a total from another publisher
# (Ollama's llama3.2:3b is 2,019,393,189 bytes over all its layers, not the GGUF's size)
# nor a rounded figure. Variants listed here are written with size_estimated = false;
# the others are computed. The store checks every download against the Hub's own size
# and LFS sha256, so a wrong number here is a warning at download, not a refusal.
PUBLISHED = {
    ("llama-3.2-3b-instruct", "Q4_K_M"): (2_019_377_696, "bartowski/Llama-3.2-3B-Instruct-GGUF file size (issue 11)"),
    ("qwen2.5-7b-instruct", "Q4_K_M"): (4_683_074_240, "bartowski/Qwen2.5-7B-Instruct-GGUF file size (issue 11)"),
}
# Published sizes used only as checks (a different file of the same shapes, or rounded).
CHECKS = {
    ("llama-3.2-1b-instruct", "Q4_K_M"): (0.81e9, 0.005e9, "bartowski Llama-3.2-1B-Instruct-Q4_K_M.gguf, 0.81 GB"),
    ("llama-3.2-1b-instruct", "Q8_0"): (1.32e9, 0.005e9, "bartowski Llama-3.2-1B-Instruct-Q8_0.gguf, 1.32 GB"),
    ("llama-3.2-1b-instruct", "F16"): (2.48e9, 0.005e9, "bartowski Llama-3.2-1B-Instruct-f16.gguf, 2.48 GB"),
    ("llama-3.2-3b-instruct", "Q4_K_M"): (2_019_377_696, 0, "bartowski Llama-3.2-3B-Instruct-Q4_K_M.gguf"),
    ("qwen2.5-7b-instruct", "Q4_K_M"): (4_683_074_240, 0, "bartowski Qwen2.5-7B-Instruct-Q4_K_M.gguf"),
    ("falcon-7b-instruct", "Q4_0"): (4_210_994_112, 0, "GPT4All gpt4all-falcon-newbpe-q4_0.gguf (Falcon-7B shapes)"),
}

# GGUF metadata estimate: bytes per vocabulary entry (length-prefixed string + token
# type, plus a float score for SentencePiece) and per BPE merge; calibrated on the
# published sizes above to within a few MB.
TOKEN_BYTES = {"bpe": 8 + 7 + 4, "spm": 8 + 7 + 4 + 4}
MERGE_BYTES = 8 + 12
GGUF_FIXED_BYTES = 16 * 1024  # header, hyperparameters, chat template
TENSOR_INFO_BYTES = 80  # name, dims, type, offset, plus average alignment padding


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
        print(
            f"  {fname}:{quant}: estimated {est:,} vs published {expected:,.0f} "
            f"({err / 1e6:+.1f} MB, {100 * rel:+.2f} %, published rounding ±{rounding / 1e6:.0f} MB)"
            f"  [{source}]"
        )
    print(f"worst relative error: {100 * worst:.2f} %")
    if args.write:
        block = variants_block(families)
        new = re.sub(
            r"(# BEGIN GENERATED VARIANTS[^\n]*\n).*?(# END GENERATED VARIANTS)",
            lambda m: m.group(1) + block + m.group(2),
            text,
            flags=re.S,
        )
        CATALOG.write_text(new, encoding="utf-8")
        print(f"wrote {CATALOG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
