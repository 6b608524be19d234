"""Where a long reply is cut into Markdown segments (localllm.tui.segments), and that the cuts do
not change what is shown: a reply as segments renders as the same screen as one Markdown widget."""

from __future__ import annotations

import asyncio
import random

import pytest
from textual.app import App, ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Markdown

from localllm.testing import markdown_reply
from localllm.tui.segments import SEGMENT_LINES, SegmentSplitter, split_segments
from localllm.tui.widgets import MessageView


def feed_in_pieces(text: str, seed: int, tail: str = "") -> list[str]:
    """The segments a stream of `text` in random pieces ends with (the first continues `tail`)."""
    rng = random.Random(seed)
    splitter = SegmentSplitter(tail)
    segments = [tail]
    i = 0
    while i < len(text):
        n = rng.choice([1, 2, 3, rng.randint(1, 400)])
        first, *rest = splitter.feed(text[i : i + n])
        segments[-1] += first
        segments += rest
        i += n
    return segments


def test_a_long_reply_is_cut_into_segments_that_join_back():
    text = markdown_reply(4000, seed=1)
    segments = split_segments(text)
    assert "".join(segments) == text
    assert len(segments) >= 4
    for segment in segments[:-1]:
        assert segment.count("\n") >= SEGMENT_LINES


def test_cuts_fall_before_a_paragraph_after_a_blank_line():
    for seed in range(5):
        segments = split_segments(markdown_reply(3000, seed=seed))
        for before, after in zip(segments, segments[1:], strict=False):
            assert before.endswith("\n\n") or before.rstrip(" \t").endswith("\n\n")
            assert after[0].isalpha(), after[:40]


def test_the_cuts_do_not_depend_on_how_the_text_arrives():
    text = markdown_reply(3000, seed=2)
    whole = split_segments(text)
    for seed in range(20):
        assert feed_in_pieces(text, seed) == whole


def test_a_reply_growing_in_place_is_cut_as_the_whole_text_would_be():
    """ctrl+e continues a stored reply: its last segment's splitter, fed the continuation,
    cuts where split_segments of the joined text does (so reopening looks the same)."""
    base, more = markdown_reply(1500, seed=3), markdown_reply(1500, seed=4)
    stored = split_segments(base)
    grown = stored[:-1] + feed_in_pieces(more, 0, tail=stored[-1])
    assert grown == split_segments(base + more)


def test_no_cut_inside_a_fenced_code_block():
    code = "\n\n".join(f"line{i} = {i}" for i in range(60))  # blank lines, then lines starting with a letter
    for fence in ("```", "~~~", "````"):
        text = "Intro.\n\n" + f"{fence}python\n{code}\n{fence}\n\n" + "After the code.\n"
        segments = split_segments(text, lines=5)
        inside = [s for s in segments if "line30 = 30" in s]
        assert len(inside) == 1 and f"{fence}python" in inside[0] and "line59 = 59" in inside[0], segments
        assert segments[-1] == "After the code.\n"


def test_a_longer_fence_is_not_closed_by_a_shorter_one_nor_by_inline_code():
    text = "````md\n```\n\nnot closed\n\n````\n\n" + "```x```\n\nnext\n\n" + "para\n"
    segments = split_segments(text, lines=1)
    assert segments[0].startswith("````md\n```\n\nnot closed\n\n````\n\n")
    assert "next\n\n" in "".join(segments[:2])
    assert segments[-1] == "para\n"


def test_no_cut_before_a_list_item_a_table_a_quote_or_an_indented_line():
    blocks = ["- item", "1. item", "| a | b |\n|---|---|\n| 1 | 2 |", "> quote", "    indented code", "  continued"]
    text = "\n\n".join(["Para one."] * 3 + blocks) + "\n"
    rest = "\n\n".join(blocks) + "\n"
    assert split_segments(text, lines=1) == ["Para one.\n\n", "Para one.\n\n", "Para one.\n\n" + rest]


class Page(App):
    """A message as the chat shows one, and one Markdown widget of the same text, one above the other."""

    CSS = "Markdown { padding: 0; } MessageView, #whole { height: auto; }"

    def __init__(self, text: str, which: str) -> None:
        super().__init__()
        self.text, self.which = text, which

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            if self.which == "segments":
                yield MessageView(self.text, "assistant")
            else:
                yield Markdown(self.text, id="whole")


async def screen_lines(text: str, which: str) -> list[str]:
    app = Page(text, which)
    async with app.run_test(size=(100, 600)) as pilot:
        await pilot.pause()
        await pilot.pause()
        strips = app.screen._compositor.render_strips()
        return ["".join(seg.text for seg in strip).rstrip() for strip in strips]


@pytest.mark.parametrize("seed", [0, 5])
def test_a_reply_as_segments_shows_what_one_markdown_widget_shows(seed):
    text = markdown_reply(2500, seed=seed)
    assert len(split_segments(text)) >= 3
    segments = asyncio.run(screen_lines(text, "segments"))
    whole = asyncio.run(screen_lines(text, "whole"))
    assert any(line.strip() for line in whole[-5:]) is False  # the page is tall enough for all of it
    assert segments == whole
