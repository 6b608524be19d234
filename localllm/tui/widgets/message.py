"""MessageView: one message of the conversation; ReplyStream: a reply streaming into one; code_blocks.

A reply is shown as Markdown segments (localllm.tui.segments says where they are cut and why):
text streams into the last segment only, so the cost of each update stays that of a screenful
of text however long the reply grows.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.await_complete import AwaitComplete
from textual.content import Content
from textual.dom import NoScreen
from textual.errors import NoWidget
from textual.geometry import Size
from textual.widget import Widget
from textual.widgets import Label, Markdown, Static
from textual.widgets.markdown import MarkdownFence

from localllm.tui.context import TYPING_S, InputClock
from localllm.tui.segments import Piece, SegmentSplitter, closing, opening, split_segments

if TYPE_CHECKING:  # pragma: no cover
    from textual._arrange import DockArrangeResult

__all__ = [
    "BATCH_APPLY_S",
    "REST_PER_BUSY",
    "UPDATE_INTERVAL_S",
    "TYPING_INTERVAL_S",
    "MessageView",
    "ReplyStream",
    "Segment",
    "code_blocks",
    "fit_segments",
]

# A streaming reply is drawn at most this often. Each update costs a layout and a repaint of
# the whole conversation, which scrolls (5-15 ms of the UI thread at 120x40 here): 20 a second
# still read as smooth and leave the thread free more than 30 did.
UPDATE_INTERVAL_S = 1 / 20
# After a batch of text is drawn, the stream rests this many times the UI thread's time spent
# applying and drawing it, while the model still writes: text that comes faster than it can be
# shown takes at most about two thirds of the UI thread, the rest is for keys and the model.
REST_PER_BUSY = 0.5
# The UI thread's time applying one batch may take (Textual draws no frame meanwhile): with
# one frame after it, what a key typed during a stream waits at most, inside issue 16's 50 ms.
BATCH_APPLY_S = 0.02
# Lines in the first batch, and the most in one (the batch size adapts between 1 and this).
FIRST_BATCH_LINES = 4
MAX_BATCH_LINES = 64
# While the user types (localllm.tui.context.InputClock), a streaming reply is drawn just after a
# key has been drawn, at most this often. Each batch and the frame after it hold the UI thread
# 20-60 ms (a layout of the whole screen, which scrolls), and a key typed meanwhile waits for
# both: at 20 batches a second most keys did (bench_tui.py: echo p95 100-150 ms at 1,000
# tokens/s). Right after a key, a batch falls in the gap before the next one. The text keeps
# coming, and is drawn at the usual pace again once typing stops.
TYPING_INTERVAL_S = 0.25
KEY_SETTLE_S = 0.005  # from a key's arrival to the prompt asking for the frame that shows it
# The longest a batch waits to be drawn (the message may have been removed meanwhile).
DRAWN_TIMEOUT_S = 1.0

_FENCE = re.compile(r"^(```|~~~)[^\n]*\n(.*?)^\1[ \t]*$", re.M | re.S)


def code_blocks(markdown: str) -> list[str]:
    """The contents of the fenced code blocks in a Markdown text, in order."""
    return [m.group(2).rstrip("\n") for m in _FENCE.finditer(markdown)]


class Segment(Markdown):
    """A part of a message (localllm.tui.segments), laid out once for each width it is shown at;
    folded (its blocks hidden, its height kept) while far out of view (`fit_segments`)."""

    folded_at: int | None = None  # the width it was folded at; None while shown
    live: bool = False  # text streams into it: never folded

    def arrange(self, size: Size, optimal: bool = False) -> DockArrangeResult:
        # Textual caches an arrangement by the size it is given, which for a segment is the
        # height of the message around it: every update of a streaming reply laid out all its
        # segments again (measured: 4 ms per layout 1,000 tokens in, 32 ms at 6,000). Markdown
        # blocks are all height auto, so the arrangement depends on the width alone.
        return super().arrange(Size(size.width, 0), optimal)

    def update(self, markdown: str) -> AwaitComplete:
        # Markdown.update leaves the place the next append parses from at the last line, so a
        # reply continued after it (a new segment, ctrl+e) parsed an open code fence from its
        # middle and showed the rest as indented code; append from empty sets it right.
        clear = super().update("")

        async def show() -> None:
            await clear
            if markdown:
                await self.append(markdown)

        return AwaitComplete(show())

    def append(self, markdown: str) -> AwaitComplete:
        appended = super().append(markdown)

        async def then() -> None:
            await appended
            self.mark_cuts()

        return AwaitComplete(then())

    def mark_cuts(self) -> None:
        """Mark the code blocks cut at this segment's edges (-fence-continued: its first block;
        -fence-cut: its last), for the CSS that joins them to the next segment's without a seam."""
        blocks = [child for child in self.children if isinstance(child, MarkdownFence)]
        for block in blocks:
            above = block is self.children[0] and self.has_class("-fence-continued")
            below = block is self.children[-1] and self.has_class("-fence-cut")
            if block.has_class("-cut-above") != above or block.has_class("-cut-below") != below:
                block.set_class(above, "-cut-above")
                block.set_class(below, "-cut-below")

    def fold(self) -> None:
        """Hide the blocks, keeping the height. Textual lays out every widget of the screen at each
        update, in view or not (measured: 27 ms of the UI thread per update at the end of an
        8,000-token reply, 4.5 ms with the segments out of view folded)."""
        if self.folded_at is not None or self.live or not self.size.height or not self.children:
            return
        self.folded_at = self.size.width
        self.styles.height = self.size.height
        for child in self.children:
            child.display = False

    def unfold(self) -> None:
        """Show the blocks again (the height follows them: right again after a resize)."""
        if self.folded_at is None:
            return
        self.folded_at = None
        for child in self.children:
            child.display = True
        self.styles.height = "auto"


def fit_segments(conversation: Widget, margin: int = 1) -> None:
    """Fold the segments of the messages in `conversation` more than `margin` segments away from
    those in view, and unfold the others: a layout then costs what is on screen.

    Where each segment is comes from the last layout (positions within their containers, which a
    scroll does not change) and the scroll offset now: the screen's map of what is visible is
    only updated at the next frame after a scroll."""
    top = conversation.scroll_y
    bottom = top + conversation.scrollable_content_region.height
    segments: list[Segment] = []
    shown: list[int] = []
    for view in conversation.children:
        if not isinstance(view, MessageView):
            continue
        for segment in view.children:
            if not isinstance(segment, Segment):
                continue
            y: float
            try:
                y = view.virtual_region.y + segment.virtual_region.y
            except (NoWidget, NoScreen):  # not laid out yet: treat as in view
                y = top
            if y < bottom and y + segment.size.height > top:
                shown.append(len(segments))
            segments.append(segment)
    if not shown:
        return
    low, high = shown[0] - margin, shown[-1] + margin
    for i, segment in enumerate(segments):
        if low <= i <= high:
            segment.unfold()
        else:
            segment.fold()


def _segment(piece: Piece, next_fence: str = "") -> Segment:
    """The widget showing `piece`, the next piece starting inside the code block of `next_fence`."""
    classes = ("-fence-continued " if piece.fence else "") + ("-fence-cut" if next_fence else "")
    return Segment(opening(piece.fence) + piece.text + closing(next_fence), classes=classes.strip())


class MessageView(Widget):
    """One message of the conversation, rendered as Markdown segments (streamed for replies).

    A user's message is shown as typed, not as Markdown: Markdown joins single line breaks
    and drops indentation and `*`, which made a pasted multi-line prompt one run-on line.
    Its class is its role (user, assistant, info, error), plus "cancelled" for a stopped reply.
    """

    # The view has the padding and the colour of its role (styles.tcss); a segment is bare. A
    # code block cut between segments is one box: no margin or padding where it is cut (whole
    # margins and paddings, MarkdownFence's own but for the cut side, as one side alone resets
    # the others: margin 1 0 and padding 1 2, or 0 and 1 0 in ANSI colour). The cut fences are
    # marked by class (Segment.mark_cuts), not picked by :first-child / :last-child: Textual
    # restyles every child with an order rule at each mount into its parent, and a restyled
    # fence highlights its code again and lays out the screen (bench_tui.py: 45 of 160 layouts
    # in a 4,000-token reply, while the user typed).
    DEFAULT_CSS = """
    MessageView { height: auto; layout: vertical; }
    MessageView > Markdown { padding: 0; margin: 0; }
    MessageView > .verbatim { margin: 0 0 1 0; }
    MessageView > Segment > MarkdownFence.-cut-below {
        margin: 1 0 0 0; & > Label { padding: 1 2 0 2; }
        &:ansi { margin: 0; & > Label { padding: 1 0 0 0; } }
    }
    MessageView > Segment > MarkdownFence.-cut-above {
        margin: 0 0 1 0; & > Label { padding: 0 2 1 2; }
        &:ansi { margin: 0; & > Label { padding: 0 0 1 0; } }
    }
    MessageView > Segment > MarkdownFence.-cut-above.-cut-below {
        margin: 0; & > Label { padding: 0 2; }
        &:ansi { & > Label { padding: 0; } }
    }
    """

    def __init__(self, text: str, role: str, *, message_id: int | None = None) -> None:
        super().__init__(classes=role)
        self.role = role
        self.text = text
        self.message_id = message_id
        self._verbatim = "user" in role.split()
        self._pieces = [Piece(text)] if self._verbatim else split_segments(text)  # what each child shows

    def compose(self) -> ComposeResult:
        if self._verbatim:
            yield Static(self._pieces[0].text, markup=False, classes="verbatim")
            return
        pieces = self._pieces
        for piece, after in zip(pieces, [*pieces[1:], None], strict=True):
            yield _segment(piece, after.fence if after is not None else "")

    @property
    def source(self) -> str:
        """The text shown (while a reply streams, all of it so far)."""
        return "".join(piece.text for piece in self._pieces)

    def update(self, markdown: str) -> AwaitComplete:
        """Show `markdown` instead, rendered afresh."""
        self._pieces = [Piece(markdown)] if self._verbatim else split_segments(markdown)

        async def show() -> None:
            await self.remove_children()
            await self.mount_all(list(self.compose()))

        return AwaitComplete(show())

    def get_stream(
        self, on_segment: Callable[[], object] | None = None, *, keys: InputClock | None = None
    ) -> ReplyStream:
        """A stream that appends to this message (a reply being written, or one growing in place);
        while `keys` says the user types, it is drawn between their keys (TYPING_INTERVAL_S)."""
        return ReplyStream(self, on_segment, keys=keys)

    def finish(self) -> AwaitComplete:
        """After a stream: render again each segment with a code fence that shows other code than
        its text (a streamed fence could be left blank); only those, as rendering is slow."""
        stale = [seg for seg in self.query(Segment) if any(_shows_other_code(f) for f in seg.query(MarkdownFence))]

        async def render() -> None:
            for segment in stale:
                await segment.update(segment.source)

        return AwaitComplete(render())

    def set_state(self, add: bool, *names: str) -> None:
        """Add or remove state classes (cancelled, -labelled) restyling this widget only.

        Textual restyles every descendant on a class change, hundreds of widgets for a long
        reply (0.1-0.4 s here); no rule of styles.tcss styles a descendant by these classes."""
        present = [name for name in names if self.has_class(name)]
        if len(present) == (len(names) if add else 0):
            return
        self.set_class(add, *names, update=False)
        if self.is_attached:
            self.app.stylesheet.update_nodes([self], animate=False)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _shows_other_code(fence: MarkdownFence) -> bool:
    labels = fence.query(Label)
    if not labels:
        return True
    shown = labels.first().content
    text = shown.plain if isinstance(shown, Content) else str(shown)
    return text.rstrip() != fence.code.rstrip()


class ReplyStream:
    """Appends text to a MessageView, paced to what the UI thread can draw.

    Textual mounts a Markdown block in 1-4 ms of the UI thread here (50-200 ms for a 40-line
    segment) and draws no frame while it mounts, so text is applied in batches: a batch of at
    most `lines` lines, the frame that shows it, then a rest of REST_PER_BUSY times the UI
    thread's time that took (none once all text has come: `when_shown`), and at least
    UPDATE_INTERVAL_S from one batch to the next. `lines` halves when applying a batch took the
    UI thread longer than BATCH_APPLY_S and grows when it took less than half that. A key typed
    meanwhile waits for one batch and one frame, however fast the text comes; text that comes
    faster than the machine can show it waits its turn (`backlog`). Text goes into the last
    segment (Markdown.append parses only the last block again); where localllm.tui.segments
    cuts, a new segment is mounted with its text and `on_segment` called. While `keys` says the
    user types, a batch waits for the frame after a key, TYPING_INTERVAL_S at least from the one
    before, also once all text has come.
    """

    def __init__(
        self, view: MessageView, on_segment: Callable[[], object] | None = None, *, keys: InputClock | None = None
    ) -> None:
        self.view = view
        self.on_segment = on_segment
        self.keys = keys
        self.lines = FIRST_BATCH_LINES
        last = view._pieces[-1]
        self._splitter = SegmentSplitter(last.text, fence=last.fence)
        self._pending = ""
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._on_shown: Callable[[], object] | None = None
        self._applying = False
        self._rest = REST_PER_BUSY

    @property
    def backlog(self) -> bool:
        """Text written is still to be shown."""
        return bool(self._pending) or self._applying

    def write(self, text: str) -> None:
        """Append `text` (of any length); it shows in the coming batches."""
        if self._stopped.is_set() or not text:
            return
        self._pending += text
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reply stream")

    def when_shown(self, callback: Callable[[], object]) -> None:
        """Call `callback` once all text written is shown (or the stream is stopped): now, if it is.

        All text has come: from now on the stream does not rest between batches (the model needs
        no CPU any more), it only lets each batch be drawn, with the keys typed meanwhile."""
        if self.backlog and not self._stopped.is_set():
            self._on_shown = callback
            self._rest = 0.0
        else:
            callback()

    async def stop(self) -> None:
        """Stop at once, leaving what is still to be shown (the view is going away, or all was shown)."""
        self._stopped.set()
        self._wake.set()
        if self._task is not None:
            await self._task
        self._pending = ""
        held = self._splitter.flush()  # the text has ended: the start of a line held back goes in
        if held:
            last = self.view._pieces[-1]
            self.view._pieces[-1] = last._replace(text=last.text + held)
            await (await self._tail()).append(held)
        for segment in self.view.query(Segment):
            segment.live = False
        self._shown()

    def _shown(self) -> None:
        callback, self._on_shown = self._on_shown, None
        if callback is not None:
            callback()

    async def _run(self) -> None:
        while not self._stopped.is_set():
            if not self._pending:
                self._shown()
                await self._wake.wait()
                self._wake.clear()
                continue
            started, cpu, clock = time.perf_counter(), time.thread_time(), time.monotonic()
            self._applying = True
            try:
                await self._apply(self._take())
            finally:
                self._applying = False
            # the UI thread's own time, not the wall's: on a busy machine the batch stays the
            # size the work allows, and only the pause after it grows
            applied = time.thread_time() - cpu
            if applied > BATCH_APPLY_S:
                self.lines = max(1, self.lines // 2)
            elif applied < BATCH_APPLY_S / 2:
                self.lines = min(MAX_BATCH_LINES, self.lines + max(1, self.lines // 2))
            drawn = asyncio.get_running_loop().create_future()
            self.view.call_after_refresh(_resolve, drawn)
            # until the screen has drawn the batch: it draws between its own messages, so
            # never waited for once stopping (the screen may be the one waiting)
            await self._until_stopped(drawn, DRAWN_TIMEOUT_S)
            busy = time.thread_time() - cpu  # applying and drawing, on the UI thread
            await self._until_stopped(None, max(UPDATE_INTERVAL_S - (time.perf_counter() - started), busy * self._rest))
            await self._between_keys(clock)

    async def _between_keys(self, since: float) -> None:
        """While the user types: wait TYPING_INTERVAL_S from `since` (time.monotonic()), then for the
        next key and the frame that shows it. Returns at once when they stop typing."""
        keys = self.keys
        while keys is not None and keys.typing() and not self._stopped.is_set():
            left = TYPING_INTERVAL_S - (time.monotonic() - since)
            if left > 0:
                await self._until_stopped(None, left)
                continue
            loop = asyncio.get_running_loop()
            key: asyncio.Future[None] = loop.create_future()
            keys.on_next_key(functools.partial(_resolve, key))
            await self._until_stopped(key, TYPING_S)  # no key for that long: no longer typing
            if key.done():
                await self._until_stopped(None, KEY_SETTLE_S)
                drawn = loop.create_future()
                self.view.call_after_refresh(_resolve, drawn)
                await self._until_stopped(drawn, DRAWN_TIMEOUT_S)
                return

    def _take(self) -> str:
        """The next batch: pending text up to and with its `lines`-th line break (all when fewer)."""
        text, end = self._pending, -1
        for _ in range(self.lines):
            end = text.find("\n", end + 1)
            if end < 0:
                self._pending = ""
                return text
        self._pending = text[end + 1 :]
        return text[: end + 1]

    async def _apply(self, text: str) -> None:
        view = self.view
        first, *rest = self._splitter.feed(text)
        if first.text:
            last = view._pieces[-1]
            view._pieces[-1] = last._replace(text=last.text + first.text)
            await (await self._tail()).append(first.text)
        for piece in rest:
            before = await self._tail()
            before.live = False
            if piece.fence:  # cut inside a code block: shown closed here, opened again below
                await before.append(closing(piece.fence))
                before.add_class("-fence-cut")
                before.mark_cuts()
            view._pieces.append(piece)
            tail = _segment(piece)
            tail.live = True
            await view.mount(tail)
            if self.on_segment is not None:
                self.on_segment()

    async def _tail(self) -> Segment:
        children = self.view.children
        last = children[-1] if children else None
        if not isinstance(last, Segment):  # not composed yet
            last = Segment()
            await self.view.mount(last)
        if not last.live:
            last.live = True
            last.unfold()  # a reply growing in place may have been out of view
        return last

    async def _until_stopped(self, future: asyncio.Future[None] | None, timeout: float) -> None:
        """Wait for `future` (None: nothing) for at most `timeout` seconds, or until stop() is called."""
        stopping = asyncio.ensure_future(self._stopped.wait())
        waits: set[asyncio.Future[Any]] = {stopping} if future is None else {stopping, future}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
