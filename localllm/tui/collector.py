"""When Python's cyclic garbage collector may walk the whole heap: not while a reply streams. No Textual here.

A full (generation 2) collection visits every tracked object, and a chat's widgets are many:
about 200,000 objects after an 8,000-token reply, 190 ms for one collection on the UI thread
here, and CPython ran one every time the heap had grown by a quarter, a dozen in one long reply
(benchmarks/bench_tui.py: the stalls of 80-300 ms every half second were these). So:

- when a reply starts (`reply_started`), what is alive is the app and the chat on screen, which
  outlive the reply: `gc.freeze()` moves it out of the collector's sight, and the collections
  during the reply walk only what the reply made;
- each segment of the reply that is complete (`segment_done`) is frozen too, so those
  collections stay the size of one segment;
- frozen objects that become garbage (a closed chat, a regenerated reply) are only found by a
  full collection after `gc.unfreeze()`. `reply_started` does that when the frozen heap has
  grown by a quarter since the last one, CPython's own rule for its full collections, at the
  moment the user has just sent a message and waits for the model's first word anyway.

- and while the reply streams, CPython makes no full collection of its own (`reply_started`
  raises its threshold for them; `reply_ended` puts it back). Freezing alone was not enough: the
  collector counts only unfrozen objects as long-lived, so after a freeze its quarter rule fires
  often, and each of those collections walked everything the reply had made since the last
  freeze: 13 of 7-95 ms in an 8-second reply at 1,000 tokens/s (bench_tui.py). The young
  generations are still collected as usual, a few milliseconds each.

Reference counting frees everything else at once, frozen or not.
"""

from __future__ import annotations

import gc
import logging

__all__ = ["GROWTH", "reply_ended", "reply_started", "segment_done"]

log = logging.getLogger(__name__)

# A full collection when the frozen heap has grown by this fraction since the last one (CPython
# defers its own full collections until the objects that survived a young one reach 25 % of those
# that survived the last full one).
GROWTH = 0.25

_last_full = 0  # objects that survived the last full collection made here; 0 before the first
_held: tuple[int, int, int] | None = None  # the thresholds before reply_started held full collections
# gc's third threshold is how many collections of the middle generation make it consider a full one
_NEVER = 1 << 30


def reply_started() -> None:
    """A reply starts: collect everything if the frozen heap grew enough since the last time, then
    freeze, and hold CPython's full collections until `reply_ended`."""
    global _last_full, _held
    full = not _last_full or gc.get_freeze_count() > _last_full * (1 + GROWTH)
    if full:
        gc.unfreeze()
        found = gc.collect()
    gc.freeze()
    if full:
        _last_full = gc.get_freeze_count()
        log.debug("full collection before a reply: %d found, %d objects kept", found, _last_full)
    if _held is None:
        _held = gc.get_threshold()
        gc.set_threshold(_held[0], _held[1], _NEVER)


def reply_ended() -> None:
    """The reply is over (stored, failed or stopped): CPython's own full collections come back."""
    global _held
    if _held is not None:
        gc.set_threshold(*_held)
        _held = None


def segment_done() -> None:
    """A segment of the reply is complete: its widgets live as long as the chat is shown."""
    gc.freeze()
