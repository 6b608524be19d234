"""ChatApp: start-up (probe, plan, fetch, load) then chat; model switching; theme and keymap."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from textual import events, on, work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.message import Message
from textual.screen import Screen
from textual.theme import Theme
from textual.widgets import Input, TextArea

import localllm
from localllm.tui import collector, library
from localllm.tui.context import ChatContext, ModelSlot
from localllm.tui.keymap import keymap_path, load_keymap
from localllm.tui.library import Progress, StartupReport
from localllm.tui.screens import ChatScreen, HelpScreen, ModelSwitcher, PlanScreen, StartupScreen, report_text
from localllm.tui.store import History
from localllm.tui.threads import lower_thread_priority

__all__ = ["ChatApp", "keymap_path", "load_keymap"]

RECENT_PREF = "recent_models"  # local files loaded before, offered by the model switcher
RECENT_MAX = 10
# a second ctrl+c within this many seconds of the first quits (what a terminal user expects of
# ctrl+c, without a stray press ending the session)
QUIT_AGAIN_S = 1.0


@dataclass
class StartupReady(Message):
    report: StartupReport


@dataclass
class LoadProgress(Message):
    progress: Progress


@dataclass
class ModelLoaded(Message):
    model: localllm.Model
    target: str


@dataclass
class LoadFailed(Message):
    target: str
    error: str
    advice: str


class ChatApp(App):
    """`localllm chat`: explains its choice of model, loads it, and chats."""

    TITLE = "localllm chat"
    ENABLE_COMMAND_PALETTE = True
    # every screen's and widget's styles; absolute, since Textual resolves a relative path
    # beside the module of the running class, which for a subclass is elsewhere
    CSS_PATH = Path(__file__).with_name("styles.tcss")
    # priority: the prompt's own ctrl+c (copy) would otherwise take it; a selection is still
    # copied by it (see action_interrupt), and super+c copies too
    # Full garbage collections wait while a reply streams (localllm.tui.collector): False leaves
    # the process's collector alone, for an app that manages it itself.
    PACE_GC = True
    BINDINGS = [
        Binding(
            "ctrl+c", "interrupt", "Stop the reply; twice quits", id="localllm.interrupt", show=False, priority=True
        )
    ]

    def __init__(
        self,
        model: str | None = None,
        *,
        context: int | None = None,
        db_path: str | Path | None = None,
        hardware: Any = None,
        extra_models: Sequence[str | os.PathLike[str]] = (),
        hide_timings: bool = False,
        system_prompt: str = "",
        sampling: Mapping[str, Any] | None = None,
        loader: Callable[..., Any] | None = None,
    ) -> None:
        """
        Args:
            model: "auto"/None, a catalog name, or a local .gguf file / ONNX folder.
            context: context window in tokens (default: the plan's).
            db_path: the chat database (default: chats.sqlite3 in the user data folder).
            hardware: a localllm.Hardware to plan for instead of probing (e.g. load_profile(...)).
            extra_models: local files the model switcher offers besides the catalog.
            hide_timings: show no timings or thread counts (stable screenshots).
            system_prompt: system prompt of new chats.
            sampling: SamplingOptions fields for new chats (each chat keeps its own, ctrl+s edits).
            loader: loader(target, context=, progress=) -> Model; default localllm.load
                (through library.load_model). For embedding apps and test doubles.
        """
        super().__init__()
        self.requested = model or "auto"
        self.context = context
        self.history = History(db_path)
        self.hardware = hardware
        self.extra_models = [str(p) for p in extra_models]
        self.hide_timings = hide_timings
        self.default_system_prompt = system_prompt
        localllm.SamplingOptions.from_kwargs(**(sampling or {}))  # unknown or bad options raise now
        self.default_sampling = dict(sampling or {})
        self.loader = loader or library.load_model
        self.models = ModelSlot()  # shared with the chat screen through its context
        self.chat_context = ChatContext(
            history=self.history,
            models=self.models,
            system_prompt=self.default_system_prompt,
            sampling=self.default_sampling,
            hide_timings=hide_timings,
            pace_gc=self.PACE_GC,
        )
        self.report: StartupReport | None = None
        self.failed = False  # the last start-up or load failed and no model is in use: quitting exits 1
        self._interrupted_at = float("-inf")  # when ctrl+c last asked to quit or stopped a reply
        self._keymap_error = ""
        try:
            self.set_keymap(load_keymap())
        except (OSError, ValueError, localllm.LocalLLMError) as exc:
            self._keymap_error = f"Keymap ignored: {exc}"

    @property
    def model(self) -> localllm.Model | None:
        """The model in use; None until the first load finishes."""
        return self.models.model

    @model.setter
    def model(self, model: localllm.Model | None) -> None:
        self.models.model = model

    @property
    def loading(self) -> str:
        """What is being loaded now; "" when idle."""
        return self.models.loading

    @loading.setter
    def loading(self, target: str) -> None:
        self.models.loading = target

    # -- lifecycle --------------------------------------------------------------

    def get_default_screen(self) -> Screen:
        return ChatScreen(self.chat_context)

    def on_mount(self) -> None:
        theme = self.history.get_pref("theme")
        if theme and theme in self.available_themes:
            self.theme = theme
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        if self._keymap_error:
            self.notify(self._keymap_error, severity="warning", timeout=10)
        self.push_screen(StartupScreen())
        self._startup()

    def _remember_theme(self, theme: Theme) -> None:
        self.history.set_pref("theme", theme.name)

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.Paste)):  # every key from the terminal comes through here
            self.chat_context.input.pressed()
        await super().on_event(event)

    async def on_unmount(self) -> None:
        if self.PACE_GC:
            collector.reply_ended()  # a reply cut short by quitting
        model, self.model = self.model, None
        if model is not None:
            model.cancel()
            model.close()
        self.history.close()

    @property
    def chat_screen(self) -> ChatScreen:
        for screen in self.screen_stack:
            if isinstance(screen, ChatScreen):
                return screen
        raise LookupError("no chat screen")

    # -- start-up and loading (thread workers) ------------------------------------

    def action_retry(self) -> None:
        if isinstance(self.screen, StartupScreen):
            self._startup()

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def _startup(self) -> None:
        hardware = self.hardware
        report = library.startup_report(
            self.requested, context=self.context, probe=(lambda: hardware) if hardware is not None else None
        )
        self.post_message(StartupReady(report))
        if report.ok:
            self._load_blocking(self.requested)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load")
    def _switch(self, target: str) -> None:
        self._load_blocking(target)

    def _load_blocking(self, target: str) -> None:
        lower_thread_priority()  # runs in a load worker thread
        self.post_message(LoadProgress(Progress("load", detail=target)))

        def progress(p: Progress) -> None:
            self.post_message(LoadProgress(p))

        try:
            model = self.loader(target, context=self.context, progress=progress)
        except localllm.LocalLLMError as exc:
            self.post_message(LoadFailed(target, str(exc), library.advice_for(exc)))
            return
        except Exception as exc:  # the screen says what went wrong, never a traceback
            self.post_message(
                LoadFailed(
                    target, f"{type(exc).__name__}: {exc}", "This is a bug in localllm; the log is in the cache folder."
                )
            )
            return
        self.post_message(ModelLoaded(model, target))

    @on(StartupReady)
    def _on_startup_ready(self, msg: StartupReady) -> None:
        self.report = msg.report
        self.failed = not msg.report.ok and self.model is None
        if isinstance(self.screen, StartupScreen):
            self.screen.show_report(msg.report)

    @on(LoadProgress)
    def _on_progress(self, msg: LoadProgress) -> None:
        self.loading = msg.progress.detail or self.loading or "model"
        if isinstance(self.screen, StartupScreen):
            self.screen.show_progress(msg.progress)
        else:
            self.chat_screen.model_changed()

    @on(ModelLoaded)
    def _on_loaded(self, msg: ModelLoaded) -> None:
        old, self.model = self.model, msg.model
        self.loading = ""
        self.failed = False
        if old is not None:
            self._close_later(old)
        if library.looks_like_path(msg.target):
            self._remember_local(msg.target)
        typed = ""
        while isinstance(self.screen, StartupScreen):
            typed += self.screen.typed
            self.pop_screen()
        if typed:  # typed ahead during start-up: it lands in the prompt, never acted on
            self._type_ahead(typed)
        info = msg.model.info
        note = (
            f"**{info.name}** is ready ({info.runtime}, {library.describe_placement(info.placement)}, "
            f"context {info.n_ctx} tokens)."
        )
        if self.hide_timings:
            note = f"**{info.name}** is ready ({info.runtime}, context {info.n_ctx} tokens)."
        if self.report is not None and self.report.plan_text and old is None:
            note += " F4 shows why it was chosen."
        if info.note:  # load("auto") fell back to the built-in starter: say why and what to get
            note += "\n\n" + info.note
        plan = getattr(msg.model, "plan", None)
        if plan is not None and not info.note:
            note += library.sources_note(plan.sources, info.name)
        if plan is not None and self.report is not None and old is None:  # F4: the plan of what did load
            self.report = replace(self.report, plan_text=plan.explain(), rejected=())
        self.chat_screen.model_changed(note)

    @on(LoadFailed)
    def _on_load_failed(self, msg: LoadFailed) -> None:
        self.loading = ""
        self.failed = self.model is None
        if isinstance(self.screen, StartupScreen) or self.model is None and not self._on_chat_screen():
            if not isinstance(self.screen, StartupScreen):
                self.push_screen(StartupScreen())
                self.call_after_refresh(self._show_failure, msg)
            else:
                self._show_failure(msg)
        else:
            self.notify(f"Could not load {msg.target}: {msg.error}\n{msg.advice}", severity="error", timeout=15)
            self.chat_screen.model_changed()

    def _on_chat_screen(self) -> bool:
        return isinstance(self.screen, ChatScreen)

    def _show_failure(self, msg: LoadFailed) -> None:
        if isinstance(self.screen, StartupScreen):
            self.screen.show_error(msg.error, msg.advice)

    @work(thread=True, exit_on_error=False, group="close")
    def _close_later(self, model: localllm.Model) -> None:
        model.cancel()
        model.close()

    def _remember_local(self, target: str) -> None:
        recent = [str(Path(target).expanduser())]
        for p in (self.history.get_pref(RECENT_PREF) or "").split("\n"):
            if p and p not in recent:
                recent.append(p)
        self.history.set_pref(RECENT_PREF, "\n".join(recent[:RECENT_MAX]))

    def _type_ahead(self, text: str) -> None:
        try:
            prompt = self.chat_screen.query_one("#prompt", TextArea)
        except (LookupError, NoMatches):
            return
        prompt.insert(text)

    # -- actions ----------------------------------------------------------------

    async def action_quit(self) -> None:
        """Quit; the exit code is 1 when the app could not start a model (a failure shown, none loaded)."""
        self.exit(return_code=1 if self.failed and self.model is None else 0)

    async def action_interrupt(self) -> None:
        """ctrl+c: stop the reply being written, else copy a selection, else ask; twice within a second quits."""
        now = time.monotonic()
        if now - self._interrupted_at < QUIT_AGAIN_S:
            await self.action_quit()
            return
        screen = self.chat_screen
        if screen.generating:
            screen.action_stop()
            self._interrupted_at = now
            return
        selected = self._selected_text()
        if selected:
            self.copy_to_clipboard(selected)
            return
        self._interrupted_at = now
        self.notify("Press ctrl+c again to quit (or ctrl+q).", timeout=QUIT_AGAIN_S + 2)

    def _selected_text(self) -> str:
        focused = self.focused
        if isinstance(focused, (TextArea, Input)) and focused.selected_text:
            return focused.selected_text
        return self.screen.get_selected_text() or ""

    def switch_model(self, target: str) -> None:
        """Load another model without restarting; the current one serves until the new one is ready."""
        if self.model is not None and target == self.model.info.path:
            return
        screen = self.chat_screen
        if screen.generating:
            screen.action_stop()
        self.loading = target
        if self._on_chat_screen():
            screen.model_changed()
        self._switch(target)

    def action_models(self) -> None:
        hardware = self.hardware
        recent = [p for p in (self.history.get_pref(RECENT_PREF) or "").split("\n") if p]
        extra = list(dict.fromkeys([*self.extra_models, *recent]))

        def rows() -> list[library.VariantRow]:
            return library.list_models(hardware=hardware, extra=extra)

        current = self.model.info.path if self.model is not None else None

        def chosen(target: str | None) -> None:
            if target:
                if isinstance(self.screen, StartupScreen):
                    self.pop_screen()
                    self.push_screen(StartupScreen())
                    self.call_after_refresh(lambda: self._switch(target))
                    self.loading = target
                else:
                    self.switch_model(target)

        self.push_screen(ModelSwitcher(rows, current), chosen)

    def action_help(self) -> None:
        rows: list[tuple[str, str, str]] = []
        seen = set()
        for active in self.chat_screen.active_bindings.values():  # keys after the user's keymap
            b = active.binding
            if not b.description or b.action in seen:
                continue
            if (b.id or "").startswith(("localllm.", "prompt.")) or b.action in ("quit", "command_palette"):
                seen.add(b.action)
                rows.append((self.get_key_display(b), b.description, b.id or ""))
        rows.append(("up / down", "Previous / next prompt (on the first / last line)", ""))
        self.push_screen(HelpScreen(rows, str(keymap_path())))

    def action_show_plan(self) -> None:
        if self.report is None:
            self.notify("No plan yet.")
            return
        text = report_text(self.report)
        if self.model is not None:
            info = self.model.info
            text += (
                f"\nLoaded\n  {info.name} from {info.path}\n  {info.runtime}, "
                f"{library.describe_placement(info.placement)}, context {info.n_ctx} tokens\n"
            )
        self.push_screen(PlanScreen(text))

    # -- command palette ----------------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if not isinstance(screen, ChatScreen):
            return
        commands = [
            ("New chat", "Start an empty conversation", screen.action_new_chat),
            ("Stop", "Stop the reply being written (keeps what came so far)", screen.action_stop),
            ("Regenerate", "Write the last reply again", screen.action_regenerate),
            ("Copy reply", "Copy the last reply to the clipboard", screen.action_copy_reply),
            ("Switch model", "Every catalog model with its fit on this machine", self.action_models),
            ("Chat settings", "System prompt and sampling for this chat", screen.action_settings),
            ("Rename chat", "Give this chat a title", screen.action_rename_chat),
            ("Delete chat", "Delete this chat", screen.action_delete_chat),
            ("Export chat", "Write this chat as Markdown", screen.action_export_chat),
            ("Toggle chat list", "Show or hide the sidebar", screen.action_toggle_sidebar),
            ("Why this model", "Hardware, plan and rejected alternatives", self.action_show_plan),
            ("Help", "Keys and what they do", self.action_help),
        ]
        for title, help_text, callback in commands:
            yield SystemCommand(title, help_text, callback)
        for i in range(screen.code_block_count()):
            yield SystemCommand(f"Copy code block {i + 1}", "From the last reply", _bind(screen.action_copy_code, i))


def _bind(fn: Callable[[int], Any], i: int) -> Callable[[], Any]:
    return lambda: fn(i)
