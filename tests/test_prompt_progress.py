"""The prompt is read in chunks: progress after each, a stop seen between two, the cache exact after.

On real files: the tiny GGUF (llama.cpp), the tiny ONNX folder (ONNX Runtime) and the real
SmolLM2-135M, whose prompts are slow enough here for a stop set from another thread to land
while the prompt is still being read.
"""

from __future__ import annotations

import threading

import pytest

import localllm
from localllm.runtimes.base import PROMPT_CHUNK

GREEDY = {"temperature": 0, "max_tokens": 12}


@pytest.fixture(scope="module", params=["llama.cpp", "onnxruntime"])
def tiny(request, tiny_gguf, tiny_onnx, one_core):
    """A tiny model of each runtime, its context wide enough for a prompt of several chunks."""
    if request.param == "llama.cpp":
        model = localllm.load(tiny_gguf, context=1024, hardware=one_core)
    else:
        model = localllm.load(tiny_onnx, context=1024, hardware=one_core)
    assert model.info.runtime == request.param
    with model:
        yield model


def long_prompt(model: localllm.Model, n_tokens: int) -> str:
    """Text of at least n_tokens tokens, short of n_tokens + 20."""
    words = []
    while model.count_tokens(" ".join(words)) < n_tokens:
        words += ["hello", "world", "the", "of", "and"] * 4
    return " ".join(words)


class Recorder:
    """An on_prompt_progress that keeps every call, and may act at a given call."""

    def __init__(self, act=None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.act = act

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))
        if self.act is not None:
            self.act(done, total)


def test_progress_is_monotonic_chunked_and_ends_at_total(tiny):
    prompt = long_prompt(tiny, 5 * PROMPT_CHUNK)
    total = tiny.count_tokens(prompt)
    rec = Recorder()
    c = tiny.generate(prompt, on_prompt_progress=rec, **GREEDY)
    assert c.finish_reason in ("length", "eos") and c.prompt_tokens == total
    dones = [d for d, _ in rec.calls]
    assert {t for _, t in rec.calls} == {total}
    assert dones[0] == c.timings.cached_tokens == 0  # a fresh cache: nothing reused
    assert dones[-1] == total and dones == sorted(dones) and len(set(dones)) == len(dones)
    steps = [b - a for a, b in zip(dones, dones[1:], strict=False)]
    # read in chunks, each reported; the last takes a tail of up to half a chunk (chunk_end)
    assert len(steps) >= 4 and max(steps[:-1]) == PROMPT_CHUNK and steps[-1] <= PROMPT_CHUNK + PROMPT_CHUNK // 2
    # the same prompt again: the first call says what the cache gave, the last is still total
    again = Recorder()
    tiny.generate(prompt, on_prompt_progress=again, **GREEDY)
    assert again.calls[0] == (total - 1, total) and again.calls[-1] == (total, total)


def test_a_stop_set_by_the_callback_after_the_first_chunk_ends_the_stream_at_once(tiny):
    prompt = long_prompt(tiny, 4 * PROMPT_CHUNK)
    total = tiny.count_tokens(prompt)
    tiny.generate("the", max_tokens=1)  # a cache that shares nothing with the prompt but BOS
    stop = threading.Event()
    rec = Recorder(lambda done, _: stop.set() if done >= PROMPT_CHUNK else None)
    chunks = list(tiny.stream(prompt, stop_event=stop, on_prompt_progress=rec, **GREEDY))
    (last,) = chunks  # no text, no decoding: one finishing chunk
    assert (last.text, last.token_ids, last.finish_reason) == ("", (), "cancelled")
    t = last.timings
    assert t is not None and t.decode_tokens == 0
    assert t.prompt_tokens == PROMPT_CHUNK < total  # one chunk read: the first ends at a chunk edge
    assert rec.calls[-1] == (PROMPT_CHUNK, total)
    # the next prompt sharing the prefix reuses exactly what was read, and reads the rest
    longer = prompt + " world and the end"
    rec2 = Recorder()
    c = tiny.generate(longer, on_prompt_progress=rec2, **GREEDY)
    assert rec2.calls[0] == (PROMPT_CHUNK, tiny.count_tokens(longer)) and c.timings.cached_tokens == PROMPT_CHUNK
    assert c.finish_reason in ("length", "eos")


def test_cancel_from_the_callback_stops_the_prompt_too(tiny):
    prompt = long_prompt(tiny, 3 * PROMPT_CHUNK)
    tiny.generate("and", max_tokens=1)
    rec = Recorder(lambda done, _: tiny.cancel() if done >= PROMPT_CHUNK else None)
    c = tiny.generate(prompt, on_prompt_progress=rec, **GREEDY)
    assert (c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) == ("", "cancelled", PROMPT_CHUNK, 0)


def test_a_callback_that_raises_ends_the_generation_with_a_clear_error(tiny):
    prompt = long_prompt(tiny, 3 * PROMPT_CHUNK)

    def broken(done: int, total: int) -> None:
        if done >= PROMPT_CHUNK:
            raise ZeroDivisionError("oops")

    with pytest.raises(localllm.GenerationError, match=r"on_prompt_progress raised ZeroDivisionError: oops") as err:
        tiny.generate(prompt, on_prompt_progress=broken, **GREEDY)
    assert isinstance(err.value.__cause__, ZeroDivisionError)
    # the model goes on, from what was really read
    rec = Recorder()
    assert tiny.generate(prompt, on_prompt_progress=rec, **GREEDY).finish_reason in ("length", "eos")
    assert rec.calls[0][0] == PROMPT_CHUNK


def test_the_callback_is_no_sampling_option_and_unknown_options_still_raise(tiny):
    calls = []
    c = tiny.chat(
        [{"role": "user", "content": "hello world"}], on_prompt_progress=lambda d, t: calls.append((d, t)), **GREEDY
    )
    assert calls and calls[-1] == (c.prompt_tokens, c.prompt_tokens)
    with pytest.raises(localllm.InvalidOptionTypeError, match="unknown sampling option"):
        tiny.generate("hello", on_prompt_progres=print)  # a typo is an unknown option, as before
    with pytest.raises(localllm.InvalidOptionTypeError):
        localllm.SamplingOptions.from_kwargs(on_prompt_progress=print)


def test_the_reply_after_a_cancelled_prompt_is_a_fresh_models(tiny, tiny_gguf, tiny_onnx, one_core):
    prompt = long_prompt(tiny, 3 * PROMPT_CHUNK + 10)
    stop = threading.Event()
    rec = Recorder(lambda done, _: stop.set() if done >= 2 * PROMPT_CHUNK else None)
    cut = tiny.generate(prompt, stop_event=stop, on_prompt_progress=rec, **GREEDY)
    assert cut.finish_reason == "cancelled" and cut.prompt_tokens == 2 * PROMPT_CHUNK
    after = tiny.generate(prompt, **GREEDY)
    path = tiny_gguf if tiny.info.runtime == "llama.cpp" else tiny_onnx
    with localllm.load(path, context=1024, hardware=one_core) as fresh:
        expected = fresh.generate(prompt, **GREEDY)
    assert after.timings.cached_tokens == 2 * PROMPT_CHUNK
    assert after.token_ids == expected.token_ids and after.text == expected.text


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf, one_core):
    with localllm.load(smollm2_gguf, context=2048, hardware=one_core) as model:
        yield model


def test_real_model_chat_after_a_stopped_prompt_matches_a_fresh_load(smollm2, smollm2_gguf, one_core):
    """The real template and tokenizer: a stopped chat prompt, then the same chat, answers as a fresh model."""
    messages = [{"role": "user", "content": long_prompt(smollm2, 3 * PROMPT_CHUNK) + "\nWhat is 2 + 2?"}]
    stop = threading.Event()
    rec = Recorder(lambda done, _: stop.set() if done >= PROMPT_CHUNK else None)
    cut = smollm2.chat(messages, stop_event=stop, on_prompt_progress=rec, **GREEDY)
    assert (cut.text, cut.finish_reason, cut.prompt_tokens) == ("", "cancelled", PROMPT_CHUNK)
    after = smollm2.chat(messages, **GREEDY)
    with localllm.load(smollm2_gguf, context=2048, hardware=one_core) as fresh:
        expected = fresh.chat(messages, **GREEDY)
    assert after.text and after.token_ids == expected.token_ids


def test_a_stop_event_from_another_thread_is_seen_within_a_chunk(smollm2):
    """A long real prompt (about 1,500 tokens: seconds here); the stop comes from another thread
    once the first chunk is read, and at most the chunk being read then is finished."""
    prompt = long_prompt(smollm2, 1500)
    total = smollm2.count_tokens(prompt)
    stop, first_chunk = threading.Event(), threading.Event()
    rec = Recorder(lambda done, _: first_chunk.set() if done >= PROMPT_CHUNK else None)
    seen_at_stop: list[int] = []

    def stopper() -> None:
        assert first_chunk.wait(60)
        stop.set()
        seen_at_stop.append(rec.calls[-1][0])  # the last progress reported once the stop was set

    helper = threading.Thread(target=stopper)
    helper.start()
    c = smollm2.generate(prompt, stop_event=stop, on_prompt_progress=rec, **GREEDY)
    helper.join(10)
    (at_stop,) = seen_at_stop
    assert c.finish_reason == "cancelled" and c.completion_tokens == 0
    # at most the chunk in flight when it was set (the last may be 1.5 chunks: chunk_end)
    assert c.prompt_tokens <= at_stop + PROMPT_CHUNK + PROMPT_CHUNK // 2
    assert c.prompt_tokens < total
    assert rec.calls[-1][0] == c.prompt_tokens
