"""The start-up screen: hardware summary and plan, fetch/load progress, or why nothing loads."""

from __future__ import annotations

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Label, ProgressBar, Static

from localllm.tui.library import Progress, StartupReport
from localllm.units import MIB

__all__ = ["StartupScreen", "report_text"]


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

    # keys that typing cannot press: text typed ahead here waits for the prompt (`typed`)
    BINDINGS = [
        Binding("ctrl+o", "app.models", "Choose a model", id="startup.models"),
        Binding("ctrl+r", "app.retry", "Retry", id="startup.retry"),
        Binding("ctrl+q", "app.quit", "Quit", id="startup.quit", priority=True),  # shown: the app's is not
    ]

    def __init__(self) -> None:
        super().__init__()
        self.typed = ""  # what was typed while this screen showed; the app puts it in the prompt

    def on_key(self, event: events.Key) -> None:
        if event.key == "backspace":
            self.typed = self.typed[:-1]
        elif event.key in ("enter", "shift+enter", "ctrl+j"):
            self.typed += "\n"  # kept as a line break: nothing is sent from here
        elif event.is_printable and event.character:
            self.typed += event.character
        else:
            return
        event.stop()

    @on(events.Paste)
    def _pasted(self, event: events.Paste) -> None:
        self.typed += event.text
        event.stop()

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
                what += f": {p.done / MIB:.0f} of {total / MIB:.0f} MiB"  # fixed unit: the number grows smoothly
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
        adv.update((advice + "\n\n" if advice else "") + "ctrl+o: choose a model · ctrl+r: retry · ctrl+q: quit")
        adv.remove_class("hidden")

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # model choice and retry only make sense once something went wrong
        if action in ("app.models", "app.retry", "models", "retry"):
            return not self.query_one("#error").has_class("hidden")
        return True
