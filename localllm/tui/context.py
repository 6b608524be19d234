"""What the chat screen may use of the app, typed: ChatContext and the ModelSlot in it. No Textual here.

The app builds one ChatContext and hands it to the chat screen's constructor; the screen
reads the store, the defaults of new chats and the model through it, never through
attributes of the app.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localllm.tui.store import History

if TYPE_CHECKING:  # pragma: no cover
    from localllm.model import Model

__all__ = ["TYPING_S", "ChatContext", "InputClock", "ModelSlot"]

# The user counts as typing until this long after their last key: a streaming reply is then
# drawn only just after a key (widgets.message.ReplyStream), so the keys' frames come first.
TYPING_S = 0.5


@dataclass
class ModelSlot:
    """The model in use and what is being loaded. The app writes it; the chat screen reads it."""

    model: Model | None = None  # None until the first load finishes
    loading: str = ""  # what is being loaded now, "" when idle


class InputClock:
    """When the user last pressed a key or pasted. The app calls `pressed`; screens read it."""

    def __init__(self) -> None:
        self.last_input_at = float("-inf")  # time.monotonic()
        self._waiters: list[Callable[[], object]] = []

    def pressed(self) -> None:
        """A key or a paste came from the terminal (on the UI thread)."""
        self.last_input_at = time.monotonic()
        waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    def typing(self) -> bool:
        """The user is typing: a key or a paste came within the last TYPING_S seconds."""
        return time.monotonic() - self.last_input_at < TYPING_S

    def on_next_key(self, wake: Callable[[], object]) -> None:
        """Call `wake()` (on the UI thread) at the next key or paste."""
        self._waiters.append(wake)


@dataclass(frozen=True)
class ChatContext:
    """Everything the chat screen needs from the app."""

    history: History
    models: ModelSlot
    system_prompt: str = ""  # of new chats
    sampling: Mapping[str, Any] = field(default_factory=dict)  # SamplingOptions fields of new chats
    hide_timings: bool = False  # no timings or thread counts on screen (stable screenshots)
    pace_gc: bool = True  # hold full garbage collections while a reply streams (localllm.tui.collector)
    input: InputClock = field(default_factory=InputClock)  # the user's last key
