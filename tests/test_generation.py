"""The shared token loop's pure parts: options, sampler, stop strings, UTF-8, templates, run()."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from localllm.chat_template import CHATML_FALLBACK, PLAIN_FALLBACK, chat_formatter
from localllm.errors import ChatTemplateError, ContextOverflowError, InvalidOptionError, InvalidOptionTypeError
from localllm.generation import (
    Chunk,
    Completion,
    Sampler,
    SamplingOptions,
    StopMatcher,
    Timings,
    Utf8Decoder,
    join,
    run,
)

# --- options -------------------------------------------------------------------------


def test_options_defaults_follow_llama_cpp():
    o = SamplingOptions()
    assert (o.temperature, o.top_k, o.top_p, o.min_p, o.repeat_penalty, o.repeat_last_n) == (
        0.8,
        40,
        0.95,
        0.05,
        1.0,
        64,
    )


def test_unknown_option_raises_with_valid_names():
    with pytest.raises(
        InvalidOptionTypeError, match="temprature.*valid options are: choices, grammar, json_schema, max_tokens"
    ) as err:
        SamplingOptions.from_kwargs(temprature=0.5)
    assert isinstance(err.value, TypeError)


@pytest.mark.parametrize(
    "bad",
    [
        dict(temperature=-1),
        dict(top_p=0),
        dict(top_p=1.5),
        dict(min_p=1),
        dict(top_k=-1),
        dict(max_tokens=0),
        dict(repeat_penalty=0),
        dict(stop=("",)),
        dict(seed=-1),
    ],
)
def test_bad_option_values_raise(bad):
    ((name, value),) = bad.items()
    with pytest.raises(ValueError, match=f"invalid sampling option: {name} must be .*, got") as err:
        SamplingOptions(**bad)
    assert isinstance(err.value, InvalidOptionError) and err.value.option == name and err.value.value == value


@pytest.mark.parametrize(
    "bad", [dict(temperature="0.5"), dict(top_k=2.0), dict(max_tokens="4"), dict(seed="x"), dict(stop=3)]
)
def test_bad_option_types_raise_the_type_error_twin(bad):
    ((name, value),) = bad.items()
    with pytest.raises(TypeError, match=f"invalid sampling option: {name} must be") as err:
        SamplingOptions(**bad)
    assert isinstance(err.value, InvalidOptionTypeError) and err.value.option == name


def test_single_stop_string_is_not_split_into_characters():
    assert SamplingOptions(stop="END").stop == ("END",)
    assert SamplingOptions(stop=["a", "b"]).stop == ("a", "b")


# --- sampler -------------------------------------------------------------------------


def test_greedy_is_argmax():
    logits = np.array([0.1, 3.0, 2.9, -1.0], dtype=np.float32)
    assert Sampler(SamplingOptions(temperature=0), 4).sample(logits) == 1


def test_sampler_is_reproducible_with_seed_and_varies_without():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(1000).astype(np.float32)
    opts = SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    a = [Sampler(opts, 1000).sample(logits) for _ in range(3)]
    s = Sampler(opts, 1000)
    seq1 = [s.sample(logits) for _ in range(50)]
    s2 = Sampler(opts, 1000)
    seq2 = [s2.sample(logits) for _ in range(50)]
    assert a[0] == a[1] == a[2] and seq1 == seq2
    assert len(set(seq1)) > 10  # a flat-ish distribution really is sampled


def test_top_k_limits_candidates():
    logits = np.arange(100, dtype=np.float32) / 10  # best tokens are 99, 98, 97
    s = Sampler(SamplingOptions(temperature=5.0, top_k=3, top_p=1.0, min_p=0.0, seed=1), 100)
    picks = {s.sample(logits) for _ in range(300)}
    assert picks == {97, 98, 99}


def test_top_p_keeps_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.2 (temperature 1): top_p 0.7 keeps the first two
    logits = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float64)).astype(np.float32)
    s = Sampler(SamplingOptions(temperature=1.0, top_k=0, top_p=0.7, min_p=0.0, seed=3), 3)
    picks = [s.sample(logits) for _ in range(400)]
    assert set(picks) == {0, 1}
    assert 0.5 < picks.count(0) / len(picks) < 0.75  # renormalised 5/8


def test_min_p_drops_unlikely_tokens():
    logits = np.log(np.array([0.6, 0.35, 0.05], dtype=np.float64)).astype(np.float32)
    s = Sampler(SamplingOptions(temperature=1.0, top_k=0, top_p=1.0, min_p=0.1, seed=3), 3)
    assert {s.sample(logits) for _ in range(300)} == {0, 1}  # 0.05 < 0.1 * 0.6


def test_repeat_penalty_follows_llama_cpp_rule_and_leaves_input_alone():
    logits = np.array([2.0, 1.9, -1.0], dtype=np.float32)
    before = logits.copy()
    s = Sampler(SamplingOptions(temperature=0, repeat_penalty=1.5), 3)
    assert s.sample(logits, history=[0]) == 1  # 2.0 / 1.5 < 1.9
    assert np.array_equal(logits, before)


def test_sampling_a_large_vocab_is_cheap():
    import time

    logits = np.random.default_rng(0).standard_normal(151936).astype(np.float32)
    s = Sampler(SamplingOptions(temperature=0.8, seed=0), logits.shape[0])
    s.sample(logits)
    t = time.perf_counter()
    for _ in range(20):
        s.sample(logits)
    # a loose bound (shared CI cores): the benchmark measures; this catches a full-vocab sort
    assert (time.perf_counter() - t) / 20 < 0.02


# --- stop strings --------------------------------------------------------------------


def _feed_all(stops, pieces):
    m = StopMatcher(stops)
    out = []
    for p in pieces:
        text, stopped = m.feed(p)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + m.flush(), False


def test_stop_string_split_across_pieces_is_caught_and_not_emitted():
    assert _feed_all(["###"], ["Hello #", "#", "# world"]) == ("Hello ", True)


def test_partial_stop_prefix_is_held_then_released():
    m = StopMatcher(["STOP"])
    assert m.feed("abc ST") == ("abc ", False)
    assert m.feed("ar") == ("STar", False)


def test_held_text_is_flushed_at_the_end():
    assert _feed_all(["STOP"], ["abc", " ST"]) == ("abc ST", False)


def test_earliest_of_several_stops_wins():
    assert _feed_all(["world", "lo w"], ["hel", "lo world"]) == ("hel", True)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet="ab#xy", max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=8),
    stop=st.sampled_from(["#", "##", "a#b", "xyx"]),
)
def test_stop_matching_does_not_depend_on_how_text_is_split(text, cuts, stop):
    bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    got, stopped = _feed_all([stop], pieces)
    i = text.find(stop)
    assert (got, stopped) == ((text[:i], True) if i != -1 else (text, False))


# --- UTF-8 ---------------------------------------------------------------------------


def test_multibyte_characters_split_across_tokens_come_out_whole():
    data = "héllo 世界 🙂".encode()
    d = Utf8Decoder()
    pieces = [d.feed(data[i : i + 1]) for i in range(len(data))]
    assert "".join(pieces) + d.flush() == "héllo 世界 🙂"
    assert all("\ufffd" not in p for p in pieces)
    assert "🙂" in pieces  # emitted once, whole, when its last byte arrived


def test_invalid_bytes_become_replacement_characters_not_errors():
    d = Utf8Decoder()
    assert d.feed(b"a\xffb") == "a\ufffdb"
    assert d.feed(b"\xe4\xb8") == ""
    assert d.flush() == ""  # a character cut by the end of generation is dropped, not shown as U+FFFD
    d = Utf8Decoder()
    assert d.feed(b"x\xe4\x41") == "x\ufffdA"  # a lead byte followed by a non-continuation is invalid
    assert d.flush() == ""


# --- chat templates ------------------------------------------------------------------

MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


def test_model_template_is_rendered_with_generation_prompt():
    f = chat_formatter(CHATML_FALLBACK, bos_token="<s>", eos_token="</s>")
    assert f.source == "gguf"
    assert f.render(MSGS) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert not f.render(MSGS, add_generation_prompt=False).endswith("assistant\n")


def test_template_sees_bos_token_and_raise_exception():
    tpl = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    )
    f = chat_formatter(tpl, bos_token="<s>", eos_token="</s>")
    assert f.render([{"role": "user", "content": "x"}]) == "<s>x"
    with pytest.raises(ChatTemplateError, match="System role not supported"):
        f.render(MSGS)


def test_template_is_sandboxed():
    tpl = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    f = chat_formatter(tpl)
    assert f.source.startswith("fallback")  # the test render fails: unsafe access is refused
    assert "sandbox" in f.reason.lower() or "unsafe" in f.reason.lower() or "attribute" in f.reason.lower()


def test_broken_or_missing_template_falls_back():
    has = {"<|im_start|>", "<|im_end|>"}.__contains__
    assert chat_formatter(None, has_token=has).source == "fallback-chatml"
    assert chat_formatter(None, has_token=has).template == CHATML_FALLBACK
    broken = chat_formatter("{% for %}", has_token=lambda _: False)
    assert broken.source == "fallback-plain" and broken.template == PLAIN_FALLBACK
    assert "broken" in broken.reason
    assert broken.render(MSGS) == "Be brief.\n\nUser: Hi\nAssistant:"
    assert broken.stop == ("\nUser:",)


@pytest.mark.parametrize("bad", ["hi", [], [{"role": "user"}], [{"role": 1, "content": "x"}], [["user", "x"]]])
def test_malformed_messages_raise(bad):
    with pytest.raises(ChatTemplateError):
        chat_formatter(CHATML_FALLBACK).render(bad)


# --- the loop, on a scripted engine --------------------------------------------------


class ScriptedEngine:
    """An Engine that 'predicts' a fixed script: logits peak at the next scripted token."""

    runtime = "scripted"
    load_seconds = 0.0
    bos_token = eos_token = chat_template = None

    def __init__(self, script, pieces, n_ctx=64, eog=99):
        self.script, self.pieces, self.n_ctx, self.eog = list(script), pieces, n_ctx, eog
        self.n_vocab = 100
        self._tokens: list[int] = []
        self.evals: list[list[int]] = []

    cached_tokens = property(lambda self: tuple(self._tokens))
    n_past = property(lambda self: len(self._tokens))

    def eval(self, tokens):
        self.evals.append(list(tokens))
        self._tokens.extend(tokens)
        logits = np.zeros(self.n_vocab, dtype=np.float32)
        step = sum(1 for t in self._tokens if t >= 10)  # generated tokens so far (prompt ids are < 10)
        logits[self.script[step] if step < len(self.script) else self.eog] = 10.0
        return logits

    def rewind(self, n_keep):
        del self._tokens[n_keep:]

    def token_bytes(self, t):
        return self.pieces.get(t, b"")

    def is_eog(self, t):
        return t == self.eog


def test_run_joins_split_utf8_and_reports_eos_and_timings():
    # "é" is two bytes, split over tokens 10 and 11
    eng = ScriptedEngine([10, 11, 12], {10: b"\xc3", 11: b"\xa9", 12: b"!"})
    chunks = list(run(eng, [1, 2, 3], SamplingOptions(temperature=0)))
    assert [c.text for c in chunks] == ["é", "!", ""]
    assert chunks[0].token_ids == (10, 11)
    last = chunks[-1]
    assert last.finish_reason == "eos" and isinstance(last.timings, Timings)
    assert last.timings.prompt_tokens == 3 and last.timings.decode_tokens == 3
    c = join(iter(chunks))
    assert isinstance(c, Completion) and c.text == "é!" and c.completion_tokens == 3 and str(c) == "é!"


def test_run_stops_on_stop_string_split_across_tokens():
    eng = ScriptedEngine([10, 11, 12, 13], {10: b"ok ", 11: b"EN", 12: b"D", 13: b"more"})
    c = join(run(eng, [1], SamplingOptions(temperature=0, stop=("END",))))
    assert (c.text, c.finish_reason) == ("ok ", "stop")
    assert c.token_ids == (10,)  # "EN" and "D" only spelled the stop string


def test_tokens_that_spell_the_stop_string_are_not_counted():
    # "hi " is visible; the stop string "\nUser:" is spelled by the four tokens after it
    eng = ScriptedEngine(
        [10, 11, 12, 13, 14, 15, 16], {10: b"hi", 11: b" ", 12: b"\n", 13: b"Us", 14: b"er", 15: b":", 16: b"more"}
    )
    chunks = list(run(eng, [1], SamplingOptions(temperature=0, stop=("\nUser:",))))
    c = join(iter(chunks))
    assert (c.text, c.finish_reason) == ("hi ", "stop")
    assert c.token_ids == (10, 11) and c.completion_tokens == 2
    assert chunks[-1].timings.decode_tokens == 6  # the rate still counts every token decoded
    # a token that carries visible text and the start of the stop string counts: it shows text
    eng = ScriptedEngine([10, 11, 12], {10: b"ok E", 11: b"N", 12: b"D"})
    c = join(run(eng, [1], SamplingOptions(temperature=0, stop=("END",))))
    assert (c.text, c.token_ids) == ("ok ", (10,))
    # held text that turns out not to be a stop string goes out with all its tokens
    eng = ScriptedEngine([10, 11, 12], {10: b"E", 11: b"N", 12: b"!"})
    chunks = list(run(eng, [1], SamplingOptions(temperature=0, stop=("END",))))
    assert [(ch.text, ch.token_ids) for ch in chunks] == [("EN!", (10, 11, 12)), ("", ())]


def test_run_max_tokens_and_prefix_reuse():
    eng = ScriptedEngine([10, 11, 12, 13, 14], {i: b"x" for i in range(10, 15)})
    c = join(run(eng, [1, 2, 3], SamplingOptions(temperature=0, max_tokens=2)))
    assert (c.text, c.finish_reason) == ("xx", "length")
    assert eng.cached_tokens == (1, 2, 3, 10)  # the last sampled token is not evaluated
    eng.evals.clear()
    c2 = join(run(eng, [1, 2, 4], SamplingOptions(temperature=0, max_tokens=1)))
    assert eng.evals[0] == [4] and c2.timings.cached_tokens == 2  # only the new suffix is evaluated


def test_run_cancel_and_context_limits():
    eng = ScriptedEngine([10] * 50, {10: b"y"}, n_ctx=8)
    stop = threading.Event()
    stop.set()
    assert join(run(eng, [1], SamplingOptions(temperature=0), stop)).finish_reason == "cancelled"
    c = join(run(eng, [1, 2], SamplingOptions(temperature=0, max_tokens=None)))
    assert c.finish_reason == "length" and eng.n_past <= 8
    with pytest.raises(ContextOverflowError) as err:
        list(run(eng, list(range(8)), SamplingOptions()))
    assert (err.value.n_prompt, err.value.n_ctx) == (8, 8)


def test_chunk_and_completion_are_frozen():
    with pytest.raises(AttributeError):
        Chunk("a").text = "b"  # type: ignore[misc]
