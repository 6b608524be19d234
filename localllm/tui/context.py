"""What the chat screen may use of the app, typed: ChatContext and the ModelSlot in it. No Textual here.

The app builds one ChatContext and hands it to the chat screen's constructor; the screen
reads the store, the defaults of new chats and the model through it, never through
attributes of the app.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localllm.tui.store import History

if TYPE_CHECKING:  # pragma: no cover
    from localllm.model import Model

__all__ = ["ChatContext", "ModelSlot"]


@dataclass
class ModelSlot:
    """The model in use and what is being loaded. The app writes it; the chat screen reads it."""

    model: Model | None = None  # None until the first load finishes
    loading: str = ""  # what is being loaded now, "" when idle


@dataclass(frozen=True)
class ChatContext:
    """Everything the chat screen needs from the app."""

    history: History
    models: ModelSlot
    system_prompt: str = ""  # of new chats
    sampling: Mapping[str, Any] = field(default_factory=dict)  # SamplingOptions fields of new chats
    hide_timings: bool = False  # no timings or thread counts on screen (stable screenshots)
    pace_gc: bool = True  # hold full garbage collections while a reply streams (localllm.tui.collector)
