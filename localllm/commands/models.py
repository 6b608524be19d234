"""`localllm models`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("models", help="(models: not built yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("localllm models is not built yet")
