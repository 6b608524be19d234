"""ChatList: the sidebar of stored chats."""

from __future__ import annotations

from textual.widgets import Label, ListItem, ListView

__all__ = ["ChatList", "ChatListItem"]


class ChatListItem(ListItem):
    def __init__(self, chat_id: int, title: str) -> None:
        super().__init__(Label(title, markup=False))
        self.chat_id = chat_id
        self.title = title


class ChatList(ListView):
    """The sidebar: chats, most recent first."""
