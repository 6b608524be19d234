"""Several sequences as batch rows of the ONNX engine (placement.n_seq > 1), on real tiny ONNX folders.

Every sequence of a batch run is held against the same sequence evaluated alone with eval()
on a one-sequence engine, and against the numpy reference (ReferenceDecoder.forward_batch).
Tolerances, absolute: batch vs alone on the same ONNX graph, 1e-5 with a float32 cache
(measured: under 5e-7, the order of float32 sums in a MatMul with more rows) and 1e-4 with a
float16 one (measured 1.1e-5: a key a hair apart rounds to the next half); vs numpy's float64
math, 1e-4 and 2e-2, as tests/runtimes/test_onnx.py holds eval() itself.
"""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from localllm.errors import ContextOverflowError, GenerationError
from localllm.generation import SamplingOptions, join, run
from localllm.hardware import Hardware
from localllm.placement import Placement
from localllm.runtimes.onnx import OnnxEngine
from localllm.testing import reference_decoder, write_onnx_folder

SEED = 3  # the seed conftest builds tiny_onnx with
SAME_GRAPH = {"tiny_onnx": 1e-5, "tiny_onnx_f16": 1e-4}
REFERENCE = {"tiny_onnx": 1e-4, "tiny_onnx_f16": 2e-2}
TEXTS = ("hello world, the cat is fast", "one two", "The answer is 42. and more words here now", "hi")


def engine_for(folder, n_seq: int, **placement) -> OnnxEngine:
    placement = {"runtime": "onnxruntime", "n_ctx": 128, "n_threads": 1, "n_batch": 8, "n_seq": n_seq, **placement}
    return OnnxEngine(folder, Placement(**placement), hardware=Hardware())


@pytest.fixture(scope="module", params=["tiny_onnx", "tiny_onnx_f16"])
def folder(request):
    return request.param, request.getfixturevalue(request.param)


@pytest.fixture(scope="module")
def single(folder):
    e = engine_for(folder[1], 1)
    yield e
    e.close()


@pytest.fixture
def batch(folder):
    e = engine_for(folder[1], 4)
    yield e
    e.close()


def alone(engine: OnnxEngine, prompt: list[int], n_decode: int) -> list[np.ndarray]:
    """Logits after the prompt, then after each greedy token, for one sequence evaluated by itself."""
    engine.rewind(0)
    out = [engine.eval(prompt).copy()]
    for _ in range(n_decode):
        out.append(engine.eval([int(np.argmax(out[-1]))]).copy())
    return out


def drive(eval_batch, plan: dict[int, tuple[int, list[int], int]]) -> dict[int, list[np.ndarray]]:
    """plan: seq -> (step it joins at, prompt, greedy tokens after it); one eval_batch call per step."""
    got: dict[int, list[np.ndarray]] = {seq: [] for seq in plan}
    step = 0
    while any(len(got[s]) < n + 1 for s, (_, _, n) in plan.items()):
        items = []
        for seq, (start, prompt, n) in plan.items():
            if step >= start and len(got[seq]) < n + 1:
                items.append((seq, prompt if not got[seq] else [int(np.argmax(got[seq][-1]))]))
        for (seq, _), logits in zip(items, eval_batch(items), strict=True):
            got[seq].append(np.array(logits, copy=True))
        step += 1
    return got


def assert_close(got: list[np.ndarray], expected: list[np.ndarray], atol: float) -> None:
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=atol, rtol=0)
    assert [int(np.argmax(g)) for g in got] == [int(np.argmax(e)) for e in expected]  # greedy tokens


def test_ragged_sequences_joining_mid_run_match_alone_and_reference(folder, single, batch):
    name, path = folder
    prompts = [single.tokenize(t) for t in TEXTS]
    assert len({len(p) for p in prompts}) == 4 and max(len(p) for p in prompts) > batch.n_batch  # several runs
    plan = {0: (0, prompts[0], 6), 1: (0, prompts[1], 9), 2: (2, prompts[2], 5), 3: (3, prompts[3], 7)}
    assert batch.n_seq_max == 4 and batch.batch_refusal is None
    got = drive(batch.eval_batch, plan)
    ref = drive(reference_decoder(path, seed=SEED).forward_batch, plan)
    for seq, (_, prompt, n) in plan.items():
        assert_close(got[seq], alone(single, prompt, n), SAME_GRAPH[folder[0]])
        assert_close(got[seq], ref[seq], REFERENCE[name])
        tokens = [int(np.argmax(x)) for x in got[seq][:-1]]
        assert list(batch.seq_tokens(seq)) == prompt + tokens


def test_freed_row_is_reused_and_cut_sequences_continue(folder, single, batch):
    p = [single.tokenize(t) for t in TEXTS]
    batch.eval_batch([(0, p[0]), (1, p[1]), (2, p[2])])
    batch.seq_keep(1, 0)  # frees the row: its columns are masked, its tokens gone
    assert batch.seq_tokens(1) == ()
    batch.seq_keep(2, 4)  # keep a prefix, drop the rest
    assert list(batch.seq_tokens(2)) == p[2][:4]
    l1, l2, l0 = batch.eval_batch([(1, p[3]), (2, p[1]), (0, [7])])
    for logits, expected in ((l1, p[3]), (l2, p[2][:4] + p[1]), (l0, p[0] + [7])):
        single.rewind(0)
        np.testing.assert_allclose(logits, single.eval(expected).copy(), atol=SAME_GRAPH[folder[0]], rtol=0)
    batch.seq_keep(3, 0)  # never used: nothing to free
    batch.reset_batch()
    assert [batch.seq_tokens(s) for s in range(4)] == [(), (), (), ()] and batch.cached_tokens == ()


def test_compaction_keeps_every_sequence_exact(folder, single, caplog):
    """n_ctx 40 per sequence: the shared columns pass it within a few steps and are compacted."""
    e = engine_for(folder[1], 3, n_ctx=40)
    try:
        prompts = [single.tokenize(t)[:n] for t, n in zip(TEXTS, (9, 2, 12), strict=False)]
        plan = {0: (0, prompts[0], 20), 1: (0, prompts[1], 30), 2: (6, prompts[2], 18)}
        with caplog.at_level(logging.DEBUG, logger="localllm.runtimes.onnx_batch"):
            got = drive(e.eval_batch, plan)
        assert "compacted the batch KV cache" in caplog.text
        for seq, (_, prompt, n) in plan.items():
            assert_close(got[seq], alone(single, prompt, n), SAME_GRAPH[folder[0]])
    finally:
        e.close()


def test_seq_copy_shares_a_prefix_without_recomputing_it(folder, single, batch):
    prefix, tail, other = (single.tokenize(t) for t in TEXTS[:3])
    batch.eval_batch([(0, prefix + tail)])
    batch.seq_copy(0, 2, len(prefix))
    assert list(batch.seq_tokens(2)) == prefix and list(batch.seq_tokens(0)) == prefix + tail
    l2, l0 = batch.eval_batch([(2, other), (0, [11])])
    single.rewind(0)
    np.testing.assert_allclose(l2, single.eval(prefix + other).copy(), atol=SAME_GRAPH[folder[0]], rtol=0)
    single.rewind(0)
    np.testing.assert_allclose(l0, single.eval(prefix + tail + [11]).copy(), atol=SAME_GRAPH[folder[0]], rtol=0)
    ref = reference_decoder(folder[1], seed=SEED)
    ref.forward_batch([(0, prefix + tail)])
    ref.seq_copy(0, 2, len(prefix))
    np.testing.assert_allclose(l2, ref.forward_batch([(2, other)])[0], atol=REFERENCE[folder[0]], rtol=0)


def test_sequence_zero_keeps_the_single_sequence_api(folder, single, batch):
    p = [single.tokenize(t) for t in TEXTS]
    batch.eval_batch([(1, p[1]), (3, p[3])])  # other rows busy while generate runs on sequence 0
    opts = SamplingOptions(max_tokens=8, temperature=0.0)
    single.rewind(0)
    expected = join(run(single, p[0], opts))
    got = join(run(batch, p[0], opts))
    assert got.token_ids == expected.token_ids and got.text == expected.text
    assert list(batch.cached_tokens) == list(batch.seq_tokens(0)) and batch.n_past == len(batch.seq_tokens(0))
    batch.rewind(3)
    assert list(batch.cached_tokens) == p[0][:3] and list(batch.seq_tokens(1)) == p[1]


def test_bad_calls_fail_cleanly(tiny_onnx):
    e = engine_for(tiny_onnx, 2, n_ctx=16)
    try:
        e.eval_batch([(0, [5, 6, 7])])
        with pytest.raises(ValueError, match="outside this engine's 2"):
            e.eval_batch([(2, [5])])
        with pytest.raises(ValueError, match="distinct"):
            e.eval_batch([(1, [5]), (1, [6])])
        with pytest.raises(ContextOverflowError, match="sequence 1: 0 cached \\+ 17 new") as info:
            e.eval_batch([(0, [5]), (1, [5] * 17)])
        assert info.value.n_ctx == 16
        assert list(e.seq_tokens(0)) == [5, 6, 7] and e.seq_tokens(1) == ()  # nothing evaluated
        with pytest.raises(ValueError, match="holds 3 positions, not 4"):
            e.seq_copy(0, 1, 4)
    finally:
        e.close()
    e.reset_batch()  # after close (a cancelled batch run's cleanup): nothing to do, no error
    e.seq_keep(1, 0)
    with pytest.raises(GenerationError, match="closed"):
        e.eval_batch([(1, [5])])
    one = engine_for(tiny_onnx, 1)
    try:  # a one-sequence engine takes eval_batch on sequence 0 (the scheduler runs items one by one)
        (logits,) = one.eval_batch([(0, [5, 6, 7])])
        assert one.n_seq_max == 1 and logits.shape == (one.n_vocab,) and list(one.seq_tokens(0)) == [5, 6, 7]
        one.seq_keep(0, 1)
        assert list(one.cached_tokens) == [5]
        with pytest.raises(ValueError, match="outside this engine's 1"):
            one.eval_batch([(1, [5])])
    finally:
        one.close()


def test_group_query_attention_export_loads_with_one_row(tmp_path, caplog):
    """onnxruntime-genai's GroupQueryAttention layout: no position_ids, and the op reads a row's valid
    keys as columns 0..seqlens_k, so a left-padded row is wrong: such exports refuse n_seq > 1."""
    folder = write_onnx_folder(tmp_path / "gqa", seed=SEED, attention="gqa")
    session = ort.InferenceSession(str(folder / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    past = {i.name: np.zeros((2, i.shape[1], 0, i.shape[3]), np.float32) for i in session.get_inputs()[2:]}
    a, b = [5, 9, 13, 20, 30], [7, 8, 40]
    ref = reference_decoder(folder, seed=SEED)
    want = ref.forward_batch([(0, a), (1, b)])

    def row1(ids, mask, col):
        feed = {"input_ids": np.array(ids, np.int64), "attention_mask": np.array(mask, np.int64), **past}
        return session.run(None, feed)[0][1, col]

    right = row1([a, b + [0, 0]], [[1] * 5, [1, 1, 1, 0, 0]], 2)
    left = row1([a, [0, 0] + b], [[1] * 5, [0, 0, 1, 1, 1]], -1)
    np.testing.assert_allclose(right, want[1], atol=1e-4, rtol=0)  # right padding: honoured
    assert np.abs(left - want[1]).max() > 0.1  # left padding (and columns before a late join): not

    with caplog.at_level(logging.WARNING, logger="localllm.runtimes.onnx"):
        e = engine_for(folder, 4)
    try:
        assert e.n_seq_max == 1 and "position_ids" in (e.batch_refusal or "")
        assert "one sequence at a time, not 4" in caplog.text
        with pytest.raises(ValueError, match="no position_ids input"):
            e.eval_batch([(0, a), (1, b)])
        np.testing.assert_allclose(e.eval_batch([(0, a)])[0], want[0], atol=1e-4, rtol=0)
    finally:
        e.close()


def test_run_batch_gives_each_item_what_run_gives_alone(folder, single):
    """Continuous batching over 3 rows for 6 items (joins mid-run, a shared prefix copied), greedy."""
    from localllm.batching import BatchItem, run_batch
    from localllm.runtimes.base import BatchEngine

    shared = single.tokenize(" ".join(TEXTS) * 3)[:70]  # more than a prompt chunk, so it is copied
    prompts = [single.tokenize(t) for t in TEXTS] + [shared + [5, 6], shared + [7]]
    items = [
        BatchItem(tuple(p), SamplingOptions(max_tokens=n, temperature=0.0))
        for p, n in zip(prompts, (9, 4, 12, 6, 5, 7), strict=True)
    ]
    e = engine_for(folder[1], 3)
    try:
        assert isinstance(e, BatchEngine)
        copies, copy = [], e.seq_copy
        e.seq_copy = lambda src, dst, n: (copies.append(n), copy(src, dst, n))[1]  # type: ignore[method-assign]
        got: dict[int, list] = {}
        for index, chunk in run_batch(e, items):
            got.setdefault(index, []).append(chunk)
        assert copies and min(copies) >= 64  # the shared prefix was copied, not evaluated again
        assert all(e.seq_tokens(s) == () for s in range(3))  # all freed at the end
    finally:
        e.close()
    for index, item in enumerate(items):
        single.rewind(0)
        expected = list(run(single, item.prompt_tokens, item.options))
        done, want = join(got[index]), join(expected)
        assert done.token_ids == want.token_ids and done.text == want.text
        assert done.finish_reason == want.finish_reason == "length"
        assert [c.text for c in got[index]] == [c.text for c in expected]
