"""Run the app on a real terminal, with native output kept off the screen."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from localllm.tui.terminal import protect_terminal

__all__ = ["run"]


def run(
    model: str | None = None,
    *,
    context: int | None = None,
    hardware: Any = None,
    log_path: str | Path | None = None,
    **options: Any,
) -> int:
    """Open the chat app; returns the exit code. Native stderr/stdout go to a log file meanwhile."""
    from localllm.tui.app import ChatApp  # Textual loads here, not when the CLI imports this module

    app = ChatApp(model, context=context, hardware=hardware, **options)
    with protect_terminal(log_path) as log:
        # Python logging goes to the same file: a handler on stderr would draw over the TUI
        handler = logging.FileHandler(log, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            app.run()
        finally:
            root.removeHandler(handler)
            handler.close()
    return int(app.return_code or 0)
