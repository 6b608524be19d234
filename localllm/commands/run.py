"""`localllm run`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("run", help="(run: not built yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("localllm run is not built yet")
