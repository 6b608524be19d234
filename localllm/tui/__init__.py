"""The Textual chat app, imported as localllm.tui (Textual is imported only here).

    from localllm.tui import ChatApp
    ChatApp("model.gguf").run()

`localllm.tui.history` (the SQLite conversation store) does not import Textual.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChatApp", "run"]


def __getattr__(name: str) -> Any:
    if name == "ChatApp":
        from localllm.tui.app import ChatApp

        return ChatApp
    if name == "run":
        from localllm.tui.launch import run

        return run
    raise AttributeError(f"module 'localllm.tui' has no attribute {name!r}")
