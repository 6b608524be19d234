"""`localllm probe`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("probe", help="(probe: not built yet)")
    p.set_defaults(func=run)


def run(args) -> int:
    raise NotImplementedError("localllm probe is not built yet")
