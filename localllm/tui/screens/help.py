"""HelpScreen: every key and what it does."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

__all__ = ["HelpScreen"]


class HelpScreen(ModalScreen[None]):
    """Every key and what it does (keys as remapped by the user's keymap)."""

    BINDINGS = [Binding("escape,q,f1", "dismiss", "Close", id="help.close")]

    def __init__(self, rows: Sequence[tuple[str, str, str]], keymap_path: str) -> None:
        super().__init__()
        self.rows = list(rows)
        self.keymap_path = keymap_path

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(
                f'Keys. Remap them in {self.keymap_path} by binding id, e.g. [keys] "localllm.new_chat" = "f9"',
                id="keymap-note",
                markup=False,
            )
            yield DataTable(cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Key", "Action", "Binding id")
        for row in self.rows:
            table.add_row(*row)
