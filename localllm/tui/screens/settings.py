"""SettingsScreen: the system prompt and sampling settings of one chat."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, TextArea

import localllm

__all__ = ["SAMPLING_FIELDS", "SettingsScreen"]


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


class SettingsScreen(ModalScreen["dict | None"]):
    """System prompt and sampling settings of one chat; each value checked by localllm.SamplingOptions."""

    # one line per field (compact inputs) and the buttons outside the scrolling part, so
    # Save and Cancel show on a 120x36 terminal and smaller ones (the fields scroll there).
    # Its own class names, not .field: the app's styles.tcss sized those for bordered inputs.
    AUTO_FOCUS = "#system-prompt"  # the first field: what is typed on opening lands there

    BINDINGS = [
        Binding("escape", "cancel", "Cancel", id="settings.cancel"),
        Binding("ctrl+s", "save", "Save", id="settings.save", priority=True),
    ]

    def __init__(self, system_prompt: str, sampling: dict[str, Any]) -> None:
        super().__init__()
        self.system_prompt = system_prompt
        self.sampling = dict(sampling)

    def compose(self) -> ComposeResult:
        with Vertical(id="settings-dialog"):
            with VerticalScroll(id="settings-fields", can_focus=False):
                yield Label("System prompt")
                yield TextArea(self.system_prompt, id="system-prompt", soft_wrap=True)
                for name, (label, _) in SAMPLING_FIELDS.items():
                    value = self.sampling.get(name)
                    with Horizontal(classes="setting"):
                        yield Label(label)
                        yield Input(
                            "" if value is None else str(value), id=f"opt-{name}", placeholder="default", compact=True
                        )
            yield Static("", id="settings-error", markup=False)
            with Horizontal(id="settings-buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="save", compact=True)
                yield Button("Cancel (esc)", id="cancel", compact=True)

    def problems(self) -> tuple[dict[str, Any], list[str]]:
        """The values typed, and what is wrong with them: each names the field, the value and what
        is allowed (the library's own ranges, from SamplingOptions)."""
        values: dict[str, Any] = {}
        problems = []
        for name, (label, parse) in SAMPLING_FIELDS.items():
            raw = self.query_one(f"#opt-{name}", Input).value.strip()
            if not raw:
                continue
            try:
                value = parse(raw)
            except ValueError:
                problems.append(f"{label}: {raw!r} is not a{'n integer' if parse is int else ' number'}")
                continue
            try:
                localllm.SamplingOptions(**{name: value})  # one field at a time: every bad one is named
            except localllm.InvalidOptionError as exc:
                problems.append(f"{label} = {raw}: {name} must be {exc.allowed}")
                continue
            except (TypeError, ValueError) as exc:
                problems.append(f"{label} = {raw}: {exc}")
                continue
            values[name] = value
        return values, problems

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        values, problems = self.problems()
        if problems:
            self.query_one("#settings-error", Static).update("\n".join(problems))
            return
        self.dismiss({"system_prompt": self.query_one("#system-prompt", TextArea).text, "sampling": values})

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
