"""A llama.cpp engine whose layers lie on RPC workers, run in a child process (issue 19).

llama.cpp's RPC client aborts its whole process (GGML_ABORT, SIGABRT) when a worker goes away
mid-call. So a placement with `workers` is loaded in a child (`localllm.runtimes.hosted_child`):
it attaches the workers, loads a `LlamaCppEngine` and answers this process's calls over a socket
pair. `HostedEngine` keeps the `Engine`/`BatchEngine` contract of the in-process engine, so the
shared token loop, batching and `Model` treat both alike. When the child dies, the call in
progress and every later one raise `EngineProcessError` (a GenerationError) naming the workers
that no longer answer, how the child ended and what to do next.

Speed: a call is one small pickled message each way. Logits never go through the socket: the
child writes them into a shared file both map (a memfd on Linux), and `eval` returns a view of
it, valid until the next call, as the in-process engine returns a view of llama.cpp's buffer.
Token pieces and end-of-generation flags are kept here once asked for.

No hang (measured with two workers on 127.0.0.1, SmolLM2):
- a worker killed: its reset makes llama.cpp abort the child at once; the error comes 0.03 s
  after the kill (the workers are then asked who is gone: the others answer again);
- a worker stopped on this machine (SIGSTOP): a call with no answer for STALL_S seconds looks
  at the workers (`hosted_watch`), finds its process stopped and ends the child: about 6 s;
- a worker's machine gone without a reset (loopback taken down in a network namespace): the
  kernel keepalive the child arms on its worker connections fails them, llama.cpp aborts: 21 s.
  Without that keepalive the call had not ended after 90 s (llama.cpp sets no timeout).
A worker process stuck on a machine that still answers TCP cannot be told from a long
computation (a worker serves one client at a time, so nothing else can ask it): that is waited
for, as a long prompt, which may take minutes, must be.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import mmap
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from localllm.errors import GenerationError, RuntimeUnavailableError
from localllm.placement import Placement
from localllm.runtimes import hosted_watch
from localllm.runtimes.base import CachedTokens
from localllm.runtimes.hosted_child import RECORD

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["EngineProcessError", "HostedEngine"]

log = logging.getLogger(__name__)
child_log = logging.getLogger(__name__ + ".child")  # the child's raw output (C code writing to its fds)
child_log.addHandler(logging.NullHandler())  # never Python's last-resort printing to stderr

STALL_S = 5.0  # a call this long without an answer: look at the workers (then as often)
CLOSE_WAIT_S = 5.0  # a child asked to close gets this long before it is killed
_TAIL_LINES = 12  # the child's last raw lines (and error records) kept for the error message
_MIN_ROWS = 16  # logits rows the shared file holds at first (grown for longer eval_all calls)


class EngineProcessError(GenerationError):
    """The process running a model split across workers ended (a worker was lost, most often)."""

    def __init__(self, message: str, *, lost_workers: tuple[str, ...] = (), returncode: int | None = None) -> None:
        super().__init__(message)
        self.lost_workers = lost_workers  # the workers ("host:port") that no longer answer
        self.returncode = returncode  # the child's exit status (negative: the signal that ended it)


def _shared_file() -> int:
    """An anonymous file both processes map for logits."""
    if hasattr(os, "memfd_create"):  # Linux: memory only, never written back to a disk
        return os.memfd_create("localllm-logits")
    with tempfile.TemporaryFile() as f:  # elsewhere: unlinked at once, kept by the descriptor
        return os.dup(f.fileno())


def _relay(stream: IO[bytes], tail: deque[str]) -> None:
    """The child's output: its log records go to the loggers they were made for, the rest to
    `child_log`; the last raw lines and error records are kept for the message if it dies."""
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith(RECORD):
                level, name, text = (line[len(RECORD) :].split("\x1f", 2) + ["", ""])[:3]
                text = re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)
                levelno = int(level) if level.isdigit() else logging.DEBUG
                logger = logging.getLogger(name or child_log.name)
                if logger.hasHandlers():  # where nothing listens, nothing is printed (no last resort)
                    logger.log(levelno, "%s", text)
                if levelno >= logging.ERROR:
                    tail.append(text.strip())
            elif line.strip():
                child_log.debug("%s", line)
                tail.append(line.strip())


def _decode_error(module: str, name: str, message: str, attrs: dict[str, Any]) -> Exception:
    """The child's exception as this process's: the same class (localllm's or a builtin), message
    and attributes; GenerationError for anything else."""
    cls: Any = None
    if module == "builtins" or module.split(".")[0] == "localllm":
        with contextlib.suppress(Exception):
            cls = importlib.import_module(module)
            for part in name.split("."):
                cls = getattr(cls, part)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            exc = cls.__new__(cls)
            Exception.__init__(exc, message)
            exc.__dict__.update(attrs)
            return exc
        except Exception:  # noqa: BLE001 - a class that cannot be made so: said in words below
            pass
    return GenerationError(f"the engine process failed: {name}: {message}")


_live: weakref.WeakSet[HostedEngine] = weakref.WeakSet()
_atexit_registered = False


def _close_all() -> None:
    for engine in list(_live):
        with contextlib.suppress(Exception):
            engine.close()


class _RemoteThreads:
    """`adaptive_threads` of the child's engine: it measures the CPU where llama.cpp runs."""

    def __init__(self, engine: HostedEngine) -> None:
        self._engine = weakref.ref(engine)  # no cycle: an engine dropped unclosed is collected at once

    def choose(self) -> Any:
        engine = self._engine()
        if engine is None:
            raise GenerationError("this model has been closed; load it again")
        return engine._call("adaptive_choose")


class HostedEngine(CachedTokens):
    """A `LlamaCppEngine` (Engine and BatchEngine) for a placement with workers, in a child process."""

    runtime = "llama.cpp"

    def __init__(self, path: str | os.PathLike[str], placement: Placement) -> None:
        self._closed = False  # first: close() and __del__ look at them
        self._dead: str | None = None  # why every call now fails
        self._dead_error: EngineProcessError | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._relay_thread: threading.Thread | None = None
        self._mm: mmap.mmap | None = None
        self._logits_fd = -1
        self._rows = 0  # logits rows the shared file holds (sized once n_vocab is known)
        self._flat: Any = None  # float32 view of the whole shared file; _row0 its first row
        self._row0: Any = None
        self._lock = threading.Lock()
        self._pending: tuple[str, tuple] | None = None  # a call whose answer was not read (interrupted)
        self._seqs: list[list[int]] = [[] for _ in range(max(1, placement.n_seq))]
        self._tokens = self._seqs[0]  # eval/rewind/cached_tokens work on sequence 0
        self.path, self.placement = os.fspath(path), placement
        self.endpoints = tuple(placement.workers)
        if not self.endpoints:
            self._closed = True
            raise ValueError("a hosted engine runs a placement with workers; this one has none")
        self._tail: deque[str] = deque(maxlen=_TAIL_LINES)
        self._local = hosted_watch.LocalWorkers()
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._special: dict[str, bool] = {}
        self._growth: int | None = None
        self._start()
        try:
            # the child finds the RPC build (reading which CPU the installed llama.cpp was built for
            # imports it: not here)
            facts = self._call("load", self.path, placement)
        except BaseException:
            self._closed = True
            self._shutdown(polite=False)
            raise
        self.n_ctx: int = facts["n_ctx"]
        self.n_vocab: int = facts["n_vocab"]
        self.n_batch: int = facts["n_batch"]
        self.n_seq_max: int = facts["n_seq_max"]
        self.prompt_chunk: int = facts["prompt_chunk"]
        self.load_seconds: float = facts["load_seconds"]
        self.extra_buffers: bool = facts["extra_buffers"]
        self.workers = tuple(facts["workers"])  # rpc.Worker of each endpoint, as the child attached it
        self.keepalive = tuple(facts["keepalive"])  # the worker connections the kernel now watches
        self.child_pid: int = facts["pid"]
        self._tail.clear()  # an error message quotes what the child said after the load
        self._facts = facts
        self.adaptive_threads = _RemoteThreads(self) if facts["adapts"] else None
        import numpy as np

        self._np = np
        self._grow(max(_MIN_ROWS, self.n_seq_max))
        global _atexit_registered
        _live.add(self)
        if not _atexit_registered:  # a child is never left behind by an interpreter that exits
            atexit.register(_close_all)
            _atexit_registered = True

    # --- the child -------------------------------------------------------------------
    def _start(self) -> None:
        import localllm

        mine, theirs = socket.socketpair()
        self._logits_fd = _shared_file()
        env = {**os.environ, "GGML_NO_BACKTRACE": "1"}  # an abort is not held up by gdb's backtrace
        package_root = str(Path(localllm.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        cmd = [sys.executable, "-m", "localllm.runtimes.hosted_child", str(theirs.fileno()), str(self._logits_fd)]
        try:
            # its own session: Ctrl-C in the terminal reaches this process, which decides
            self._proc = subprocess.Popen(
                cmd,
                pass_fds=(theirs.fileno(), self._logits_fd),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            mine.close()
            raise RuntimeUnavailableError(f"could not start the process that runs the model ({exc})") from exc
        finally:
            theirs.close()
        self._conn = Connection(mine.detach())
        assert self._proc.stdout is not None
        self._relay_thread = threading.Thread(
            target=_relay, args=(self._proc.stdout, self._tail), name="localllm-hosted-log", daemon=True
        )
        self._relay_thread.start()

    def _call(self, op: str, *args: Any, rows: int = 0) -> Any:
        """One request to the child and its answer; the child's exception is raised here as its own."""
        with self._lock:
            self._require()
            if self._pending is not None:  # the answer of a call interrupted here (KeyboardInterrupt)
                self._answer(*self._pending)
            if rows > self._rows:
                self._grow(max(rows, 2 * self._rows))
            assert self._conn is not None
            try:
                self._conn.send((op, args, len(self._mm) if self._mm is not None else 0))
            except OSError:
                self._lost(op)
            kind, *rest = self._answer(op, args)
            if kind == "ok":
                return rest[0]
            raise _decode_error(*rest[:4])

    def _settle(self) -> None:
        """Read the answer of an interrupted call, so the tokens copied here are the child's."""
        if self._pending is not None:
            with self._lock:
                if self._pending is not None and not self._closed and self._dead is None:
                    self._answer(*self._pending)

    @property
    def cached_tokens(self) -> Sequence[int]:
        self._settle()
        return tuple(self._tokens)

    @property
    def n_past(self) -> int:
        self._settle()
        return len(self._tokens)

    def _answer(self, op: str, args: tuple) -> tuple:
        self._pending = (op, args)
        reply = self._wait(op)
        self._pending = None
        if reply[-1] is not None:
            self._sync(op, args, reply[-1])
        return reply

    def _wait(self, op: str) -> tuple:
        """The child's answer, looking at the workers every STALL_S while there is none."""
        conn, proc = self._conn, self._proc
        assert conn is not None and proc is not None
        while True:
            try:
                ready = conn.poll(STALL_S)
            except OSError:
                ready = True
            if ready:
                try:
                    return conn.recv()
                except (EOFError, OSError):
                    self._lost(op)
                except BaseException:  # interrupted halfway through an answer: the stream is lost
                    self._kill()
                    self._dead = "a call to the model was interrupted while its answer arrived; load the model again"
                    raise
            if proc.poll() is not None:
                self._lost(op)
            frozen = hosted_watch.frozen(list(self.endpoints), self._local)
            if frozen:
                log.info("%s; ending the model's process", "; ".join(frozen.values()))
                self._lost(op, frozen)

    def _sync(self, op: str, args: tuple, lens: Sequence[int]) -> None:
        """Bring the copy of each sequence's tokens to the lengths the child reports after `op`."""
        sent = {0: list(args[0])} if op in ("eval", "eval_all") else {}
        if op == "eval_batch":
            sent = {seq: list(tokens) for seq, tokens in args[0]}
        for seq, n in enumerate(lens):
            mine = self._seqs[seq]
            if n <= len(mine):
                del mine[n:]
            elif op == "seq_copy" and seq == args[1]:
                mine[:] = self._seqs[args[0]][:n]
            else:
                mine.extend(sent.get(seq, [])[: n - len(mine)])
                if len(mine) != n:  # pragma: no cover - every op that adds tokens is above
                    raise GenerationError(f"sequence {seq} has {n} tokens in the engine and {len(mine)} here")

    def _grow(self, rows: int) -> None:
        size = rows * self.n_vocab * 4
        os.ftruncate(self._logits_fd, size)
        self._mm = mmap.mmap(self._logits_fd, size)  # an older map stays while a view of it lives
        self._flat = self._np.frombuffer(self._mm, dtype=self._np.float32)
        self._row0 = self._flat[: self.n_vocab]
        self._rows = rows

    def _kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=CLOSE_WAIT_S)

    def _lost(self, op: str, frozen: dict[str, str] | None = None) -> None:
        """The child is gone (or is ended now, `frozen` saying which workers were found lost):
        say what happened, from now on for every call."""
        self._kill()
        if self._relay_thread is not None:  # its last lines (llama.cpp's abort message) are read
            self._relay_thread.join(timeout=2.0)
        self._pending = None
        if self._closed:  # close() from another thread ended the child under this call
            self._release()
            raise GenerationError("this model was closed during the call; load it again")
        assert self._proc is not None
        code = self._proc.returncode
        lost = {**hosted_watch.unanswered(list(self.endpoints)), **(frozen or {})}
        how = "was ended by localllm" if frozen else hosted_watch.exit_words(code)
        what = "loading the model" if op == "load" else f"a call to the model ({op})"
        n = len(self.endpoints)
        head = f"the process running {Path(self.path).name} with layers on {n} workers {how} during {what}"
        if lost:
            ports = ", ".join(f"`localllm worker --port {ep.rpartition(':')[2]}`" for ep in lost)
            cause = (
                f"{len(lost)} of its {n} workers no longer {'answers' if len(lost) == 1 else 'answer'}: "
                + "; ".join(lost[ep] for ep in self.endpoints if ep in lost)
                + f". Restart {'it' if len(lost) == 1 else 'each'} on its machine ({ports}) and load the model again"
            )
        else:
            cause = (
                f"every worker ({', '.join(self.endpoints)}) still answers, so the cause was in that process "
                "(out of memory?); load the model again"
            )
        said = "; ".join(list(self._tail)[-3:])
        message = f"{head}. {cause}" + (f" (llama.cpp: {said})" if said else "")
        self._dead = message
        self._dead_error = EngineProcessError(message, lost_workers=tuple(lost), returncode=code)
        raise self._dead_error

    def _require(self) -> None:
        if self._closed:
            raise GenerationError("this model has been closed; load it again")
        if self._dead_error is not None:
            e = self._dead_error
            raise EngineProcessError(str(e), lost_workers=e.lost_workers, returncode=e.returncode)
        if self._dead is not None:
            raise GenerationError(self._dead)

    # --- tokens ----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        return self._call("tokenize", text, add_bos, special)

    def token_bytes(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            piece = self._pieces[token] = self._call("token_bytes", token)
        return piece

    def vocab_bytes(self) -> list[bytes]:
        return self._call("vocab_bytes")

    def is_eog(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = self._call("is_eog", token)
        return eog

    def has_token(self, text: str) -> bool:
        found = self._special.get(text)
        if found is None:
            found = self._special[text] = self._call("has_token", text)
        return found

    @property
    def bos_token(self) -> str | None:
        return self._facts["bos_token"]

    @property
    def eos_token(self) -> str | None:
        return self._facts["eos_token"]

    @property
    def add_bos(self) -> bool:
        return self._facts["add_bos"]

    @property
    def chat_template(self) -> str | None:
        return self._facts["chat_template"]

    # --- evaluation ------------------------------------------------------------------
    def eval(self, tokens: Sequence[int]) -> np.ndarray:
        self._call("eval", list(tokens), rows=1)
        return self._row0

    def eval_all(self, tokens: Sequence[int]) -> np.ndarray:
        tokens = list(tokens)
        n = self._call("eval_all", tokens, rows=len(tokens))
        return self._flat[: n * self.n_vocab].reshape(n, self.n_vocab)

    def eval_batch(self, items: Sequence[tuple[int, Sequence[int]]]) -> list[np.ndarray]:
        items = [(int(seq), list(tokens)) for seq, tokens in items]
        n = self._call("eval_batch", items, rows=len(items))
        v = self.n_vocab
        return [self._flat[i * v : (i + 1) * v].copy() for i in range(n)]

    def rewind(self, n_keep: int) -> None:
        self._settle()
        if max(0, n_keep) >= len(self._tokens):
            self._require()
            return
        self._call("rewind", n_keep)

    def seq_tokens(self, seq: int) -> Sequence[int]:
        if not 0 <= seq < self.n_seq_max:
            raise ValueError(f"no sequence {seq}: this engine holds {self.n_seq_max} (0 to {self.n_seq_max - 1})")
        self._settle()
        return tuple(self._seqs[seq])

    def seq_keep(self, seq: int, n_keep: int) -> None:
        self._call("seq_keep", seq, n_keep)

    def seq_copy(self, src: int, dst: int, n: int) -> None:
        self._call("seq_copy", src, dst, n)

    def reset_batch(self) -> None:
        self._call("reset_batch")

    # --- threads and facts -----------------------------------------------------------
    def set_threads(self, n: int, n_batch: int | None = None) -> None:
        self._call("set_threads", n, n_batch)

    @property
    def n_threads(self) -> int:
        return self._call("get", "n_threads")

    @property
    def n_threads_batch(self) -> int:
        return self._call("get", "n_threads_batch")

    @property
    def batch_logits_exact(self) -> bool:
        return self._call("get", "batch_logits_exact")

    @property
    def resident_growth(self) -> int | None:
        """The child's resident memory growth over the load and first evaluation (LlamaCppEngine's)."""
        if self._growth is None and not self._closed and self._dead is None:
            self._growth = self._call("get", "resident_growth")
        return self._growth

    def metadata(self) -> dict[str, object]:
        self._require()
        return dict(self._facts["metadata"])

    # --- lifetime --------------------------------------------------------------------
    def close(self) -> None:
        """End the child (asked first, killed after CLOSE_WAIT_S); idempotent."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        # a call in flight past CLOSE_WAIT_S: the child is killed under it, and that call, seeing
        # the model closed, lets go of the rest
        if not self._lock.acquire(timeout=CLOSE_WAIT_S):
            self._kill()
            return
        try:
            self._shutdown(polite=self._dead is None and self._pending is None)
        finally:
            self._lock.release()

    def _shutdown(self, *, polite: bool) -> None:
        proc, conn = self._proc, self._conn
        if proc is not None and proc.poll() is None and polite and conn is not None:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                conn.send(("close", (), 0))
                proc.wait(timeout=CLOSE_WAIT_S)
        self._kill()
        if self._relay_thread is not None:
            self._relay_thread.join(timeout=2.0)
        self._release()

    def _release(self) -> None:
        """Close this end of the socket pair and the shared file (the child has ended)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        self._flat = self._row0 = None  # our own views of the map, so that it can close
        if self._mm is not None:
            with contextlib.suppress(BufferError):  # a view the caller still holds keeps it open
                self._mm.close()
        if self._logits_fd >= 0:
            os.close(self._logits_fd)
            self._logits_fd = -1
        for tokens in self._seqs:
            tokens.clear()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()
