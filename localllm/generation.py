"""The one token loop every runtime shares: sampling, stop strings, UTF-8, timings.

`run(engine, prompt_tokens, options)` drives any `localllm.runtimes.base.Engine` and
yields `Chunk`s. Sampling is done here in numpy (not in the backend) so that llama.cpp
and ONNX Runtime give the same behaviour for the same options. Chat templates are in
`localllm.chat_template`.

numpy is imported inside functions so that `import localllm` stays light.
"""

from __future__ import annotations

import math
import numbers
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, NoReturn

from localllm.errors import ContextOverflowError, GenerationError, InvalidOptionError, InvalidOptionTypeError
from localllm.runtimes.base import PROMPT_CHUNK
from localllm.sampling import Sampler, StopMatcher, Utf8Decoder
from localllm.speculative import DEFAULT_SPECULATIVE, check_speculative, drafter_for

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from localllm.runtimes.base import Engine

__all__ = [
    "Chunk",
    "Completion",
    "PromptProgress",
    "SamplingOptions",
    "Sampler",
    "StopMatcher",
    "Timings",
    "Utf8Decoder",
    "check_text",
    "first_surrogate",
    "join",
    "run",
]

# Sampling defaults: llama.cpp's `common_params_sampling` (common/common.h), which the
# llama.cpp CLI and server use, so a model behaves here as it does there.
DEFAULT_TEMPERATURE = 0.8  # llama.cpp temp
DEFAULT_TOP_K = 40  # llama.cpp top_k
DEFAULT_TOP_P = 0.95  # llama.cpp top_p
DEFAULT_MIN_P = 0.05  # llama.cpp min_p
DEFAULT_REPEAT_PENALTY = 1.0  # llama.cpp penalty_repeat (1.0 = off)
DEFAULT_REPEAT_LAST_N = 64  # llama.cpp penalty_last_n
# llama.cpp's n_predict is -1 (unbounded); a library call needs a bound. mlx-lm uses
# 256, Ollama's API effectively runs to the context; 512 covers a typical reply.
DEFAULT_MAX_TOKENS = 512

# "stop" | "length" | "cancelled" | "eos" | "error" (a batch item that failed alone: Chunk.error says why)
FinishReason = str
# on_prompt_progress(done, total): prompt tokens in the cache so far, of the prompt's total
PromptProgress = Callable[[int, int], None]
FINISH_REASONS = ("stop", "length", "cancelled", "eos", "error")


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens. temperature 0 is greedy; top_k 0, top_p 1, min_p 0 disable those filters.

    `seed` None draws a fresh seed per request; an int in [0, 2**32-1] makes sampling reproducible.
    `max_tokens` None generates until an end-of-generation token or a full context.
    `stop` is one string, a sequence of strings, or None (no stop strings).
    `speculative` "prompt-lookup" drafts tokens from n-gram matches in the context and verifies
    them in one batched evaluation (`localllm.speculative`): faster when the reply repeats the
    prompt, each token still sampled from its own logits; "off" or None disables it; "auto" (the
    default) is prompt-lookup on the runtimes the benchmark found faster with it (llama.cpp), where
    a batch's logits are bit-identical to one-token ones (a q8_0 KV cache, or one thread), so
    greedy output never changes.
    `localllm.batching.run_batch` ignores it (its steps already batch several sequences).

    Raises:
        InvalidOptionError: a value out of its range (a ValueError too).
        InvalidOptionTypeError: a value of the wrong type (a TypeError too).
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    min_p: float = DEFAULT_MIN_P
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    repeat_last_n: int = DEFAULT_REPEAT_LAST_N
    seed: int | None = None
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = ()
    speculative: str | None = DEFAULT_SPECULATIVE

    def __post_init__(self) -> None:
        # the first bad option raises: its error carries that option's name, value and range
        for name, kind, ok, allowed in _OPTION_RULES:
            value = getattr(self, name)
            if value is None and name in _MAY_BE_NONE:
                continue
            if kind is int:
                if not _is_int(value):
                    _bad_type(name, value, allowed)
                value = int(value)  # a numpy integer becomes a plain one
            elif not _is_number(value):
                _bad_type(name, value, allowed)
            if not ok(value):
                raise InvalidOptionError(
                    f"invalid sampling option: {name} must be {allowed}, got {value!r}",
                    option=name,
                    value=value,
                    allowed=allowed,
                )
            object.__setattr__(self, name, value)
        object.__setattr__(self, "stop", _check_stop(self.stop))
        object.__setattr__(self, "speculative", check_speculative(self.speculative))

    @classmethod
    def from_kwargs(cls, base: SamplingOptions | None = None, **options: Any) -> SamplingOptions:
        """Options from keyword arguments; an unknown name raises InvalidOptionTypeError (a TypeError)
        listing the valid ones."""
        # Any, not object: callers pass whatever they were given; __post_init__ checks each value's type
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            valid = ", ".join(sorted(known))
            raise InvalidOptionTypeError(
                f"unknown sampling option(s) {', '.join(unknown)}; valid options are: {valid}",
                option=", ".join(unknown),
                value=options[unknown[0]] if len(unknown) == 1 else {k: options[k] for k in unknown},
                allowed=valid,
            )
        return replace(base or cls(), **options)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# The top of llama.cpp's seed range (uint32; its LLAMA_DEFAULT_SEED is 0xFFFFFFFF).
MAX_SEED = 2**32 - 1
# llama.cpp sets no top; past 2 a reply soon runs out of words it may use again (the common
# ones are in every window of repeat_last_n), so a larger value is taken for a slip of the keyboard.
MAX_REPEAT_PENALTY = 2.0


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: float) -> bool:
    return math.isfinite(value)


# (option, int or float, the check, what is allowed), in field order
_OPTION_RULES: tuple[tuple[str, type, Callable[[float], bool], str], ...] = (
    ("temperature", float, lambda v: _finite(v) and v >= 0, "a number >= 0 and finite (0 is greedy)"),
    ("top_k", int, lambda v: v >= 0, "an integer >= 0 (0 disables it)"),
    ("top_p", float, lambda v: 0 < v <= 1, "a number in (0, 1] (1 disables it)"),
    ("min_p", float, lambda v: 0 <= v < 1, "a number in [0, 1) (0 disables it)"),
    ("repeat_penalty", float, lambda v: 0 < v <= MAX_REPEAT_PENALTY, "a number in (0, 2] (1 disables it)"),
    ("repeat_last_n", int, lambda v: v >= 0, "an integer >= 0 (0 disables the penalty)"),
    ("seed", int, lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}] or None (a fresh seed)"),
    ("max_tokens", int, lambda v: v >= 1, "an integer >= 1 or None (until end of text or a full context)"),
)
_MAY_BE_NONE = frozenset({"seed", "max_tokens"})
_STOP_ALLOWED = "a non-empty string, a sequence of non-empty strings, or None"


def _bad_type(name: str, value: object, allowed: str) -> NoReturn:
    raise InvalidOptionTypeError(
        f"invalid sampling option: {name} must be {allowed}, got {value!r} ({type(value).__name__})",
        option=name,
        value=value,
        allowed=allowed,
    )


def _check_stop(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):  # a lone string is one stop string, not its characters
        return (stop,) if stop else _empty_stop(stop)
    if isinstance(stop, (bytes, bytearray, Mapping)) or not isinstance(stop, Iterable):
        _bad_type("stop", stop, _STOP_ALLOWED)
    out = tuple(stop)
    for s in out:
        if not isinstance(s, str):
            raise InvalidOptionTypeError(
                f"invalid sampling option: stop must be {_STOP_ALLOWED}, got {stop!r} "
                f"(its item {s!r} is of type {type(s).__name__})",
                option="stop",
                value=stop,
                allowed=_STOP_ALLOWED,
            )
        if not s:
            _empty_stop(stop)
    return out


def _empty_stop(stop: object) -> NoReturn:
    raise InvalidOptionError(
        f"invalid sampling option: stop must be {_STOP_ALLOWED}, got {stop!r} (an empty string would stop at once)",
        option="stop",
        value=stop,
        allowed=_STOP_ALLOWED,
    )


def first_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in text (it has no UTF-8 form), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def check_text(text: object, option: str = "prompt", where: str = "", hint: str = "") -> str:
    """text, once sure it is a str that UTF-8 can encode (what every tokenizer needs).

    Raises:
        InvalidOptionTypeError: text is not a str.
        InvalidOptionError: text has a lone surrogate; the message says where.
    """
    if not isinstance(text, str):
        raise InvalidOptionTypeError(
            f"{option}{where} must be a str, got {text!r:.80} ({type(text).__name__}){hint}",
            option=option,
            value=text,
            allowed="a str",
        )
    i = first_surrogate(text)
    if i is not None:
        raise InvalidOptionError(
            f"{option}{where} has a lone surrogate (U+{ord(text[i]):04X}) at character {i}, which is not "
            f"valid Unicode text: near {text[max(0, i - 20) : i + 20]!r}; clean it, e.g. "
            "text.encode('utf-8', 'replace').decode('utf-8')",
            option=option,
            value=text,
            allowed="a str of valid Unicode (no lone surrogates)",
        )
    return text


@dataclass(frozen=True)
class Timings:
    """Where the time went in one request. Rates are tokens per second (0.0 when not measurable)."""

    load_s: float = 0.0  # model load (same for every request of a model)
    ttft_s: float = 0.0  # request start to first token sampled (prompt processing + 1 sample)
    prompt_tokens: int = 0  # tokens in the prompt (stopped while reading it: those in the cache then)
    cached_tokens: int = 0  # of which reused from the KV cache (not evaluated again)
    prompt_tps: float = 0.0  # evaluated prompt tokens / prompt time
    decode_tokens: int = 0  # tokens the engine decoded (a stop string's included: the rate counts them)
    decode_tps: float = 0.0  # tokens after the first / time after the first
    total_s: float = 0.0  # request start to end
    drafted_tokens: int = 0  # speculative: draft tokens evaluated (localllm.speculative)
    accepted_tokens: int = 0  # of which the model sampled too: accepted / drafted is the acceptance rate


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output: text and the token ids that produced it.

    Text held back (half a UTF-8 character, a possible start of a stop string) comes in
    a later chunk, and so do its tokens. The last chunk of a stream has `finish_reason`
    and `timings` set, and `dropped_messages` when a chat was cut to fit the context.
    Tokens that only spell a stop string are in no chunk. A batch item that failed alone
    ends with finish_reason "error" and its exception in `error`.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    timings: Timings | None = None
    dropped_messages: int = 0  # chat(overflow="truncate"): oldest messages left out to fit the context
    error: Exception | None = None  # finish_reason "error": what failed (a LocalLLMError)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Completion:
    """A finished generation: the joined text of a stream and how it ended.

    `completion_tokens` counts the tokens of `text`; those that only spelled a stop
    string are not counted.
    """

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()
    timings: Timings = field(default_factory=Timings)
    dropped_messages: int = 0  # chat(overflow="truncate"): oldest messages left out to fit the context
    error: Exception | None = None  # finish_reason "error": what failed (a LocalLLMError)

    def __str__(self) -> str:
        return self.text


def join(chunks: Iterable[Chunk]) -> Completion:
    """The Completion a stream of chunks adds up to (generate is the join of stream)."""
    parts: list[str] = []
    ids: list[int] = []
    last: Chunk | None = None
    for chunk in chunks:
        parts.append(chunk.text)
        ids.extend(chunk.token_ids)
        last = chunk
    if last is None or last.finish_reason is None:  # a stream always ends with a finish chunk
        raise RuntimeError("stream ended without a finishing chunk")
    timings = last.timings or Timings()
    return Completion(
        text="".join(parts),
        finish_reason=last.finish_reason,
        prompt_tokens=timings.prompt_tokens,
        completion_tokens=len(ids),
        token_ids=tuple(ids),
        timings=timings,
        dropped_messages=last.dropped_messages,
        error=last.error,
    )


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    diff = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)  # up to the shorter
    return min(len(a), len(b)) if diff is None else diff


def check_prompt(prompt: Sequence[int], n_ctx: int, options: SamplingOptions) -> None:
    """Refuse a prompt that is empty or leaves no room for a token in a context of n_ctx.

    Raises:
        InvalidOptionError: the prompt has no token.
        ContextOverflowError: the prompt fills the context.
    """
    n_prompt = len(prompt)
    if n_prompt == 0:
        raise InvalidOptionError(
            "the prompt is empty after tokenization (and the model adds no BOS token); give at least one token",
            option="prompt",
            value=list(prompt),
            allowed="at least one token",
        )
    if n_prompt >= n_ctx:
        raise ContextOverflowError(
            f"the prompt is {n_prompt} tokens but the context window is {n_ctx} tokens "
            f"(max_tokens {options.max_tokens}); shorten the prompt or load with a larger context",
            n_prompt=n_prompt,
            n_ctx=n_ctx,
            max_tokens=options.max_tokens,
        )


class SequenceState:
    """One sequence's generation once its prompt is read: sampling with penalties and history,
    UTF-8 across tokens, stop strings, which tokens go out with which chunk, finish reason, timings.

    `run` drives one of these; `localllm.batching.run_batch` drives one per sequence, so an item of
    a batch streams exactly what `run` streams for it alone. The driver evaluates `next_token`
    after each `step` that left the sequence going (`done` False).
    """

    def __init__(
        self,
        engine: Engine,
        prompt: Sequence[int],
        options: SamplingOptions,
        *,
        stop_tokens: frozenset[int] = frozenset(),
        n_keep: int = 0,
        t_start: float | None = None,
    ) -> None:
        self.engine, self.options, self.stop_tokens = engine, options, stop_tokens
        self.n_prompt, self.n_ctx = len(prompt), engine.n_ctx
        self.n_keep = self.n_done = n_keep  # prompt tokens reused from the cache / in the cache now
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.t_prompt = self.t_start
        self.t_first: float | None = None
        self.sampler = Sampler(options, engine.n_vocab)
        self.decoder = Utf8Decoder()
        self.stopper = StopMatcher(options.stop)
        self.penalise = options.repeat_penalty != 1.0 and options.repeat_last_n > 0
        self.history = list(prompt[-options.repeat_last_n :]) if self.penalise else []
        self.generated: list[int] = []
        # Tokens not yet in a chunk, each with where its text starts in the decoded stream: a
        # token goes out with the chunk whose text reaches past its start, so tokens that only
        # spell a stop string (they start at or after it) are never sent or counted.
        self.pending: list[tuple[int, int]] = []
        self.decoded = 0  # characters decoded so far (sent + held back)
        self.sent = 0  # characters sent in chunks so far
        self.done = False
        self.next_token = -1  # the token sampled last, to evaluate next (while not done)
        self.drafted = self.accepted = 0  # speculative drafts, for Timings

    def prompt_read(self, n_done: int) -> None:
        """The prompt is in the cache up to n_done tokens (all of it, or as far as a stop let it)."""
        self.n_done = n_done
        self.t_prompt = time.perf_counter()

    def timings(self) -> Timings:
        t_end = time.perf_counter()
        first = self.t_first if self.t_first is not None else t_end
        n_eval, n_gen = self.n_done - self.n_keep, len(self.generated)
        decode_s = t_end - first
        return Timings(
            load_s=self.engine.load_seconds,
            ttft_s=first - self.t_start,
            prompt_tokens=self.n_done,
            cached_tokens=self.n_keep,
            prompt_tps=n_eval / (self.t_prompt - self.t_start) if self.t_prompt > self.t_start else 0.0,
            decode_tokens=n_gen,
            decode_tps=(n_gen - 1) / decode_s if n_gen > 1 and decode_s > 0 else 0.0,
            total_s=t_end - self.t_start,
            drafted_tokens=self.drafted,
            accepted_tokens=self.accepted,
        )

    def _take(self, text: str) -> tuple[int, ...]:
        """The pending tokens whose text starts before the end of `text`, which is sent now."""
        self.sent += len(text)
        n = 0
        while n < len(self.pending) and self.pending[n][1] < self.sent:
            n += 1
        out, self.pending = tuple(t for t, _ in self.pending[:n]), self.pending[n:]
        return out

    def cancelled_in_prompt(self, n_done: int) -> Chunk:
        """The one chunk of a stream stopped while reading its prompt: nothing decoded or held back."""
        self.prompt_read(n_done)
        self.done = True
        return Chunk("", (), "cancelled", self.timings())

    def failed(self, error: Exception) -> Chunk:
        """The last chunk of a sequence the engine failed (batch work: the others go on)."""
        self.done = True
        return Chunk("", (), "error", self.timings(), error=error)

    def step(self, logits: np.ndarray, stop_event: threading.Event | None = None, guess: int = -1) -> list[Chunk]:
        """Sample the next token from logits; the chunks to send (the last one finishing, if done).
        `guess`: the draft token these logits verify (counted in Timings when sampled)."""
        if stop_event is not None and stop_event.is_set():
            return self.end("cancelled")
        if self.n_prompt + len(self.generated) >= self.n_ctx:  # prompt + output never exceed the window
            return self.end("length")
        token = self.sampler.sample(logits, self.history)
        self.accepted += token == guess
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if token in self.stop_tokens or self.engine.is_eog(token):
            return self.end("eos")
        self.generated.append(token)
        if self.penalise:
            self.history.append(token)
        piece = self.decoder.feed(self.engine.token_bytes(token))
        self.pending.append((token, self.decoded))
        self.decoded += len(piece)
        text, stopped = self.stopper.feed(piece)
        if stopped:
            self.done = True
            return [Chunk(text, self._take(text), "stop", self.timings())]
        out = [Chunk(text, self._take(text))] if text else []
        if self.options.max_tokens is not None and len(self.generated) >= self.options.max_tokens:
            return out + self.end("length")
        # no room to evaluate the token just sampled (the cache holds n_prompt + generated - 1)
        if self.n_prompt + len(self.generated) > self.n_ctx:
            return out + self.end("length")
        self.next_token = token
        return out

    def end(self, finish: FinishReason) -> list[Chunk]:
        """The stream ends without a stop string: release what was held back."""
        self.done = True
        tail, stopped = self.stopper.feed(self.decoder.flush())
        if stopped:
            return [Chunk(tail, self._take(tail), "stop", self.timings())]
        return [Chunk(tail + self.stopper.flush(), tuple(t for t, _ in self.pending), finish, self.timings())]


def run(
    engine: Engine,
    prompt_tokens: Sequence[int],
    options: SamplingOptions,
    stop_event: threading.Event | None = None,
    *,
    stop_tokens: frozenset[int] = frozenset(),
    on_prompt_progress: PromptProgress | None = None,
) -> Iterator[Chunk]:
    """Generate from prompt tokens, reusing the engine's cached prefix; yields Chunks.

    `stop_tokens` end generation like the engine's end-of-generation tokens (finish_reason
    "eos"): a fallback chat format's end-of-turn token the model does not mark as such.
    The prompt is evaluated in chunks (the engine's `prompt_chunk`), looking at `stop_event` between
    two: set meanwhile, the stream ends at once with one empty "cancelled" chunk whose timings count
    the prompt tokens in the cache. `on_prompt_progress(done, total)` is called from this thread before
    the first chunk (done = tokens reused from the cache) and after each (the last: done == total).
    With `options.speculative`, each step may evaluate the next token and a draft in one `eval_all`
    and walk the rows with the same `SequenceState.step` while the samples confirm the draft; the
    stop flag, stop strings, max_tokens and n_ctx apply per token as without it.

    Raises:
        ContextOverflowError: the prompt leaves no room for a token in the context.
        GenerationError: the engine failed, or on_prompt_progress raised (its error is the cause).
    """
    prompt = list(prompt_tokens)
    check_prompt(prompt, engine.n_ctx, options)
    t_start = time.perf_counter()
    # Reuse the cached prefix; keep at least one prompt token to evaluate, for its logits.
    n_keep = min(common_prefix(engine.cached_tokens, prompt), len(prompt) - 1)
    if n_keep < engine.n_past:
        engine.rewind(n_keep)
    n_done, logits = _eval_prompt(engine, prompt, n_keep, stop_event, on_prompt_progress)
    state = SequenceState(engine, prompt, options, stop_tokens=stop_tokens, n_keep=n_keep, t_start=t_start)
    if logits is None:  # stopped while reading the prompt
        yield state.cancelled_in_prompt(n_done)
        return
    state.prompt_read(n_done)
    drafter = drafter_for(options.speculative or "off", engine, prompt)
    # rows[i]: logits to sample from, in order; draft[i]: the token guessed for rows[i]'s sample
    rows: Any = [logits]
    draft: list[int] = []
    n_before = 0
    while True:
        accepted = state.accepted
        for i, row in enumerate(rows):  # the same step as without drafts, token by token
            yield from state.step(row, stop_event, draft[i] if i < len(draft) else -1)
            if state.done or i == len(draft) or state.next_token != draft[i]:
                break
        if drafter is not None and draft:  # keep what the samples confirmed; the last one is evaluated next
            engine.rewind(n_before + i + 1)
            drafter.feedback(len(draft), state.accepted - accepted)
        if state.done:
            return
        if stop_event is not None and stop_event.is_set():  # looked at after the caller saw the chunk
            yield from state.end("cancelled")
            return
        draft = drafter.propose(state.generated, _draft_room(state, engine)) if drafter is not None else []
        n_before, state.drafted = engine.n_past, state.drafted + len(draft)
        rows = engine.eval_all([state.next_token, *draft]) if draft else [engine.eval([state.next_token])]


def _draft_room(state: SequenceState, engine: Engine) -> int:
    """How many draft tokens may follow the next token: within n_ctx and max_tokens (a draft
    past the last token max_tokens lets out would be evaluated for nothing)."""
    room = engine.n_ctx - engine.n_past - 1
    if state.options.max_tokens is not None:
        room = min(room, state.options.max_tokens - len(state.generated) - 1)
    return room


def prompt_chunk(engine: object) -> int:
    """How many prompt tokens the engine takes at a time between two looks at the stop flag."""
    return max(1, int(getattr(engine, "prompt_chunk", PROMPT_CHUNK)))


def chunk_end(done: int, total: int, chunk: int) -> int:
    """Where the chunk from `done` ends: the next multiple of `chunk`, or the prompt's end when at most
    half a chunk would be left (a tail read alone runs the slow small-batch kernels: 96 tokens as
    64 + 32 reached the first token 0.08-0.15 s after one batch of 96, bench_llamacpp.py, 1B)."""
    end = min(total, (done // chunk + 1) * chunk)
    return total if total - end <= chunk // 2 else end


def last_edge(total: int, chunk: int) -> int:
    """Where a fresh read of a `total`-token prompt starts its last chunk (a multiple of `chunk`):
    the cache below it was filled in whole chunks, so a prefix up to it can be shared exactly."""
    return max(0, -(-(total - chunk - chunk // 2) // chunk)) * chunk


def _eval_prompt(
    engine: Engine, prompt: list[int], done: int, stop: threading.Event | None, progress: PromptProgress | None
) -> tuple[int, np.ndarray | None]:
    """Evaluate prompt[done:] a chunk at a time; returns the prompt tokens now in the cache and the
    last one's logits (None: stopped first). Chunk edges fall on multiples of the chunk size (the
    last chunk takes a short tail, `chunk_end`), so a prompt read again after a stop is cut as a
    fresh one is (llama.cpp's logits depend on the edges)."""
    chunk, total, logits = prompt_chunk(engine), len(prompt), None
    while True:  # report, then stop or evaluate the next chunk
        if progress is not None:
            try:
                progress(done, total)
            except Exception as exc:  # the caller's bug ends this generation, named as theirs
                raise GenerationError(
                    f"on_prompt_progress raised {type(exc).__name__}: {exc} (at {done} of {total} prompt "
                    "tokens); the generation stopped. Fix the callback; the model is still usable"
                ) from exc
        if done >= total or (stop is not None and stop.is_set()):
            return done, logits if done >= total else None
        end = chunk_end(done, total, chunk)
        logits = engine.eval(prompt[done:end])
        done = end
