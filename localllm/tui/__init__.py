"""The Textual chat app, imported as localllm.tui (Textual is imported only here).

from localllm.tui import ChatApp
ChatApp("model.gguf").run()

app.py        ChatApp: start-up, loading, model switching, theme, command palette
launch.py     run(): the app on a real terminal, native output sent to a log
terminal.py   keeps native stdout/stderr off the screen while it runs
library.py    the TUI's view of the library: start-up report, model list, loading (no Textual)
context.py    ChatContext: what the chat screen may use of the app (no Textual)
keymap.py     the user's keymap.toml (no Textual)
threads.py    lower_thread_priority for worker threads (no Textual)
screens/      one module per screen (chat, startup, plan, help, models, settings, dialogs)
widgets/      message view, prompt, status line, chat list
store/        the SQLite chat history and its schema versions (no Textual)
styles.tcss   the styles of every screen and widget
"""

from __future__ import annotations

from typing import Any

__all__ = ["ChatApp", "run"]


def __getattr__(name: str) -> Any:
    # lazy: localllm.tui.store (no Textual) sits in this package, so importing the package must not load the app
    if name == "ChatApp":
        from localllm.tui.app import ChatApp

        return ChatApp
    if name == "run":
        from localllm.tui.launch import run

        return run
    raise AttributeError(f"module 'localllm.tui' has no attribute {name!r}")
