"""Hostile or careless input never hangs and never escapes as a bare Python exception
(issue 12): chat templates from model files render under time and size limits, and every
bad option or prompt is a LocalLLMError that still is the builtin error it used to be."""

from __future__ import annotations

import math
import time

import pytest

import localllm
from localllm.chat_template import chat_formatter
from localllm.errors import ChatTemplateError, InvalidOptionError, InvalidOptionTypeError, LocalLLMError
from localllm.generation import SamplingOptions, run
from localllm.template_sandbox import (
    MAX_LOOP_ITERATIONS,
    MIN_OUTPUT_CHARS,
    RENDER_TIME_LIMIT_S,
)

# Each hostile render must end well within the time limit plus a second.
WITHIN_S = RENDER_TIME_LIMIT_S + 1.0
HI = [{"role": "user", "content": "hi"}]
CHATML_TOKENS = {"<|im_start|>", "<|im_end|>"}.__contains__


@pytest.fixture(scope="module")
def model(tiny_gguf, one_core):
    m = localllm.load(tiny_gguf, context=256, hardware=one_core)
    yield m
    m.close()


# --- sampling options -------------------------------------------------------------------

NAN, INF = math.nan, math.inf
# (option, value, error class, builtin base): the issue's list, and the neighbours of each case
BAD_OPTIONS = [
    ("max_tokens", 0, InvalidOptionError, ValueError),
    ("max_tokens", -1, InvalidOptionError, ValueError),
    ("max_tokens", "4", InvalidOptionTypeError, TypeError),
    ("max_tokens", True, InvalidOptionTypeError, TypeError),
    ("max_tokens", 4.0, InvalidOptionTypeError, TypeError),
    ("temperature", NAN, InvalidOptionError, ValueError),
    ("temperature", -1, InvalidOptionError, ValueError),
    ("temperature", INF, InvalidOptionError, ValueError),
    ("temperature", "hot", InvalidOptionTypeError, TypeError),
    ("top_p", 0, InvalidOptionError, ValueError),
    ("top_p", 2, InvalidOptionError, ValueError),
    ("top_p", NAN, InvalidOptionError, ValueError),
    ("top_k", -1, InvalidOptionError, ValueError),
    ("top_k", 1.5, InvalidOptionTypeError, TypeError),
    ("min_p", 1, InvalidOptionError, ValueError),
    ("min_p", NAN, InvalidOptionError, ValueError),
    ("repeat_penalty", 0, InvalidOptionError, ValueError),
    ("repeat_penalty", -1.0, InvalidOptionError, ValueError),
    ("repeat_penalty", NAN, InvalidOptionError, ValueError),
    ("repeat_last_n", -1, InvalidOptionError, ValueError),
    ("stop", [""], InvalidOptionError, ValueError),
    ("stop", ("ok", ""), InvalidOptionError, ValueError),
    ("stop", "", InvalidOptionError, ValueError),
    ("stop", 5, InvalidOptionTypeError, TypeError),
    ("stop", [b"x"], InvalidOptionTypeError, TypeError),
    ("stop", {"a": 1}, InvalidOptionTypeError, TypeError),
    ("seed", -1, InvalidOptionError, ValueError),
    ("seed", 2**32, InvalidOptionError, ValueError),
    ("seed", 1.0, InvalidOptionTypeError, TypeError),
    ("seed", "x", InvalidOptionTypeError, TypeError),
]
IDS = [f"{o}={v!r}" for o, v, _, _ in BAD_OPTIONS]


def assert_names(err: pytest.ExceptionInfo, option: str, value: object) -> None:
    e = err.value
    assert isinstance(e, LocalLLMError)
    assert e.option == option and e.allowed
    assert option in str(e)
    shown = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    assert shown in str(e), f"{shown} not in {e}"


@pytest.mark.parametrize("option, value, error, builtin", BAD_OPTIONS, ids=IDS)
def test_every_bad_option_is_a_localllm_error_and_its_builtin(option, value, error, builtin):
    with pytest.raises(error) as err:
        SamplingOptions(**{option: value})
    assert isinstance(err.value, builtin)
    assert_names(err, option, value)
    assert err.value.value == value or (isinstance(value, float) and math.isnan(value))


@pytest.mark.parametrize("option, value, error, builtin", BAD_OPTIONS, ids=IDS)
def test_every_bad_option_is_refused_by_the_model_at_call_time(model, option, value, error, builtin):
    with pytest.raises(builtin) as err:  # `except ValueError` / `except TypeError` still catch it
        model.stream("hello", **{option: value})
    assert isinstance(err.value, error)
    assert_names(err, option, value)
    with pytest.raises(error):
        model.chat(HI, **{option: value})


def test_option_edges_that_are_allowed(model):
    o = SamplingOptions(seed=0, top_p=1, min_p=0, top_k=0, temperature=0, repeat_last_n=0, max_tokens=1)
    assert (o.seed, o.top_p, o.min_p) == (0, 1, 0)
    assert SamplingOptions(seed=2**32 - 1).seed == 2**32 - 1
    import numpy as np

    assert type(SamplingOptions(seed=np.int64(7), top_k=np.int32(3)).seed) is int  # numpy ints are ints
    assert SamplingOptions(stop=None).stop == () and SamplingOptions(stop={"x"}).stop == ("x",)
    # stop=None means no stop strings; max_tokens=None runs to an end token or a full window
    c = model.generate("hello world", temperature=0, max_tokens=None, stop=None)
    assert c.finish_reason in ("eos", "length")
    assert c.finish_reason == "eos" or c.prompt_tokens + c.completion_tokens == model.info.n_ctx


def test_unknown_option_is_the_type_error_twin(model):
    with pytest.raises(TypeError) as err:
        model.generate("hello", temprature=0)
    e = err.value
    assert isinstance(e, InvalidOptionTypeError) and isinstance(e, LocalLLMError)
    assert e.option == "temprature" and e.value == 0 and "temperature" in e.allowed
    assert "temprature" in str(e) and "valid options are" in str(e)


def test_bad_overflow_mode_is_an_invalid_option(model):
    with pytest.raises(ValueError) as err:
        model.chat(HI, overflow="drop")
    assert isinstance(err.value, InvalidOptionError) and err.value.option == "overflow"
    assert "'drop'" in str(err.value) and "truncate" in str(err.value)


# --- prompts ----------------------------------------------------------------------------


def test_an_empty_prompt_is_an_invalid_option(model):
    # refused even though this model adds a BOS token: "" is almost always an empty input by mistake
    assert model._engine.add_bos
    with pytest.raises(ValueError) as err:
        model.generate("")
    assert isinstance(err.value, InvalidOptionError) and err.value.option == "prompt"
    assert "prompt" in str(err.value) and "''" in str(err.value)


def test_a_prompt_without_tokens_is_an_invalid_option():
    class NoTokens:  # what a model without BOS makes of text that tokenizes to nothing
        n_ctx = 16

    with pytest.raises(InvalidOptionError, match="empty after tokenization"):
        next(run(NoTokens(), [], SamplingOptions()))  # type: ignore[arg-type]


@pytest.mark.parametrize("prompt", [None, 3, b"hello", ["hello"], [{"role": "user", "content": "hi"}]])
def test_a_prompt_that_is_not_text_is_the_type_error_twin(model, prompt):
    with pytest.raises(TypeError) as err:
        model.generate(prompt)
    assert isinstance(err.value, InvalidOptionTypeError) and err.value.option == "prompt"
    assert "prompt must be a str" in str(err.value) and type(prompt).__name__ in str(err.value)


def test_a_lone_surrogate_in_a_prompt_says_where(model):
    with pytest.raises(ValueError) as err:
        model.generate("a\ud800b")
    e = err.value
    assert isinstance(e, InvalidOptionError) and e.option == "prompt"
    assert "surrogate" in str(e) and "U+D800" in str(e) and "character 1" in str(e)
    for call in (model.tokenize, model.count_tokens):
        with pytest.raises(InvalidOptionError, match="character 3"):
            call("abc\udfff")


def test_a_lone_surrogate_in_a_message_says_which_message_and_where(model):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello \udc80 there"}]
    for call in (model.chat, model.chat_stream, model.render_chat, model.count_tokens):
        with pytest.raises(ValueError) as err:
            call(msgs)
        e = err.value
        assert isinstance(e, InvalidOptionError) and e.option == "messages"
        assert "messages[1]['content']" in str(e) and "character 6" in str(e) and "U+DC80" in str(e)


# --- chat templates under limits --------------------------------------------------------

# Each would hang or take the memory without limits; the comment says which limit stops it.
HOSTILE_AT_LOAD = {
    # range() of 10**10 items: the range limit, before a single iteration
    "huge range": ("{% for i in range(10**10) %}{% endfor %}{{ messages[0]['content'] }}", "range"),
    # 10**10 iterations in 100,000-item ranges: the loop-iteration limit
    "nested ranges": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}x",
        "loop iterations",
    ),
    # one string of 10**9 characters: refused before it is built
    "huge string multiplication": ("{{ 'a' * 10**9 }}", "value size"),
    "huge string multiplication, literal": ("{{ 'a' * 1000000000 }}", "value size"),
    # doubling a string by '~' in a loop: every step is checked
    "doubling by concatenation": (
        "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
        "value size",
    ),
    # text buffered in a {% set %} block is never yielded, but it is counted as written
    "a set block that grows": (
        "{% set x %}{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}{% endset %}hi",
        "written",
    ),
    "a huge format width": ("{{ '{:>1000000000}'.format(1) }}", "value size"),
    "a huge '%' width": ("{{ '%1000000000d' % 1 }}", "value size"),
    "a huge integer": ("{{ 9 ** (9 ** 9) }}", "integer size"),
    "a huge list": ("{% set a = [1] * 10000000 %}{{ a | length }}", "list size"),
    # a list printed whole: its size is weighed before its text is built
    "a list of big strings printed": ("{% set a = ['x' * 100000] * 10000 %}{{ a }}", "value size"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_AT_LOAD))
def test_a_hostile_template_is_rejected_at_load_with_the_limit_named(name):
    template, limit = HOSTILE_AT_LOAD[name]
    t0 = time.monotonic()
    f = chat_formatter(template, has_token=CHATML_TOKENS, architecture="llama")
    assert time.monotonic() - t0 < WITHIN_S
    assert f.source == "fallback-chatml"  # the vocabulary's own format, as for a missing template
    assert f"{limit} render limit" in f.reason and "ChatML" in f.reason
    # rendered directly, the template raises ChatTemplateError naming the limit
    from localllm.chat_template import ChatFormatter

    t0 = time.monotonic()
    with pytest.raises(ChatTemplateError) as err:
        ChatFormatter(template, "gguf").render(HI)
    assert time.monotonic() - t0 < WITHIN_S
    assert err.value.limit == limit and err.value.maximum
    assert f"{limit} limit" in str(err.value)


def test_the_limits_are_named_with_their_numbers():
    from localllm.chat_template import ChatFormatter

    with pytest.raises(ChatTemplateError) as err:
        ChatFormatter(HOSTILE_AT_LOAD["nested ranges"][0], "gguf").render(HI)
    assert f"{MAX_LOOP_ITERATIONS:,}" in str(err.value) and err.value.maximum == MAX_LOOP_ITERATIONS
    with pytest.raises(ChatTemplateError) as err:
        ChatFormatter(HOSTILE_AT_LOAD["huge string multiplication"][0], "gguf").render(HI)
    assert "1,000,000,000" in str(err.value) and f"{MIN_OUTPUT_CHARS:,}" in str(err.value)
    with pytest.raises(ChatTemplateError) as err:
        ChatFormatter(HOSTILE_AT_LOAD["huge range"][0], "gguf").render(HI)
    assert "10,000,000,000" in str(err.value) and "100,000" in str(err.value)


def test_a_template_that_runs_too_long_meets_the_deadline():
    # 2**40 macro calls that print nothing: only the clock stops them
    bomb = "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}x"
    t0 = time.monotonic()
    f = chat_formatter(bomb)
    elapsed = time.monotonic() - t0
    assert f.source == "fallback-plain" and ("time render limit" in f.reason or "calls render limit" in f.reason)
    assert elapsed < WITHIN_S


# Templates that pass the test render at load (one short message) and explode on real content.
ON_CONTENT = {
    # a loop per character of the content
    "loop per character": (
        "{% for m in messages %}{% for c in m['content'] %}{% for i in range(1000) %}"
        "{% endfor %}{% endfor %}{{ m['content'] }}{% endfor %}",
        "loop iterations",
    ),
    # the content printed once per character of itself: quadratic output
    "output per character": (
        "{% for m in messages %}{% for c in m['content'] %}{{ m['content'] }}{% endfor %}{% endfor %}",
        "output",
    ),
    # a long message multiplied
    "multiplied content": (
        "{% for m in messages %}{{ m['content'] * (m['content'] | length) }}{% endfor %}",
        "value size",
    ),
}


@pytest.mark.parametrize("name", sorted(ON_CONTENT))
def test_a_template_that_explodes_on_real_content_fails_chat_not_load(name, tmp_path, one_core):
    from localllm.testing import write_llama_gguf

    template, limit = ON_CONTENT[name]
    path = write_llama_gguf(tmp_path / "content.gguf", seed=1, chat_template=template)
    with localllm.load(path, context=256, hardware=one_core) as m:
        assert m.info.template_source == "gguf"  # the test render passed
        long = [{"role": "user", "content": "hello " * 2000}]
        t0 = time.monotonic()
        with pytest.raises(ChatTemplateError) as err:
            m.chat(long, max_tokens=4)
        assert time.monotonic() - t0 < WITHIN_S
        assert err.value.limit == limit and f"{limit} limit" in str(err.value)
        with pytest.raises(ChatTemplateError):
            m.render_chat(long)
        assert m.chat(HI, temperature=0, max_tokens=2).completion_tokens <= 2  # short chats still work


def test_an_empty_render_is_a_chat_template_error(tmp_path, one_core):
    from localllm.chat_template import ChatFormatter
    from localllm.testing import write_llama_gguf

    # a template that renders nothing falls back at load, as a broken one does
    for empty in ("{% if false %}x{% endif %}", "   \n"):
        f = chat_formatter(empty, has_token=CHATML_TOKENS)
        assert f.source == "fallback-chatml" and "empty" in f.reason or "whitespace" in f.reason
        with pytest.raises(ChatTemplateError, match="empty prompt|only whitespace"):
            ChatFormatter(empty, "gguf").render(HI)
    # an empty template is no template
    assert "no chat template" in chat_formatter("", has_token=CHATML_TOKENS).reason
    # one that renders nothing only for some conversations fails those chats
    only_one = "{% if messages | length == 1 %}{{ messages[0]['content'] }}{% endif %}"
    path = write_llama_gguf(tmp_path / "empty.gguf", seed=1, chat_template=only_one)
    with localllm.load(path, context=256, hardware=one_core) as m:
        assert m.info.template_source == "gguf"
        with pytest.raises(ChatTemplateError, match="empty prompt"):
            m.chat([*HI, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and?"}])


def test_load_falls_back_with_a_note_for_a_hostile_gguf_template(tmp_path, one_core):
    from localllm.testing import write_llama_gguf

    template, _ = HOSTILE_AT_LOAD["nested ranges"]
    path = write_llama_gguf(tmp_path / "hostile.gguf", seed=1, chat_template=template)
    t0 = time.monotonic()
    with localllm.load(path, context=256, hardware=one_core) as m:
        assert time.monotonic() - t0 < WITHIN_S + 5  # the load itself, plus the refused render
        assert m.info.template_source == "fallback-chatml"
        assert "loop iterations render limit" in m.info.template_note and "1,000,000" in m.info.template_note
        reply = m.chat(HI, temperature=0, max_tokens=4)
        assert reply.finish_reason in ("eos", "length", "stop")


def test_a_template_cannot_print_a_lone_surrogate():
    f = chat_formatter("{{ '\\ud800' }}{{ messages[0]['content'] }}")
    assert f.source.startswith("fallback") and "surrogate" in f.reason


@pytest.mark.parametrize(
    "template",
    [
        "{{ messages.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ (messages | attr('__class__')) }}",
        "{{ raise_exception.__globals__['os'] }}",
        "{% set x = messages.append({'role': 'user', 'content': 'injected'}) %}{{ messages }}",
    ],
)
def test_templates_still_cannot_leave_the_sandbox(template):
    f = chat_formatter(template)
    assert f.source.startswith("fallback"), f"{template} rendered"
    # refused (SecurityError), or the unsafe attribute is undefined and prints nothing
    assert any(w in f.reason for w in ("SecurityError", "unsafe", "undefined", "empty prompt")), f.reason
