"""The conversation store alone (no Textual): real SQLite files, a real killed process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from localllm.tui.store.history import (
    DEFAULT_TITLE,
    PROMPTS_KEPT,
    History,
    data_dir,
    default_db_path,
    to_markdown,
)


def test_data_dir_reads_environment_at_call_time(monkeypatch, tmp_path):
    monkeypatch.delenv("LOCALLLM_DATA", raising=False)
    monkeypatch.setenv("LOCALLLM_HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home" / "data"
    monkeypatch.setenv("LOCALLLM_DATA", str(tmp_path / "elsewhere"))
    assert default_db_path() == tmp_path / "elsewhere" / "chats.sqlite3"


def test_chats_messages_and_titles_survive_reopen(tmp_path):
    db = tmp_path / "c.sqlite3"
    with History(db) as h:
        a = h.new_chat(system_prompt="Be brief.", sampling={"temperature": 0.2})
        assert a.title == DEFAULT_TITLE
        h.add_message(a.id, "user", "What   is the\nmoon made of? " + "x" * 80)
        h.add_message(a.id, "assistant", "Rock.", meta={"finish_reason": "eos"})
        b = h.new_chat()
        h.add_message(b.id, "user", "second")
    with History(db) as h:
        chats = h.chats()
        assert [c.id for c in chats] == [b.id, a.id]  # most recent first
        first = h.chat(a.id)
        assert first.title.startswith("What is the moon made of?") and len(first.title) <= 48
        assert first.system_prompt == "Be brief." and first.sampling == {"temperature": 0.2}
        msgs = h.messages(a.id)
        assert [(m.role, m.content) for m in msgs][1] == ("assistant", "Rock.")
        assert msgs[1].meta == {"finish_reason": "eos"}
        assert (
            h.path.with_name("c.sqlite3-wal").exists()
            or sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        )


def test_rename_delete_settings_export(tmp_path):
    with History(tmp_path / "c.sqlite3") as h:
        c = h.new_chat()
        h.add_message(c.id, "user", "hi")
        h.add_message(c.id, "assistant", "```python\nprint(1)\n```")
        assert h.rename(c.id, "  My   chat ").title == "My chat"
        assert h.update_settings(c.id, system_prompt="S", sampling={"top_k": 5}).sampling == {"top_k": 5}
        out = h.export_markdown(c.id)
        text = out.read_text()
        assert text.startswith("# My chat") and "## System\n\nS" in text and "print(1)" in text
        assert out.parent == tmp_path / "exports"
        h.delete(c.id)
        assert h.chats() == [] and h.messages(c.id) == []
        with pytest.raises(KeyError):
            h.chat(c.id)
        with pytest.raises(ValueError, match="role must be one of"):
            h.add_message(1, "robot", "x")


def test_prefs(tmp_path):
    with History(tmp_path / "c.sqlite3") as h:
        assert h.get_pref("theme", "x") == "x"
        h.set_pref("theme", "nord")
        h.set_pref("theme", "gruvbox")
    with History(tmp_path / "c.sqlite3") as h:
        assert h.get_pref("theme") == "gruvbox"


def test_prompt_history_survives_reopen_without_repeats(tmp_path):
    db = tmp_path / "c.sqlite3"
    with History(db) as h:
        for text in ["one", "two", "two", "three\nlines", "one"]:
            h.add_prompt(text)
        assert h.recent_prompts() == ["one", "two", "three\nlines", "one"]  # only a repeat in a row is dropped
        assert h.recent_prompts(2) == ["three\nlines", "one"]  # the newest, oldest first
    with History(db) as h:
        assert h.recent_prompts() == ["one", "two", "three\nlines", "one"]


def test_prompt_history_keeps_the_newest(tmp_path, monkeypatch):
    from localllm.tui.store import history

    assert PROMPTS_KEPT == 1000
    monkeypatch.setattr(history, "PROMPTS_KEPT", 5)
    with History(tmp_path / "c.sqlite3") as h:
        for i in range(12):
            h.add_prompt(f"p{i}")
        assert h.recent_prompts(100) == [f"p{i}" for i in range(7, 12)]
        (count,) = h._query("SELECT count(*) FROM prompts")[0]
        assert count == 5


def test_sigkill_while_writing_loses_no_committed_message(tmp_path):
    """A process that commits messages through History and is SIGKILLed keeps all of them."""
    db = tmp_path / "c.sqlite3"
    ready = tmp_path / "ready"
    script = textwrap.dedent(f"""
        import time
        from localllm.tui.store.history import History
        h = History({str(db)!r})
        c = h.new_chat()
        for i in range(5):
            h.add_message(c.id, "user", f"question {{i}}")
            h.add_message(c.id, "assistant", f"answer {{i}}")
        open({str(ready)!r}, "w").close()
        while True:  # the 'reply in progress' that gets killed
            time.sleep(0.01)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert proc.poll() is None, "writer died early"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with History(db) as h:
        (chat,) = h.chats()
        assert [m.content for m in h.messages(chat.id)] == [
            s for i in range(5) for s in (f"question {i}", f"answer {i}")
        ]


def test_to_markdown_without_model():
    from localllm.tui.store.history import Chat, Message

    text = to_markdown(Chat(1, "T", 0, 0), [Message(1, 1, "user", "hello", 0)])
    assert text == "# T\n\n## User\n\nhello\n"
