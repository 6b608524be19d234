"""localllm.tui.collector: what is alive when a reply starts is frozen (full collections do not walk
it while the reply streams); frozen garbage is collected when the frozen heap has grown by a quarter."""

from __future__ import annotations

import gc
import weakref

import pytest

from localllm.tui import collector


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the cyclic collector frees it


@pytest.fixture
def collector_state(monkeypatch):
    monkeypatch.setattr(collector, "_last_full", 0)
    thresholds = gc.get_threshold()
    yield
    collector.reply_ended()
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_no_full_collection_of_its_own_while_a_reply_streams(collector_state):
    """CPython counts only unfrozen objects as long-lived, so after a freeze its own rule for full
    collections fires often: they are held from a reply's start to its end."""
    thresholds = gc.get_threshold()
    collector.reply_started()
    assert gc.get_threshold()[:2] == thresholds[:2] and gc.get_threshold()[2] >= 1 << 30
    collector.reply_started()  # a second start (a reply continued) keeps what to put back
    collector.reply_ended()
    assert gc.get_threshold() == thresholds
    collector.reply_ended()  # ending twice (quitting after the reply ended) changes nothing
    assert gc.get_threshold() == thresholds


def test_a_reply_start_freezes_what_is_alive(collector_state):
    collector.reply_started()
    assert gc.get_freeze_count() > 0
    node = Node()
    ref = weakref.ref(node)
    collector.segment_done()  # frozen with the segment's widgets
    del node
    gc.collect()
    assert ref() is not None, "a full collection walked the frozen objects"


def test_frozen_garbage_is_collected_once_the_frozen_heap_grew_by_a_quarter(collector_state, monkeypatch):
    collector.reply_started()
    node = Node()
    ref = weakref.ref(node)
    collector.segment_done()
    del node
    monkeypatch.setattr(collector, "_last_full", gc.get_freeze_count())  # no growth since the last full one
    collector.reply_started()
    assert ref() is not None
    monkeypatch.setattr(collector, "_last_full", int(gc.get_freeze_count() / (1 + collector.GROWTH)) - 1)
    collector.reply_started()
    assert ref() is None
    assert gc.get_freeze_count() > 0  # and what is alive is frozen again
