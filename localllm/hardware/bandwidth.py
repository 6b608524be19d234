"""Measure this machine's memory read bandwidth (about a second), and keep it.

Decode speed on a CPU is bounded by how fast the weights stream from RAM. We read a
few hundred MB with numpy (`max()` over int64: vectorised, no BLAS threads, releases
the GIL) once on one thread and once on every core, best of several passes, and keep
both figures with this machine's calibration (`localllm.calibration`). `probe()`
reports the kept figure as `memory.bandwidth_gbs`; the planner uses it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

from localllm.calibration import BandwidthRecord, load_calibration, save_bandwidth
from localllm.hardware.detect import probe

if TYPE_CHECKING:  # pragma: no cover
    from localllm.hardware.facts import Hardware

__all__ = ["DEFAULT_BYTES", "machine_bandwidth", "measure_bandwidth"]

log = logging.getLogger(__name__)

# 256 MiB: far beyond any last-level cache here (tens of MB), small enough to allocate
# anywhere a model could run.
DEFAULT_BYTES = 256 * 2**20
# Passes per measurement; the best is kept (interference only slows a pass down).
DEFAULT_PASSES = 5
# Stop early once this much time is spent (the first pass also pages the array in).
TIME_BUDGET_S = 1.5
# Slices per pass, timed one by one: 32 MiB each by default, still beyond the caches.
SLICES = 8


def measure_bandwidth(
    *, nbytes: int = DEFAULT_BYTES, threads: int | None = None, passes: int = DEFAULT_PASSES
) -> BandwidthRecord:
    """Read `nbytes` repeatedly; best GB/s on one thread and on `threads` (default: usable cores).

    Each pass reads the array in SLICES slices timed one by one: the best slice is the
    rate when no other program took the core, and each slice was last read a whole array
    earlier, so it comes from RAM, not cache.
    """
    import numpy as np

    if nbytes < 2**20:
        raise ValueError(f"nbytes must be at least 1 MiB to measure RAM, not cache; got {nbytes}")
    if threads is None:
        threads = _usable_cores()
    threads = max(1, int(threads))
    a = np.ones(nbytes // 8, dtype=np.int64)  # written once: every page is resident
    one = _best([s for s in np.array_split(a, SLICES)], 1, passes)
    many = _best([s for s in np.array_split(a, SLICES)], threads, passes) if threads > 1 else one
    return BandwidthRecord(
        gbs=round(max(one, many), 2),
        per_thread_gbs=round(one, 2),
        threads=threads,
        bytes=int(a.nbytes),
        date=_dt.datetime.now().isoformat(timespec="seconds"),
        method=f"numpy max() over int64 slices of {nbytes // SLICES // 2**20} MiB, best of "
        f"{passes} passes x {SLICES} slices",
    )


def machine_bandwidth(hw: Hardware | None = None, *, refresh: bool = False) -> BandwidthRecord:
    """This machine's kept bandwidth, measured (and kept) now if there is none or `refresh`."""
    if hw is None:
        hw = probe()
    if not refresh:
        kept = load_calibration(hw).bandwidth
        if kept is not None:
            return kept
    record = measure_bandwidth()
    save_bandwidth(hw, record)
    log.info(
        "memory bandwidth %.1f GB/s (%d threads), %.1f GB/s on one thread",
        record.gbs,
        record.threads,
        record.per_thread_gbs,
    )
    return record


def _best(slices, threads: int, passes: int) -> float:
    """Best GB/s over slices read by `threads` threads at once (each its own slice)."""
    groups = [slices[i : i + threads] for i in range(0, len(slices) - threads + 1, threads)]

    def read(group) -> None:
        workers = [threading.Thread(target=s.max) for s in group[1:]]
        for w in workers:
            w.start()
        group[0].max()
        for w in workers:
            w.join()

    for g in groups:  # warm: page tables, thread start-up
        read(g)
    best = 0.0
    start = time.perf_counter()
    for _ in range(max(1, passes)):
        for g in groups:
            t0 = time.perf_counter()
            read(g)
            dt = time.perf_counter() - t0
            best = max(best, sum(s.nbytes for s in g) / dt / 1e9)
        if time.perf_counter() - start > TIME_BUDGET_S:
            break
    return best


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1
