"""The child process of a hosted engine (`localllm.runtimes.hosted`): one `LlamaCppEngine` whose
layers lie on llama.cpp RPC workers, served over a socket to the parent.

Run as `python -m localllm.runtimes.hosted_child CONN_FD LOGITS_FD` by `HostedEngine` only. The
child attaches the workers (`rpc.attach`), loads the model, then answers one request at a time:
`(op, args, logits_size)` -> `("ok", value, lens)` or `("err", module, class, message, attrs, lens)`,
where `lens` is every sequence's length after a call that changes the cache (None otherwise), so
the parent's copy of the cached tokens stays exact. Logits are not pickled: they are written into
the shared file LOGITS_FD (float32 rows from offset 0) and the answer says how many rows.

llama.cpp's RPC client aborts this process when a worker goes away; that is why it runs here. Its
log lines, and anything C code writes to the standard streams, reach the parent through stdout
(see `RECORD`), never a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import pickle
import signal
import socket
import stat
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

__all__ = ["RECORD", "arm_keepalive", "main"]

# A logging record on the pipe: RECORD, level number, logger name, message (newlines escaped);
# any other line is raw output of C code (llama.cpp's GGML_ABORT message, say).
RECORD = "\x1elocalllm\x1f"
# Kernel keepalive on the connections to the workers (llama.cpp sets none): a worker whose machine
# vanishes without a reset is then noticed by the kernel about USER_TIMEOUT_S after it last sent
# anything, and llama.cpp's client fails (and aborts) instead of waiting forever (measured: 21 s
# after loopback went down in a network namespace; with no keepalive, still waiting after 90 s).
# A live kernel answers keepalives whatever its worker process is doing, so a long computation is
# never cut.
KEEPIDLE_S, KEEPINTVL_S, KEEPCNT = 5, 2, 3
USER_TIMEOUT_S = 20
_PARENT_CHECK_S = 1.0  # how often the child looks whether its parent is still there


class _LineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\\", "\\\\").replace("\n", "\\n")
        return f"{RECORD}{record.levelno}\x1f{record.name}\x1f{text}"


def _route_logging() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_LineFormatter("%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG)  # the parent's loggers filter: it relays each record under its name


def _watch_parent() -> None:
    """End this process when the parent is gone, even while llama.cpp holds the main thread."""
    parent = os.getppid()
    while True:
        time.sleep(_PARENT_CHECK_S)
        if os.getppid() != parent:
            os._exit(3)


def _endpoint_addresses(endpoints: list[str]) -> set[tuple[str, int]]:
    from localllm.runtimes.rpc import parse_endpoint

    out = set()
    for endpoint in endpoints:
        host, port = parse_endpoint(endpoint)
        with contextlib.suppress(OSError):
            for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                out.add((str(info[4][0]), port))
    return out


def arm_keepalive(endpoints: list[str]) -> list[tuple[str, int]]:
    """Turn on kernel keepalive (and TCP_USER_TIMEOUT where there is one) on every socket of this
    process connected to one of `endpoints`; returns their peer addresses."""
    targets = _endpoint_addresses(endpoints)
    armed = []
    fd_dir = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    for name in os.listdir(fd_dir):
        try:
            fd = int(name)
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=os.dup(fd))  # a second handle: closing it leaves llama.cpp's open
        except (ValueError, OSError):
            continue
        with sock:
            try:
                if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                    continue
                peer = sock.getpeername()
                if (str(peer[0]), int(peer[1])) not in targets:
                    continue
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                idle = getattr(socket, "TCP_KEEPIDLE", getattr(socket, "TCP_KEEPALIVE", None))  # macOS: KEEPALIVE
                for option, value in ((idle, KEEPIDLE_S), (getattr(socket, "TCP_KEEPINTVL", None), KEEPINTVL_S)):
                    if option is not None:
                        sock.setsockopt(socket.IPPROTO_TCP, option, value)
                if hasattr(socket, "TCP_KEEPCNT"):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPCNT)
                user_timeout = getattr(socket, "TCP_USER_TIMEOUT", 18)  # Linux's number; Python 3.10 lacks it
                if sys.platform.startswith("linux"):
                    sock.setsockopt(socket.IPPROTO_TCP, user_timeout, USER_TIMEOUT_S * 1000)
                armed.append((str(peer[0]), int(peer[1])))
            except OSError:
                continue
    return armed


def _encode_error(exc: BaseException) -> tuple[str, str, str, dict[str, Any]]:
    attrs = {}
    for key, value in vars(exc).items():
        try:
            pickle.dumps(value)
        except Exception:  # noqa: BLE001 - an attribute that cannot travel stays behind
            continue
        attrs[key] = value
    return type(exc).__module__, type(exc).__qualname__, str(exc), attrs


class _Server:
    """The engine and the shared logits file, and the requests that reach them."""

    def __init__(self, conn: Connection, logits_fd: int) -> None:
        self.conn, self.logits_fd = conn, logits_fd
        self.engine: Any = None
        self.np: Any = None
        self.mm: mmap.mmap | None = None
        self.flat: Any = None  # float32 view of the whole shared file

    # --- requests --------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            try:
                op, args, size = self.conn.recv()
            except (EOFError, OSError):
                return  # the parent is gone
            if op == "close":
                self._close()
                with contextlib.suppress(OSError):
                    self.conn.send(("ok", None, None))
                return
            try:
                value = self._load(*args) if op == "load" else self._do(op, args, size)
                reply: tuple = ("ok", value, self._lens(op))
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller as it was
                reply = ("err", *_encode_error(exc), self._lens(op))
            self.conn.send(reply)

    def _lens(self, op: str) -> tuple[int, ...] | None:
        if self.engine is None or op in _READ_ONLY:
            return None
        return tuple(len(tokens) for tokens in self.engine._seqs)

    def _load(self, path: str, placement: Any) -> dict[str, Any]:
        from localllm.errors import RuntimeUnavailableError
        from localllm.runtimes import rpc
        from localllm.runtimes.llamacpp import LlamaCppEngine
        from localllm.runtimes.rpc_build import find_rpc_build

        build = find_rpc_build()
        if build is None:
            raise RuntimeUnavailableError(
                "llama.cpp's RPC backend is not built for the installed llama-cpp-python, and a model "
                "split across workers needs it; build it once with `localllm worker --build-only`"
            )
        endpoints = list(placement.workers)
        workers = rpc.attach(endpoints, build)
        engine = self.engine = LlamaCppEngine(path, placement)
        import numpy as np

        self.np = np
        return {
            "n_ctx": engine.n_ctx,
            "n_vocab": engine.n_vocab,
            "n_batch": engine.n_batch,
            "n_seq_max": engine.n_seq_max,
            "prompt_chunk": engine.prompt_chunk,
            "load_seconds": engine.load_seconds,
            "bos_token": engine.bos_token,
            "eos_token": engine.eos_token,
            "add_bos": engine.add_bos,
            "chat_template": engine.chat_template,
            "metadata": engine.metadata(),
            "extra_buffers": engine.extra_buffers,
            "adapts": engine.adaptive_threads is not None,
            "workers": workers,
            "keepalive": arm_keepalive(endpoints),
            "pid": os.getpid(),
        }

    def _do(self, op: str, args: tuple, size: int) -> Any:
        engine = self.engine
        if engine is None:
            raise RuntimeError(f"{op} before the model was loaded")
        if op == "eval":
            return self._write([engine.eval(*args)], size)
        if op == "eval_all":
            return self._write(engine.eval_all(*args), size)
        if op == "eval_batch":
            return self._write(engine.eval_batch(*args), size)
        if op == "tokenize":
            text, add_bos, special = args
            return engine.tokenize(text, add_bos=add_bos, special=special)
        if op == "get":
            return getattr(engine, args[0])
        if op == "adaptive_choose":
            return engine.adaptive_threads.choose()
        if op == "pid":
            return os.getpid()
        if op in _METHODS:
            return getattr(engine, op)(*args)
        raise ValueError(f"unknown request {op!r}")

    def _write(self, rows: Any, size: int) -> int:
        """Copy logits rows into the shared file (sized `size` by the parent); returns how many."""
        if self.mm is None or len(self.mm) != size:
            self.flat = None
            self.mm = mmap.mmap(self.logits_fd, size)  # the old map goes once no view holds it
            self.flat = self.np.frombuffer(self.mm, dtype=self.np.float32)
        n_vocab = self.engine.n_vocab
        for i, row in enumerate(rows):
            self.flat[i * n_vocab : (i + 1) * n_vocab] = row
        return len(rows)

    def _close(self) -> None:
        if self.engine is not None:
            self.engine.close()


_READ_ONLY = frozenset(
    {"load", "get", "pid", "tokenize", "token_bytes", "vocab_bytes", "is_eog", "has_token", "adaptive_choose"}
    | {"set_threads", "seq_tokens"}
)
_METHODS = frozenset(
    {"token_bytes", "vocab_bytes", "is_eog", "has_token", "rewind", "set_threads"}
    | {"seq_tokens", "seq_keep", "seq_copy", "reset_batch"}
)


def main(argv: list[str]) -> int:
    conn_fd, logits_fd = int(argv[1]), int(argv[2])
    # Ctrl-C in a terminal goes to the whole process group: the parent's Python handles it, the
    # model here must live on (as an in-process one does). The parent also started this in a
    # session of its own; the line is for a child started otherwise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _route_logging()
    threading.Thread(target=_watch_parent, name="localllm-parent-watch", daemon=True).start()
    _Server(Connection(conn_fd), logits_fd).serve()
    return 0


if __name__ == "__main__":  # pragma: no cover - started by HostedEngine
    sys.exit(main(sys.argv))
