"""run_batch on real llama.cpp: continuous batching gives each item what run() gives it alone."""

from __future__ import annotations

import threading

import pytest

from localllm.batching import BatchItem, run_batch
from localllm.errors import ContextOverflowError, InvalidOptionError
from localllm.generation import Chunk, SamplingOptions, join, last_edge, run
from localllm.placement import Placement
from localllm.runtimes.llamacpp import LlamaCppEngine

N_CTX = 512
PROMPTS = [
    "The capital of France is",
    "Write a short poem about the sea.\n" * 10,
    "1, 2, 3, 4,",
    "Hello",
    "Explain gravity to a child, step by step. " * 7,
    "def fibonacci(n):",
    "Q: What is two plus two?\nA:",
]
MAX_TOKENS = [20, 33, 12, 40, 25, 30, 8]


def _load(path, n_seq: int) -> LlamaCppEngine:
    return LlamaCppEngine(path, Placement(n_ctx=N_CTX, n_threads=1, n_seq=n_seq))


def _greedy(max_tokens: int, **more) -> SamplingOptions:
    return SamplingOptions(temperature=0, max_tokens=max_tokens, **more)


def _collect(stream) -> dict[int, list[Chunk]]:
    out: dict[int, list[Chunk]] = {}
    for index, chunk in stream:
        assert not out.get(index) or out[index][-1].finish_reason is None  # nothing after an item's end
        out.setdefault(index, []).append(chunk)
    return out


def _alone(path, items: list[BatchItem]) -> list[list[Chunk]]:
    """Each item run by itself with run() on a fresh single-sequence engine."""
    out = []
    for item in items:
        engine = _load(path, 1)
        out.append(list(run(engine, item.prompt_tokens, item.options, stop_tokens=item.stop_tokens)))
        engine.close()
    return out


class Counting:
    """The engine, counting the tokens each eval_batch call was given."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self._engine, self.calls = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def eval_batch(self, items):
        self.calls.append([(seq, len(tokens)) for seq, tokens in items])
        return self._engine.eval_batch(items)

    @property
    def evaluated(self) -> int:
        return sum(n for call in self.calls for _, n in call)


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from localllm.testing import quantize_gguf, write_llama_gguf

    f32 = write_llama_gguf(tmp_path_factory.mktemp("batching") / "tiny.gguf", seed=1)
    return quantize_gguf(f32, f32.with_name("tiny-q8_0.gguf"), "Q8_0")


def _check_same_as_alone(path, stop=()):
    engine = Counting(_load(path, 4))
    items = [
        BatchItem(tuple(engine.tokenize(p)), _greedy(m, stop=stop)) for p, m in zip(PROMPTS, MAX_TOKENS, strict=True)
    ]
    got = _collect(run_batch(engine, items))
    want = _alone(path, items)
    for i, chunks in sorted(got.items()):
        # same chunks: text pieces, their tokens, how each ended
        assert [(c.text, c.token_ids, c.finish_reason) for c in chunks] == [
            (c.text, c.token_ids, c.finish_reason) for c in want[i]
        ], f"item {i} ({PROMPTS[i][:30]!r})"
        assert chunks[-1].timings.prompt_tokens == len(items[i].prompt_tokens)
    assert sorted(got) == list(range(len(items)))
    # continuous batching: never more than 4 sequences in a step, items 4.. joined mid-run, mixing
    # prompt chunks with other sequences' decode tokens
    assert max(len(call) for call in engine.calls) == 4
    assert any(len(call) > 1 and any(n > 1 for _, n in call) and any(n == 1 for _, n in call) for call in engine.calls)
    assert all(engine.seq_tokens(s) == () for s in range(4))  # all freed at the end
    return engine


def test_greedy_batch_equals_each_item_alone_real_model(smollm2_gguf):
    engine = _check_same_as_alone(smollm2_gguf)
    # afterwards sequence 0 behaves as on a fresh engine
    prompt = engine.tokenize("The capital of Italy is")
    after = join(run(engine._engine, prompt, _greedy(10)))
    fresh = _load(smollm2_gguf, 1)
    assert after.token_ids == join(run(fresh, prompt, _greedy(10))).token_ids
    assert after.timings.cached_tokens == 0


def test_greedy_batch_equals_each_item_alone_tiny_model_with_stop_strings(tiny_path):
    _check_same_as_alone(tiny_path, stop=("e", "ab"))


def test_a_shared_prefix_is_evaluated_once(smollm2_gguf):
    engine = Counting(_load(smollm2_gguf, 4))
    system = engine.tokenize("You are a helpful assistant who answers in one sentence. " * 16)
    tails = [" What is the sun?", " Name a fruit.", " Why is the sky blue?", " Count to three.", " Say hi."]
    items = [BatchItem(tuple(system + engine.tokenize(t, add_bos=False)), _greedy(12)) for t in tails]
    got = _collect(run_batch(engine, items))
    want = _alone(smollm2_gguf, items)
    for i in range(len(items)):
        assert join(got[i]).token_ids == join(want[i]).token_ids, f"item {i}"
    # copied in whole prompt chunks, below where each prompt's own last chunk starts (chunk_end)
    shared = min([len(system) // 64 * 64] + [last_edge(len(it.prompt_tokens), 64) for it in items])
    assert shared >= 128
    prompt_total = sum(len(it.prompt_tokens) for it in items)
    decoded = sum(len(join(c).token_ids) for c in got.values())  # eos/length tokens need no evaluation after
    assert engine.evaluated <= prompt_total - (len(items) - 1) * shared + decoded
    assert [join(got[i]).timings.cached_tokens for i in range(len(items))] == [0] + [shared] * (len(items) - 1)


def test_bad_items_fail_alone(smollm2_gguf):
    engine = _load(smollm2_gguf, 2)
    good = tuple(engine.tokenize("The capital of France is"))
    items = [
        BatchItem(good, _greedy(6)),
        BatchItem((), _greedy(6)),
        BatchItem(tuple(engine.tokenize("word " * 600)), _greedy(6)),
        BatchItem(good, _greedy(4)),
    ]
    got = _collect(run_batch(engine, items))
    empty, long = got[1], got[2]
    assert len(empty) == 1 and empty[0].finish_reason == "error" and isinstance(empty[0].error, InvalidOptionError)
    assert long[-1].finish_reason == "error" and isinstance(long[-1].error, ContextOverflowError)
    assert long[-1].error.n_ctx == N_CTX and "context window is 512" in str(long[-1].error)
    done = join(long)
    assert done.finish_reason == "error" and done.error is long[-1].error
    assert [join(got[i]).finish_reason for i in (0, 3)] == ["length", "length"]
    assert join(got[3]).token_ids == join(got[0]).token_ids[:4]


def test_stop_event_cancels_every_item(smollm2_gguf):
    engine = _load(smollm2_gguf, 2)
    items = [BatchItem(tuple(engine.tokenize(p)), _greedy(200)) for p in PROMPTS[:5]]
    stop = threading.Event()
    got: dict[int, list[Chunk]] = {}
    for index, chunk in run_batch(engine, items, stop):
        got.setdefault(index, []).append(chunk)
        if sum(len(c.token_ids) for cs in got.values() for c in cs) >= 5:
            stop.set()
    assert sorted(got) == list(range(5))
    assert [cs[-1].finish_reason for _, cs in sorted(got.items())] == ["cancelled"] * 5
    assert all(engine.seq_tokens(s) == () for s in range(2))


def test_parallel_caps_the_sequences_and_a_single_sequence_engine_runs_one_by_one(tiny_path):
    multi = Counting(_load(tiny_path, 4))
    items = [BatchItem(tuple(multi.tokenize(p)), _greedy(m)) for p, m in zip(PROMPTS[:4], MAX_TOKENS[:4], strict=True)]
    want = [join(c).token_ids for c in _alone(tiny_path, items)]
    got = _collect(run_batch(multi, items, parallel=2))
    assert max(len(call) for call in multi.calls) == 2
    assert [join(got[i]).token_ids for i in range(4)] == want
    single = Counting(_load(tiny_path, 1))
    got = _collect(run_batch(single, items))
    assert max(len(call) for call in single.calls) == 1
    assert [join(got[i]).token_ids for i in range(4)] == want
    with pytest.raises(InvalidOptionError, match="parallel"):
        list(run_batch(single, items, parallel=0))
