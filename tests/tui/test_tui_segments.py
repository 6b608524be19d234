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
from localllm.tui.segments import SEGMENT_LINES, Piece, SegmentSplitter, split_segments
from localllm.tui.widgets import MessageView


def feed_in_pieces(text: str, seed: int, tail: Piece | None = None) -> list[Piece]:
    """The segments a stream of `text` in random pieces ends with (the first continues `tail`)."""
    tail = tail or Piece("")
    rng = random.Random(seed)
    splitter = SegmentSplitter(tail.text, fence=tail.fence)
    segments = [tail]
    i = 0
    while i < len(text):
        n = rng.choice([1, 2, 3, rng.randint(1, 400)])
        first, *rest = splitter.feed(text[i : i + n])
        segments[-1] = Piece(segments[-1].text + first.text, segments[-1].fence)
        segments += rest
        i += n
    segments[-1] = Piece(segments[-1].text + splitter.flush(), segments[-1].fence)
    return segments


def texts(pieces: list[Piece]) -> list[str]:
    return [p.text for p in pieces]


def test_a_long_reply_is_cut_into_segments_that_join_back():
    text = markdown_reply(4000, seed=1)
    segments = texts(split_segments(text))
    assert "".join(segments) == text
    assert len(segments) >= 4
    for segment in segments[:-1]:
        assert segment.count("\n") >= SEGMENT_LINES


def test_cuts_fall_before_a_paragraph_after_a_blank_line():
    for seed in range(5):
        segments = split_segments(markdown_reply(3000, seed=seed))
        for before, after in zip(segments, segments[1:], strict=False):
            if after.fence:  # inside a code block: before a line that cannot close it, after some code
                assert not after.text[:4].lstrip(" ").startswith("`") and not before.text.endswith(after.fence + "\n")
            else:
                assert before.text.endswith("\n\n") and after.text[0].isalpha(), after.text[:40]


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


def long_code(lines: int) -> str:
    """Code with blank lines, indented lines and lines at the margin."""
    out = []
    for i in range(lines):
        out.append("" if i % 7 == 3 else ("    " if i % 3 else "") + f"value_{i} = f({i})")
    return "\n".join(out)


def test_a_long_code_block_is_cut_only_before_a_line_that_cannot_close_it():
    code = long_code(120) + "\n   " + "```not a closer: it has text after\n" + long_code(30)
    for fence in ("```python", "~~~", "````md"):
        mark = fence[:3] if fence[0] == "~" else fence.split("m")[0].rstrip("python")
        after = "".join(f"Paragraph {i} after the code.\n\n" for i in range(20))
        text = "Intro.\n\n" + f"{fence}\n{code}\n{mark}\n\n" + after
        segments = split_segments(text, lines=10)
        assert "".join(texts(segments)) == text
        inside = [p for p in segments if p.fence]
        assert len(inside) >= 5 and {p.fence for p in inside} == {fence}
        for piece in inside:  # not the closing fence, which may have up to 3 spaces before it
            assert not piece.text[:4].lstrip(" ").startswith(mark[0]), piece.text[:20]
        assert segments[-1].fence == "" and segments[-1].text.startswith("Paragraph")  # outside it again


def test_a_longer_fence_is_not_closed_by_a_shorter_one_nor_by_inline_code():
    text = "````md\n```\n" + "line\n" * 5 + "````\n\n" + "```x```\n\n" + "next\n" * 5 + "\npara\n"
    segments = split_segments(text, lines=1)
    assert "".join(texts(segments)) == text
    where = {p.text.split("\n")[0]: p.fence for p in segments}
    assert where["line"] == "````md"  # still inside after the shorter ```
    assert where["para"] == ""  # ```x``` opened nothing


def test_no_cut_before_a_list_item_a_table_a_quote_or_an_indented_line():
    blocks = ["- item", "1. item", "| a | b |\n|---|---|\n| 1 | 2 |", "> quote", "    indented code", "  continued"]
    text = "\n\n".join(["Para one."] * 3 + blocks) + "\n"
    rest = "\n\n".join(blocks) + "\n"
    assert texts(split_segments(text, lines=1)) == ["Para one.\n\n", "Para one.\n\n", "Para one.\n\n" + rest]


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


@pytest.mark.parametrize("seed", [0, 5, "code"])
def test_a_reply_as_segments_shows_what_one_markdown_widget_shows(seed):
    if seed == "code":  # code blocks cut into several segments: one box each, no seam
        text = "The code:\n\n```python\n" + long_code(300) + "\n```\n\n" + markdown_reply(500, seed=1)
        text += "\n~~~\n" + long_code(90) + "\n~~~\n"
        assert sum(1 for p in split_segments(text) if p.fence) >= 6
    else:
        text = markdown_reply(2500, seed=seed)
    assert len(split_segments(text)) >= 3
    segments = asyncio.run(screen_lines(text, "segments"))
    whole = asyncio.run(screen_lines(text, "whole"))
    assert any(line.strip() for line in whole[-5:]) is False  # the page is tall enough for all of it
    assert segments == whole
