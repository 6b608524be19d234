"""Random-weight models for tests and benchmarks, written with the `gguf` package.

No weights can be downloaded in CI, so tests build their own: a Llama-architecture
GGUF with a SentencePiece-style vocabulary (byte tokens `<0xNN>`, printable
characters, a few words) and a chat template in its metadata. The same writer makes
realistic shapes (SmolLM2-135M, Llama-3.2-1B...) for the benchmarks and for
`localllm bench --synthetic`.

- `Shape`, `SHAPES`: the dimensions of a model, shared with the ONNX builder
  (localllm.testing.onnx); `WORDS`, the word list both vocabularies are made from.
- `spm_vocab`, `tiny_vocab`: SentencePiece vocabularies.
- `write_llama_gguf` (random weights), `write_llama_weights` (given tensors),
  `quantize_gguf` (llama.cpp's quantizer), `synthetic_gguf` (cached, for bench).

Tests import these from `localllm.testing`. Imports numpy, gguf and llama_cpp only
when called.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import EllipsisType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "SHAPES",
    "WORDS",
    "Shape",
    "quantize_gguf",
    "spm_vocab",
    "synthetic_gguf",
    "tiny_vocab",
    "write_llama_gguf",
    "write_llama_weights",
]

# The words both test vocabularies know (the GGUF's SentencePiece pieces, the ONNX BPE's corpus).
WORDS = [
    "hello",
    "world",
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "of",
    "and",
    "to",
    "in",
    "on",
    "for",
    "with",
    "you",
    "I",
    "it",
    "this",
    "that",
    "what",
    "how",
    "yes",
    "no",
    "ok",
    "stop",
    "end",
    "model",
    "local",
    "chat",
    "reply",
    "token",
    "text",
    "fast",
    "slow",
    "cat",
    "dog",
    "sun",
    "moon",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "plus",
    "minus",
    "equals",
    "answer",
    "question",
]


@dataclass(frozen=True)
class Shape:
    """The dimensions of a Llama/Qwen2-style decoder, for both builders.

    `qkv_bias`, `rope_theta`, `rms_eps` and `model_type` are read by the ONNX builder only:
    the GGUF writer takes `rms_eps` and `rope_freq_base` as arguments and writes no biases.
    `tied_embeddings` is read by the GGUF builder only (the ONNX graph always has its own head).
    """

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    n_ctx_train: int = 2048
    n_vocab: int | None = None  # None: exactly the built-in vocabulary; larger pads with filler tokens
    tied_embeddings: bool = False
    head_dim: int | None = None  # None: n_embd // n_head
    qkv_bias: bool = True  # Qwen2 has q/k/v biases; Llama has none
    rope_theta: float = 10000.0
    rms_eps: float = 1e-6
    model_type: str = "qwen2"  # config.json's model_type

    @property
    def dim_head(self) -> int:
        return self.head_dim or self.n_embd // self.n_head


# Llama-family facts for the ONNX builder (the defaults are Qwen2's)
_llama = partial(Shape, qkv_bias=False, rms_eps=1e-5, model_type="llama")

# Shapes of real models (their public config.json), for benchmarks and estimator checks.
SHAPES: dict[str, Shape] = {
    "tiny": Shape(),
    "smollm2-135m": _llama(30, 576, 9, 3, 1536, 8192, 49152, tied_embeddings=True, rope_theta=100000.0),
    "qwen2.5-0.5b": Shape(24, 896, 14, 2, 4864, 32768, 151936, tied_embeddings=True, rope_theta=1000000.0),
    "llama-3.2-1b": _llama(16, 2048, 32, 8, 8192, 131072, 128256, tied_embeddings=True, rope_theta=500000.0),
}


# token types, as llama.cpp defines them (llama_token_type)
TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_BYTE = 1, 2, 3, 4, 6
# ids of the special tokens every vocabulary here starts with
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>")
BYTE_TOKEN_OFFSET = len(SPECIAL_TOKENS)  # <0x00> is token 5, <0xFF> token 260

Vocab = tuple[list[str], list[float], list[int]]  # (tokens, scores, types)


def spm_vocab(pieces: Iterable[str]) -> Vocab:
    """(tokens, scores, types) of a SentencePiece vocabulary: the special tokens, 256 byte
    tokens `<0xNN>` (so any text tokenizes), then `pieces` in order (duplicates dropped).

    Longer pieces score higher, so llama.cpp's SPM merger prefers them; with only
    single-character pieces no merge applies and tokenization is one token per character.
    """
    tokens = list(SPECIAL_TOKENS)
    types = [TOKEN_UNKNOWN] + [TOKEN_CONTROL] * (len(SPECIAL_TOKENS) - 1)
    scores = [0.0] * len(tokens)
    for b in range(256):
        tokens.append(f"<0x{b:02X}>")
        types.append(TOKEN_BYTE)
        scores.append(0.0)
    seen = set(tokens)
    for i, piece in enumerate(pieces):
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        types.append(TOKEN_NORMAL)
        scores.append(-1000.0 + len(piece) * 10.0 - i * 1e-3)
    return tokens, scores, types


def tiny_vocab() -> Vocab:
    """(tokens, scores, types) of a small SentencePiece vocabulary that covers any text."""
    pieces = ["\u2581"] + [chr(c) for c in range(33, 127)]
    pieces += ["\u2581" + chr(c) for c in range(33, 127)]
    pieces += ["\u2581" + w for w in WORDS] + list(dict.fromkeys(WORDS))
    return spm_vocab(pieces)


def write_llama_gguf(
    path: str | Path,
    shape: Shape | str = "tiny",
    *,
    seed: int = 0,
    chat_template: str | None | EllipsisType = ...,
    name: str = "tiny-llama",
    f16: bool = False,
    scale: float = 0.5,
    rename_tokens: Mapping[str, str] | None = None,
    extra_control_tokens: Sequence[str] = (),
) -> Path:
    """Write a random-weight Llama GGUF file; returns its path.

    `chat_template` is written to the metadata: by default (`...`) ChatML
    (localllm.chat_template.CHATML_FALLBACK), None for no template. `scale` sets the
    weight spread: larger values make greedy output depend more on the prompt. F32
    weights by default (exact), F16 with `f16=True` (half the size, the usual input to
    quantization). `rename_tokens` renames special tokens, keeping their ids ({"<s>":
    "<bos>", "<|im_start|>": "<start_of_turn>"...}: another family's vocabulary);
    `extra_control_tokens` are appended as control tokens.
    """
    import numpy as np

    if chat_template is ...:
        # imported here, not at the top: `localllm --help` imports this module for SHAPES
        # and would load chat_template and generation with it
        from localllm.chat_template import CHATML_FALLBACK

        chat_template = CHATML_FALLBACK
    if isinstance(shape, str):
        shape = SHAPES[shape]
    path = Path(path)
    rng = np.random.default_rng(seed)
    tokens, scores, types = tiny_vocab()
    unknown = set(rename_tokens or {}) - set(SPECIAL_TOKENS)
    if unknown:
        raise ValueError(f"rename_tokens names {sorted(unknown)}, which are not special tokens {SPECIAL_TOKENS}")
    tokens = [(rename_tokens or {}).get(t, t) if i < BYTE_TOKEN_OFFSET else t for i, t in enumerate(tokens)]
    for t in extra_control_tokens:
        tokens.append(t)
        scores.append(0.0)
        types.append(TOKEN_CONTROL)
    n_vocab = shape.n_vocab or len(tokens)
    if n_vocab < len(tokens):
        raise ValueError(f"n_vocab {n_vocab} is smaller than the base vocabulary ({len(tokens)})")
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[filler{i}]")
        scores.append(-1e6)
        types.append(TOKEN_USER_DEFINED)  # never produced by tokenizing ordinary text
    head_dim = shape.dim_head
    dtype = np.float16 if f16 else np.float32

    def weight(*dims: int, std: float | None = None) -> np.ndarray:
        std = std if std is not None else scale / np.sqrt(dims[-1])
        return (rng.standard_normal(dims, dtype=np.float32) * std).astype(dtype)

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)  # norms stay f32, as llama.cpp's converter keeps them

    tensors = {"token_embd.weight": weight(n_vocab, shape.n_embd, std=scale)}
    q_dim, kv_dim = shape.n_head * head_dim, shape.n_head_kv * head_dim
    for i in range(shape.n_layer):
        tensors[f"blk.{i}.attn_norm.weight"] = norm(shape.n_embd)
        tensors[f"blk.{i}.attn_q.weight"] = weight(q_dim, shape.n_embd)
        tensors[f"blk.{i}.attn_k.weight"] = weight(kv_dim, shape.n_embd)
        tensors[f"blk.{i}.attn_v.weight"] = weight(kv_dim, shape.n_embd)
        tensors[f"blk.{i}.attn_output.weight"] = weight(shape.n_embd, q_dim)
        tensors[f"blk.{i}.ffn_norm.weight"] = norm(shape.n_embd)
        tensors[f"blk.{i}.ffn_gate.weight"] = weight(shape.n_ff, shape.n_embd)
        tensors[f"blk.{i}.ffn_up.weight"] = weight(shape.n_ff, shape.n_embd)
        tensors[f"blk.{i}.ffn_down.weight"] = weight(shape.n_embd, shape.n_ff)
    tensors["output_norm.weight"] = norm(shape.n_embd)
    if not shape.tied_embeddings:
        tensors["output.weight"] = weight(n_vocab, shape.n_embd)
    return write_llama_weights(
        path,
        shape,
        tensors,
        vocab=(tokens, scores, types),
        chat_template=chat_template,
        name=name,
        file_type=1 if f16 else 0,
    )


def write_llama_weights(
    path: str | Path,
    shape: Shape,
    tensors: Mapping[str, np.ndarray],
    *,
    vocab: Vocab,
    chat_template: str | None,
    name: str,
    file_type: int = 0,
    rms_eps: float = 1e-5,
    rope_freq_base: float = 10000.0,
    add_bos: bool = True,
    add_space_prefix: bool | None = None,
    extra_kv: dict[str, str] | None = None,
) -> Path:
    """Write a Llama GGUF from given tensors (llama.cpp names and layout, numpy arrays); returns its path.

    `tensors` maps GGUF tensor names (token_embd.weight, blk.N.attn_q.weight, ...) to arrays
    shaped (out_features, in_features); attn_q/attn_k rows must already be in llama.cpp's
    rope order (permuted as HF's convert script does). `vocab` is (tokens, scores, types).
    `add_space_prefix=None` leaves llama.cpp's default (a space before the first word).
    """
    import gguf

    path = Path(path)
    tokens, scores, types = vocab
    n_vocab = len(tokens)
    head_dim = shape.dim_head
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    for key, value in (extra_kv or {}).items():
        w.add_string(key, value)
    w.add_context_length(shape.n_ctx_train)
    w.add_embedding_length(shape.n_embd)
    w.add_block_count(shape.n_layer)
    w.add_feed_forward_length(shape.n_ff)
    w.add_head_count(shape.n_head)
    w.add_head_count_kv(shape.n_head_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_layer_norm_rms_eps(rms_eps)
    w.add_rope_freq_base(rope_freq_base)
    w.add_vocab_size(n_vocab)
    w.add_file_type(file_type)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(4 if chat_template else 2)  # <|im_end|> ends a chat turn
    w.add_unk_token_id(0)
    w.add_add_bos_token(add_bos)
    w.add_add_eos_token(False)
    if add_space_prefix is not None:
        w.add_add_space_prefix(add_space_prefix)
    if chat_template:
        w.add_chat_template(chat_template)
    for tensor_name, array in tensors.items():
        w.add_tensor(tensor_name, array)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# llama.cpp's LLAMA_FTYPE_MOSTLY_* values
_FTYPES = {"Q4_0": 2, "Q8_0": 7, "Q2_K": 10, "Q3_K_M": 12, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18}


def quantize_gguf(src: str | Path, dst: str | Path, quant: str = "Q4_K_M", *, threads: int = 0) -> Path:
    """Quantize a GGUF file with llama.cpp's own quantizer; returns the output path."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _FTYPES[quant.upper()]
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} -> {quant}) returned {rc}")
    return Path(dst)


def synthetic_gguf(
    folder: str | Path,
    shape: str,
    quant: str = "Q4_K_M",
    *,
    keep_f16: bool = False,
    say: Callable[[str], None] | None = None,
) -> Path:
    """A cached random-weight model of a real shape: F16 written with `gguf`, then quantized
    by llama.cpp. Each file is written under a temporary name and renamed, so an interrupted
    build is never reused. `say` receives progress lines (the library itself never prints)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    quant = quant.upper()
    f16 = folder / f"{shape}-random-f16.gguf"
    dst = f16 if quant == "F16" else folder / f"{shape}-random-{quant.lower()}.gguf"
    if dst.is_file():
        return dst
    say = say or (lambda line: None)
    if not f16.is_file():
        say(f"writing a random-weight {shape} model (F16) to {f16} ...")
        _write_atomically(f16, lambda tmp: write_llama_gguf(tmp, shape, f16=True, name=f"{shape}-random"))
    if quant == "F16":
        return f16
    say(f"quantizing it to {quant} ...")
    _write_atomically(dst, lambda tmp: quantize_gguf(f16, tmp, quant))
    if not keep_f16:
        f16.unlink()
    return dst


def _write_atomically(dst: Path, write: Callable[[Path], object]) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
