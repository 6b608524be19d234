"""The `localllm` command: thin; each subcommand lives in localllm/commands/<name>.py.

One error boundary: a LocalLLMError prints its message and exits 1; anything else
prints a one-line summary and exits 2. LOCALLLM_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from localllm import __version__
from localllm.errors import LocalLLMError

# Order is the order shown in --help.
COMMANDS = ("probe", "plan", "models", "pull", "run", "chat", "batch", "serve", "worker", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="localllm",
        description="Run a language model on the machine in front of you.",
    )
    parser.add_argument("--version", action="version", version=f"localllm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"localllm.commands.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `localllm models | head`
        return 0
    except LocalLLMError as exc:
        _report(exc, known=True)
        return 1
    except Exception as exc:  # the boundary: never a bare traceback for users
        _report(exc, known=False)
        return 2


def _report(exc: BaseException, *, known: bool) -> None:
    if os.environ.get("LOCALLLM_DEBUG") == "1":
        traceback.print_exc()
        return
    if known:
        print(f"error: {exc}", file=sys.stderr)
    else:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        print("This is a bug in localllm; run again with LOCALLLM_DEBUG=1 for the traceback.", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
