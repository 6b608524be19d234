"""ChatList: the sidebar of stored chats, the open one marked."""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import Label, ListItem, ListView

__all__ = ["ChatList", "ChatListItem"]


class ChatListItem(ListItem):
    """One chat; its title ends with an ellipsis where the sidebar cuts it (styles.tcss)."""

    def __init__(self, chat_id: int, title: str, *, current: bool = False) -> None:
        super().__init__(Label(title, markup=False, classes="title"), classes="-current" if current else None)
        self.chat_id = chat_id
        self.title = title


class ChatList(ListView):
    """The sidebar: chats, most recent first."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.current: int | None = None  # id of the open chat

    def show_chats(self, chats: Sequence[tuple[int, str]], current: int | None) -> None:
        """Replace the items with `chats` (id, title), marking and highlighting the one with id `current`."""
        self.clear()
        self.extend(ChatListItem(chat_id, title, current=chat_id == current) for chat_id, title in chats)
        self.mark(current)

    def mark(self, current: int | None) -> None:
        """Mark and highlight the chat with id `current` (None: no chat is open), now and once
        items being added are mounted (the latest call wins)."""
        self.current = current
        self._apply_mark()
        self.call_after_refresh(self._apply_mark)

    def _apply_mark(self) -> None:
        items = list(self.query(ChatListItem))
        for item in items:
            item.set_class(item.chat_id == self.current, "-current")
        index = next((i for i, item in enumerate(items) if item.chat_id == self.current), None)
        if self.index != index:
            self.index = index
