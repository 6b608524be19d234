"""A chat longer than the context window: the TUI keeps going and says what fell out."""

from __future__ import annotations

import asyncio
import dataclasses

from tuihelp import GREEDY, send, wait_ready

import localllm
from localllm.tui.app import ChatApp
from localllm.tui.store import History

N_CTX = 256
SAMPLING = {**GREEDY, "max_tokens": 16}


def test_a_chat_longer_than_the_context_drops_old_turns_and_says_so(tiny_gguf, tui_db):
    hw = localllm.probe()
    one_core = dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, physical_cores=1, quota_cores=None))

    def loader(target, *, context=None, progress=None):  # one thread, a small window
        return localllm.load(target, context=N_CTX, hardware=one_core)

    history = History(tui_db)
    chat = history.new_chat(system_prompt="You are a cat.", sampling=SAMPLING, model="tiny")
    for i in range(8):  # about 850 tokens: far more than the window
        history.add_message(chat.id, "user", f"question {i}: " + "the cat and the dog " * 3)
        history.add_message(chat.id, "assistant", "yes " * 10)
    history.close()

    notices: list[str] = []

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=SAMPLING, loader=loader)
        notify = app.notify

        def record(message, *args, **kwargs):
            notices.append(str(message))
            return notify(message, *args, **kwargs)

        app.notify = record  # type: ignore[method-assign]
        async with app.run_test(size=(110, 36)) as pilot:
            await wait_ready(pilot)
            assert app.chat_screen.chat is not None and app.chat_screen.chat.id == chat.id
            await send(pilot, "hello")
            reply = app.history.messages(chat.id)[-1]
            assert reply.role == "assistant" and reply.content  # a reply, not an overflow error
            assert reply.meta.get("error") is None and reply.meta["finish_reason"] in ("length", "eos", "stop")
            dropped = reply.meta["dropped_messages"]
            assert dropped > 0 and dropped % 2 == 0
            told = [n for n in notices if "context window" in n]
            assert len(told) == 1 and f"oldest {dropped} messages" in told[0] and str(N_CTX) in told[0]
            # the next reply with the same cut says nothing new
            await send(pilot, "ok")
            again = app.history.messages(chat.id)[-1].meta["dropped_messages"]
            assert len([n for n in notices if "context window" in n]) == (1 if again == dropped else 2)

    asyncio.run(body())
