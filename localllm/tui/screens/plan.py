"""PlanScreen: the start-up report again, on demand (F4)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

__all__ = ["PlanScreen"]


class PlanScreen(ModalScreen[None]):
    """The start-up report again: why this model, what was not chosen."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close", id="plan.close")]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(self.text, markup=False)
