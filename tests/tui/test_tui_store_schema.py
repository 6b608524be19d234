"""The chat database's schema version: old databases migrate, newer ones are refused untouched."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

import localllm
from localllm.tui.store import SCHEMA_VERSION, History, HistoryVersionError
from localllm.tui.store.schema import MIGRATIONS

# Version 0: the schema exactly as localllm created it before user_version was set (kept
# here verbatim, not imported, so that a change to the store cannot change the fixture).
V0_SCHEMA = """
CREATE TABLE IF NOT EXISTS chats (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    system_prompt TEXT NOT NULL DEFAULT '',
    sampling TEXT NOT NULL DEFAULT '{}',
    model TEXT
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    chat_id INTEGER NOT NULL REFERENCES chats(id) ON DELETE CASCADE,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    created REAL NOT NULL,
    meta TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS messages_chat ON messages(chat_id, id);
CREATE TABLE IF NOT EXISTS prefs (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _version(path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def _v0_database(path) -> None:
    """A database as the code before versioning left it: its pragmas, its tables, two chats."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(V0_SCHEMA)
    db.execute(
        "INSERT INTO chats (id, title, created, updated, system_prompt, sampling, model) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (1, "Moon", 100.0, 101.0, "Be brief.", json.dumps({"temperature": 0.2}), "tiny"),
    )
    db.execute("INSERT INTO chats (id, title, created, updated) VALUES (2, 'Second', 102.0, 103.0)")
    rows = [
        (1, "user", "What is the moon made of?", 100.5, "{}"),
        (1, "assistant", "Rock.", 101.0, json.dumps({"finish_reason": "eos", "tokens": 3})),
        (2, "user", "hi", 103.0, "{}"),
    ]
    db.executemany("INSERT INTO messages (chat_id, role, content, created, meta) VALUES (?, ?, ?, ?, ?)", rows)
    db.execute("INSERT INTO prefs (key, value) VALUES ('theme', 'nord')")
    db.close()


def test_a_version_0_database_migrates_to_the_current_version_and_keeps_its_chats(tmp_path):
    db = tmp_path / "chats.sqlite3"
    _v0_database(db)
    assert _version(db) == 0
    with History(db) as h:
        assert [(c.id, c.title) for c in h.chats()] == [(2, "Second"), (1, "Moon")]
        moon = h.chat(1)
        assert moon.system_prompt == "Be brief." and moon.sampling == {"temperature": 0.2} and moon.model == "tiny"
        msgs = h.messages(1)
        assert [(m.role, m.content) for m in msgs] == [("user", "What is the moon made of?"), ("assistant", "Rock.")]
        assert msgs[1].meta == {"finish_reason": "eos", "tokens": 3}
        assert [m.content for m in h.messages(2)] == ["hi"]
        assert h.get_pref("theme") == "nord"
        h.add_message(2, "assistant", "hello")  # and it is writable as before
        assert h.recent_prompts() == []
    assert _version(db) == 2 == SCHEMA_VERSION
    with History(db) as h:  # opening a current database again changes nothing
        assert [m.content for m in h.messages(2)] == ["hi", "hello"]
    assert _version(db) == 2


def _v1_database(path) -> None:
    """A database as version 1 left it: the version-0 tables with user_version 1, one chat, a pref."""
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(V0_SCHEMA)
    db.execute("PRAGMA user_version = 1")
    db.execute("INSERT INTO chats (id, title, created, updated) VALUES (1, 'Moon', 100.0, 101.0)")
    db.execute("INSERT INTO messages (chat_id, role, content, created) VALUES (1, 'user', 'What is the moon?', 100.5)")
    db.execute("INSERT INTO prefs (key, value) VALUES ('theme', 'nord')")
    db.close()


def test_a_version_1_database_migrates_to_2_and_gains_prompt_history(tmp_path):
    db = tmp_path / "chats.sqlite3"
    _v1_database(db)
    assert _version(db) == 1
    with History(db) as h:
        assert [(c.id, c.title) for c in h.chats()] == [(1, "Moon")]
        assert [m.content for m in h.messages(1)] == ["What is the moon?"] and h.get_pref("theme") == "nord"
        assert h.recent_prompts() == []
        h.add_prompt("What is the moon?")
    assert _version(db) == 2 == SCHEMA_VERSION
    with History(db) as h:
        assert h.recent_prompts() == ["What is the moon?"]


def test_a_fresh_database_is_created_at_the_current_version(tmp_path):
    db = tmp_path / "new" / "chats.sqlite3"
    with History(db) as h:
        assert h.chats() == []
    assert _version(db) == SCHEMA_VERSION == len(MIGRATIONS) == 2
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"chats", "messages", "prefs", "prompts"}


def test_a_database_from_a_newer_localllm_is_refused_and_left_unchanged(tmp_path):
    db = tmp_path / "chats.sqlite3"
    with History(db) as h:
        c = h.new_chat()
        h.add_message(c.id, "user", "kept")
    raw = sqlite3.connect(db, isolation_level=None)
    raw.execute("PRAGMA journal_mode=DELETE")  # one file, so its bytes say everything
    raw.execute("PRAGMA user_version = 7")
    raw.close()
    before = db.read_bytes()
    with pytest.raises(HistoryVersionError) as info:
        History(db)
    err = info.value
    assert isinstance(err, localllm.LocalLLMError)
    assert (err.found, err.known, err.path) == (7, SCHEMA_VERSION, db)
    text = str(err)
    assert "schema version 7" in text and f"versions 0 to {SCHEMA_VERSION}" in text and "newer localllm" in text
    assert str(db) in text and "left unchanged" in text
    assert db.read_bytes() == before
    assert not db.with_name("chats.sqlite3-wal").exists()


def test_a_failed_migration_rolls_back(tmp_path, monkeypatch):
    """Each migration runs in a transaction with its version bump: a failure leaves the old version."""
    from localllm.tui.store import schema

    def broken(db):
        db.execute("CREATE TABLE half (x)")
        raise RuntimeError("migration failed")

    db = tmp_path / "chats.sqlite3"
    with History(db):
        pass
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, broken])
    monkeypatch.setattr(schema, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration failed"):
        History(db)
    assert _version(db) == SCHEMA_VERSION
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half" not in tables


def test_the_store_does_not_import_textual():
    code = "import sys, localllm.tui.store, localllm.tui.context; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
