"""Where a long reply is cut into separately rendered Markdown segments. No Textual here.

Textual lays out a Markdown widget's blocks again whenever one of them changes, and parses and
highlights its last block again at every append, so appending to one long document costs more
with every block it holds, and a long code block more with every line (measured: 4 ms of the UI
thread per layout 1,000 tokens into a reply, 42 ms at 6,000; 42 ms per append into a 300-line
code block; benchmarks/bench_tui.py). A reply is therefore shown as segments of about
SEGMENT_LINES lines, each its own widget: text streams into the last one only, and the ones
before keep their layout.

A cut must not change how the text renders, so it falls only where Markdown itself starts a new
top-level block that no later line can change: at a line beginning with a letter (a paragraph,
whose top margin is 0 as every block's bottom margin is 1, so the spacing is the same) right
after a blank line, outside a fenced code block. A blank line cannot continue a paragraph,
heading or table; a list, block quote or indented code goes on after one only with an indented
line or a marker, never with a letter. Not handled, as chat models do not write them: HTML
blocks that span blank lines, link reference definitions used before they are defined, and
setext headings (a line of === or --- under a paragraph that starts a segment).

Inside a fenced code block a cut falls before a line that cannot close it (one that does not
start with the fence's character after up to three spaces): the segment before it is shown closed by `closing`,
the one after opened by `opening` its `fence` line, and the screen joins the two boxes without a
seam (widgets.message); only the syntax colours may differ at the cut.

The cuts depend only on the text, never on how it arrived: `split_segments(text)` gives the
segments a stream of that text in any pieces ends with, so a reply reopened from the history
looks as it did while it streamed.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["SEGMENT_LINES", "Piece", "SegmentSplitter", "closing", "opening", "split_segments"]

# About a screenful: layout of a segment this long stays a few milliseconds, and a segment is
# not so short that the reply becomes hundreds of widgets.
SEGMENT_LINES = 40


class Piece(NamedTuple):
    """A segment's text, and the fence line (like "```python") of a code block it starts inside."""

    text: str
    fence: str = ""


def opening(fence: str) -> str:
    """What a segment starting inside the code block of `fence` is shown with first."""
    return fence + "\n" if fence else ""


def closing(fence: str) -> str:
    """What the segment before one starting inside that code block is shown with last."""
    if not fence:
        return ""
    mark = fence[0]
    return mark * (len(fence) - len(fence.lstrip(mark))) + "\n"


class SegmentSplitter:
    """Cuts text fed in pieces into segments; the state is that of the end of the last segment.

    Args:
        tail: the last segment so far (a reply that grows in place: its text is fed first).
        fence: the fence line that segment starts inside of, if any.
        lines: the length a segment reaches before the next cut may fall.
    """

    def __init__(self, tail: str = "", *, fence: str = "", lines: int = SEGMENT_LINES) -> None:
        self.min_lines = lines
        self._lines = 0  # complete lines in the current segment
        self._line = ""  # the current line so far
        self._at_line_start = True
        self._after_blank = False  # the last complete line was blank
        self._fence = ""  # the line that opened the fenced code block we are in; "" outside one
        self._code_lines = 0  # lines of that block in the current segment
        self._held = ""  # the start of a line too short yet to tell whether a cut falls before it
        if fence:
            self._end_line(fence)
            self._lines = 0
        self.feed(tail)
        self.flush()  # the tail is shown already: what it ends with stays with it

    def feed(self, text: str) -> list[Piece]:
        """[the text for the current segment, then each new segment `text` starts, in order].

        Up to 3 characters at the end may be held back (the start of a line in a code block that
        could be its closing fence) and come with the next feed, or `flush`."""
        text, self._held = self._held + text, ""
        out: list[Piece] = []
        start = i = 0
        fence = ""  # the fence the piece being gathered starts inside of
        n = len(text)
        while i < n:
            if self._at_line_start:
                cut = self._cut_before(text, i)
                if cut is None:
                    self._held = text[i:]
                    break
                self._at_line_start = False
                if cut:
                    out.append(Piece(text[start:i], fence))
                    start, fence = i, self._fence
                    self._lines = self._code_lines = 0
            j = text.find("\n", i)
            if j < 0:
                self._line += text[i:]
                break
            self._end_line(self._line + text[i:j])
            self._line = ""
            self._at_line_start = True
            i = j + 1
        out.append(Piece(text[start : n - len(self._held)], fence))
        return out

    def flush(self) -> str:
        """The text held back, for the current segment: the text has ended."""
        held, self._held = self._held, ""
        if held:
            self._at_line_start = False
            self._line += held
        return held

    def _cut_before(self, text: str, i: int) -> bool | None:
        """Whether a segment starts at text[i], a line's start; None: the line is too short to tell."""
        if self._lines < self.min_lines:
            return False
        if not self._fence:
            return self._after_blank and text[i].isalpha()
        if not self._code_lines or self._after_blank:  # a blank last line of code is not shown
            return False
        # a closing fence may have up to 3 spaces before it: cut before any other line
        for ch in text[i : i + 4]:
            if ch == self._fence[0]:
                return False
            if ch != " ":
                return True
        return True if len(text) - i >= 4 else None

    def _end_line(self, line: str) -> None:
        self._lines += 1
        if self._fence:
            self._code_lines += 1  # (the closing fence too: nothing is cut after it but a paragraph)
        stripped = line.strip()
        self._after_blank = not stripped
        mark = stripped[:1]
        indent = len(line) - len(line.lstrip(" "))
        if mark not in ("`", "~") or indent > 3:  # four spaces make it code, not a fence
            return
        run = len(stripped) - len(stripped.lstrip(mark))
        if run < 3:
            return
        if not self._fence:
            if mark == "`" and "`" in stripped[run:]:
                return  # inline code (```x```), not a fence: a backtick fence's info string has none
            self._fence = stripped  # opens (an info string may follow)
            self._code_lines = 0
        elif stripped.startswith(closing(self._fence).rstrip("\n")) and not stripped.lstrip(mark).strip():
            self._fence = ""  # closes: the same character, at least as many, nothing after


def split_segments(text: str, *, lines: int = SEGMENT_LINES) -> list[Piece]:
    """`text` as the segments it is shown in (one, "", for an empty text); their texts join back to `text`."""
    splitter = SegmentSplitter(lines=lines)
    pieces = splitter.feed(text)
    last = pieces[-1]
    pieces[-1] = last._replace(text=last.text + splitter.flush())
    return pieces
