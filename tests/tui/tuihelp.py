"""Helpers for the TUI tests: wait on conditions with a deadline, never fixed pauses."""

from __future__ import annotations

import asyncio
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
