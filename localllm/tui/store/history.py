"""Conversations kept in SQLite: chats, their messages, settings, sent prompts. No Textual here.

Each message is committed as soon as it is complete, so killing the app in the middle
of a reply loses at most that reply. WAL with synchronous=NORMAL: a commit is durable
against a killed process (the WAL is in the OS page cache) without an fsync per
message on the UI thread; only a power cut may lose the last few commits (SQLite docs,
"WAL mode ... synchronous=NORMAL").

The database lives in the user's data folder (platformdirs), or in $LOCALLLM_DATA when
set, or under $LOCALLLM_HOME/data when only that is set (tests isolate themselves so).
Both are read at call time. Its schema version and migrations are in
localllm.tui.store.schema.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from localllm.paths import HOME_ENV, home
from localllm.tui.store.schema import check_version, migrate

__all__ = [
    "DATA_ENV",
    "Chat",
    "History",
    "Message",
    "data_dir",
    "default_db_path",
    "to_markdown",
]

DATA_ENV = "LOCALLLM_DATA"  # overrides the folder holding chats.sqlite3 and the keymap
DB_NAME = "chats.sqlite3"
DEFAULT_TITLE = "New chat"
TITLE_CHARS = 48  # a chat is titled from its first prompt, cut to fit the sidebar
ROLES = ("system", "user", "assistant")
PROMPTS_KEPT = 1000  # prompt history (up/down in the prompt): the newest this many prompts


def data_dir() -> Path:
    """Folder for chats and preferences: $LOCALLLM_DATA, $LOCALLLM_HOME/data, or the user data dir."""
    value = os.environ.get(DATA_ENV)
    if value:
        return Path(value).expanduser()
    if os.environ.get(HOME_ENV):
        return home() / "data"
    from platformdirs import user_data_dir  # only here: ~4 ms, and $LOCALLLM_HOME runs (tests) never need it

    return Path(user_data_dir("localllm", appauthor=False))


def default_db_path() -> Path:
    return data_dir() / DB_NAME


@dataclass(frozen=True)
class Message:
    id: int
    chat_id: int
    role: str  # system | user | assistant
    content: str
    created: float
    meta: Mapping[str, Any] = field(default_factory=dict)  # finish_reason, model, timings...


@dataclass(frozen=True)
class Chat:
    id: int
    title: str
    created: float
    updated: float
    system_prompt: str = ""
    sampling: Mapping[str, Any] = field(default_factory=dict)  # SamplingOptions field -> value
    model: str | None = None


class History:
    """The conversation store. Thread-safe: one connection guarded by a lock.

    Raises:
        HistoryVersionError: the database was written by a newer localllm (it is left unchanged).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # autocommit mode: every statement outside an explicit transaction commits at once
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA busy_timeout=5000")
            check_version(self._db, self.path)  # before anything writes: switching to WAL rewrites the header
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            with self._lock:
                migrate(self._db, self.path)
        except BaseException:
            self._db.close()
            raise

    # -- plumbing ---------------------------------------------------------------

    class _Tx:
        def __init__(self, history: History) -> None:
            self.h = history

        def __enter__(self) -> sqlite3.Connection:
            self.h._lock.acquire()
            self.h._db.execute("BEGIN IMMEDIATE")
            return self.h._db

        def __exit__(
            self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
        ) -> None:
            try:
                self.h._db.execute("ROLLBACK" if exc_type else "COMMIT")
            finally:
                self.h._lock.release()

    def _tx(self) -> History._Tx:
        return History._Tx(self)

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- chats ------------------------------------------------------------------

    def new_chat(
        self,
        *,
        title: str = DEFAULT_TITLE,
        system_prompt: str = "",
        sampling: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> Chat:
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO chats (title, created, updated, system_prompt, sampling, model) VALUES (?, ?, ?, ?, ?, ?)",
                (title, now, now, system_prompt, json.dumps(dict(sampling or {})), model),
            )
            chat_id = cur.lastrowid
        assert chat_id is not None  # set by every INSERT
        return self.chat(chat_id)

    def chat(self, chat_id: int) -> Chat:
        rows = self._query("SELECT * FROM chats WHERE id = ?", (chat_id,))
        if not rows:
            raise KeyError(f"no chat with id {chat_id}")
        return _chat(rows[0])

    def chats(self) -> list[Chat]:
        """All chats, most recently updated first."""
        return [_chat(r) for r in self._query("SELECT * FROM chats ORDER BY updated DESC, id DESC")]

    def rename(self, chat_id: int, title: str) -> Chat:
        title = " ".join(title.split()) or DEFAULT_TITLE
        with self._tx() as db:
            db.execute("UPDATE chats SET title = ? WHERE id = ?", (title, chat_id))
        return self.chat(chat_id)

    def delete(self, chat_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE chat_id = ?", (chat_id,))
            db.execute("DELETE FROM chats WHERE id = ?", (chat_id,))

    def update_settings(
        self,
        chat_id: int,
        *,
        system_prompt: str | None = None,
        sampling: Mapping[str, Any] | None = None,
        model: str | None = None,
    ) -> Chat:
        with self._tx() as db:
            if system_prompt is not None:
                db.execute("UPDATE chats SET system_prompt = ? WHERE id = ?", (system_prompt, chat_id))
            if sampling is not None:
                db.execute("UPDATE chats SET sampling = ? WHERE id = ?", (json.dumps(dict(sampling)), chat_id))
            if model is not None:
                db.execute("UPDATE chats SET model = ? WHERE id = ?", (model, chat_id))
        return self.chat(chat_id)

    # -- messages ---------------------------------------------------------------

    def add_message(self, chat_id: int, role: str, content: str, meta: Mapping[str, Any] | None = None) -> Message:
        """Append one complete message and commit it. The first user message titles a new chat."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO messages (chat_id, role, content, created, meta) VALUES (?, ?, ?, ?, ?)",
                (chat_id, role, content, now, json.dumps(dict(meta or {}))),
            )
            msg_id = cur.lastrowid
            assert msg_id is not None  # set by every INSERT
            db.execute("UPDATE chats SET updated = ? WHERE id = ?", (now, chat_id))
            if role == "user":
                db.execute(
                    "UPDATE chats SET title = ? WHERE id = ? AND title = ?",
                    (_title_from(content), chat_id, DEFAULT_TITLE),
                )
        return Message(msg_id, chat_id, role, content, now, dict(meta or {}))

    def delete_message(self, message_id: int) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    def messages(self, chat_id: int) -> list[Message]:
        rows = self._query("SELECT * FROM messages WHERE chat_id = ? ORDER BY id", (chat_id,))
        return [
            Message(r["id"], r["chat_id"], r["role"], r["content"], r["created"], json.loads(r["meta"] or "{}"))
            for r in rows
        ]

    # -- prompt history -----------------------------------------------------------

    def add_prompt(self, text: str) -> None:
        """Keep a sent prompt for the prompt's history: not twice in a row, the newest PROMPTS_KEPT only."""
        with self._tx() as db:
            last = db.execute("SELECT text FROM prompts ORDER BY id DESC LIMIT 1").fetchone()
            if last is not None and last["text"] == text:
                return
            db.execute("INSERT INTO prompts (text, created) VALUES (?, ?)", (text, time.time()))
            db.execute(
                "DELETE FROM prompts WHERE id <= (SELECT id FROM prompts ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (PROMPTS_KEPT,),
            )

    def recent_prompts(self, limit: int = PROMPTS_KEPT) -> list[str]:
        """The newest `limit` prompts, oldest first."""
        rows = self._query("SELECT text FROM prompts ORDER BY id DESC LIMIT ?", (max(0, limit),))
        return [r["text"] for r in reversed(rows)]

    # -- preferences (theme...) -------------------------------------------------

    def get_pref(self, key: str, default: str | None = None) -> str | None:
        rows = self._query("SELECT value FROM prefs WHERE key = ?", (key,))
        return rows[0]["value"] if rows else default

    def set_pref(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO prefs (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- export -----------------------------------------------------------------

    def export_markdown(self, chat_id: int, path: str | Path | None = None) -> Path:
        """Write the chat as Markdown; default path: <data dir>/exports/<id>-<title>.md."""
        chat = self.chat(chat_id)
        if path is None:
            slug = "".join(c if c.isalnum() else "-" for c in chat.title.lower()).strip("-")[:40]
            path = self.path.parent / "exports" / f"{chat.id}-{slug or 'chat'}.md"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(to_markdown(chat, self.messages(chat_id)), encoding="utf-8")
        return path


def to_markdown(chat: Chat, messages: list[Message]) -> str:
    lines = [f"# {chat.title}", ""]
    if chat.model:
        lines += [f"Model: `{chat.model}`", ""]
    if chat.system_prompt:
        lines += ["## System", "", chat.system_prompt, ""]
    for m in messages:
        lines += [f"## {m.role.capitalize()}", "", m.content, ""]
    return "\n".join(lines)


def _title_from(prompt: str) -> str:
    words = " ".join(prompt.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"


def _chat(r: sqlite3.Row) -> Chat:
    return Chat(
        r["id"],
        r["title"],
        r["created"],
        r["updated"],
        r["system_prompt"],
        json.loads(r["sampling"] or "{}"),
        r["model"],
    )
