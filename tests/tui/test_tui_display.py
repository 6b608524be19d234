"""What the chat screen shows (issue 20, finding 7): the status line after a model switch and after
ctrl+n, the current chat in the sidebar, long titles, the sidebar on narrow terminals, reply labels."""

from __future__ import annotations

import asyncio
import threading

from textual.geometry import Region
from textual.widgets import Label
from tuihelp import FakeModel, fake_loader, post_key, send, wait_for, wait_ready

from localllm.tui.app import ChatApp
from localllm.tui.store import History
from localllm.tui.widgets import ChatList, ChatListItem, StatusLine

SIZE = (110, 36)


def run(coro):
    return asyncio.run(coro)


def status(app) -> str:
    return str(app.chat_screen.query_one(StatusLine).render())


def test_status_drops_the_old_models_timings_after_a_switch(tiny_gguf, tui_db):
    first, second = FakeModel(name="first"), FakeModel(name="second")

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(first, second))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await send(pilot, "hello")
            assert "TTFT 0.01 s" in status(app) and "123.0 tok/s" in status(app)
            app.switch_model("second-model")
            await wait_for(pilot, lambda: app.model is second and not app.loading, what="the switch")
            await wait_for(pilot, lambda: status(app).startswith("second ·"), what="the new status")
            assert "TTFT –" in status(app) and "– tok/s" in status(app)

    run(body())


def test_ctrl_n_during_a_reply_drops_the_old_chats_context(tiny_gguf, tui_db):
    gate = threading.Event()
    fake = FakeModel(replies=[("a long reply " * 50, "eos")], reply_gate=gate)

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "hello there", finish=False)
            post_key(pilot, "ctrl+n")
            await wait_for(pilot, lambda: not screen.generating and screen.chat is None, what="the new chat")
            await pilot.pause()
            assert "ctx 0/4096" in status(app)
            assert "TTFT –" in status(app)

    run(body())


def test_the_current_chat_is_marked_and_long_titles_end_with_an_ellipsis(tiny_gguf, tui_db):
    long_title = "A very long question about the history of the Roman empire and its roads"
    with History(tui_db) as h:
        older = h.new_chat(title=long_title)
        h.add_message(older.id, "user", "q")
        newer = h.new_chat(title="Short")
        h.add_message(newer.id, "user", "q")

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(FakeModel()))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            sidebar = app.chat_screen.query_one(ChatList)

            def current() -> list[str]:
                return [item.title for item in sidebar.query(ChatListItem) if item.has_class("-current")]

            await wait_for(pilot, lambda: current() == ["Short"], what="the mark")
            assert sidebar.highlighted_child is not None and sidebar.highlighted_child.title == "Short"
            await pilot.press("alt+down")
            await wait_for(pilot, lambda: current() == [long_title], what="the mark to move")
            await pilot.pause()
            label = next(item for item in sidebar.query(ChatListItem) if item.title == long_title).query_one(Label)
            (line,) = label.render_lines(Region(0, 0, label.size.width, 1))
            assert label.size.width < len(long_title) and line.text.rstrip().endswith("…")
            assert long_title.startswith(line.text.rstrip()[:-1])

    run(body())


def test_the_sidebar_collapses_on_a_narrow_terminal(tiny_gguf, tui_db):
    with History(tui_db) as h:
        h.add_message(h.new_chat().id, "user", "hello")

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(FakeModel()))
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_ready(pilot)
            sidebar = app.chat_screen.query_one(ChatList)
            await pilot.pause()
            assert sidebar.region.width == 0
            await pilot.press("ctrl+b")
            await pilot.pause()
            assert sidebar.region.width == 28
            await pilot.press("ctrl+b")
            await pilot.resize_terminal(120, 30)
            await wait_for(pilot, lambda: sidebar.region.width == 28, what="the sidebar on a wide terminal")

    run(body())


def test_a_stopped_reply_is_labelled(tiny_gguf, tui_db):
    gate = threading.Event()
    fake = FakeModel(replies=[("partial words here", "eos")], reply_gate=gate)

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "hello", finish=False)
            post_key(pilot, "escape")
            await wait_for(pilot, lambda: not screen.generating, what="the stop")
            assert [str(w.render()) for w in screen.query(".label")] == ["stopped"]
            (chat,) = app.history.chats()
            chat_id = chat.id
        app2 = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(FakeModel()))
        async with app2.run_test(size=SIZE) as pilot:  # and so after a restart
            await wait_ready(pilot)
            assert app2.chat_screen.chat is not None and app2.chat_screen.chat.id == chat_id
            assert [str(w.render()) for w in app2.chat_screen.query(".label")] == ["stopped"]

    run(body())
