"""ChatActions: what the chat screen does besides talking (switch, rename, delete, export, settings, copy).

The base class of ChatScreen (screens/chat.py), which provides the state declared here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on
from textual.screen import Screen

from localllm.tui.screens.dialogs import ConfirmScreen, TextPrompt
from localllm.tui.screens.settings import SettingsScreen
from localllm.tui.store import Chat
from localllm.tui.widgets import ChatList, ChatListItem, MessageView, PromptArea, code_blocks

if TYPE_CHECKING:  # pragma: no cover
    from localllm.tui.context import ChatContext

__all__ = ["ChatActions"]


class ChatActions(Screen):
    """The sidebar, chat management and copying; ChatScreen supplies the conversation and generation."""

    context: ChatContext
    chat: Chat | None
    _code_index: int

    # provided by ChatScreen
    @property
    def generating(self) -> bool:
        raise NotImplementedError

    def action_stop(self) -> None:
        raise NotImplementedError

    async def open_chat(self, chat_id: int | None) -> None:
        raise NotImplementedError

    def _model_name(self) -> str | None:
        raise NotImplementedError

    def _streaming_text(self) -> str | None:
        """The reply being written now, None when none is."""
        raise NotImplementedError

    # -- the sidebar: which chat is open ----------------------------------------

    def refresh_chat_list(self) -> None:
        lists = self.query(ChatList)
        if not lists:  # the screen is being torn down (the app quit while ctrl+n's work ran)
            return
        lst = lists.first()
        current = self.chat.id if self.chat else None
        lst.show_chats([(c.id, c.title) for c in self.context.history.chats()], current)

    @on(ChatList.Selected)
    async def _chat_selected(self, event: ChatList.Selected) -> None:
        item = event.item
        if isinstance(item, ChatListItem) and (self.chat is None or item.chat_id != self.chat.id):
            await self.open_chat(item.chat_id)  # it marks the item
            self.query_one(PromptArea).focus()

    async def action_new_chat(self) -> None:
        await self.open_chat(None)
        self.refresh_chat_list()
        self.query_one(PromptArea).focus()

    async def action_cycle_chat(self, step: int) -> None:
        chats = self.context.history.chats()
        if not chats:
            return
        ids = [c.id for c in chats]
        i = ids.index(self.chat.id) if self.chat and self.chat.id in ids else -1
        await self.open_chat(ids[(i + step) % len(ids)])
        self.refresh_chat_list()

    # -- rename, delete, export, settings ---------------------------------------

    def action_rename_chat(self) -> None:
        if self.chat is None:
            self.notify("Nothing to rename yet: send a message first.")
            return

        def done(title: str | None) -> None:
            if title is not None and self.chat is not None:
                self.chat = self.context.history.rename(self.chat.id, title)
                self.refresh_chat_list()

        self.app.push_screen(TextPrompt("Rename chat", self.chat.title), done)

    def action_delete_chat(self) -> None:
        if self.chat is None:
            return
        chat = self.chat

        async def done(yes: bool | None) -> None:
            if yes:
                if self.generating:
                    self.action_stop()
                self.context.history.delete(chat.id)
                remaining = self.context.history.chats()
                await self.open_chat(remaining[0].id if remaining else None)
                self.refresh_chat_list()
                self.notify(f"Deleted “{chat.title}”.")

        self.app.push_screen(ConfirmScreen(f"Delete the chat “{chat.title}”? This cannot be undone."), done)

    def action_export_chat(self) -> None:
        if self.chat is None:
            self.notify("Nothing to export yet.")
            return
        path = self.context.history.export_markdown(self.chat.id)
        self.notify(f"Exported to {path}", timeout=8)

    def action_settings(self) -> None:
        chat = self.chat
        system = chat.system_prompt if chat else self.context.system_prompt
        sampling = dict(chat.sampling) if chat else dict(self.context.sampling)

        def done(result: dict | None) -> None:
            if result is None:
                return
            if self.chat is None:
                self.chat = self.context.history.new_chat(model=self._model_name(), sampling=self.context.sampling)
            self.chat = self.context.history.update_settings(
                self.chat.id, system_prompt=result["system_prompt"], sampling=result["sampling"]
            )
            self.refresh_chat_list()
            self.notify("Chat settings saved.")

        self.app.push_screen(SettingsScreen(system, sampling), done)

    # -- copy -------------------------------------------------------------------

    def _last_reply(self) -> str:
        streaming = self._streaming_text()
        if streaming is not None:
            return streaming
        views = [v for v in self.query(MessageView) if v.role == "assistant"]
        return views[-1].text if views else ""

    def action_copy_reply(self) -> None:
        text = self._last_reply()
        if not text:
            self.notify("No reply to copy yet.")
            return
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied the last reply ({len(text)} characters).")

    def action_copy_code(self, index: int | None = None) -> None:
        """Copy a code block of the last reply; pressed again, the one before it, and so on."""
        blocks = code_blocks(self._last_reply())
        if not blocks:
            self.notify("The last reply has no code block.")
            return
        if index is None:
            index = len(blocks) - 1 - (self._code_index % len(blocks))
            self._code_index += 1
        block = blocks[index]
        self.app.copy_to_clipboard(block)
        self.notify(f"Copied code block {index + 1} of {len(blocks)} ({len(block.splitlines())} lines).")

    def code_block_count(self) -> int:
        return len(code_blocks(self._last_reply()))
