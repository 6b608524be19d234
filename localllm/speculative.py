"""Prompt-lookup speculative decoding: draft tokens from n-gram matches in the context.

When a reply repeats text it has seen (editing code, rewriting a paragraph, extracting
fields), the tokens that followed the same text the previous time are a good guess at what
comes next. `PromptLookup` indexes every 3-gram of the context (prompt + reply so far) by
where its followers start; to draft, it takes the recent occurrences of the context's last
3 tokens, measures how far back each matches the context's end, and when the deepest match
is at least MIN_MATCH tokens long drafts up to K of the tokens that followed it.
`localllm.generation.run` evaluates [last sampled token, drafts] in one `eval_all` and samples
each position with the same `SequenceState.step` a plain decode uses: it keeps a draft token
while the sampled token equals it, and the first sampled token that differs is still a correct
sample (from the right logits, with the RNG drawn once per emitted token), so the output is the
plain decode's for any sampler, given the same logits.

The same logits: a backend may round a batch differently from one token at a time. llama.cpp's
CPU kernels (llama-cpp-python 0.3.36) gave bit-identical rows for SmolLM2-135M Q4_1 with flash
attention at any length with one thread or a quantized KV cache; with 2 threads and an f16 KV
cache, once the cache passes 256 cells, a one-token decode splits attention over the threads
(ggml's split-KV path) and a batch does not, so logits move by ~0.5 and a near tie can go the
other way (as moving the prompt's chunk edges already does); repacked Q4_K weights use another
matmul kernel from 4 rows up. ONNX Runtime's rows differ by ~1e-7.

From llama.cpp (common/ngram-map.cpp `ngram-simple`, common/speculative.cpp, docs/speculative.md):
look the last n tokens up in the history and draft what followed, as many tokens as exist up to
a cap, the draft length bounded by what was accepted last. Ours: an index updated per token
instead of a backward scan, the deepest of the recent matches rather than the latest, and the
MIN_MATCH gate, tuned by replaying recorded replies against measured batch costs (numbers below).

Pure Python, no numpy: `import localllm` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

from localllm.errors import InvalidOptionError, InvalidOptionTypeError

__all__ = [
    "AUTO_RUNTIMES",
    "DEFAULT_SPECULATIVE",
    "SPECULATIVE_MODES",
    "PromptLookup",
    "check_speculative",
    "drafter_for",
]

SPECULATIVE_MODES = ("auto", "prompt-lookup", "off")
DEFAULT_SPECULATIVE = "auto"
# Where "auto" drafts: the runtimes benchmarks/bench_speculative.py measured a gain on. llama.cpp
# on this project's 2-core CPU, 2 threads: replayed (--replay --threads 2, load ~1.2) 1.32x on the
# code edit, 1.06-1.33x on seven other replies, 1.00 on two that never draft, none below (mean
# 1.17); timed on the busy machine, medians of pairs 1.40-1.68x (code) and 1.00-1.07x (a story,
# whose reply repeats itself a little). With one thread a batch
# costs nearly its tokens' worth (replayed: 1.14x code, 0.84x at worst, mean 1.02). ONNX Runtime
# is not measured on a real model yet: off there. On a quiet machine (--runs 5, code): 1.44x
# with a q8_0 KV cache at 2 threads, 1.10x with f16 at 1 thread, both identical; 1.39x with f16
# at 2 threads but not identical, so "auto" stays off there (engine.batch_logits_exact).
AUTO_RUNTIMES = frozenset({"llama.cpp"})
_ALLOWED = "'auto', 'prompt-lookup', 'off' or None (off)"

# Tuned on ten SmolLM2-135M replies (code edits, a rewrite, a summary, extraction, JSON, stories,
# lists, explanations) replayed through the drafter and priced with one llama.cpp decode of b
# tokens on this project's 2-core AVX2 CPU, 2 threads: 6.0 ms (b=1), 13 (2), 19 (4), 31 (8), 50 (16).
# A batch costs about 2.7 ms a token plus 7.6, so a draft pays only when most of it is taken.
NGRAM = 3  # the index key: the context's last 3 tokens
CANDIDATES = 4  # recent occurrences of the key measured for depth
MATCH_CAP = 32  # how far back a match is measured
# no draft unless the context's end matches this many tokens: shorter matches (a common phrase,
# a repeated line start) were accepted about half the time and cost more than they saved (the
# "list" and "explain" replies fell to 0.8-0.9x at 4-8; at 12, 1.0x, with 1.5x on the code edit)
MIN_MATCH = 12
DRAFT_MIN = 2  # a 1-token draft costs a 2-token decode, twice a plain one, to save at most one
DRAFT_START = 8
# past 16 a batch's cost per token is flat and a miss throws away more; and llama.cpp's rows of
# 17 tokens were checked bit-identical to one-token decodes (1 thread), a prompt chunk of 48 not
DRAFT_MAX = 16
DRAFT_FLOOR = 4  # the smallest cap K shrinks to after a rejection


def check_speculative(value: object) -> str:
    """The speculative mode an option value names ("auto", "prompt-lookup" or "off"; None is "off").

    Raises:
        InvalidOptionTypeError: not a str or None.
        InvalidOptionError: an unknown name.
    """
    if value is None:
        return "off"
    if not isinstance(value, str):
        raise InvalidOptionTypeError(
            f"invalid sampling option: speculative must be {_ALLOWED}, got {value!r} ({type(value).__name__})",
            option="speculative",
            value=value,
            allowed=_ALLOWED,
        )
    if value not in SPECULATIVE_MODES:
        raise InvalidOptionError(
            f"invalid sampling option: speculative must be {_ALLOWED}, got {value!r}",
            option="speculative",
            value=value,
            allowed=_ALLOWED,
        )
    return value


def drafter_for(mode: str, engine: object, prompt: Sequence[int]) -> PromptLookup | None:
    """The drafter for one request, or None: speculation off ("auto" on a runtime outside
    AUTO_RUNTIMES, or on an engine whose batch logits are not bit-identical to one-token ones,
    `batch_logits_exact`), or the engine cannot evaluate a batch with every position's logits
    (`eval_all`)."""
    if mode == "auto":  # where it was measured faster and cannot change the output
        gains = getattr(engine, "runtime", None) in AUTO_RUNTIMES
        mode = "prompt-lookup" if gains and getattr(engine, "batch_logits_exact", False) else "off"
    if mode != "prompt-lookup" or not callable(getattr(engine, "eval_all", None)):
        return None
    return PromptLookup(prompt)


class PromptLookup:
    """Drafts what followed the deepest recent match of the context's end.

    `propose(generated, limit)` first takes in the tokens of `generated` it has not seen (the
    reply so far, the last sampled token included), then returns a draft of at most `limit`
    tokens, or none. `feedback(drafted, accepted)` after each verified draft adapts the cap K:
    doubled after a draft taken whole, down to what was accepted (and one more) after a rejection.
    """

    def __init__(
        self,
        context: Sequence[int],
        *,
        min_match: int = MIN_MATCH,
        draft_min: int = DRAFT_MIN,
        draft_start: int = DRAFT_START,
        draft_max: int = DRAFT_MAX,
    ) -> None:
        if min_match < NGRAM or not 1 <= draft_min <= draft_max:
            raise ValueError(f"bad drafter bounds: match {min_match} (>= {NGRAM}), drafts {draft_min}..{draft_max}")
        self.min_match, self.draft_min, self.draft_max = min_match, draft_min, draft_max
        self.k = max(draft_min, min(draft_start, draft_max))  # the next draft's length cap
        self.tokens: list[int] = []
        # 3-gram -> where the tokens after each of its occurrences start, oldest first (an n-gram
        # ending the context has no follower yet: it goes in when the next token comes)
        self._index: dict[tuple[int, ...], list[int]] = {}
        self._seen = 0  # tokens of the reply taken in
        self.extend(context)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the context."""
        ctx, index = self.tokens, self._index
        for token in tokens:
            end = len(ctx)
            if end >= NGRAM:
                index.setdefault(tuple(ctx[end - NGRAM : end]), []).append(end)
            ctx.append(token)

    def match(self) -> tuple[int, int] | None:
        """(where the followers start, match length) of the deepest recent earlier match of the
        context's end (the latest of equals), or None when its last 3 tokens never came before."""
        ctx, end = self.tokens, len(self.tokens)
        starts = self._index.get(tuple(ctx[end - NGRAM :])) if end >= NGRAM else None
        if not starts:
            return None
        best = None
        for start in reversed(starts[-CANDIDATES:]):
            depth = NGRAM
            while depth < MATCH_CAP and depth < start and ctx[start - 1 - depth] == ctx[end - 1 - depth]:
                depth += 1
            if best is None or depth > best[1]:
                best = (start, depth)
        return best

    def propose(self, generated: Sequence[int], limit: int) -> list[int]:
        """A draft of at most min(limit, K) tokens to follow `generated`, or []."""
        if self._seen < len(generated):
            self.extend(generated[self._seen :])
            self._seen = len(generated)
        n = min(limit, self.k)
        if n < self.draft_min:
            return []
        found = self.match()
        if found is None or found[1] < self.min_match:
            return []
        start, depth = found
        draft = self.tokens[start : start + min(n, depth)]
        return draft if len(draft) >= self.draft_min else []

    def feedback(self, drafted: int, accepted: int) -> None:
        """How a draft of `drafted` tokens went: the first `accepted` of them were sampled too."""
        if accepted >= drafted:
            self.k = min(self.draft_max, self.k * 2)
        else:
            self.k = max(self.draft_min, min(DRAFT_FLOOR, self.draft_max), accepted + 1)
