"""Start-up keys, the settings dialog, the model switcher, ctrl+c and the exit code, driven by Pilot."""

from __future__ import annotations

import asyncio
import threading

import pytest
from tuihelp import ENDLESS, GREEDY, send, wait_for, wait_ready

import localllm
from localllm.tui.app import ChatApp, StartupReady
from localllm.tui.library import VariantRow
from localllm.tui.screens.models import OFFLINE_MARK, ModelSwitcher
from localllm.tui.widgets import PromptArea

KEY_NAMES = {" ": "space", "?": "question_mark", "!": "exclamation_mark", ".": "full_stop", ",": "comma"}


def keys(text: str) -> list[str]:
    return [KEY_NAMES.get(ch, ch) for ch in text]


def run(coro):
    return asyncio.run(coro)


def on_screen(app, name: str) -> bool:
    return type(app.screen).__name__ == name


def error_shown(app) -> bool:
    return on_screen(app, "StartupScreen") and not app.screen.query_one("#error").has_class("hidden")


class Reports:
    """A message hook counting start-up reports (each retry makes one)."""

    def __init__(self) -> None:
        self.seen: list[StartupReady] = []

    def __call__(self, message) -> None:
        if isinstance(message, StartupReady) and all(m is not message for m in self.seen):
            self.seen.append(message)


# --- start-up screen ----------------------------------------------------------------


def test_typing_during_startup_neither_quits_nor_retries_and_reaches_the_prompt(tiny_gguf, tui_db):
    release, calls = threading.Event(), []

    def slow_loader(target, **kwargs):  # start-up stays on screen until released
        calls.append(target)
        assert release.wait(60)
        return localllm.load(target)

    reports = Reports()

    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=slow_loader)
        async with app.run_test(size=(100, 30), message_hook=reports) as pilot:
            await wait_for(pilot, lambda: calls and on_screen(app, "StartupScreen"), what="the load to start")
            await pilot.press("q", "r", *keys("a quark? hello there"))
            await pilot.pause()
            assert app.is_running and app.return_code is None and on_screen(app, "StartupScreen")
            assert len(calls) == 1 and len(reports.seen) == 1  # no retry, no second load
            release.set()
            await wait_ready(pilot)
            prompt = app.chat_screen.query_one(PromptArea)
            await wait_for(pilot, lambda: prompt.text == "qra quark? hello there", what="the typed text")
            assert app.history.chats() == []  # nothing was sent

    run(body())


def test_startup_error_actions_are_on_ctrl_keys_and_quitting_exits_1(tui_db):
    reports = Reports()

    async def body():
        app = ChatApp("does/not/exist.gguf", db_path=tui_db)
        async with app.run_test(size=(100, 30), message_hook=reports) as pilot:
            await wait_for(pilot, lambda: error_shown(app), what="the error")
            await pilot.press("r", "q", *keys("retry quit"))
            await pilot.pause()
            assert app.is_running and len(reports.seen) == 1
            await pilot.press("ctrl+r")
            await wait_for(pilot, lambda: len(reports.seen) == 2, what="the retry")
            await wait_for(pilot, lambda: error_shown(app), what="the error again")
            advice = str(app.screen.query_one("#advice").render())
            assert "ctrl+r: retry" in advice and "ctrl+q: quit" in advice
            await pilot.press("ctrl+q")
        assert app.return_code == 1

    run(body())


def test_quitting_after_a_load_failure_exits_1_and_after_a_load_0(tiny_gguf, tui_db):
    def broken(target, **kwargs):
        raise localllm.InvalidModelError(f"{target} is broken", path=target)

    async def failed():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, loader=broken)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_for(pilot, lambda: error_shown(app), what="the load error")
            assert "is broken" in str(app.screen.query_one("#error").render())
            await pilot.press("ctrl+q")
        return app.return_code

    async def loaded():
        app = ChatApp(str(tiny_gguf), db_path=tui_db)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_ready(pilot)
            await pilot.press("ctrl+q")
        return app.return_code

    assert run(failed()) == 1
    assert run(loaded()) == 0


def test_localllm_chat_exits_1_after_a_load_failure(monkeypatch, tmp_path):
    """The command's exit code is the app's: offline, a catalog model not on disk cannot load."""
    from localllm.cli import main

    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    monkeypatch.setenv("LOCALLLM_DATA", str(tmp_path / "data"))
    seen: list[str] = []

    async def auto_pilot(pilot):
        app = pilot.app
        await wait_for(pilot, lambda: error_shown(app), what="the load error")
        seen.append(str(app.screen.query_one("#error").render()))
        await pilot.press("ctrl+q")

    real_run = ChatApp.run

    def headless_run(self, **kwargs):
        return real_run(self, headless=True, size=(100, 30), auto_pilot=auto_pilot)

    monkeypatch.setattr(ChatApp, "run", headless_run)
    code = main(["chat", "qwen2.5-0.5b-instruct:q4_k_m", "--profile", "laptop-x86-16gb"])
    assert seen and "qwen2.5-0.5b-instruct" in seen[0]
    assert code == 1


# --- settings -------------------------------------------------------------------------


def open_settings(pilot):
    async def go():
        await wait_ready(pilot)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: on_screen(pilot.app, "SettingsScreen"), what="settings")
        await pilot.pause()

    return go()


def test_settings_focus_the_first_field_so_typing_lands_there(tiny_gguf, tui_db):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=(120, 36)) as pilot:
            await open_settings(pilot)
            assert app.focused is app.screen.query_one("#system-prompt")
            await pilot.press(*keys("Be brief."))
            assert app.screen.query_one("#system-prompt").text == "Be brief."
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: on_screen(app, "ChatScreen"), what="settings saved")
            assert app.history.chats()[0].system_prompt == "Be brief."

    run(body())


def test_settings_name_the_field_value_and_range_of_each_bad_value(tiny_gguf, tui_db):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=(120, 36)) as pilot:
            await open_settings(pilot)
            screen = app.screen
            screen.query_one("#opt-repeat_penalty").value = "40"
            screen.query_one("#opt-top_p").value = "1.5"
            screen.query_one("#opt-top_k").value = "many"
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert on_screen(app, "SettingsScreen")  # refused, nothing saved
            err = str(screen.query_one("#settings-error").render())
            assert "Repeat penalty (1 = off) = 40: repeat_penalty must be a number in (0, 2]" in err
            assert "Top-p = 1.5: top_p must be a number in (0, 1]" in err
            assert "Top-k (0 = off): 'many' is not an integer" in err
            screen.query_one("#opt-repeat_penalty").value = "1.1"
            screen.query_one("#opt-top_p").value = "0.9"
            screen.query_one("#opt-top_k").value = "20"
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: on_screen(app, "ChatScreen"), what="settings saved")
            sampling = app.history.chats()[0].sampling
            assert (sampling["repeat_penalty"], sampling["top_p"], sampling["top_k"]) == (1.1, 0.9, 20)

    run(body())


@pytest.mark.parametrize("size", [(120, 36), (80, 24)])
def test_settings_buttons_are_on_screen(tiny_gguf, tui_db, size):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=size) as pilot:
            await open_settings(pilot)
            width, height = size
            for button in ("#save", "#cancel"):
                region = app.screen.query_one(button).region
                assert region.height >= 1 and region.y >= 0 and region.bottom <= height, (button, region)
                assert region.right <= width
            await pilot.click("#cancel")
            await wait_for(pilot, lambda: on_screen(app, "ChatScreen"), what="settings cancelled")

    run(body())


# --- model switcher -----------------------------------------------------------------


ROWS = [
    VariantRow("llama-3.2-1b-instruct:q4_k_m", "llama-3.2-1b-instruct:q4_k_m", "q4_k_m", 800, "CPU", True),
    VariantRow("llama-3.2-1b-instruct:q8_0", "llama-3.2-1b-instruct:q8_0", "q8_0", 1300, "CPU", False),
    VariantRow("qwen2.5-0.5b-instruct:q4_k_m", "qwen2.5-0.5b-instruct:q4_k_m", "q4_k_m", 400, "CPU", False),
    VariantRow("/models/mine.gguf", "mine", "", 100, "local file", True),
]


def switcher_app(rows, chosen):
    from textual.app import App

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(ModelSwitcher(lambda: rows), chosen.append)

    return Host()


def test_switcher_filters_as_you_type_and_enter_loads_the_highlighted_row():
    chosen: list[str | None] = []

    async def body():
        app = switcher_app(ROWS, chosen)
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ModelSwitcher) and app.screen.rows, what="rows")
            screen = app.screen
            note = screen.query_one("#models-note")
            assert len(screen.shown) == 4 and "4 models" in str(note.render())
            assert app.focused is screen.query_one("#models-filter")
            await pilot.press(*keys("llama q8"))
            q8 = ["llama-3.2-1b-instruct:q8_0"]
            await wait_for(pilot, lambda: [r.name for r in screen.shown] == q8, what="the filter")
            assert "1 of 4 models match 'llama q8'" in str(note.render())
            assert screen.query_one("DataTable").row_count == 1
            for _ in "llama q8":
                await pilot.press("backspace")
            await pilot.press(*keys("q4"))
            await wait_for(pilot, lambda: len(screen.shown) == 2, what="the q4 rows")
            await pilot.press("down", "enter")
        assert chosen == ["qwen2.5-0.5b-instruct:q4_k_m"]

    run(body())


def test_switcher_offline_marks_what_cannot_be_had_and_refuses_it(monkeypatch, tiny_gguf):
    from localllm.tui import library

    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    rows = library.list_models(extra=[tiny_gguf])
    catalog = [r for r in rows if r.fit != "local file"]
    assert catalog and all(not r.available for r in catalog if not r.on_disk)
    assert any(r.on_disk and r.available for r in catalog)  # the built-in starter is always there
    assert all(r.available for r in rows if r.fit == "local file")
    monkeypatch.delenv("LOCALLLM_OFFLINE")
    assert all(r.available for r in library.list_models())
    chosen: list[str | None] = []

    async def body():
        app = switcher_app(rows, chosen)
        async with app.run_test(size=(120, 36)) as pilot:
            await wait_for(pilot, lambda: isinstance(app.screen, ModelSwitcher) and app.screen.rows, what="rows")
            screen = app.screen
            table = screen.query_one("DataTable")
            gone = next(r for r in catalog if not r.available)
            row = table.get_row(gone.target)
            assert row[-1] == OFFLINE_MARK
            assert "Offline: only what is on disk can be loaded" in str(screen.query_one("#models-note").render())
            table.move_cursor(row=screen.shown.index(gone))
            await pilot.press("enter")
            await pilot.pause()
            assert isinstance(app.screen, ModelSwitcher) and chosen == []  # refused, with a notice
            assert any("is not on disk and localllm is offline" in n.message for n in app._notifications)
            table.move_cursor(row=0)  # the local file
            await pilot.press("enter")
        assert chosen == [str(tiny_gguf)]

    run(body())


# --- ctrl+c -------------------------------------------------------------------------------


def test_ctrl_c_stops_a_reply_and_a_second_one_quits(tiny_gguf, tui_db):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=ENDLESS)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "hello", finish=False)  # loops without end on this prompt
            await wait_for(pilot, lambda: screen._gen is not None and len(screen._gen.text) > 10, what="some text")
            await pilot.press("ctrl+c")
            await wait_for(pilot, lambda: not screen.generating, timeout=10, what="the stop")
            assert app.is_running
            (chat,) = app.history.chats()
            assert app.history.messages(chat.id)[-1].meta["finish_reason"] == "cancelled"
            app._interrupted_at -= 10  # as if that stop were long ago: the next ctrl+c only asks
            await pilot.press("ctrl+c")
            await pilot.pause()
            assert app.is_running
            assert any("ctrl+c again to quit" in n.message for n in app._notifications)
            await pilot.press("ctrl+c")  # within a second of the last
        assert app.return_code == 0

    run(body())


def test_ctrl_c_with_a_selection_copies_it_and_does_not_quit(tiny_gguf, tui_db):
    async def body():
        app = ChatApp(str(tiny_gguf), db_path=tui_db, sampling=GREEDY)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_ready(pilot)
            prompt = app.chat_screen.query_one(PromptArea)
            await pilot.press(*keys("copy me"))
            prompt.select_all()
            await pilot.press("ctrl+c")
            await pilot.press("ctrl+c")
            await pilot.pause()
            assert app.clipboard == "copy me" and app.is_running
            assert prompt.text == "copy me"

    run(body())
