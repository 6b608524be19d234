"""Snapshots of the main screens at a fixed size, timings and machine-dependent numbers hidden.

Update after an intended change with: python -m pytest tests/tui/test_tui_snapshots.py --snapshot-update
"""

from __future__ import annotations

import pytest
from tuihelp import wait_for, wait_ready

from localllm.tui.app import ChatApp
from localllm.tui.store import History

SIZE = (110, 34)
REPLY = """Here is a loop in Python:

```python
for i in range(3):
    print(i)
```

It prints **0**, **1** and **2**."""


@pytest.fixture
def seeded_db(tmp_path, monkeypatch):
    # the help screen names the keymap file: keep its path the same on every machine
    monkeypatch.setenv("LOCALLLM_DATA", "/nonexistent/localllm-data")
    db = tmp_path / "chats.sqlite3"
    with History(db) as h:
        older = h.new_chat()
        h.add_message(older.id, "user", "What is the capital of France?")
        h.add_message(older.id, "assistant", "Paris.")
        c = h.new_chat(system_prompt="You are terse.", sampling={"temperature": 0, "max_tokens": 16})
        h.add_message(c.id, "user", "Show me a loop")
        h.add_message(c.id, "assistant", REPLY, meta={"finish_reason": "eos"})
    return db


async def _ready(pilot):
    await wait_ready(pilot)
    screen = pilot.app.chat_screen
    await wait_for(pilot, lambda: screen._ctx_used is not None, what="the context count")
    conv = screen.conversation
    await wait_for(
        pilot,
        lambda: (
            (screen.chat is None or bool(screen.query("ChatListItem.-current")))
            and (conv.max_scroll_y == 0 or conv.scroll_y == conv.max_scroll_y)
        ),
        what="the open chat marked, scrolled to its end",
    )
    await pilot.pause()


def test_chat_screen(snap_compare, tiny_gguf, seeded_db):
    app = ChatApp(str(tiny_gguf), db_path=seeded_db, hide_timings=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=_ready)


def test_help_screen(snap_compare, tiny_gguf, seeded_db):
    async def before(pilot):
        await _ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "HelpScreen", what="help")
        await pilot.pause()

    app = ChatApp(str(tiny_gguf), db_path=seeded_db, hide_timings=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_settings_screen(snap_compare, tiny_gguf, seeded_db):
    async def before(pilot):
        await _ready(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "SettingsScreen", what="settings")
        pilot.app.screen.query_one("#system-prompt").cursor_blink = False
        await pilot.pause()

    app = ChatApp(str(tiny_gguf), db_path=seeded_db, hide_timings=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_startup_error_screen(snap_compare, seeded_db):
    import localllm

    async def before(pilot):
        await wait_for(
            pilot,
            lambda: (
                type(pilot.app.screen).__name__ == "StartupScreen"
                and not pilot.app.screen.query_one("#error").has_class("hidden")
            ),
            what="the error",
        )
        await pilot.pause()

    hw = localllm.load_profile("laptop-x86-16gb")
    app = ChatApp("/nonexistent/model.gguf", db_path=seeded_db, hardware=hw, hide_timings=True)
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


# -- the states issue 20 added: a fake model, so nothing on screen depends on the machine -----


@pytest.fixture
def fake_target(tiny_gguf):
    return str(tiny_gguf)


def test_queued_message(snap_compare, fake_target, seeded_db):
    import threading

    from tuihelp import FakeModel, fake_loader, post_key

    gate = threading.Event()  # never set: the reply stays on its prompt until the app closes
    fake = FakeModel(prompt_gate=gate)

    async def before(pilot):
        await _ready(pilot)
        screen = pilot.app.chat_screen
        await pilot.press(*"Tell me more")
        post_key(pilot, "enter")
        await wait_for(
            pilot, lambda: screen.generating and "reading the prompt" in str(screen.query_one("#status").render())
        )
        await pilot.press(*"And then")
        post_key(pilot, "enter")
        await wait_for(pilot, lambda: bool(screen.query("MessageView.queued")), what="the queued message")
        await pilot.pause()

    app = ChatApp(fake_target, db_path=seeded_db, hide_timings=True, loader=fake_loader(fake))
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_truncation_notice(snap_compare, fake_target, tmp_path):
    from tuihelp import FakeModel, fake_loader

    db = tmp_path / "chats.sqlite3"
    with History(db) as h:
        c = h.new_chat(sampling={"max_tokens": 8})
        for i in range(6):
            h.add_message(c.id, "user", f"Question {i}: " + "tell me about the sea " * 2)
            h.add_message(c.id, "assistant", f"Answer {i}: " + "the sea is wide " * 2, meta={"finish_reason": "eos"})

    async def before(pilot):
        await _ready(pilot)
        screen = pilot.app.chat_screen
        await wait_for(pilot, lambda: bool(screen.query("#dropped-notice")), what="the notice")
        await pilot.pause()

    app = ChatApp(fake_target, db_path=db, hide_timings=True, loader=fake_loader(FakeModel(n_ctx=64)))
    assert snap_compare(app, terminal_size=SIZE, run_before=before)


def test_length_cut_reply(snap_compare, fake_target, tmp_path):
    from tuihelp import FakeModel, fake_loader

    db = tmp_path / "chats.sqlite3"
    with History(db) as h:
        c = h.new_chat()
        h.add_message(c.id, "user", "Write a long story")
        h.add_message(c.id, "assistant", "Once upon a time there was a", meta={"finish_reason": "length"})

    app = ChatApp(fake_target, db_path=db, hide_timings=True, loader=fake_loader(FakeModel()))
    assert snap_compare(app, terminal_size=SIZE, run_before=_ready)


def test_narrow_terminal(snap_compare, fake_target, seeded_db):
    from tuihelp import FakeModel, fake_loader

    app = ChatApp(fake_target, db_path=seeded_db, hide_timings=True, loader=fake_loader(FakeModel()))
    assert snap_compare(app, terminal_size=(80, 24), run_before=_ready)
