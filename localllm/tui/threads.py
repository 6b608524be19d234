"""Worker threads of the TUI: lower_thread_priority, so the UI thread wins the CPU. No Textual here."""

from __future__ import annotations

import os
import sys
import threading

__all__ = ["WORKER_NICENESS", "lower_thread_priority"]

# Niceness added to worker threads (Linux: per thread; threads they start, like ggml's
# compute threads, inherit it): on a busy machine the UI thread wins the CPU over token
# generation, so typing and drawing stay smooth while a reply streams.
WORKER_NICENESS = 5


def lower_thread_priority() -> None:
    """Lower the calling thread's CPU priority (Linux only; elsewhere a no-op)."""
    if sys.platform.startswith("linux") and hasattr(os, "setpriority"):
        try:
            tid = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + WORKER_NICENESS))
        except OSError:  # not permitted: run at normal priority
            pass
