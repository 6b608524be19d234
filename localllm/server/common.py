"""What the OpenAI and Ollama routes share: reading a bounded JSON body, checking fields,
running one request on a pool model and bridging its chunks from the worker thread to the
event loop, with cancel on disconnect or timeout.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from localllm.errors import GenerationError, InvalidOptionError, InvalidOptionTypeError, LocalLLMError

if TYPE_CHECKING:  # pragma: no cover
    from starlette.requests import Request

    from localllm.generation import Chunk, Timings
    from localllm.server.pool import ServedModel

__all__ = ["BodyTooLargeError", "Run", "RequestTimeoutError", "field_of", "read_json", "start_runs"]

DEFAULT_MAX_BODY = 8 * 1024 * 1024  # bytes: a long conversation fits; a runaway upload does not
DEFAULT_TIMEOUT_S = 600.0  # one request, queueing included
DISCONNECT_POLL_S = 0.5  # how often a non-streamed request checks that its client is still there


class BodyTooLargeError(LocalLLMError):
    """A request body over the server's limit (413)."""

    def __init__(self, message: str, *, size: int, limit: int) -> None:
        super().__init__(message)
        self.size, self.limit = size, limit


class RequestTimeoutError(GenerationError):
    """A request ran past the server's --timeout (504)."""


class BadRequestError(InvalidOptionError):
    """A malformed request: not JSON, a field of the wrong type (400)."""


async def read_json(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object; at most `limit` bytes are read, whatever Content-Length says."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(
            f"the request body is {int(declared)} bytes; this server takes at most {limit} (--max-body)",
            size=int(declared),
            limit=limit,
        )
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise BodyTooLargeError(
                f"the request body is over {limit} bytes, this server's limit (--max-body)", size=len(body), limit=limit
            )
    try:
        data = json.loads(body or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(
            f"the request body is not valid JSON ({exc}); send a JSON object",
            option="body",
            value=bytes(body[:80]),
            allowed="a JSON object",
        ) from None
    if not isinstance(data, dict):
        raise BadRequestError(
            f"the request body must be a JSON object, got {type(data).__name__}",
            option="body",
            value=data,
            allowed="a JSON object",
        )
    return data


_MISSING = object()


def field_of(data: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], default: Any = _MISSING) -> Any:
    """data[name], checked against `kinds` (bool is not an int here); `default` when absent or null."""
    value = data.get(name)
    if value is None:
        if default is _MISSING:
            raise BadRequestError(f"'{name}' is required", option=name, value=None, allowed="present")
        return default
    kinds_t = kinds if isinstance(kinds, tuple) else (kinds,)
    ok = isinstance(value, kinds_t) and not (isinstance(value, bool) and bool not in kinds_t)
    if not ok:
        names = " or ".join(k.__name__ for k in kinds_t)
        raise InvalidOptionTypeError(
            f"'{name}' must be {names}, got {type(value).__name__} {value!r:.60}",
            option=name,
            value=value,
            allowed=names,
        )
    return value


@dataclass
class Run:
    """One item running on a pool model: its chunks arrive on `queue` from the worker thread."""

    served: ServedModel
    queue: asyncio.Queue[Chunk] = field(default_factory=asyncio.Queue)
    cancel: threading.Event = field(default_factory=threading.Event)
    text: list[str] = field(default_factory=list)
    n_tokens: int = 0
    finish: str | None = None
    timings: Timings | None = None
    dropped: int = 0
    tool_calls: tuple[Any, ...] = ()  # the last chunk's ToolCalls (a chat with tools)

    def stop(self) -> None:
        """Cancel the item (a client gone, a timeout); the worker ends it at its next step."""
        if self.finish is None:
            self.cancel.set()
            self.served.feed.wake()

    async def chunks(self, deadline: float) -> AsyncIterator[Chunk]:
        """This item's chunks until its last; raises its error, or RequestTimeoutError past deadline."""
        loop = asyncio.get_running_loop()
        while self.finish is None:
            left = deadline - loop.time()
            if left <= 0:
                self.stop()
                raise RequestTimeoutError("the request ran past this server's --timeout; it was cancelled")
            try:
                chunk = await asyncio.wait_for(self.queue.get(), timeout=min(left, DISCONNECT_POLL_S))
            except asyncio.TimeoutError:
                yield _TICK  # lets a caller look at its client between chunks
                continue
            self.text.append(chunk.text)
            self.n_tokens += len(chunk.token_ids)
            if chunk.finish_reason is not None:
                self.finish, self.timings, self.dropped = chunk.finish_reason, chunk.timings, chunk.dropped_messages
                self.tool_calls = chunk.tool_calls
                if chunk.error is not None:
                    raise chunk.error
            yield chunk


class _Tick:
    text = ""
    token_ids = ()
    finish_reason = None


_TICK: Any = _Tick()


def is_tick(chunk: object) -> bool:
    return chunk is _TICK


def start_runs(served: ServedModel, items: list[Any]) -> list[Run]:
    """Submit items (BatchItems) to the model's worker; one Run each. A full queue cancels the
    ones already submitted and raises QueueFullError."""
    loop = asyncio.get_running_loop()
    runs: list[Run] = []
    try:
        for item in items:
            run = Run(served)

            def sink(chunk: Chunk, q: asyncio.Queue[Chunk] = run.queue) -> None:
                loop.call_soon_threadsafe(q.put_nowait, chunk)

            served.submit(item, sink, run.cancel)
            runs.append(run)
    except BaseException:
        for run in runs:
            run.stop()
        raise
    return runs


def usage(runs: list[Run], n: int = 1) -> dict[str, int]:
    """OpenAI's usage: each prompt counted once (runs come n per prompt), every choice's tokens."""
    prompt = sum(r.timings.prompt_tokens for r in runs[::n] if r.timings is not None)
    completion = sum(r.n_tokens for r in runs)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
