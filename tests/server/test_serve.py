"""`localllm serve` as a real process on 127.0.0.1, driven by the official openai and ollama
clients, on the real SmolLM2 model: what each API answers, that concurrent requests share the
batch engine and still get exactly their own answers, and that bad requests get clear errors."""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import ollama
import openai
import pytest

import localllm

pytestmark = pytest.mark.slow

QUESTIONS = [
    "What is the capital of France?",
    "Name a primary colour.",
    "What is 2 + 2?",
    "Say hello in Spanish.",
    "What animal says moo?",
    "Name a planet.",
    "What is the opposite of hot?",
    "What do bees make?",
]
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def client(served_smollm2):
    return openai.OpenAI(base_url=served_smollm2.v1, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def alone(smollm2_gguf, one_core):
    """What the model answers each question alone, in this process (temperature 0)."""
    with localllm.load(smollm2_gguf, context=1024, hardware=one_core) as llm:
        return {
            q: llm.chat([{"role": "user", "content": q}], temperature=0, max_tokens=MAX_TOKENS).text for q in QUESTIONS
        }


def _ask(client, model, question, **kw):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=MAX_TOKENS, **kw
    )


def test_chat_completion_answers_as_the_model_does_alone_with_usage(served_smollm2, client, alone):
    q = QUESTIONS[0]
    reply = _ask(client, served_smollm2.model, q)
    assert reply.object == "chat.completion"
    assert reply.model == served_smollm2.model
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == alone[q]
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= MAX_TOKENS
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_joins_to_the_same_text_and_reports_usage(served_smollm2, client, alone):
    q = QUESTIONS[1]
    stream = _ask(client, served_smollm2.model, q, stream=True, stream_options={"include_usage": True})
    parts, finishes, usages = [], [], []
    for event in stream:
        if event.usage is not None:
            usages.append(event.usage)
        for choice in event.choices:
            parts.append(choice.delta.content or "")
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert "".join(parts) == alone[q]
    assert len(finishes) == 1
    assert len(usages) == 1 and usages[0].completion_tokens > 0


def test_completions_complete_raw_text_as_generate_does(served_smollm2, client, smollm2_gguf, one_core):
    prompt = "The three primary colours are"
    with localllm.load(smollm2_gguf, context=1024, hardware=one_core) as llm:
        expected = llm.generate(prompt, temperature=0, max_tokens=16).text
    reply = client.completions.create(model=served_smollm2.model, prompt=prompt, temperature=0, max_tokens=16)
    assert reply.choices[0].text == expected
    assert reply.usage.completion_tokens == 16 or reply.choices[0].finish_reason == "stop"


def test_n_gives_that_many_choices(served_smollm2, client):
    reply = client.chat.completions.create(
        model=served_smollm2.model,
        messages=[{"role": "user", "content": "Write a word."}],
        temperature=1.0,
        seed=7,
        n=3,
        max_tokens=8,
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content for c in reply.choices)


def test_eight_concurrent_clients_each_get_their_own_answer(served_smollm2, alone):
    def one(q):
        c = openai.OpenAI(base_url=served_smollm2.v1, api_key="unused", max_retries=0, timeout=180)
        return q, _ask(c, served_smollm2.model, q).choices[0].message.content

    with concurrent.futures.ThreadPoolExecutor(len(QUESTIONS)) as pool:
        answers = dict(pool.map(one, QUESTIONS))
    assert answers == alone


def test_a_client_that_leaves_mid_stream_frees_its_sequence(served_smollm2):
    body = {
        "model": served_smollm2.model,
        "messages": [{"role": "user", "content": "Count from one to one thousand."}],
        "max_tokens": 900,
        "stream": True,
        "temperature": 0,
    }
    with httpx.stream("POST", served_smollm2.v1 + "/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        seen = 0
        for line in response.iter_lines():
            if line.startswith("data: {"):
                seen += 1
            if seen >= 4:
                break
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        health = httpx.get(served_smollm2.url + "/health").json()
        if health["active"] == 0:
            break
        time.sleep(0.1)
    assert health["active"] == 0, health


def test_ollama_client_chat_generate_and_listing(served_smollm2, alone):
    client = ollama.Client(host=served_smollm2.url, timeout=120)
    q = QUESTIONS[2]
    reply = client.chat(
        model=served_smollm2.model,
        messages=[{"role": "user", "content": q}],
        options={"temperature": 0, "num_predict": MAX_TOKENS},
    )
    assert reply.message.content == alone[q]
    assert reply.done and reply.eval_count > 0 and reply.prompt_eval_count > 5
    streamed = "".join(
        part.message.content
        for part in client.chat(
            model=served_smollm2.model,
            messages=[{"role": "user", "content": q}],
            options={"temperature": 0, "num_predict": MAX_TOKENS},
            stream=True,
        )
    )
    assert streamed == alone[q]
    gen = client.generate(model=served_smollm2.model, prompt=q, options={"temperature": 0, "num_predict": MAX_TOKENS})
    assert gen.response == alone[q]  # a prompt goes through the chat template, as Ollama does
    assert served_smollm2.model in [m.model for m in client.list().models]
    running = client.ps().models
    assert [m.model for m in running] == [served_smollm2.model]
    assert running[0].size > 50_000_000
    shown = client.show(served_smollm2.model)
    assert "im_start" in (shown.template or "")
    assert httpx.get(served_smollm2.url + "/api/version").json()["version"] == localllm.__version__


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, 400, "'model' is required"),
        ({"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, "temperature"),
        ({"model": "MODEL", "messages": "hi"}, 400, "'messages' must be list"),
        ({"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}, 400, "logprobs"),
        ({"model": "no-such-model-anywhere", "messages": [{"role": "user", "content": "hi"}]}, 404, "no-such-model"),
        ({"model": "MODEL", "messages": [{"role": "user", "content": "word " * 3000}]}, 400, "context"),
    ],
)
def test_bad_requests_get_openai_errors_that_say_what_to_do(served_smollm2, body, status, needle):
    body = json.loads(json.dumps(body).replace('"MODEL"', json.dumps(served_smollm2.model)))
    response = httpx.post(served_smollm2.v1 + "/chat/completions", json=body, timeout=60)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert needle in error["message"]
    assert error["type"] in ("invalid_request_error", "server_error")
    # and the server is still there
    assert httpx.get(served_smollm2.url + "/health").status_code == 200


def test_the_official_client_raises_its_own_errors(served_smollm2, client):
    with pytest.raises(openai.NotFoundError):
        _ask(client, "no-such-model-anywhere", "hi")
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=served_smollm2.model, messages=[{"role": "user", "content": "hi"}], top_p=5
        )
    assert err.value.body["param"] == "top_p"


def test_oversized_and_malformed_bodies(served_smollm2):
    big = httpx.post(
        served_smollm2.v1 + "/chat/completions",
        content=b'{"model": "x", "messages": [], "pad": "' + b"a" * (9 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert big.status_code == 413
    assert "--max-body" in big.json()["error"]["message"]
    bad = httpx.post(served_smollm2.v1 + "/chat/completions", content=b"{not json", timeout=60)
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    ollama_bad = httpx.post(served_smollm2.url + "/api/chat", json={"model": served_smollm2.model, "options": 3})
    assert ollama_bad.status_code == 400 and "'options' must be an object" in ollama_bad.json()["error"]


def test_completions_take_a_list_of_prompts_and_count_each_prompt_once(served_smollm2, client):
    prompts = ["The sun is", "Two plus two is"]
    each = [
        client.completions.create(model=served_smollm2.model, prompt=p, temperature=0, max_tokens=6) for p in prompts
    ]
    both = client.completions.create(model=served_smollm2.model, prompt=prompts, temperature=0, max_tokens=6, n=2)
    assert [c.index for c in both.choices] == [0, 1, 2, 3]  # n per prompt, in prompt order
    assert [c.text for c in both.choices] == [each[0].choices[0].text] * 2 + [each[1].choices[0].text] * 2
    assert both.usage.prompt_tokens == sum(e.usage.prompt_tokens for e in each)
    assert both.usage.completion_tokens == 2 * sum(e.usage.completion_tokens for e in each)
