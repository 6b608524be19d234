"""Screens: start-up (hardware, plan, progress, errors), model switcher, help, dialogs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, ProgressBar, Static, TextArea

from localllm.tui.backend import Progress, StartupReport, VariantRow

__all__ = [
    "ConfirmScreen",
    "HelpScreen",
    "ModelSwitcher",
    "PlanScreen",
    "SettingsScreen",
    "StartupScreen",
    "TextPrompt",
    "report_text",
]

# sampling settings editable per chat: SamplingOptions field -> (label, parser)
SAMPLING_FIELDS: dict[str, tuple[str, type]] = {
    "temperature": ("Temperature (0 = greedy)", float),
    "top_p": ("Top-p", float),
    "top_k": ("Top-k (0 = off)", int),
    "min_p": ("Min-p", float),
    "repeat_penalty": ("Repeat penalty (1 = off)", float),
    "max_tokens": ("Max tokens per reply", int),
    "seed": ("Seed (empty = random)", int),
}


def report_text(report: StartupReport) -> str:
    """The start-up report as plain text (also used by the plan review screen)."""
    parts = ["Hardware", *("  " + line for line in report.hardware), ""]
    if report.plan_text:
        parts += ["Plan", *("  " + line for line in report.plan_text.splitlines()), ""]
    if report.rejected and "rejected:" not in report.plan_text:  # explain() may list them already
        parts += ["Not chosen", *("  - " + line for line in report.rejected), ""]
    return "\n".join(parts).rstrip() + "\n"


class StartupScreen(Screen):
    """Hardware summary and plan, then fetch/load progress; or why nothing can be loaded."""

    DEFAULT_CSS = """
    StartupScreen { align: center top; }
    StartupScreen #startup-box { width: 100; max-width: 100%; height: auto; padding: 1 2; }
    StartupScreen #title { text-style: bold; color: $accent; margin-bottom: 1; }
    StartupScreen #report { height: auto; }
    StartupScreen #stage { margin-top: 1; }
    StartupScreen ProgressBar { margin-top: 0; }
    StartupScreen #error { color: $error; margin-top: 1; height: auto; }
    StartupScreen #advice { margin-top: 1; height: auto; }
    StartupScreen .hidden { display: none; }
    """

    BINDINGS = [
        Binding("ctrl+o", "app.models", "Choose a model", id="startup.models"),
        Binding("r", "app.retry", "Retry", id="startup.retry"),
        Binding("q", "app.quit", "Quit", id="startup.quit"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="startup-box"):
            yield Label("localllm chat", id="title")
            yield Static("Probing this machine…", id="report", markup=False)
            yield Label("", id="stage", markup=False)
            yield ProgressBar(total=None, show_eta=False, id="progress")
            yield Static("", id="error", classes="hidden", markup=False)
            yield Static("", id="advice", classes="hidden", markup=False)
        yield Footer()

    def show_report(self, report: StartupReport) -> None:
        self.query_one("#report", Static).update(report_text(report))
        if report.ok:
            self.show_progress(Progress("load", detail=report.target))
        else:
            self.show_error(report.error, report.advice)

    def show_progress(self, p: Progress) -> None:
        self.query_one("#error").add_class("hidden")
        self.query_one("#advice").add_class("hidden")
        bar = self.query_one(ProgressBar)
        bar.remove_class("hidden")
        if p.stage == "download":
            total = p.total
            what = f"Downloading {p.detail}" if p.detail else "Downloading"
            if total:
                what += f": {p.done / 2**20:.0f} of {total / 2**20:.0f} MiB"
            self.query_one("#stage", Label).update(what)
            bar.update(total=total, progress=p.done)
        else:
            self.query_one("#stage", Label).update(f"Loading {p.detail}…" if p.detail else "Loading…")
            bar.update(total=None)

    def show_error(self, error: str, advice: str) -> None:
        self.query_one("#stage", Label).update("")
        self.query_one(ProgressBar).add_class("hidden")
        err = self.query_one("#error", Static)
        err.update(error)
        err.remove_class("hidden")
        adv = self.query_one("#advice", Static)
        adv.update((advice + "\n\n" if advice else "") + "ctrl+o: choose a model · r: retry · q: quit")
        adv.remove_class("hidden")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # model choice and retry only make sense once something went wrong
        if action in ("app.models", "app.retry", "models", "retry"):
            return not self.query_one("#error").has_class("hidden")
        return True


class PlanScreen(ModalScreen[None]):
    """The start-up report again: why this model, what was not chosen."""

    DEFAULT_CSS = """
    PlanScreen { align: center middle; }
    PlanScreen > VerticalScroll { width: 100; max-width: 95%; height: 80%; border: thick $accent; padding: 1 2;
        background: $surface; }
    """
    BINDINGS = [Binding("escape,q", "dismiss", "Close", id="plan.close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(self.text, markup=False)


class HelpScreen(ModalScreen[None]):
    """Every key and what it does (keys as remapped by the user's keymap)."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical { width: 100; max-width: 98%; height: 95%; border: thick $accent;
        background: $surface; padding: 0 1; }
    HelpScreen DataTable { height: 1fr; }
    HelpScreen #keymap-note { color: $text-muted; height: auto; }
    """
    BINDINGS = [Binding("escape,q,f1", "dismiss", "Close", id="help.close")]

    def __init__(self, rows: Sequence[tuple[str, str, str]], keymap_path: str) -> None:
        super().__init__()
        self.rows = list(rows)
        self.keymap_path = keymap_path

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f'Keys. Remap them in {self.keymap_path} by binding id, e.g. [keys] "localllm.stop" = "ctrl+c"',
                id="keymap-note",
                markup=False,
            )
            yield DataTable(cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Key", "Action", "Binding id")
        for row in self.rows:
            table.add_row(*row)


class ModelSwitcher(ModalScreen["str | None"]):
    """Every catalog variant with its fit here, local files, which are on disk; Enter switches."""

    DEFAULT_CSS = """
    ModelSwitcher { align: center middle; }
    ModelSwitcher > Vertical { width: 110; max-width: 98%; height: 85%; border: thick $accent;
        background: $surface; padding: 0 1; }
    ModelSwitcher #models-title { text-style: bold; padding: 0 0 1 0; }
    ModelSwitcher DataTable { height: 1fr; }
    ModelSwitcher #models-note { color: $text-muted; height: auto; }
    """
    BINDINGS = [Binding("escape", "dismiss_none", "Cancel", id="models.cancel")]

    def __init__(self, rows_loader: Any, current: str | None = None) -> None:
        super().__init__()
        self._loader = rows_loader  # () -> list[VariantRow], run in a thread
        self.current = current
        self.rows: list[VariantRow] = []

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Switch model: Enter loads the highlighted row, Escape cancels", id="models-title")
            yield DataTable(cursor_type="row", zebra_stripes=True, id="models-table")
            yield Static("Working out what fits this machine…", id="models-note", markup=False)

    def on_mount(self) -> None:
        self.query_one(DataTable).add_columns("", "Model", "Quant", "Size", "Fit here", "On disk")
        self._load_rows()

    @work(thread=True, exclusive=True, exit_on_error=False)
    def _load_rows(self) -> None:
        try:
            rows = self._loader()
            self.app.call_from_thread(self._fill, rows, "")
        except Exception as exc:  # shown, never a traceback
            self.app.call_from_thread(self._fill, [], f"Could not list models: {exc}")

    def _fill(self, rows: list[VariantRow], note: str) -> None:
        self.rows = rows
        table = self.query_one(DataTable)
        table.clear()
        for row in rows:
            size = (
                ""
                if row.size_bytes is None
                else f"{row.size_bytes / 2**30:.2f} GiB"
                if row.size_bytes >= 2**27
                else f"{row.size_bytes / 2**20:.1f} MiB"
            )
            mark = "●" if self.current and row.target == self.current else ""
            table.add_row(mark, row.name, row.quant, size, row.fit, "yes" if row.on_disk else "", key=row.target)
        fits = sum(r.fit in ("GPU", "partial", "CPU") for r in rows)
        self.query_one("#models-note", Static).update(
            note or f"{len(rows)} models, {fits} fit this machine, {sum(r.on_disk for r in rows)} on disk."
        )
        table.focus()

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(str(event.row_key.value))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)


class TextPrompt(ModalScreen["str | None"]):
    """Ask for one line of text (rename a chat)."""

    DEFAULT_CSS = """
    TextPrompt { align: center middle; }
    TextPrompt > Vertical { width: 64; height: auto; border: thick $accent; background: $surface; padding: 1 2; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="textprompt.cancel")]

    def __init__(self, title: str, value: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, markup=False)
            yield Input(self.value, id="text-input")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    DEFAULT_CSS = """
    ConfirmScreen { align: center middle; }
    ConfirmScreen > Vertical { width: 64; height: auto; border: thick $error; background: $surface; padding: 1 2; }
    ConfirmScreen Horizontal { height: auto; margin-top: 1; }
    """
    BINDINGS = [
        Binding("escape,n", "answer(False)", "No", id="confirm.no"),
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
    ]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question, markup=False)
            with Horizontal():
                yield Button("Yes (y)", variant="error", id="yes")
                yield Button("No (n)", id="no")

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class SettingsScreen(ModalScreen["dict | None"]):
    """System prompt and sampling settings of one chat; checked by localllm.SamplingOptions."""

    DEFAULT_CSS = """
    SettingsScreen { align: center middle; }
    SettingsScreen > VerticalScroll { width: 80; max-width: 98%; height: 90%; border: thick $accent;
        background: $surface; padding: 0 2; }
    SettingsScreen TextArea { height: 6; }
    SettingsScreen .field { height: auto; }
    SettingsScreen .field Label { width: 28; padding: 1 1 0 0; }
    SettingsScreen .field Input { width: 1fr; }
    SettingsScreen #settings-error { color: $error; height: auto; }
    SettingsScreen Horizontal#buttons { height: auto; margin: 1 0; }
    """
    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="settings.cancel"),
        Binding("ctrl+s", "save", "Save", id="settings.save", priority=True),
    ]

    def __init__(self, system_prompt: str, sampling: dict[str, Any]) -> None:
        super().__init__()
        self.system_prompt = system_prompt
        self.sampling = dict(sampling)

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Label("System prompt")
            yield TextArea(self.system_prompt, id="system-prompt", soft_wrap=True)
            for name, (label, _) in SAMPLING_FIELDS.items():
                value = self.sampling.get(name)
                with Horizontal(classes="field"):
                    yield Label(label)
                    yield Input("" if value is None else str(value), id=f"opt-{name}", placeholder="default")
            yield Static("", id="settings-error", markup=False)
            with Horizontal(id="buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="save")
                yield Button("Cancel (esc)", id="cancel")

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        import localllm

        values: dict[str, Any] = {}
        problems = []
        for name, (label, parse) in SAMPLING_FIELDS.items():
            raw = self.query_one(f"#opt-{name}", Input).value.strip()
            if not raw:
                continue
            try:
                values[name] = parse(raw)
            except ValueError:
                problems.append(f"{label}: {raw!r} is not a{'n integer' if parse is int else ' number'}")
        if not problems:
            try:
                localllm.SamplingOptions(**values)
            except (TypeError, ValueError) as exc:
                problems.append(str(exc))
        if problems:
            self.query_one("#settings-error", Static).update("\n".join(problems))
            return
        self.dismiss({"system_prompt": self.query_one("#system-prompt", TextArea).text, "sampling": values})

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


def binding_rows(bindings: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    seen, out = set(), []
    for key, desc, bid in bindings:
        if (key, desc) not in seen:
            seen.add((key, desc))
            out.append((key, desc, bid))
    return out


def fmt_rate(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.1f}"
