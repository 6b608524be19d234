"""`localllm chat`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("chat", help="(chat: not built yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("localllm chat is not built yet")
