"""Prompt-lookup speculative decoding: draft tokens from n-gram matches in the context.

When a reply repeats text it has seen (editing code, rewriting a paragraph, extracting
fields), the tokens that followed the last few tokens the previous time they occurred are a
good guess at what comes next. `PromptLookup` keeps, for each n-gram length n in
[NGRAM_MIN, NGRAM_MAX], where the most recent occurrence of every n-gram of the context
(prompt + reply so far) was followed, and drafts the tokens after the longest n-gram that
matches the end of the context. `localllm.generation.run` evaluates [last sampled token,
drafts] in one `eval_all` and samples each position with the same `SequenceState.step` a plain
decode uses: it keeps a draft token while the sampled token equals it, and the first sampled
token that differs is still a correct sample (from the right logits, with the RNG drawn once per
emitted token), so the output is the plain decode's for any sampler.

The facts borrowed from llama.cpp (common/ngram-map.cpp `ngram-simple`, common/speculative.cpp
`ngram-mod`): search the history for the last n tokens and draft the tokens that followed the
most recent match, as many as exist up to a cap; a streak of drafts that were mostly rejected
(under half accepted) makes the drafter back off. The rest (an index updated per token instead
of a backward scan, the draft length doubling after a fully accepted draft and the pause
doubling after each poor one) is ours, tuned by benchmarks/bench_speculative.py.

Pure Python, no numpy: `import localllm` stays light.
"""

from __future__ import annotations

from collections.abc import Sequence

from localllm.errors import InvalidOptionError, InvalidOptionTypeError

__all__ = [
    "AUTO_SPECULATIVE",
    "DEFAULT_SPECULATIVE",
    "SPECULATIVE_MODES",
    "PromptLookup",
    "check_speculative",
    "drafter_for",
]

SPECULATIVE_MODES = ("auto", "prompt-lookup", "off")
DEFAULT_SPECULATIVE = "auto"
# What "auto" means (decided by measurement, benchmarks/bench_speculative.py): see the README
# note there. On when the measured cost on a reply that repeats nothing is within noise.
AUTO_SPECULATIVE = "prompt-lookup"
_ALLOWED = "'auto', 'prompt-lookup', 'off' or None (off)"

# n-gram lengths tried, longest first: a longer match points at the right place in code whose
# lines repeat (indentation, `return`), a shorter one picks the copy up again sooner after an
# edit. llama.cpp's lookup example uses 1..4; a 1-token match is mostly noise (" the").
NGRAM_MAX = 4
NGRAM_MIN = 2
# Draft lengths. On this project's 2-core AVX2 CPU (SmolLM2-135M Q4_1, 2 threads) one llama.cpp
# decode of b tokens took about 6.1 ms (b=1), 12.9 (2), 18.4 (4), 30.6 (8), 50.9 (16): a batch
# costs about 2.7 ms a token plus 7.6 ms, so a draft pays only once several of its tokens are
# taken. Shorter drafts than DRAFT_MIN are not tried; DRAFT_MAX bounds the work thrown away
# by a miss, and past 16 the cost per token is flat.
DRAFT_MIN = 2
DRAFT_START = 8
DRAFT_MAX = 16
# after a poor draft (fewer than half its tokens accepted) no draft for 1, 2, 4 ... steps, at most
BACKOFF_MAX = 64


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
    """The drafter for one request, or None: speculation off, or the engine cannot evaluate a
    batch with every position's logits (`eval_all`)."""
    if mode == "auto":
        mode = AUTO_SPECULATIVE
    if mode != "prompt-lookup" or not callable(getattr(engine, "eval_all", None)):
        return None
    return PromptLookup(prompt)


class PromptLookup:
    """Drafts the continuation of the context's most recent earlier n-gram that matches its end.

    `propose(generated, limit)` first takes in the tokens of `generated` it has not seen (the
    reply so far, the last sampled token included), then returns a draft of at most `limit`
    tokens, or none. `feedback(drafted, accepted)` after each verified draft adapts the length.
    """

    def __init__(
        self,
        context: Sequence[int],
        *,
        ngram_max: int = NGRAM_MAX,
        ngram_min: int = NGRAM_MIN,
        draft_min: int = DRAFT_MIN,
        draft_start: int = DRAFT_START,
        draft_max: int = DRAFT_MAX,
    ) -> None:
        if not 1 <= ngram_min <= ngram_max or not 1 <= draft_min <= draft_max:
            raise ValueError(f"bad drafter bounds: n-grams {ngram_min}..{ngram_max}, drafts {draft_min}..{draft_max}")
        self.ngram_max, self.ngram_min = ngram_max, ngram_min
        self.draft_min, self.draft_max = draft_min, draft_max
        self.k = max(draft_min, min(draft_start, draft_max))  # the next draft's length cap
        self.tokens: list[int] = []
        # per n: n-gram -> where the tokens after its most recent occurrence start (an n-gram ending
        # the context has no follower yet, so it goes in when the next token comes)
        self._index: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(ngram_min, ngram_max + 1)}
        self._seen = 0  # tokens of the reply taken in
        self._pause = 0  # proposals still to skip
        self._misses = 0  # poor drafts in a row
        self.extend(context)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append tokens to the context."""
        ctx, index = self.tokens, self._index
        for token in tokens:
            end = len(ctx)  # the n-grams ending here are followed by `token`
            for n, table in index.items():
                if end >= n:
                    table[tuple(ctx[end - n : end])] = end
            ctx.append(token)

    def lookup(self) -> int | None:
        """Where the tokens after the longest earlier match of the context's end start, or None."""
        ctx, end = self.tokens, len(self.tokens)
        for n in range(self.ngram_max, self.ngram_min - 1, -1):
            if end >= n:
                start = self._index[n].get(tuple(ctx[end - n :]))
                if start is not None:
                    return start
        return None

    def propose(self, generated: Sequence[int], limit: int) -> list[int]:
        """A draft of at most min(limit, the current cap) tokens to follow `generated`, or []."""
        if self._seen < len(generated):
            self.extend(generated[self._seen :])
            self._seen = len(generated)
        if self._pause > 0:
            self._pause -= 1
            return []
        n = min(limit, self.k)
        if n < self.draft_min:
            return []
        start = self.lookup()
        if start is None:
            return []
        draft = self.tokens[start : start + n]
        return draft if len(draft) >= self.draft_min else []

    def feedback(self, drafted: int, accepted: int) -> None:
        """How a draft of `drafted` tokens went: the first `accepted` of them were sampled too."""
        if accepted >= drafted:
            self.k = min(self.draft_max, self.k * 2)
            self._misses = 0
        elif 2 * accepted >= drafted:
            self.k = max(self.draft_min, self.k // 2)
            self._misses = 0
        else:
            self.k = self.draft_min
            self._misses += 1
            self._pause = min(BACKOFF_MAX, 1 << (self._misses - 1))
