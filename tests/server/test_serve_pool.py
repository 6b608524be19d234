"""`localllm serve` with models on demand: loaded when a request names them, unloaded when idle
past their keep-alive, the least recently used idle one evicted for a model that does not fit
beside it, 507 when the one in the way is busy; and the API key."""

from __future__ import annotations

import dataclasses
import threading
import time

import httpx
import ollama
import openai
import pytest
from serverhelp import isolate, running_server

import localllm

pytestmark = pytest.mark.slow

CTX, PARALLEL = 512, 2


def _chat(server, model, text="Hi", **kw):
    body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4, "temperature": 0, **kw}
    return httpx.post(server.v1 + "/chat/completions", json=body, timeout=120)


def _running(server) -> list[str]:
    return [m["model"] for m in httpx.get(server.url + "/api/ps").json()["models"]]


def _wait(condition, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def env(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    return tmp_path


@pytest.fixture
def two_names(smollm2_gguf, env):
    """Two names of the real model (two files as far as the server knows)."""
    names = []
    for n in ("a", "b"):
        link = env / f"{n}.gguf"
        link.symlink_to(smollm2_gguf)
        names.append(str(link))
    return names


def _room_for_one(path, tmp_path) -> str:
    """A hardware profile of this machine with memory for one model of `path` (as the server loads
    it) but not two: the least memory that fits one, plus half a model."""
    hw = localllm.probe()

    def with_available(n):
        return dataclasses.replace(hw, memory=dataclasses.replace(hw.memory, available=n, cgroup_limit=None))

    def fits(n):
        plan = localllm.plan_for(path, context=CTX, parallel=PARALLEL, hardware=with_available(n), workload="batch")
        return plan.fits, plan.needed

    lo, hi = 0, hw.memory.available
    _, needed = fits(hi)
    while hi - lo > 1 << 20:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid)[0] else (mid, hi)
    profile = tmp_path / "room-for-one.toml"
    profile.write_text('name = "room-for-one"\n' + with_available(hi + needed // 2).to_toml())
    return str(profile)


def test_an_idle_model_is_evicted_for_one_that_does_not_fit_beside_it_and_a_busy_one_is_not(two_names, env):
    a, b = two_names
    profile = _room_for_one(a, env)
    args = ("--profile", profile, "--ctx", str(CTX), "--parallel", str(PARALLEL), "--offline")
    with running_server(env, *args) as server:
        assert _chat(server, a).status_code == 200
        assert _running(server) == [a]
        assert _chat(server, b).status_code == 200  # a was idle: unloaded to make room
        assert _running(server) == [b]
        # b busy with a long reply: a cannot come back, and says why, with the numbers
        body = {"model": b, "messages": [{"role": "user", "content": "Count to a thousand."}], "max_tokens": 400}
        with httpx.stream("POST", server.v1 + "/chat/completions", json={**body, "stream": True}, timeout=120) as r:
            next(r.iter_lines())
            refused = _chat(server, a)
        assert refused.status_code == 507, refused.text
        error = refused.json()["error"]
        assert error["code"] == "insufficient_memory"
        assert "does not fit" in error["message"] and "busy" in error["message"]
        assert _running(server) == [b]


def test_models_load_on_demand_and_unload_after_their_keep_alive(two_names, env):
    a, b = two_names
    with running_server(env, "--ctx", str(CTX), "--parallel", str(PARALLEL), "--keep-alive", "1s") as server:
        assert _running(server) == []
        client = ollama.Client(host=server.url, timeout=120)
        reply = client.generate(model=a, prompt="Hi", options={"num_predict": 4}, keep_alive="30s")
        assert reply.done
        assert _chat(server, b).status_code == 200  # the server's own keep-alive: 1 s
        assert sorted(_running(server)) == sorted([a, b])
        _wait(lambda: _running(server) == [a], "b to unload after 1 s idle")
        # Ollama's way to unload at once: an empty prompt with keep_alive 0
        client.generate(model=a, prompt="", keep_alive=0)
        assert _running(server) == []


def test_the_api_key_is_required_when_set(smollm2_gguf, env):
    link = env / "m.gguf"
    link.symlink_to(smollm2_gguf)
    with running_server(env, str(link), "--ctx", str(CTX), api_key="sesame") as server:
        assert httpx.get(server.url + "/health").status_code == 200  # for liveness probes
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=server.v1, api_key="wrong", max_retries=0).models.list()
        models = openai.OpenAI(base_url=server.v1, api_key="sesame", max_retries=0).models.list()
        assert [m.id for m in models.data] == [str(link)]
        denied = httpx.post(server.url + "/api/chat", json={"model": str(link), "messages": []})
        assert denied.status_code == 401 and "--api-key" in denied.json()["error"]


def test_a_full_queue_answers_429_and_the_rest_are_served(smollm2_gguf, env):
    link = env / "m.gguf"
    link.symlink_to(smollm2_gguf)
    args = (str(link), "--ctx", str(CTX), "--parallel", "1", "--queue", "1")
    with running_server(env, *args) as server:
        statuses: list[int] = []

        def one():
            statuses.append(_chat(server, str(link), "Count to fifty.", max_tokens=48).status_code)

        threads = [threading.Thread(target=one) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 429 in statuses and 200 in statuses, statuses
        assert set(statuses) <= {200, 429}
        assert _chat(server, str(link)).status_code == 200  # and it goes on


def test_sigterm_lets_the_request_in_flight_finish_then_exits_cleanly(smollm2_gguf, env):
    import signal

    link = env / "m.gguf"
    link.symlink_to(smollm2_gguf)
    with running_server(env, str(link), "--ctx", str(CTX)) as server:
        body = {
            "model": str(link),
            "messages": [{"role": "user", "content": "Count to a hundred."}],
            "max_tokens": 48,
            "temperature": 0,
            "stream": True,
        }
        with httpx.stream("POST", server.v1 + "/chat/completions", json=body, timeout=120) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: {")
            server.process.send_signal(signal.SIGTERM)
            rest = list(lines)
        events = [line for line in rest if line]
        assert events[-1] == "data: [DONE]" and len(events) > 3, events[-3:]  # the reply went on to its end
        # uvicorn re-raises the SIGTERM it caught once it has shut down, so the parent sees it
        assert server.process.wait(timeout=40) in (0, -signal.SIGTERM)
        log = server.output()
        assert "Application shutdown complete" in log and "Traceback" not in log
        with pytest.raises(httpx.ConnectError):  # and it listens no more
            httpx.get(server.url + "/health", timeout=2)
