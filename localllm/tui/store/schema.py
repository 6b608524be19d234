"""The chat database's schema: its version in `PRAGMA user_version`, and the migrations to it.

MIGRATIONS[i] takes a database from version i to version i + 1; each runs in its own
transaction together with the version bump, so a crash leaves the old version or the new
one, never half of one. Version 0 is a database from before versioning (the tables of
version 1, made by the code of then, with user_version never set) or an empty file.
Version 2 adds the prompts table (prompt history).
A database newer than this code knows is refused unchanged: an older localllm writing
into it could lose what the newer one keeps.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from localllm.errors import HistoryVersionError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "HistoryVersionError", "check_version", "migrate", "user_version"]


def _v1_tables(db: sqlite3.Connection) -> None:
    """Chats, their messages, preferences. IF NOT EXISTS: a version-0 database already has them."""
    db.execute("""
        CREATE TABLE IF NOT EXISTS chats (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            system_prompt TEXT NOT NULL DEFAULT '',
            sampling TEXT NOT NULL DEFAULT '{}',
            model TEXT
        )""")
    db.execute("""
        CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            created REAL NOT NULL,
            meta TEXT NOT NULL DEFAULT '{}'
        )""")
    db.execute("CREATE INDEX IF NOT EXISTS messages_chat ON messages(chat_id, id)")
    db.execute("""
        CREATE TABLE IF NOT EXISTS prefs (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        )""")


def _v2_prompts(db: sqlite3.Connection) -> None:
    """Prompts as sent, for up/down in the prompt across restarts (History keeps the newest)."""
    db.execute("""
        CREATE TABLE prompts (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL,
            created REAL NOT NULL
        )""")


# in order: MIGRATIONS[i] upgrades version i to i + 1; append, never edit a released one
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1_tables, _v2_prompts]
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def check_version(db: sqlite3.Connection, path: Path) -> int:
    """The database's version; HistoryVersionError when it is newer than SCHEMA_VERSION (or < 0). Reads only."""
    found = user_version(db)
    if not 0 <= found <= SCHEMA_VERSION:
        raise HistoryVersionError(path, found, SCHEMA_VERSION)
    return found


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database (a connection in autocommit mode) to SCHEMA_VERSION, one step per transaction."""
    while True:
        db.execute("BEGIN IMMEDIATE")  # the version is read again under the write lock: another process may migrate
        try:
            version = check_version(db, path)
            if version >= SCHEMA_VERSION:
                db.execute("COMMIT")
                return
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version + 1}")  # part of the transaction
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
