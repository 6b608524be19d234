"""The chat screen: conversation, prompt, sidebar of chats, status line; generation in a thread.

It reaches the app only through the ChatContext given to its constructor (and Textual's
App API: screens, notifications, the clipboard). The generation worker's body and its
messages are in localllm.tui.reply; chat management (rename, delete, export, settings,
copy) in screens/chat_actions.py.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Footer
from textual.worker import Worker, get_current_worker

import localllm
from localllm.tui import collector
from localllm.tui.context import ChatContext
from localllm.tui.library import describe_placement
from localllm.tui.reply import (
    CONTINUE_PROMPT,
    ContextCount,
    PromptProgress,
    ReplyDelta,
    ReplyDone,
    continue_joiner,
    reading_label,
    reply_label,
    reply_meta,
    stream_reply,
)
from localllm.tui.screens.chat_view import NARROW_COLUMNS, ConversationView
from localllm.tui.store import Chat, Message as StoredMessage
from localllm.tui.threads import lower_thread_priority
from localllm.tui.widgets import ChatList, MessageView, PromptArea, ReplyStream, StatusLine

__all__ = ["NARROW_COLUMNS", "ChatScreen", "ContextCount", "PromptProgress", "ReplyDelta", "ReplyDone"]

QUEUED_NOTE = "queued: sent when the reply ends · esc takes it back"


@dataclass
class _Generation:
    gen_id: int
    chat_id: int
    view: MessageView
    stop: threading.Event
    model_name: str
    stream: ReplyStream | None = None  # started at the first text
    parts: list[str] = field(default_factory=list)
    finishing: bool = False
    started: float = field(default_factory=time.monotonic)
    user: MessageView | None = None  # the message just sent that this reply answers (removed if it fails)
    base: StoredMessage | None = None  # continue: the reply cut at the length limit this one extends
    progress: tuple[int, int] | None = None  # prompt tokens read, of total

    @property
    def text(self) -> str:
        """The text this generation wrote (a continuation's own part only)."""
        return "".join(self.parts)


class ChatScreen(ConversationView):
    """Where the user chats."""

    AUTO_FOCUS = "#prompt"

    BINDINGS = [
        Binding("escape", "escape", "Stop", id="localllm.stop"),
        Binding("ctrl+n", "new_chat", "New chat", id="localllm.new_chat"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="localllm.regenerate"),
        # priority, and offered only under a reply cut at the length limit: otherwise ctrl+e
        # stays the prompt's end-of-line (check_action lets it through)
        Binding("ctrl+e", "continue_reply", "Continue reply", id="localllm.continue", priority=True),
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
        self._timings_model: object = None  # the model _last_timings belong to
        self._notes: list[str] = []  # info lines shown above a fresh chat (not stored)

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
                yield PromptArea(id="prompt", prompts=self.context.history)
        yield StatusLine("Loading…", id="status", markup=False)
        yield Footer()

    async def on_mount(self) -> None:
        if self.context.hide_timings:  # stable screenshots: no blinking cursor either
            self.query_one(PromptArea).cursor_blink = False
        self._fit_sidebar(self.app.size.width)
        self.refresh_chat_list()
        chats = self.context.history.chats()
        if chats:
            await self.open_chat(chats[0].id)
        self.model_changed()

    @property
    def generating(self) -> bool:
        return self._gen is not None

    def _streaming_text(self) -> str | None:
        gen = self._gen
        if gen is None:
            return None
        return (gen.base.content if gen.base is not None else "") + gen.text

    # -- model / status ---------------------------------------------------------

    def model_changed(self, note: str = "") -> None:
        """Called by the app when a model is (un)loaded."""
        prompt = self.query_one(PromptArea)
        model = self.model
        prompt.disabled = model is None or bool(self.loading_target)
        if model is not self._timings_model:  # another model's speed says nothing about this one
            self._last_timings = None
        if note:
            self._notes.append(note)
            if self.chat is None or not self.context.history.messages(self.chat.id):
                self.call_later(self._show_notes)
        self._ctx_used = None
        self._count_context()
        self.update_status()
        self.call_after_refresh(self._focus_prompt)
        if self._queue and not self.generating:
            self.call_later(self._send_queued)

    def _focus_prompt(self) -> None:
        prompt = self.query_one(PromptArea)
        if not prompt.disabled and self.app.screen is self:
            prompt.focus()

    def on_screen_resume(self) -> None:
        self.call_after_refresh(self._focus_prompt)

    async def _show_notes(self) -> None:
        conv = self.conversation
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
        gen = self._gen
        # what is happening now goes first: a narrow terminal cuts the line's end, never this
        state = []
        if gen is not None and gen.progress is not None and not gen.parts:
            state.append(reading_label(*gen.progress))
        elif gen is not None:
            state.append("generating… (esc stops)")
        if self._queue:
            state.append(f"{len(self._queue)} queued")
        used = "–" if self._ctx_used is None else str(self._ctx_used)
        if gen is not None and gen.progress is not None:
            used = str(gen.progress[1])  # the prompt being read, after truncation
        parts = [*state, info.name, info.runtime, placement, f"ctx {used}/{info.n_ctx}"]
        t = self._last_timings
        if t is not None and not hide:
            parts += [f"TTFT {t.ttft_s:.2f} s", f"{t.decode_tps:.1f} tok/s"]
        else:
            parts += ["TTFT –", "– tok/s"]
        status.update(" · ".join(parts))

    @work(thread=True, exclusive=True, exit_on_error=False, group="count")
    def _count_context(self) -> None:
        model, chat = self.model, self.chat
        if model is None:
            return
        messages = self._conversation(chat)
        try:  # what chat_stream(overflow="truncate") will send, by the library's own rule
            sampling = chat.sampling if chat else self.context.sampling
            n, dropped = model.fit_chat(messages, **sampling) if messages else (0, 0)
        except Exception:  # counting is informative only
            return
        self.post_message(ContextCount(chat.id if chat else None, n, dropped))

    @on(ContextCount)
    async def _on_context_count(self, msg: ContextCount) -> None:
        # a reply's own figure replaces the count of its chat when it ends; a count for another
        # chat (ctrl+n while the old reply is still being stopped) holds at once
        replying_here = self._gen is not None and self._gen.chat_id == msg.chat_id
        if (self.chat.id if self.chat else None) == msg.chat_id and not replying_here:
            self._ctx_used = msg.tokens
            self.update_status()
            if msg.dropped > self._dropped:
                await self._show_dropped(msg.dropped)

    # -- chats ------------------------------------------------------------------

    async def open_chat(self, chat_id: int | None) -> None:
        """Show a stored chat (None: a fresh, empty one), scrolled to its latest message."""
        gen = self._gen
        if gen is not None:  # it ends on its own; its view goes now, so its stream must stop first
            self.action_stop()
            if gen.stream is not None:
                stream, gen.stream = gen.stream, None
                await stream.stop()
        await self._take_back_queue()
        self.chat = self.context.history.chat(chat_id) if chat_id is not None else None
        conv = self.conversation
        await conv.remove_children()
        self._labels.clear()
        views: list[Any] = []
        last_dropped = 0
        if self.chat is not None:
            for m in self._shown_messages(self.chat):
                view = MessageView(m.content, m.role, message_id=m.id)
                views.append(view)
                if m.role == "assistant":
                    finish = m.meta.get("finish_reason")
                    last_dropped = int(m.meta.get("dropped_messages", 0) or 0)
                    if finish == "cancelled":
                        view.add_class("cancelled")
                    label = reply_label(finish, continued=bool(m.meta.get("continued")))
                    if label:
                        note = self._label_widget(label, finish)
                        self._labels[view] = note
                        view.add_class("-labelled")
                        views.append(note)
        if not views and self._notes:
            views.append(MessageView(self._notes[-1], "info"))
        if views:
            await conv.mount_all(views)
        conv.anchor()  # to the latest message, once laid out, and while replies stream in
        self.call_after_refresh(conv.scroll_end, animate=False)
        self._fit_soon()
        for lst in self.query(ChatList):  # none while the screen is torn down
            lst.mark(chat_id)
        self._code_index = 0
        self._last_timings = None
        self._ctx_used = None
        self._dropped = 0
        if last_dropped:
            await self._show_dropped(last_dropped)
        self._count_context()
        self.update_status()

    # -- sending and streaming --------------------------------------------------

    def _model_name(self) -> str | None:
        return self.model.info.name if self.model is not None else None

    def _conversation(self, chat: Chat | None) -> list[dict[str, str]]:
        messages: list[dict[str, str]] = []
        system = chat.system_prompt if chat else self.context.system_prompt
        if system:
            messages.append({"role": "system", "content": system})
        if chat is not None:  # an empty stopped reply is no turn: never sent back to the model
            messages += [{"role": m.role, "content": m.content} for m in self._shown_messages(chat)]
        return messages

    @on(PromptArea.Submitted)
    async def _submitted(self, event: PromptArea.Submitted) -> None:
        event.stop()
        if self.model is None or self.loading_target:
            self.notify("The model is not loaded yet.", severity="warning")
            return
        text = event.text.rstrip("\n")
        prompt = event.prompt
        prompt.remember(text)
        prompt.clear()
        conv = self.conversation
        for view in list(conv.query("MessageView.error")):
            await view.remove()
        if self.generating:  # sent when the reply ends
            view = MessageView(text, "user")
            view.add_class("queued")
            self._queue.append(view)
            await conv.mount(view)
            await self._set_label(view, QUEUED_NOTE, "queued")
            self.update_status()
            return
        await self._send(MessageView(text, "user"))

    async def _send(self, view: MessageView) -> None:
        """Store the user message `view` shows (mounting it if it is not yet), then start its reply."""
        history = self.context.history
        fresh = self.chat is None
        if self.chat is None:
            self.chat = history.new_chat(
                system_prompt=self.context.system_prompt,
                sampling=self.context.sampling,
                model=self._model_name(),
            )
        # no await between the chat and its first message: nobody sees a chat without it
        msg = history.add_message(self.chat.id, "user", view.text)  # committed before the reply starts
        view.message_id = msg.id
        if fresh:
            for info in self.query("MessageView.info"):
                await info.remove()
        self.chat = history.chat(self.chat.id)
        self.refresh_chat_list()
        if not view.is_attached:
            await self.conversation.mount(view)
        await self._start_reply(user=view)

    async def _send_queued(self) -> None:
        if not self._queue or self.generating or self.model is None or self.loading_target:
            return
        view = self._queue.pop(0)
        await self._set_label(view, "")
        view.remove_class("queued")
        await self._send(view)

    async def _start_reply(
        self, *, user: MessageView | None = None, base: StoredMessage | None = None, view: MessageView | None = None
    ) -> None:
        assert self.chat is not None and self.model is not None
        conv = self.conversation
        messages = self._conversation(self.chat)
        if view is None:
            view = MessageView("", "assistant")
            await conv.mount(view, before=self._queue[0] if self._queue else None)
        else:  # continue: the reply grows in place
            messages.append({"role": "user", "content": CONTINUE_PROMPT})
        conv.anchor()
        self._gen_counter += 1
        gen = _Generation(self._gen_counter, self.chat.id, view, threading.Event(), self._model_name() or "")
        gen.user, gen.base = user, base
        self._gen = gen
        if self.context.pace_gc:
            collector.reply_started()
        self._code_index = 0
        self.update_status()
        self._generate(self.model, messages, dict(self.chat.sampling), gen.gen_id, gen.stop)

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
        stream_reply(
            model,
            messages,
            options,
            gen_id=gen_id,
            stop=stop,
            post=self.post_message,
            is_cancelled=lambda: worker.is_cancelled,
        )

    @on(PromptProgress)
    async def _on_progress(self, msg: PromptProgress) -> None:
        gen = self._gen
        if gen is not None and gen.gen_id == msg.gen_id and not gen.parts and not gen.finishing:
            gen.progress = (msg.done, msg.total)
            self.update_status()
            if gen.base is None:  # in the reply's place until its first words
                await self._set_label(gen.view, reading_label(msg.done, msg.total), "reading")

    @on(ReplyDelta)
    async def _on_delta(self, msg: ReplyDelta) -> None:
        gen = self._gen
        if gen is None or gen.gen_id != msg.gen_id:
            return
        text = msg.text
        if not gen.parts:
            if gen.base is not None:
                text = continue_joiner(gen.base.content, text) + text
            await self._set_label(gen.view, "")
            if gen.view.is_attached:  # not after a switch to another chat
                gen.stream = gen.view.get_stream(self._segment_started, keys=self.context.input)
            self.update_status()
        gen.parts.append(text)
        if gen.view.is_attached and gen.stream is not None:
            gen.stream.write(text)

    @on(ReplyDone)
    async def _on_done(self, msg: ReplyDone) -> None:
        gen = self._gen
        if gen is None or gen.gen_id != msg.gen_id or gen.finishing:
            return
        if gen.stream is not None and gen.stream.backlog:  # again once its text is shown; frames go on
            gen.stream.when_shown(lambda: self.post_message(dataclasses.replace(msg)))
            return
        gen.finishing = True  # `generating` stays true until the reply is stored and shown
        if gen.stream is not None:
            await gen.stream.stop()
        text = gen.text
        open_here = self.chat is not None and self.chat.id == gen.chat_id
        if msg.error and not text:
            await self._failed(gen, msg.error)
        elif not text.strip():
            await self._stopped_empty(gen)
        else:
            self._store_reply(gen, msg)
            if gen.view.is_attached:
                await gen.view.finish()  # its last segment once whole: a streamed code fence can be left blank
            gen.view.set_state(msg.finish_reason == "cancelled", "cancelled")
            await self._set_label(
                gen.view, reply_label(msg.finish_reason, continued=gen.base is not None), msg.finish_reason
            )
            if msg.timings is not None and open_here:
                self._last_timings, self._timings_model = msg.timings, self.model
                self._ctx_used = msg.timings.prompt_tokens + msg.timings.decode_tokens
            if msg.error:
                self.notify(msg.error, severity="error")
        if open_here:
            if not msg.error:
                await self._tell_dropped(msg.dropped, self.model.info.n_ctx if self.model is not None else None)
            if self.chat is not None:
                self.chat = self.context.history.chat(gen.chat_id)
        self._gen = None
        if self.context.pace_gc:
            collector.reply_ended()
        self.update_status()
        self.post_message(self.ReplyFinished(msg.finish_reason, msg.error))
        if msg.error and not text:
            await self._take_back_queue()
        else:
            await self._send_queued()

    def _store_reply(self, gen: _Generation, msg: ReplyDone) -> None:
        """Commit the reply; a continuation is stored with the reply it extends, as one message."""
        history = self.context.history
        text = (gen.base.content if gen.base is not None else "") + gen.text
        meta = reply_meta(msg, gen.model_name, gen.base.meta if gen.base is not None else None)
        stored = history.add_message(gen.chat_id, "assistant", text, meta)  # committed as it completes
        if gen.base is not None:  # after the add: a kill in between keeps both, never neither
            history.delete_message(gen.base.id)
        gen.view.message_id = stored.id
        gen.view.text = text

    async def _failed(self, gen: _Generation, error: str) -> None:
        """An error before any reply text: the message just sent leaves the history and goes back to the prompt."""
        history = self.context.history
        if gen.base is None:
            await self._remove_view(gen.view)
        failed = ""
        if gen.user is not None and gen.user.message_id is not None:
            history.delete_message(gen.user.message_id)
            failed = gen.user.text
            await self._remove_view(gen.user)
            if self.chat is not None and self.chat.id == gen.chat_id and not history.messages(gen.chat_id):
                history.delete(gen.chat_id)  # the chat held only that message
                self.chat = None
            self.refresh_chat_list()
        if failed:
            await self._take_back_queue(failed=failed)
        if self.chat is None or self.chat.id == gen.chat_id:
            await self.conversation.mount(MessageView(error, "error"))

    async def _stopped_empty(self, gen: _Generation) -> None:
        """Stopped before any text: nothing stored, no empty bubble; the user message stays (ctrl+r answers it)."""
        if gen.base is not None:  # a continuation that wrote nothing: the cut reply stays as it was
            return
        await self._remove_view(gen.view)
        if gen.user is not None and gen.user.is_attached:
            await self._set_label(gen.user, "stopped before the reply began · ctrl+r writes it", "cancelled")

    @dataclass
    class ReplyFinished(Message):
        """Posted (to this screen) after a reply was stored: for tests and extensions."""

        finish_reason: str
        error: str

    def action_stop(self) -> None:
        """Stop the reply being written; it keeps what came so far."""
        gen = self._gen
        if gen is None:
            return
        gen.stop.set()
        for worker in self.workers:
            if worker.group == "generate":
                worker.cancel()

    def _last_reply_cut(self) -> StoredMessage | None:
        """The chat's last message when it is a reply cut at the length limit."""
        if self.chat is None:
            return None
        messages = self._shown_messages(self.chat)
        last = messages[-1] if messages else None
        if last is None or last.role != "assistant" or last.meta.get("finish_reason") != "length":
            return None
        return last

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "continue_reply":
            return not self.generating and self._last_reply_cut() is not None
        return True

    async def action_continue_reply(self) -> None:
        """Ask the model to go on with a reply cut at the length limit; the text is added to that reply."""
        base = self._last_reply_cut()
        if base is None or self.generating or self.model is None or self.loading_target:
            return
        views = [v for v in self.query(MessageView) if v.message_id == base.id]
        if not views:
            return
        await self._set_label(views[-1], "")
        await self._start_reply(base=base, view=views[-1])

    async def action_regenerate(self) -> None:
        if self.generating or self.chat is None or self.model is None or self.loading_target:
            return
        history = self.context.history
        messages = self._shown_messages(self.chat)
        if not messages:
            return
        for view in list(self.query("MessageView.error")):
            await view.remove()
        views = [v for v in self.query(MessageView) if v.role in ("user", "assistant")]
        if messages[-1].role == "assistant":
            history.delete_message(messages[-1].id)
            if views and views[-1].role == "assistant":
                await self._remove_view(views[-1])
                views.pop()
        elif messages[-1].role != "user":
            return
        if views and views[-1].role == "user":
            await self._set_label(views[-1], "")
        await self._start_reply()  # user=None: a failed regeneration never removes the question

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # a worker that raised despite the guards: say so instead of dying silently
        if event.worker.group == "generate" and event.state.name == "ERROR" and self._gen is not None:
            self.post_message(ReplyDone(self._gen.gen_id, "error", None, str(event.worker.error)))
