"""How many cores this process can use right now, and the decode thread count that fits.

    CPU affinity (the CPUs it may run on) -> cgroup CPU quota -> what other programs are using,
    measured over the time since the last reading -> `choose_threads` (a pure function)

What others use is measured without sleeping: /proc/stat's busy time over the CPUs in the
affinity set, minus this process's own CPU time, over the window since the last reading (a
model's load is the first window; between generations it is the time since the one before).
Where /proc/stat is missing (macOS, Windows) or the window is too short to measure, the
1-minute load average stands in: it lags, but it is better than nothing. Nothing here raises.

Why fewer threads on a busy machine: llama.cpp's CPU backend meets its threads at a barrier
after every operation of the graph (hundreds per token) and, in an OpenMP build, libgomp's
default wait policy spins there. A thread that shares its core with another program is
descheduled for a whole time slice while the others spin for it, so each token stalls many
times. benchmarks/bench_busy.py on this project's 2-core machine (load average 4-5 from other
work besides), Llama-3.2-1B shape Q4_K_M, medians of 3: with one hog raw llama-cpp-python
decoded 10.5 tokens/s at 2 threads and 23.8 at 1; with two, 1.9 and 12.2.

Two other remedies were measured and are not used:
- A ggml threadpool with poll=0 attached to the context (llama_attach_threadpool). This build
  uses OpenMP (llama_print_system_info: OPENMP = 1): the pool starts no threads of its own,
  its barrier is `#pragma omp barrier`, and `poll` is read only by the non-OpenMP workers.
  Measured no better: 2.5 tokens/s with one hog, 10.9 with two (both noisy).
- OMP_WAIT_POLICY=PASSIVE (libgomp's threads sleep at a barrier at once): on the busy machine
  2 threads then ran about as fast as 1 (21.7 against 23.8 with one hog, 19.9 against 12.2
  with two), but on a nearly idle one 2 passive threads were no faster than 1 spinning (31-32
  tokens/s both, against 35-42 for 2 spinning), and libgomp reads it once, when it loads, so
  it cannot follow the load as a thread count can. It stays the user's choice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from localllm.hardware.linux import read_cgroup, read_text

__all__ = [
    "FIRST_WINDOW_S",
    "FREE_CORE_SHARE",
    "MIN_WINDOW_S",
    "AdaptiveThreads",
    "CpuLoad",
    "CpuMeter",
    "CpuTimes",
    "ThreadChoice",
    "busy_at_load",
    "choose_threads",
    "parse_proc_stat",
]

# A CPU counts as free for one more thread when at least this share of it was idle over the
# window: a thread that loses its core now and then stalls every barrier of the graph (see
# the module docstring). On the 2-core machine, with the other programs' use measured during
# each run, 2 threads beat 1 only below about a quarter of a core (37.6 against 29.6 tokens/s
# at 0.08 cores used, 27.5 against 25.9 at 0.3, 13.9 against 22.6 at 0.5-0.6).
FREE_CORE_SHARE = 0.8
# Shortest window measured from /proc/stat: it counts in clock ticks (USER_HZ, 100 a second
# on Linux), so 0.25 s on 2 CPUs is 50 ticks, a few ticks of rounding about 0.05 cores.
# A shorter window is not read: the next reading then spans both.
MIN_WINDOW_S = 0.25
# The first window (a model's load) may be shorter: a small model loads in 0.1-0.2 s, and the
# load average, which stands in otherwise, still counts whatever ran in the last minute (a
# benchmark's previous run, a build that just ended) and would start a quiet machine on 1
# thread. 0.1 s on 2 CPUs is 20 ticks: a hog shows as about 1.0 +- 0.1 cores, an idle CPU as 0-0.1.
FIRST_WINDOW_S = 0.1
# The load average counts the thread that asks (it is running): not another program's.
_OWN_RUNNING = 1.0
# /proc/stat cpu line fields after the name: user nice system idle iowait irq softirq steal
# (guest time is already inside user). Steal is time the hypervisor gave this CPU to others.
_BUSY_FIELDS = (0, 1, 2, 5, 6, 7)
_IDLE_FIELDS = (3, 4)


@dataclass(frozen=True)
class CpuTimes:
    """One reading: CPU seconds busy and in all over a set of CPUs, and this process's own."""

    busy: float
    total: float
    n_cpus: int
    own: float  # this process's CPU seconds (all its threads)
    cpus: frozenset[int] | None  # the CPUs summed (None: every CPU, from the "cpu" line)


@dataclass(frozen=True)
class CpuLoad:
    """What this process can use now: its CPUs, its quota, and what other programs used."""

    cores: int | None  # CPUs this process may run on (affinity); None: unknown
    quota: float | None  # cgroup CPU quota in cores; None: unlimited or unknown
    others_busy: float | None  # cores' worth of CPU other programs used; None: unknown
    window_s: float = 0.0  # over this many seconds (0: not measured over a window)
    basis: str = ""  # where others_busy comes from, in words


@dataclass(frozen=True)
class ThreadChoice:
    """The thread counts chosen for the next generation, and why."""

    n_threads: int
    n_threads_batch: int
    ceiling: int  # the plan's count: never more than this
    load: CpuLoad

    @property
    def why(self) -> str:
        load = self.load
        if load.others_busy is None:
            return f"{self.n_threads} of {self.ceiling} threads: the CPU's load is unknown here"
        cores = f" of {load.cores} CPUs" if load.cores else ""
        quota = f", cgroup quota {load.quota:g} cores" if load.quota is not None else ""
        return (
            f"{self.n_threads} of {self.ceiling} threads: other programs used {load.others_busy:.2f}"
            f"{cores}{quota} ({load.basis})"
        )


def choose_threads(ceiling: int, *, cores: int | None, others_busy: float | None, quota: float | None) -> int:
    """Decode threads for the CPU free now: at most `ceiling` (the plan's), the CPUs this
    process may use (`cores`, affinity) and the whole cores of its cgroup `quota`, and no more
    than the CPUs others leave free (each at least FREE_CORE_SHARE idle); always at least 1."""
    n = max(1, int(ceiling))
    if cores:
        n = min(n, cores)
    if quota is not None:
        n = min(n, max(1, int(quota)))
    if others_busy is not None and cores:
        free = max(0.0, cores - others_busy)
        # 1e-9: 2 - 0.2 + 0.2 lands a hair under 2.0 in floating point
        n = min(n, max(1, int(free + 1.0 - FREE_CORE_SHARE + 1e-9)))
    return n


def busy_at_load(threads: int, load: CpuLoad) -> bool:
    """Whether other programs leave fewer CPUs free than `threads` (an engine whose thread count
    is fixed at load then waits without spinning)."""
    return choose_threads(threads, cores=load.cores, others_busy=load.others_busy, quota=load.quota) < threads


def parse_proc_stat(text: str, cpus: frozenset[int] | None = None) -> tuple[int, int, int] | None:
    """(busy ticks, total ticks, CPUs counted) from /proc/stat: the per-CPU lines of `cpus`,
    or the "cpu" line of all when cpus is None (or none of them is listed); None if unreadable."""
    lines: dict[str, list[int]] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu"):
            continue
        try:
            lines[name] = [int(v) for v in rest.split()]
        except ValueError:
            continue
    rows = [lines[f"cpu{c}"] for c in sorted(cpus)] if cpus and all(f"cpu{c}" in lines for c in cpus) else []
    n = len(rows)
    if not rows:
        every = lines.get("cpu")
        if every is None:
            return None
        rows = [every]
        n = sum(1 for k in lines if k != "cpu") or 1
    if any(len(r) < 8 for r in rows):
        return None
    busy = sum(r[i] for r in rows for i in _BUSY_FIELDS)
    total = busy + sum(r[i] for r in rows for i in _IDLE_FIELDS)
    return busy, total, n


def _own_ticks(root: Path) -> int | None:
    """utime + stime of this process from /proc/self/stat (ticks: the same accounting as /proc/stat)."""
    text = read_text(root / "proc/self/stat")
    if not text or ")" not in text:
        return None
    fields = text.rsplit(")", 1)[1].split()
    try:  # after the name: state is field 3; utime and stime are fields 14 and 15
        return int(fields[11]) + int(fields[12])
    except (ValueError, IndexError):
        return None


def _affinity() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on macOS or Windows
        return None


class CpuMeter:
    """Others' CPU use between readings: the first reading is taken now, each `read()` measures
    the window since the last one it accepted. Best-effort: it never raises."""

    def __init__(self, root: Path = Path("/"), *, affinity: frozenset[int] | None = None) -> None:
        self._root = root
        self._fixed_affinity = affinity  # tests pass one with a fake root
        try:
            self.quota = read_cgroup(root)[0].cpu_quota  # read once: it rarely changes while a model runs
        except Exception:  # noqa: BLE001 - the probe's readers do not raise, but nothing here may
            self.quota = None
        self._tick = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._last = self._sample(self._cpus())
        self._last_load: CpuLoad | None = None

    def _cpus(self) -> frozenset[int] | None:
        return self._fixed_affinity if self._fixed_affinity is not None else _affinity()

    def _sample(self, cpus: frozenset[int] | None) -> CpuTimes | None:
        text = read_text(self._root / "proc/stat")
        parsed = parse_proc_stat(text, cpus) if text else None
        own = _own_ticks(self._root)
        if parsed is None or own is None:
            return None
        busy, total, n = parsed
        counted = cpus if cpus and n == len(cpus) else None
        return CpuTimes(busy / self._tick, total / self._tick, n, own / self._tick, counted)

    def read(self, *, min_window: float = MIN_WINDOW_S) -> CpuLoad:
        """What other programs used over the window since the last accepted reading."""
        cpus = self._cpus()
        cores = len(cpus) if cpus else os.cpu_count()
        try:
            now = self._sample(cpus)
        except Exception:  # noqa: BLE001 - best-effort: a surprise in /proc must not stop a generation
            now = None
        last = self._last
        if now is not None and last is not None and now.cpus == last.cpus and now.n_cpus == last.n_cpus:
            window = (now.total - last.total) / max(1, now.n_cpus)
            if window >= min_window:
                others = max(0.0, (now.busy - last.busy) - (now.own - last.own)) / window
                others = min(others, float(now.n_cpus))
                self._last = now
                load = CpuLoad(cores, self.quota, others, window, f"CPU time over the last {window:.1f} s")
                self._last_load = load
                return load
            if self._last_load is not None:  # too short to tell: the last measured window stands
                return replace(self._last_load, cores=cores, basis=self._last_load.basis + ", the last window measured")
        elif now is not None:  # the CPU set changed (or the first reading failed): start again
            self._last = now
        return CpuLoad(cores, self.quota, self._load_average(cores), 0.0, "1-minute load average")

    def _load_average(self, cores: int | None) -> float | None:
        text = read_text(self._root / "proc/loadavg")
        try:
            avg = float(text.split()[0]) if text else os.getloadavg()[0]
        except (OSError, AttributeError, ValueError, IndexError):  # Windows has no load average
            return None
        others = max(0.0, avg - _OWN_RUNNING)
        return min(others, float(cores)) if cores else others


class AdaptiveThreads:
    """Chooses the thread counts before each generation from the CPU free then, up to the
    plan's `ceiling` (decode) and `batch_ceiling` (prompt); the meter's first window starts now."""

    def __init__(self, ceiling: int, batch_ceiling: int | None = None, *, meter: CpuMeter | None = None) -> None:
        self.ceiling = max(1, int(ceiling))
        self.batch_ceiling = max(1, int(batch_ceiling or ceiling))
        self.meter = meter if meter is not None else CpuMeter()
        self.last: ThreadChoice | None = None

    def choose(self) -> ThreadChoice:
        load = self.meter.read(min_window=FIRST_WINDOW_S if self.last is None else MIN_WINDOW_S)
        n = choose_threads(self.ceiling, cores=load.cores, others_busy=load.others_busy, quota=load.quota)
        # prompt batches meet at the same barriers: on a busy machine they drop to the same count
        n_batch = self.batch_ceiling if n >= self.ceiling else n
        choice = ThreadChoice(n, n_batch, self.ceiling, load)
        self.last = choice
        return choice
