"""Replies streamed faster than the screen can draw them (issue 16): the text arrives whole, code
fences intact, as it shows when the chat is opened again; keys typed meanwhile all land in order;
the screen is asked for a bounded number of updates a second whatever the token rate; Esc and
ctrl+n while text is still waiting to be shown keep all of it.

The model is localllm.testing.FakeChatModel: a real model this fast does not run here."""

from __future__ import annotations

import asyncio
import gc
import statistics
import threading
import time

import textual.widget
from textual import events
from textual.widgets import Label
from textual.widgets.markdown import MarkdownFence
from tuihelp import post_key, send, wait_for, wait_ready

from localllm.testing import FakeChatModel, markdown_reply, split_tokens
from localllm.tui.app import ChatApp
from localllm.tui.context import TYPING_S, InputClock
from localllm.tui.reply import FLUSH_INTERVAL_S, ReplyDelta
from localllm.tui.store import History
from localllm.tui.widgets import MessageView, PromptArea, ReplyStream, code_blocks
from localllm.tui.widgets.message import MAX_BATCH_LINES, TYPING_INTERVAL_S, UPDATE_INTERVAL_S, Segment

SIZE = (80, 30)  # under NARROW_COLUMNS: no sidebar, the conversation is the whole width


def run(coro):
    return asyncio.run(coro)


def fast_app(target, db, model, **kw) -> ChatApp:
    return ChatApp(str(target), db_path=db, loader=lambda t, **_: model, sampling={"temperature": 0}, **kw)


def reply_view(app) -> MessageView:
    return [v for v in app.chat_screen.query(MessageView) if v.role == "assistant"][-1]


def stored_reply(app) -> str:
    (chat,) = app.history.chats()
    return app.history.messages(chat.id)[-1].content


def shown_code(view: MessageView) -> list[str]:
    """The code blocks a reply shows, a block cut between segments joined again."""
    blocks: list[str] = []
    for segment in view.query(Segment):
        for fence in segment.query(MarkdownFence):
            shown = fence.query_one(Label).content.plain.rstrip("\n")
            assert shown == fence.code.rstrip("\n"), "a code block shows other code than its text"
            if fence is segment.children[0] and segment.has_class("-fence-continued"):
                blocks[-1] += "\n" + shown
            else:
                blocks.append(shown)
    return blocks


def conversation_lines(app) -> list[str]:
    region = app.chat_screen.conversation.region
    strips = app.screen._compositor.render_strips()
    return ["".join(s.text for s in strips[y]).rstrip() for y in range(region.y, region.bottom)]


def test_a_fast_long_reply_shows_whole_as_when_the_chat_is_opened_again(tiny_gguf, tui_db):
    reply = markdown_reply(1500, seed=7)
    model = FakeChatModel(reply, tokens_per_s=None)  # as fast as Python yields tokens

    async def body():
        app = fast_app(tiny_gguf, tui_db, model, hide_timings=True)
        async with app.run_test(size=(80, 330)) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "write a lot")
            view = reply_view(app)
            assert stored_reply(app) == reply and view.source == reply
            assert gc.get_threshold()[2] < 1 << 30, "full collections still held after the reply (tui.collector)"
            assert len(view.query(Segment)) >= 3
            assert shown_code(view) == code_blocks(reply)  # none left blank or stale
            await pilot.pause()
            assert screen.conversation.max_scroll_y == 0, "the terminal is too short to compare whole replies"
            live = conversation_lines(app)
            await screen.open_chat(screen.chat.id)
            await pilot.pause()
            await pilot.pause()
            assert conversation_lines(app) == live

    run(body())


class Typist:
    """Types `keys` letters from another thread, as a terminal's input thread delivers keys."""

    def __init__(self, app, keys: int, interval: float = 0.01) -> None:
        self.app, self.keys, self.interval, self.typed = app, keys, interval, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        letters = "abcdefghijklmnoprstuvwxyz"
        while not self._stop.is_set() and len(self.typed) < self.keys:
            ch = letters[len(self.typed) % len(letters)]
            event = events.Key(ch, ch)
            event.set_sender(self.app)
            self.typed += ch
            self.app._driver.send_message(event)
            time.sleep(self.interval)

    def __enter__(self) -> Typist:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._thread.join()

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


async def type_while_it_replies(pilot, app, keys: int, interval: float = 0.01) -> None:
    """Send a message, type `keys` letters from another thread once the reply's first text shows
    (the reply must still be streaming after the last), then wait for the reply to be shown and
    check that every key landed in the prompt, in order."""
    screen = app.chat_screen
    prompt = screen.query_one(PromptArea)
    await send(pilot, "go", finish=False)
    await wait_for(pilot, lambda: reply_view(app).source != "", what="the first text")
    with Typist(app, keys=keys, interval=interval) as typist:
        await wait_for(pilot, lambda: typist.done, what="the keys to be typed")
    assert screen.generating, "the reply ended before the keys did"
    await wait_for(pilot, lambda: not screen.generating, timeout=120, what="the reply to be shown")
    await wait_for(pilot, lambda: len(prompt.text) == keys, what="the last keys")
    assert prompt.text == typist.typed


def test_keys_typed_while_a_fast_reply_streams_all_land_in_order(tiny_gguf, tui_db):
    model = FakeChatModel(markdown_reply(3000, seed=8), tokens_per_s=5_000)

    async def body():
        app = fast_app(tiny_gguf, tui_db, model)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await type_while_it_replies(pilot, app, keys=40)

    run(body())


def test_the_screen_gets_a_bounded_number_of_updates_whatever_the_token_rate(tiny_gguf, tui_db, monkeypatch):
    """ReplyDelta messages come at most every FLUSH_INTERVAL_S, and the screen applies text in
    batches at most every UPDATE_INTERVAL_S, each of at most MAX_BATCH_LINES lines: a faster
    model makes bigger messages and a longer wait to be shown, never more updates."""
    applied: list[tuple[float, int]] = []  # (when, lines) of each batch the screen drew
    apply = ReplyStream._apply

    async def spy(self, text):
        applied.append((time.monotonic(), text.count("\n")))
        await apply(self, text)

    monkeypatch.setattr(ReplyStream, "_apply", spy)
    deltas: list[float] = []
    seen: list[ReplyDelta] = []  # kept: an id is unique only while the message lives

    def hook(message):
        if isinstance(message, ReplyDelta) and not any(m is message for m in seen[-3:]):  # once, not at each pump
            seen.append(message)
            deltas.append(time.monotonic())

    for rate in (2_000, 100_000):
        applied.clear()
        deltas.clear()
        model = FakeChatModel(markdown_reply(2000, seed=9), tokens_per_s=rate)

        async def body(model=model):
            app = fast_app(tiny_gguf, tui_db, model)
            async with app.run_test(size=SIZE, message_hook=hook) as pilot:
                await wait_ready(pilot)
                await send(pilot, "go", timeout=120)
                assert stored_reply(app) == model.reply

        run(body())
        span = deltas[-1] - deltas[0]
        assert len(deltas) <= span / FLUSH_INTERVAL_S + 2, (rate, len(deltas), span)
        gaps = [b[0] - a[0] for a, b in zip(applied, applied[1:], strict=False)]
        assert len(applied) > 3 and min(gaps) >= UPDATE_INTERVAL_S * 0.9, (rate, min(gaps))
        assert max(lines for _, lines in applied) <= MAX_BATCH_LINES
        tui_db.unlink()


def test_esc_while_text_waits_to_be_shown_keeps_all_of_it(tiny_gguf, tui_db):
    reply = markdown_reply(40_000, seed=10)
    model = FakeChatModel(reply, tokens_per_s=20_000)  # 2 s of text, shown far slower

    async def body():
        app = fast_app(tiny_gguf, tui_db, model)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "go", finish=False)
            await wait_for(pilot, lambda: model.streamed > 2000, what="some text")
            post_key(pilot, "escape")
            await wait_for(pilot, lambda: not screen.generating, timeout=120, what="the stop")
            written = "".join(split_tokens(reply)[: model.streamed])
            assert model.streamed < len(split_tokens(reply))
            assert stored_reply(app) == written
            view = reply_view(app)
            assert view.source == written and view.has_class("cancelled")
            live_border = view.styles.border_left
            await screen.open_chat(screen.chat.id)
            assert reply_view(app).styles.border_left == live_border  # restyled although only the view was

    run(body())


def test_ctrl_n_while_text_waits_to_be_shown_stores_all_of_it(tiny_gguf, tui_db):
    reply = markdown_reply(8000, seed=11)
    model = FakeChatModel(reply, tokens_per_s=100_000)

    async def body():
        app = fast_app(tiny_gguf, tui_db, model)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await send(pilot, "go", finish=False)
            await wait_for(pilot, lambda: model.streamed == len(split_tokens(reply)), what="the whole reply")
            assert screen.generating  # still being shown
            post_key(pilot, "ctrl+n")
            await wait_for(pilot, lambda: not screen.generating and screen.chat is None, what="the new chat")
            await pilot.pause()  # the rest of ctrl+n's work (it runs beside the end of the reply)
            assert stored_reply(app) == reply

    run(body())


def test_segments_already_shown_are_not_laid_out_again_while_the_reply_grows(tiny_gguf, tui_db, monkeypatch):
    """Textual keys its layout cache by the size a widget is given, which for a part of a reply is
    the growing height of the reply: without Segment.arrange, every update laid out all of it."""
    arranged: dict[int, int] = {}  # segment -> layouts once it was no longer the last
    tail: list[int] = [0]  # layouts of whichever segment was the last
    arrange = textual.widget.arrange

    def spy(widget, *args, **kwargs):
        if isinstance(widget, Segment):
            if widget.parent is not None and widget.parent.children[-1] is widget:
                tail[0] += 1
            else:
                arranged[id(widget)] = arranged.get(id(widget), 0) + 1
        return arrange(widget, *args, **kwargs)

    monkeypatch.setattr(textual.widget, "arrange", spy)
    model = FakeChatModel(markdown_reply(3000, seed=12), tokens_per_s=3000)

    async def body():
        app = fast_app(tiny_gguf, tui_db, model)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await send(pilot, "go", timeout=120)
            segments = list(reply_view(app).query(Segment))
            assert len(segments) >= 4
            first = arranged.get(id(segments[0]), 0)
            assert first <= 3, f"the first segment was laid out {first} times after the second began"
            assert tail[0] > 20  # while the last one was laid out at each update

    run(body())


def test_ctrl_e_continues_a_reply_cut_inside_a_code_fence_as_one_fence(tiny_gguf, tui_db):
    """The continuation is appended to the stored reply's last segment: the open fence goes on
    (Textual's Markdown.update left its parse position at the last line, which showed the rest
    of the code as indented code and the closing fence as a new, empty one)."""
    cut = "Here is the function:\n\n```python\ndef f(x):\n    y = x + 1\n"
    rest = "    return y\n```\n\nThat is all.\n"
    with History(tui_db) as h:
        chat = h.new_chat(sampling={"temperature": 0})
        h.add_message(chat.id, "user", "write f")
        h.add_message(chat.id, "assistant", cut, meta={"finish_reason": "length"})
    model = FakeChatModel(rest, tokens_per_s=None)

    async def body():
        app = fast_app(tiny_gguf, tui_db, model)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            await wait_for(pilot, lambda: bool(screen.query(MarkdownFence)), what="the stored reply")
            post_key(pilot, "ctrl+e")
            await wait_for(pilot, lambda: stored_reply(app) == cut + rest, what="the continuation")
            await wait_for(pilot, lambda: not screen.generating, what="the end")
            assert shown_code(reply_view(app)) == ["def f(x):\n    y = x + 1\n    return y"]

    run(body())


def test_segments_far_out_of_view_are_folded_and_unfold_when_scrolled_to(tiny_gguf, tui_db):
    """Textual lays out every widget of the screen at each update, in view or not: the segments
    far from view hide their blocks (keeping their height, so scrolling is unchanged) and show
    them again when scrolled back to."""
    reply = markdown_reply(4000, seed=13)
    model = FakeChatModel(reply, tokens_per_s=None)

    async def body():
        app = fast_app(tiny_gguf, tui_db, model, hide_timings=True)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            screen = app.chat_screen
            conv = screen.conversation
            await send(pilot, "go")
            segments = list(reply_view(app).query(Segment))
            assert len(segments) >= 5
            await wait_for(pilot, lambda: segments[0].folded_at is not None, what="the first segment folded")
            assert segments[-1].folded_at is None  # in view
            assert not any(child.display for child in segments[0].children)
            height = conv.virtual_size.height
            first_line = reply.split("\n")[0][:30]
            assert not any(first_line in line for line in conversation_lines(app))
            await pilot.press("ctrl+home")
            await wait_for(pilot, lambda: segments[0].folded_at is None, what="the first segment shown again")
            await pilot.pause()
            assert any(first_line in line for line in conversation_lines(app))
            assert segments[-1].folded_at is not None  # now far out of view
            assert conv.virtual_size.height == height

    run(body())


def test_a_long_code_block_streams_in_segments_and_shows_whole(tiny_gguf, tui_db):
    """Textual parses and highlights a Markdown widget's last block again at each append: a long
    code block is cut between segments, so each append costs a screenful of code, not all of it."""
    code = "\n".join(("    " if i % 4 else "") + f"value_{i} = compute({i})" for i in range(300))
    reply = "The code:\n\n```python\n" + code + "\n```\n\nThat is all.\n"
    model = FakeChatModel(reply, tokens_per_s=None)

    async def body():
        app = fast_app(tiny_gguf, tui_db, model)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await send(pilot, "code please", timeout=120)
            view = reply_view(app)
            assert view.source == reply
            assert len([s for s in view.query(Segment) if s.has_class("-fence-continued")]) >= 5
            assert shown_code(view) == [code]
            for segment in view.query(Segment):  # the cut fences are marked for the seamless CSS
                first, last = segment.children[0], segment.children[-1]
                for fence in segment.query(MarkdownFence):
                    assert fence.has_class("-cut-above") == (fence is first and segment.has_class("-fence-continued"))
                    assert fence.has_class("-cut-below") == (fence is last and segment.has_class("-fence-cut"))
            # by class, not :first-child / :last-child: Textual restyles a node with an order rule
            # at every mount into its parent, and a restyled fence highlights its code again
            assert not [node for node in view.query("*") if node._has_order_style]

    run(body())


def test_while_the_user_types_a_fast_reply_is_drawn_between_their_keys(tiny_gguf, tui_db, monkeypatch):
    """While keys come, a batch of reply text waits TYPING_INTERVAL_S from the one before and then
    for a key, so that the batch and its frame fall in the gap before the next key; once typing
    stops (TYPING_S), batches come at the usual pace again. Every key still lands in order."""
    applied: list[float] = []
    apply = ReplyStream._apply

    async def spy(self, text):
        applied.append(time.monotonic())
        await apply(self, text)

    monkeypatch.setattr(ReplyStream, "_apply", spy)
    keys: list[float] = []
    pressed = InputClock.pressed

    def spy_pressed(self):
        pressed(self)
        keys.append(self.last_input_at)

    monkeypatch.setattr(InputClock, "pressed", spy_pressed)
    model = FakeChatModel(markdown_reply(4000, seed=8), tokens_per_s=5_000)

    async def body():
        app = fast_app(tiny_gguf, tui_db, model)
        async with app.run_test(size=SIZE) as pilot:
            await wait_ready(pilot)
            await type_while_it_replies(pilot, app, keys=30, interval=0.05)

    run(body())
    first, last = keys[-30], keys[-1]  # the typist's keys: the last 30 the app was given
    typing = [t for t in applied if first <= t <= last + TYPING_S]
    gaps = [b - a for a, b in zip(typing, typing[1:], strict=False)]
    assert len(typing) >= 3 and min(gaps) >= TYPING_INTERVAL_S * 0.99, gaps
    for a, b in zip(typing, typing[1:], strict=False):  # each one just after a key that came after the wait
        assert any(a + TYPING_INTERVAL_S <= k <= b for k in keys), (a, b)
    after = [t for t in applied if t > last + TYPING_S + 0.1]
    gaps = [b - a for a, b in zip(after, after[1:], strict=False)]
    assert len(after) >= 3 and statistics.median(gaps) < TYPING_INTERVAL_S, gaps
