"""Keys of the chat screen (issue 20, findings 3, 5 and 9): "reading the prompt" progress and Esc
during it, scrolling the conversation while typing, messages queued while a reply streams."""

from __future__ import annotations

import asyncio
import threading
import time

from tuihelp import FakeModel, fake_loader, post_key, send, wait_for, wait_ready

from localllm.tui.app import ChatApp
from localllm.tui.store import History
from localllm.tui.widgets import MessageView, PromptArea, StatusLine

SIZE = (110, 36)


def run(coro):
    return asyncio.run(coro)


def status(app) -> str:
    return str(app.chat_screen.query_one(StatusLine).render())


def test_reading_the_prompt_shows_progress_and_esc_stops_it(tiny_gguf, tui_db):
    """A long prompt is read in chunks: the status line counts them, Esc stops at once, and a reply
    with no text is not stored (nor shown as an empty bubble)."""
    fake = FakeModel(prompt_chunk=500, chunk_delay=0.25)
    paste = " ".join(["word"] * 3498)  # 3,500 tokens with the fake's 2 per message

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            app.query_one(PromptArea).load_text(paste)
            post_key(pilot, "enter")
            await wait_for(pilot, lambda: "reading the prompt: 1,000 / 3,500 tokens (esc stops)" in status(app))
            # what is happening leads the line (a narrow terminal cuts its end), and the context
            # figure is the prompt being read, not 0 until the reply ends
            assert status(app).startswith("reading the prompt: ") and "ctx 3500/4096" in status(app)
            t0 = time.monotonic()
            post_key(pilot, "escape")
            await wait_for(pilot, lambda: not screen.generating, timeout=5, what="the stop")
            assert time.monotonic() - t0 < 1.0
            (chat,) = app.history.chats()
            assert [m.role for m in app.history.messages(chat.id)] == ["user"]  # no empty reply stored
            assert [v.role for v in screen.query(MessageView) if v.role != "info"] == ["user"]
            assert "reading the prompt" not in status(app)
            notes = [str(w.render()) for w in screen.query(".label")]
            assert notes == ["stopped before the reply began · ctrl+r writes it"]

    run(body())


def test_page_keys_scroll_the_conversation_while_the_prompt_keeps_focus(tiny_gguf, tui_db):
    with History(tui_db) as h:
        chat = h.new_chat()
        for i in range(20):
            h.add_message(chat.id, "user", f"question {i}")
            h.add_message(chat.id, "assistant", f"answer {i}\n\n" + "more text\n\n" * 3)
    fake = FakeModel()

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            conv = app.chat_screen.conversation
            prompt = app.query_one(PromptArea)
            await wait_for(pilot, lambda: conv.max_scroll_y > 20, what="the conversation laid out")
            # opened on its latest message
            await wait_for(pilot, lambda: conv.scroll_y == conv.max_scroll_y, what="the scroll to the end")
            await pilot.press("h", "i")
            bottom = conv.scroll_y
            await pilot.press("pageup")
            await wait_for(pilot, lambda: conv.scroll_y < bottom - 10, what="pageup")
            await pilot.press("shift+pageup")
            await wait_for(pilot, lambda: conv.scroll_y < bottom - 40, what="shift+pageup")
            await pilot.press("ctrl+home")
            await wait_for(pilot, lambda: conv.scroll_y == 0, what="ctrl+home")
            await pilot.press("pagedown")
            await wait_for(pilot, lambda: conv.scroll_y > 10, what="pagedown")
            await pilot.press("ctrl+end")
            await wait_for(pilot, lambda: conv.scroll_y == conv.max_scroll_y, what="ctrl+end")
            assert app.focused is prompt and prompt.text == "hi"  # typing went on in the prompt

    run(body())


def test_switching_chats_opens_each_on_its_latest_message(tiny_gguf, tui_db):
    with History(tui_db) as h:
        for c in range(2):
            chat = h.new_chat(title=f"chat {c}")
            for i in range(15):
                h.add_message(chat.id, "user", f"question {i}")
                h.add_message(chat.id, "assistant", "answer\n\n" * 4)
    fake = FakeModel()

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            conv = app.chat_screen.conversation
            for key in ("alt+down", "alt+down", "ctrl+n", "alt+down"):
                await pilot.press(key)
                if key == "ctrl+n":
                    continue
                await wait_for(
                    pilot,
                    lambda: conv.max_scroll_y > 20 and conv.scroll_y == conv.max_scroll_y,
                    what=f"the latest message after {key}",
                )

    run(body())


def test_a_message_sent_while_a_reply_streams_is_queued_then_sent(tiny_gguf, tui_db):
    gate = threading.Event()
    fake = FakeModel(replies=[("first answer", "eos"), ("second answer", "eos")], reply_gate=gate)

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "one", finish=False)
            await pilot.press(*"two")
            post_key(pilot, "enter")
            # the view is mounted, then the status line updated: wait for both, not the first alone
            await wait_for(
                pilot,
                lambda: bool(screen.query("MessageView.queued")) and "1 queued" in status(app),
                what="the queued message",
            )
            (chat,) = app.history.chats()
            assert [m.content for m in app.history.messages(chat.id)] == ["one"]  # not sent yet
            assert screen.query_one("MessageView.queued").text == "two"
            assert app.query_one(PromptArea).text == ""
            gate.set()
            await wait_for(
                pilot,
                lambda: not screen.generating and len(app.history.messages(chat.id)) == 4,
                what="both replies",
            )
            msgs = app.history.messages(chat.id)
            assert [m.content for m in msgs] == ["one", "first answer", "two", "second answer"]
            assert [v.text for v in screen.query(MessageView)] == [m.content for m in msgs]
            assert not screen.query("MessageView.queued") and not screen.query(".label")

    run(body())


def test_esc_takes_a_queued_message_back_then_stops_the_reply(tiny_gguf, tui_db):
    gate = threading.Event()
    fake = FakeModel(replies=[("first answer", "eos")], reply_gate=gate)

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "one", finish=False)
            await pilot.press(*"two")
            post_key(pilot, "enter")
            await wait_for(pilot, lambda: bool(screen.query("MessageView.queued")), what="the queued message")
            post_key(pilot, "escape")  # the queued message comes back into the prompt, the reply goes on
            await wait_for(
                pilot,
                lambda: not screen.query("MessageView.queued") and app.query_one(PromptArea).text == "two",
                what="the take-back",
            )
            assert screen.generating
            post_key(pilot, "escape")  # now it stops the reply
            await wait_for(pilot, lambda: not screen.generating, what="the stop")
            (chat,) = app.history.chats()
            msgs = app.history.messages(chat.id)
            assert [m.content for m in msgs] == ["one", "first "]
            assert msgs[1].meta["finish_reason"] == "cancelled"
            assert [str(w.render()) for w in screen.query(".label")] == ["stopped"]

    run(body())
