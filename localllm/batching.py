"""Continuous batching: many prompts decoded together on one engine of several sequences.

`run_batch(engine, items)` keeps up to `engine.n_seq_max` sequences going (see
`localllm.runtimes.base.BatchEngine`). Each step is one `eval_batch` call holding every
going sequence's next token and a prompt chunk of each sequence still reading its prompt;
a finished item frees its sequence and the next waiting one joins at the next step. Each
sequence is a `localllm.generation.SequenceState`, the per-sequence half of
`generation.run`, and prompt chunks have run's edges, so at temperature 0 an item streams
what `run` streams for it alone.

numpy is imported by the engine, never here: `import localllm` stays light.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localllm.errors import ContextOverflowError, GenerationError, InvalidOptionError, LocalLLMError
from localllm.generation import (
    Chunk,
    SamplingOptions,
    SequenceState,
    Timings,
    check_prompt,
    chunk_end,
    common_prefix,
    last_edge,
    prompt_chunk,
    run,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["AnyEvent", "BatchFeed", "BatchItem", "QueueFullError", "run_batch", "run_live"]


@dataclass(frozen=True)
class BatchItem:
    """One prompt of a batch: its tokens, its sampling options, extra end-of-turn tokens."""

    prompt_tokens: tuple[int, ...]
    options: SamplingOptions
    stop_tokens: frozenset[int] = frozenset()


class _Slot:
    """A sequence of the engine and the item it is working on."""

    def __init__(self, index: int, seq: int, prompt: list[int], state: SequenceState) -> None:
        self.index, self.seq, self.prompt, self.state = index, seq, prompt, state
        self.n_done = 0  # prompt tokens in the sequence's cache
        self.follow: tuple[_Slot, int] | None = None  # (leader, n): copy its first n tokens once it holds them
        self.end = 0  # where the prompt chunk in the current step ends


def run_batch(
    engine: Any,
    items: Sequence[BatchItem],
    stop_event: threading.Event | None = None,
    *,
    parallel: int | None = None,
) -> Iterator[tuple[int, Chunk]]:
    """Generate for every item, many at once; yields (item index, Chunk) as sequences progress.

    At most `parallel` (default and cap: `engine.n_seq_max`) sequences go at a time, started in
    input order. Each item's chunks end with one carrying finish_reason ("stop" | "length" |
    "eos" | "cancelled" | "error") and its Timings (timed from when it started). An item whose
    prompt is empty or leaves no room in n_ctx, or whose sequence the engine failed, ends alone
    with one "error" chunk whose `error` says why; the others go on. A prompt sharing at least a
    prompt chunk with a sequence that holds (or is reading) it has that prefix copied, not
    evaluated again. `stop_event` set: every item still going or waiting ends "cancelled".
    The engine's sequences are all freed at the end (a later `run` on sequence 0 starts clean).

    Raises:
        InvalidOptionError: parallel is below 1.
    """
    if parallel is not None and parallel < 1:
        raise InvalidOptionError(
            f"parallel must be an integer >= 1 or None (the engine's {getattr(engine, 'n_seq_max', 1)} sequences), "
            f"got {parallel!r}",
            option="parallel",
            value=parallel,
            allowed="an integer >= 1 or None",
        )
    if not hasattr(engine, "eval_batch"):  # a single-sequence engine: one item after another
        yield from _one_by_one(engine, items, stop_event)
        return
    n_slots = min(parallel or engine.n_seq_max, engine.n_seq_max)
    engine.reset_batch()
    try:
        yield from _Scheduler(engine, items, stop_event, n_slots).run()
    finally:
        engine.reset_batch()


class QueueFullError(GenerationError):
    """A BatchFeed already holds its limit of waiting items: try again later (a server's 429/503)."""

    def __init__(self, message: str, *, waiting: int, limit: int) -> None:
        super().__init__(message)
        self.waiting = waiting
        self.limit = limit


class BatchFeed:
    """Items that arrive while a batch runs (a server's requests), for `run_live`.

    `submit(item, cancel)` from any thread returns the item's id, the index its chunks carry;
    setting `cancel` ends that item alone ("cancelled"), waiting or going. At most `max_waiting`
    items wait for a sequence; one more raises QueueFullError. `close()` refuses new items; those
    already submitted still run to their end, and then `run_live` returns (its stop event set
    instead ends them all "cancelled").
    """

    def __init__(self, max_waiting: int = 64) -> None:
        if max_waiting < 1:
            raise InvalidOptionError(
                f"max_waiting must be >= 1, got {max_waiting!r}",
                option="max_waiting",
                value=max_waiting,
                allowed="an integer >= 1",
            )
        self.max_waiting = max_waiting
        self._cv = threading.Condition()
        self._new: deque[tuple[int, BatchItem, threading.Event | None]] = deque()
        self._ids = itertools.count()
        self._closed = False

    @property
    def waiting(self) -> int:
        """Items submitted and not yet taken by the scheduler."""
        with self._cv:
            return len(self._new)

    @property
    def closed(self) -> bool:
        return self._closed

    def submit(self, item: BatchItem, cancel: threading.Event | None = None) -> int:
        """Queue one item; its id. Raises QueueFullError (full) or GenerationError (closed)."""
        with self._cv:
            if self._closed:
                raise GenerationError("this model is shutting down and takes no new requests; send it again")
            if len(self._new) >= self.max_waiting:
                raise QueueFullError(
                    f"{len(self._new)} requests already wait for this model (the limit is {self.max_waiting}); "
                    "retry shortly, or start the server with a larger --queue",
                    waiting=len(self._new),
                    limit=self.max_waiting,
                )
            index = next(self._ids)
            self._new.append((index, item, cancel))
            self._cv.notify_all()
            return index

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def wake(self) -> None:
        """Wake a scheduler waiting for items (an item's cancel event was set)."""
        with self._cv:
            self._cv.notify_all()

    def _take(self, limit: int, wait_s: float) -> list[tuple[int, BatchItem, threading.Event | None]]:
        with self._cv:
            if not self._new and wait_s > 0 and not self._closed:
                self._cv.wait(wait_s)
            taken: list[tuple[int, BatchItem, threading.Event | None]] = []
            while self._new and len(taken) < limit:
                taken.append(self._new.popleft())
            return taken

    def _drain(self) -> list[tuple[int, BatchItem, threading.Event | None]]:
        with self._cv:
            taken = list(self._new)
            self._new.clear()
            return taken


# How long an idle run_live waits for a new item before it looks at its stop event again.
IDLE_WAIT_S = 0.25


def run_live(engine: Any, feed: BatchFeed, stop_event: threading.Event | None = None) -> Iterator[tuple[int, Chunk]]:
    """`run_batch` over items that keep arriving: yields (item id, Chunk) until `feed` is closed and
    every item taken has finished, or `stop_event` is set (every item then ends "cancelled").

    A new item joins at the next step, as a waiting one does in run_batch, so requests that
    arrive while others decode share their steps (continuous batching). An item whose cancel
    event is set ends alone. The engine's sequences are freed at the end.
    """
    if not hasattr(engine, "eval_batch"):  # a single-sequence engine: one item after another
        yield from _live_one_by_one(engine, feed, stop_event)
        return
    engine.reset_batch()
    try:
        yield from _LiveScheduler(engine, feed, stop_event, engine.n_seq_max).run()
    finally:
        engine.reset_batch()


def _live_one_by_one(engine: Any, feed: BatchFeed, stop_event: threading.Event | None) -> Iterator[tuple[int, Chunk]]:
    while not (feed.closed and feed.waiting == 0):
        if stop_event is not None and stop_event.is_set():
            break
        for index, item, cancel in feed._take(1, IDLE_WAIT_S):
            yield from _alone(engine, index, item, AnyEvent(stop_event, cancel))
    for index, _, _ in feed._drain():
        yield index, _cancelled_chunk(engine)


class AnyEvent(threading.Event):
    """Set when it is set itself or any of the given events is: an Event, as generation.run takes,
    which only asks is_set()."""

    def __init__(self, *events: threading.Event | None) -> None:
        super().__init__()
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return super().is_set() or any(e.is_set() for e in self._events)


def _cancelled_chunk(engine: Any) -> Chunk:
    """The one chunk of an item that never started."""
    return Chunk("", (), "cancelled", Timings(load_s=engine.load_seconds))


def _error_chunk(engine: Any, error: Exception, n_prompt: int) -> Chunk:
    return Chunk("", (), "error", Timings(load_s=engine.load_seconds, prompt_tokens=n_prompt), error=error)


def _one_by_one(
    engine: Any, items: Sequence[BatchItem], stop_event: threading.Event | None
) -> Iterator[tuple[int, Chunk]]:
    for index, item in enumerate(items):
        yield from _alone(engine, index, item, stop_event)


def _alone(engine: Any, index: int, item: BatchItem, stop: threading.Event | None) -> Iterator[tuple[int, Chunk]]:
    """One item through run(), on an engine of one sequence; a failure ends it alone."""
    if stop is not None and stop.is_set():
        yield index, _cancelled_chunk(engine)
        return
    try:
        for chunk in run(engine, item.prompt_tokens, item.options, stop, stop_tokens=item.stop_tokens):
            yield index, chunk
    except LocalLLMError as exc:
        yield index, _error_chunk(engine, exc, len(item.prompt_tokens))


class _Scheduler:
    def __init__(self, engine: Any, items: Sequence[BatchItem], stop: threading.Event | None, n_slots: int) -> None:
        self.engine, self.items, self.stop = engine, items, stop
        self.chunk = prompt_chunk(engine)
        self.waiting = deque(range(len(items)))
        self.free = list(range(n_slots))
        self.active: list[_Slot] = []

    def run(self) -> Iterator[tuple[int, Chunk]]:
        while self.waiting or self.active:
            if self.stop is not None and self.stop.is_set():
                yield from self._cancel_all()
                return
            yield from self._admit()
            yield from self._step()

    def _step(self) -> Iterator[tuple[int, Chunk]]:
        """One eval_batch of every going sequence (nothing when none is going)."""
        if not self.active:
            return
        calls = self._plan_step()
        if not calls:  # followers only, their leaders gone: they read their prompts themselves
            for slot in self.active:
                slot.follow = None
            return
        try:
            logits = self.engine.eval_batch([(s.seq, tokens) for s, tokens in calls])
        except (ContextOverflowError, GenerationError) as exc:
            for slot, _ in calls:  # the engine put their sequences back; they fail, the rest go on
                yield slot.index, slot.state.failed(exc)
                self._release(slot)
            return
        for (slot, _), row in zip(calls, logits, strict=True):
            yield from self._advance(slot, row)

    def _admit(self) -> Iterator[tuple[int, Chunk]]:
        while self.waiting and self.free:
            index = self.waiting.popleft()
            item = self.items[index]
            prompt = list(item.prompt_tokens)
            try:
                check_prompt(prompt, self.engine.n_ctx, item.options)
            except LocalLLMError as exc:
                yield index, _error_chunk(self.engine, exc, len(prompt))
                continue
            try:  # a grammar that cannot start fails its item alone
                state = SequenceState(self.engine, prompt, item.options, stop_tokens=item.stop_tokens)
            except LocalLLMError as exc:
                yield index, _error_chunk(self.engine, exc, len(prompt))
                continue
            slot = _Slot(index, self.free.pop(0), prompt, state)
            self._share_prefix(slot)
            self.active.append(slot)

    def _share_prefix(self, slot: _Slot) -> None:
        """Copy the longest shared prefix another sequence holds (whole prompt chunks, so the rest is
        cut where run() cuts it); or follow one that is still reading it."""
        limit = last_edge(len(slot.prompt), self.chunk)  # where its own last chunk starts: a token is left
        best: tuple[int, _Slot] | None = None
        for other in self.active:
            if other.follow is not None:
                continue
            # the other's cache holds whole chunks below the start of its own last chunk
            cap = min(limit, last_edge(len(other.prompt), self.chunk))
            will = min(common_prefix(other.prompt, slot.prompt), cap) // self.chunk * self.chunk
            held = common_prefix(self.engine.seq_tokens(other.seq), slot.prompt)
            n = max(will, min(held, cap) // self.chunk * self.chunk)
            if n >= self.chunk and (best is None or n > best[0]):
                best = (n, other)
        if best is None:
            return
        n, leader = best
        if list(self.engine.seq_tokens(leader.seq)[:n]) == slot.prompt[:n]:  # it holds them now
            self._copy(leader, slot, n)
        else:
            slot.follow = (leader, n)

    def _copy(self, leader: _Slot, slot: _Slot, n: int) -> None:
        self.engine.seq_copy(leader.seq, slot.seq, n)
        slot.n_done = slot.state.n_keep = slot.state.n_done = n
        slot.follow = None

    def _plan_step(self) -> list[tuple[_Slot, list[int]]]:
        calls: list[tuple[_Slot, list[int]]] = []
        for slot in self.active:
            if slot.follow is not None:
                leader, n = slot.follow
                if leader not in self.active:
                    slot.follow = None  # its leader ended first: read the prompt from the start
                elif leader.n_done >= n:
                    self._copy(leader, slot, n)
                else:
                    continue
            if slot.n_done < len(slot.prompt):
                slot.end = chunk_end(slot.n_done, len(slot.prompt), self.chunk)
                calls.append((slot, slot.prompt[slot.n_done : slot.end]))
            else:
                calls.append((slot, [slot.state.next_token]))
        return calls

    def _advance(self, slot: _Slot, logits: np.ndarray) -> Iterator[tuple[int, Chunk]]:
        state = slot.state
        if slot.n_done < len(slot.prompt):
            slot.n_done = state.n_done = slot.end
            if slot.n_done < len(slot.prompt):
                return
            state.prompt_read(slot.n_done)
        try:
            chunks = state.step(logits, self.stop)
        except GenerationError as exc:  # its grammar failed (localllm.constraints): it ends, the rest go on
            chunks = [state.failed(exc)]
        for chunk in chunks:
            yield slot.index, chunk
        if state.done:
            self._release(slot)

    def _release(self, slot: _Slot) -> None:
        self.active.remove(slot)
        self.engine.seq_keep(slot.seq, 0)
        self.free.append(slot.seq)
        self.free.sort()

    def _cancel_all(self) -> Iterator[tuple[int, Chunk]]:
        for slot in sorted(self.active, key=lambda s: s.index):
            yield from self._cancelled(slot)
        self.active.clear()
        for index in self.waiting:
            yield index, _cancelled_chunk(self.engine)
        self.waiting.clear()

    def _cancelled(self, slot: _Slot) -> Iterator[tuple[int, Chunk]]:
        """The last chunks of a slot stopped now (what its stop strings held back is released)."""
        if slot.n_done < len(slot.prompt):
            yield slot.index, slot.state.cancelled_in_prompt(slot.n_done)
        else:
            for chunk in slot.state.end("cancelled"):
                yield slot.index, chunk


class _LiveScheduler(_Scheduler):
    """The scheduler fed by a BatchFeed: items join between steps, and each may be cancelled alone."""

    def __init__(self, engine: Any, feed: BatchFeed, stop: threading.Event | None, n_slots: int) -> None:
        self.feed = feed
        self.live: dict[int, BatchItem] = {}
        self.cancels: dict[int, threading.Event] = {}
        super().__init__(engine, self.live, stop, n_slots)  # type: ignore[arg-type]  # a dict by id

    def run(self) -> Iterator[tuple[int, Chunk]]:
        while True:
            if self.stop is not None and self.stop.is_set():
                yield from self._cancel_all()
                for index, _, _ in self.feed._drain():
                    yield index, _cancelled_chunk(self.engine)
                return
            room = len(self.free) - len(self.waiting)
            idle = not self.active and not self.waiting
            if idle and self.feed.closed and self.feed.waiting == 0:
                return
            for index, item, cancel in self.feed._take(room, IDLE_WAIT_S if idle else 0.0):
                self.live[index] = item
                if cancel is not None:
                    self.cancels[index] = cancel
                self.waiting.append(index)
            yield from self._drop_cancelled()
            yield from self._admit()
            yield from self._step()

    def _drop_cancelled(self) -> Iterator[tuple[int, Chunk]]:
        for slot in [s for s in self.active if self._is_cancelled(s.index)]:
            yield from self._cancelled(slot)
            self._release(slot)
        for index in [i for i in self.waiting if self._is_cancelled(i)]:
            self.waiting.remove(index)
            self._forget(index)
            yield index, _cancelled_chunk(self.engine)

    def _is_cancelled(self, index: int) -> bool:
        cancel = self.cancels.get(index)
        return cancel is not None and cancel.is_set()

    def _admit(self) -> Iterator[tuple[int, Chunk]]:
        for index, chunk in super()._admit():  # an item refused before it starts ends here
            self._forget(index)
            yield index, chunk

    def _release(self, slot: _Slot) -> None:
        super()._release(slot)
        self._forget(slot.index)

    def _forget(self, index: int) -> None:
        self.live.pop(index, None)
        self.cancels.pop(index, None)
