"""Keep native output off the screen while the TUI runs.

llama.cpp (and ggml) write to file descriptor 2, which is where Textual draws on Linux
and macOS. Before the app starts, Textual gets its own duplicate of the terminal (as
sys.__stderr__, which its driver writes to) and fds 1 and 2 are pointed at a log file,
so whatever native code prints lands in the log, not on top of the chat.

sys.__stdout__ also becomes a duplicate of the terminal: `shutil.get_terminal_size`
asks it for the window size.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from localllm.paths import home

__all__ = ["native_log_path", "protect_terminal"]

LOG_NAME = "tui-native.log"


def native_log_path() -> Path:
    """The log file that receives native stdout/stderr while the TUI runs (in the cache dir)."""
    return home() / "logs" / LOG_NAME


@contextlib.contextmanager
def protect_terminal(log_path: str | Path | None = None) -> Iterator[Path]:
    """Point fds 1 and 2 at a log file; give Python (and so Textual) private copies of the terminal."""
    path = Path(log_path) if log_path is not None else native_log_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {1: os.dup(1), 2: os.dup(2)}  # to put things back afterwards
    # Python-level streams on private duplicates of the terminal, for Textual
    out_encoding = getattr(sys.__stdout__, "encoding", None) or "utf-8"  # __stdout__ is None without a console
    err_encoding = getattr(sys.__stderr__, "encoding", None) or "utf-8"
    tty_out = os.fdopen(os.dup(1), "w", buffering=1, encoding=out_encoding, errors="replace")
    tty_err = os.fdopen(os.dup(2), "w", buffering=1, encoding=err_encoding, errors="replace")
    old = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        sys.stdout, sys.stderr = tty_out, tty_err
        _set_original_streams(tty_out, tty_err)
        yield path
    finally:
        sys.stdout, sys.stderr = old[0], old[1]
        _set_original_streams(old[2], old[3])
        with contextlib.suppress(OSError):
            tty_out.flush()
            tty_err.flush()
        os.dup2(saved[1], 1)
        os.dup2(saved[2], 2)
        for fd in (*saved.values(), log_fd):
            os.close(fd)
        tty_out.close()
        tty_err.close()


def _set_original_streams(out: io.TextIOWrapper | None, err: io.TextIOWrapper | None) -> None:
    # typeshed marks sys.__stdout__/__stderr__ Final; they are replaced on purpose, since
    # Textual's driver writes to sys.__stderr__ and asks sys.__stdout__ for the window size
    sys.__stdout__ = out  # type: ignore[misc]
    sys.__stderr__ = err  # type: ignore[misc]
