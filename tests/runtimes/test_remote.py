"""A model on another machine (localllm.runtimes.remote): `load("openai+http://...")` behind the
Model API. Against a real `localllm serve` of SmolLM2, greedy output equals the same calls on the
local model; against a small fake OpenAI server, every failure a real server would not produce
on demand gives a clear error, and stopping a stream closes its connection."""

from __future__ import annotations

import contextlib
import http.server
import json
import select
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import localllm
from localllm.errors import (
    ContextOverflowError,
    GenerationError,
    InvalidOptionError,
    LocalLLMError,
    ModelNotFoundError,
    ModelUnavailableError,
)
from localllm.runtimes.remote import RemoteError, RemoteModel, RemoteUnsupportedError, open_remote
from localllm.tools import ToolCall

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from serverhelp import isolate, running_server  # noqa: E402  (tests/server is no package)

# --- a fake OpenAI server -------------------------------------------------------------
Behaviour = Callable[["_Handler", dict], None]


class Fake:
    """A stdlib HTTP server on 127.0.0.1 answering /v1/models from `models` and each POST with
    `behaviour(handler, body)`. Records the request bodies and headers, and whether a client left
    while a stream was being sent (`left`) and how many events went out (`sent`)."""

    def __init__(self) -> None:
        self.models: list[dict[str, Any]] = [{"id": "m", "object": "model"}]
        self.models_status = 200
        self.behaviour: Behaviour = lambda h, body: h.sse(chat_events(["Hi"]))
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.left = threading.Event()
        self.sent = 0
        self.release = threading.Event()  # set at teardown: ends every handler that waits
        fake = self

        class Handler(_Handler):
            pass

        Handler.fake = fake
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def url(self, fragment: str | None = "m") -> str:
        return f"openai+http://127.0.0.1:{self.port}/v1" + (f"#{fragment}" if fragment else "")

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    fake: Fake
    protocol_version = "HTTP/1.0"  # a body ends when the connection closes, as a stream's does

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.fake.headers.append(dict(self.headers))
        if self.path == "/v1/models":
            self.json(self.fake.models_status, {"object": "list", "data": self.fake.models})
        else:
            self.json(404, {"error": {"message": "no such route"}})

    def do_POST(self) -> None:
        self.fake.headers.append(dict(self.headers))
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.fake.bodies.append(body)
        self.fake.behaviour(self, body)

    def json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_sse(self) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.end_headers()

    def sse(self, events: list[Any], delay: float = 0.0, raw: bool = False) -> None:
        """Send events ("data: JSON"), or raw text, noting a client that leaves."""
        self.start_sse()
        try:
            for event in events:
                line = event if raw else f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n"
                self.wfile.write(line.encode())
                self.wfile.flush()
                self.fake.sent += 1
                if delay and self.fake.release.wait(delay):
                    return
        except (BrokenPipeError, ConnectionResetError):
            self.fake.left.set()

    def hold(self, seconds: float = 10.0) -> None:
        """Send nothing more; note when the client closes its end."""
        deadline = time.monotonic() + seconds
        sock = self.connection
        while time.monotonic() < deadline and not self.fake.release.is_set():
            readable, _, _ = select.select([sock], [], [], 0.05)
            if readable:
                try:
                    if sock.recv(1, socket.MSG_PEEK) == b"":
                        self.fake.left.set()
                        return
                except OSError:
                    self.fake.left.set()
                    return


def chat_events(pieces: list[str], finish: str = "stop", usage: dict | None = None, **extra: Any) -> list[Any]:
    events: list[Any] = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    events += [{"choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": finish, **extra}]})
    if usage is not None:
        events.append({"choices": [], "usage": usage})
    return [*events, "[DONE]"]


def text_events(pieces: list[str], finish: str = "stop") -> list[Any]:
    events: list[Any] = [{"choices": [{"index": 0, "text": p, "finish_reason": None}]} for p in pieces]
    return [*events, {"choices": [{"index": 0, "text": "", "finish_reason": finish}]}, "[DONE]"]


@pytest.fixture
def fake() -> Iterator[Fake]:
    f = Fake()
    f.thread.start()
    try:
        yield f
    finally:
        f.stop()


@pytest.fixture
def remote(fake) -> Iterator[RemoteModel]:
    with localllm.load(fake.url()) as llm:
        assert isinstance(llm, RemoteModel)
        yield llm


HI = [{"role": "user", "content": "Hi"}]


# --- against a real `localllm serve` --------------------------------------------------
@pytest.fixture(scope="module")
def served(smollm2_gguf, tmp_path_factory):
    """`localllm serve` of the real SmolLM2 as a process on 127.0.0.1 (4 sequences, 1024 each)."""
    tmp = tmp_path_factory.mktemp("serve")
    with contextlib.ExitStack() as stack:
        mp = pytest.MonkeyPatch()
        stack.callback(mp.undo)
        isolate(mp, tmp)
        link = tmp / "smollm2.gguf"
        link.symlink_to(smollm2_gguf)
        server = stack.enter_context(running_server(tmp, str(link), "--parallel", "4", "--ctx", "1024"))
        yield server, str(link)


@pytest.fixture(scope="module")
def pair(served, smollm2_gguf, one_core):
    """(the served SmolLM2 as a remote model, the same file loaded here)."""
    server, name = served
    url = "openai+" + server.v1 + "#" + urllib.parse.quote(name, safe="")
    with localllm.load(url) as far, localllm.load(smollm2_gguf, context=1024, hardware=one_core) as near:
        yield far, near


@pytest.mark.slow
def test_greedy_generate_stream_and_chat_equal_the_local_model(pair):
    far, near = pair
    assert far.info.runtime == "remote" and far.plan is None and far.info.name.endswith("smollm2.gguf")
    greedy = {"temperature": 0, "max_tokens": 24}
    prompt = "The capital of France is"
    a, b = far.generate(prompt, **greedy), near.generate(prompt, **greedy)
    assert a.text == b.text and a.text.strip()
    assert (a.finish_reason, a.prompt_tokens, a.completion_tokens) == (
        b.finish_reason,
        b.prompt_tokens,
        b.completion_tokens,
    )
    assert a.timings.ttft_s > 0 and a.timings.total_s >= a.timings.ttft_s and a.timings.decode_tokens == 24

    chunks = list(far.stream(prompt, **greedy))
    assert "".join(c.text for c in chunks) == b.text
    assert chunks[-1].finish_reason == b.finish_reason and all(c.finish_reason is None for c in chunks[:-1])

    question = [{"role": "user", "content": "What is the capital of France?"}]
    ca, cb = far.chat(question, **greedy), near.chat(question, **greedy)
    assert ca.text == cb.text and ca.text.strip()
    assert (ca.finish_reason, ca.prompt_tokens, ca.completion_tokens) == (
        cb.finish_reason,
        cb.prompt_tokens,
        cb.completion_tokens,
    )
    streamed = list(far.chat_stream(question, **greedy))
    assert "".join(c.text for c in streamed) == cb.text

    # an end-of-turn the model chose, and a stop string: the finish reasons are a local model's
    sum_ = [{"role": "user", "content": "What is 2 + 2?"}]
    ea, eb = far.chat(sum_, temperature=0, max_tokens=40), near.chat(sum_, temperature=0, max_tokens=40)
    assert (ea.text, ea.finish_reason) == (eb.text, eb.finish_reason) == (eb.text, "eos")
    stop = {"temperature": 0, "max_tokens": 24, "stop": [" la "]}
    sa, sb = far.chat(question, **stop), near.chat(question, **stop)
    assert (sa.text, sa.finish_reason) == (sb.text, sb.finish_reason) == ("L'Étoile,", "stop")


@pytest.mark.slow
def test_structured_output_goes_to_the_server_and_parses_as_locally(pair):
    far, near = pair
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
        "additionalProperties": False,
    }
    question = [{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}]
    a = far.chat(question, json_schema=schema, temperature=0, max_tokens=40)
    b = near.chat(question, json_schema=schema, temperature=0, max_tokens=40)
    assert a.text == b.text and isinstance(a.parsed, dict) and a.parsed == b.parsed and "city" in a.parsed


@pytest.mark.slow
def test_closing_a_stream_mid_way_frees_the_servers_sequence(pair, served):
    far, _ = pair
    server, _ = served
    deadline = time.monotonic() + 20  # an earlier test's request may still be finishing on the server
    while httpx.get(server.url + "/health").json()["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stream = far.chat_stream([{"role": "user", "content": "Count from one to one thousand."}], max_tokens=900)
    assert sum(1 for _, _ in zip(range(4), stream, strict=False)) == 4
    assert httpx.get(server.url + "/health").json()["active"] == 1
    stream.close()
    deadline = time.monotonic() + 20
    while (health := httpx.get(server.url + "/health").json())["active"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert health["active"] == 0, health


# --- against the fake: what is sent, what comes back ------------------------------------
def test_one_served_model_is_taken_without_a_fragment_and_its_context_read(fake):
    fake.models = [{"id": "qwen2.5-7b", "object": "model", "max_model_len": 32768}]
    with localllm.load(fake.url(None)) as llm:
        assert llm.info.name == "qwen2.5-7b" and llm.info.n_ctx == 32768
        assert llm.info.path == f"http://127.0.0.1:{fake.port}/v1#qwen2.5-7b"
        llm.chat(HI)
    assert fake.bodies[-1]["model"] == "qwen2.5-7b"


def test_several_models_without_a_fragment_are_listed_with_the_syntax(fake):
    fake.models = [{"id": "a"}, {"id": "b"}]
    with pytest.raises(InvalidOptionError) as err:
        localllm.load(fake.url(None))
    assert "/v1#a" in str(err.value) and "/v1#b" in str(err.value) and "serves 2 models" in str(err.value)


def test_an_unknown_served_model_is_refused_with_what_is_served(fake):
    fake.models = [{"id": "qwen2.5-7b"}, {"id": "llama-3.1-8b"}]
    with pytest.raises(ModelNotFoundError) as err:
        localllm.load(fake.url("qwen2.5-7"))
    assert "does not serve 'qwen2.5-7'" in str(err.value) and "did you mean 'qwen2.5-7b'" in str(err.value)
    assert err.value.suggestions[0] == "qwen2.5-7b"


def test_the_request_carries_the_local_options_and_defaults(fake, remote):
    fake.behaviour = lambda h, body: h.sse(text_events(["a", "b"], finish="length"))
    done = remote.generate("Once", temperature=0, max_tokens=7, seed=3, stop=["\n\n"], top_k=5)
    body = fake.bodies[-1]
    assert body["prompt"] == "Once" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["max_tokens"], body["seed"], body["stop"], body["top_k"]) == (
        0,
        7,
        3,
        ["\n\n"],
        5,
    )
    assert (done.text, done.finish_reason) == ("ab", "length")
    remote.chat(HI)  # a local model's defaults, and no field OpenAI's API lacks unless asked
    body = fake.bodies[-1]
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.8, 0.95, 512)
    assert not {"top_k", "min_p", "seed", "stop", "repeat_penalty"} & set(body)
    with pytest.raises(InvalidOptionError):  # checked as a local model checks it, before any request
        remote.chat(HI, temperature=-1)
    assert len(fake.bodies) == 2


def test_usage_and_finish_reasons_become_a_local_models(fake, remote):
    usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14}
    fake.behaviour = lambda h, body: h.sse(chat_events(["Hel", "lo", "!"], usage=usage), delay=0.01)
    done = remote.chat(HI)
    assert (done.text, done.finish_reason, done.prompt_tokens, done.completion_tokens) == ("Hello!", "eos", 11, 3)
    assert done.timings.decode_tokens == 3 and done.timings.decode_tps > 0 and done.timings.ttft_s > 0
    # with stop strings asked, OpenAI's "stop" is ambiguous: vLLM's stop_reason says which it was
    fake.behaviour = lambda h, body: h.sse(chat_events(["Hi"], stop_reason=None))
    assert remote.chat(HI, stop=["."]).finish_reason == "eos"
    fake.behaviour = lambda h, body: h.sse(chat_events(["Hi"], stop_reason="."))
    assert remote.chat(HI, stop=["."]).finish_reason == "stop"


def test_a_stop_string_the_server_ignores_still_stops_and_closes_the_connection(fake, remote):
    fake.behaviour = lambda h, body: h.sse(chat_events(["ab", "cST", "OP de", *["x"] * 200]), delay=0.01)
    done = remote.chat(HI, stop=["STOP"])
    assert (done.text, done.finish_reason) == ("abc", "stop")
    assert fake.left.wait(5) and fake.sent < 50


def test_tools_and_structured_output_pass_through_and_come_back_parsed(fake, remote):
    calls = [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"ci'}},
        {"index": 0, "function": {"arguments": 'ty": "Paris"}'}},
    ]
    events = [{"choices": [{"index": 0, "delta": {"tool_calls": [c]}}]} for c in calls]
    fake.behaviour = lambda h, body: h.sse(
        [*events, {"choices": [{"index": 0, "finish_reason": "tool_calls"}]}, "[DONE]"]
    )
    tool = {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
    done = remote.chat(HI, tools=[tool])
    assert done.finish_reason == "tool_calls" and done.tool_calls == (
        ToolCall("call_1", "get_weather", {"city": "Paris"}),
    )
    body = fake.bodies[-1]
    assert body["tools"] == [{"type": "function", "function": tool}] and body["parallel_tool_calls"] is False
    # the call goes back to the server as OpenAI writes it (arguments as JSON text)
    remote.chat([*HI, {"role": "assistant", "content": None, "tool_calls": list(done.tool_calls)}])
    sent = fake.bodies[-1]["messages"][1]["tool_calls"][0]
    assert sent["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}

    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "title": "Thing"}
    fake.behaviour = lambda h, body: h.sse(chat_events(['{"a"', ": 1}"]))
    done = remote.chat(HI, json_schema=schema)
    assert done.parsed == {"a": 1} and not done.incomplete
    assert fake.bodies[-1]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Thing", "schema": schema},
    }
    fake.behaviour = lambda h, body: h.sse(chat_events(['{"a"'], finish="length"))
    cut = remote.chat(HI, json_schema=schema)
    assert cut.incomplete and cut.parsed is None and cut.finish_reason == "length"


def test_what_needs_the_model_here_says_it_is_remote(remote):
    for call in (
        lambda: remote.tokenize("hi"),
        lambda: remote.count_tokens("hi"),
        lambda: remote.render_chat(HI),
        lambda: remote.generate_batch(["a", "b"]),
        lambda: remote.chat(HI, regex="[ab]"),
    ):
        with pytest.raises(RemoteUnsupportedError, match="remote") as err:
            call()
        assert isinstance(err.value, LocalLLMError)
    with pytest.raises(InvalidOptionError, match="threads=4"):
        localllm.load(remote.info.path.replace("http", "openai+http", 1), threads=4)
    remote.close()
    with pytest.raises(GenerationError, match="closed"):
        remote.chat(HI)


def test_the_api_key_is_sent_and_a_refusal_says_how_to_give_it(fake, monkeypatch):
    fake.models_status = 401
    with pytest.raises(ModelUnavailableError, match="HTTP 401.*LOCALLLM_REMOTE_API_KEY"):
        localllm.load(fake.url())
    fake.models_status = 200
    monkeypatch.setenv("LOCALLLM_REMOTE_API_KEY", "sekrit")
    with localllm.load(fake.url()) as llm:
        llm.chat(HI)
    assert fake.headers[-1]["Authorization"] == "Bearer sekrit"


def test_the_command_line_runs_a_prompt_on_the_server(fake, capsys):
    from localllm.cli import main

    fake.behaviour = lambda h, body: h.sse(chat_events(["Bonjour", " !"]))
    assert main(["run", fake.url(), "Say hi in French", "--temperature", "0"]) == 0
    out = capsys.readouterr()
    assert out.out == "Bonjour !\n" and "(remote" in out.err
    assert fake.bodies[-1]["messages"] == [{"role": "user", "content": "Say hi in French"}]


# --- against the fake: failures -------------------------------------------------------
def test_an_http_500_gives_the_status_the_url_and_the_servers_message(fake, remote):
    fake.behaviour = lambda h, body: h.json(500, {"error": {"message": "CUDA error: out of memory", "type": "x"}})
    with pytest.raises(RemoteError) as err:
        remote.chat(HI)
    assert err.value.status == 500 and isinstance(err.value, GenerationError)
    assert "/v1/chat/completions answered HTTP 500: CUDA error: out of memory" in str(err.value)


def test_http_400s_map_to_the_local_errors(fake, remote):
    too_long = {"error": {"message": "maximum context length is 2048", "code": "context_length_exceeded"}}
    fake.behaviour = lambda h, body: h.json(400, too_long)
    with pytest.raises(ContextOverflowError, match="2048"):
        remote.chat(HI, overflow="truncate")  # nothing can be cut here: the server's refusal comes back
    fake.behaviour = lambda h, body: h.json(400, {"error": {"message": "'n' is too big", "param": "n"}})
    with pytest.raises(InvalidOptionError) as err:
        remote.generate("x")
    assert err.value.option == "n"


@pytest.mark.parametrize(
    ("events", "raw", "said"),
    [
        (["data: {not json\n\n"], True, "malformed server-sent events (event 1 is not JSON"),
        (["hello there\n"], True, "malformed server-sent events (a line that is no event field"),
        (chat_events(["Hi"])[:2], False, "ended before its last event"),
        ([{"error": {"message": "the engine died"}}], False, "failed mid-stream: the engine died"),
    ],
)
def test_a_malformed_or_cut_stream_is_a_clear_error(fake, remote, events, raw, said):
    fake.behaviour = lambda h, body: h.sse(events, raw=raw)
    with pytest.raises(RemoteError, match=said.replace("(", r"\(")):
        remote.chat(HI)


def test_an_answer_that_is_not_a_stream_is_refused(fake, remote):
    fake.behaviour = lambda h, body: h.json(200, {"choices": [{"message": {"content": "Hi"}}]})
    with pytest.raises(RemoteError, match="not server-sent events"):
        remote.chat(HI)


def test_a_server_that_never_answers_times_out_quickly_and_says_so(fake):
    fake.behaviour = lambda h, body: h.hold()
    llm = open_remote(fake.url(), read_timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(RemoteError) as err:
        llm.chat(HI)
    assert time.monotonic() - t0 < 3
    assert err.value.timeout_s == 0.5 and "no data from the server for 0.5 s (read timeout)" in str(err.value)
    # a stream that goes silent after it began times out too
    fake.behaviour = lambda h, body: (h.sse(chat_events(["Hi"])[:2]), h.hold())
    with pytest.raises(RemoteError, match=r"0.5 s after 2 events \(read timeout\)"):
        llm.chat(HI)


def test_connection_refused_at_load_and_mid_life(fake):
    llm = localllm.load(fake.url())
    port = fake.port
    fake.stop()
    with pytest.raises(ModelUnavailableError) as err:
        localllm.load(fake.url())
    assert f"nothing listens at 127.0.0.1:{port} (connection refused" in str(err.value)
    with pytest.raises(RemoteError, match="connection refused"):
        llm.generate("hi")


# --- stopping a stream closes its connection -----------------------------------------
def _slow(h, body) -> None:
    h.sse(chat_events([f"{i} " for i in range(300)]), delay=0.02)


def test_closing_the_generator_closes_the_connection(fake, remote):
    fake.behaviour = _slow
    stream = remote.chat_stream(HI)
    assert [c.text for _, c in zip(range(3), stream, strict=False)] == ["0 ", "1 ", "2 "]
    stream.close()
    assert fake.left.wait(5) and fake.sent < 100


def test_a_stop_event_ends_the_stream_cancelled_and_closes_the_connection(fake, remote):
    fake.behaviour = _slow
    stop = threading.Event()
    chunks = []
    for chunk in remote.chat_stream(HI, stop_event=stop):
        chunks.append(chunk)
        if len(chunks) == 2:
            stop.set()
    assert chunks[-1].finish_reason == "cancelled" and len(chunks) == 3
    assert fake.left.wait(5)


def test_cancel_from_another_thread_ends_a_read_that_waits_on_a_silent_server(fake, remote):
    fake.behaviour = lambda h, body: (h.sse(chat_events(["Hi"])[:2]), h.hold())
    threading.Timer(0.3, remote.cancel).start()
    t0 = time.monotonic()
    done = remote.chat(HI)  # the read timeout is 300 s: only the cancel ends this
    assert (done.text, done.finish_reason) == ("Hi", "cancelled") and time.monotonic() - t0 < 3
    assert fake.left.wait(5)


def test_cancel_reaches_a_request_still_waiting_for_its_first_byte(fake, remote):
    fake.behaviour = lambda h, body: h.hold()  # a long prompt being read: no headers yet
    threading.Timer(0.3, remote.cancel).start()
    t0 = time.monotonic()
    done = remote.chat(HI)
    assert (done.text, done.finish_reason) == ("", "cancelled") and time.monotonic() - t0 < 3
    assert fake.left.wait(5)
