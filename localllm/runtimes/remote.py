"""A model on another machine, behind the same Model API: an OpenAI-compatible server (vLLM,
llama.cpp's llama-server, another `localllm serve`) used as a remote runtime.

    import localllm
    with localllm.load("openai+http://10.0.0.2:8000/v1#qwen2.5-7b") as llm:
        print(llm.chat([{"role": "user", "content": "Hi"}], temperature=0).text)

The URL is the server's API base with `openai+` in front; the fragment names the served model
(`load`'s first parameter is the model, so the name rides in the URL). Without a fragment
GET /v1/models is asked: one model is used, several are an error that lists them. Requests go
to /v1/completions (`generate`, `stream`) and /v1/chat/completions (`chat`, `chat_stream`),
always streamed; the server applies its own chat template. Stop strings are sent and also
applied here, so a server that ignores some still stops. Structured output (json_schema=) and
tools go as `response_format` and `tools`: the server enforces them, or not; nothing is faked.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeGuard

from localllm.errors import InvalidOptionError, ModelNotFoundError, ModelUnavailableError
from localllm.generation import Chunk, Completion, PromptProgress, join
from localllm.model import Model, ModelInfo, check_prompt
from localllm.model_chat import OVERFLOW_MODES
from localllm.placement import Placement
from localllm.runtimes.remote_http import (
    API_KEY_ENV,
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_READ_TIMEOUT_S,
    Endpoint,
    RemoteError,
    RemoteUnsupportedError,
    Response,
)
from localllm.runtimes.remote_protocol import Reader, Request, openai_messages

__all__ = ["REMOTE_SCHEMES", "RemoteError", "RemoteModel", "RemoteUnsupportedError", "is_remote", "open_remote"]

REMOTE_SCHEMES = ("openai+http://", "openai+https://")
# load() options that shape a model run here; a remote one takes none of them (the server has its own)
_LOCAL_ONLY = ("context", "runtime", "hardware", "threads", "parallel", "workers")


def is_remote(model: object) -> TypeGuard[str]:
    """Whether `load(model)` names a server elsewhere (openai+http:// or openai+https://)."""
    return isinstance(model, str) and model.lower().startswith(REMOTE_SCHEMES)


def open_remote(
    url: str,
    *,
    api_key: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
    read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    **load_options: Any,
) -> RemoteModel:
    """The model a server serves, as `load(url)` gives it.

    Args:
        url: "openai+http://HOST:PORT/v1#SERVED_MODEL" (or openai+https://). No fragment: the one
            model GET /v1/models lists.
        api_key: sent as "Authorization: Bearer KEY" (default: LOCALLLM_REMOTE_API_KEY).
        connect_timeout: seconds to open a connection. read_timeout: the longest silence
            allowed while waiting for an answer or the next event.
        **load_options: `load()`'s other options: those that shape a local run (context,
            runtime, threads, parallel, hardware, workers) are refused; the rest (offline,
            progress, force, workload: about downloads and local plans) are ignored.

    Raises:
        ModelUnavailableError: the server cannot be reached, times out, or answers an error.
        ModelNotFoundError: the fragment names a model the server does not list.
        InvalidOptionError: a malformed URL; several models and no fragment; a local-only option.
    """
    for name, value in load_options.items():
        if name in _LOCAL_ONLY and value not in (None, False, (), []):
            raise InvalidOptionError(
                f"{name}={value!r} shapes a model run on this machine; {url} runs on the server with its own "
                "settings: leave it out (set it on the server)",
                option=name,
                value=value,
                allowed="None for a remote model",
            )
    endpoint, wanted = _parse_url(url, api_key, connect_timeout, read_timeout)
    t0 = time.perf_counter()
    cards = _list_models(endpoint)
    ids = [str(c.get("id")) for c in cards]
    if wanted is None:
        if len(ids) != 1:
            listed = ", ".join(f"{endpoint.url}#{i}" for i in ids) or "none"
            raise InvalidOptionError(
                f"{endpoint.url} serves {len(ids)} models, so the URL must name one after '#': {listed}",
                option="model",
                value=url,
                allowed="openai+URL#SERVED_MODEL",
            )
        wanted = ids[0]
    elif wanted not in ids:
        import difflib

        near = tuple(difflib.get_close_matches(wanted, ids, n=3, cutoff=0.4))
        raise ModelNotFoundError(
            f"{endpoint.url} does not serve {wanted!r}; it lists {', '.join(map(repr, ids)) or 'none'}"
            + (f" (did you mean {near[0]!r}?)" if near else "")
            + "; name one after '#' (a localllm serve lists the models it holds: preload it there)",
            name=wanted,
            suggestions=near or tuple(ids),
        )
    card = cards[ids.index(wanted)]
    return RemoteModel(endpoint, wanted, card=card, load_seconds=time.perf_counter() - t0)


def _parse_url(
    url: str, api_key: str | None, connect_timeout: float, read_timeout: float
) -> tuple[Endpoint, str | None]:
    def bad(why: str) -> InvalidOptionError:
        return InvalidOptionError(
            f"{url!r} is not a remote model URL ({why}); write openai+http://HOST:PORT/v1#SERVED_MODEL",
            option="model",
            value=url,
            allowed="openai+http(s)://HOST[:PORT]/PATH[#SERVED_MODEL]",
        )

    if not is_remote(url):
        raise bad("it must start with openai+http:// or openai+https://")
    for name, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 < value < float("inf"):
            raise InvalidOptionError(
                f"{name} must be a number of seconds > 0, got {value!r}", option=name, value=value, allowed="> 0"
            )
    parts = urllib.parse.urlsplit(url[len("openai+") :])
    try:
        port = parts.port
    except ValueError:
        raise bad("the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise bad("no host")
    if parts.username or parts.password:
        raise bad(f"credentials in a URL end up in logs; give the key in {API_KEY_ENV} instead")
    if parts.query:
        raise bad("a query string")
    scheme = parts.scheme.lower()
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    endpoint = Endpoint(
        scheme=scheme,
        host=parts.hostname,
        port=port or (443 if scheme == "https" else 80),
        base=parts.path.rstrip("/"),
        connect_timeout=float(connect_timeout),
        read_timeout=float(read_timeout),
        api_key=key,
    )
    return endpoint, urllib.parse.unquote(parts.fragment) or None


def _list_models(endpoint: Endpoint) -> list[dict[str, Any]]:
    resp = endpoint.request("GET", "/models", at_load=True)
    try:
        body = resp.json()
    finally:
        resp.close()
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list) or not all(isinstance(c, dict) and isinstance(c.get("id"), str) for c in data):
        raise ModelUnavailableError(
            f"GET {endpoint.url}/models did not answer OpenAI's model list ({json.dumps(body)[:160]}); "
            "the URL should be the server's API base, ending in /v1",
            url=endpoint.url + "/models",
        )
    return data


class RemoteModel(Model):
    """A model served by another machine; `localllm.load("openai+http://...")` makes it.

    generate, stream, chat and chat_stream take the options and give the Chunks and Completions
    of a local Model (no token ids: the text comes as text; token counts and the prompt's are the
    server's `usage`; ttft, decode rate and total time are measured here, network included).
    Concurrent calls run at once: the server batches them. `info.runtime` is "remote",
    `info.path` the URL, `info.n_ctx` the server's context when its model list says it (vLLM's
    max_model_len), else 0 (unknown); `plan` is None. What needs the model here (tokenize,
    count_tokens, render_chat, fit_chat, regex/choices/grammar, the batch methods) raises
    RemoteUnsupportedError. overflow="truncate" sends the conversation whole: without the
    tokenizer nothing can be cut here, so a server that cannot fit it says so
    (ContextOverflowError). on_prompt_progress is never called: the API does not report it.
    """

    def __init__(self, endpoint: Endpoint, served: str, *, card: Mapping[str, Any], load_seconds: float) -> None:
        # Model.__init__ is not called: there is no engine, chat template or lock here
        self._endpoint = endpoint
        self._served = served
        self._closing = self._closed = False
        self._streams: set[Response] = set()
        self._streams_lock = threading.Lock()
        n_ctx = card.get("max_model_len") or card.get("context_length") or 0
        n_ctx = n_ctx if isinstance(n_ctx, int) and not isinstance(n_ctx, bool) else 0
        self.plan = None
        self.info = ModelInfo(
            name=served,
            path=f"{endpoint.url}#{served}",
            runtime="remote",
            placement=Placement(n_ctx=n_ctx, n_threads=0),  # nothing runs on this machine
            n_ctx=n_ctx,
            template_source="server",
            template_note="the server applies its own chat template",
            load_seconds=load_seconds,
            metadata=dict(card),
        )

    # any Model method that needs the engine, inherited or added later, says why it cannot run
    @property
    def _engine(self) -> Any:  # type: ignore[override]  # read-only on purpose: there is no engine to set
        raise RemoteUnsupportedError(f"{self.info.path} is a remote model: this needs the model on this machine")

    # --- text in, text out -----------------------------------------------------------
    def generate(
        self,
        prompt: str,
        *,
        stop_event: threading.Event | None = None,
        on_prompt_progress: PromptProgress | None = None,
        **options: Any,
    ) -> Completion:
        """Complete `prompt` on the server; the join of `stream` (Model.generate's arguments;
        on_prompt_progress is never called: OpenAI's API does not report it)."""
        return _join(self.stream(prompt, stop_event=stop_event, **options))

    def stream(
        self,
        prompt: str,
        *,
        stop_event: threading.Event | None = None,
        on_prompt_progress: PromptProgress | None = None,
        **options: Any,
    ) -> Iterator[Chunk]:
        """As Model.stream: options are checked now, the request is sent at the first `next()`."""
        check_prompt(prompt)
        self._require_open()
        req = Request.of(options)
        body = {"model": self._served, "prompt": prompt, **req.fields}
        return self._run_remote("/completions", body, req, stop_event, chat=False)

    def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        overflow: str = "error",
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = False,
        stop_event: threading.Event | None = None,
        on_prompt_progress: PromptProgress | None = None,
        **options: Any,
    ) -> Completion:
        """Reply to a conversation on the server; the join of `chat_stream` (Model.chat's arguments)."""
        return _join(
            self.chat_stream(
                messages,
                overflow=overflow,
                tools=tools,
                tool_choice=tool_choice,
                parallel_tool_calls=parallel_tool_calls,
                stop_event=stop_event,
                **options,
            )
        )

    def chat_stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        overflow: str = "error",
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = False,
        stop_event: threading.Event | None = None,
        on_prompt_progress: PromptProgress | None = None,
        **options: Any,
    ) -> Iterator[Chunk]:
        """As Model.chat_stream; tools go to the server as OpenAI's `tools`, its calls come back
        parsed in the last chunk's `tool_calls`."""
        if overflow not in OVERFLOW_MODES:
            allowed = "one of " + ", ".join(map(repr, OVERFLOW_MODES))
            raise InvalidOptionError(
                f"overflow must be {allowed}, got {overflow!r}", option="overflow", value=overflow, allowed=allowed
            )
        self._require_open()
        req = Request.of(options)
        body: dict[str, Any] = {"model": self._served, "messages": openai_messages(messages), **req.fields}
        if tools is not None or tool_choice is not None:
            from localllm.tools import check_tool_choice, check_tools

            checked = check_tools(tools)
            check_tool_choice(tool_choice, checked)
            if req.schema is not None and checked:
                raise InvalidOptionError(
                    "tools and json_schema were both given; a reply takes one: use tools, or structured output",
                    option="tools",
                    value=tools,
                    allowed="tools or json_schema, not both",
                )
            if checked:
                body.update(tools=list(checked), parallel_tool_calls=bool(parallel_tool_calls))
            if tool_choice is not None:
                body["tool_choice"] = tool_choice
        return self._run_remote("/chat/completions", body, req, stop_event, chat=True)

    # --- what needs the model here ---------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        raise self._unsupported("tokenize", "its vocabulary")

    def count_tokens(self, text: Any) -> int:
        raise self._unsupported("count_tokens", "its vocabulary (Completion.prompt_tokens has the server's count)")

    def render_chat(self, messages: Any, **kwargs: Any) -> str:
        raise self._unsupported("render_chat", "its chat template (the server applies it)")

    def fit_chat(self, messages: Any, **kwargs: Any) -> tuple[int, int]:
        raise self._unsupported("fit_chat", "its vocabulary")

    def generate_batch(self, prompts: Any, **kwargs: Any) -> list[Completion]:
        raise self._unsupported("generate_batch", "local batch scheduling", threads=True)

    def chat_batch(self, conversations: Any, **kwargs: Any) -> list[Completion]:
        raise self._unsupported("chat_batch", "local batch scheduling", threads=True)

    def stream_batch(self, inputs: Any, **kwargs: Any) -> Iterator[tuple[int, Chunk]]:
        raise self._unsupported("stream_batch", "local batch scheduling", threads=True)

    def prepare_item(self, prompt_or_messages: Any, **kwargs: Any) -> Any:
        raise self._unsupported("prepare_item", "local batch scheduling", threads=True)

    def run_feed(self, feed: Any, **kwargs: Any) -> Iterator[tuple[int, Chunk]]:
        raise self._unsupported("run_feed", "local batch scheduling", threads=True)

    def _unsupported(self, what: str, needs: str, *, threads: bool = False) -> RemoteUnsupportedError:
        fix = "; call generate or chat from several threads instead: the server batches them" if threads else ""
        return RemoteUnsupportedError(f"{what}() needs {needs} on this machine, and {self.info.path} is remote{fix}")

    # --- control ---------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop every generation running now: each ends "cancelled" and its connection is closed."""
        with self._streams_lock:
            running = list(self._streams)
        for resp in running:
            resp.abort()

    def close(self) -> None:
        """Stop the running generations (closing their connections) and refuse new ones. Idempotent."""
        self._closing = True
        self.cancel()
        self._closed = True

    def __repr__(self) -> str:
        return f"<RemoteModel {self.info.path!r}{' closed' if self._closed else ''}>"

    # --- internals -------------------------------------------------------------------
    def _run_remote(
        self, path: str, body: dict[str, Any], req: Request, stop_event: threading.Event | None, *, chat: bool
    ) -> Iterator[Chunk]:
        body.update(stream=True, stream_options={"include_usage": True})
        if req.schema is not None:
            body["response_format"] = req.response_format()
        self._require_open()
        t_start = time.perf_counter()
        opened: list[Response] = []

        def track(resp: Response) -> None:  # before it connects: cancel() and close() can reach it
            opened.append(resp)
            with self._streams_lock:
                self._streams.add(resp)
            if self._closing:  # closed meanwhile
                resp.abort()

        try:
            resp = self._endpoint.request("POST", path, body, on_open=track)
        except BaseException:
            self._untrack(opened)
            raise
        try:
            reader = Reader(req, chat, t_start, self.info.load_seconds)
            if resp.aborted.is_set():  # cancelled before the answer began
                yield reader.last("", "cancelled")
                return
            if resp.content_type != "text/event-stream":
                raise RemoteError(
                    f"POST {resp.url} answered {resp.content_type or 'no content type'}, not server-sent events "
                    "(text/event-stream), to a request with stream: true; the server does not stream",
                    url=resp.url,
                )
            for event in resp.events():
                if stop_event is not None and stop_event.is_set():
                    resp.abort()
                if resp.aborted.is_set():
                    break
                if event is None:  # [DONE]
                    reader.done = True
                    break
                piece, stopped = reader.feed(event, resp.url)
                if stopped:
                    yield reader.last(piece, "stop")
                    return
                if piece:
                    yield Chunk(piece)
            if resp.aborted.is_set() or (stop_event is not None and stop_event.is_set()):
                yield reader.last(reader.stopper.flush(), "cancelled")
            elif reader.finish is None:
                raise RemoteError(
                    f"POST {resp.url}: the stream ended before its last event (no finish_reason, "
                    f"{reader.n_events} events); the server may have crashed, or a proxy cut the connection",
                    url=resp.url,
                )
            else:
                yield reader.last(reader.stopper.flush(), reader.finish)
        finally:
            self._untrack(opened)  # and closed: the server sees the client leave and stops generating

    def _untrack(self, opened: list[Response]) -> None:
        for resp in opened:
            with self._streams_lock:
                self._streams.discard(resp)
            resp.close()


def _join(chunks: Iterator[Chunk]) -> Completion:
    """join(), with the server's token count: remote chunks carry text, not token ids."""
    done = join(chunks)
    return replace(done, completion_tokens=done.timings.decode_tokens)
