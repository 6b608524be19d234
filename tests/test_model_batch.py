"""Model.generate_batch / chat_batch / stream_batch on real llama.cpp: the tiny models, and the
real SmolLM2 where the outputs matter. Batch items must be exactly what generate/chat give alone."""

from __future__ import annotations

import threading

import pytest

import localllm
from localllm import Completion
from localllm.errors import (
    ChatTemplateError,
    ContextOverflowError,
    GenerationError,
    InvalidOptionError,
    InvalidOptionTypeError,
)

GREEDY = dict(temperature=0, max_tokens=16)
PROMPTS = ["hello world", "the cat", "one two three", "what is this", "moon and sun", "I am a model"]


@pytest.fixture(scope="module")
def batch_model(tiny_gguf, one_core):
    m = localllm.load(tiny_gguf, context=128, hardware=one_core, parallel=4)
    yield m
    m.close()


@pytest.fixture(scope="module")
def plain_model(tiny_gguf, one_core):
    m = localllm.load(tiny_gguf, context=128, hardware=one_core)
    yield m
    m.close()


def same(a: Completion, b: Completion) -> bool:
    return (a.text, a.token_ids, a.finish_reason, a.prompt_tokens) == (
        b.text,
        b.token_ids,
        b.finish_reason,
        b.prompt_tokens,
    )


def test_load_parallel_sets_the_sequences(batch_model, plain_model):
    assert batch_model.info.placement.n_seq == 4 and batch_model._engine.n_seq_max == 4
    assert plain_model.info.placement.n_seq == 1


def test_generate_batch_equals_generate_per_item(batch_model, plain_model):
    # 6 prompts on 4 sequences: two wait and join as the first finish (continuous batching)
    out = batch_model.generate_batch(PROMPTS, **GREEDY)
    assert len(out) == len(PROMPTS) and all(c.error is None for c in out)
    for prompt, got in zip(PROMPTS, out, strict=True):
        alone = plain_model.generate(prompt, **GREEDY)
        assert same(got, alone), prompt
        assert got.completion_tokens == len(got.token_ids) > 0


def test_generate_on_the_batch_model_is_consistent_after_a_batch(batch_model, plain_model):
    before = batch_model.generate("the cat", **GREEDY)
    batch_model.generate_batch(PROMPTS[:3], **GREEDY)
    after = batch_model.generate("the cat", **GREEDY)
    assert same(before, after) and same(after, plain_model.generate("the cat", **GREEDY))


def test_an_interactive_model_runs_a_batch_one_after_another(plain_model):
    out = plain_model.generate_batch(PROMPTS[:3], **GREEDY)
    assert [c.token_ids for c in out] == [plain_model.generate(p, **GREEDY).token_ids for p in PROMPTS[:3]]


def test_per_item_options(batch_model, plain_model):
    prompts = PROMPTS[:3]
    out = batch_model.generate_batch(prompts, temperature=[0, 1.0, 1.0], seed=[None, 7, 8], max_tokens=[3, 5, 7])
    assert [c.completion_tokens for c in out] == [3, 5, 7]
    assert [c.finish_reason for c in out] == ["length"] * 3
    assert out[0].token_ids == plain_model.generate(prompts[0], temperature=0, max_tokens=3).token_ids
    assert out[1].token_ids == plain_model.generate(prompts[1], temperature=1.0, seed=7, max_tokens=5).token_ids
    assert out[2].token_ids == plain_model.generate(prompts[2], temperature=1.0, seed=8, max_tokens=7).token_ids


def test_per_item_stop_lists_and_one_stop_list_for_all(batch_model, plain_model):
    full = plain_model.generate("hello world", **GREEDY).text
    stop = full[len(full) // 2 :][:2]  # a piece of the greedy text: that item stops there
    assert stop
    per_item = batch_model.generate_batch(["hello world", "hello world"], stop=[[stop], None], **GREEDY)
    assert per_item[0].finish_reason == "stop" and per_item[0].text == full[: full.index(stop)]
    assert per_item[1].text == full
    for_all = batch_model.generate_batch(["hello world", "hello world"], stop=[stop], **GREEDY)
    assert [c.text for c in for_all] == [per_item[0].text] * 2


def test_a_per_item_list_of_the_wrong_length_is_refused(batch_model):
    with pytest.raises(InvalidOptionError, match="max_tokens has 2 values for 3 items") as info:
        batch_model.generate_batch(PROMPTS[:3], max_tokens=[1, 2])
    assert info.value.option == "max_tokens"


def test_a_bad_option_for_all_is_raised_before_anything_runs(batch_model):
    with pytest.raises(InvalidOptionError, match="temperature"):
        batch_model.generate_batch(PROMPTS[:2], temperature=-1)
    with pytest.raises(InvalidOptionError, match="item 1: .*temperature"):
        batch_model.generate_batch(PROMPTS[:2], temperature=[0, -1])
    with pytest.raises(InvalidOptionTypeError, match="unknown sampling option"):
        batch_model.generate_batch(PROMPTS[:2], temprature=0)
    with pytest.raises(InvalidOptionTypeError, match="on_prompt_progress"):
        batch_model.generate_batch(PROMPTS[:2], on_prompt_progress=lambda d, t: None)
    with pytest.raises(InvalidOptionTypeError, match="wrap a single one in a list"):
        batch_model.generate_batch("hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionTypeError, match="must be a list"):
        batch_model.chat_batch(iter([[{"role": "user", "content": "hi"}]]))  # type: ignore[arg-type]


def test_empty_input_gives_an_empty_list(batch_model):
    assert batch_model.generate_batch([]) == [] and batch_model.chat_batch([]) == []


def test_a_bad_item_fails_alone(batch_model, plain_model):
    too_long = " ".join(["word"] * 200)  # more than the tokens each sequence has
    prompts = ["hello world", "", too_long, 42, "the cat"]
    out = batch_model.generate_batch(prompts, **GREEDY)  # type: ignore[arg-type]
    assert [c.finish_reason for c in out][1:4] == ["error"] * 3
    assert isinstance(out[1].error, InvalidOptionError) and "prompt 1 is empty" in str(out[1].error)
    n_ctx = batch_model.info.n_ctx  # each sequence's context (llama.cpp rounds 128 up)
    assert isinstance(out[2].error, ContextOverflowError) and out[2].error.n_ctx == n_ctx
    assert isinstance(out[3].error, InvalidOptionTypeError)
    assert out[2].prompt_tokens > n_ctx and out[1].text == out[2].text == ""
    assert same(out[0], plain_model.generate("hello world", **GREEDY))
    assert same(out[4], plain_model.generate("the cat", **GREEDY))


def test_chat_batch_equals_chat_and_a_bad_conversation_fails_alone(batch_model, plain_model):
    convs = [
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the moon"}],
        [{"role": "user"}],  # no content: the template refuses it
        [{"role": "user", "content": "yes"}],
    ]
    out = batch_model.chat_batch(convs, **GREEDY)
    assert out[2].finish_reason == "error" and isinstance(out[2].error, ChatTemplateError)
    for i in (0, 1, 3):
        assert same(out[i], plain_model.chat(convs[i], **GREEDY)), i


def test_stream_batch_interleaves_and_joins_to_the_completions(batch_model):
    pairs = list(batch_model.stream_batch(PROMPTS[:4], **GREEDY))
    order = [i for i, _ in pairs]
    # interleaved: another item's chunk comes between the first chunk of item 0 and its last
    first0, last0 = order.index(0), len(order) - 1 - order[::-1].index(0)
    assert any(i != 0 for i in order[first0:last0])
    finishes = [i for i, c in pairs if c.finish_reason is not None]
    assert sorted(finishes) == [0, 1, 2, 3]  # exactly one finishing chunk each
    done = batch_model.generate_batch(PROMPTS[:4], **GREEDY)
    for i in range(4):
        chunks = [c for j, c in pairs if j == i]
        assert "".join(c.text for c in chunks) == done[i].text
        assert tuple(t for c in chunks for t in c.token_ids) == done[i].token_ids


@pytest.fixture(scope="module")
def long_prompts(plain_model):
    """Prompts whose greedy continuation runs 40 tokens or more (no early EOS): a cancel lands mid-run."""
    found = [p for p in PROMPTS if plain_model.generate(p, temperature=0, max_tokens=40).finish_reason == "length"]
    assert len(found) >= 3, "too few prompts give 40 greedy tokens on the tiny model"
    return found


def test_stop_event_ends_every_item(batch_model, long_prompts):
    prompts = (long_prompts * 2)[:6]  # more items than sequences: some are still waiting
    stop = threading.Event()
    pairs = []
    for i, chunk in batch_model.stream_batch(prompts, temperature=0, max_tokens=40, stop_event=stop):
        pairs.append((i, chunk))
        if len(pairs) == 3:
            stop.set()  # from the consumer: the scheduler sees it before its next step
    finishes = {i: c.finish_reason for i, c in pairs if c.finish_reason}
    assert sorted(finishes) == list(range(6)) and set(finishes.values()) == {"cancelled"}
    assert sum(len(c.token_ids) for _, c in pairs) < 6 * 40
    assert batch_model.generate("the cat", **GREEDY).finish_reason in ("length", "eos")  # usable after


def test_cancel_ends_the_batch(batch_model, long_prompts):
    stream = batch_model.stream_batch(long_prompts, temperature=0, max_tokens=40)
    pairs = [next(stream)]  # running: the model's lock is held, the batch is mid-way
    batch_model.cancel()  # what another thread would call; the scheduler sees it at its next step
    pairs += list(stream)
    finishes = {i: c.finish_reason for i, c in pairs if c.finish_reason}
    assert sorted(finishes) == list(range(len(long_prompts))) and set(finishes.values()) == {"cancelled"}
    assert batch_model.generate_batch(long_prompts[:1], temperature=0, max_tokens=3)[0].finish_reason == "length"


def test_close_ends_a_running_batch(tiny_gguf, one_core, long_prompts):
    import time

    m = localllm.load(tiny_gguf, context=128, hardware=one_core, parallel=2)
    started, proceed = threading.Event(), threading.Event()
    pairs: list = []

    def work():
        for pair in m.stream_batch(long_prompts[:3], temperature=0, max_tokens=40):
            pairs.append(pair)
            started.set()
            proceed.wait(60)  # hold the batch mid-way until close() has begun

    worker = threading.Thread(target=work)
    worker.start()
    assert started.wait(60)
    closer = threading.Thread(target=m.close)
    closer.start()
    deadline = time.monotonic() + 30
    while not m._closing and time.monotonic() < deadline:  # close() marks the model first, then waits
        closer.join(0.001)
    proceed.set()
    worker.join(60)
    closer.join(60)
    assert m.closed and not worker.is_alive() and not closer.is_alive()
    finishes = {i: c.finish_reason for i, c in pairs if c.finish_reason}
    assert sorted(finishes) == [0, 1, 2] and set(finishes.values()) == {"cancelled"}
    with pytest.raises(GenerationError, match="closed"):
        m.generate_batch(long_prompts[:1])


def test_load_refuses_a_bad_parallel(tiny_gguf, one_core):
    with pytest.raises(InvalidOptionError, match="parallel"):
        localllm.load(tiny_gguf, context=128, hardware=one_core, parallel=0)
    with pytest.raises(InvalidOptionTypeError, match="parallel"):
        localllm.load(tiny_gguf, context=128, hardware=one_core, parallel="4")  # type: ignore[arg-type]


# --- the real model: outputs that mean something ---------------------------------------
@pytest.fixture(scope="module")
def smollm2_batch(smollm2_gguf, one_core):
    m = localllm.load(smollm2_gguf, context=256, hardware=one_core, parallel=4)
    yield m
    m.close()


def test_real_model_chat_batch_equals_chat(smollm2_batch, smollm2_gguf, one_core):
    questions = ["What is 2+2?", "Name a colour.", "What is the capital of France?", "Say hello.", "Count to 3."]
    convs = [[{"role": "user", "content": q}] for q in questions]
    out = smollm2_batch.chat_batch(convs, temperature=0, max_tokens=24)
    assert all(c.text and c.error is None for c in out) and len({c.text for c in out}) == len(out)
    with localllm.load(smollm2_gguf, context=256, hardware=one_core) as alone:
        for conv, got in zip(convs, out, strict=True):
            assert same(got, alone.chat(conv, temperature=0, max_tokens=24)), conv
