"""The public Model API and load() on a real tiny GGUF, plus `localllm run`."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading

import pytest

import localllm
from localllm import Chunk, Completion, Model
from localllm.errors import ContextOverflowError, GenerationError, InvalidModelError

GREEDY = dict(temperature=0, max_tokens=24)
PROMPTS = [
    "hello world",
    "the cat",
    "one two three",
    "what is this",
    "moon and sun",
    "I am a model",
    "yes no ok",
    "four five six",
]


@pytest.fixture(scope="module")
def model(tiny_gguf, one_core):
    m = localllm.load(tiny_gguf, context=512, hardware=one_core)
    yield m
    m.close()


@pytest.fixture(scope="module")
def long_prompt(model):
    """A prompt whose greedy continuation runs at least 30 tokens (no early EOS)."""
    for p in PROMPTS:
        if model.generate(p, temperature=0, max_tokens=30).finish_reason == "length":
            return p
    pytest.fail("no prompt gives 30 greedy tokens on the tiny model")


def test_load_gives_a_model_with_info(model, tiny_gguf):
    assert isinstance(model, Model)
    info = model.info
    assert (info.name, info.path, info.runtime, info.n_ctx) == ("tiny", str(tiny_gguf), "llama.cpp", 512)
    assert info.template_source == "gguf" and info.placement.n_ctx == 512
    assert info.metadata["architecture"] == "llama"
    with pytest.raises(AttributeError):
        info.n_ctx = 1  # type: ignore[misc]


def test_generate_returns_completion_and_is_deterministic_when_greedy(model, tiny_gguf, one_core):
    a = model.generate("hello world", **GREEDY)
    b = model.generate("hello world", **GREEDY)
    assert isinstance(a, Completion) and a.text and str(a) == a.text
    assert (a.text, a.token_ids) == (b.text, b.token_ids)
    assert a.completion_tokens == len(a.token_ids) > 0 and a.prompt_tokens == model.count_tokens("hello world")
    assert b.timings.cached_tokens == a.prompt_tokens - 1  # the prompt was reused from the cache
    with localllm.load(tiny_gguf, context=256, hardware=one_core) as other:  # a fresh load: same tokens
        assert other.generate("hello world", **GREEDY).token_ids == a.token_ids


def test_stream_joins_to_generate(model):
    chunks = list(model.stream("the cat", **GREEDY))
    assert all(isinstance(c, Chunk) for c in chunks)
    assert [c.finish_reason for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].finish_reason in ("length", "eos") and chunks[-1].timings is not None
    full = model.generate("the cat", **GREEDY)
    assert "".join(c.text for c in chunks) == full.text
    assert tuple(t for c in chunks for t in c.token_ids) == full.token_ids


def test_seeded_sampling_is_reproducible(model):
    a = model.generate("the cat", temperature=1.0, seed=11, max_tokens=20)
    b = model.generate("the cat", temperature=1.0, seed=11, max_tokens=20)
    assert a.token_ids == b.token_ids


def test_stop_string_cuts_output_before_it(model, long_prompt):
    full = model.generate(long_prompt, temperature=0, max_tokens=30).text
    stop = full[len(full) // 2 : len(full) // 2 + 2]
    assert stop.strip(), "pick a stop string with visible text"
    cut = model.generate(long_prompt, temperature=0, max_tokens=30, stop=[stop])
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)] and stop not in cut.text


def test_a_stop_string_spanning_tokens_is_not_counted(model, long_prompt):
    full = list(model.stream(long_prompt, temperature=0, max_tokens=30))
    ids = [t for c in full for t in c.token_ids]
    text = "".join(c.text for c in full)
    # one token per chunk here: pick three in a row, at token k, to be the stop string
    pieces = [(c.text, c.token_ids[0]) for c in full if len(c.token_ids) == 1]
    for k in range(3, len(pieces) - 3):
        stop = "".join(p for p, _ in pieces[k : k + 3])
        visible = "".join(p for p, _ in pieces[:k])
        if len(stop) >= 3 and text.find(stop) == len(visible) and [t for _, t in pieces[:k]] == ids[:k]:
            break
    else:
        pytest.fail("no run of three one-token chunks to use as a stop string")
    cut = model.generate(long_prompt, temperature=0, max_tokens=30, stop=[stop])
    assert (cut.text, cut.finish_reason) == (visible, "stop")
    # the count is the tokens of the visible text, not of the stop string too
    assert cut.token_ids == tuple(ids[:k]) and cut.completion_tokens == k
    assert cut.timings.decode_tokens == k + 3


def test_chat_applies_the_models_template(model):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    rendered = model.render_chat(msgs)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"
    )
    # special tokens are parsed as single control tokens, not spelled out
    assert model.tokenize("<|im_start|>") == [3]
    chat = model.chat(msgs, **GREEDY)
    assert chat.token_ids == model.generate(rendered, **GREEDY).token_ids
    assert chat.prompt_tokens == model.count_tokens(msgs) == model.count_tokens(rendered)
    assert "".join(c.text for c in model.chat_stream(msgs, **GREEDY)) == chat.text


def test_stop_event_cancels_mid_stream(model, long_prompt):
    stop = threading.Event()
    got = []
    for chunk in model.stream(long_prompt, temperature=0, max_tokens=30, stop_event=stop):
        got.append(chunk)
        if len(got) == 3:
            stop.set()
    assert got[-1].finish_reason == "cancelled"
    assert sum(len(c.token_ids) for c in got) < 30


def test_cancel_from_another_thread(model, long_prompt):
    chunks = model.stream(long_prompt, temperature=0, max_tokens=None)
    first = next(chunks)
    threading.Thread(target=model.cancel).start()
    rest = list(chunks)
    assert (rest or [first])[-1].finish_reason == "cancelled"
    # the next request is not cancelled by the earlier cancel()
    assert model.generate(long_prompt, temperature=0, max_tokens=5).finish_reason == "length"


def test_eight_threads_share_one_model(model):
    expected = {p: model.generate(p, **GREEDY) for p in PROMPTS}
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def worker(p: str, streaming: bool) -> None:
        try:
            if streaming:
                results[p] = ["".join(c.text for c in model.stream(p, **GREEDY))]
            else:
                c = model.generate(p, **GREEDY)
                results[p] = [c.text, c.token_ids]
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(p, i % 2 == 0)) for i, p in enumerate(PROMPTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    for i, p in enumerate(PROMPTS):
        assert results[p][0] == expected[p].text
        if i % 2:
            assert results[p][1] == expected[p].token_ids


def test_abandoned_stream_releases_the_model(model):
    gen = model.stream("hello world", **GREEDY)
    next(gen)  # holds the lock now
    del gen
    gc.collect()
    done = []
    t = threading.Thread(target=lambda: done.append(model.generate("the cat", **GREEDY)))
    t.start()
    t.join(timeout=60)
    assert done, "a dropped stream kept the model locked"


def test_context_overflow_names_the_numbers(tiny_gguf, one_core):
    with localllm.load(tiny_gguf, context=256, hardware=one_core) as small:
        n_ctx = small.info.n_ctx
        assert n_ctx == 256
        prompt = "hello world " * 40
        n = small.count_tokens(prompt)
        assert n > n_ctx
        with pytest.raises(ContextOverflowError) as err:
            small.generate(prompt, max_tokens=10)
        e = err.value
        assert (e.n_prompt, e.n_ctx, e.max_tokens) == (n, n_ctx, 10)
        assert str(n) in str(e) and str(n_ctx) in str(e)
        # a prompt that fits but a long request ends at the window, not with a crash
        c = small.generate("hello", temperature=1.0, seed=1, top_k=0, top_p=1.0, min_p=0.0, max_tokens=None)
        assert c.finish_reason in ("length", "eos") and c.prompt_tokens + c.completion_tokens <= n_ctx


def test_bad_options_raise_at_call_time(model):
    with pytest.raises(TypeError, match="unknown sampling option"):
        model.stream("hi", temprature=0)
    with pytest.raises(ValueError):
        model.generate("hi", top_p=2)
    with pytest.raises(TypeError):
        model.generate(["not", "a", "string"])


def test_closed_model_refuses_and_context_manager_closes(tiny_gguf, one_core):
    with localllm.load(tiny_gguf, context=128, hardware=one_core) as m:
        assert m.generate("hi", max_tokens=2, temperature=0).completion_tokens >= 1  # greedy: sampling may pick EOS
    assert m.closed
    with pytest.raises(GenerationError, match="closed"):
        m.generate("hi")
    m.close()  # idempotent


def test_load_refuses_bad_files(tmp_path, tiny_gguf):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:3000])
    with pytest.raises(InvalidModelError):
        localllm.load(cut)
    pickle = tmp_path / "model.bin"
    pickle.write_bytes(b"\x80\x04junk")
    with pytest.raises(InvalidModelError):
        localllm.load(pickle)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localllm", "run", *args], capture_output=True, text=True, timeout=120)


def test_cli_run_streams_text_and_json(model, tiny_gguf):
    expected = model.generate("hello world", temperature=0, max_tokens=12).text
    out = _cli(str(tiny_gguf), "hello world", "--raw", "--max-tokens", "12", "--temperature", "0", "--ctx", "256")
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected + "\n"
    assert "tok/s" in out.stderr and "llama_" not in out.stderr  # status only, no native chatter
    js = _cli(
        str(tiny_gguf), "hello world", "--raw", "--max-tokens", "12", "--temperature", "0", "--ctx", "256", "--json"
    )
    result = json.loads(js.stdout)
    assert result["text"] == expected and result["completion_tokens"] <= 12
    assert result["timings"]["prompt_tokens"] == result["prompt_tokens"] > 0
    bad = _cli(str(tiny_gguf) + ".missing.gguf", "hi")
    assert bad.returncode == 1 and bad.stderr.strip().splitlines()[-1].startswith("error:")


def test_a_plan_that_does_not_fit_is_refused_unless_forced():
    from localllm import InsufficientMemoryError, ModelUnavailableError, load_profile

    small = load_profile("container-4gib")
    with pytest.raises(InsufficientMemoryError) as err:
        localllm.load("llama-3.1-8b-instruct:q4_k_m", hardware=small, offline=True)
    e = err.value
    assert e.needed and e.available and e.needed > e.available and e.plan is not None
    assert "force=True" in str(e) and "GiB" in str(e)
    # forced: the plan is accepted and the store is asked; offline with nothing cached it says so
    with pytest.raises(ModelUnavailableError):
        localllm.load("llama-3.1-8b-instruct:q4_k_m", hardware=small, offline=True, force=True)


def test_local_file_is_planned_for_the_given_hardware(tiny_gguf):
    from localllm import load_profile

    with localllm.load(tiny_gguf, hardware=load_profile("raspberry-pi-5-8gb")) as m:
        assert m.plan is not None and m.plan.fits
        assert m.info.placement == m.plan.placement
        assert m.info.placement.n_threads == 4  # the Pi's cores, not this machine's


def test_model_without_template_uses_a_fallback_that_ends_turns(tmp_path, one_core):
    from localllm.testing import write_llama_gguf

    path = write_llama_gguf(tmp_path / "notemplate.gguf", seed=1, chat_template=None)
    with localllm.load(path, context=256, hardware=one_core) as m:
        assert m.info.template_source == "fallback-chatml" and "no chat template" in m.info.template_note
        assert m.render_chat([{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")
        assert m._turn_end_tokens == frozenset({4})  # <|im_end|> ends the reply though not marked EOG
        reply = m.chat(
            [{"role": "user", "content": "hi"}], temperature=1.0, seed=2, top_k=0, top_p=1.0, min_p=0.0, max_tokens=200
        )
        assert 4 not in reply.token_ids and reply.finish_reason in ("eos", "length", "stop")


# --- close() wins over running and waiting generations ---------------------------------
ENDLESS_CANDIDATES = ("hello world", "the cat", "one two three", "what is this", "yes no ok", "a b c")


def test_close_wins_over_the_running_and_waiting_generations(tiny_gguf, one_core):
    import time

    m = localllm.load(tiny_gguf, context=2048, hardware=one_core)
    # a prompt whose greedy continuation does not end by itself
    endless = next(
        p for p in ENDLESS_CANDIDATES if m.generate(p, temperature=0, max_tokens=300).finish_reason == "length"
    )
    running_chunks: list[tuple[float, Chunk]] = []
    results: dict[str, object] = {}
    started = threading.Event()

    def running() -> None:
        try:
            for chunk in m.stream(endless, temperature=0, max_tokens=2000):
                running_chunks.append((time.monotonic(), chunk))
                started.set()
                time.sleep(0.002)  # a consumer that reads slowly: 2000 tokens take seconds
        except BaseException as exc:  # noqa: BLE001
            results["running"] = exc

    def waiting(name: str) -> None:
        try:
            results[name] = list(m.stream(endless, temperature=0, max_tokens=40))
        except BaseException as exc:  # noqa: BLE001
            results[name] = exc

    threads = [threading.Thread(target=running)]
    threads[0].start()
    assert started.wait(30)
    threads += [threading.Thread(target=waiting, args=(n,)) for n in ("w1", "w2")]
    for t in threads[1:]:
        t.start()
    time.sleep(0.3)  # the waiters are now blocked on the model's lock
    assert m._lock.locked() and all(t.is_alive() for t in threads) and not results
    t0 = time.monotonic()
    m.close()
    closed_at = time.monotonic()
    assert closed_at - t0 < 1.0, f"close() took {closed_at - t0:.2f} s"
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert m.closed and "running" not in results
    # the running one ended "cancelled", long before its 2000 tokens, and nothing came after close()
    last = running_chunks[-1][1]
    assert last.finish_reason == "cancelled"
    assert sum(len(c.token_ids) for _, c in running_chunks) < 2000
    assert all(at <= closed_at for at, _ in running_chunks)
    # the waiters never generated: each raised at its first next()
    for name in ("w1", "w2"):
        assert isinstance(results[name], GenerationError) and "closed" in str(results[name])
    with pytest.raises(GenerationError, match="closed"):
        m.generate(endless, max_tokens=2)
    m.close()  # idempotent


def test_cancel_stops_only_the_running_generation(model, long_prompt):
    model.cancel()  # nothing runs: nothing to cancel, and nothing left set for the next one
    assert model.generate(long_prompt, temperature=0, max_tokens=5).finish_reason == "length"
    # a generation waiting while another is cancelled runs normally
    results = []
    first = model.stream(long_prompt, temperature=0, max_tokens=None)
    next(first)
    waiter = threading.Thread(target=lambda: results.append(model.generate(long_prompt, temperature=0, max_tokens=5)))
    waiter.start()
    model.cancel()
    assert list(first)[-1].finish_reason == "cancelled"
    waiter.join(timeout=60)
    assert results and results[0].finish_reason == "length" and results[0].completion_tokens == 5
