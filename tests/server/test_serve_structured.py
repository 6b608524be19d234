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
