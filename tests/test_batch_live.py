"""run_live on real llama.cpp: items that arrive while others decode join their steps, each still
gets what run() gives it alone; one item is cancelled alone; the feed's bound and close hold."""

from __future__ import annotations

import threading
import time

import pytest

from localllm.batching import BatchFeed, BatchItem, QueueFullError, run_live
from localllm.errors import GenerationError, InvalidOptionError
from localllm.generation import SamplingOptions, join, run
from localllm.placement import Placement
from localllm.runtimes.llamacpp import LlamaCppEngine
from localllm.server.pool import parse_keep_alive

N_CTX = 256


def _engine(path, n_seq):
    return LlamaCppEngine(path, Placement(n_ctx=N_CTX, n_threads=1, n_seq=n_seq))


def _item(engine, text, max_tokens):
    tokens = engine.tokenize(text, add_bos=True, special=False)
    return BatchItem(tuple(tokens), SamplingOptions(temperature=0, max_tokens=max_tokens))


class Live:
    """run_live in a thread, its chunks collected by item id."""

    def __init__(self, engine, feed, stop=None):
        self.chunks: dict[int, list] = {}
        self.steps: list[int] = []  # ids going per eval_batch call
        self.done = threading.Event()
        inner = engine

        class Spy:
            def __getattr__(self, name):
                return getattr(inner, name)

            def eval_batch(spy, items):
                self.steps.append(len(items))
                return inner.eval_batch(items)

        def work():
            for index, chunk in run_live(Spy(), feed, stop):
                self.chunks.setdefault(index, []).append(chunk)
            self.done.set()

        self.thread = threading.Thread(target=work)
        self.thread.start()

    def finished(self, index):
        got = self.chunks.get(index) or []
        return bool(got) and got[-1].finish_reason is not None

    def wait(self, condition, timeout=60):
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.01)


def test_items_arriving_while_others_decode_share_steps_and_get_their_own_tokens(tiny_gguf):
    engine = _engine(tiny_gguf, 4)
    items = [_item(engine, t, n) for t, n in [("Hello there", 40), ("1, 2, 3,", 30), ("The sea is", 25)]]
    feed = BatchFeed(8)
    live = Live(engine, feed)
    ids = [feed.submit(items[0])]
    live.wait(lambda: len(live.chunks.get(ids[0], [])) >= 5)  # the first decodes alone for a while
    ids += [feed.submit(items[1]), feed.submit(items[2])]
    live.wait(lambda: all(live.finished(i) for i in ids))
    feed.close()
    live.thread.join(30)
    assert live.done.is_set()
    assert max(live.steps) >= 2  # the later ones joined the first's steps
    alone_engine = _engine(tiny_gguf, 1)
    for i, item in zip(ids, items, strict=True):
        alone = join(run(alone_engine, item.prompt_tokens, item.options))
        assert join(live.chunks[i]).token_ids == alone.token_ids
    engine.close()
    alone_engine.close()


def test_one_item_cancelled_ends_alone_and_a_waiting_one_is_never_started(tiny_gguf):
    engine = _engine(tiny_gguf, 1)
    feed = BatchFeed(8)
    live = Live(engine, feed)
    going, waiting = threading.Event(), threading.Event()
    a = feed.submit(_item(engine, "Hello there", 200), going)
    b = feed.submit(_item(engine, "1, 2, 3,", 200), waiting)
    c = feed.submit(_item(engine, "The sea is", 5))
    live.wait(lambda: len(live.chunks.get(a, [])) >= 3)
    waiting.set()  # b waits for a's sequence: it ends without a token
    going.set()
    feed.wake()
    live.wait(lambda: all(live.finished(i) for i in (a, b, c)))
    assert live.chunks[a][-1].finish_reason == "cancelled"
    assert [ch.finish_reason for ch in live.chunks[b]] == ["cancelled"]
    assert live.chunks[c][-1].finish_reason in ("length", "eos")
    feed.close()
    live.thread.join(30)
    engine.close()


def test_the_feed_is_bounded_and_refuses_once_closed(tiny_gguf):
    engine = _engine(tiny_gguf, 1)
    item = _item(engine, "Hello", 4)
    feed = BatchFeed(2)
    feed.submit(item)
    feed.submit(item)
    with pytest.raises(QueueFullError, match="2 requests already wait") as err:
        feed.submit(item)
    assert (err.value.waiting, err.value.limit) == (2, 2)
    stop = threading.Event()
    stop.set()  # a stopped run ends every item "cancelled", the waiting ones too
    got = list(run_live(engine, feed, stop))
    assert sorted(i for i, _ in got) == [0, 1] and {c.finish_reason for _, c in got} == {"cancelled"}
    feed.close()
    with pytest.raises(GenerationError, match="shutting down"):
        feed.submit(item)
    with pytest.raises(InvalidOptionError):
        BatchFeed(0)
    engine.close()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, 300.0), ("5m", 300.0), ("30s", 30.0), ("1h", 3600.0), (0, 0.0), ("0", 0.0), (-1, float("inf")), (2.5, 2.5)],
)
def test_keep_alive_takes_ollamas_forms(value, seconds):
    assert parse_keep_alive(value, 300.0) == seconds


@pytest.mark.parametrize("value", ["soon", True, [5], "5 minutes"])
def test_keep_alive_refuses_what_it_cannot_read(value):
    with pytest.raises(InvalidOptionError, match="keep_alive must be seconds"):
        parse_keep_alive(value, 300.0)
