"""The one token loop every runtime shares: sampling, stop strings, UTF-8, timings.

`run(engine, prompt_tokens, options)` drives any `localllm.runtimes.base.Engine` and
yields `Chunk`s. Sampling is done here in numpy (not in the backend) so that llama.cpp
and ONNX Runtime give the same behaviour for the same options. Chat templates are in
`localllm.chat_template`.

numpy is imported inside functions so that `import localllm` stays light.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localllm.constraints import Guide, capture_for
from localllm.errors import ContextOverflowError, GenerationError, InvalidOptionError, InvalidOptionTypeError
from localllm.options import SamplingOptions
from localllm.runtimes.base import PROMPT_CHUNK
from localllm.sampling import Sampler, StopMatcher, Utf8Decoder
from localllm.speculative import drafter_for

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from localllm.runtimes.base import Engine
    from localllm.tools import ToolCall

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

# "stop" | "length" | "cancelled" | "eos" | "error" (a batch item that failed alone, or an output that
# did not parse: Chunk.error says why) | "tool_calls" (a chat with tools called one)
FinishReason = str
# on_prompt_progress(done, total): prompt tokens in the cache so far, of the prompt's total
PromptProgress = Callable[[int, int], None]
FINISH_REASONS = ("stop", "length", "cancelled", "eos", "error", "tool_calls")


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
    parsed: Any = None  # last chunk, with a constraint: as Completion.parsed
    incomplete: bool = False  # last chunk, with a constraint: as Completion.incomplete
    tool_calls: tuple[ToolCall, ...] = ()  # last chunk of a chat with tools: the calls it made

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Completion:
    """A finished generation: the joined text of a stream and how it ended.

    `completion_tokens` counts the tokens of `text`; those that only spelled a stop
    string are not counted.

    Structured output (json_schema=, regex=, choices=, grammar=): `parsed` is the JSON value of a
    complete output (the Pydantic instance for a model class, the choice for choices; None for a
    regex or grammar: `text` is the value). `incomplete` is True when max_tokens, the context, a
    stop string or a cancel cut the output before the grammar was complete: `text` is then a
    prefix of a valid output and `parsed` is None, never a half object. A chat with tools:
    `tool_calls` holds the calls (finish_reason "tool_calls"), `text` the reply's other text.
    """

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...] = ()
    timings: Timings = field(default_factory=Timings)
    dropped_messages: int = 0  # chat(overflow="truncate"): oldest messages left out to fit the context
    error: Exception | None = None  # finish_reason "error": what failed (a LocalLLMError)
    parsed: Any = None
    incomplete: bool = False
    tool_calls: tuple[ToolCall, ...] = ()

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
        parsed=last.parsed,
        incomplete=last.incomplete,
        tool_calls=last.tool_calls,
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
        c = options.constraint
        self.guide = Guide(engine, c) if c is not None else None  # structured output: the token mask
        self.capture = capture_for(engine, c) if c is not None else None  # a chat with tools: its calls
        self.sent_text: list[str] = []  # with a constraint: the text sent, parsed at the end

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
        if self.guide is not None:
            self.sent_text.append(text)
        n = 0
        while n < len(self.pending) and self.pending[n][1] < self.sent:
            n += 1
        out, self.pending = tuple(t for t, _ in self.pending[:n]), self.pending[n:]
        return out

    def cancelled_in_prompt(self, n_done: int) -> Chunk:
        """The one chunk of a stream stopped while reading its prompt: nothing decoded or held back."""
        self.prompt_read(n_done)
        self.done = True
        cut = self.guide is not None and not self.guide.accepting  # a structure with no token of it
        return Chunk("", (), "cancelled", self.timings(), incomplete=cut)

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
        if self.guide is not None:
            logits = self.guide.apply(logits)
        token = self.sampler.sample(logits, self.history)
        self.accepted += token == guess
        if self.t_first is None:
            self.t_first = time.perf_counter()
        if token in self.stop_tokens or self.engine.is_eog(token):
            return self.end("eos")
        if self.guide is not None:
            self.guide.consume(token)
        self.generated.append(token)
        if self.penalise:
            self.history.append(token)
        piece = self.decoder.feed(self.engine.token_bytes(token))
        if self.capture is not None:  # a tool call's text is held for tool_calls, not streamed
            piece = self.capture.feed(piece, token)
        self.pending.append((token, self.decoded))
        self.decoded += len(piece)
        text, stopped = self.stopper.feed(piece)
        if stopped:
            self.done = True
            return [self._last(text, self._take(text), "stop")]
        out = [Chunk(text, self._take(text))] if text else []
        if self.guide is not None and self.guide.stopped:  # the grammar is complete: nothing may follow
            return out + self.end("stop")
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
        tail = self.decoder.flush()
        if self.capture is not None:
            tail = self.capture.feed(tail) + self.capture.flush()
        tail, stopped = self.stopper.feed(tail)
        if stopped:
            return [self._last(tail, self._take(tail), "stop")]
        tail += self.stopper.flush()
        if self.guide is not None:
            self.sent_text.append(tail)
        return [self._last(tail, tuple(t for t, _ in self.pending), finish)]

    def _spelled(self) -> str:
        """The text of every token generated (what the grammar saw)."""
        return b"".join(self.engine.token_bytes(t) for t in self.generated).decode("utf-8", "replace")

    def _last(self, text: str, tokens: tuple[int, ...], finish: FinishReason) -> Chunk:
        """The finishing chunk; with a constraint, what the output parses to (or that it is cut)."""
        guide = self.guide
        if guide is None:
            return Chunk(text, tokens, finish, self.timings())
        sent = "".join(self.sent_text)
        cut = self.capture is None and sent != self._spelled()  # a stop string took part of it
        if cut or not guide.accepting:  # cut inside the structure: no value, and say so
            return Chunk(text, tokens, finish, self.timings(), incomplete=True)
        try:
            if self.capture is not None:
                content, calls = self.capture.calls(guide.constraint.tool_format)
                return Chunk(
                    text + content, tokens, "tool_calls" if calls else finish, self.timings(), tool_calls=calls
                )
            parsed = guide.constraint.parse(sent)
        except GenerationError as exc:  # the text stays; the error says why it has no value
            return Chunk(text, tokens, "error", self.timings(), error=exc)
        return Chunk(text, tokens, finish, self.timings(), parsed=parsed)


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
    n_before, forced = 0, False
    while True:
        accepted = state.accepted
        for i, row in enumerate(rows):  # the same step as without drafts, token by token
            yield from state.step(row, stop_event, draft[i] if i < len(draft) else -1)
            if state.done or i == len(draft) or state.next_token != draft[i]:
                break
        if drafter is not None and draft:  # keep what the samples confirmed; the last one is evaluated next
            engine.rewind(n_before + i + 1)
            if not forced:  # the grammar's tokens say nothing of how well the lookup drafts
                drafter.feedback(len(draft), state.accepted - accepted)
        if state.done:
            return
        if stop_event is not None and stop_event.is_set():  # looked at after the caller saw the chunk
            yield from state.end("cancelled")
            return
        draft, forced = [], False
        if drafter is not None:  # text a grammar forces (a schema's keys) is the surest draft
            room = _draft_room(state, engine)
            draft = state.guide.forced(room) if state.guide is not None else []
            forced = bool(draft)
            draft = draft or drafter.propose(state.generated, room)
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
