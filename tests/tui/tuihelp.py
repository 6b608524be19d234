"""Helpers for the TUI tests: wait on conditions with a deadline, never fixed pauses."""

from __future__ import annotations

import time
from typing import Callable

# Greedy and bounded: the tiny random model writes the same reply every time, quickly.
GREEDY = {"temperature": 0, "max_tokens": 48}
# Greedy and unbounded: prompted with "hello", the tiny model (seed 1) loops without EOS
# until the context is full (about 18 s here), so a reply runs until stopped.
ENDLESS = {"temperature": 0, "max_tokens": None}


async def wait_for(pilot, condition: Callable[[], bool], *, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.02)


async def wait_ready(pilot, timeout: float = 60.0):
    app = pilot.app
    await wait_for(pilot, lambda: app.model is not None and not app.loading and
                   type(app.screen).__name__ == "ChatScreen", timeout=timeout, what="the model to load")


async def send(pilot, text: str, *, finish: bool = True, timeout: float = 60.0):
    """Type a prompt, press Enter; with finish, wait until the reply is stored."""
    app = pilot.app
    screen = app.chat_screen
    before = _stored_replies(app)
    await pilot.press(*_keys(text), "enter")
    await wait_for(pilot, lambda: screen.generating or _stored_replies(app) > before, timeout=10,
                   what="generation to start")
    if finish:
        await wait_for(pilot, lambda: not screen.generating and _stored_replies(app) > before,
                       timeout=timeout, what="the reply to finish")


def _stored_replies(app) -> int:
    h = app.history
    return sum(1 for c in h.chats() for m in h.messages(c.id) if m.role == "assistant")


def _keys(text: str) -> list[str]:
    names = {" ": "space", "?": "question_mark", "!": "exclamation_mark", ".": "full_stop", ",": "comma"}
    return [names.get(ch, ch) for ch in text]
