"""Widgets of the chat screen: messages, the prompt, the status line, the chat list."""

from __future__ import annotations

import re
from dataclasses import dataclass

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Label, ListItem, ListView, Markdown, Static, TextArea

__all__ = ["ChatList", "ChatListItem", "MessageView", "PromptArea", "StatusLine", "code_blocks"]

_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks in a Markdown text, in order."""
    return [m.group(2).rstrip("\n") for m in _FENCE.finditer(markdown)]


class MessageView(Markdown):
    """One message of the conversation, rendered as Markdown (streamed for replies)."""

    DEFAULT_CSS = """
    MessageView { margin: 0 1 1 1; padding: 0 1; }
    MessageView.user { background: $boost; border-left: thick $accent; }
    MessageView.assistant { border-left: thick $success; }
    MessageView.info { color: $text-muted; border-left: thick $panel; }
    MessageView.error { color: $error; border-left: thick $error; }
    MessageView.cancelled { border-left: thick $warning; }
    """

    def __init__(self, text: str, role: str, *, message_id: int | None = None) -> None:
        super().__init__(text, classes=role)
        self.role = role
        self.text = text
        self.message_id = message_id


class PromptArea(TextArea):
    """The prompt: Enter sends, shift+enter / ctrl+j insert a newline, up/down at the edges walk history."""

    BINDINGS = [
        Binding("enter", "submit", "Send", id="prompt.send", priority=True),
        Binding("shift+enter,ctrl+j", "newline", "Newline", id="prompt.newline", priority=True, show=False),
    ]

    @dataclass
    class Submitted(Message):
        prompt: PromptArea
        text: str

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            compact=True,
            placeholder="Type a message. Enter sends, shift+enter or ctrl+j for a newline.",
        )
        self.prompt_history: list[str] = []  # earlier prompts, oldest first
        self._history_pos: int | None = None  # index into history while walking it
        self._draft = ""

    def action_submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        self.post_message(self.Submitted(self, text))

    def action_newline(self) -> None:
        start, end = self.selection
        self._replace_via_keyboard("\n", start, end)

    def remember(self, text: str) -> None:
        if not self.prompt_history or self.prompt_history[-1] != text:
            self.prompt_history.append(text)
        self._history_pos = None

    def action_cursor_up(self, select: bool = False) -> None:
        if not select and self.cursor_location[0] == 0 and self.prompt_history:
            if self._history_pos is None:
                self._draft = self.text
                self._history_pos = len(self.prompt_history)
            if self._history_pos > 0:
                self._history_pos -= 1
                self._show(self.prompt_history[self._history_pos])
            return
        super().action_cursor_up(select)

    def action_cursor_down(self, select: bool = False) -> None:
        last_row = self.document.line_count - 1
        if not select and self._history_pos is not None and self.cursor_location[0] == last_row:
            self._history_pos += 1
            if self._history_pos >= len(self.prompt_history):
                self._history_pos = None
                self._show(self._draft)
            else:
                self._show(self.prompt_history[self._history_pos])
            return
        super().action_cursor_down(select)

    def _show(self, text: str) -> None:
        self.load_text(text)
        self.move_cursor(self.document.end)


class StatusLine(Static):
    """model · runtime · placement · context used/limit · TTFT · tokens/s."""

    DEFAULT_CSS = """
    StatusLine { height: 1; background: $panel; color: $text; padding: 0 1; }
    """


class ChatListItem(ListItem):
    def __init__(self, chat_id: int, title: str) -> None:
        super().__init__(Label(title, markup=False))
        self.chat_id = chat_id
        self.title = title


class ChatList(ListView):
    """The sidebar: chats, most recent first."""

    DEFAULT_CSS = """
    ChatList { width: 28; border-right: tall $panel; }
    ChatList > ListItem { padding: 0 1; }
    """
