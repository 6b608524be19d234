"""Workers: llama.cpp RPC servers attached as devices of the llama.cpp this process drives (issue 19).

A worker is `ggml-rpc-server` (localllm.runtimes.rpc_build; `localllm worker` runs it) on this
or another machine. Attaching one:

1. `check_worker` opens a TCP connection and speaks the protocol's HELLO itself (command 14,
   24 bytes of capabilities, answered by major.minor.patch): a worker that does not answer, or
   speaks another version, is refused here with a LocalLLMError. llama.cpp's own client aborts
   the whole process on either (GGML_ABORT in ggml-rpc.cpp), so it must never meet one.
2. `attach` loads the RPC backend (libggml-rpc.so, built as a dynamic backend from the same
   source) into llama-cpp-python's ggml with `ggml_backend_load`, adds each worker with the
   backend's `ggml_backend_rpc_add_server` and registers it: llama.cpp then sees one device of
   type GPU per worker, puts RPC devices first when a model is loaded with n_gpu_layers > 0, and
   splits the layers by their free memory (or by a tensor split).

The library is reached by its soname, libggml.so.0, as libllama.so loaded it: the wheel holds
libggml.so, libggml.so.0 and libggml.so.0.x.y as three copies of one file (wheels keep no
symbolic links), and loading another copy makes a second ggml with a device registry that
llama.cpp never reads.

A worker lost while a model uses it makes llama.cpp's client abort its process: a placement
with workers is therefore loaded in a child process (localllm.runtimes.hosted), and the loss
ends the call with a GenerationError naming the worker. A worker serves one client at a time:
while a model holds it, `hello`/`describe` from elsewhere wait (and time out).
"""

from __future__ import annotations

import ctypes
import socket
import struct
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from localllm.errors import InvalidOptionError, LocalLLMError

__all__ = [
    "Worker",
    "WorkerInfo",
    "WorkerUnavailableError",
    "WorkerVersionError",
    "attach",
    "check_worker",
    "describe",
    "find_workers",
    "parse_endpoint",
]

GET_DEVICE_MEMORY = 11  # RPC_CMD_GET_DEVICE_MEMORY (protocol 7): {uint32 device} -> {uint64 free, total}
HELLO = 14  # RPC_CMD_HELLO, fixed for all versions ("must be always 14")
DEVICE_COUNT = 15  # RPC_CMD_DEVICE_COUNT (protocol 7): {} -> {uint32 count}
CAPS_SIZE = 24  # RPC_CONN_CAPS_SIZE: the request's capabilities; the answer is 4 bytes more
HELLO_TIMEOUT_S = 3.0
RTT_PINGS = 5


class WorkerUnavailableError(LocalLLMError, ConnectionError):
    """A worker did not answer."""


class WorkerVersionError(LocalLLMError):
    """A worker speaks another version of llama.cpp's RPC protocol."""


@dataclass(frozen=True)
class Worker:
    """An attached worker: one device of the llama.cpp in this process."""

    endpoint: str
    device: str  # llama.cpp's name for it (RPC0, RPC1, ...)
    free: int  # bytes, as the worker reported when attached
    total: int
    protocol: tuple[int, int, int]


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker offers, asked over the protocol itself (no llama.cpp in this process involved)."""

    endpoint: str
    protocol: tuple[int, int, int]
    memory: tuple[tuple[int, int], ...]  # (free, total) bytes of each of its devices
    rtt_s: float | None = None  # the quickest of a few round trips on the open connection
    error: str | None = None  # why it cannot be used (find_workers): a plan leaves it out, saying so

    @property
    def free(self) -> int:
        """Bytes its devices offer (a worker caps them at its --mem)."""
        return sum(free for free, _ in self.memory)

    @property
    def total(self) -> int:
        return sum(total for _, total in self.memory)


def parse_endpoint(text: str) -> tuple[str, int]:
    """ "host:port" -> (host, port)."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidOptionError(
            f"worker {text!r} is not host:port (for example 127.0.0.1:50052)",
            option="workers",
            value=text,
            allowed="host:port",
        )
    return host, int(port)


def hello(endpoint: str, *, timeout: float = HELLO_TIMEOUT_S) -> tuple[int, int, int]:
    """The RPC protocol version a worker speaks."""
    return _session(endpoint, None, timeout).protocol


def describe(endpoint: str, protocol: tuple[int, int, int], *, timeout: float = HELLO_TIMEOUT_S) -> WorkerInfo:
    """A worker's version (checked as `check_worker` does) and its devices' free and total memory."""
    return _session(endpoint, protocol, timeout)


def find_workers(endpoints: Sequence[str], *, timeout: float = HELLO_TIMEOUT_S) -> tuple[WorkerInfo, ...]:
    """What each worker offers, asked over the protocol (for a plan), each endpoint once, in order.

    A worker that does not answer, answers wrongly or speaks another protocol version comes back
    with `error` saying why (a plan leaves it out and says so); so does every worker when this
    machine has no RPC backend built. A malformed endpoint raises InvalidOptionError.
    """
    from localllm.runtimes.rpc_build import find_rpc_build

    unique = list(dict.fromkeys(e.strip() for e in endpoints))
    for endpoint in unique:  # a typo is the caller's to fix, not a worker to leave out
        parse_endpoint(endpoint)
    if not unique:
        return ()
    try:
        build = find_rpc_build()
    except LocalLLMError as exc:  # no llama-cpp-python here
        return tuple(WorkerInfo(ep, (0, 0, 0), (), error=f"worker {ep} left out: {exc}") for ep in unique)
    if build is None:
        why = "this machine has no llama.cpp RPC backend built yet: run `localllm worker --build-only` here once"
        return tuple(WorkerInfo(ep, (0, 0, 0), (), error=f"worker {ep} left out: {why}") for ep in unique)
    found = []
    for endpoint in unique:
        try:
            found.append(describe(endpoint, build.protocol, timeout=timeout))
        except LocalLLMError as exc:
            found.append(WorkerInfo(endpoint, (0, 0, 0), (), error=f"{exc} (left out of the plan)"))
    return tuple(found)


def _session(endpoint: str, protocol: tuple[int, int, int] | None, timeout: float) -> WorkerInfo:
    """HELLO, then (with `protocol`, once the version is checked) the devices' memory, on one connection."""
    host, port = parse_endpoint(endpoint)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            body = _call(sock, endpoint, HELLO, bytes(CAPS_SIZE), at_least=3)
            version = (body[0], body[1], body[2])
            if protocol is None:
                return WorkerInfo(endpoint, version, ())
            _check_version(endpoint, version, protocol)
            (count,) = struct.unpack("<I", _call(sock, endpoint, DEVICE_COUNT, b"", at_least=4)[:4])
            memory = []
            for device in range(min(count, 64)):
                free, total = struct.unpack(
                    "<QQ", _call(sock, endpoint, GET_DEVICE_MEMORY, struct.pack("<I", device), at_least=16)[:16]
                )
                memory.append((free, total))
            rtts = []
            for _ in range(RTT_PINGS):  # the link's latency, for the plan's network cost
                started = time.perf_counter()
                _call(sock, endpoint, DEVICE_COUNT, b"", at_least=4)
                rtts.append(time.perf_counter() - started)
            return WorkerInfo(endpoint, version, tuple(memory), min(rtts))
    except WorkerUnavailableError:  # a ConnectionError too: already says what happened
        raise
    except TimeoutError:
        raise WorkerUnavailableError(
            f"worker {endpoint} did not answer within {timeout:.0f} s; is `localllm worker` running there?"
        ) from None
    except OSError as exc:
        raise WorkerUnavailableError(
            f"worker {endpoint} cannot be reached ({exc.strerror or exc}); start it there with "
            f"`localllm worker --port {port}`"
        ) from None


def _call(sock: socket.socket, endpoint: str, cmd: int, payload: bytes, *, at_least: int) -> bytes:
    """One request (command byte, 8-byte size, payload) and its answer (8-byte size, body)."""
    sock.sendall(bytes([cmd]) + struct.pack("<Q", len(payload)) + payload)
    (size,) = struct.unpack("<Q", _read(sock, 8))
    if size < at_least or size > 4096:
        raise WorkerUnavailableError(
            f"worker {endpoint} answered command {cmd} with {size} bytes: not a llama.cpp RPC server this knows"
        )
    return _read(sock, size)


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the worker closed the connection")
        data += chunk
    return data


def check_worker(
    endpoint: str, protocol: tuple[int, int, int], *, timeout: float = HELLO_TIMEOUT_S
) -> tuple[int, int, int]:
    """The worker's version if this process can use it (ggml's rule: same major, minor not newer)."""
    theirs = hello(endpoint, timeout=timeout)
    _check_version(endpoint, theirs, protocol)
    return theirs


def _check_version(endpoint: str, theirs: tuple[int, int, int], protocol: tuple[int, int, int]) -> None:
    if theirs[0] != protocol[0] or theirs[1] > protocol[1]:
        raise WorkerVersionError(
            f"worker {endpoint} speaks RPC protocol {'.'.join(map(str, theirs))} and this llama.cpp "
            f"{'.'.join(map(str, protocol))}: run the worker from the same localllm and llama-cpp-python "
            "on both machines (`localllm worker` builds it from the installed llama-cpp-python's source)"
        )


_lock = threading.Lock()
_attached: dict[str, Worker] = {}
_rpc_reg: int | None = None


def attach(endpoints: list[str], build) -> list[Worker]:  # build: localllm.runtimes.rpc_build.RpcBuild
    """Check each worker, then make it a device of this process's llama.cpp (once per endpoint)."""
    versions = {ep: check_worker(ep, build.protocol) for ep in endpoints if ep not in _attached}
    with _lock:
        ggml, base = _libraries()
        global _rpc_reg
        if _rpc_reg is None:
            reg = ggml.ggml_backend_load(str(build.backend).encode())
            if not reg:
                raise LocalLLMError(f"llama.cpp could not load its RPC backend from {build.backend}")
            _rpc_reg = reg
        address = base.ggml_backend_reg_get_proc_address(_rpc_reg, b"ggml_backend_rpc_add_server")
        if not address:
            raise LocalLLMError(f"{build.backend} has no ggml_backend_rpc_add_server")
        add_server = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)(address)
        for endpoint, version in versions.items():
            reg = add_server(endpoint.encode())
            if not reg:
                raise WorkerUnavailableError(f"llama.cpp could not add worker {endpoint}")
            ggml.ggml_backend_register(reg)
            for i in range(base.ggml_backend_reg_dev_count(reg)):
                dev = base.ggml_backend_reg_dev_get(reg, i)
                free, total = ctypes.c_size_t(), ctypes.c_size_t()
                base.ggml_backend_dev_memory(dev, ctypes.byref(free), ctypes.byref(total))
                name = base.ggml_backend_dev_name(dev).decode()
                _attached[endpoint] = Worker(endpoint, name, free.value, total.value, version)
        return [_attached[ep] for ep in endpoints]


def _libraries() -> tuple[ctypes.CDLL, ctypes.CDLL]:
    import llama_cpp  # noqa: F401 - loads libllama.so, and with it libggml.so.0 and libggml-base.so.0

    ggml, base = ctypes.CDLL("libggml.so.0"), ctypes.CDLL("libggml-base.so.0")  # by soname: those very copies
    vp = ctypes.c_void_p
    ggml.ggml_backend_load.restype, ggml.ggml_backend_load.argtypes = vp, [ctypes.c_char_p]
    ggml.ggml_backend_register.restype, ggml.ggml_backend_register.argtypes = None, [vp]
    base.ggml_backend_reg_get_proc_address.restype = vp
    base.ggml_backend_reg_get_proc_address.argtypes = [vp, ctypes.c_char_p]
    base.ggml_backend_reg_dev_count.restype, base.ggml_backend_reg_dev_count.argtypes = ctypes.c_size_t, [vp]
    base.ggml_backend_reg_dev_get.restype, base.ggml_backend_reg_dev_get.argtypes = vp, [vp, ctypes.c_size_t]
    base.ggml_backend_dev_name.restype, base.ggml_backend_dev_name.argtypes = ctypes.c_char_p, [vp]
    size_p = ctypes.POINTER(ctypes.c_size_t)
    base.ggml_backend_dev_memory.restype, base.ggml_backend_dev_memory.argtypes = None, [vp, size_p, size_p]
    return ggml, base
