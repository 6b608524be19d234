"""ModelSwitcher: catalog variants and local files with their fit here; Enter loads one."""

from __future__ import annotations

from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Label, Static

from localllm.tui.library import VariantRow
from localllm.units import memory_size

__all__ = ["ModelSwitcher"]


class ModelSwitcher(ModalScreen["str | None"]):
    """Every catalog variant with its fit here, local files, which are on disk; Enter switches."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel", id="models.cancel")]

    def __init__(self, rows_loader: Callable[[], list[VariantRow]], current: str | None = None) -> None:
        super().__init__()
        self._loader = rows_loader  # run in a thread: it plans every catalog variant
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
            size = memory_size(row.size_bytes, unknown="")
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
