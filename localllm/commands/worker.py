"""`localllm worker`: this machine's memory and CPU (or GPU) as a llama.cpp RPC worker for another.

Runs llama.cpp's `ggml-rpc-server`, built once from the installed llama-cpp-python's own source
(localllm.runtimes.rpc_build), so that it speaks the protocol of the llama.cpp the main
machine's localllm drives. It binds to 127.0.0.1 unless told otherwise: the RPC protocol has
no authentication, and anyone who reaches the port can run code on this machine's devices.
"""

from __future__ import annotations

import argparse
import os
import sys

from localllm.commands.run import _positive
from localllm.commands.serve import LOOPBACK
from localllm.runtimes.rpc_build import MEM_ENV
from localllm.units import memory_size, parse_memory

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 50052
OPEN_WARNING = (
    "WARNING: llama.cpp's RPC protocol has no authentication or encryption. Bound to {host}, this "
    "worker lets anyone who reaches port {port} use its memory and run computations on it. Only ever "
    "bind it to a private network you trust, never to one open to others."
)


def register(sub) -> None:
    p = sub.add_parser(
        "worker",
        help="lend this machine to another's localllm as a llama.cpp RPC worker",
        description="Run llama.cpp's RPC server (ggml-rpc-server), built once from the installed "
        "llama-cpp-python's source (about a minute; needs cmake and a C++ compiler). The main machine "
        "names it as host:port. It binds to 127.0.0.1 unless --host says otherwise: the protocol has "
        "no authentication.",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--threads", type=_positive, metavar="N", help="CPU threads for the worker's computations")
    p.add_argument(
        "--mem",
        type=_memory,
        metavar="SIZE",
        help="memory to offer, e.g. 8G or 512M (default: 90%% of the RAM usable here, cgroup limits included); "
        "the main machine's plan puts no more than this here",
    )
    p.add_argument("--cache", action="store_true", help="keep received weights in llama.cpp's local file cache")
    p.add_argument("--build-only", action="store_true", help="build the worker if needed, print where it is, exit")
    p.set_defaults(func=run)


def _memory(text: str) -> int:
    try:
        return parse_memory(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _offer(mem: int | None) -> tuple[int | None, str]:
    """The memory this worker reports (bytes) and where the figure comes from."""
    if mem is not None:
        return mem, "--mem"
    from localllm.hardware.detect import probe
    from localllm.planner import RAM_FRACTION

    usable = probe().memory.usable
    if usable is None:
        return None, "this machine's usable memory is unknown; pass --mem"
    return int(usable * RAM_FRACTION), f"{RAM_FRACTION:.0%} of {memory_size(usable)} usable here"


def run(args: argparse.Namespace) -> int:
    from localllm.runtimes.rpc_build import build_rpc

    build = build_rpc(progress=lambda text: print(f"worker: {text}", file=sys.stderr, flush=True))
    if args.build_only:
        print(build.server)
        return 0
    if args.host not in LOOPBACK:
        print(OPEN_WARNING.format(host=args.host, port=args.port), file=sys.stderr, flush=True)
    cmd = [str(build.server), "--host", args.host, "--port", str(args.port)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.cache:
        cmd.append("--cache")
    offer, basis = _offer(args.mem)
    env = {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(build.folder), os.environ.get("LD_LIBRARY_PATH")])),
    }
    if offer is not None:
        env[MEM_ENV] = str(offer)
    protocol = ".".join(map(str, build.protocol))
    print(
        f"worker: {args.host}:{args.port}, RPC protocol {protocol} (llama-cpp-python {build.llama_cpp_version}), "
        f"offering {memory_size(offer, unknown='all memory')} ({basis})",
        file=sys.stderr,
        flush=True,
    )
    # the server takes this process's place (its pid, signals and exit status): killing the
    # worker kills the server, and nothing is left listening behind a wrapper that is gone
    os.execve(cmd[0], cmd, env)
    return 1  # pragma: no cover - execve does not return
