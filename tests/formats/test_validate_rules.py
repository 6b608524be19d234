"""Rules from llama.cpp's own loader (localllm.formats.gguf_rules), each on a file built to break it.

Every bad file here is a small edit of the tiny model: the fuzzer of issue 12 found files
like these passing validation and then aborting (SIGABRT) inside llama.cpp, hanging
localllm's planner or llama.cpp's tokenizer, or raising bare Python exceptions. Each must
now be a clean InvalidModelError that names the key or tensor and the numbers, raised
before llama.cpp sees the file: the subprocess test runs `localllm.load()` (and a
generation with a newline in it) on all of them, where a signal or a hang fails it.
"""

from __future__ import annotations

import json
import math
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from localllm.catalog import family_from_gguf_metadata
from localllm.errors import CatalogError, InvalidModelError
from localllm.validate import validate_gguf

# -- building the files ------------------------------------------------------------------------


def _build(
    src: Path,
    dst: Path,
    *,
    arch: str | None = None,
    kv: dict | None = None,
    drop: tuple = (),
    tensors=None,
    alignment: int | None = None,
) -> Path:
    """Copy a GGUF through gguf's writer: `kv` sets keys (key -> (value, type[, sub_type])), `drop`
    removes keys, `tensors` maps the [(name, data, type)] list to a new one."""
    import gguf

    reader = gguf.GGUFReader(src)
    arch = arch or str(reader.fields["general.architecture"].contents())
    w = gguf.GGUFWriter(str(dst), arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    kv = dict(kv or {})
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.alignment") or name in drop:
            continue
        name_new = arch + name[len("llama") :] if name.startswith("llama.") and arch != "llama" else name
        if name_new in kv:
            w.add_key_value(name_new, *kv.pop(name_new))
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(name_new, field.contents(), vtype, sub)
    for name, args in kv.items():
        w.add_key_value(name, *args)
    entries = [(t.name, t.data, t.tensor_type) for t in reader.tensors]
    for name, data, ttype in tensors(entries) if tensors else entries:
        w.add_tensor(name, data, raw_dtype=ttype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


def _patch_u32(path: Path, key: str, value: int) -> Path:
    """Overwrite the uint32 value of `key` in place (for values gguf's writer refuses to write)."""
    import gguf

    field = gguf.GGUFReader(path).fields[key]
    offset = field.offset + sum(part.nbytes for part in field.parts[:3])  # key len, key, type
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, offset, value)
    path.write_bytes(bytes(data))
    return path


def _retype(name: str, ggml_type: str):
    """A `tensors` edit storing tensor `name` as `ggml_type` (F16, BF16 or a quant)."""
    import gguf
    import numpy as np

    qt = gguf.GGMLQuantizationType[ggml_type]

    def edit(entries):
        out = []
        for n, data, t in entries:
            if n == name:
                f32 = np.asarray(data, dtype=np.float32)
                data = f32.astype(np.float16) if ggml_type == "F16" else gguf.quants.quantize(f32, qt)
                t = qt
            out.append((n, data, t))
        return out

    return edit


def _without(name: str):
    return lambda entries: [e for e in entries if e[0] != name]


def _with_extra(name: str, n: int, ggml_type: str = "F32"):
    import gguf
    import numpy as np

    def edit(entries):
        data = np.zeros(n, dtype=np.float16 if ggml_type == "F16" else np.float32)
        return [*entries, (name, data, gguf.GGMLQuantizationType[ggml_type])]

    return edit


def _gpt2_vocab(tokens: list[str]) -> list[str]:
    """The tiny vocabulary respelled as GPT-2 byte-level BPE: byte tokens become the printable
    characters GPT-2 maps bytes to, "▁" becomes "Ġ", and no <0xHH> token is left."""
    from localllm.runtimes.onnx import _byte_decoder  # GPT-2's table, inverted: char -> byte

    byte_char = {b: c for c, b in _byte_decoder().items()}
    out, seen = [], set()
    for i, tok in enumerate(tokens):
        t = byte_char[i - 5] if 5 <= i < 261 else tok.replace("\u2581", "\u0120")
        if t in seen:
            t = f"[piece{i}]"
        seen.add(t)
        out.append(t)
    return out


@pytest.fixture(scope="module")
def vocab(tiny_gguf):
    import gguf

    reader = gguf.GGUFReader(tiny_gguf)
    return (
        list(reader.fields["tokenizer.ggml.tokens"].contents()),
        list(reader.fields["tokenizer.ggml.token_type"].contents()),
    )


# label -> (how to build it, what the message must say)
def _cases(tiny: Path, out: Path, vocab) -> dict[str, tuple[Path, str]]:
    import gguf

    vt = gguf.GGUFValueType
    tokens, types = vocab
    u32, f32, arr, s = vt.UINT32, vt.FLOAT32, vt.ARRAY, vt.STRING
    nan = float("nan")
    cases: dict[str, tuple[dict, str]] = {
        # hyperparameters (llama-model.cpp load_hparams)
        "block-count-0": (dict(kv={"llama.block_count": (0, u32)}), "llama.block_count is 0, outside 1..512"),
        "block-count-2^31-1": (dict(kv={"llama.block_count": (2**31 - 1, u32)}), "outside 1..512"),
        "block-count-2^32-1": (dict(kv={"llama.block_count": (2**32 - 1, u32)}), "outside 1..512"),
        "block-count-past-layers": (
            dict(kv={"llama.block_count": (3, u32)}),
            "block_count is 3 but the tensor table has layers up to blk.1",
        ),
        "block-count-float": (
            dict(kv={"llama.block_count": (2.0, f32)}),
            "llama.block_count is a float32, but llama.cpp reads it as a uint32",
        ),
        "block-count-missing": (dict(drop=("llama.block_count",)), "the key llama.block_count is missing"),
        "context-0": (dict(kv={"llama.context_length": (0, u32)}), "llama.context_length is 0, outside 1..16777216"),
        "context-2^30": (dict(kv={"llama.context_length": (2**30, u32)}), "outside 1..16777216"),
        "context-string": (dict(kv={"llama.context_length": ("4096", s)}), "is a string"),
        "embedding-0": (dict(kv={"llama.embedding_length": (0, u32)}), "llama.embedding_length is 0"),
        "head-count-0": (
            dict(kv={"llama.attention.head_count": (0, u32)}),
            "llama.attention.head_count is 0; a 'llama' model needs at least one attention head",
        ),
        "head-count-kv-0": (dict(kv={"llama.attention.head_count_kv": (0, u32)}), "llama.attention.head_count_kv is 0"),
        "head-count-kv-3": (
            dict(kv={"llama.attention.head_count_kv": (3, u32)}),
            "head_count 4 is not a multiple of llama.attention.head_count_kv 3",
        ),
        "head-count-kv-layer-0": (
            dict(kv={"llama.attention.head_count_kv": ([2, 0], arr, vt.INT32)}),
            "head_count_kv is 0 (layer 1)",
        ),
        "head-count-array-short": (
            dict(kv={"llama.attention.head_count": ([4], arr, vt.UINT32)}),
            "has 1 entries for 2 layers",
        ),
        "head-count-kv-negative": (
            dict(kv={"llama.attention.head_count_kv": ([2, -2], arr, vt.INT32)}),
            "is -2 (layer 1)",
        ),
        "head-count-kv-uneven": (
            dict(kv={"llama.attention.head_count_kv": ([2, 4], arr, vt.INT32)}),
            "llama.attention.head_count_kv differs between layers (2, 4)",
        ),
        "head-count-kv-float-array": (
            dict(kv={"llama.attention.head_count_kv": ([2.0, 2.0], arr, vt.FLOAT32)}),
            "is an array of float32",
        ),
        "head-count-kv-more-than-heads": (
            dict(kv={"llama.attention.head_count_kv": (8, u32)}),
            "head_count 4 is not a multiple of llama.attention.head_count_kv 8",
        ),
        "rms-eps-nan": (
            dict(kv={"llama.attention.layer_norm_rms_epsilon": (nan, f32)}),
            "layer_norm_rms_epsilon is nan, not a finite number",
        ),
        "rms-eps-negative": (
            dict(kv={"llama.attention.layer_norm_rms_epsilon": (-1e-5, f32)}),
            "a normalization epsilon must be a finite number above 0",
        ),
        "rms-eps-0": (dict(kv={"llama.attention.layer_norm_rms_epsilon": (0.0, f32)}), "epsilon is 0.0"),
        "rms-eps-inf": (dict(kv={"llama.attention.layer_norm_rms_epsilon": (math.inf, f32)}), "not a finite number"),
        "norm-eps-nan": (dict(kv={"llama.attention.layer_norm_epsilon": (nan, f32)}), "not a finite number"),
        "rope-base-nan": (dict(kv={"llama.rope.freq_base": (nan, f32)}), "rope.freq_base is nan"),
        "rope-base-0": (dict(kv={"llama.rope.freq_base": (0.0, f32)}), "rotary base must be a finite number above 0"),
        "rope-scale-negative": (dict(kv={"llama.rope.scaling.factor": (-2.0, f32)}), "rope.scaling.factor is -2.0"),
        "rope-scale-inf": (dict(kv={"llama.rope.scaling.factor": (math.inf, f32)}), "not a finite number"),
        "rope-scaling-type-bogus": (
            dict(kv={"llama.rope.scaling.type": ("bogus", s)}),
            "rope.scaling.type is 'bogus'; llama.cpp knows none, linear, yarn, longrope",
        ),
        "experts-none-used": (
            dict(kv={"llama.expert_count": (4, u32)}),
            "llama.expert_count is 4 but llama.expert_used_count is 0",
        ),
        "experts-used-without-experts": (
            dict(kv={"llama.expert_used_count": (2, u32)}),
            "expert_used_count is 2, more than llama.expert_count 0",
        ),
        "alignment-1": (dict(alignment=1), "general.alignment is 1"),
        "alignment-16": (dict(alignment=16), "buffer pointer must be aligned"),
        # tensors (llama-model-loader.cpp, models/llama.cpp, ggml-cpu/binary-ops.cpp)
        "output-norm-f16": (
            dict(tensors=_retype("output_norm.weight", "F16")),
            "tensor 'output_norm.weight' is F16, but llama.cpp uses it in an f32-only operation",
        ),
        "output-norm-q8_0": (dict(tensors=_retype("output_norm.weight", "Q8_0")), "'output_norm.weight' is Q8_0"),
        "attn-norm-bf16": (dict(tensors=_retype("blk.0.attn_norm.weight", "BF16")), "'blk.0.attn_norm.weight' is BF16"),
        "bias-f16": (dict(tensors=_with_extra("blk.0.attn_q.bias", 64, "F16")), "'blk.0.attn_q.bias' is F16"),
        "ffn-down-missing": (
            dict(tensors=_without("blk.1.ffn_down.weight")),
            "the tensor 'blk.1.ffn_down.weight' is missing",
        ),
        "output-norm-missing": (dict(tensors=_without("output_norm.weight")), "'output_norm.weight' is missing"),
        "attn-k-shape": (
            dict(kv={"llama.attention.head_count_kv": (4, u32)}),
            "tensor 'blk.0.attn_k.weight' has shape [64, 32]",
        ),
        "embedding-shape": (
            dict(kv={"llama.embedding_length": (32, u32)}),
            "tensor 'token_embd.weight' has shape [64, 554]",
        ),
        # tokenizer (llama-vocab.cpp)
        "tokenizer-none": (dict(kv={"tokenizer.ggml.model": ("none", s)}), "tokenizer.ggml.model is 'none'"),
        "tokenizer-no-vocab": (dict(kv={"tokenizer.ggml.model": ("no_vocab", s)}), "no text tokenizer"),
        "tokenizer-bert": (
            dict(kv={"tokenizer.ggml.model": ("bert", s)}),
            "tokenizer.ggml.model is 'bert' (WordPiece, for BERT encoders) on a 'llama' model",
        ),
        "tokenizer-missing": (dict(drop=("tokenizer.ggml.model",)), "the key tokenizer.ggml.model is missing"),
        "tokenizer-unknown": (
            dict(kv={"tokenizer.ggml.model": ("sentencepiece2", s)}),
            "a tokenizer llama.cpp does not know",
        ),
        "tokenizer-gpt2-no-merges": (
            dict(kv={"tokenizer.ggml.model": ("gpt2", s)}),
            "tokenizer.ggml.merges is missing",
        ),
        "tokenizer-rwkv-on-spm": (
            dict(kv={"tokenizer.ggml.model": ("rwkv", s)}),
            "llama.cpp's RWKV tokenizer loops forever",
        ),
        "spm-on-gpt2-vocab": (
            dict(
                kv={
                    "tokenizer.ggml.tokens": (_gpt2_vocab(tokens), arr, s),
                    "tokenizer.ggml.token_type": (
                        [1 if 5 <= i < 261 else t for i, t in enumerate(types)],
                        arr,
                        vt.INT32,
                    ),
                    "tokenizer.ggml.merges": (["\u0120 h", "h e"], arr, s),
                }
            ),
            "the vocabulary is GPT-2-style byte-pair encoding",
        ),
        "spm-no-byte-tokens": (
            dict(
                kv={
                    "tokenizer.ggml.tokens": ([f"[b{i}]" if 5 <= i < 261 else t for i, t in enumerate(tokens)], arr, s),
                    "tokenizer.ggml.token_type": (
                        [1 if 5 <= i < 261 else t for i, t in enumerate(types)],
                        arr,
                        vt.INT32,
                    ),
                }
            ),
            "no byte token for",
        ),
        "tokens-duplicate": (
            dict(
                kv={"tokenizer.ggml.tokens": ([tokens[301] if i == 300 else t for i, t in enumerate(tokens)], arr, s)}
            ),
            "tokens 300 and 301 have the same text",
        ),
        "tokens-duplicate-byte": (
            dict(
                kv={"tokenizer.ggml.tokens": (["<0x41>" if i == 5 + 0x42 else t for i, t in enumerate(tokens)], arr, s)}
            ),
            "have the same text '<0x41>'",
        ),
        "byte-token-lowercase": (
            dict(kv={"tokenizer.ggml.tokens": (["<0x0a>" if t == "<0x0A>" else t for t in tokens], arr, s)}),
            "its text is '<0x0a>', not <0xHH> with two uppercase hex digits",
        ),
        "byte-token-lowercase-normal": (
            dict(
                kv={
                    "tokenizer.ggml.tokens": (["<0x0a>" if t == "<0x0A>" else t for t in tokens], arr, s),
                    "tokenizer.ggml.token_type": (
                        [1 if tokens[i] == "<0x0A>" else t for i, t in enumerate(types)],
                        arr,
                        vt.INT32,
                    ),
                }
            ),
            "no byte token for 1 of the 256 bytes (<0x0A>",
        ),
        "bert-arch-byte-tokens": (
            dict(arch="bert", kv={"tokenizer.ggml.model": ("bert", s)}),
            "tokens are typed as byte tokens",
        ),
    }
    built = {}
    for label, (how, expected) in cases.items():
        built[label] = (_build(tiny, out / f"{label}.gguf", **how), expected)
    # values gguf's writer refuses to write: patched in place
    for value in (0, 3):
        path = _build(tiny, out / f"alignment-{value}.gguf", alignment=32)
        built[f"alignment-{value}"] = (
            _patch_u32(path, "general.alignment", value),
            f"general.alignment is {value}, not a power of two",
        )
    return built


@pytest.fixture(scope="module")
def bad(tiny_gguf, tmp_path_factory, vocab) -> dict[str, tuple[Path, str]]:
    return _cases(tiny_gguf, tmp_path_factory.mktemp("rules"), vocab)


@pytest.fixture(scope="module")
def good(tiny_gguf, tmp_path_factory, vocab) -> dict[str, Path]:
    """Edits that stay valid: the rules must not refuse what llama.cpp runs."""
    import gguf

    vt = gguf.GGUFValueType
    tokens, types = vocab
    out = tmp_path_factory.mktemp("rules-good")
    return {
        "alignment-32": _build(tiny_gguf, out / "alignment-32.gguf", alignment=32),
        "alignment-64": _build(tiny_gguf, out / "alignment-64.gguf", alignment=64),
        "head-count-kv-per-layer": _build(
            tiny_gguf, out / "kv-per-layer.gguf", kv={"llama.attention.head_count_kv": ([2, 2], vt.ARRAY, vt.INT32)}
        ),
        "rope-scale-0": _build(
            tiny_gguf, out / "rope-scale-0.gguf", kv={"llama.rope.scaling.factor": (0.0, vt.FLOAT32)}
        ),
        "gpt2-vocab-with-merges": _build(
            tiny_gguf,
            out / "gpt2.gguf",
            kv={
                "tokenizer.ggml.model": ("gpt2", vt.STRING),
                "tokenizer.ggml.tokens": (_gpt2_vocab(tokens), vt.ARRAY, vt.STRING),
                "tokenizer.ggml.token_type": (
                    [1 if 5 <= i < 261 else t for i, t in enumerate(types)],
                    vt.ARRAY,
                    vt.INT32,
                ),
                "tokenizer.ggml.merges": (["\u0120 h", "h e"], vt.ARRAY, vt.STRING),
            },
        ),
    }


# -- the rules, in process ---------------------------------------------------------------------


def test_every_case_is_refused_with_what_and_why(bad):
    wrong = {}
    for label, (path, expected) in bad.items():
        try:
            validate_gguf(path)
        except InvalidModelError as exc:
            msg = str(exc)
            if expected not in msg or str(path) not in msg or "Re-download" not in msg or exc.path != str(path):
                wrong[label] = msg
        else:
            wrong[label] = "passed validation"
    assert not wrong, json.dumps(wrong, indent=1)


def test_messages_point_at_the_key(bad):
    import gguf

    path, _ = bad["context-0"]
    offset = gguf.GGUFReader(path).fields["llama.context_length"].offset
    with pytest.raises(InvalidModelError, match=rf"\(byte offset {offset}\)"):
        validate_gguf(path)


def test_real_and_tiny_models_pass(good, tiny_gguf, tiny_gguf_q8, smollm2_gguf):
    from localllm.starter import starter_gguf

    for path in (*good.values(), tiny_gguf, tiny_gguf_q8, smollm2_gguf, starter_gguf()):
        validate_gguf(path)
    assert validate_gguf(good["alignment-64"]).alignment == 64
    info = validate_gguf(smollm2_gguf)
    assert info.metadata["tokenizer.ggml.model"] == "gpt2" and info.metadata["llama.block_count"] == 30


def test_shapes_of_real_architectures_pass(tmp_path):
    """Tied embeddings, F16 weights, a larger vocabulary and GQA 1:1 are all valid llama files."""
    from localllm.testing import Shape, write_llama_gguf

    for i, shape in enumerate(
        (
            Shape(tied_embeddings=True),
            Shape(n_head=4, n_head_kv=4),
            Shape(n_layer=3, n_vocab=3000),
            Shape(n_head=2, n_head_kv=1, head_dim=48),
        )
    ):
        validate_gguf(write_llama_gguf(tmp_path / f"s{i}.gguf", shape, f16=i % 2 == 1))


def test_native_loader_accepts_the_good_edits(good):
    """The accepted edits really load and generate in llama.cpp (so the rules are not too strict)."""
    results = _run(_LOAD, list(good.values()))
    assert all(r["result"] == "loaded" for r in results.values()), results


def _write_arch(
    path: Path,
    arch: str,
    *,
    n_embd: int = 64,
    n_head: int = 4,
    n_kv: int = 2,
    head: int | None = None,
    n_ff: int = 96,
    n_layer: int = 2,
    name: str | None = None,
    drop: tuple = (),
) -> Path:
    """A random-weight file of a llama-family architecture, with the tensors its llama.cpp loader
    creates (models/<arch>.cpp load_arch_tensors) and the tiny SentencePiece vocabulary."""
    import gguf
    import numpy as np

    from localllm.testing import tiny_vocab

    rng = np.random.default_rng(0)

    def w(*dims):  # ggml order (ne0 first); numpy's is reversed
        return (rng.standard_normal(dims[::-1]) * 0.02).astype(np.float32)

    def norm(n):
        return np.ones(n, dtype=np.float32)

    tokens, scores, types = tiny_vocab()
    hd = head or n_embd // n_head
    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_name(name or f"tiny-{arch}")
    wr.add_context_length(1024)
    wr.add_embedding_length(n_embd)
    wr.add_block_count(n_layer)
    wr.add_feed_forward_length(n_ff)
    wr.add_head_count(n_head)
    wr.add_head_count_kv(n_kv)
    if head:
        wr.add_key_length(hd)
        wr.add_value_length(hd)
    wr.add_layer_norm_rms_eps(1e-6)
    wr.add_rope_freq_base(10000.0)
    if arch.startswith("gemma"):
        wr.add_sliding_window(512)
    wr.add_tokenizer_model("llama")
    wr.add_token_list(tokens)
    wr.add_token_scores(scores)
    wr.add_token_types(types)
    wr.add_bos_token_id(1)
    wr.add_eos_token_id(2)
    t = {"token_embd.weight": w(n_embd, len(tokens)), "output_norm.weight": norm(n_embd)}
    q = n_embd if arch in ("qwen2", "phi3") else hd * n_head
    kv = hd * n_kv
    for i in range(n_layer):
        b = f"blk.{i}."
        t[b + "attn_norm.weight"] = norm(n_embd)
        if arch == "phi3":  # fused QKV, gate and up in one tensor
            t[b + "attn_qkv.weight"] = w(n_embd, q + 2 * kv)
            t[b + "ffn_up.weight"] = w(n_embd, 2 * n_ff)
        else:
            t[b + "attn_q.weight"], t[b + "attn_k.weight"], t[b + "attn_v.weight"] = (
                w(n_embd, q),
                w(n_embd, kv),
                w(n_embd, kv),
            )
            t[b + "ffn_up.weight"], t[b + "ffn_gate.weight"] = w(n_embd, n_ff), w(n_embd, n_ff)
        if arch == "qwen2":
            t[b + "attn_q.bias"], t[b + "attn_k.bias"], t[b + "attn_v.bias"] = norm(q), norm(kv), norm(kv)
        t[b + "attn_output.weight"] = w(q, n_embd)
        t[b + "ffn_norm.weight"] = norm(n_embd)
        t[b + "ffn_down.weight"] = w(n_ff, n_embd)
        if arch in ("gemma2", "gemma3"):
            t[b + "post_attention_norm.weight"], t[b + "post_ffw_norm.weight"] = norm(n_embd), norm(n_embd)
        if arch in ("gemma3", "qwen3"):
            t[b + "attn_q_norm.weight"], t[b + "attn_k_norm.weight"] = norm(hd), norm(hd)
    for k, v in t.items():
        if k not in drop:
            wr.add_tensor(k, v)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()
    return path


_ARCHS = {
    "llama": dict(head=32),
    "qwen2": {},
    "qwen3": dict(head=32),
    "gemma": dict(head=32),
    "gemma2": dict(head=32),
    "gemma3": dict(head=32, n_kv=1),
    "phi3": dict(n_kv=4, name="tiny-p-three"),
}


def test_every_llama_family_architecture_is_accepted_and_runs(tmp_path):
    """The tensor rules name what each loader creates: files shaped so pass, and llama.cpp runs them."""
    paths = [_write_arch(tmp_path / f"{arch}.gguf", arch, **kw) for arch, kw in _ARCHS.items()]
    for path in paths:
        validate_gguf(path)
    results = _run(_LOAD, paths)
    assert all(r["result"] == "loaded" for r in results.values()), results


@pytest.mark.parametrize(
    "arch, edit, expected",
    [
        ("gemma2", dict(drop=("blk.1.post_ffw_norm.weight",)), "'blk.1.post_ffw_norm.weight' is missing"),
        ("gemma3", dict(drop=("blk.0.attn_k_norm.weight",)), "'blk.0.attn_k_norm.weight' is missing"),
        ("qwen3", dict(head=16), "tensor 'blk.0.attn_q.weight' has shape [64, 64]"),  # built with 16, declared 32
        ("phi3", dict(drop=("blk.0.ffn_up.weight",)), "'blk.0.ffn_up.weight' is missing"),
        ("phi3", dict(name="Phi-3 mini"), "lacks <|endoftext|>"),  # llama-vocab.cpp:3125 .at() on it
    ],
)
def test_llama_family_defects_are_refused(tmp_path, arch, edit, expected):
    kw = {**_ARCHS[arch], **edit}
    path = _write_arch(tmp_path / f"{arch}.gguf", arch, **kw)
    if arch == "qwen3" and "head" in edit:  # declare a head size the tensors do not have
        import gguf

        path = _build(
            path,
            tmp_path / "declared.gguf",
            kv={
                "qwen3.attention.key_length": (32, gguf.GGUFValueType.UINT32),
                "qwen3.attention.value_length": (32, gguf.GGUFValueType.UINT32),
            },
        )
    with pytest.raises(InvalidModelError, match=re.escape(expected)):
        validate_gguf(path)


# -- the native side: load() in a fresh process ------------------------------------------------

_LOAD = r"""
import json, sys
import localllm
from localllm.errors import LocalLLMError
for path in sys.argv[1:]:
    print(json.dumps({"start": path}), flush=True)
    try:
        m = localllm.load(path, threads=1, context=256)
        try:
            m.generate("hi\nthere", max_tokens=2)
        finally:
            m.close()
        out = {"path": path, "result": "loaded"}
    except LocalLLMError as exc:
        out = {"path": path, "result": type(exc).__name__, "message": str(exc)}
    except Exception as exc:
        out = {"path": path, "result": "bare " + type(exc).__name__, "message": str(exc)}
    print(json.dumps(out), flush=True)
"""


def _run(code: str, paths: list[Path], timeout: float = 300) -> dict[str, dict]:
    started = None
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code, *map(str, paths)], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        lines = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        last = [json.loads(line) for line in lines.splitlines() if line.startswith("{")]
        pytest.fail(f"hung (over {timeout} s) on {last[-1] if last else 'the first file'}")
    results = {}
    for line in proc.stdout.splitlines():
        record = json.loads(line)
        if "start" in record:
            started = record["start"]
        else:
            results[Path(record["path"]).stem] = record
    assert proc.returncode == 0, f"died (rc {proc.returncode}) on {started}:\n{proc.stderr[-3000:]}"
    return results


def test_load_refuses_every_case_cleanly_before_llama_cpp(bad):
    """On the code before these rules, this process aborted (SIGABRT inside llama.cpp) or hung."""
    t0 = time.monotonic()
    results = _run(_LOAD, [path for path, _ in bad.values()], timeout=240)
    assert set(results) == set(bad)
    wrong = {k: r for k, r in results.items() if r["result"] != "InvalidModelError"}
    assert not wrong, json.dumps(wrong, indent=1)
    assert time.monotonic() - t0 < 240


def test_validation_never_imports_llama_cpp_for_a_refused_file(bad):
    code = (
        "import sys, json; from localllm.validate import validate_model_path\n"
        "from localllm.errors import InvalidModelError\n"
        "for p in sys.argv[1:]:\n"
        "    try: validate_model_path(p)\n"
        "    except InvalidModelError: pass\n"
        "    else: print('passed', p)\n"
        "print(json.dumps(sorted({'llama_cpp', 'numpy', 'gguf'} & set(sys.modules))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, *(str(p) for p, _ in bad.values())], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# -- big vocabularies: uniqueness over every token, fast --------------------------------------


@pytest.fixture(scope="module")
def big_vocab(tmp_path_factory) -> Path:
    from localllm.testing import Shape, write_llama_gguf

    return write_llama_gguf(tmp_path_factory.mktemp("vocab") / "v152k.gguf", Shape(n_vocab=151_936))


def test_a_late_duplicate_in_a_152k_vocabulary_is_found(big_vocab, tmp_path):
    import gguf

    reader = gguf.GGUFReader(big_vocab)
    tokens = list(reader.fields["tokenizer.ggml.tokens"].contents())
    tokens[151_935] = tokens[3]  # "<|im_start|>" again, as the last token
    path = _build(
        big_vocab,
        tmp_path / "dup.gguf",
        kv={"tokenizer.ggml.tokens": (tokens, gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING)},
    )
    with pytest.raises(InvalidModelError, match=r"tokens 3 and 151935 have the same text '<\|im_start\|>'"):
        validate_gguf(path)


def test_empty_tokens_are_renamed_as_llama_cpp_does(big_vocab, tmp_path):
    """llama.cpp renames an empty token i "[EMPTY_i]": two empties are fine, an empty and a
    literal "[EMPTY_i]" collide."""
    import gguf

    vt = gguf.GGUFValueType
    tokens = list(gguf.GGUFReader(big_vocab).fields["tokenizer.ggml.tokens"].contents())
    two = tokens.copy()
    two[400], two[401] = "", ""
    validate_gguf(
        _build(big_vocab, tmp_path / "two-empty.gguf", kv={"tokenizer.ggml.tokens": (two, vt.ARRAY, vt.STRING)})
    )
    clash = two.copy()
    clash[402] = "[EMPTY_400]"
    with pytest.raises(InvalidModelError, match="tokens 400 and 402 have the same text"):
        validate_gguf(
            _build(big_vocab, tmp_path / "clash.gguf", kv={"tokenizer.ggml.tokens": (clash, vt.ARRAY, vt.STRING)})
        )


def test_a_nul_byte_ends_a_token_as_it_does_in_llama_cpp(big_vocab, tmp_path):
    """llama.cpp reads token texts as C strings: "hello\\0x" is "hello", a repeat of "hello"."""
    import gguf

    vt = gguf.GGUFValueType
    tokens = list(gguf.GGUFReader(big_vocab).fields["tokenizer.ggml.tokens"].contents())
    i = tokens.index("hello")
    nul = tokens.copy()
    nul[2000] = "hello\0x"
    with pytest.raises(
        InvalidModelError,
        match=rf"tokens {i} and 2000 have the same text 'hello' \(llama.cpp reads "
        r"a token only up to its first NUL byte\)",
    ):
        validate_gguf(
            _build(big_vocab, tmp_path / "nul.gguf", kv={"tokenizer.ggml.tokens": (nul, vt.ARRAY, vt.STRING)})
        )
    fine = tokens.copy()
    fine[2000] = "unique\0tail"
    validate_gguf(
        _build(big_vocab, tmp_path / "nul-ok.gguf", kv={"tokenizer.ggml.tokens": (fine, vt.ARRAY, vt.STRING)})
    )


def test_long_tokens_take_the_general_walk_and_are_still_checked(big_vocab, tmp_path):
    """A token of 256 bytes or more leaves the fast path; repeats are still found."""
    import gguf

    vt = gguf.GGUFValueType
    tokens = list(gguf.GGUFReader(big_vocab).fields["tokenizer.ggml.tokens"].contents())
    long = tokens.copy()
    long[1000] = "x" * 300
    validate_gguf(_build(big_vocab, tmp_path / "long.gguf", kv={"tokenizer.ggml.tokens": (long, vt.ARRAY, vt.STRING)}))
    long[150_000] = "x" * 300
    with pytest.raises(InvalidModelError, match="tokens 1000 and 150000 have the same text 'xxx"):
        validate_gguf(
            _build(big_vocab, tmp_path / "long-dup.gguf", kv={"tokenizer.ggml.tokens": (long, vt.ARRAY, vt.STRING)})
        )


def test_a_152k_vocabulary_validates_quickly(big_vocab):
    validate_gguf(big_vocab)
    best = min(_timed(lambda: validate_gguf(big_vocab)) for _ in range(5))
    assert best < 0.5, f"{best * 1000:.0f} ms"  # ~40 ms on a loaded 2-core CI machine


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# -- localllm's own arithmetic on hostile numbers ----------------------------------------------


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("llama.block_count", 0, "block_count is 0, outside 1..512"),
        ("llama.block_count", 2**31 - 1, "outside 1..512"),
        ("llama.attention.head_count", 0, "head_count is 0"),
        ("llama.attention.head_count_kv", 0, "head_count_kv is 0"),
        ("llama.attention.head_count_kv", 3, "not a multiple of head_count_kv 3"),
        ("llama.context_length", 0, "context_length is 0"),
        ("llama.context_length", 2**40, "context_length is 1099511627776, outside"),
        ("llama.embedding_length", 2, "smaller than head_count 4"),
        ("llama.block_count", "12", "not a whole number"),
        ("llama.block_count", float("nan"), "not a whole number"),
        ("llama.block_count", True, "not a whole number"),
        ("llama.attention.head_count_kv", [2, -1], "head_count_kv"),
    ],
)
def test_family_from_gguf_metadata_refuses_out_of_range_counts(key, value, expected):
    meta = {
        "general.architecture": "llama",
        "llama.block_count": 2,
        "llama.embedding_length": 64,
        "llama.attention.head_count": 4,
        "llama.attention.head_count_kv": 2,
        "llama.context_length": 2048,
        "tokenizer.ggml.tokens": ["a"] * 10,
    }
    family_from_gguf_metadata(meta, name="ok")
    with pytest.raises(CatalogError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        family_from_gguf_metadata({**meta, key: value}, name="bad")
