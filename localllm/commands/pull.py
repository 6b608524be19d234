"""`localllm pull`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("pull", help="(pull: not built yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("localllm pull is not built yet")
