"""A reply being written: the generation worker's body, its messages, and what the chat says about replies.

The worker body (`stream_reply`) runs in a thread and only posts messages; the chat screen
(screens/chat.py) turns them into widgets. The helpers here take values and return text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from textual.message import Message

import localllm

__all__ = [
    "CONTINUE_PROMPT",
    "FLUSH_INTERVAL_S",
    "PROGRESS_INTERVAL_S",
    "ContextCount",
    "PromptProgress",
    "ReplyDelta",
    "ReplyDone",
    "continue_joiner",
    "error_text",
    "reading_label",
    "reply_label",
    "reply_meta",
    "stream_reply",
]

# Text reaches the UI in messages about 30 times a second, whatever the token rate: few enough
# that handling them costs nothing (the screen only queues their text; how often it draws it
# is localllm.tui.widgets.message.ReplyStream's pacing).
FLUSH_INTERVAL_S = 1 / 30
# "reading the prompt" progress: 10 updates a second read as live; the engine may call back
# after every small chunk, far more often than the screen needs.
PROGRESS_INTERVAL_S = 1 / 10
# "continue" sends the conversation with this as a last user turn, never stored. A user turn
# rather than the partial reply as an open assistant turn: chat_stream renders every assistant
# turn closed (the template's end-of-turn after it), so the model would start a new reply
# either way; a user turn says what is wanted, works with every template, and keeps
# overflow="truncate" dropping whole old turns as usual.
CONTINUE_PROMPT = "Continue your last reply exactly where it stopped, without repeating any of it."


@dataclass
class ReplyDelta(Message):
    """New reply text from the generation worker."""

    gen_id: int
    text: str


@dataclass
class ReplyDone(Message):
    """The generation worker finished: how, with what timings, or with which error."""

    gen_id: int
    finish_reason: str
    timings: localllm.Timings | None = None
    error: str = ""
    tokens: int = 0  # tokens of the reply text
    dropped: int = 0  # oldest messages left out of the prompt to fit the context window


@dataclass
class PromptProgress(Message):
    """The engine has read `done` of the prompt's `total` tokens (before the first reply token)."""

    gen_id: int
    done: int
    total: int


@dataclass
class ContextCount(Message):
    """Tokens the current conversation takes in the context window, after truncation."""

    chat_id: int | None
    tokens: int
    dropped: int = 0  # oldest messages that would be left out to fit


def stream_reply(
    model: localllm.Model,
    messages: list[dict[str, str]],
    options: dict[str, Any],
    *,
    gen_id: int,
    stop: threading.Event,
    post: Callable[[Message], Any],
    is_cancelled: Callable[[], bool],
) -> None:
    """Generate a chat reply, posting ReplyDelta batches, PromptProgress and one ReplyDone. Never raises."""
    parts: list[str] = []
    last_flush = time.monotonic()
    last_progress = 0.0
    finish, timings, error, tokens, dropped = "cancelled", None, "", 0, 0

    def on_prompt_progress(done: int, total: int) -> None:  # called from this thread, between chunks
        nonlocal last_progress
        now = time.monotonic()
        if now - last_progress >= PROGRESS_INTERVAL_S or done >= total:
            last_progress = now
            post(PromptProgress(gen_id, done, total))

    try:
        # a chat longer than the window loses its oldest turns rather than failing
        for chunk in _chat_stream(model, messages, stop, on_prompt_progress, options):
            tokens += len(chunk.token_ids)
            if chunk.text:
                parts.append(chunk.text)
            if chunk.finish_reason is not None:
                finish, timings, dropped = chunk.finish_reason, chunk.timings, chunk.dropped_messages
            if is_cancelled():
                stop.set()  # the loop ends with a "cancelled" chunk carrying timings
            now = time.monotonic()
            if parts and now - last_flush >= FLUSH_INTERVAL_S:
                post(ReplyDelta(gen_id, "".join(parts)))
                parts.clear()
                last_flush = now
    except localllm.LocalLLMError as exc:
        error = error_text(exc)
    except Exception as exc:  # shown in the chat, never a traceback over the screen
        error = f"{type(exc).__name__}: {exc}"
    if parts:
        post(ReplyDelta(gen_id, "".join(parts)))
    post(ReplyDone(gen_id, finish, timings, error, tokens, dropped))


def _chat_stream(
    model: localllm.Model,
    messages: list[dict[str, str]],
    stop: threading.Event,
    on_prompt_progress: Callable[[int, int], None],
    options: dict[str, Any],
) -> Any:
    return model.chat_stream(
        messages, overflow="truncate", stop_event=stop, on_prompt_progress=on_prompt_progress, **options
    )


def error_text(exc: BaseException) -> str:
    """A generation error as the chat shows it: the TUI's keys and flags, not the Python API."""
    if isinstance(exc, localllm.ContextOverflowError) and exc.n_ctx:
        prompt = f"{exc.n_prompt:,} tokens" if exc.n_prompt else "too long"
        return (
            f"This message does not fit: the prompt is {prompt} but the model's context window is "
            f"{exc.n_ctx:,} tokens, even after leaving out the earlier messages. Shorten the message "
            "(it is back in the prompt), or restart with a larger context: `localllm chat --ctx N`."
        )
    return str(exc)


def reply_meta(done: ReplyDone, model_name: str, extends: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What is stored with a reply; `extends`: the meta of the cut reply a continuation is stored with."""
    meta: dict[str, Any] = {"finish_reason": done.finish_reason, "model": model_name}
    tokens = done.tokens
    if extends is not None:
        meta["continued"] = int(extends.get("continued", 0) or 0) + 1
        tokens += int(extends.get("tokens", 0) or 0)
    if done.timings is not None:
        meta.update(ttft_s=round(done.timings.ttft_s, 4), decode_tps=round(done.timings.decode_tps, 2), tokens=tokens)
    if done.dropped:
        meta["dropped_messages"] = done.dropped
    if done.error:
        meta["error"] = done.error
    return meta


def reply_label(finish_reason: str | None, *, continued: bool = False) -> str:
    """The note under a reply that did not end by itself; "" for a complete one."""
    if finish_reason == "length":
        return "cut at the length limit · ctrl+e continues"
    if finish_reason == "cancelled":
        return "stopped"
    return "continued" if continued else ""


def reading_label(done: int, total: int) -> str:
    """Progress while the engine reads the prompt, before the reply's first word."""
    return f"reading the prompt: {done:,} / {total:,} tokens (esc stops)"


def continue_joiner(before: str, after: str) -> str:
    """What goes between a reply cut at the length limit and its continuation."""
    if not before or not after or before[-1].isspace() or after[0].isspace() or after[0] in ".,;:!?)]}":
        return ""
    return " "
