"""Structured output through `localllm serve`: OpenAI's response_format (json_object, json_schema,
the openai client's own `parse` with a Pydantic model) and Ollama's `format`, on the real SmolLM2."""

from __future__ import annotations

import json

import httpx
import jsonschema
import ollama
import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.slow

ASK = [{"role": "user", "content": "Describe a city as JSON."}]


class City(BaseModel):
    name: str = Field(max_length=24)
    country: str = Field(max_length=24)
    population: int = Field(ge=0)


CITY = City.model_json_schema()


@pytest.fixture(scope="module")
def client(served_smollm2):
    return openai.OpenAI(base_url=served_smollm2.v1, api_key="unused", max_retries=0, timeout=120)


def test_openai_parse_with_a_pydantic_model(served_smollm2, client):
    done = client.chat.completions.parse(
        model=served_smollm2.model, messages=ASK, response_format=City, temperature=0, max_tokens=120
    )
    city = done.choices[0].message.parsed
    assert isinstance(city, City) and city.population >= 0


def test_openai_json_schema_at_temperature_one(served_smollm2, client):
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}}
    done = client.chat.completions.create(
        model=served_smollm2.model, messages=ASK, response_format=fmt, temperature=1.0, seed=7, n=4, max_tokens=120
    )
    for choice in done.choices:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), CITY)


def test_openai_json_mode_streams_an_object(served_smollm2, client):
    parts = client.chat.completions.create(
        model=served_smollm2.model,
        messages=[{"role": "user", "content": 'Copy this JSON object: {"city": "Paris", "country": "France"}'}],
        response_format={"type": "json_object"},
        temperature=0,
        max_tokens=120,
        stream=True,
    )
    text = "".join(p.choices[0].delta.content or "" for p in parts if p.choices)
    assert json.loads(text) == {"city": "Paris", "country": "France"}


def test_ollama_format_schema_and_json(served_smollm2):
    c = ollama.Client(host=served_smollm2.url, timeout=120)
    reply = c.chat(
        model=served_smollm2.model, messages=ASK, format=CITY, options={"temperature": 0, "num_predict": 120}
    )
    City.model_validate_json(reply.message.content)
    copy = 'Copy this JSON object: {"city": "Paris", "country": "France"}'
    gen = c.generate(model=served_smollm2.model, prompt=copy, format="json", options={"temperature": 0})
    assert json.loads(gen.response) == {"city": "Paris", "country": "France"}


@pytest.mark.parametrize(
    ("path", "extra", "needle"),
    [
        ("/v1/chat/completions", {"response_format": {"type": "xml"}}, "'response_format' must be"),
        ("/v1/chat/completions", {"response_format": {"type": "json_schema", "json_schema": {"schema": 3}}}, "must be"),
        (
            "/v1/chat/completions",
            {"response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "nope"}}}},
            "json_schema",
        ),
        ("/api/chat", {"format": "yaml"}, "'format' must be"),
    ],
)
def test_bad_formats_are_400s(served_smollm2, path, extra, needle):
    body = {"model": served_smollm2.model, "messages": ASK, "stream": False, **extra}
    r = httpx.post(served_smollm2.url + path, json=body, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert needle in (error["message"] if isinstance(error, dict) else error)


WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}}, "required": ["city"]}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather now", "parameters": WEATHER}}]
WEATHER_ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_openai_tool_calls_plain_and_streamed_and_a_result_round_trip(served_smollm2, client):
    kw = {"model": served_smollm2.model, "tools": TOOLS, "tool_choice": "required", "temperature": 0}
    done = client.chat.completions.create(messages=WEATHER_ASK, **kw)
    choice = done.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER)

    parts = list(client.chat.completions.create(messages=WEATHER_ASK, stream=True, **kw))
    deltas = [d for p in parts if p.choices for d in (p.choices[0].delta.tool_calls or [])]
    assert [d.function.name for d in deltas] == ["get_weather"]
    assert json.loads(deltas[0].function.arguments) == json.loads(call.function.arguments)
    assert parts[-1].choices[0].finish_reason == "tool_calls"
    assert not any(p.choices[0].delta.content for p in parts if p.choices)  # the markup is never streamed

    history = [
        *WEATHER_ASK,
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'},
    ]
    reply = client.chat.completions.create(
        model=served_smollm2.model, messages=history, tools=TOOLS, tool_choice="none", temperature=0, max_tokens=20
    )
    assert reply.choices[0].message.content and not reply.choices[0].message.tool_calls


def test_ollama_tool_calls_in_its_own_shape(served_smollm2):
    body = {"model": served_smollm2.model, "messages": WEATHER_ASK, "tools": TOOLS, "stream": False}
    r = httpx.post(served_smollm2.url + "/api/chat", json={**body, "tool_choice": "required"}, timeout=60)
    reply = ollama.ChatResponse.model_validate(r.json())  # what the official client makes of it
    (call,) = reply.message.tool_calls
    assert call.function.name == "get_weather"
    jsonschema.validate(dict(call.function.arguments), WEATHER)
    c = ollama.Client(host=served_smollm2.url, timeout=120)
    history = [
        *WEATHER_ASK,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "content": '{"temp_c": 21}', "tool_name": "get_weather"},
    ]
    answer = c.chat(model=served_smollm2.model, messages=history, tools=TOOLS, options={"num_predict": 20})
    assert answer.message.content or answer.message.tool_calls
