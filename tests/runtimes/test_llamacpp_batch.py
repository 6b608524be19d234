"""LlamaCppEngine with several sequences (placement.n_seq): eval_batch, seq_keep, seq_copy, reset."""

from __future__ import annotations

import numpy as np
import pytest

from localllm.errors import ContextOverflowError
from localllm.placement import Placement
from localllm.runtimes.base import BatchEngine
from localllm.runtimes.llamacpp import LlamaCppEngine

N_CTX = 256


def _engine(path, n_seq: int) -> LlamaCppEngine:
    return LlamaCppEngine(path, Placement(n_ctx=N_CTX, n_threads=1, n_seq=n_seq))


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    from localllm.testing import quantize_gguf, write_llama_gguf

    f32 = write_llama_gguf(tmp_path_factory.mktemp("batch-models") / "tiny.gguf", seed=1)
    q8 = quantize_gguf(f32, f32.with_name("tiny-q8_0.gguf"), "Q8_0")
    made = {"f32": (_engine(f32, 4), _engine(f32, 1)), "q8_0": (_engine(q8, 4), _engine(q8, 1))}
    yield made
    for pair in made.values():
        for engine in pair:
            engine.close()


def _alone(single: LlamaCppEngine, *pieces: list[int]) -> np.ndarray:
    """The logits a lone sequence gets when evaluated piece by piece (llama.cpp's logits depend on
    where the batches were cut, so the pieces are those of the batched call)."""
    single.rewind(0)
    for piece in pieces:
        logits = single.eval(piece)
    return logits.copy()


@pytest.mark.parametrize("kind", ["f32", "q8_0"])
def test_eval_batch_mixes_sequences_and_matches_each_alone(engines, kind):
    multi, single = engines[kind]
    multi.reset_batch()
    assert isinstance(multi, BatchEngine) and multi.n_seq_max == 4 and multi.n_ctx == N_CTX
    a, b, c = multi.tokenize("hello world " * 3), multi.tokenize("the cat"), multi.tokenize("x y z " * 30)
    rows = multi.eval_batch([(3, a), (1, b), (0, c)])  # out of seq order: results still in item order
    for row, tokens in zip(rows, (a, b, c), strict=True):
        assert row.dtype == np.float32 and row.shape == (multi.n_vocab,)
        np.testing.assert_array_equal(row, _alone(single, tokens))
    assert multi.seq_tokens(3) == tuple(a) and multi.seq_tokens(1) == tuple(b) and multi.seq_tokens(2) == ()
    assert multi.cached_tokens == tuple(c)  # sequence 0 is the single-sequence API's
    # one decode token each next, sequences mixed: still each one's own continuation
    nxt = multi.eval_batch([(1, [5]), (3, [7])])
    np.testing.assert_array_equal(nxt[0], _alone(single, b, [5]))
    np.testing.assert_array_equal(nxt[1], _alone(single, a, [7]))
    # the rows are copies: later decodes leave them alone
    kept = nxt[0].copy()
    multi.eval_batch([(1, [9])])
    np.testing.assert_array_equal(nxt[0], kept)


def test_batches_longer_than_n_batch_are_split_into_decodes(tmp_path):
    from localllm.testing import write_llama_gguf

    path = write_llama_gguf(tmp_path / "tiny.gguf", seed=2)
    multi = LlamaCppEngine(path, Placement(n_ctx=N_CTX, n_threads=1, n_seq=3, n_batch=16, n_ubatch=16))
    single = LlamaCppEngine(path, Placement(n_ctx=N_CTX, n_threads=1, n_batch=16, n_ubatch=16))
    a, b = list(range(5, 45)), list(range(50, 63))  # 53 tokens: four decodes of at most 16
    rows = multi.eval_batch([(0, a), (2, b)])
    np.testing.assert_array_equal(rows[0], _alone(single, a[:16], a[16:32], a[32:]))
    np.testing.assert_array_equal(rows[1], _alone(single, b))
    multi.close()
    single.close()


def test_seq_keep_and_seq_copy(engines):
    multi, single = engines["f32"]
    multi.reset_batch()
    prompt = multi.tokenize("one two three four five six seven eight nine ten " * 2)
    multi.eval_batch([(2, prompt)])
    multi.seq_copy(2, 1, 10)  # dst gets the first 10 positions, computed once
    assert multi.seq_tokens(1) == tuple(prompt[:10]) and multi.seq_tokens(2) == tuple(prompt)
    (row,) = multi.eval_batch([(1, prompt[10:])])
    np.testing.assert_array_equal(row, _alone(single, prompt[:10], prompt[10:]))
    multi.seq_keep(2, 4)  # truncate: the next token continues from position 4
    assert multi.seq_tokens(2) == tuple(prompt[:4])
    (row,) = multi.eval_batch([(2, [11, 12])])
    np.testing.assert_array_equal(row, _alone(single, prompt[:4], [11, 12]))
    multi.seq_keep(2, 0)
    assert multi.seq_tokens(2) == () and multi.seq_tokens(1) == tuple(prompt)  # sequence 1 untouched
    # a copy onto a sequence that holds tokens replaces them
    multi.seq_copy(1, 2, 3)
    (row,) = multi.eval_batch([(2, [20])])
    np.testing.assert_array_equal(row, _alone(single, prompt[:3], [20]))
    with pytest.raises(ValueError, match="0 < n"):
        multi.seq_copy(1, 3, len(prompt) + 1)
    with pytest.raises(ValueError, match="no sequence 4"):
        multi.seq_tokens(4)


def test_overflow_is_refused_per_sequence_before_anything_is_evaluated(engines):
    multi, _ = engines["f32"]
    multi.reset_batch()
    multi.eval_batch([(1, [5] * 200)])
    message = r"sequence 1: 200 cached \+ 57 new tokens exceed its context window of 256"
    with pytest.raises(ContextOverflowError, match=message) as err:
        multi.eval_batch([(0, [6, 7]), (1, [5] * 57)])
    assert err.value.n_ctx == N_CTX
    assert multi.seq_tokens(0) == () and len(multi.seq_tokens(1)) == 200  # nothing half-done
    with pytest.raises(ValueError, match="twice"):
        multi.eval_batch([(0, [1]), (0, [2])])


def test_reset_batch_frees_everything_and_seq0_works_as_fresh(engines):
    multi, single = engines["q8_0"]
    multi.eval_batch([(0, [5, 6, 7]), (2, [8, 9]), (3, [10])])
    multi.reset_batch()
    assert all(multi.seq_tokens(s) == () for s in range(4)) and multi.n_past == 0
    tokens = multi.tokenize("a fresh start")
    np.testing.assert_array_equal(multi.eval(tokens), _alone(single, tokens))
    multi.rewind(1)  # rewind on sequence 0 leaves the others alone
    multi.eval_batch([(1, [5, 6])])
    multi.rewind(0)
    assert multi.seq_tokens(1) == (5, 6)
    multi.reset_batch()


def test_a_single_sequence_engine_takes_eval_batch_on_sequence_0(engines):
    _, single = engines["f32"]
    single.rewind(0)
    assert single.n_seq_max == 1
    (row,) = single.eval_batch([(0, [5, 6, 7])])
    np.testing.assert_array_equal(row, _alone(single, [5, 6, 7]))
    with pytest.raises(ValueError, match="no sequence 1"):
        single.eval_batch([(1, [5])])
