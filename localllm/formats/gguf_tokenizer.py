"""What llama.cpp's tokenizer needs of a GGUF vocabulary, checked before it loads one.

    Vocab                                  what the parser read of tokenizer.ggml.tokens
    check_tokenizer(arch, metadata, vocab) llama-vocab.cpp: a tokenizer llama.cpp knows, that
                                           suits the model and can spell every byte

Raises RuleError(message, key) like the other rules (localllm.formats.gguf_rules). Pure
Python, no imports beyond the standard library.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from localllm.formats.gguf_rules import NO_TEXT_ARCHITECTURES, RuleError

__all__ = ["Vocab", "check_tokenizer"]

# WordPiece ("bert") vocabularies belong to encoder models; llama.cpp runs them as embedders.
_WPM_ARCHITECTURES = frozenset(
    ["bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2", "jina-bert-v3", "eurobert"]
)


@dataclass(frozen=True)
class Vocab:
    """What the validator read of tokenizer.ggml.tokens: the count, every token's bytes
    (texts were checked unique, so the set holds n_tokens entries), and how many tokens are
    typed LLAMA_TOKEN_TYPE_BYTE."""

    n_tokens: int
    texts: Collection[bytes]
    n_byte_tokens: int


# llama-vocab.cpp:1950-2151: the tokenizer models llama.cpp knows ("unknown tokenizer" otherwise)
_KNOWN_TOKENIZERS = frozenset(
    {"llama", "bert", "gpt2", "hybriddna", "whitespace", "t5", "rwkv", "test", "plamo2", "gemma4", "none", "no_vocab"}
)
_BPE_NEEDING_MERGES = frozenset({"gpt2", "hybriddna", "whitespace", "gemma4"})  # llama-vocab.cpp:2001, 2116
_GPT2_SPACE = "\u0120".encode()  # "Ġ": GPT-2's byte-level BPE spells a leading space so


def check_tokenizer(arch: str, metadata: Mapping[str, Any], vocab: Vocab | None) -> None:
    """tokenizer.ggml.model is one llama.cpp knows, suits a text model, and fits the vocabulary."""
    key = "tokenizer.ggml.model"
    model = metadata.get(key)
    redo = "convert the model again with llama.cpp's convert_hf_to_gguf.py"
    if model is None:  # llama-vocab.cpp:1945 get_key (required)
        raise RuleError(f"the key {key} is missing: the file has no tokenizer, and llama.cpp needs one to load it", key)
    if model not in _KNOWN_TOKENIZERS:
        raise RuleError(
            f"{key} is {model[:40]!r}, a tokenizer llama.cpp does not know "
            f"(it knows {', '.join(sorted(_KNOWN_TOKENIZERS))})",
            key,
        )
    if model in ("none", "no_vocab", "test"):
        if arch in NO_TEXT_ARCHITECTURES:
            return
        # llama-vocab.cpp:3158-3192: every tokenizer entry point asserts the type is not NONE
        raise RuleError(
            f"{key} is {model!r}: the file has no text tokenizer, so it cannot tokenize a prompt "
            f"(llama.cpp aborts on the first one); a {arch!r} model needs its real vocabulary",
            key,
        )
    if vocab is None:  # llama-vocab.cpp:2463
        raise RuleError(f"{key} is {model!r} but tokenizer.ggml.tokens is missing", key)
    if model == "bert":
        if arch not in _WPM_ARCHITECTURES:
            raise RuleError(
                f"{key} is 'bert' (WordPiece, for BERT encoders) on a {arch!r} model, which needs its "
                f"own tokenizer; {redo}",
                key,
            )
        if vocab.n_byte_tokens:  # llama-vocab.cpp:3206: token_to_byte aborts for WordPiece
            raise RuleError(
                f"{key} is 'bert' (WordPiece) but {vocab.n_byte_tokens} tokens are typed as byte tokens; "
                "llama.cpp aborts building its piece cache on them",
                "tokenizer.ggml.token_type",
            )
    # llama.cpp loads a kimi-k2 vocabulary without merges
    kimi_k2 = model == "gpt2" and metadata.get("tokenizer.ggml.pre") == "kimi-k2"
    if model in _BPE_NEEDING_MERGES and "tokenizer.ggml.merges" not in metadata and not kimi_k2:
        raise RuleError(
            f"{key} is {model!r} (byte-pair encoding) but tokenizer.ggml.merges is missing; "
            "llama.cpp cannot tokenize without the merges",
            key,
        )
    name = str(metadata.get("general.name") or "").lower()
    if "phi-3" in name or "phi3" in name:  # llama-vocab.cpp:3118-3127 looks these up with .at()
        missing = [t for t in ("</s>", "<unk>", "<s>", "<|endoftext|>") if t.encode() not in vocab.texts]
        if missing:
            raise RuleError(
                f"general.name says Phi-3, for which llama.cpp looks up the tokens </s>, <unk>, <s> and "
                f"<|endoftext|>, but the vocabulary lacks {', '.join(missing)}",
                "tokenizer.ggml.tokens",
            )
    if model == "llama":
        _check_spm_bytes(vocab, metadata, key)
    if model == "rwkv":
        _check_rwkv(vocab, key)


def _check_spm_bytes(vocab: Vocab, metadata: Mapping[str, Any], key: str) -> None:
    """llama-vocab.cpp:4003-4014: SentencePiece falls back to the token <0xHH> (or the bare
    byte) for text it has no piece for, and throws std::out_of_range (an abort through the
    C API) when neither exists; so every one of the 256 bytes needs one."""
    texts = vocab.texts
    missing = [b for b in range(256) if b"<0x%02X>" % b not in texts and bytes((b,)) not in texts]
    if not missing:
        return
    looks_bpe = "tokenizer.ggml.merges" in metadata or any(t.startswith(_GPT2_SPACE) for t in texts)
    if looks_bpe:
        raise RuleError(
            f"{key} is 'llama' (SentencePiece) but the vocabulary is GPT-2-style byte-pair encoding "
            "(it has merges or tokens spelled with 'Ġ' and no <0xHH> byte tokens); llama.cpp would "
            "abort on the first character it has no piece for. The tokenizer model should be 'gpt2'",
            key,
        )
    shown = ", ".join(f"<0x{b:02X}>" for b in missing[:4]) + (" ..." if len(missing) > 4 else "")
    raise RuleError(
        f"{key} is 'llama' (SentencePiece) but the vocabulary has no byte token for {len(missing)} of "
        f"the 256 bytes ({shown}, in the exact form <0xHH> with uppercase hex); llama.cpp would abort on "
        "the first character it has no piece for",
        "tokenizer.ggml.tokens",
    )


def _unescape_rwkv(text: bytes) -> bytes:
    """llama-vocab.cpp:1258 llama_unescape_rwkv_token, byte for byte."""
    if b"\\" not in text:
        return text
    out = bytearray()
    escaping, hex_left, acc = False, 0, 0
    for c in text:
        if hex_left:
            acc = ((acc << 4) + ((c - 97 + 10) if c >= 97 else (c - 48))) & 0xFF
            hex_left -= 1
            if not hex_left:
                out.append(acc)
                acc = 0
        elif escaping:
            out += {116: b"\t", 110: b"\n", 114: b"\r"}.get(c, b"" if c == 120 else bytes((c,)))
            hex_left = 2 if c == 120 else 0
            escaping = False
        elif c == 92:
            escaping = True
        else:
            out.append(c)
    return bytes(out)


def _check_rwkv(vocab: Vocab, key: str) -> None:
    """llama-vocab.cpp:1331-1358: the RWKV tokenizer walks a trie of the tokens and, when a
    prefix matches no whole token, restarts from position 0: it loops forever. That cannot
    happen when every byte that starts a token is a token itself."""
    texts = [_unescape_rwkv(t) for t in vocab.texts]
    singles = {t for t in texts if len(t) == 1}
    firsts = {t[:1] for t in texts if t}
    orphan = sorted(firsts - singles)
    if orphan:
        many = (
            f"{len(orphan)} bytes start a token without being a token themselves"
            if len(orphan) > 1
            else "a byte starts a token without being a token itself"
        )
        raise RuleError(
            f"{key} is 'rwkv' but {many} "
            f"(first: {orphan[0]!r}); llama.cpp's RWKV tokenizer loops forever on such text (an RWKV "
            "vocabulary has every single byte as a token)",
            key,
        )
