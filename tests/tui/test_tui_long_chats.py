"""Long chats (issue 20, finding 2): the truncation notice, the status line's real context figure,
replies cut at the length limit (labelled, continued with ctrl+e), failed messages leaving the history."""

from __future__ import annotations

import asyncio
import dataclasses

from tuihelp import GREEDY, FakeModel, fake_loader, send, wait_for, wait_ready

import localllm
from localllm.tui.app import ChatApp
from localllm.tui.reply import CONTINUE_PROMPT
from localllm.tui.store import History
from localllm.tui.widgets import MessageView, PromptArea, StatusLine

SIZE = (110, 36)
N_CTX = 256
SAMPLING = {**GREEDY, "max_tokens": 16}


def run(coro):
    return asyncio.run(coro)


def status(app) -> str:
    return str(app.chat_screen.query_one(StatusLine).render())


def ctx_used(app) -> int:
    return int(status(app).split("ctx ")[1].split("/")[0])


def labels(app) -> list[str]:
    return [str(w.render()) for w in app.chat_screen.query(".label")]


def shown(app) -> list[tuple[str, str]]:
    return [(v.role, v.text) for v in app.chat_screen.query(MessageView) if v.role != "info"]


def _long_chat(db) -> int:
    with History(db) as h:
        chat = h.new_chat(system_prompt="You are a cat.", sampling=SAMPLING, model="tiny")
        for i in range(8):  # about 850 tokens: far more than the window
            h.add_message(chat.id, "user", f"question {i}: " + "the cat and the dog " * 3)
            h.add_message(chat.id, "assistant", "yes " * 10)
        return chat.id


def test_status_and_notice_show_what_is_sent_after_truncation(tiny_gguf, tui_db):
    """Opened, a chat longer than the window shows the size of what would be sent (not of the whole
    chat, which is over the window) and a notice saying how many messages fell out; after a reply,
    the figure is that reply's prompt plus its tokens and the notice follows the new cut."""
    hw = localllm.probe()
    one_core = dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, physical_cores=1, quota_cores=None))

    def loader(target, *, context=None, progress=None):
        return localllm.load(target, context=N_CTX, hardware=one_core)

    chat_id = _long_chat(tui_db)

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=SAMPLING, loader=loader)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await wait_for(pilot, lambda: screen._ctx_used is not None, what="the context count")
            model = app.model
            whole = model.count_tokens(screen._conversation(screen.chat))
            assert whole > N_CTX
            want, dropped = model.fit_chat(screen._conversation(screen.chat), **SAMPLING)
            assert 0 < want <= N_CTX and dropped > 0
            assert ctx_used(app) == want
            await wait_for(pilot, lambda: bool(screen.query("#dropped-notice")), what="the notice")
            notice = str(screen.query_one("#dropped-notice").render())
            assert f"{dropped} earlier messages are outside the model's context window" in notice
            assert "--ctx N" in notice
            dimmed = [v for v in screen.query(MessageView) if v.has_class("dropped")]
            assert len(dimmed) == dropped
            # the notice stands before the first message the model still sees
            children = list(screen.conversation.children)
            first_sent = [v for v in screen.query(MessageView) if v.role in ("user", "assistant")][dropped]
            assert children.index(screen.query_one("#dropped-notice")) == children.index(first_sent) - 1

            await send(pilot, "hello")
            reply = app.history.messages(chat_id)[-1]
            t = reply.meta
            assert reply.role == "assistant" and t["dropped_messages"] > 0
            assert ctx_used(app) <= N_CTX
            assert (
                ctx_used(app)
                == model.count_tokens(
                    [{"role": "system", "content": "You are a cat."}]
                    + [
                        {"role": m.role, "content": m.content}
                        for m in app.history.messages(chat_id)[t["dropped_messages"] : -1]
                    ]
                )
                + t["tokens"]
            )
            notice = str(screen.query_one("#dropped-notice").render())
            assert f"{t['dropped_messages']} earlier messages" in notice

    run(body())


def test_length_cut_reply_is_labelled_and_ctrl_e_continues_it(tiny_gguf, tui_db):
    fake = FakeModel(replies=[("The first half of", "length"), ("the answer.", "eos")])

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            # with no cut reply, ctrl+e is the prompt's end-of-line
            await pilot.press("a", "b", "home", "ctrl+e", "c")
            assert app.query_one(PromptArea).text == "abc"
            app.query_one(PromptArea).clear()
            await send(pilot, "tell me")
            (chat,) = app.history.chats()
            assert app.history.messages(chat.id)[-1].meta["finish_reason"] == "length"
            assert labels(app) == ["cut at the length limit · ctrl+e continues"]
            await pilot.press("ctrl+e")
            await wait_for(
                pilot,
                lambda: not screen.generating and app.history.messages(chat.id)[-1].content.endswith("answer."),
                what="the continuation",
            )
            msgs = app.history.messages(chat.id)
            assert [m.role for m in msgs] == ["user", "assistant"]  # appended to the cut reply, not a new one
            assert msgs[1].content == "The first half of the answer."
            assert msgs[1].meta["continued"] == 1 and msgs[1].meta["finish_reason"] == "eos"
            # the model was sent the partial reply as the last assistant turn, then a "continue" user turn
            assert fake.sent[-1][-2:] == [
                {"role": "assistant", "content": "The first half of"},
                {"role": "user", "content": CONTINUE_PROMPT},
            ]
            assert shown(app) == [("user", "tell me"), ("assistant", "The first half of the answer.")]
            assert labels(app) == ["continued"]
            assert CONTINUE_PROMPT not in [m.content for m in msgs]

    run(body())


def test_a_failed_message_leaves_the_history_and_goes_back_to_the_prompt(tiny_gguf, tui_db):
    """The library's overflow advice names the Python API; the TUI names `localllm chat --ctx N`."""
    error = localllm.ContextOverflowError(
        "the conversation is 528 tokens but the context window of fake is 512 tokens (max_tokens None); "
        "shorten it, or load with a larger context (context=N in load(), --ctx N on the command line)",
        n_prompt=528,
        n_ctx=512,
    )
    fake = FakeModel(n_ctx=512, replies=[("fine", "eos")])
    with History(tui_db) as h:
        chat = h.new_chat()
        h.add_message(chat.id, "user", "earlier")
        h.add_message(chat.id, "assistant", "an answer")

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            fake.error = error
            for _ in range(2):  # again and again: no failed message piles up
                await pilot.press(*"too long")
                await pilot.press("enter")
                await wait_for(pilot, lambda: bool(screen.query("MessageView.error")), what="the error")
                await wait_for(pilot, lambda: not screen.generating, what="the end")
                assert [m.content for m in app.history.messages(chat.id)] == ["earlier", "an answer"]
                assert shown(app) == [("user", "earlier"), ("assistant", "an answer"), ("error", shown(app)[-1][1])]
                assert app.query_one(PromptArea).text == "too long"  # nothing typed is lost
                app.query_one(PromptArea).clear()
            err = screen.query_one("MessageView.error").text
            assert "528 tokens" in err and "512 tokens" in err and "`localllm chat --ctx N`" in err
            assert "load(" not in err and "context=N" not in err
            # it works again once the message fits; the error goes
            fake.error = None
            await send(pilot, "short")
            assert [m.content for m in app.history.messages(chat.id)] == ["earlier", "an answer", "short", "fine"]
            assert not screen.query("MessageView.error")

    run(body())


def test_a_failed_first_message_leaves_no_empty_chat(tiny_gguf, tui_db):
    fake = FakeModel(error=localllm.ContextOverflowError("too long", n_prompt=600, n_ctx=512))

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await pilot.press(*"hello")
            await pilot.press("enter")
            await wait_for(pilot, lambda: bool(screen.query("MessageView.error")), what="the error")
            await wait_for(pilot, lambda: not screen.generating, what="the end")
            assert app.history.chats() == [] and screen.chat is None
            assert app.query_one(PromptArea).text == "hello"

    run(body())


def test_empty_stopped_replies_are_neither_shown_nor_sent(tiny_gguf, tui_db):
    """A reply stopped before its first word (stored so by earlier versions) is no bubble and no turn."""
    fake = FakeModel(replies=[("ok", "eos")])
    with History(tui_db) as h:
        chat = h.new_chat()
        h.add_message(chat.id, "user", "first")
        h.add_message(chat.id, "assistant", "", {"finish_reason": "cancelled"})

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=fake_loader(fake))
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            assert shown(app) == [("user", "first")]
            await send(pilot, "second")
            assert fake.sent[-1] == [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]

    run(body())
