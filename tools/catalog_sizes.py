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
    # issue 14: the GB figures (rounded to 10 MB) of bartowski's model cards for the new families
    ("qwen3-1.7b", "Q8_0"): (2.17e9, 0.005e9, "bartowski Qwen_Qwen3-1.7B-Q8_0.gguf, 2.17 GB"),
    ("qwen3-1.7b", "Q6_K"): (1.67e9, 0.005e9, "bartowski Qwen_Qwen3-1.7B-Q6_K.gguf, 1.67 GB"),
    ("qwen3-1.7b", "Q5_K_M"): (1.47e9, 0.005e9, "bartowski Qwen_Qwen3-1.7B-Q5_K_M.gguf, 1.47 GB"),
    ("qwen3-4b", "Q8_0"): (4.28e9, 0.005e9, "bartowski Qwen_Qwen3-4B-Q8_0.gguf, 4.28 GB"),
    ("qwen3-4b", "Q6_K"): (3.31e9, 0.005e9, "bartowski Qwen_Qwen3-4B-Q6_K.gguf, 3.31 GB"),
    ("qwen3-4b", "Q5_K_M"): (2.89e9, 0.005e9, "bartowski Qwen_Qwen3-4B-Q5_K_M.gguf, 2.89 GB"),
    ("qwen3-4b", "Q4_K_M"): (2.50e9, 0.005e9, "bartowski Qwen_Qwen3-4B-Q4_K_M.gguf, 2.50 GB"),
    ("gemma-3-1b-it", "Q8_0"): (1.07e9, 0.005e9, "bartowski gemma-3-1b-it-qat-Q8_0.gguf (same shapes) 1.07 GB"),
    ("gemma-3-1b-it", "Q6_K"): (1.01e9, 0.005e9, "bartowski gemma-3-1b-it-qat-Q6_K.gguf (same shapes) 1.01 GB"),
    ("gemma-3-1b-it", "Q5_K_M"): (0.85e9, 0.005e9, "bartowski gemma-3-1b-it-qat-Q5_K_M.gguf (same shapes) 0.85 GB"),
    ("gemma-3-1b-it", "Q4_K_M"): (0.81e9, 0.005e9, "bartowski gemma-3-1b-it-qat-Q4_K_M.gguf (same shapes) 0.81 GB"),
    ("gemma-3-4b-it", "Q8_0"): (4.13e9, 0.005e9, "bartowski google_gemma-3-4b-it-Q8_0.gguf, 4.13 GB"),
    ("gemma-3-4b-it", "Q6_K"): (3.19e9, 0.005e9, "bartowski google_gemma-3-4b-it-Q6_K.gguf, 3.19 GB"),
    ("gemma-3-4b-it", "Q5_K_M"): (2.83e9, 0.005e9, "bartowski google_gemma-3-4b-it-Q5_K_M.gguf, 2.83 GB"),
    ("gemma-3-4b-it", "Q4_K_M"): (2.49e9, 0.005e9, "bartowski google_gemma-3-4b-it-Q4_K_M.gguf, 2.49 GB"),
    ("smollm3-3b", "Q8_0"): (3.28e9, 0.005e9, "bartowski HuggingFaceTB_SmolLM3-3B-Q8_0.gguf, 3.28 GB"),
    ("smollm3-3b", "Q6_K"): (2.53e9, 0.005e9, "bartowski HuggingFaceTB_SmolLM3-3B-Q6_K.gguf, 2.53 GB"),
    ("smollm3-3b", "Q5_K_M"): (2.21e9, 0.005e9, "bartowski HuggingFaceTB_SmolLM3-3B-Q5_K_M.gguf, 2.21 GB"),
    ("smollm3-3b", "Q4_K_M"): (1.92e9, 0.005e9, "bartowski HuggingFaceTB_SmolLM3-3B-Q4_K_M.gguf, 1.92 GB"),
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


# Repositories that publish bf16 rather than f16 as their 16-bit file (bartowski's newer ones):
# no F16 variant is written for these families (the catalog has no BF16 quant yet).
NO_F16 = frozenset(
    ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "gemma-3-1b-it", "gemma-3-4b-it"]
    + ["phi-4-mini-instruct", "smollm3-3b"]
)


def quants_of(fname: str) -> tuple[str, ...]:
    return tuple(q for q in QUANTS if not (q == "F16" and fname in NO_F16))


def _entries(block: str) -> list[tuple[dict, str]]:
    """The [[variants]] entries of a generated block: (parsed, text as written)."""
    out = []
    for chunk in re.split(r"(?m)^(?=\[\[variants\]\]\s*$)", block):
        if chunk.strip().startswith("[[variants]]"):
            raw = tomllib.loads(chunk)["variants"][0]
            out.append((raw, chunk.rstrip("\n") + "\n"))
    return out


def _kept(raw: dict) -> bool:
    """An entry a regeneration keeps as written: sized from the Hub (tools/refresh_catalog.py)."""
    return "sha256" in raw or str(raw.get("size_source", "")).startswith("Hub listing")


def variants_block(families: dict, current: str = "") -> str:
    """The generated variants block; `current` (models.toml's text) supplies what to keep:
    entries refreshed from the Hub, and any entry this tool does not write (another quant, a
    package-index variant...), after its family's generated ones."""
    m = re.search(r"# BEGIN GENERATED VARIANTS[^\n]*\n(.*?)# END GENERATED VARIANTS", current, flags=re.S)
    existing = _entries(m.group(1)) if m else []
    fams = published(families)
    generated = {(fname, q) for fname in fams for q in quants_of(fname)}
    by_key = {(r.get("family"), r.get("quant")): (r, t) for r, t in existing if r.get("format", "gguf") == "gguf"}
    lines = []
    for fname, f in fams.items():
        for quant in quants_of(fname):
            old = by_key.get((fname, quant))
            if old is not None and _kept(old[0]):
                lines.append(old[1])
                continue
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
        for raw, text in existing:  # entries this tool does not generate stay, in their order
            key = (raw.get("family"), raw.get("quant"))
            if raw.get("family") == fname and (key not in generated or raw.get("format", "gguf") != "gguf"):
                lines.append(text)
    for raw, text in existing:  # ...and those of a family that is not published here
        if raw.get("family") not in fams:
            lines.append(text)
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
        block = variants_block(families, text)
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
