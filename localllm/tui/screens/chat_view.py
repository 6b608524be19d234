"""ConversationView: how the chat screen lays out its conversation (notes under messages, the
truncation notice, queued messages, keyboard scrolling, the sidebar on narrow terminals).

The base of ChatScreen (screens/chat.py); the generation side is there.
"""

from __future__ import annotations

from textual import events
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from localllm.tui import collector
from localllm.tui.screens.chat_actions import ChatActions
from localllm.tui.store import Chat, Message as StoredMessage
from localllm.tui.widgets import MessageView, PromptArea, fit_segments

__all__ = ["NARROW_COLUMNS", "ConversationView"]

# Below this terminal width the 28-column sidebar leaves too little (under 62 columns) for the
# conversation: it starts hidden (ctrl+b shows it), so at 80 columns, the usual terminal, the
# chat takes the whole width.
NARROW_COLUMNS = 90


class ConversationView(ChatActions):
    """The conversation's widgets and scrolling; ChatScreen fills it."""

    BINDINGS = [
        # the prompt (a TextArea) takes pageup/pagedown for its own few lines: priority, so they
        # scroll the conversation while typing goes on; shift+ and ctrl+home/end it never takes
        Binding(
            "pageup,shift+pageup",
            "scroll_chat('page_up')",
            "Scroll up",
            id="localllm.page_up",
            priority=True,
            show=False,
        ),
        Binding(
            "pagedown,shift+pagedown",
            "scroll_chat('page_down')",
            "Scroll down",
            id="localllm.page_down",
            priority=True,
            show=False,
        ),
        Binding("ctrl+home", "scroll_chat('home')", "First message", id="localllm.scroll_home", show=False),
        Binding("ctrl+end", "scroll_chat('end')", "Latest message", id="localllm.scroll_end", show=False),
    ]

    def update_status(self) -> None:
        raise NotImplementedError  # ChatScreen's

    def __init__(self) -> None:
        super().__init__()
        self._dropped = 0  # messages of the open chat the model no longer sees (last told)
        self._queue: list[MessageView] = []  # messages sent while a reply streams, oldest first
        self._labels: dict[MessageView, Static] = {}  # the note under a message ("stopped", "queued"...)
        self._narrow: bool | None = None
        self._fit_pending = False

    @property
    def conversation(self) -> VerticalScroll:
        return self.query_one("#conversation", VerticalScroll)

    def _shown_messages(self, chat: Chat) -> list[StoredMessage]:
        """The stored messages the conversation shows and sends: no system prompt, no empty stopped reply."""
        return [
            m
            for m in self.context.history.messages(chat.id)
            if m.role != "system" and not (m.role == "assistant" and not m.content.strip())
        ]

    # -- sidebar and scrolling --------------------------------------------------

    async def on_mount(self) -> None:
        # scrolled by the user (a streaming reply's anchored scroll sets scroll_y without watchers)
        self.watch(self.conversation, "scroll_y", lambda: self._fit_soon(), init=False)

    def on_resize(self, event: events.Resize) -> None:
        self._fit_sidebar(event.size.width)
        self._fit_soon()

    # -- segments out of view (widgets.message.fit_segments) ---------------------

    def _fit_soon(self) -> None:
        """Fold the segments far out of view, unfold those near it, after the next refresh."""
        if not self._fit_pending:
            self._fit_pending = True
            self.call_after_refresh(self._fit)

    def _fit(self) -> None:
        self._fit_pending = False
        fit_segments(self.conversation)

    def _segment_started(self) -> None:
        """A streaming reply began a new segment: the one before it is whole and moves up."""
        if self.context.pace_gc:
            collector.segment_done()
        self._fit_soon()

    def _fit_sidebar(self, width: int) -> None:
        """Hide the sidebar when the terminal turns narrow, show it when it turns wide (ctrl+b still toggles)."""
        narrow = width < NARROW_COLUMNS
        if narrow != self._narrow:
            self._narrow = narrow
            self.set_class(narrow, "-no-sidebar")

    def action_toggle_sidebar(self) -> None:
        self.toggle_class("-no-sidebar")

    def action_scroll_chat(self, where: str) -> None:
        conv = self.conversation
        if where == "page_up":
            conv.scroll_page_up()
        elif where == "page_down":
            conv.scroll_page_down()
        elif where == "home":
            conv.scroll_home(animate=False)
        else:
            conv.scroll_end(animate=False)

    # -- notes under messages, the truncation notice -----------------------------

    def _label_widget(self, text: str, kind: str | None) -> Static:
        return Static(text, classes=f"label {kind or ''}".strip(), markup=False)

    async def _set_label(self, view: MessageView, text: str, kind: str | None = None) -> None:
        """Put `text` under `view` ("" removes the note); `kind` (a finish reason, "queued") styles it."""
        old = self._labels.get(view)
        if old is not None and text and kind and old.has_class(kind):  # the same kind of note: new words
            old.update(text)
            return
        self._labels.pop(view, None)
        if old is not None:
            await old.remove()
        view.set_state(bool(text), "-labelled")
        if text and view.is_attached:
            note = self._label_widget(text, kind)
            self._labels[view] = note
            await self.conversation.mount(note, after=view)

    async def _remove_view(self, view: MessageView) -> None:
        await self._set_label(view, "")
        if view.is_attached:
            await view.remove()

    async def _show_dropped(self, dropped: int) -> None:
        """The notice before the first message the model still sees; the older ones dimmed."""
        conv = self.conversation
        for old in conv.query("#dropped-notice"):
            await old.remove()
        stored = [v for v in conv.query(MessageView) if v.role in ("user", "assistant") and v.message_id is not None]
        for i, view in enumerate(stored):
            view.set_class(i < dropped, "dropped")
        self._dropped = dropped
        if not dropped or not stored:
            return
        what = f"{dropped} earlier messages are" if dropped != 1 else "1 earlier message is"
        text = (
            f"{what} outside the model's context window and {'were' if dropped != 1 else 'was'} not sent. "
            "ctrl+n starts a new chat; `localllm chat --ctx N` keeps more."
        )
        notice = Static(text, id="dropped-notice", classes="label notice", markup=False)
        if dropped < len(stored):
            await conv.mount(notice, before=stored[dropped])
        else:
            await conv.mount(notice, after=stored[-1])

    async def _tell_dropped(self, dropped: int, n_ctx: int | None) -> None:
        """After a reply: update the notice, and say so in a toast when more fell out than last time."""
        if dropped > self._dropped:
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
        if dropped != self._dropped or (dropped and not self.query("#dropped-notice")):
            await self._show_dropped(dropped)

    # -- queued messages ---------------------------------------------------------

    async def _take_back_queue(self, *, failed: str = "") -> None:
        """Queued messages (and a failed one before them) go back into the prompt: nothing typed is lost."""
        texts = [failed] if failed else []
        texts += [v.text for v in self._queue]
        queued, self._queue = self._queue, []
        for view in queued:
            await self._remove_view(view)
        if texts:
            self._put_back(texts)

    def _put_back(self, texts: list[str]) -> None:
        """Texts into the prompt, before what is typed there now."""
        prompt = self.query_one(PromptArea)
        if prompt.text.strip():
            texts = [*texts, prompt.text]
        prompt.load_text("\n\n".join(texts))
        prompt.move_cursor(prompt.document.end)

    def action_escape(self) -> None:
        """Esc: the last queued message goes back into the prompt; with none queued, the reply stops."""
        if not self._queue:
            self.action_stop()
            return
        view = self._queue.pop()
        self._put_back([view.text])
        self.call_later(self._remove_view, view)
        self.update_status()
