"""`localllm serve [MODEL ...]`: an OpenAI- and Ollama-compatible server on this machine.

Models named here load before the server listens and stay loaded; any other model a request
names (catalog name, name:quant, a file, "auto") loads when asked, if it fits beside the
others, and unloads after --keep-alive idle.
"""

from __future__ import annotations

import argparse
import sys

from localllm.commands.plan import MODEL_HELP, context_arg
from localllm.commands.run import _positive
from localllm.errors import LocalLLMError, RuntimeUnavailableError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(sub) -> None:
    p = sub.add_parser(
        "serve",
        help="serve models over OpenAI's and Ollama's HTTP APIs",
        description="Serve models over OpenAI's API (/v1/chat/completions, /v1/completions, /v1/models) and "
        "Ollama's (/api/chat, /api/generate, /api/tags, /api/ps, /api/show). Requests name the model; it "
        "loads if it fits beside the others and unloads when idle. Needs: pip install 'localllm[server]'.",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help=f"load these first and keep them ({MODEL_HELP})")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST}, this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' on every request")
    p.add_argument(
        "--keep-alive", default="5m", metavar="DURATION", help="unload a model idle this long (default 5m; -1 never)"
    )
    p.add_argument(
        "--parallel", type=_positive, default=4, metavar="N", help="requests decoded together per model (default 4)"
    )
    p.add_argument("--queue", type=_positive, default=64, metavar="N", help="requests waiting per model before 429")
    p.add_argument("--timeout", type=float, default=600.0, metavar="S", help="longest a request may take (default 600)")
    p.add_argument("--max-body", type=_positive, default=8 * 1024 * 1024, metavar="BYTES", help="request size limit")
    p.add_argument("--ctx", type=context_arg, metavar="N", help="context window of each sequence, in tokens")
    p.add_argument("--threads", type=_positive, metavar="N", help="CPU threads (default: the plan's)")
    p.add_argument("--offline", action="store_true", default=None, help="never touch the network")
    p.add_argument("--profile", metavar="NAME", help="plan for a hardware profile instead of this machine")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise RuntimeUnavailableError(
            "localllm serve needs FastAPI and uvicorn: pip install 'localllm[server]'"
        ) from None
    import logging

    import localllm
    from localllm.server.app import create_app
    from localllm.server.pool import ModelPool, PoolConfig, parse_keep_alive

    if args.host not in LOOPBACK and not args.api_key:
        print(
            f"warning: serving on {args.host} without --api-key: anyone who can reach this port can use it",
            file=sys.stderr,
        )
    config = PoolConfig(
        hardware=localllm.load_profile(args.profile) if args.profile else None,
        parallel=args.parallel,
        context=args.ctx,
        threads=args.threads,
        keep_alive_s=parse_keep_alive(args.keep_alive, 300.0),
        queue=args.queue,
        offline=args.offline,
    )
    _check_port(args.host, args.port)  # before any model loads: a port in use fails at once
    pool = ModelPool(config)
    try:
        for name in args.models:  # before listening: a model that cannot load is this command's error
            print(f"loading {name} ...", file=sys.stderr, flush=True)
            served = pool.preload(name)
            info = served.model.info
            print(
                f"loaded {name}: {info.runtime}, context {info.n_ctx} x {info.placement.n_seq} sequences",
                file=sys.stderr,
            )
        app = create_app(
            pool, api_key=args.api_key, max_body=args.max_body, timeout_s=args.timeout, preload=args.models
        )
    except BaseException:
        pool.close()
        raise
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    print(f"localllm serve: http://{args.host}:{args.port}/v1 (OpenAI) and /api (Ollama)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=30)
    return 0


def _check_port(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise LocalLLMError(f"cannot serve on {host}: {exc}; pass --host with an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            raise LocalLLMError(
                f"cannot listen on {host}:{port} ({exc.strerror}); another server may hold it: "
                "pass --port N, or stop the other one"
            ) from None
