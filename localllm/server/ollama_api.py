"""The subset of Ollama's API that its clients need: /api/chat, /api/generate (NDJSON streams,
on by default as in Ollama), /api/tags, /api/ps, /api/show and /api/version."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from starlette.requests import Request  # at run time: FastAPI reads the routes' annotations

from localllm import __version__
from localllm.errors import InvalidOptionError, ModelNotFoundError
from localllm.server.common import Run, field_of, is_tick, read_json, start_runs
from localllm.server.pool import describe, parse_keep_alive

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from localllm.server.app import ServerState

__all__ = ["add_routes", "ollama_options"]

# Ollama option -> localllm sampling option
OPTION_NAMES = {
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "seed": "seed",
    "num_predict": "max_tokens",
    "stop": "stop",
}
# load-time options a request may carry: the pool's settings decide them here
IGNORED_OPTIONS = ("num_ctx", "num_thread", "num_gpu", "num_batch", "use_mmap", "use_mlock", "numa", "num_keep")
DONE_REASON = {"stop": "stop", "eos": "stop", "length": "length", "cancelled": "stop", "error": "error"}


def ollama_options(options: object) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise InvalidOptionError(
            f"'options' must be an object, got {type(options).__name__}", option="options", value=options, allowed="{}"
        )
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in IGNORED_OPTIONS:
            continue
        if key not in OPTION_NAMES:
            raise InvalidOptionError(
                f"option {key!r} is not supported by this server; supported: {', '.join(OPTION_NAMES)}",
                option=key,
                value=value,
                allowed=", ".join(OPTION_NAMES),
            )
        if key == "num_predict" and isinstance(value, int) and value < 0:
            value = None  # Ollama's -1: until the end
        out[OPTION_NAMES[key]] = value
    return out


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _final(run: Run, model: str, served: Any, extra: dict[str, Any]) -> dict[str, Any]:
    t = run.timings
    prompt_s = t.ttft_s if t is not None else 0.0
    total = t.total_s if t is not None else 0.0
    return {
        "model": model,
        "created_at": _now(),
        **extra,
        "done": True,
        "done_reason": DONE_REASON.get(run.finish or "stop", "stop"),
        "total_duration": _ns(total),
        "load_duration": _ns(served.model.info.load_seconds),
        "prompt_eval_count": t.prompt_tokens if t is not None else 0,
        "prompt_eval_duration": _ns(prompt_s),
        "eval_count": run.n_tokens,
        "eval_duration": _ns(max(0.0, total - prompt_s)),
    }


def _details(served: Any) -> dict[str, Any]:
    meta = served.model.info.metadata if served is not None else {}
    return {
        "parent_model": "",
        "format": "gguf" if served is None or served.model.info.runtime == "llama.cpp" else "onnx",
        "family": str(meta.get("architecture") or ""),
        "families": [str(meta.get("architecture") or "")],
        "parameter_size": "",
        "quantization_level": "",
    }


def add_routes(app: FastAPI, state: ServerState) -> None:
    from fastapi.responses import JSONResponse, StreamingResponse

    @app.get("/api/version")
    async def version() -> Any:
        return {"version": __version__}

    @app.get("/api/tags")
    async def tags() -> Any:
        models = []
        for name in state.model_names():
            served = state.pool.models.get(name)
            models.append(
                {
                    "name": name,
                    "model": name,
                    "modified_at": _now(),
                    "size": served.needed if served is not None else 0,
                    "digest": "",
                    "details": _details(served),
                }
            )
        return {"models": models}

    @app.get("/api/ps")
    async def ps() -> Any:
        models = []
        for name, served in list(state.pool.models.items()):
            d = describe(served)
            expires = datetime.now(timezone.utc).timestamp() + max(0.0, min(d["expires_at"] - time.monotonic(), 10**9))
            models.append(
                {
                    "name": name,
                    "model": name,
                    "size": d["size"],
                    "digest": "",
                    "details": _details(served),
                    "expires_at": datetime.fromtimestamp(expires, timezone.utc).isoformat().replace("+00:00", "Z"),
                    "size_vram": 0,
                    "context_length": d["n_ctx"],
                }
            )
        return {"models": models}

    @app.post("/api/show")
    async def show(request: Request) -> Any:
        data = await read_json(request, state.max_body)
        name = data.get("model") or field_of(data, "name", str)
        served = state.pool.models.get(name)
        if served is None:
            if name not in state.model_names():
                raise ModelNotFoundError(f"model {name!r} is not loaded here; /api/tags lists the models")
            served = await state.pool.get(name)
        info = served.model.info
        return {
            "modelfile": f"FROM {info.path}\n",
            "parameters": "",
            "template": str(getattr(served.model._engine, "chat_template", None) or ""),
            "details": _details(served),
            "model_info": {str(k): v for k, v in info.metadata.items() if isinstance(v, (str, int, float, bool))},
            "capabilities": ["completion", "tools"],
        }

    @app.post("/api/chat")
    async def chat(request: Request) -> Any:
        data = await read_json(request, state.max_body)
        return await _run(request, data, chat=True)

    @app.post("/api/generate")
    async def generate(request: Request) -> Any:
        data = await read_json(request, state.max_body)
        return await _run(request, data, chat=False)

    async def _run(request: Request, data: dict[str, Any], *, chat: bool) -> Any:
        name = field_of(data, "model", str)
        options = ollama_options(data.get("options"))
        schema = _format_schema(data.get("format"))
        if schema is not None:
            options["json_schema"] = schema
        keep_alive = parse_keep_alive(data.get("keep_alive"), state.pool.config.keep_alive_s)
        stream = bool(field_of(data, "stream", bool, True))
        if chat:
            messages = field_of(data, "messages", list)
            what: Any = [_message(m) for m in messages]
            if not what:  # Ollama: an empty chat loads (or, keep_alive 0, unloads) the model
                return await _load_only(name, keep_alive, {"message": {"role": "assistant", "content": ""}})
        else:
            prompt = field_of(data, "prompt", str, "")
            if not prompt:
                return await _load_only(name, keep_alive, {"response": ""})
            raw = bool(field_of(data, "raw", bool, False))
            system = field_of(data, "system", str, "")
            what = prompt if raw else [*([{"role": "system", "content": system}] if system else []), _user(prompt)]
        if chat and data.get("tools"):  # Ollama calls when the model chooses to ("auto"); tool_choice is ours
            options.update(tools=field_of(data, "tools", list), tool_choice=data.get("tool_choice", "auto"))
        served = await state.pool.get(name, keep_alive)
        item, _ = served.model.prepare_item(what, **options)
        (run,) = start_runs(served, [item])
        deadline = asyncio.get_running_loop().time() + state.timeout_s

        def piece(text: str) -> dict[str, Any]:
            return {"message": {"role": "assistant", "content": text}} if chat else {"response": text}

        if stream:
            return StreamingResponse(_ndjson(run, name, served, piece, deadline), media_type="application/x-ndjson")
        try:
            async for chunk in run.chunks(deadline):
                if is_tick(chunk) and await request.is_disconnected():
                    run.stop()
                    break
        finally:
            run.stop()
        done = piece("".join(run.text))
        if run.tool_calls:
            done["message"]["tool_calls"] = _calls(run.tool_calls)
        return JSONResponse(_final(run, name, served, done))

    async def _load_only(name: str, keep_alive: float, extra: dict[str, Any]) -> Any:
        if keep_alive == 0:
            await asyncio.to_thread(state.pool.unload, name)
            reason = "unload"
        else:
            await state.pool.get(name, keep_alive)
            reason = "load"
        return {"model": name, "created_at": _now(), **extra, "done": True, "done_reason": reason}


def _format_schema(fmt: object) -> dict[str, Any] | None:
    """Ollama's `format`: "json" is any JSON object (as Ollama's JSON grammar), a dict is a schema."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "object"}
    if isinstance(fmt, dict):
        return fmt
    raise InvalidOptionError(
        f"'format' must be \"json\" or a JSON schema (an object), got {fmt!r:.80}",
        option="format",
        value=fmt,
        allowed='"json" or a JSON schema',
    )


def _message(m: Any) -> Any:
    """An Ollama chat message as Model.chat takes it: calls as OpenAI writes them, a tool result's
    `tool_name` as its `name`."""
    if not isinstance(m, dict):
        return m  # prepare_item says what is wrong with it
    out = {"role": m.get("role"), "content": m.get("content") or ""}
    if isinstance(m.get("tool_calls"), list):
        out["tool_calls"] = [
            {"type": "function", "function": c.get("function", c)} if isinstance(c, dict) else c
            for c in m["tool_calls"]
        ]
    if m.get("tool_name") or m.get("name"):
        out["name"] = m.get("tool_name") or m.get("name")
    return out


def _calls(calls: Any) -> list[dict[str, Any]]:
    """ToolCalls as Ollama writes them: the arguments as an object."""
    return [{"function": {"name": c.name, "arguments": c.arguments}} for c in calls]


def _user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


async def _ndjson(run: Run, model: str, served: Any, piece: Any, deadline: float) -> AsyncIterator[str]:
    try:
        async for chunk in run.chunks(deadline):
            if not is_tick(chunk) and chunk.text:
                yield json.dumps({"model": model, "created_at": _now(), **piece(chunk.text), "done": False}) + "\n"
            if not is_tick(chunk) and chunk.tool_calls:  # the calls, whole, in one part before the last
                part = piece("")
                part["message"]["tool_calls"] = _calls(chunk.tool_calls)
                yield json.dumps({"model": model, "created_at": _now(), **part, "done": False}) + "\n"
        yield json.dumps(_final(run, model, served, piece(""))) + "\n"
    except Exception as exc:
        yield json.dumps({"error": str(exc)}) + "\n"
    finally:
        run.stop()
