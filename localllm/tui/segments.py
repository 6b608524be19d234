"""Where a long reply is cut into separately rendered Markdown segments. No Textual here.

Textual lays out a Markdown widget's blocks again whenever one of them changes, so appending
to one long document costs more with every block it holds (measured: 4 ms of the UI thread per
layout 1,000 tokens into a reply, 42 ms at 6,000, benchmarks/bench_tui.py). A reply is therefore
shown as segments of about SEGMENT_LINES lines, each its own widget: text streams into the last
one only, and the ones before keep their layout.

A cut must not change how the text renders, so it falls only where Markdown itself starts a new
top-level block that no later line can change: at a line beginning with a letter (a paragraph,
whose top margin is 0 as every block's bottom margin is 1, so the spacing is the same) right
after a blank line, outside a fenced code block. A blank line cannot continue a paragraph,
heading or table; a list, block quote or indented code goes on after one only with an indented
line or a marker, never with a letter. Not handled, as chat models do not write them: HTML
blocks that span blank lines, link reference definitions used before they are defined, and
setext headings (a line of === or --- under a paragraph that starts a segment).

The cuts depend only on the text, never on how it arrived: `split_segments(text)` gives the
segments a stream of that text in any pieces ends with, so a reply reopened from the history
looks as it did while it streamed.
"""

from __future__ import annotations

__all__ = ["SEGMENT_LINES", "SegmentSplitter", "split_segments"]

# About a screenful: layout of a segment this long stays a few milliseconds, and a segment is
# not so short that the reply becomes hundreds of widgets.
SEGMENT_LINES = 40


class SegmentSplitter:
    """Cuts text fed in pieces into segments; the state is that of the end of the last segment.

    Args:
        tail: the last segment so far (a reply that grows in place: its text is fed first).
        lines: the length a segment reaches before the next cut may fall.
    """

    def __init__(self, tail: str = "", *, lines: int = SEGMENT_LINES) -> None:
        self.min_lines = lines
        self._lines = 0  # complete lines in the current segment
        self._line = ""  # the current line so far
        self._at_line_start = True
        self._after_blank = False  # the last complete line was blank
        self._fence: tuple[str, int] | None = None  # inside a fenced code block: its character and length
        self.feed(tail)

    def feed(self, text: str) -> list[str]:
        """[text for the current segment, then the text of each new segment `text` starts, in order]."""
        out: list[str] = []
        start = i = 0
        n = len(text)
        while i < n:
            if self._at_line_start:
                self._at_line_start = False
                if self._cut_before(text[i]):
                    out.append(text[start:i])
                    start = i
                    self._lines = 0
            j = text.find("\n", i)
            if j < 0:
                self._line += text[i:]
                break
            self._end_line(self._line + text[i:j])
            self._line = ""
            self._at_line_start = True
            i = j + 1
        out.append(text[start:])
        return out

    def _cut_before(self, first: str) -> bool:
        return self._after_blank and self._fence is None and self._lines >= self.min_lines and first.isalpha()

    def _end_line(self, line: str) -> None:
        self._lines += 1
        stripped = line.strip()
        self._after_blank = not stripped
        mark = stripped[:1]
        if mark not in ("`", "~"):
            return
        run = len(stripped) - len(stripped.lstrip(mark))
        if run < 3:
            return
        if self._fence is None:
            if mark == "`" and "`" in stripped[run:]:
                return  # inline code (```x```), not a fence: a backtick fence's info string has none
            self._fence = (mark, run)  # opens (an info string may follow)
        elif mark == self._fence[0] and run >= self._fence[1] and not stripped[run:].strip():
            self._fence = None  # closes: the same character, at least as many, nothing after


def split_segments(text: str, *, lines: int = SEGMENT_LINES) -> list[str]:
    """`text` as the segments it is shown in (one, "", for an empty text); they join back to `text`."""
    return SegmentSplitter(lines=lines).feed(text)
