"""SettingsScreen: the system prompt and sampling settings of one chat."""

from __future__ import annotations

from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
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
    """System prompt and sampling settings of one chat; checked by localllm.SamplingOptions."""

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
