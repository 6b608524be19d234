"""Is a worker still there? The checks a hosted engine (`localllm.runtimes.hosted`) makes.

What can and cannot be asked of a worker while a model uses it (measured on llama.cpp's
`ggml-rpc-server` of llama-cpp-python 0.3.36):

- The server serves one client at a time, and the model's process stays connected for as long as
  the model is loaded. So HELLO from anyone else is never answered then, by a healthy worker
  either: `rpc.hello` cannot tell a busy worker from a stuck one during a generation.
- Worse, such a HELLO kills the worker later: its connection waits in the listen queue, and when
  the model's process lets go the worker accepts it, writes its answer to a socket the asker has
  closed, and dies of SIGPIPE. Nothing here sends a worker anything while a model holds it.
- A bare TCP connect is answered by the kernel (listen backlog 1: two connections queue, then
  connects time out), so it says nothing either after the second try.

So during a call: a worker on this machine is looked up in /proc (the process that listens on
its port) and counted lost when it is stopped (SIGSTOP, state T) or gone; a worker elsewhere is
watched by the kernel's keepalive on the model process's connections (hosted_child.arm_keepalive),
which makes llama.cpp's client fail, and so the child end, when the worker's machine no longer
answers at all. A worker process stuck on a machine that still answers TCP looks the same as a
long computation from here, and is waited for. Once the child has ended, its connections are
closed and each worker can be asked with HELLO (`unanswered`) to say which ones are gone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import threading

from localllm.runtimes import rpc

__all__ = ["LocalWorkers", "exit_words", "frozen", "unanswered"]

_PROC = "/proc"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column
_LOST_STATES = {"T": "stopped (state T: sent SIGSTOP or suspended)", "t": "stopped by a debugger (state t)"}
_GONE_STATES = {"Z": "exited (a zombie, state Z)", "X": "exited (state X)"}


def exit_words(returncode: int | None) -> str:
    """How a child ended, in words: "was killed by SIGABRT", "exited with status 1"."""
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def unanswered(endpoints: list[str], *, timeout: float = 1.0) -> dict[str, str]:
    """The workers that do not answer HELLO within `timeout` (asked together), each with why.
    Only for workers no process of ours is connected to any more (see the module docstring)."""
    out: dict[str, str] = {}

    def ask(endpoint: str) -> None:
        try:
            rpc.hello(endpoint, timeout=timeout)
        except rpc.WorkerUnavailableError as exc:
            out[endpoint] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a malformed endpoint is not answered either
            out[endpoint] = f"worker {endpoint}: {exc}"

    threads = [threading.Thread(target=ask, args=(ep,), daemon=True) for ep in endpoints]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 1.0)
    return {ep: out[ep] for ep in endpoints if ep in out}


class LocalWorkers:
    """Which process listens for a worker on this machine (None: not on this machine, or unknown)."""

    def __init__(self) -> None:
        self.pids: dict[str, int | None] = {}

    def pid(self, endpoint: str) -> int | None:
        if endpoint not in self.pids:
            self.pids[endpoint] = _listener_pid(endpoint)
        return self.pids[endpoint]


def frozen(endpoints: list[str], local: LocalWorkers | None = None) -> dict[str, str]:
    """The workers on this machine whose process is stopped or gone, each with why (Linux /proc;
    elsewhere, and for workers on other machines, nothing is known and nothing is returned)."""
    local = local or LocalWorkers()
    out = {}
    for endpoint in endpoints:
        pid = local.pid(endpoint)
        if pid is None:
            continue
        state = _state(pid)
        if state is None or state in _GONE_STATES:
            out[endpoint] = f"worker {endpoint} (process {pid}) " + _GONE_STATES.get(state or "", "has exited")
        elif state in _LOST_STATES:
            out[endpoint] = f"worker {endpoint} (process {pid}) is {_LOST_STATES[state]}"
    return out


def _state(pid: int) -> str | None:
    try:
        with open(f"{_PROC}/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the name in parentheses may hold spaces
    return fields[0] if fields else None


def _is_local(address: str) -> bool:
    """Whether `address` is this machine's: loopback, or one a socket can bind here."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if ip.is_loopback:
        return True
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def _hex_address(address: str) -> set[str]:
    """How /proc/net/tcp{,6} write `address` (and the wildcard a listener may be bound to)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 4:
        return {ip.packed[::-1].hex().upper(), "00000000"}
    words = [ip.packed[i : i + 4][::-1].hex().upper() for i in range(0, 16, 4)]
    return {"".join(words), "0" * 32}


def _listener_pid(endpoint: str) -> int | None:
    if not os.path.isdir(f"{_PROC}/self/fd"):
        return None
    try:
        host, port = rpc.parse_endpoint(endpoint)
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)}
    except (OSError, ValueError):
        return None
    inodes = set()
    for address in addresses:
        if not _is_local(address):
            continue
        wanted = _hex_address(address)
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError), open(f"{_PROC}/net/{table}") as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if len(cols) < 10 or cols[3] != _LISTEN:
                        continue
                    addr, _, hex_port = cols[1].partition(":")
                    if int(hex_port, 16) == port and addr in wanted:
                        inodes.add(f"socket:[{cols[9]}]")
    return _owner(inodes) if inodes else None


def _owner(links: set[str]) -> int | None:
    """The process holding one of these sockets (its fds readable by us: the same user, or root)."""
    for name in os.listdir(_PROC):
        if not name.isdigit():
            continue
        try:
            fds = os.listdir(f"{_PROC}/{name}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"{_PROC}/{name}/fd/{fd}") in links:
                    return int(name)
            except OSError:
                continue
    return None
