"""`localllm bench`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("bench", help="(bench: not built yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("localllm bench is not built yet")
