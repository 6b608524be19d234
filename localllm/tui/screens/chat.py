"""The chat screen: conversation, prompt, sidebar of chats, status line; generation in a thread.

It reaches the app only through the ChatContext given to its constructor (and Textual's
App API: screens, notifications, the clipboard).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Markdown
from textual.widgets.markdown import MarkdownStream
from textual.worker import Worker, get_current_worker

import localllm
from localllm.tui.context import ChatContext
from localllm.tui.library import describe_placement
from localllm.tui.screens.dialogs import ConfirmScreen, TextPrompt
from localllm.tui.screens.settings import SettingsScreen
from localllm.tui.store import Chat
from localllm.tui.threads import lower_thread_priority
from localllm.tui.widgets import ChatList, ChatListItem, MessageView, PromptArea, StatusLine, code_blocks

__all__ = ["ChatScreen", "ContextCount", "ReplyDelta", "ReplyDone"]

# Text reaches the UI in batches about 30 times a second: smooth to the eye, and few
# enough messages that Markdown rendering never falls behind (Textual's MarkdownStream
# docs put the limit near 20 appends/s before it starts coalescing).
FLUSH_INTERVAL_S = 1 / 30


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
class ContextCount(Message):
    """Tokens the current conversation takes in the context window."""

    chat_id: int | None
    tokens: int


@dataclass
class _Generation:
    gen_id: int
    chat_id: int
    view: MessageView
    stream: MarkdownStream
    stop: threading.Event
    model_name: str
    parts: list[str] = field(default_factory=list)
    finishing: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class ChatScreen(Screen):
    """Where the user chats."""

    AUTO_FOCUS = "#prompt"

    BINDINGS = [
        Binding("escape", "stop", "Stop", id="localllm.stop"),
        Binding("ctrl+n", "new_chat", "New chat", id="localllm.new_chat"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="localllm.regenerate"),
        Binding("ctrl+o", "app.models", "Models", id="localllm.models"),
        Binding("f1", "app.help", "Help", id="localllm.help"),
        Binding("ctrl+g", "copy_reply", "Copy reply", id="localllm.copy_reply", show=False),
        Binding("ctrl+t", "copy_code", "Copy code", id="localllm.copy_code", show=False),
        Binding("ctrl+s", "settings", "Chat settings", id="localllm.settings", show=False),
        Binding("ctrl+b", "toggle_sidebar", "Chats", id="localllm.sidebar", show=False),
        Binding("f2", "rename_chat", "Rename chat", id="localllm.rename", show=False),
        Binding("f3", "export_chat", "Export chat", id="localllm.export", show=False),
        Binding("f4", "app.show_plan", "Why this model", id="localllm.plan", show=False),
        Binding("f8", "delete_chat", "Delete chat", id="localllm.delete", show=False),
        Binding("alt+up", "cycle_chat(-1)", "Previous chat", id="localllm.prev_chat", show=False),
        Binding("alt+down", "cycle_chat(1)", "Next chat", id="localllm.next_chat", show=False),
    ]

    def __init__(self, context: ChatContext) -> None:
        super().__init__()
        self.context = context
        self.chat: Chat | None = None  # None: a new chat, created on its first message
        self._gen: _Generation | None = None
        self._gen_counter = 0
        self._code_index = 0
        self._ctx_used: int | None = None
        self._last_timings: localllm.Timings | None = None
        self._notes: list[str] = []  # info lines shown above a fresh chat (not stored)
        self._dropped = 0  # messages of the open chat the model no longer sees (last told)

    @property
    def model(self) -> localllm.Model | None:
        """The model in use; None before the first load."""
        return self.context.models.model

    @property
    def loading_target(self) -> str:
        """What is being loaded now; "" when idle. (Widget.loading is Textual's loading indicator.)"""
        return self.context.models.loading

    # -- layout -----------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="body"):
            yield ChatList(id="chats")
            with Vertical(id="main"):
                conversation = VerticalScroll(id="conversation")
                conversation.can_focus = False  # typing always goes to the prompt; the wheel still scrolls
                yield conversation
                yield PromptArea(id="prompt")
        yield StatusLine("Loading…", id="status", markup=False)
        yield Footer()

    async def on_mount(self) -> None:
        if self.context.hide_timings:  # stable screenshots: no blinking cursor either
            self.query_one(PromptArea).cursor_blink = False
        self.refresh_chat_list()
        chats = self.context.history.chats()
        if chats:
            await self.open_chat(chats[0].id)
        self.model_changed()

    @property
    def generating(self) -> bool:
        return self._gen is not None

    # -- model / status ---------------------------------------------------------

    def model_changed(self, note: str = "") -> None:
        """Called by the app when a model is (un)loaded."""
        prompt = self.query_one(PromptArea)
        model = self.model
        prompt.disabled = model is None or bool(self.loading_target)
        if note:
            self._notes.append(note)
            if self.chat is None or not self.context.history.messages(self.chat.id):
                self.call_later(self._show_notes)
        self._ctx_used = None
        self._count_context()
        self.update_status()
        self.call_after_refresh(self._focus_prompt)

    def _focus_prompt(self) -> None:
        prompt = self.query_one(PromptArea)
        if not prompt.disabled and self.app.screen is self:
            prompt.focus()

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self._focus_prompt)

    async def _show_notes(self) -> None:
        conv = self.query_one("#conversation", VerticalScroll)
        for view in conv.query("MessageView.info"):
            await view.remove()
        for note in self._notes[-1:]:
            await conv.mount(MessageView(note, "info"), before=0 if conv.children else None)

    def update_status(self) -> None:
        status = self.query_one(StatusLine)
        if self.loading_target:
            status.update(f"Loading {self.loading_target}…")
            return
        model = self.model
        if model is None:
            status.update("No model loaded: ctrl+o chooses one")
            return
        info = model.info
        hide = self.context.hide_timings
        placement = "CPU/GPU" if hide else describe_placement(info.placement)
        used = "–" if self._ctx_used is None else str(self._ctx_used)
        parts = [info.name, info.runtime, placement, f"ctx {used}/{info.n_ctx}"]
        t = self._last_timings
        if t is not None and not hide:
            parts += [f"TTFT {t.ttft_s:.2f} s", f"{t.decode_tps:.1f} tok/s"]
        else:
            parts += ["TTFT –", "– tok/s"]
        if self.generating:
            parts.append("generating… (esc stops)")
        status.update(" · ".join(parts))

    @work(thread=True, exclusive=True, exit_on_error=False, group="count")
    def _count_context(self) -> None:
        model, chat = self.model, self.chat
        if model is None:
            return
        messages = self._conversation(chat)
        try:
            n = model.count_tokens(messages) if messages else 0
        except Exception:  # counting is informative only
            return
        self.post_message(ContextCount(chat.id if chat else None, n))

    @on(ContextCount)
    def _on_context_count(self, msg: ContextCount) -> None:
        if (self.chat.id if self.chat else None) == msg.chat_id and not self.generating:
            self._ctx_used = msg.tokens
            self.update_status()

    # -- chats ------------------------------------------------------------------

    def refresh_chat_list(self) -> None:
        lst = self.query_one(ChatList)
        lst.clear()
        current = None
        for i, chat in enumerate(self.context.history.chats()):
            lst.append(ChatListItem(chat.id, chat.title))
            if self.chat and chat.id == self.chat.id:
                current = i
        if current is not None:
            lst.index = current

    async def open_chat(self, chat_id: int | None) -> None:
        """Show a stored chat (None: a fresh, empty one)."""
        if self.generating:
            self.action_stop()
        self.chat = self.context.history.chat(chat_id) if chat_id is not None else None
        conv = self.query_one("#conversation", VerticalScroll)
        await conv.remove_children()
        views = []
        if self.chat is not None:
            for m in self.context.history.messages(self.chat.id):
                if m.role == "system":
                    continue
                classes = m.role + (" cancelled" if m.meta.get("finish_reason") == "cancelled" else "")
                view = MessageView(m.content, classes, message_id=m.id)
                view.role = m.role
                views.append(view)
        if not views and self._notes:
            views.append(MessageView(self._notes[-1], "info"))
        if views:
            await conv.mount_all(views)
        conv.scroll_end(animate=False, immediate=True)
        self._code_index = 0
        self._last_timings = None
        self._ctx_used = None
        self._dropped = 0
        self._count_context()
        self.update_status()

    @on(ChatList.Selected)
    async def _chat_selected(self, event: ChatList.Selected) -> None:
        item = event.item
        if isinstance(item, ChatListItem) and (self.chat is None or item.chat_id != self.chat.id):
            await self.open_chat(item.chat_id)
            self.query_one(PromptArea).focus()

    async def action_new_chat(self) -> None:
        await self.open_chat(None)
        self.refresh_chat_list()
        self.query_one(ChatList).index = None
        self.query_one(PromptArea).focus()

    async def action_cycle_chat(self, step: int) -> None:
        chats = self.context.history.chats()
        if not chats:
            return
        ids = [c.id for c in chats]
        i = ids.index(self.chat.id) if self.chat and self.chat.id in ids else -1
        await self.open_chat(ids[(i + step) % len(ids)])
        self.refresh_chat_list()

    def action_toggle_sidebar(self) -> None:
        self.toggle_class("-no-sidebar")

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
        views = [v for v in self.query(MessageView) if v.role == "assistant"]
        if self._gen is not None:
            return self._gen.text
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

    # -- sending and streaming --------------------------------------------------

    def _model_name(self) -> str | None:
        return self.model.info.name if self.model is not None else None

    def _conversation(self, chat: Chat | None) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = []
        system = chat.system_prompt if chat else self.context.system_prompt
        if system:
            messages.append({"role": "system", "content": system})
        if chat is not None:
            messages += [
                {"role": m.role, "content": m.content}
                for m in self.context.history.messages(chat.id)
                if m.role != "system"
            ]
        return messages

    @on(PromptArea.Submitted)
    async def _submitted(self, event: PromptArea.Submitted) -> None:
        event.stop()
        if self.model is None or self.loading_target:
            self.notify("The model is not loaded yet.", severity="warning")
            return
        if self.generating:
            self.notify("A reply is still streaming: esc stops it.", severity="warning")
            return
        text = event.text.rstrip("\n")
        prompt = event.prompt
        prompt.remember(text)
        prompt.clear()
        history = self.context.history
        if self.chat is None:
            self.chat = history.new_chat(
                system_prompt=self.context.system_prompt,
                sampling=self.context.sampling,
                model=self._model_name(),
            )
            for view in self.query("MessageView.info"):
                await view.remove()
        msg = history.add_message(self.chat.id, "user", text)  # committed before the reply starts
        self.chat = history.chat(self.chat.id)
        self.refresh_chat_list()
        conv = self.query_one("#conversation", VerticalScroll)
        await conv.mount(MessageView(text, "user", message_id=msg.id))
        await self._start_reply()

    async def _start_reply(self) -> None:
        assert self.chat is not None and self.model is not None
        conv = self.query_one("#conversation", VerticalScroll)
        view = MessageView("", "assistant")
        await conv.mount(view)
        conv.anchor()
        self._gen_counter += 1
        gen = _Generation(
            self._gen_counter,
            self.chat.id,
            view,
            Markdown.get_stream(view),
            threading.Event(),
            self._model_name() or "",
        )
        self._gen = gen
        self._code_index = 0
        self.update_status()
        self._generate(self.model, self._conversation(self.chat), dict(self.chat.sampling), gen.gen_id, gen.stop)

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def _generate(
        self,
        model: localllm.Model,
        messages: list[dict[str, str]],
        options: dict[str, Any],
        gen_id: int,
        stop: threading.Event,
    ) -> None:
        """Runs in a thread: never touches widgets, only posts messages."""
        lower_thread_priority()
        worker = get_current_worker()
        parts: list[str] = []
        last_flush = time.monotonic()
        finish, timings, error, tokens, dropped = "cancelled", None, "", 0, 0
        try:
            # a chat longer than the window loses its oldest turns rather than failing
            for chunk in model.chat_stream(messages, overflow="truncate", stop_event=stop, **options):
                tokens += len(chunk.token_ids)
                if chunk.text:
                    parts.append(chunk.text)
                if chunk.finish_reason is not None:
                    finish, timings, dropped = chunk.finish_reason, chunk.timings, chunk.dropped_messages
                if worker.is_cancelled:
                    stop.set()  # the loop ends with a "cancelled" chunk carrying timings
                now = time.monotonic()
                if parts and now - last_flush >= FLUSH_INTERVAL_S:
                    self.post_message(ReplyDelta(gen_id, "".join(parts)))
                    parts.clear()
                    last_flush = now
        except localllm.LocalLLMError as exc:
            error = str(exc)
        except Exception as exc:  # shown in the chat, never a traceback over the screen
            error = f"{type(exc).__name__}: {exc}"
        if parts:
            self.post_message(ReplyDelta(gen_id, "".join(parts)))
        self.post_message(ReplyDone(gen_id, finish, timings, error, tokens, dropped))

    @on(ReplyDelta)
    async def _on_delta(self, msg: ReplyDelta) -> None:
        gen = self._gen
        if gen is None or gen.gen_id != msg.gen_id:
            return
        gen.parts.append(msg.text)
        if gen.view.is_attached:
            await gen.stream.write(msg.text)

    @on(ReplyDone)
    async def _on_done(self, msg: ReplyDone) -> None:
        gen = self._gen
        if gen is None or gen.gen_id != msg.gen_id or gen.finishing:
            return
        gen.finishing = True  # `generating` stays true until the reply is stored and shown
        await gen.stream.stop()
        text = gen.text
        history = self.context.history
        if msg.error and not text:
            gen.view.text = msg.error
            gen.view.role = "error"
            gen.view.set_classes("error")
            await gen.view.update(msg.error)
        else:
            meta: dict[str, Any] = {"finish_reason": msg.finish_reason, "model": gen.model_name}
            if msg.timings is not None:
                meta.update(
                    ttft_s=round(msg.timings.ttft_s, 4), decode_tps=round(msg.timings.decode_tps, 2), tokens=msg.tokens
                )
            if msg.dropped:
                meta["dropped_messages"] = msg.dropped
            if msg.error:
                meta["error"] = msg.error
            stored = history.add_message(gen.chat_id, "assistant", text, meta)  # committed as it completes
            gen.view.message_id = stored.id
            gen.view.text = text
            if msg.finish_reason == "cancelled":
                gen.view.add_class("cancelled")
            if gen.view.is_attached:
                await gen.view.update(text)  # once whole: streamed code fences can be left blank
            if msg.timings is not None:
                self._last_timings = msg.timings
                self._ctx_used = msg.timings.prompt_tokens + msg.timings.decode_tokens
            if msg.error:
                self.notify(msg.error, severity="error")
        if self.chat is not None and self.chat.id == gen.chat_id:
            if not msg.error:
                self._tell_dropped(msg.dropped)
            self.chat = history.chat(gen.chat_id)
        self._gen = None
        self.update_status()
        self.post_message(self.ReplyFinished(msg.finish_reason, msg.error))

    def _tell_dropped(self, dropped: int) -> None:
        """Say so when more of the open chat fell out of the context window than last time."""
        if dropped > self._dropped:
            n_ctx = self.model.info.n_ctx if self.model is not None else None
            window = f" ({n_ctx} tokens)" if n_ctx else ""
            kept = " (the system prompt stays)" if self.chat is not None and self.chat.system_prompt else ""
            self.notify(
                f"This chat is longer than the context window{window}: the model no longer sees its "
                f"oldest {dropped} message{'s' if dropped != 1 else ''}{kept}. "
                "Start a new chat (ctrl+n) or load with a larger context (--ctx N) to keep more.",
                title="Earlier messages left out",
                severity="warning",
                timeout=10,
            )
        self._dropped = dropped

    @dataclass
    class ReplyFinished(Message):
        """Posted (to this screen) after a reply was stored: for tests and extensions."""

        finish_reason: str
        error: str

    def action_stop(self) -> None:
        gen = self._gen
        if gen is None:
            return
        gen.stop.set()
        for worker in self.workers:
            if worker.group == "generate":
                worker.cancel()

    async def action_regenerate(self) -> None:
        if self.generating or self.chat is None or self.model is None or self.loading_target:
            return
        history = self.context.history
        messages = history.messages(self.chat.id)
        if not messages:
            return
        if messages[-1].role == "assistant":
            history.delete_message(messages[-1].id)
            views = list(self.query(MessageView))
            if views and views[-1].role in ("assistant", "error"):
                await views[-1].remove()
        elif messages[-1].role != "user":
            return
        views = list(self.query(MessageView))
        if views and views[-1].role == "error":
            await views[-1].remove()
        await self._start_reply()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # a worker that raised despite the guards: say so instead of dying silently
        if event.worker.group == "generate" and event.state.name == "ERROR" and self._gen is not None:
            self.post_message(ReplyDone(self._gen.gen_id, "error", None, str(event.worker.error)))
