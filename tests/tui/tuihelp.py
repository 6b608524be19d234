"""Helpers for the TUI tests: wait on conditions with a deadline, never fixed pauses."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

# Greedy and bounded: the tiny random model writes the same reply every time, quickly.
GREEDY = {"temperature": 0, "max_tokens": 48}
# Greedy and unbounded: prompted with "hello", the tiny model (seed 1) loops without EOS
# until the context is full (2-18 s, by machine and what the UI costs), so a reply runs until stopped.
ENDLESS = {"temperature": 0, "max_tokens": None}


async def wait_for(pilot, condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition"):
    """Poll `condition` while the app runs. A plain sleep, not `pilot.pause`: pause also waits
    for the app to go idle, which it never does while a reply streams, so a fast model's whole
    reply would pass before the first poll."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def wait_ready(pilot, timeout: float = 60.0):
    app = pilot.app
    await wait_for(
        pilot,
        lambda: app.model is not None and not app.loading and type(app.screen).__name__ == "ChatScreen",
        timeout=timeout,
        what="the model to load",
    )


async def send(pilot, text: str, *, finish: bool = True, timeout: float = 60.0):
    """Type a prompt, press Enter; with finish, wait until the reply is stored."""
    app = pilot.app
    screen = app.chat_screen
    before = _stored_replies(app)
    await pilot.press(*_keys(text))
    post_key(pilot, "enter")  # not pilot.press: it then waits up to 2 s for an idle app while the reply streams
    await wait_for(
        pilot, lambda: screen.generating or _stored_replies(app) > before, timeout=10, what="generation to start"
    )
    if finish:
        await wait_for(
            pilot,
            lambda: not screen.generating and _stored_replies(app) > before,
            timeout=timeout,
            what="the reply to finish",
        )


def post_key(pilot, key: str) -> None:
    """Send one key to the app the way `pilot.press` does, without waiting for the app to go idle."""
    from textual import events

    event = events.Key(key, None)
    event.set_sender(pilot.app)
    pilot.app._driver.send_message(event)


def _stored_replies(app) -> int:
    h = app.history
    return sum(1 for c in h.chats() for m in h.messages(c.id) if m.role == "assistant")


def _keys(text: str) -> list[str]:
    names = {" ": "space", "?": "question_mark", "!": "exclamation_mark", ".": "full_stop", ",": "comma"}
    return [names.get(ch, ch) for ch in text]


class FakeModel:
    """A stand-in for localllm.Model with the chat API the chat screen uses, for UI tests.

    A word is a token. chat_stream reads the prompt in chunks of `prompt_chunk` tokens, calling
    on_prompt_progress(done, total) after each (waiting `chunk_delay` s between them, or until
    `prompt_gate` is set), then writes the next of `replies` (text, finish_reason) word by word,
    waiting for `reply_gate` after the first word when one is given. `error` is raised instead
    of any of it. Every conversation it was sent is in `.sent`.
    """

    def __init__(
        self,
        *,
        name: str = "fake",
        n_ctx: int = 4096,
        replies: list[tuple[str, str]] | None = None,
        prompt_chunk: int = 1_000_000,
        chunk_delay: float = 0.0,
        prompt_gate: threading.Event | None = None,
        reply_gate: threading.Event | None = None,
        error: Exception | None = None,
    ) -> None:
        from localllm import ModelInfo, Placement

        self.info = ModelInfo(
            name=name,
            path=f"{name}.gguf",
            runtime="llama.cpp",
            placement=Placement(n_ctx=n_ctx),
            n_ctx=n_ctx,
            template_source="gguf",
        )
        self.replies = list(replies or [])
        self.prompt_chunk, self.chunk_delay = prompt_chunk, chunk_delay
        self.prompt_gate, self.reply_gate = prompt_gate, reply_gate
        self.error = error
        self.sent: list[list[dict[str, str]]] = []
        self.closed = False
        self._cancel = threading.Event()

    def count_tokens(self, messages) -> int:
        if isinstance(messages, str):
            return len(messages.split())
        return sum(2 + len(m["content"].split()) for m in messages)

    def fit_chat(self, messages, **options) -> tuple[int, int]:
        """Model.fit_chat's contract with the fake's word count: whole turns go from the front
        (localllm's own split_turns) until a reply of max_tokens (at most a quarter) has room."""
        from localllm import SamplingOptions
        from localllm.chat_template import split_turns

        max_tokens = SamplingOptions.from_kwargs(**options).max_tokens
        room = min(self.info.n_ctx // 4, max_tokens) if max_tokens is not None else self.info.n_ctx // 4
        head, turns, tail = split_turns(messages)
        for n_drop in range(len(turns) + 1):
            kept = [*head, *(m for turn in turns[n_drop:] for m in turn), *tail]
            if self.count_tokens(kept) + room <= self.info.n_ctx or n_drop == len(turns):
                return self.count_tokens(kept), len(messages) - len(kept)
        raise AssertionError("unreachable")

    def chat_stream(self, messages, *, overflow="error", stop_event=None, on_prompt_progress=None, **options):
        from localllm import SamplingOptions

        SamplingOptions.from_kwargs(**options)
        self.sent.append([dict(m) for m in messages])
        if self.error is not None:
            raise self.error
        return self._stream(messages, stop_event or threading.Event(), on_prompt_progress)

    def _stopped(self, stop: threading.Event) -> bool:
        return stop.is_set() or self._cancel.is_set()

    def _wait(self, stop: threading.Event, gate: threading.Event | None, delay: float) -> None:
        deadline = time.monotonic() + delay
        while not self._stopped(stop) and (gate is not None and not gate.is_set() or time.monotonic() < deadline):
            time.sleep(0.005)

    def _stream(self, messages, stop, on_prompt_progress):
        from localllm import Chunk, Timings

        total = self.count_tokens(messages)
        done = 0
        while done < total:
            if self._stopped(stop):  # the interface: cancelled during the prompt, no text
                yield Chunk("", finish_reason="cancelled", timings=Timings(prompt_tokens=total))
                return
            done = min(total, done + self.prompt_chunk)
            if on_prompt_progress is not None:
                on_prompt_progress(done, total)
            self._wait(stop, self.prompt_gate, self.chunk_delay)
        text, finish = self.replies.pop(0) if self.replies else ("fake reply", "eos")
        words = text.split(" ")
        for i, word in enumerate(words):
            if self._stopped(stop):
                yield Chunk("", finish_reason="cancelled", timings=Timings(prompt_tokens=total, decode_tokens=i))
                return
            yield Chunk(word + (" " if i < len(words) - 1 else ""), token_ids=(i,))
            if i == 0 and self.reply_gate is not None:
                self._wait(stop, self.reply_gate, 0)
        yield Chunk(
            "",
            finish_reason=finish,
            timings=Timings(prompt_tokens=total, decode_tokens=len(words), ttft_s=0.01, decode_tps=123.0),
        )

    def cancel(self) -> None:
        self._cancel.set()

    def close(self) -> None:
        self.closed = True
        self._cancel.set()


def fake_loader(*models: FakeModel):
    """A ChatApp loader that hands out `models` in turn (the first at start-up, the next on a switch)."""
    queue = list(models)

    def load(target, *, context=None, progress=None):
        return queue.pop(0)

    return load
