"""PromptArea: where the user types; Enter sends, shift+enter / ctrl+j insert a newline.

Every key is handled here, in the widget's own queue, in the order it was typed. Enter is
not a priority binding: those run in the app's queue before the text area has inserted
the keys queued ahead of them, which sent a fast-typed message cut off (issue 20).

Without bracketed paste a terminal delivers a paste as keys, its newlines as Enter. An
Enter followed by more text of the same burst (already waiting, or arriving within
PASTE_GAP) is a line break of that paste, not a send; so an Enter waits PASTE_GAP for
its verdict. With bracketed paste the paste is one Paste event, inserted whole, never sent.
After a send, clear() takes out only the sent text: keys typed meanwhile stay.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.widgets import TextArea
from textual.widgets.text_area import EditResult

__all__ = ["PASTE_GAP", "PASTE_SPREAD", "PROMPT_HISTORY", "PromptArea", "PromptStore"]

# the clock of Message.time (textual._time): monotonic, perf_counter on Windows
_event_clock = time.perf_counter if sys.platform == "win32" else time.monotonic

# Telling an Enter that breaks a line of a paste from one that sends. Measured on a 2-core
# machine, a 3,000-character paste through tmux paste-buffer (as test_tui_e2e_input.py
# pastes), three runs quiet and three beside two busy processes:
# - Textual's input thread made the keys of one paste up to 75 ms apart: it waits for the
#   GIL while the UI thread inserts the keys before them. PASTE_SPREAD (on the clock of
#   Message.time) is three times that; a person starts a new message later than 250 ms
#   after Enter, and one who types faster on a backlogged app gets a newline, nothing lost.
# - The UI ran 0.4-1.2 s behind the paste, so the key after each Enter was already waiting
#   when the Enter was handled. PASTE_GAP is for an app that keeps up: the next key of a
#   paste then comes within a few ms, a person's 100 ms or more after Enter (fast typists
#   press keys 60-120 ms apart). 30 ms, plus one trip through the queues, keeps a typed
#   Enter's send under the 50 ms a person would notice (test_tui_input.py measures it).
PASTE_GAP = 0.03
PASTE_SPREAD = 0.25
PROMPT_HISTORY = 1000  # prompts loaded for up/down, as the store keeps at most


class PromptStore(Protocol):
    """Where prompts outlive the app (History implements it)."""

    def add_prompt(self, text: str) -> None: ...

    def recent_prompts(self, limit: int = 1000) -> list[str]: ...


class PromptArea(TextArea):
    """The prompt: Enter sends, shift+enter / ctrl+j insert a newline, up/down at the edges walk history."""

    # Not priority bindings, and dispatched by _on_key rather than by Textual (so in order):
    # they are here for their ids (keymap.toml remaps them), the help screen and the footer.
    BINDINGS = [
        Binding("enter", "submit", "Send", id="prompt.send"),
        Binding("shift+enter,ctrl+j", "newline", "Newline", id="prompt.newline", show=False),
    ]

    @dataclass
    class Submitted(Message):
        prompt: PromptArea
        text: str

    def __init__(self, *, id: str | None = None, prompts: PromptStore | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            compact=True,
            placeholder="Type a message. Enter sends, shift+enter or ctrl+j for a newline.",
        )
        self.prompts = prompts
        self.prompt_history: list[str] = []  # earlier prompts, oldest first
        self._history_pos: int | None = None  # index into history while walking it
        self._draft = ""
        self._enter_waits = False  # an Enter handled, awaiting its verdict: newline or send
        self._enter_seq = 0  # which Enter a verdict timer belongs to
        self._last_key_at = float("-inf")  # event time of the key before this one
        self._last_key_handled = float("-inf")  # and when this widget handled it (same clock)
        self._sent: str | None = None  # text of the last Submitted, until clear() takes it out

    def on_mount(self) -> None:
        if self.prompts is not None:
            self.prompt_history = self.prompts.recent_prompts(PROMPT_HISTORY)

    # -- keys, in order --------------------------------------------------------------

    async def _on_key(self, event: events.Key) -> None:
        action = None if event.is_printable else self._prompt_action(event.key)
        in_burst = self._in_burst(event.time)
        self._last_key_at, self._last_key_handled = event.time, _event_clock()
        if self._enter_waits:
            self._settle_enter(text=in_burst and (event.is_printable or action is not None or event.key == "tab"))
        if action == "submit":
            event.stop()
            event.prevent_default()
            self._enter_waits = True
            self._enter_seq += 1
            self.set_timer(PASTE_GAP, partial(self._enter_timer, self._enter_seq))
            return
        if action == "newline":
            event.stop()
            event.prevent_default()
            self.action_newline()
            return
        if event.key == "tab" and in_burst:  # a pasted tab is text: moving focus lost the rest of the paste
            event.stop()
            event.prevent_default()
            self._insert("\t")
            return
        await super()._on_key(event)

    async def _on_paste(self, event: events.Paste) -> None:
        """A bracketed paste: inserted whole, newlines included (CR LF and CR made LF), never sent."""
        event.stop()
        event.prevent_default()
        if self._enter_waits:
            self._settle_enter(text=self._in_burst(event.time))
        if self.read_only:
            return
        self._insert(event.text.replace("\r\n", "\n").replace("\r", "\n"))

    def _prompt_action(self, key: str) -> str | None:
        """ "submit" or "newline" when `key` is bound (after the user's keymap) to one of ours."""
        active = self.screen.active_bindings.get(key)
        if active is None or active.node is not self:
            return None
        return {"prompt.send": "submit", "prompt.newline": "newline"}.get(active.binding.id or "")

    def _in_burst(self, made: float) -> bool:
        """Whether an event made (by the input thread) at `made` follows the last key in one burst:
        made within PASTE_SPREAD of it, and no later than PASTE_GAP after this widget handled it."""
        return made - self._last_key_at <= PASTE_SPREAD and made <= self._last_key_handled + PASTE_GAP

    def _settle_enter(self, *, text: bool) -> None:
        """The Enter waiting for its verdict is a newline when text of its burst follows, else a send."""
        self._enter_waits = False
        if text:
            self._insert("\n")
        else:
            self._submit()

    def _enter_timer(self, seq: int) -> None:
        # keys read before the deadline may still wait in the app's queue (it forwards them
        # here): go round through it once, so they are handled first, then decide
        self.app.call_later(self.call_later, self._enter_deadline, seq)

    def _enter_deadline(self, seq: int) -> None:
        if self._enter_waits and seq == self._enter_seq:
            self._enter_waits = False
            self._submit()

    def _insert(self, text: str) -> None:
        start, end = self.selection
        self._replace_via_keyboard(text, start, end)

    # -- actions -----------------------------------------------------------------------

    def action_submit(self) -> None:
        self._enter_waits = False
        self._submit()

    def _submit(self) -> None:
        text = self.text
        if not text.strip():
            return
        self._sent = text
        self.post_message(self.Submitted(self, text))

    def action_newline(self) -> None:
        self._insert("\n")

    def clear(self) -> EditResult:
        """Empty the prompt; after a send, take out only the sent text: keys typed since stay."""
        sent, self._sent = self._sent, None
        if sent is not None and self.text.startswith(sent) and self.text != sent:
            end = (sent.count("\n"), len(sent) - sent.rfind("\n") - 1)  # where the sent text ends
            return self.delete((0, 0), end)
        return super().clear()

    def remember(self, text: str) -> None:
        """Add a sent prompt to the history (and to the store, which outlives the app)."""
        if not self.prompt_history or self.prompt_history[-1] != text:
            self.prompt_history.append(text)
            del self.prompt_history[:-PROMPT_HISTORY]
        self._history_pos = None
        if self.prompts is not None:
            self.prompts.add_prompt(text)

    # -- history -----------------------------------------------------------------------

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
