"""The small contract every runtime adapter meets.

An engine owns one loaded model and its KV cache for a single sequence. The shared
token loop in `localllm.generation.run` drives it:

    tokens = engine.tokenize(prompt)          # once per request
    engine.rewind(n_common)                   # keep the cached prefix the prompt shares
    logits = engine.eval(tokens[n_common:])   # fill the cache, logits of the last token
    loop: sample(logits) -> token; engine.token_bytes(token); logits = engine.eval([token])
    speculative (localllm.speculative): rows = engine.eval_all([token, *draft]); sample each row
        while the sample equals the draft; engine.rewind(to the tokens the samples confirmed)

Everything above the engine (sampling, stop strings, UTF-8 safety, timings, chat
templates, threading) is shared, so llama.cpp and ONNX Runtime behave the same. An
engine is not thread-safe: `localllm.model.Model` serialises access with a lock.

Rules an adapter must keep:
- `cached_tokens` is exactly the tokens whose keys/values are in the cache, in order;
  `eval` appends to it and `rewind` truncates it (`n_past == len(cached_tokens)`).
- `eval` returns the logits of the last token it was given, as float32 of shape
  [n_vocab]. The array may be a view of the backend's buffer that is valid only until
  the next `eval`/`rewind`/`close`; callers copy it if they keep it. `eval` splits long
  inputs into batches itself and raises `GenerationError` when the backend fails, and
  `ContextOverflowError` when the cache would exceed `n_ctx`.
- `eval_all` is `eval` with the logits of every token it was given, float32 of shape
  [len(tokens), n_vocab], rows in token order (a view valid until the next call, or a
  copy); the tokens after a rejected draft token are then dropped with `rewind`. The
  shared loop speculates only on an engine that has it.
- `token_bytes` returns raw bytes (a byte-fallback token may be half a UTF-8
  character); control tokens return b"".
- `prompt_chunk` (optional; `PROMPT_CHUNK` when absent): how many prompt tokens the
  shared loop hands `eval` at a time, looking at the stop flag between two hands.
- Nothing is printed: backend chatter goes to `logging`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from localllm.errors import ContextOverflowError

if TYPE_CHECKING:  # numpy is not imported by `import localllm`
    import numpy as np

__all__ = ["PROMPT_CHUNK", "BatchEngine", "CachedTokens", "Engine"]

# Prompt tokens evaluated between two looks at the stop flag on the CPU (Esc, cancel(), close()
# are seen within one chunk). Measured on this project's 2-core CPU, busy (load 2.5), positions
# up to 3,000: 64-token chunks took at most 0.6 s (SmolLM2-135M Q4_1) and 0.7 s (Llama-3.2-1B
# Q4_K_M); 128 took 1.05 s and up to 3.4 s; 256, 1.9 s on SmolLM2. Prompt throughput at 64 is
# within 15% of 128-512, while below 64 the 1B's Q4_K kernels ran 4x slower (32: 35 tok/s, 64: 156).
PROMPT_CHUNK = 64


@runtime_checkable
class Engine(Protocol):
    runtime: str  # "llama.cpp" | "onnxruntime"
    n_ctx: int  # context window the engine was loaded with
    n_vocab: int  # logits length
    load_seconds: float  # wall time of the load, for Timings

    @property
    def cached_tokens(self) -> Sequence[int]:
        """Token ids currently in the KV cache, in order (read-only view)."""

    @property
    def n_past(self) -> int:
        """Number of tokens in the KV cache: len(cached_tokens)."""

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        """Token ids for text; `special` lets control tokens like <|im_end|> be recognised."""

    def token_bytes(self, token: int) -> bytes:
        """The raw bytes one token stands for (may be part of a UTF-8 character)."""

    def is_eog(self, token: int) -> bool:
        """True for end-of-generation tokens (EOS, EOT, <|im_end|>...)."""

    def vocab_bytes(self) -> list[bytes]:
        """Every token's bytes, id by id (n_vocab of them), control tokens as b"\\xff" + their text:
        the vocabulary as llguidance reads it (localllm.constraints)."""

    def has_token(self, text: str) -> bool:
        """True if `text` is a single special/control token of the vocabulary (e.g. "<|im_start|>")."""

    @property
    def bos_token(self) -> str | None:
        """Text of the beginning-of-sequence token, for chat templates."""

    @property
    def eos_token(self) -> str | None:
        """Text of the end-of-sequence token, for chat templates."""

    @property
    def chat_template(self) -> str | None:
        """The Jinja chat template shipped with the model, if any."""

    def eval(self, tokens: Sequence[int]) -> np.ndarray:
        """Append tokens to the cache; return float32 logits [n_vocab] of the last one."""

    def eval_all(self, tokens: Sequence[int]) -> np.ndarray:
        """Append tokens to the cache; return float32 logits [len(tokens), n_vocab] of every one."""

    def rewind(self, n_keep: int) -> None:
        """Drop cached tokens after the first n_keep (for prefix reuse, rejected drafts)."""

    def metadata(self) -> dict[str, object]:
        """Facts worth showing: architecture, parameters, file, quantization."""

    def close(self) -> None:
        """Free the model; idempotent."""


@runtime_checkable
class BatchEngine(Engine, Protocol):
    """An engine of several sequences (`localllm.batching.run_batch` drives it).

    Loaded with `placement.n_seq` N it holds N sequences of n_ctx tokens each; sequence 0 is the
    one `eval`/`rewind`/`cached_tokens` work on, so interactive use is unchanged. N is 1 for an
    engine loaded for interactive work: `eval_batch` on sequence 0 alone still works there.
    """

    n_seq_max: int  # N

    def seq_tokens(self, seq: int) -> Sequence[int]:
        """Tokens in sequence `seq`'s cache, in order."""

    def eval_batch(self, items: Sequence[tuple[int, Sequence[int]]]) -> list[np.ndarray]:
        """(seq, tokens) pairs of distinct sequences, each appended at its next positions, all
        evaluated together; returns, in item order, a float32 [n_vocab] copy of the logits after
        each item's last token. Raises ContextOverflowError when a sequence would pass n_ctx
        (nothing evaluated), GenerationError when the backend fails (the call's sequences are
        then as they were before it)."""

    def seq_keep(self, seq: int, n_keep: int) -> None:
        """Drop sequence `seq`'s positions >= n_keep (0 frees the sequence)."""

    def seq_copy(self, src: int, dst: int, n: int) -> None:
        """Sequence `dst` gets `src`'s first n positions without computing them (a shared prefix)."""

    def reset_batch(self) -> None:
        """Free every sequence, sequence 0 included (after a batch run)."""


class CachedTokens:
    """What every engine keeps the same way: the token ids now in its KV cache (`_tokens`)."""

    _tokens: list[int]
    n_ctx: int

    @property
    def cached_tokens(self) -> Sequence[int]:
        return tuple(self._tokens)

    @property
    def n_past(self) -> int:
        return len(self._tokens)

    def _room_for(self, tokens: Sequence[int]) -> list[int]:
        """The tokens to eval, as a list, once sure they fit after those already cached."""
        tokens = list(tokens)
        if not tokens:
            raise ValueError("eval needs at least one token")
        if self.n_past + len(tokens) > self.n_ctx:
            raise ContextOverflowError(
                f"{self.n_past} cached + {len(tokens)} new tokens exceed the context window of {self.n_ctx}",
                n_prompt=self.n_past + len(tokens),
                n_ctx=self.n_ctx,
            )
        return tokens
