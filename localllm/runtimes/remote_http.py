"""HTTP to an OpenAI-compatible server on another machine, for `localllm.runtimes.remote`.

One connection per request (closing a stream closes its connection, so the server stops
generating), separate connect and read timeouts (nothing waits forever), server-sent events
read line by line, and every failure a LocalLLMError that names the URL, the status or the
timeout, and what to do. Standard library only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from localllm.errors import (
    ContextOverflowError,
    GenerationError,
    InvalidOptionError,
    LocalLLMError,
    ModelNotFoundError,
    ModelUnavailableError,
)

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_CONNECT_TIMEOUT_S",
    "DEFAULT_READ_TIMEOUT_S",
    "Endpoint",
    "RemoteError",
    "RemoteUnsupportedError",
    "Response",
]

# A host on the same network answers a TCP connect in milliseconds; 10 s covers a slow VPN.
DEFAULT_CONNECT_TIMEOUT_S = 10.0
# The longest silence allowed between two reads. vLLM and llama-server send nothing until the
# first token, and a long prompt on a big model on a busy server can take minutes to read.
DEFAULT_READ_TIMEOUT_S = 300.0
# Sent as `Authorization: Bearer KEY` (vLLM --api-key, llama-server --api-key, localllm serve
# --api-key). A variable of its own: OPENAI_API_KEY would send a real OpenAI key to any host.
API_KEY_ENV = "LOCALLLM_REMOTE_API_KEY"
_MAX_LINE = 1 << 20  # one server-sent event line: a whole reply's text fits
_MAX_ERROR_BODY = 64 * 1024  # what is read of an error answer


class RemoteError(GenerationError):
    """A remote server failed a request: unreachable, timed out, an HTTP error, a malformed
    answer. `url`; `status` (None when no HTTP answer came); `timeout_s` (the timeout that ran
    out, else None)."""

    def __init__(self, message: str, *, url: str, status: int | None = None, timeout_s: float | None = None):
        super().__init__(message)
        self.url = url
        self.status = status
        self.timeout_s = timeout_s


class RemoteUnsupportedError(LocalLLMError, NotImplementedError):
    """What a model on another machine cannot do from here: its vocabulary (tokenize, count
    tokens, grammars), its chat template, logits, local batch scheduling."""


@dataclass(frozen=True)
class Endpoint:
    """Where the server is: `base` is the path before /models and /chat/completions ("/v1")."""

    scheme: str  # "http" or "https"
    host: str
    port: int
    base: str
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S
    read_timeout: float = DEFAULT_READ_TIMEOUT_S
    api_key: str | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base}"

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        at_load: bool = False,
        on_open: Callable[[Response], None] | None = None,
    ) -> Response:
        """Send a request; the Response once its status line and headers came and were 2xx.
        `on_open(response)` is called before connecting, so another thread can `abort()` the
        request while it connects or waits for the headers: it then comes back `aborted`, with no body.

        Raises (`at_load`: ModelUnavailableError for every failure below, since nothing was
        loaded): RemoteError (unreachable, a timeout, HTTP 401/403/429/5xx), ContextOverflowError,
        InvalidOptionError (HTTP 400/422), ModelNotFoundError (HTTP 404)."""
        url = self.url + path
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.connect_timeout)
        answer = Response(conn, url, self)
        if on_open is not None:
            on_open(answer)
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                raise _failure(
                    f"nothing listens at {self.host}:{self.port} (connection refused, {method} {url}); "
                    "start the server there, or check the host and port",
                    url,
                    at_load=at_load,
                ) from None
            except TimeoutError:
                raise _failure(
                    f"no connection to {self.host}:{self.port} within {self.connect_timeout:g} s (connect timeout, "
                    f"{method} {url}); check that the host is up and that no firewall drops the port",
                    url,
                    timeout_s=self.connect_timeout,
                    at_load=at_load,
                ) from None
            except OSError as exc:  # an unknown host name, no route, a TLS handshake refused
                raise _failure(
                    f"cannot connect to {self.host}:{self.port} ({type(exc).__name__}: {exc}; {method} {url}); "
                    "check the host name and the network",
                    url,
                    at_load=at_load,
                ) from None
            conn.sock.settimeout(self.read_timeout)
            answer.connected(conn.sock)
            headers = {"Accept": "text/event-stream, application/json", "User-Agent": "localllm"}
            data = None
            if body is not None:
                data = json.dumps(body, ensure_ascii=False).encode("utf-8")
                headers["Content-Type"] = "application/json"
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            try:
                conn.request(method, self.base + path, body=data, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                if answer.aborted.is_set():
                    return answer
                if isinstance(exc, TimeoutError):
                    raise self.read_timed_out(method, url, at_load=at_load) from None
                raise _failure(
                    f"{method} {url}: the connection failed before an answer ({type(exc).__name__}: {exc}); "
                    "the server may have crashed or restarted",
                    url,
                    at_load=at_load,
                ) from None
            if resp.status >= 300:
                raise _http_error(method, url, resp, at_load=at_load, model=(body or {}).get("model"), base=self.url)
            answer.resp = resp
            return answer
        except BaseException:
            answer.close()
            raise

    def read_timed_out(self, method: str, url: str, *, at_load: bool = False, after: str = "") -> LocalLLMError:
        return _failure(
            f"{method} {url}: no data from the server for {self.read_timeout:g} s{after} (read timeout); "
            "the server may be stuck or overloaded. Check it, or open the model with a longer read_timeout "
            "(localllm.runtimes.remote.open_remote)",
            url,
            timeout_s=self.read_timeout,
            at_load=at_load,
        )


class Response:
    """One answer and the connection it came on. `abort()` (from any thread) shuts the socket,
    which ends a read blocked on it; `close()` closes everything. Both are idempotent."""

    def __init__(self, conn: http.client.HTTPConnection, url: str, endpoint: Endpoint) -> None:
        self._conn, self.url, self._endpoint = conn, url, endpoint
        self._sock: socket.socket | None = None
        self.resp: http.client.HTTPResponse | None = None  # None until the headers came (or when aborted first)
        self.aborted = threading.Event()
        self._closed = False
        self._lock = threading.Lock()  # abort() from another thread, against connected()

    def connected(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
        if self.aborted.is_set():  # aborted while connecting
            self.abort()

    @property
    def content_type(self) -> str:
        if self.resp is None:
            return ""
        return (self.resp.getheader("content-type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """The body as JSON (a non-streamed answer)."""
        assert self.resp is not None  # request() returns no answer without one unless aborted
        try:
            raw = self.resp.read()
        except TimeoutError:
            raise self._endpoint.read_timed_out("GET", self.url, at_load=True) from None
        except (OSError, http.client.HTTPException) as exc:
            raise _failure(f"GET {self.url}: the answer was cut ({exc})", self.url, at_load=True) from None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _failure(
                f"GET {self.url} did not answer JSON ({raw[:120]!r}); is this an OpenAI-compatible API? "
                "The URL should end in its /v1",
                self.url,
                at_load=True,
            ) from None

    def events(self) -> Iterator[dict[str, Any] | None]:
        """The server-sent events' data as JSON objects; None for `data: [DONE]`. Ends at the end
        of the body. Raises RemoteError for a malformed event, a timeout or a cut connection
        (unless aborted: then it just ends)."""
        n, data = 0, list[bytes]()
        while self.resp is not None:
            try:
                line = self.resp.readline(_MAX_LINE + 1)
            except TimeoutError:
                if self.aborted.is_set():
                    return
                raise self._endpoint.read_timed_out("POST", self.url, after=f" after {n} events") from None
            except (OSError, ValueError, http.client.HTTPException) as exc:
                if self.aborted.is_set():
                    return
                raise RemoteError(
                    f"POST {self.url}: the connection was cut after {n} events ({type(exc).__name__}: {exc}); "
                    "the server may have crashed or restarted",
                    url=self.url,
                ) from None
            if len(line) > _MAX_LINE:
                raise self._malformed(n, f"a line over {_MAX_LINE} bytes ({line[:80]!r}...)")
            if not line or line in (b"\n", b"\r\n"):  # the end of an event (or of the body)
                if data:
                    n += 1
                    yield self._decode(n, b"\n".join(data))
                    data = []
                if not line:
                    return
                continue
            line = line.rstrip(b"\r\n")
            if line.startswith(b":"):  # a comment: a keep-alive
                continue
            name, _, value = line.partition(b":")
            if name == b"data":
                data.append(value[1:] if value.startswith(b" ") else value)
            elif name not in (b"event", b"id", b"retry"):
                raise self._malformed(n, f"a line that is no event field: {line[:120]!r}")

    def _decode(self, n: int, payload: bytes) -> dict[str, Any] | None:
        if payload.strip() == b"[DONE]":
            return None
        try:
            event = json.loads(payload)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise self._malformed(n, f"event {n} is not JSON: {payload[:120]!r}") from None
        if not isinstance(event, dict):
            raise self._malformed(n, f"event {n} is not a JSON object: {payload[:120]!r}")
        return event

    def _malformed(self, n: int, what: str) -> RemoteError:
        return RemoteError(
            f"POST {self.url}: malformed server-sent events ({what}, after {n} events); the server does not "
            "speak OpenAI's streaming format, or a proxy altered it",
            url=self.url,
            status=self.resp.status if self.resp is not None else None,
        )

    def abort(self) -> None:
        """Shut the connection now (another thread may be reading it): the server sees the client leave."""
        self.aborted.set()
        with self._lock:
            sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # closed already
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.abort()
        try:
            if self.resp is not None:
                self.resp.close()
        finally:
            self._conn.close()
            if self._sock is not None:
                self._sock.close()


def _failure(
    message: str, url: str, *, status: int | None = None, timeout_s: float | None = None, at_load: bool = False
) -> LocalLLMError:
    if at_load:  # nothing was loaded: the model is unavailable, as a Hub that cannot be reached
        return ModelUnavailableError(message, url=url)
    return RemoteError(message, url=url, status=status, timeout_s=timeout_s)


def error_message(body: object) -> tuple[str, str | None, str | None]:
    """(message, param, code) of an error answer: OpenAI's {"error": {...}}, {"error": "..."},
    FastAPI's {"detail": ...} (vLLM's 422), {"message": ...}, or the text itself."""
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            message = err.get("message") or err.get("detail") or json.dumps(err)[:300]
            param, code = err.get("param"), err.get("code")
            return str(message), param if isinstance(param, str) else None, str(code) if code is not None else None
        return str(err), None, None
    return str(body)[:300], None, None


def _http_error(
    method: str, url: str, resp: http.client.HTTPResponse, *, at_load: bool, model: object = None, base: str = ""
) -> LocalLLMError:
    status = resp.status
    try:
        raw = resp.read(_MAX_ERROR_BODY)
        body: object = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = raw.decode("utf-8", "replace").strip() or resp.reason
    except (OSError, http.client.HTTPException):
        body = resp.reason
    message, param, code = error_message(body)
    said = f"{method} {url} answered HTTP {status}: {message}"
    if status in (401, 403):
        fix = f"; set {API_KEY_ENV} to the server's API key (sent as 'Authorization: Bearer KEY')"
        return _failure(said + fix, url, status=status, at_load=at_load)
    if at_load:
        fix = "; the URL should be the server's API base, ending in /v1" if status == 404 else ""
        return ModelUnavailableError(said + fix, url=url)
    if code == "context_length_exceeded" or "context length" in message.lower():
        return ContextOverflowError(said + "; shorten the prompt or the conversation")
    if status in (400, 422):
        return InvalidOptionError(
            said + "; the server refused the request as sent",
            option=param or "request",
            allowed="what the server takes",
        )
    if status == 404:
        return ModelNotFoundError(
            said + f"; the server no longer serves {model!r}: GET {base}/models lists what it does",
            name=str(model),
        )
    retry = " (busy: try again shortly)" if status in (429, 503) else ""
    return _failure(said + retry, url, status=status)
