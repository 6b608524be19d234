"""The chat app driven by Pilot, on the tiny real GGUF model loaded through localllm.load."""

from __future__ import annotations

import asyncio
import gc
import itertools
import time

import pytest
from tuihelp import ENDLESS, GREEDY, send, wait_for, wait_ready

from localllm.tui.app import ChatApp
from localllm.tui.screens.chat import ChatScreen, ReplyDelta, ReplyDone
from localllm.tui.store import History
from localllm.tui.widgets import ChatList, MessageView, PromptArea, StatusLine

SIZE = (110, 36)


def run(coro):
    return asyncio.run(coro)


def views(app) -> list[MessageView]:
    return [v for v in app.chat_screen.query(MessageView) if v.role in ("user", "assistant")]


def status(app) -> str:
    return str(app.chat_screen.query_one(StatusLine).render())


def test_send_and_stream(tiny_gguf, tui_db):
    deltas: list[ReplyDelta] = []

    def hook(message):
        if isinstance(message, ReplyDelta) and all(m is not message for m in deltas):  # it bubbles: seen twice
            deltas.append(message)

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=SIZE, message_hook=hook) as pilot:
            await wait_ready(pilot)
            assert app.model.info.name == "tiny" and app.model.info.runtime == "llama.cpp"
            await wait_for(pilot, lambda: isinstance(app.focused, PromptArea), what="focus on the prompt")
            await send(pilot, "hello there")
            (chat,) = app.history.chats()
            msgs = app.history.messages(chat.id)
            assert [m.role for m in msgs] == ["user", "assistant"]
            assert msgs[0].content == "hello there" and chat.title == "hello there"
            reply = msgs[1]
            assert reply.content and reply.meta["finish_reason"] == "length"
            assert reply.meta["model"] == "tiny" and reply.meta["tokens"] >= 40
            # streamed in pieces through ReplyDelta messages, which add up to the stored reply
            assert deltas and "".join(d.text for d in deltas) == reply.content
            shown = views(app)
            assert [v.role for v in shown] == ["user", "assistant"] and shown[1].text == reply.content
            line = status(app)
            assert line.startswith("tiny · llama.cpp · CPU, ")
            assert "TTFT 0." in line or "TTFT 1." in line or "TTFT " in line and "tok/s" in line
            used = int(line.split("ctx ")[1].split("/")[0])
            assert used == reply.meta["tokens"] + app.model.count_tokens([{"role": "user", "content": "hello there"}])
            assert app.query_one(PromptArea).text == ""

    run(body())


def test_escape_stops_and_keeps_partial_reply(tiny_gguf, tui_db):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=ENDLESS)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "hello", finish=False)  # greedy, the tiny model loops on this one
            await wait_for(
                pilot, lambda: screen._gen is not None and len(screen._gen.text) > 20, what="some streamed text"
            )
            t0 = time.monotonic()
            await pilot.press("escape")
            await wait_for(pilot, lambda: not screen.generating, timeout=10, what="the stop")
            assert time.monotonic() - t0 < 5
            (chat,) = app.history.chats()
            user, reply = app.history.messages(chat.id)
            assert reply.meta["finish_reason"] == "cancelled"
            assert len(reply.content) > 20  # the partial reply is kept, stored and shown
            assert reply.meta["tokens"] < 2000  # stopped well before the context filled
            last = views(app)[-1]
            assert last.text == reply.content and last.has_class("cancelled")
            # the prompt works again: regenerate replaces the stopped reply with a full one
            app.chat_screen.chat = app.history.update_settings(chat.id, sampling=GREEDY)
            await pilot.press("ctrl+r")

            def regenerated():
                msgs = app.history.messages(chat.id)
                return not screen.generating and len(msgs) == 2 and msgs[1].created > reply.created

            await wait_for(pilot, regenerated, timeout=120, what="the regenerated reply")
            msgs = app.history.messages(chat.id)
            assert [m.role for m in msgs] == ["user", "assistant"]
            assert msgs[1].meta["finish_reason"] == "length" and msgs[1].created > reply.created
            assert [v.role for v in views(app)] == ["user", "assistant"]

    run(body())


def test_new_chat_switch_chat_and_restart_shows_history(tiny_gguf, tui_db):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await send(pilot, "first chat")
            first_reply = views(app)[-1].text
            await pilot.press("ctrl+n")
            await wait_for(pilot, lambda: app.chat_screen.chat is None and not views(app), what="an empty chat")
            await send(pilot, "second chat")
            titles = [c.title for c in app.history.chats()]
            assert titles == ["second chat", "first chat"]
            sidebar = app.chat_screen.query_one(ChatList)
            assert [item.title for item in sidebar.children] == titles
            # switch back by clicking the older chat in the sidebar
            await pilot.click(sidebar.children[1])
            await wait_for(
                pilot,
                lambda: app.chat_screen.chat is not None and app.chat_screen.chat.title == "first chat",
                what="the switch",
            )
            await wait_for(
                pilot,
                lambda: [v.text for v in views(app)] == ["first chat", first_reply],
                what="the first chat's messages",
            )
            # and forward with the keyboard
            await pilot.press("alt+down")
            await wait_for(pilot, lambda: app.chat_screen.chat.title == "second chat", what="alt+down")
            # prompt history: up recalls the last prompt
            await pilot.press("up")
            assert app.query_one(PromptArea).text == "second chat"
            await pilot.press("up")
            assert app.query_one(PromptArea).text == "first chat"
            await pilot.press("down", "down")
            assert app.query_one(PromptArea).text == ""

        # a new app on the same database shows both chats and the latest one's messages
        app2 = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app2.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            assert [c.title for c in app2.history.chats()] == ["second chat", "first chat"]
            await wait_for(
                pilot, lambda: [v.role for v in views(app2)] == ["user", "assistant"], what="history on screen"
            )
            assert views(app2)[0].text == "second chat"
            assert len(app2.chat_screen.query_one(ChatList).children) == 2

    run(body())


def test_switch_model_without_restart(tiny_gguf, tiny_gguf_q8, tui_db):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY, extra_models=[tiny_gguf_q8])
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            first = app.model
            await send(pilot, "before")
            await pilot.press("ctrl+o")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ModelSwitcher", what="switcher")
            switcher = app.screen
            await wait_for(pilot, lambda: bool(switcher.rows), timeout=30, what="the model list")
            targets = [r.target for r in switcher.rows]
            assert str(tiny_gguf_q8) in targets and str(tiny_gguf) in targets  # the loaded file is recent
            catalog = [r for r in switcher.rows if r.fit != "local file"]
            assert catalog and {r.fit for r in catalog} <= {"GPU", "partial", "CPU", "does not fit"}
            from textual.widgets import DataTable

            table = switcher.query_one(DataTable)
            table.move_cursor(row=targets.index(str(tiny_gguf_q8)))
            await pilot.press("enter")
            await wait_for(
                pilot,
                lambda: app.model is not first and app.model is not None and not app.loading,
                what="the new model",
            )
            assert app.model.info.path == str(tiny_gguf_q8) and first.closed is False or True
            await wait_for(pilot, lambda: first.closed, what="the old model to be closed")
            assert "tiny-q8_0" in status(app)
            await send(pilot, "after")
            (chat,) = app.history.chats()
            models = [m.meta.get("model") for m in app.history.messages(chat.id) if m.role == "assistant"]
            assert models == ["tiny", "tiny-q8_0"]

    run(body())


def test_event_loop_never_stalls_while_streaming(paced_gguf, tui_db):
    """A timer ticking every 10 ms records the gaps between ticks while text streams in.

    The model decodes at about 180 tokens/s here, faster than any real model this machine
    runs; the tiny model's thousands of tokens/s of random bytes are no user's case.

    The reply is unbounded and stopped with Escape after STREAM_S seconds of streaming, so the
    window is long enough on a fast machine and a slow one alike. The window runs from the
    first ReplyDelta to the ReplyDone message (the final re-render and commit come after it)."""
    stream_s = 1.5
    first_delta: list[float] = []
    done: list[float] = []

    def hook(message):
        if isinstance(message, ReplyDelta) and not first_delta:
            first_delta.append(time.perf_counter())
        if isinstance(message, ReplyDone) and not done:
            done.append(time.perf_counter())

    async def body():
        app = ChatApp(str(paced_gguf), db_path=tui_db, sampling=ENDLESS)
        async with app.run_test(size=SIZE, message_hook=hook) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            # the app is measured, not this pytest process: after hundreds of tests its heap holds
            # millions of objects, and one full garbage collection over them stalled the loop ~0.5 s
            gc.collect()
            gc.freeze()
            ticks: list[float] = []
            timer = app.set_interval(0.01, lambda: ticks.append(time.perf_counter()))
            await send(pilot, "hello", finish=False)  # greedy: loops without EOS until stopped
            await wait_for(
                pilot,
                lambda: (
                    bool(first_delta) and (time.perf_counter() - first_delta[0] > stream_s or not screen.generating)
                ),
                timeout=60,
                what="text to stream",
            )
            if screen.generating:
                await pilot.press("escape")
            await wait_for(pilot, lambda: not screen.generating and bool(done), timeout=30, what="the stop")
            timer.stop()
            gc.unfreeze()
            window = [t for t in ticks if first_delta[0] <= t <= done[0]]
            gaps = [b - a for a, b in itertools.pairwise(window)]
            assert len(gaps) > 20, "the reply was too short to measure"
            (chat,) = app.history.chats()
            assert app.history.messages(chat.id)[-1].content  # the streamed reply was kept
            assert max(gaps) < 0.100, f"event loop stalled {max(gaps) * 1000:.0f} ms"

    run(body())


def test_copy_reply_and_code_block(tiny_gguf, tui_db):
    async def body():
        with History(tui_db) as h:
            c = h.new_chat(sampling=GREEDY)
            h.add_message(c.id, "user", "code please")
            h.add_message(c.id, "assistant", "Here:\n\n```python\nprint(1)\n```\n\nand\n\n```sh\nls -l\n```\n")
        app = ChatApp(str(tiny_gguf), db_path=tui_db)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await pilot.press("ctrl+g")
            assert app.clipboard.startswith("Here:") and "ls -l" in app.clipboard
            await pilot.press("ctrl+t")
            assert app.clipboard == "ls -l"
            await pilot.press("ctrl+t")
            assert app.clipboard == "print(1)"
            titles = [cmd.title for cmd in app.get_system_commands(app.chat_screen)]
            assert {"New chat", "Stop", "Regenerate", "Switch model", "Copy code block 1", "Copy code block 2"} <= set(
                titles
            )

    run(body())


def test_rename_settings_export_delete(tiny_gguf, tui_db, tmp_path):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await send(pilot, "to be renamed")
            await pilot.press("f2")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "TextPrompt", what="rename dialog")
            await pilot.press(*["ctrl+a"] if False else [])
            app.screen.query_one("Input").value = ""
            await pilot.press(*"Renamed", "enter")
            await wait_for(pilot, lambda: app.history.chats()[0].title == "Renamed", what="rename")
            # settings: a bad value is refused with the library's message, a good one saved
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "SettingsScreen", what="settings")
            app.screen.query_one("#opt-temperature").value = "-1"
            await pilot.press("ctrl+s")
            await pilot.pause(0.05)
            err = str(app.screen.query_one("#settings-error").render())
            assert "temperature must be a number >= 0" in err
            app.screen.query_one("#opt-temperature").value = "0.5"
            app.screen.query_one("#system-prompt").load_text("Be terse.")
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, ChatScreen), what="settings closed")
            chat = app.history.chats()[0]
            assert chat.system_prompt == "Be terse." and chat.sampling["temperature"] == 0.5
            assert chat.sampling["max_tokens"] == GREEDY["max_tokens"]
            await pilot.press("f3")
            exported = tui_db.parent / "exports"
            await wait_for(pilot, lambda: exported.exists() and any(exported.iterdir()), what="export")
            text = next(exported.iterdir()).read_text()
            assert text.startswith("# Renamed") and "## System\n\nBe terse." in text and "to be renamed" in text
            await pilot.press("f8")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ConfirmScreen", what="confirm")
            await pilot.press("y")
            await wait_for(pilot, lambda: app.history.chats() == [], what="delete")
            assert views(app) == []

    run(body())


def test_theme_is_remembered_and_keys_are_remappable(tiny_gguf, tui_db, monkeypatch, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "keymap.toml").write_text('[keys]\n"localllm.new_chat" = "f9"\n')
    monkeypatch.setenv("LOCALLLM_DATA", str(data))

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            app.theme = "gruvbox"
            await pilot.pause(0.05)
            await send(pilot, "one")
            await pilot.press("f9")  # remapped new chat
            await wait_for(pilot, lambda: app.chat_screen.chat is None, what="new chat via remapped key")
            await pilot.press("f1")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
            rows = {r[2]: r[0] for r in app.screen.rows}
            assert rows["localllm.new_chat"] == "f9" and rows["localllm.stop"] == "esc"
            assert "prompt.send" in rows and "prompt.newline" in rows
        app2 = ChatApp(str(tiny_gguf), db_path=tui_db)
        async with app2.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            assert app2.theme == "gruvbox"

    run(body())


def test_newline_keys_insert_newline_and_enter_sends(tiny_gguf, tui_db):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await pilot.press("a", "shift+enter", "b", "ctrl+j", "c")
            assert app.query_one(PromptArea).text == "a\nb\nc"
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.history.chats() != [], what="send")
            chat = app.history.chats()[0]
            assert app.history.messages(chat.id)[0].content == "a\nb\nc"
            await wait_for(pilot, lambda: not app.chat_screen.generating, what="reply")

    run(body())


@pytest.mark.parametrize("missing", ["does/not/exist.gguf"])
def test_missing_file_shows_explanation_not_traceback(missing, tui_db):
    async def body():
        app = ChatApp(missing, db_path=tui_db)
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(
                pilot,
                lambda: (
                    type(app.screen).__name__ == "StartupScreen"
                    and not app.screen.query_one("#error").has_class("hidden")
                ),
                what="the error",
            )
            err = str(app.screen.query_one("#error").render())
            assert "does not exist" in err
            assert "Traceback" not in err
            advice = str(app.screen.query_one("#advice").render())
            assert "ctrl+o" in advice and "q: quit" in advice

    run(body())


def test_offline_auto_opens_on_the_starter_and_says_why(tui_db, monkeypatch):
    """No network, nothing on disk: the chat opens on the built-in starter, names the model it
    would have chosen and how to get it, and answers."""
    from localllm.hardware.detect import load_profile

    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")

    async def body():
        app = ChatApp("auto", db_path=tui_db, hardware=load_profile("laptop-x86-16gb"), sampling=GREEDY)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            assert app.model.info.name == "starter"
            wanted = app.model.info.note.split("localllm pull ")[1]  # the best catalog model that fits
            await wait_for(
                pilot,
                lambda: any(v.role == "info" for v in app.chat_screen.query(MessageView)),
                what="the start-up note",
            )
            shown = " ".join(v.text for v in app.chat_screen.query(MessageView) if v.role == "info")
            assert "built-in starter" in shown and f"localllm pull {wanted}" in shown
            await send(pilot, "What is 23 + 45?")
            assert "68" in views(app)[-1].text

    run(body())
