"""Structured output (localllm.constraints) on the real SmolLM2 and the tiny ONNX decoder: every
sampled output matches its schema, regex or choices; cuts and bad grammars are said plainly."""

from __future__ import annotations

import json
import re
import threading

import jsonschema
import pytest
from pydantic import BaseModel, Field

import localllm
from localllm.errors import InvalidOptionError, InvalidOptionTypeError

N_CTX = 1024

# nested objects, arrays, enums, required fields, number bounds; lengths bounded so that a sample
# at temperature 1.0 finishes within max_tokens
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "height_m": {"type": "number", "minimum": 0.5, "maximum": 2.5},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 16},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "minItems": 1, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "address", "tags"],
}
ASK = [{"role": "user", "content": "Describe a user of our website as JSON."}]


@pytest.fixture(scope="module")
def smol(smollm2_gguf, one_core):
    m = localllm.load(smollm2_gguf, context=N_CTX, hardware=one_core, parallel=8)
    yield m
    m.close()


def test_fifty_samples_at_temperature_one_all_validate(smol):
    outs = smol.chat_batch([ASK] * 50, json_schema=PERSON, temperature=1.0, seed=list(range(50)), max_tokens=200)
    for c in outs:
        assert c.finish_reason in ("stop", "eos"), (c.finish_reason, c.text)
        assert not c.incomplete
        jsonschema.validate(json.loads(c.text), PERSON)  # the text itself, not only `parsed`
        assert c.parsed == json.loads(c.text)
    assert len({c.text for c in outs}) > 25  # sampled, not one answer fifty times


def test_chat_and_stream_carry_the_parsed_value(smol):
    done = smol.chat(ASK, json_schema=PERSON, temperature=0, max_tokens=200)
    jsonschema.validate(done.parsed, PERSON)
    chunks = list(smol.chat_stream(ASK, json_schema=PERSON, temperature=0, max_tokens=200))
    assert "".join(c.text for c in chunks) == done.text
    assert chunks[-1].parsed == done.parsed and all(c.parsed is None for c in chunks[:-1])
    assert done.finish_reason == "stop"  # the grammar was complete at the closing brace


def test_a_schema_as_a_json_string_gives_the_same_output(smol):
    a = smol.chat(ASK, json_schema=PERSON, temperature=0, max_tokens=200)
    b = smol.chat(ASK, json_schema=json.dumps(PERSON), temperature=0, max_tokens=200)
    assert a.text == b.text


class Address(BaseModel):
    city: str = Field(max_length=16)
    country: str = Field(max_length=16)


class User(BaseModel):
    name: str = Field(max_length=16)
    age: int = Field(ge=0, le=120)
    address: Address


def test_a_pydantic_model_gives_an_instance(smol):
    for seed in range(3):
        c = smol.chat(ASK, json_schema=User, temperature=1.0, seed=seed, max_tokens=150)
        assert isinstance(c.parsed, User) and isinstance(c.parsed.address, Address), c.text
        assert 0 <= c.parsed.age <= 120


def test_regex_and_choices_are_exact(smol):
    phone = r"\(\d{3}\) \d{3}-\d{4}"
    for seed in range(5):
        c = smol.generate("Call me at ", regex=phone, temperature=1.0, seed=seed, max_tokens=30)
        assert re.fullmatch(phone, c.text), c.text
        assert c.finish_reason == "stop" and c.parsed is None and not c.incomplete
    colours = ["red", "green", "light blue", "blue"]  # "blue" after "light blue": the grammar decides
    seen = set()
    for seed in range(8):
        c = smol.chat(
            [{"role": "user", "content": "Pick a colour."}], choices=colours, temperature=1.0, seed=seed, max_tokens=10
        )
        assert c.text in colours and c.parsed == c.text, c.text
        seen.add(c.text)
    assert len(seen) > 1


def test_a_lark_and_a_gbnf_grammar(smol):
    lark = 'start: "The answer is " NUMBER "."\nNUMBER: /[1-9][0-9]{0,2}/'
    c = smol.generate("Q: 6 times 7? A:", grammar=lark, temperature=0, max_tokens=20)
    assert re.fullmatch(r"The answer is [1-9][0-9]{0,2}\.", c.text), c.text
    gbnf = 'root ::= "yes" | "no" | "maybe"'
    c = smol.chat([{"role": "user", "content": "Will it rain?"}], grammar=gbnf, temperature=0)
    assert c.text in ("yes", "no", "maybe")


def test_max_tokens_inside_the_structure_is_length_and_incomplete(smol):
    c = smol.chat(ASK, json_schema=PERSON, temperature=0, max_tokens=6)
    assert c.finish_reason == "length" and c.incomplete and c.parsed is None
    assert c.text.startswith("{") and c.completion_tokens == 6
    # a regex that could go on is complete when cut: its text is a match
    c = smol.generate("Digits:", regex=r"[0-9]+", temperature=0, max_tokens=4)
    assert c.finish_reason == "length" and not c.incomplete and re.fullmatch("[0-9]+", c.text)


def test_cancelled_inside_the_structure_is_incomplete(smol):
    stop = threading.Event()
    chunks = []
    for chunk in smol.chat_stream(ASK, json_schema=PERSON, temperature=0, max_tokens=200, stop_event=stop):
        chunks.append(chunk)
        if len(chunks) == 3:
            stop.set()
    assert chunks[-1].finish_reason == "cancelled" and chunks[-1].incomplete


def test_speculative_drafts_keep_the_constrained_greedy_output(smol):
    ask = [{"role": "user", "content": 'Copy this JSON exactly: {"city": "Paris", "zip": "75001"}'}]
    schema = PERSON["properties"]["address"]
    off = smol.chat(ask, json_schema=schema, temperature=0, speculative="off", max_tokens=60)
    on = smol.chat(ask, json_schema=schema, temperature=0, speculative="prompt-lookup", max_tokens=60)
    assert on.text == off.text and on.parsed == off.parsed


@pytest.mark.parametrize(
    ("options", "error", "words"),
    [
        ({"regex": "a", "choices": ["a"]}, InvalidOptionError, "regex, choices were all given"),
        ({"regex": "(unclosed"}, InvalidOptionError, "unclosed group"),
        ({"grammar": "start: missing_rule"}, InvalidOptionError, "unknown name"),
        ({"choices": []}, InvalidOptionError, "the list is empty"),
        ({"choices": ["a", ""]}, InvalidOptionError, "choice 1"),
        ({"choices": "yes"}, InvalidOptionTypeError, "choices must be"),
        ({"json_schema": 42}, InvalidOptionTypeError, "json_schema must be a dict"),
        ({"json_schema": "{not json"}, InvalidOptionError, "not JSON"),
        ({"regex": ""}, InvalidOptionError, "empty"),
    ],
)
def test_bad_constraints_are_refused_before_generating(smol, options, error, words):
    with pytest.raises(error, match=re.escape(words)) as info:
        smol.generate("hi", **options)
    assert info.value.option in ("regex", "choices", "grammar", "json_schema")


def test_onnx_runtime_is_constrained_by_the_same_loop(tiny_onnx):
    with localllm.load(tiny_onnx) as m:
        schema = PERSON["properties"]["address"]
        for seed in range(4):  # random weights: only the mask makes these valid
            c = m.generate("hello", json_schema=schema, temperature=1.0, seed=seed, max_tokens=120)
            if c.finish_reason == "length":
                assert c.incomplete
                continue
            jsonschema.validate(json.loads(c.text), schema)
        c = m.generate("hello", choices=["alpha", "beta"], temperature=1.0, seed=3)
        assert c.text in ("alpha", "beta")


def test_a_sentencepiece_vocabulary_spells_forced_text_without_its_space(tiny_gguf):
    """SentencePiece tokenizers put a space before text: "{" must not come back as " {" (the
    JSON grammar would refuse the very token its mask allowed)."""
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    with localllm.load(tiny_gguf) as m:
        for seed in range(4):
            c = m.generate("hello", json_schema=schema, temperature=1.0, seed=seed, max_tokens=60)
            assert c.finish_reason in ("stop", "eos") or c.incomplete, (c.finish_reason, c.text)
            if not c.incomplete:
                assert json.loads(c.text) == c.parsed and isinstance(c.parsed["ok"], bool)


def test_a_grammar_that_cannot_run_on_this_vocabulary_fails_its_items_alone(smol):
    bad = "start: <[999999]>"  # a token id past the vocabulary: only the model's tokenizer can tell
    with pytest.raises(localllm.GenerationError, match="cannot run on this model's vocabulary"):
        smol.generate("hi", grammar=bad)
    outs = smol.generate_batch(["hi", "there"], grammar=bad, max_tokens=5)
    assert [c.finish_reason for c in outs] == ["error", "error"]
    assert all("Token range" in str(c.error) for c in outs)
    assert smol.generate("hi", choices=["ok"]).text == "ok"  # the model is fine after


def test_text_the_grammar_forces_is_drafted_and_always_accepted(smol):
    keys = ("first_name", "last_name", "email_address", "home_city")
    schema = {
        "type": "object",
        "properties": {k: {"type": "string", "maxLength": 12} for k in keys},
        "required": list(keys),
    }
    off = smol.chat(ASK, json_schema=schema, temperature=0, speculative="off", max_tokens=120)
    on = smol.chat(ASK, json_schema=schema, temperature=0, speculative="prompt-lookup", max_tokens=120)
    assert on.text == off.text and on.parsed == off.parsed
    assert on.timings.accepted_tokens >= 10  # the keys and their punctuation, evaluated in batches


def test_a_stop_string_inside_the_value_makes_it_incomplete_not_a_shorter_value(smol):
    whole = smol.generate("Digits:", regex=r"[0-9]{6}", temperature=0)
    assert re.fullmatch("[0-9]{6}", whole.text) and not whole.incomplete
    cut = smol.generate("Digits:", regex=r"[0-9]{6}", temperature=0, stop=[whole.text[3]])
    assert len(cut.text) < 6 and cut.incomplete and cut.parsed is None
    done = smol.chat(ASK, choices=["alpha beta", "gamma"], temperature=0)
    cut = smol.chat(ASK, choices=["alpha beta", "gamma"], temperature=0, stop=[done.text[-2:]])
    assert cut.incomplete and cut.parsed is None and cut.finish_reason == "stop"
