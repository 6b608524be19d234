"""The FastAPI app: the OpenAI and Ollama routes over one ModelPool, an API key, a body
limit, errors in each API's own shape, /health, and a lifespan that preloads the models named
on the command line and unloads idle ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from localllm.errors import (
    ChatTemplateError,
    ContextOverflowError,
    DownloadError,
    InsufficientMemoryError,
    InvalidModelError,
    InvalidOptionError,
    InvalidOptionTypeError,
    LocalLLMError,
    ModelNotFoundError,
    RuntimeUnavailableError,
)
from localllm.server.common import DEFAULT_MAX_BODY, DEFAULT_TIMEOUT_S, BodyTooLargeError, RequestTimeoutError
from localllm.server.pool import ModelPool, PoolConfig

__all__ = ["ServerState", "create_app", "error_status", "openai_error"]

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    pool: ModelPool
    api_key: str | None = None
    max_body: int = DEFAULT_MAX_BODY
    timeout_s: float = DEFAULT_TIMEOUT_S
    preload: Sequence[str] = ()

    def model_names(self) -> list[str]:
        return list(dict.fromkeys([*self.preload, *self.pool.models]))


def error_status(exc: BaseException) -> tuple[int, str, str | None]:
    """(HTTP status, OpenAI error type, code) for an error."""
    from localllm.batching import QueueFullError

    if isinstance(exc, BodyTooLargeError):
        return 413, "invalid_request_error", "request_too_large"
    if isinstance(exc, ContextOverflowError):
        return 400, "invalid_request_error", "context_length_exceeded"
    if isinstance(exc, (InvalidOptionError, InvalidOptionTypeError, ChatTemplateError, InvalidModelError)):
        return 400, "invalid_request_error", None
    if isinstance(exc, ModelNotFoundError):
        return 404, "invalid_request_error", "model_not_found"
    if isinstance(exc, QueueFullError):
        return 429, "rate_limit_error", "queue_full"
    if isinstance(exc, InsufficientMemoryError):
        return 507, "server_error", "insufficient_memory"
    if isinstance(exc, RequestTimeoutError):
        return 504, "server_error", "timeout"
    if isinstance(exc, (RuntimeUnavailableError, DownloadError)):
        return 503, "server_error", None
    return 500, "server_error", None


def openai_error(exc: BaseException) -> tuple[int, dict[str, Any]]:
    status, kind, code = error_status(exc)
    param = getattr(exc, "option", None)
    return status, {"error": {"message": str(exc), "type": kind, "param": param, "code": code}}


def create_app(
    pool: ModelPool | None = None,
    *,
    api_key: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    preload: Sequence[str] = (),
) -> Any:
    """The ASGI app (a FastAPI instance). Import-heavy: only `localllm serve` and tests call it."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse
    from starlette.requests import Request

    from localllm import __version__
    from localllm.server import ollama_api, openai_api

    state = ServerState(
        pool=pool or ModelPool(PoolConfig()),
        api_key=api_key,
        max_body=max_body,
        timeout_s=timeout_s,
        preload=tuple(preload),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for name in state.preload:  # loaded already by `localllm serve`; a caller of create_app: now
            if name not in state.pool.models:
                served = await state.pool.get(name, float("inf"))
                log.info("loaded %s from %s", name, served.model.info.path)
        reaper = asyncio.create_task(state.pool.reap_forever())
        try:
            yield
        finally:
            reaper.cancel()
            await asyncio.to_thread(state.pool.close)

    app = FastAPI(title="localllm", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.localllm = state

    @app.middleware("http")
    async def check_key(request: Request, call_next: Any) -> Any:
        if state.api_key is not None and request.url.path != "/health":
            given = request.headers.get("authorization", "")
            token = given[7:] if given.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not hmac.compare_digest(token.encode(), state.api_key.encode()):
                message = "a valid API key is required: send 'Authorization: Bearer KEY' (the server's --api-key)"
                if request.url.path.startswith("/api/"):
                    return JSONResponse({"error": message}, status_code=401)
                return JSONResponse(
                    {
                        "error": {
                            "message": message,
                            "type": "invalid_request_error",
                            "param": None,
                            "code": "invalid_api_key",
                        }
                    },
                    status_code=401,
                )
        return await call_next(request)

    @app.exception_handler(LocalLLMError)
    async def on_error(request: Request, exc: LocalLLMError) -> Any:
        status, body = openai_error(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=status)
        return JSONResponse(body, status_code=status)

    @app.get("/health")
    async def health() -> Any:
        models = {name: {"active": m.active, "waiting": m.feed.waiting} for name, m in list(state.pool.models.items())}
        return {"status": "ok", "active": sum(m["active"] for m in models.values()), "models": models}

    openai_api.add_routes(app, state)
    ollama_api.add_routes(app, state)
    return app
