"""The chat history store (SQLite). No Textual here: scripts and tests use it without the app.

history.py   History (chats, messages, prompt history, preferences), Chat, Message, data_dir, to_markdown
schema.py    the schema version (PRAGMA user_version), its migrations, HistoryVersionError
"""

from __future__ import annotations

from localllm.tui.store.history import DATA_ENV, Chat, History, Message, data_dir, default_db_path, to_markdown
from localllm.tui.store.schema import SCHEMA_VERSION, HistoryVersionError

__all__ = [
    "DATA_ENV",
    "SCHEMA_VERSION",
    "Chat",
    "History",
    "HistoryVersionError",
    "Message",
    "data_dir",
    "default_db_path",
    "to_markdown",
]
