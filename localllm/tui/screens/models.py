"""ModelSwitcher: catalog variants and local files with their fit here; type to filter, Enter loads one."""

from __future__ import annotations

from collections.abc import Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Static

from localllm.tui.library import VariantRow
from localllm.units import memory_size

__all__ = ["ModelSwitcher", "matches"]

OFFLINE_MARK = "not downloaded · offline"  # the On disk column of a row that cannot be had now


def matches(row: VariantRow, query: str) -> bool:
    """Every word of the query is in the row's name or quant (case-insensitive); "" matches all."""
    text = f"{row.name} {row.quant}".lower()
    return all(word in text for word in query.lower().split())


class ModelSwitcher(ModalScreen["str | None"]):
    """Every catalog variant with its fit here, local files, which are on disk; type to filter, Enter switches."""

    AUTO_FOCUS = "#models-filter"  # typing filters at once; up/down move through the rows

    BINDINGS = [
        Binding("escape", "dismiss_none", "Cancel", id="models.cancel"),
        Binding("up", "move(-1)", "Up", show=False, id="models.up"),
        Binding("down", "move(1)", "Down", show=False, id="models.down"),
        Binding("pageup", "move(-10)", "Page up", show=False, id="models.page_up"),
        Binding("pagedown", "move(10)", "Page down", show=False, id="models.page_down"),
    ]

    def __init__(self, rows_loader: Callable[[], list[VariantRow]], current: str | None = None) -> None:
        super().__init__()
        self._loader = rows_loader  # run in a thread: it plans every catalog variant
        self.current = current
        self.rows: list[VariantRow] = []  # every row; the table shows those matching the filter
        self.shown: list[VariantRow] = []
        self._note = ""

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(
                "Switch model: type to filter, Enter loads the highlighted row, Escape cancels", id="models-title"
            )
            yield Input(placeholder="filter by name or quant, e.g. llama q4", id="models-filter")
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
        self._note = note
        self._show(self.query_one("#models-filter", Input).value)

    @on(Input.Changed, "#models-filter")
    def _filter(self, event: Input.Changed) -> None:
        self._show(event.value)

    def _show(self, query: str) -> None:
        self.shown = [r for r in self.rows if matches(r, query)]
        table = self.query_one(DataTable)
        table.clear()
        for row in self.shown:
            size = memory_size(row.size_bytes, unknown="")
            mark = "●" if self.current and row.target == self.current else ""
            disk = "yes" if row.on_disk else "" if row.available else OFFLINE_MARK
            table.add_row(mark, row.name, row.quant, size, row.fit, disk, key=row.target)
        rows = self.rows
        fits = sum(r.fit in ("GPU", "partial", "CPU") for r in rows)
        text = f"{len(rows)} models, {fits} fit this machine, {sum(r.on_disk for r in rows)} on disk."
        if query.strip():
            text = f"{len(self.shown)} of {len(rows)} models match {query.strip()!r}."
        if any(not r.available for r in rows):
            text += " Offline: only what is on disk can be loaded."
        self.query_one("#models-note", Static).update(self._note or text)

    def action_move(self, step: int) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            table.move_cursor(row=max(0, min(table.row_count - 1, table.cursor_row + step)))

    @on(Input.Submitted, "#models-filter")
    def _submitted(self) -> None:
        table = self.query_one(DataTable)
        if table.row_count:
            self._choose(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self._choose(str(event.row_key.value))

    def _choose(self, target: str) -> None:
        row = next((r for r in self.rows if r.target == target), None)
        if row is not None and not row.available:
            self.notify(
                f"{row.name} is not on disk and localllm is offline: connect and run `localllm pull {row.name}`, "
                "or choose a model marked on disk.",
                severity="warning",
                timeout=8,
            )
            return
        self.dismiss(target)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
