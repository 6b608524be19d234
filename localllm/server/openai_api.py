"""OpenAI's API: /v1/models, /v1/chat/completions and /v1/completions, streamed (server-sent
events ending `data: [DONE]`) or not, on the pool's models."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request  # at run time: FastAPI reads the routes' annotations

from localllm.errors import InvalidOptionError, ModelNotFoundError
from localllm.server.common import Run, field_of, is_tick, read_json, start_runs, usage

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from localllm.server.app import ServerState

__all__ = ["add_routes", "sampling_options"]

# OpenAI's finish reasons: an end-of-generation token and a stop string are both "stop"
FINISH = {
    "stop": "stop",
    "eos": "stop",
    "length": "length",
    "cancelled": "stop",
    "error": "error",
    "tool_calls": "tool_calls",
}
MAX_N = 16  # choices per request: each is one more sequence of the batch
# fields taken and ignored, as llama-server does: they change nothing here yet
IGNORED = ("user", "logit_bias", "frequency_penalty", "presence_penalty", "store", "metadata")
# fields that would change the answer and are not supported: refused, not silently dropped
UNSUPPORTED = ("logprobs", "top_logprobs", "echo", "suffix", "best_of", "functions", "function_call")


def sampling_options(data: dict[str, Any]) -> dict[str, Any]:
    """localllm sampling options from an OpenAI request body."""
    for name in UNSUPPORTED:
        value = data.get(name)
        if value not in (None, False, [], 0) or (name == "logprobs" and value is True):
            raise InvalidOptionError(
                f"'{name}' is not supported by this server yet; leave it out",
                option=name,
                value=value,
                allowed="absent",
            )
    options: dict[str, Any] = {}
    schema = response_schema(data.get("response_format"))
    if schema is not None:
        options["json_schema"] = schema
    if data.get("temperature") is not None:
        options["temperature"] = field_of(data, "temperature", (int, float))
    if data.get("top_p") is not None:
        options["top_p"] = field_of(data, "top_p", (int, float))
    if data.get("seed") is not None:
        options["seed"] = field_of(data, "seed", int)
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    if max_tokens is not None:
        options["max_tokens"] = field_of({"max_tokens": max_tokens}, "max_tokens", int)
    else:
        options["max_tokens"] = None  # to the end of the context, as OpenAI does
    stop = data.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidOptionError(
                f"'stop' must be a string or a list of strings, got {stop!r:.60}",
                option="stop",
                value=stop,
                allowed="a string or a list of up to 4 strings",
            )
        options["stop"] = stop
    return options


def response_schema(rf: object) -> dict[str, Any] | None:
    """The JSON schema an OpenAI `response_format` asks for: None for text, any object for
    "json_object" (JSON mode), the given schema for "json_schema" (strict or not: the grammar
    always holds the output to it)."""
    if rf is None or (isinstance(rf, dict) and rf.get("type") == "text"):
        return None
    allowed = "{'type': 'text'}, {'type': 'json_object'} or {'type': 'json_schema', 'json_schema': {'name', 'schema'}}"
    if isinstance(rf, dict) and rf.get("type") == "json_object":
        return {"type": "object"}
    if isinstance(rf, dict) and rf.get("type") == "json_schema" and isinstance(rf.get("json_schema"), dict):
        schema = rf["json_schema"].get("schema", {"type": "object"})
        if isinstance(schema, dict):
            return schema
    raise InvalidOptionError(
        f"'response_format' must be {allowed}, got {rf!r:.120}", option="response_format", value=rf, allowed=allowed
    )


def _n(data: dict[str, Any]) -> int:
    n = field_of(data, "n", int, 1)
    if not 1 <= n <= MAX_N:
        raise InvalidOptionError(f"'n' must be 1 to {MAX_N}, got {n}", option="n", value=n, allowed=f"1 to {MAX_N}")
    return int(n)


def tool_options(data: dict[str, Any]) -> dict[str, Any]:
    """prepare_item's tools, tool_choice and parallel_tool_calls from a chat request. A client that
    does not say gets one call per reply (llama.cpp's server default): OpenAI's own default, parallel
    calls, makes small models repeat a call until max_tokens."""
    if data.get("tools") in (None, []):
        return {} if data.get("tool_choice") in (None, "none", "auto") else {"tool_choice": data["tool_choice"]}
    return {
        "tools": field_of(data, "tools", list),
        "tool_choice": data.get("tool_choice"),
        "parallel_tool_calls": bool(field_of(data, "parallel_tool_calls", bool, False)),
    }


def _items(
    served: Any, what: str | list[dict[str, Any]], n: int, options: dict[str, Any], tools: dict[str, Any]
) -> list[Any]:
    """n items for one input: the seeds differ (seed, seed+1, ...) so n > 1 gives n answers."""
    items = []
    for i in range(n):
        opts = dict(options)
        if n > 1 and opts.get("seed") is not None:
            opts["seed"] = (opts["seed"] + i) % 2**32
        item, _ = served.model.prepare_item(what, **tools, **opts)
        items.append(item)
    return items


def _messages(data: dict[str, Any]) -> list[dict[str, Any]]:
    messages = field_of(data, "messages", list)
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidOptionError(
                f"messages[{i}] must be an object with a 'role' and a 'content', got {m!r:.60}",
                option="messages",
                value=m,
                allowed="{'role': ..., 'content': ...}",
            )
        content = m.get("content")
        if isinstance(content, list):  # content parts: only text is understood
            texts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise InvalidOptionError(
                        f"messages[{i}] has a content part this server cannot read ({part!r:.60}); "
                        "only text parts are supported",
                        option="messages",
                        value=part,
                        allowed="{'type': 'text', 'text': ...}",
                    )
                texts.append(part["text"])
            content = "".join(texts)
        message = {"role": m["role"], "content": "" if content is None else content}
        for key in ("tool_calls", "tool_call_id", "name"):  # earlier calls and their results
            if m.get(key) is not None:
                message[key] = m[key]
        out.append(message)
    return out


def add_routes(app: FastAPI, state: ServerState) -> None:
    from fastapi.responses import JSONResponse, StreamingResponse

    @app.get("/v1/models")
    async def list_models() -> Any:
        return {"object": "list", "data": [_model_card(name, state) for name in state.model_names()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str) -> Any:
        if name not in state.model_names():
            raise ModelNotFoundError(f"model {name!r} is not loaded or listed here; GET /v1/models lists them")
        return _model_card(name, state)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        data = await read_json(request, state.max_body)
        return await _complete(request, data, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        data = await read_json(request, state.max_body)
        return await _complete(request, data, chat=False)

    async def _complete(request: Request, data: dict[str, Any], *, chat: bool) -> Any:
        name = field_of(data, "model", str)
        options = sampling_options(data)
        n = _n(data)
        stream = bool(field_of(data, "stream", bool, False))
        include_usage = bool((data.get("stream_options") or {}).get("include_usage")) if stream else False
        tools: dict[str, Any] = {}
        if chat:
            inputs: list[Any] = [_messages(data)]
            tools = tool_options(data)
        else:
            prompt = data.get("prompt")
            inputs = prompt if isinstance(prompt, list) else [field_of(data, "prompt", str)]
            if not inputs or not all(isinstance(p, str) for p in inputs):
                raise InvalidOptionError(
                    "'prompt' must be a string or a list of strings (token ids are not supported)",
                    option="prompt",
                    value=prompt,
                    allowed="a string or a list of strings",
                )
        served = await state.pool.get(name)
        items = [it for what in inputs for it in _items(served, what, n, options, tools)]
        runs = start_runs(served, items)
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        created = int(time.time())
        deadline = asyncio.get_running_loop().time() + state.timeout_s
        if stream:
            body = _stream(
                request, runs, rid, created, name, chat=chat, include_usage=include_usage, deadline=deadline, n=n
            )
            return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            await _wait_all(request, runs, deadline)
        finally:
            for run in runs:
                run.stop()
        choices = [_choice(i, run, chat=chat) for i, run in enumerate(runs)]
        obj = "chat.completion" if chat else "text_completion"
        return JSONResponse(
            {"id": rid, "object": obj, "created": created, "model": name, "choices": choices, "usage": usage(runs, n)}
        )


def _model_card(name: str, state: ServerState) -> dict[str, Any]:
    served = state.pool.models.get(name)
    created = int(served.loaded_at) if served is not None else 0
    return {"id": name, "object": "model", "created": created, "owned_by": "localllm"}


def _choice(i: int, run: Run, *, chat: bool) -> dict[str, Any]:
    text = "".join(run.text)
    finish = FINISH.get(run.finish or "stop", "stop")
    if chat:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if run.tool_calls:
            message["tool_calls"] = [c.to_openai() for c in run.tool_calls]
            message["content"] = text or None  # OpenAI: no content beside calls is null
        return {"index": i, "message": message, "finish_reason": finish, "logprobs": None}
    return {"index": i, "text": text, "finish_reason": finish, "logprobs": None}


async def _wait_all(request: Request, runs: list[Run], deadline: float) -> None:
    """Every run to its end; a client that went away cancels them all."""

    async def one(run: Run) -> None:
        async for chunk in run.chunks(deadline):
            if is_tick(chunk) and await request.is_disconnected():
                for r in runs:
                    r.stop()
                return

    await asyncio.gather(*(one(run) for run in runs))


async def _stream(
    request: Request,
    runs: list[Run],
    rid: str,
    created: int,
    model: str,
    *,
    chat: bool,
    include_usage: bool,
    deadline: float,
    n: int = 1,
) -> AsyncIterator[str]:
    """Server-sent events: the choices' chunks interleaved as they come, then usage, then [DONE].
    Leaving early (the client went away) cancels every choice."""
    obj = "chat.completion.chunk" if chat else "text_completion"
    merged: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(i: int, run: Run) -> None:
        try:
            async for chunk in run.chunks(deadline):
                if not is_tick(chunk):
                    await merged.put((i, chunk))
        except Exception as exc:
            await merged.put((i, exc))
        await merged.put((i, None))

    def event(choice: dict[str, Any], **extra: Any) -> str:
        payload = {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], **extra}
        if include_usage:
            payload.setdefault("usage", None)
        return f"data: {json.dumps(payload)}\n\n"

    tasks = [asyncio.create_task(pump(i, run)) for i, run in enumerate(runs)]
    try:
        if chat:
            for i in range(len(runs)):
                yield event({"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None})
        left = len(runs)
        while left:
            i, chunk = await merged.get()
            if chunk is None:
                left -= 1
                continue
            if isinstance(chunk, Exception):
                from localllm.server.app import openai_error

                yield f"data: {json.dumps(openai_error(chunk)[1])}\n\n"
                continue
            finish = FINISH.get(chunk.finish_reason) if chunk.finish_reason else None
            if chat and chunk.tool_calls:  # the calls, whole, in one delta before the finish
                calls = [{"index": k, **c.to_openai()} for k, c in enumerate(chunk.tool_calls)]
                if chunk.text:
                    yield event({"index": i, "delta": {"content": chunk.text}, "finish_reason": None})
                yield event({"index": i, "delta": {"tool_calls": calls}, "finish_reason": None})
                yield event({"index": i, "delta": {}, "finish_reason": finish, "logprobs": None})
                continue
            if chunk.text or finish:
                if chat:
                    delta = {"content": chunk.text} if chunk.text else {}
                    yield event({"index": i, "delta": delta, "finish_reason": finish, "logprobs": None})
                else:
                    yield event({"index": i, "text": chunk.text, "finish_reason": finish, "logprobs": None})
        if include_usage:
            payload = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [],
                "usage": usage(runs, n),
            }
            yield f"data: {json.dumps(payload)}\n\n"
        yield "data: [DONE]\n\n"
    finally:
        for run in runs:
            run.stop()
        for task in tasks:
            task.cancel()
