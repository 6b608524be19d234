"""`localllm plan`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("plan", help="(plan: not built yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("localllm plan is not built yet")
