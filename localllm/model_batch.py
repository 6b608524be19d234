"""Many prompts in one pass: `Model.generate_batch`, `chat_batch` and `stream_batch`.

    with localllm.load("model.gguf", parallel=8) as llm:
        for c in llm.generate_batch(["Label: ...", "Label: ..."], temperature=0, max_tokens=16):
            print(c.finish_reason, c.text)

The items run through `localllm.batching.run_batch`: continuous batching over the engine's
sequences (`placement.n_seq`, set by `load(parallel=N)` or the planner for workload="batch"),
each item's tokens exactly what `generate`/`chat` give for it alone at temperature 0. On a
model loaded for interactive work (n_seq 1) the items run one after another through the
same scheduler: correct, not faster.

A bad item (empty, not a str, a template error, too long for its sequence's context) ends
with finish_reason "error" and its error on `Completion.error`; the others run. A bad option
that applies to every item is raised before anything runs. Every item gets exactly one
finishing chunk, in `stream_batch` as in the lists.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from localllm.errors import (
    ContextOverflowError,
    GenerationError,
    InvalidOptionError,
    InvalidOptionTypeError,
    LocalLLMError,
)
from localllm.generation import Chunk, Completion, SamplingOptions, Timings, check_text, join
from localllm.model_chat import NO_TOOLS, ToolRequest

if TYPE_CHECKING:  # pragma: no cover
    from localllm.batching import BatchFeed, BatchItem
    from localllm.chat_template import ChatFormatter
    from localllm.hardware import Hardware
    from localllm.model import Model, ModelInfo
    from localllm.runtimes.base import Engine

__all__ = ["PER_ITEM_OPTIONS", "BatchMixin", "check_parallel", "item_options", "reopen_for"]

log = logging.getLogger(__name__)

# Options that may be one value for every item or a list of one per item.
PER_ITEM_OPTIONS = ("max_tokens", "stop", "seed", "temperature")
Message = Mapping[str, Any]


class BatchMixin:
    """The batch methods of `localllm.Model` (which provides the engine, lock and template)."""

    if TYPE_CHECKING:  # what Model gives this mixin
        _engine: Engine
        _lock: threading.Lock
        _formatter: ChatFormatter
        _turn_end_tokens: frozenset[int]
        _running_cancel: threading.Event | None
        _closing: bool
        _load_recorded: bool
        info: ModelInfo

        def _require_open(self) -> None: ...
        def _tokenize_prompt(self, prompt: str) -> list[int]: ...
        def _chat_prompt(
            self, messages: Sequence[Message], opts: SamplingOptions, *, truncate: bool, tools: ToolRequest = ...
        ) -> tuple[list[int], SamplingOptions, int]: ...
        def _record_load(self) -> None: ...

    def generate_batch(
        self, prompts: Sequence[str], *, stop_event: threading.Event | None = None, **options: Any
    ) -> list[Completion]:
        """Complete each prompt (raw text, as `generate`); Completions in input order.

        Each is what `generate(prompt, **its options)` returns for it alone at temperature 0
        (and with the same seed otherwise). On a model loaded without `parallel` (n_seq 1)
        the prompts run one after another: load with `parallel=N` for throughput.

        Args:
            prompts: the prompts; [] gives [].
            stop_event: set it (from any thread) to end every item; those not finished end
                "cancelled". `cancel()` and `close()` do the same.
            **options: as for `generate`. max_tokens, seed and temperature may be a list (or
                tuple) of one value per item; stop may be a list of one stop list per item
                ([["\\n"], None, [".", "!"]]), while a list of strings is the stop strings of
                every item, as `generate` takes it.

        Raises:
            InvalidOptionTypeError: prompts is a str or not a sequence; an unknown option,
                on_prompt_progress (a batch reports progress per item in `stream_batch`).
            InvalidOptionError: a bad option value (for a per-item one the message names the
                item), a per-item list of the wrong length.
            GenerationError: the model is closed, or the engine failed.
        """
        pairs = self.stream_batch(prompts, stop_event=stop_event, **options)  # checks prompts first
        return _collect(len(prompts), pairs)

    def chat_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        *,
        overflow: str = "error",
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = False,
        stop_event: threading.Event | None = None,
        **options: Any,
    ) -> list[Completion]:
        """Reply to each conversation through the chat template, as `chat` does; in input order.

        Args:
            conversations: lists of {"role", "content"} messages, one per item.
            overflow: as for `chat`: "error" fails an item whose conversation does not fit its
                sequence's context (finish_reason "error", ContextOverflowError on `.error`);
                "truncate" drops its oldest turns (`Completion.dropped_messages`).
            tools, tool_choice, parallel_tool_calls: as for `chat`, the same for every item.
            stop_event, **options: as for `generate_batch`.

        Raises:
            as for `generate_batch`; InvalidOptionError for a bad overflow value. A template
            error or an overflow fails only its item.
        """
        pairs = self.stream_batch(
            conversations,
            chat=True,
            overflow=overflow,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            stop_event=stop_event,
            **options,
        )
        return _collect(len(conversations), pairs)

    def stream_batch(
        self,
        inputs: Sequence[str] | Sequence[Sequence[Message]],
        *,
        chat: bool = False,
        overflow: str = "error",
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = False,
        stop_event: threading.Event | None = None,
        **options: Any,
    ) -> Iterator[tuple[int, Chunk]]:
        """Yield (index, Chunk) as the items progress, interleaved; each item's chunks join to its
        Completion in `generate_batch` (`chat=False`: prompts) or `chat_batch` (`chat=True`:
        conversations), and end with exactly one chunk carrying finish_reason.

        Options are checked and the inputs tokenized now; generation starts (and waits for the
        model's lock, held until the stream ends or is closed) at the first `next()`.
        Items that fail before running (template error, empty, too long) come first.
        """
        if isinstance(inputs, (str, bytes, Mapping)) or not isinstance(inputs, Sequence):
            what = "prompts" if not chat else "conversations"
            raise InvalidOptionTypeError(
                f"{what} must be a list with one item per {what[:-1]}, got {type(inputs).__name__} "
                f"{inputs!r:.60}; wrap a single one in a list",
                option=what,
                value=inputs,
                allowed="a list",
            )
        if "on_prompt_progress" in options:
            raise InvalidOptionTypeError(
                "on_prompt_progress is not taken by batch calls (many prompts are read at once); "
                "stream_batch yields each item's chunks as it progresses",
                option="on_prompt_progress",
                value=options["on_prompt_progress"],
                allowed="generate, stream, chat or chat_stream",
            )
        if overflow not in ("error", "truncate") or (overflow != "error" and not chat):
            raise InvalidOptionError(
                f"overflow must be 'error' or 'truncate' (conversations only, chat=True), got {overflow!r}",
                option="overflow",
                value=overflow,
                allowed="'error' or 'truncate' with chat=True",
            )
        if not chat and (tools is not None or tool_choice is not None):
            raise InvalidOptionError(
                "tools are for conversations (chat=True, chat_batch), not raw prompts",
                option="tools",
                value=tools,
                allowed="conversations with tools, or prompts without",
            )
        self._require_open()
        opts = item_options(len(inputs), options)
        failed: list[tuple[int, LocalLLMError, int]] = []  # (index, error, prompt tokens)
        items: list[BatchItem] = []
        index: list[int] = []  # items[j] is input index[j]
        dropped: dict[int, int] = {}
        for i, (item, o) in enumerate(zip(inputs, opts, strict=True)):
            tokens: list[int] = []
            try:
                if chat:
                    tokens, o, n_dropped = self._batch_chat_tokens(
                        i, item, o, truncate=overflow == "truncate", tools=(tools, tool_choice, parallel_tool_calls)
                    )
                    if n_dropped:
                        dropped[i] = n_dropped
                else:
                    tokens = self._batch_prompt_tokens(i, item)
                self._batch_check_fits(i, tokens, o, chat=chat)
            except LocalLLMError as exc:
                failed.append((i, exc, len(tokens)))
                continue
            items.append(_batch_item(tokens, o, self._turn_end_tokens if chat else frozenset()))
            index.append(i)
        if not inputs:
            return iter(())
        return self._batch_locked(failed, items, index, dropped, stop_event)

    # --- items that keep arriving (a server) -----------------------------------------
    def prepare_item(
        self,
        prompt_or_messages: str | Sequence[Message],
        *,
        overflow: str = "error",
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = False,
        **options: Any,
    ) -> tuple[BatchItem, int]:
        """One request as a batch item for `run_feed`, checked now: (item, turns dropped).

        A str is a raw prompt (as `generate`); a list of messages goes through the chat template
        (as `chat`, with `overflow` and the tools). Options are those of `generate`.

        Raises:
            InvalidOptionError, InvalidOptionTypeError: a bad option, an empty prompt, a message
                list of the wrong shape.
            ChatTemplateError: the template failed on these messages.
            ContextOverflowError: the prompt leaves no room in a sequence's context.
        """
        self._require_open()
        if overflow not in ("error", "truncate"):
            raise InvalidOptionError(
                f"overflow must be 'error' or 'truncate', got {overflow!r}",
                option="overflow",
                value=overflow,
                allowed="'error' or 'truncate'",
            )
        opts = SamplingOptions.from_kwargs(**options)
        chat = not isinstance(prompt_or_messages, str)
        dropped = 0
        if chat:
            tokens, opts, dropped = self._batch_chat_tokens(
                0,
                prompt_or_messages,
                opts,
                truncate=overflow == "truncate",
                tools=(tools, tool_choice, parallel_tool_calls),
            )
        else:
            if tools is not None or tool_choice is not None:
                raise InvalidOptionError(
                    "tools are for conversations (a list of messages), not a raw prompt",
                    option="tools",
                    value=tools,
                    allowed="messages with tools, or a prompt without",
                )
            tokens = self._batch_prompt_tokens(0, prompt_or_messages)
        self._batch_check_fits(0, tokens, opts, chat=chat)
        return _batch_item(tokens, opts, self._turn_end_tokens if chat else frozenset()), dropped

    def run_feed(self, feed: BatchFeed, *, stop_event: threading.Event | None = None) -> Iterator[tuple[int, Chunk]]:
        """Run the items of `feed` (from `prepare_item`) as they arrive, many at once on a model
        loaded with `parallel=N`: yields (item id, Chunk) until the feed is closed and drained,
        `stop_event` is set, or the model is closed or cancelled. Holds the model's lock all the
        while: a server's one worker thread per model runs this.
        """
        from localllm.batching import run_live
        from localllm.model import _AnyEvent

        with self._lock:
            if self._closing:
                raise GenerationError("the model was closed before its feed ran; load it again")
            self._require_open()
            self._fit_threads()
            cancel = self._running_cancel = threading.Event()
            try:
                yield from run_live(self._engine, feed, _AnyEvent(self, cancel, stop_event))  # type: ignore[arg-type]
            finally:
                self._running_cancel = None
            if not self._load_recorded:
                self._load_recorded = True
                self._record_load()

    # --- internals -------------------------------------------------------------------
    def _fit_threads(self) -> None:
        """Before a generation (under the lock): re-choose the engine's thread count from the CPU
        other programs leave free (placement.adapt_threads; a count the caller fixed stays).
        `info.placement` then shows the count in use; the plan's stays the ceiling."""
        fit = getattr(self._engine, "adaptive_threads", None)
        if fit is None:
            return
        choice = fit.choose()
        engine: Any = self._engine
        if (engine.n_threads, engine.n_threads_batch) != (choice.n_threads, choice.n_threads_batch):
            engine.set_threads(choice.n_threads, choice.n_threads_batch)
        log.debug("%s: %s", self.info.name, choice.why)
        p = self.info.placement
        if (p.n_threads, p.n_threads_batch) != (choice.n_threads, choice.n_threads_batch):
            self.info = replace(
                self.info, placement=replace(p, n_threads=choice.n_threads, n_threads_batch=choice.n_threads_batch)
            )

    def _batch_prompt_tokens(self, i: int, prompt: object) -> list[int]:
        text = check_text(prompt, "prompt", f" {i}", hint="; use chat_batch() for conversations")
        if not text:
            raise InvalidOptionError(
                f"prompt {i} is empty (''); give at least one character of text",
                option="prompt",
                value=text,
                allowed="a non-empty str",
            )
        return self._tokenize_prompt(text)

    def _batch_chat_tokens(
        self, i: int, messages: object, opts: SamplingOptions, *, truncate: bool, tools: ToolRequest = NO_TOOLS
    ) -> tuple[list[int], SamplingOptions, int]:
        if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
            raise InvalidOptionTypeError(
                f"conversation {i} must be a list of messages, got {type(messages).__name__} {messages!r:.60}",
                option="conversations",
                value=messages,
                allowed="a list of {'role', 'content'} dicts",
            )
        return self._chat_prompt(messages, opts, truncate=truncate, tools=tools)

    def _batch_check_fits(self, i: int, tokens: list[int], opts: SamplingOptions, *, chat: bool) -> None:
        n_ctx = self._engine.n_ctx  # each sequence's own context
        if len(tokens) >= n_ctx:
            what = "conversation" if chat else "prompt"
            fix = "pass overflow='truncate', shorten it" if chat else "shorten it"
            raise ContextOverflowError(
                f"{what} {i} is {len(tokens)} tokens but each sequence's context is {n_ctx} tokens "
                f"(max_tokens {opts.max_tokens}); {fix}, or load with a larger context (context=N in load(), "
                "--ctx N on the command line)",
                n_prompt=len(tokens),
                n_ctx=n_ctx,
                max_tokens=opts.max_tokens,
            )

    def _batch_locked(
        self,
        failed: list[tuple[int, LocalLLMError, int]],
        items: list[BatchItem],
        index: list[int],
        dropped: dict[int, int],
        stop_event: threading.Event | None,
    ) -> Iterator[tuple[int, Chunk]]:
        from localllm.batching import run_batch
        from localllm.model import _AnyEvent

        load_s = self._engine.load_seconds
        with self._lock:  # held until the stream ends, is closed, or is collected
            if self._closing:
                raise GenerationError("the model was closed while this batch waited for it; load it again")
            self._require_open()
            self._fit_threads()
            cancel = self._running_cancel = threading.Event()
            stop = _AnyEvent(self, cancel, stop_event)  # type: ignore[arg-type]
            finished: set[int] = set()
            try:
                for i, exc, n_prompt in failed:
                    yield i, Chunk("", (), "error", Timings(load_s=load_s, prompt_tokens=n_prompt), error=exc)
                if items:
                    # closed here, under the lock, even when this stream is abandoned: the scheduler
                    # frees every sequence as it ends, so generate's cache on sequence 0 starts clean
                    batch = run_batch(self._engine, items, stop)
                    try:
                        for j, chunk in batch:
                            i = index[j]
                            if chunk.finish_reason is not None:
                                finished.add(i)
                                if i in dropped:
                                    chunk = replace(chunk, dropped_messages=dropped[i])
                            yield i, chunk
                    finally:
                        getattr(batch, "close", lambda: None)()
                # the scheduler ends each item once; one it never started (cancelled first) ends here
                for j, i in enumerate(index):
                    if i not in finished:
                        reason = "cancelled" if stop.is_set() else "error"
                        err = None if stop.is_set() else GenerationError(f"item {i} ended without a finish")
                        n_prompt = len(items[j].prompt_tokens)
                        yield i, Chunk("", (), reason, Timings(load_s=load_s, prompt_tokens=n_prompt), error=err)
            finally:
                self._running_cancel = None
            if not self._load_recorded and items:
                self._load_recorded = True
                self._record_load()


def _batch_item(tokens: list[int], opts: SamplingOptions, stop_tokens: frozenset[int]) -> BatchItem:
    from localllm.batching import BatchItem

    return BatchItem(prompt_tokens=tuple(tokens), options=opts, stop_tokens=stop_tokens)


def _per_item(name: str, value: object) -> bool:
    """Whether an option's value is one per item (a list) rather than one for all."""
    if name not in PER_ITEM_OPTIONS:
        return False
    if name == "stop":  # a list of strings is the stop strings of every item, as generate takes them
        return isinstance(value, list) and any(not isinstance(v, str) for v in value)
    return isinstance(value, (list, tuple))


def item_options(n: int, options: Mapping[str, Any]) -> list[SamplingOptions]:
    """The SamplingOptions of each of n items from batch options (one value, or a list of n).

    Raises:
        InvalidOptionTypeError / InvalidOptionError: an unknown or bad option (for a per-item
            one, the message names the item), a per-item list whose length is not n.
    """
    per = {k: v for k, v in options.items() if _per_item(k, v)}
    base = SamplingOptions.from_kwargs(**{k: v for k, v in options.items() if k not in per})
    for name, values in per.items():
        if len(values) != n:
            raise InvalidOptionError(
                f"{name} has {len(values)} values for {n} items; give one value for all, or exactly one per item",
                option=name,
                value=values,
                allowed=f"one value or a list of {n}",
            )
    if not per:
        return [base] * n
    out = []
    for i in range(n):
        try:
            out.append(SamplingOptions.from_kwargs(base, **{k: v[i] for k, v in per.items()}))
        except (InvalidOptionError, InvalidOptionTypeError) as exc:
            raise type(exc)(f"item {i}: {exc}", option=exc.option, value=exc.value, allowed=exc.allowed) from None
    return out


def _collect(n: int, pairs: Iterator[tuple[int, Chunk]]) -> list[Completion]:
    chunks: list[list[Chunk]] = [[] for _ in range(n)]
    for i, chunk in pairs:
        chunks[i].append(chunk)
    return [join(c) for c in chunks]


def check_parallel(parallel: object) -> int | None:
    """load()'s parallel: None, or a whole number >= 1 (sequences decoded together).

    Raises:
        InvalidOptionTypeError / InvalidOptionError: anything else.
    """
    allowed = "None or an integer >= 1 (sequences decoded together)"
    if parallel is None:
        return None
    if not isinstance(parallel, int) or isinstance(parallel, bool):
        raise InvalidOptionTypeError(
            f"parallel must be {allowed}, got {parallel!r} ({type(parallel).__name__})",
            option="parallel",
            value=parallel,
            allowed=allowed,
        )
    if parallel < 1:
        raise InvalidOptionError(
            f"parallel must be {allowed}, got {parallel}", option="parallel", value=parallel, allowed=allowed
        )
    return parallel


def reopen_for(llm: Model, parallel: int | None, hardware: Hardware | None) -> Model:
    """load("auto", parallel=N): load_auto opened the model for one sequence; open it again for N
    (the file is mapped already, so the second load is quick)."""
    from pathlib import Path

    from localllm.model import _open

    if parallel is None or llm.info.placement.n_seq == parallel:
        return llm
    info, plan = llm.info, llm.plan
    llm.close()
    again = _open(
        Path(info.path), replace(info.placement, n_seq=parallel), name=info.name, plan=plan, hardware=hardware
    )
    again.info = replace(again.info, note=info.note)
    return again
