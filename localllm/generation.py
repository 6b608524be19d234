"""The one token loop every runtime shares: sampling, stop strings, UTF-8, timings.

`run(engine, prompt_tokens, options)` drives any `localllm.runtimes.base.Engine` and
yields `Chunk`s. Sampling is done here in numpy (not in the backend) so that llama.cpp
and ONNX Runtime give the same behaviour for the same options. Chat templates are in
`localllm.chat_template`.

numpy is imported inside functions so that `import localllm` stays light.
"""

from __future__ import annotations

import codecs
import math
import numbers
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, NoReturn

from localllm.errors import ContextOverflowError, GenerationError, InvalidOptionError, InvalidOptionTypeError
from localllm.runtimes.base import PROMPT_CHUNK

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

FinishReason = str  # "stop" | "length" | "cancelled" | "eos"
# on_prompt_progress(done, total): prompt tokens in the cache so far, of the prompt's total
PromptProgress = Callable[[int, int], None]
FINISH_REASONS = ("stop", "length", "cancelled", "eos")


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens. temperature 0 is greedy; top_k 0, top_p 1, min_p 0 disable those filters.

    `seed` None draws a fresh seed per request; an int in [0, 2**32-1] makes sampling reproducible.
    `max_tokens` None generates until an end-of-generation token or a full context.
    `stop` is one string, a sequence of strings, or None (no stop strings).

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


@dataclass(frozen=True)
class Chunk:
    """A piece of streamed output: text and the token ids that produced it.

    Text held back (half a UTF-8 character, a possible start of a stop string) comes in
    a later chunk, and so do its tokens. The last chunk of a stream has `finish_reason`
    and `timings` set, and `dropped_messages` when a chat was cut to fit the context.
    Tokens that only spell a stop string are in no chunk.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    finish_reason: FinishReason | None = None
    timings: Timings | None = None
    dropped_messages: int = 0  # chat(overflow="truncate"): oldest messages left out to fit the context

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
    )


class Utf8Decoder:
    """Incremental UTF-8: bytes of a character split across tokens come out whole.

    Invalid bytes become U+FFFD, as a terminal would show them; never a broken character.
    A character still incomplete when generation ends (max_tokens cut it between its
    tokens) is dropped: it is not text yet, and U+FFFD would not be the model's either.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return self._decoder.decode(data, final=False)

    def flush(self) -> str:
        pending, _ = self._decoder.getstate()
        if pending and len(pending) < 4 and _starts_a_sequence(pending):
            self._decoder.reset()
            return ""
        return self._decoder.decode(b"", final=True)


def _starts_a_sequence(data: bytes) -> bool:
    """True when `data` is a valid but unfinished UTF-8 sequence (a lead byte and continuations)."""
    lead = data[0]
    need = 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0
    return need > len(data) and all(0x80 <= b <= 0xBF for b in data[1:])


class StopMatcher:
    """Finds stop strings in streamed text; nothing of a stop string is ever emitted.

    `feed` returns (text safe to emit, stopped). Text that could be the start of a stop
    string is held back until the next piece shows whether it is one.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buf = self._held + text
        # held text holds no whole stop string (it would have stopped), so a plain find is exact
        found = -1
        for s in self._stops:
            i = buf.find(s)
            if i != -1 and (found == -1 or i < found):
                found = i
        if found != -1:
            self._held = ""
            return buf[:found], True
        hold = self._partial_suffix(buf)
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        """Text still held back when the stream ends without a stop."""
        held, self._held = self._held, ""
        return held

    def _partial_suffix(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of a stop string."""
        best = 0
        for s in self._stops:
            for n in range(min(len(s) - 1, len(buf)), best, -1):
                if buf.endswith(s[:n]):
                    best = n
                    break
        return best


class Sampler:
    """Picks the next token from logits, in llama.cpp's order: penalties, top_k, top_p, min_p, temperature.

    Greedy (temperature 0) is a single argmax. Otherwise top_k runs first with
    `argpartition`, so only k candidates are sorted and softmaxed even for a 150k vocabulary.
    """

    def __init__(self, options: SamplingOptions, n_vocab: int) -> None:
        import numpy as np

        self.options = options
        self.n_vocab = n_vocab
        self._rng = np.random.default_rng(options.seed)

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        import numpy as np

        o = self.options
        if o.repeat_penalty != 1.0 and o.repeat_last_n and history:
            recent = np.unique(np.asarray(history[-o.repeat_last_n :], dtype=np.int64))
            recent = recent[(recent >= 0) & (recent < logits.shape[0])]
            logits = logits.copy()  # never write into the backend's buffer
            vals = logits[recent]
            # llama.cpp's rule: shrink positive logits, push negative ones further down
            logits[recent] = np.where(vals > 0, vals / o.repeat_penalty, vals * o.repeat_penalty)
        if o.temperature == 0:
            return int(np.argmax(logits))

        n = logits.shape[0]
        k = o.top_k if 0 < o.top_k < n else n
        idx = np.argpartition(logits, n - k)[n - k :] if k < n else np.arange(n)
        vals = logits[idx].astype(np.float64)
        order = np.argsort(-vals, kind="stable")
        idx, vals = idx[order], vals[order]
        if o.top_p < 1.0:
            p = np.exp(vals - vals[0])
            p /= p.sum()
            keep = int(np.searchsorted(np.cumsum(p), o.top_p)) + 1  # smallest set reaching top_p
            idx, vals = idx[:keep], vals[:keep]
        if o.min_p > 0.0:
            # p_i >= min_p * p_max  <=>  logit_i >= logit_max + log(min_p)
            keep = int(np.count_nonzero(vals >= vals[0] + math.log(o.min_p)))
            idx, vals = idx[: max(keep, 1)], vals[: max(keep, 1)]
        p = np.exp((vals - vals[0]) / o.temperature)
        cdf = np.cumsum(p)
        choice = int(np.searchsorted(cdf, self._rng.random() * cdf[-1], side="right"))
        return int(idx[min(choice, len(idx) - 1)])


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    diff = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)  # up to the shorter
    return min(len(a), len(b)) if diff is None else diff


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

    Raises:
        ContextOverflowError: the prompt leaves no room for a token in the context.
        GenerationError: the engine failed, or on_prompt_progress raised (its error is the cause).
    """
    prompt = list(prompt_tokens)
    n_prompt, n_ctx = len(prompt), engine.n_ctx
    if n_prompt == 0:
        raise InvalidOptionError(
            "the prompt is empty after tokenization (and the model adds no BOS token); give at least one token",
            option="prompt",
            value=prompt,
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

    t_start = time.perf_counter()
    # Reuse the cached prefix; keep at least one prompt token to evaluate, for its logits.
    n_keep = min(common_prefix(engine.cached_tokens, prompt), n_prompt - 1)
    if n_keep < engine.n_past:
        engine.rewind(n_keep)
    n_done, logits = _eval_prompt(engine, prompt, n_keep, stop_event, on_prompt_progress)
    t_prompt = time.perf_counter()

    sampler = Sampler(options, engine.n_vocab)
    decoder = Utf8Decoder()
    stopper = StopMatcher(options.stop)
    penalise = options.repeat_penalty != 1.0 and options.repeat_last_n > 0
    history = prompt[-options.repeat_last_n :] if penalise else []
    generated: list[int] = []
    # Tokens not yet in a chunk, each with where its text starts in the decoded stream: a
    # token goes out with the chunk whose text reaches past its start, so tokens that only
    # spell a stop string (they start at or after it) are never sent or counted.
    pending: list[tuple[int, int]] = []
    decoded = 0  # characters decoded so far (sent + held back)
    sent = 0  # characters sent in chunks so far
    t_first = None
    finish: FinishReason | None = None

    def timings() -> Timings:
        t_end = time.perf_counter()
        first = t_first if t_first is not None else t_end
        n_eval = n_done - n_keep
        decode_s = t_end - first
        return Timings(
            load_s=engine.load_seconds,
            ttft_s=first - t_start,
            prompt_tokens=n_done,
            cached_tokens=n_keep,
            prompt_tps=n_eval / (t_prompt - t_start) if t_prompt > t_start else 0.0,
            decode_tokens=len(generated),
            decode_tps=(len(generated) - 1) / decode_s if len(generated) > 1 and decode_s > 0 else 0.0,
            total_s=t_end - t_start,
        )

    def take(text: str) -> tuple[int, ...]:
        """The pending tokens whose text starts before the end of `text`, which is sent now."""
        nonlocal pending, sent
        sent += len(text)
        n = 0
        while n < len(pending) and pending[n][1] < sent:
            n += 1
        out, pending = tuple(t for t, _ in pending[:n]), pending[n:]
        return out

    if logits is None:  # stopped while reading the prompt: nothing decoded, nothing held back
        yield Chunk("", (), "cancelled", timings())
        return
    while True:
        if stop_event is not None and stop_event.is_set():
            finish = "cancelled"
            break
        if n_prompt + len(generated) >= n_ctx:  # prompt + output never exceed the window
            finish = "length"
            break
        token = sampler.sample(logits, history)
        if t_first is None:
            t_first = time.perf_counter()
        if token in stop_tokens or engine.is_eog(token):
            finish = "eos"
            break
        generated.append(token)
        if penalise:
            history.append(token)
        piece = decoder.feed(engine.token_bytes(token))
        pending.append((token, decoded))
        decoded += len(piece)
        text, stopped = stopper.feed(piece)
        if stopped:
            yield Chunk(text, take(text), "stop", timings())
            return
        if text:
            yield Chunk(text, take(text))
        if options.max_tokens is not None and len(generated) >= options.max_tokens:
            finish = "length"
            break
        if engine.n_past + 1 > n_ctx:  # no room to evaluate the token just sampled
            finish = "length"
            break
        if stop_event is not None and stop_event.is_set():
            finish = "cancelled"
            break
        logits = engine.eval([token])

    # The stream ends without a stop string: release what was held back.
    tail, stopped = stopper.feed(decoder.flush())
    if stopped:
        yield Chunk(tail, take(tail), "stop", timings())
        return
    yield Chunk(tail + stopper.flush(), tuple(t for t, _ in pending), finish, timings())


def _eval_prompt(
    engine: Engine, prompt: list[int], done: int, stop: threading.Event | None, progress: PromptProgress | None
) -> tuple[int, np.ndarray | None]:
    """Evaluate prompt[done:] a chunk at a time; returns the prompt tokens now in the cache and the
    last one's logits (None: stopped first). Chunk edges fall on multiples of the chunk size, so a
    prompt read again after a stop is cut as a fresh one is (llama.cpp's logits depend on the edges)."""
    chunk, total, logits = max(1, int(getattr(engine, "prompt_chunk", PROMPT_CHUNK))), len(prompt), None
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
        end = min(total, (done // chunk + 1) * chunk)
        logits = engine.eval(prompt[done:end])
        done = end
