"""The CPU free now: the pure thread decision with numbers, /proc/stat against fake /proc trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from localllm.hardware import cpu_load
from localllm.hardware.cpu_load import (
    FREE_CORE_SHARE,
    AdaptiveThreads,
    CpuMeter,
    choose_threads,
    parse_proc_stat,
)

ROOTS = Path(__file__).resolve().parents[1] / "fixtures" / "roots"


@pytest.mark.parametrize(
    ("ceiling", "cores", "others", "quota", "expected"),
    [
        (2, 2, 0.0, None, 2),  # idle: the plan's count
        (2, 2, 0.15, None, 2),  # background noise leaves both cores nearly free
        (2, 2, 0.3, None, 1),  # a third of a core taken: that core is not free enough to share
        (2, 2, 1.0, None, 1),  # one core kept busy
        (2, 2, 2.0, None, 1),  # both busy: never fewer than one
        (4, 16, 2.0, None, 4),  # plenty left: the ceiling holds
        (8, 16, 13.0, None, 3),  # 3 CPUs free
        (8, 3, 0.0, None, 3),  # the affinity mask allows 3 CPUs
        (8, 16, 0.0, 1.5, 1),  # a cgroup quota of 1.5 cores: one whole core
        (8, 16, 0.0, 4.0, 4),
        (4, 8, None, None, 4),  # load unknown: the ceiling, capped by the CPUs
        (4, None, 3.0, None, 4),  # CPUs unknown: others' use cannot be weighed
        (0, 4, 0.0, None, 1),  # a nonsense ceiling still gives one thread
    ],
)
def test_choose_threads(ceiling, cores, others, quota, expected):
    assert choose_threads(ceiling, cores=cores, others_busy=others, quota=quota) == expected


def test_a_core_counts_as_free_at_exactly_the_free_share():
    busy = 1 - FREE_CORE_SHARE  # the second core exactly FREE_CORE_SHARE idle
    assert choose_threads(2, cores=2, others_busy=busy, quota=None) == 2
    assert choose_threads(2, cores=2, others_busy=busy + 0.01, quota=None) == 1


STAT = """cpu  {a} 0 {b} {c} 10 0 5 0 0 0
cpu0 {a0} 0 {b0} {c0} 5 0 3 0 0 0
cpu1 {a1} 0 {b1} {c1} 5 0 2 0 0 0
intr 12345
ctxt 999
"""


def _stat(cpu0: tuple[int, int, int], cpu1: tuple[int, int, int]) -> str:
    (a0, b0, c0), (a1, b1, c1) = cpu0, cpu1
    return STAT.format(a=a0 + a1, b=b0 + b1, c=c0 + c1, a0=a0, b0=b0, c0=c0, a1=a1, b1=b1, c1=c1)


def test_parse_proc_stat_sums_the_cpus_asked_or_all():
    text = _stat((100, 50, 1000), (300, 20, 800))
    # busy = user + nice + system + irq + softirq + steal; total adds idle + iowait
    assert parse_proc_stat(text, frozenset({0})) == (100 + 50 + 3, 100 + 50 + 3 + 1000 + 5, 1)
    assert parse_proc_stat(text, frozenset({1})) == (300 + 20 + 2, 300 + 20 + 2 + 800 + 5, 1)
    both = parse_proc_stat(text, frozenset({0, 1}))
    assert both == parse_proc_stat(text, None) == (475, 2285, 2)
    # a CPU the file does not list (an offline one): the all-CPU line, counted over every CPU
    assert parse_proc_stat(text, frozenset({0, 7})) == (475, 2285, 2)
    assert parse_proc_stat("intr 1\n", None) is None
    assert parse_proc_stat("cpu  1 2 3\n", None) is None  # too few fields to know idle from busy


def _proc(root: Path, stat: str, own_ticks: int, loadavg: str = "0.00 0.00 0.00 1/100 42") -> None:
    (root / "proc/self").mkdir(parents=True, exist_ok=True)
    (root / "proc/stat").write_text(stat)
    # /proc/self/stat: utime and stime are the 14th and 15th fields (the name may hold spaces)
    (root / "proc/self/stat").write_text(f"42 (python3 -m x) R 1 42 42 0 -1 0 0 0 0 0 {own_ticks} 0 0 0 20 0 3\n")
    (root / "proc/loadavg").write_text(loadavg + "\n")


def test_meter_measures_others_busy_minus_this_process(tmp_path):
    cpus = frozenset({0, 1})
    _proc(tmp_path, _stat((100, 0, 1000), (100, 0, 1000)), own_ticks=50)
    meter = CpuMeter(tmp_path, affinity=cpus)
    # one second later (100 ticks per CPU): cpu0 busy all of it, cpu1 half; this process ran
    # 50 ticks of that itself: others used 150 - 50 ticks = 1.0 core
    _proc(tmp_path, _stat((200, 0, 1000), (150, 0, 1050)), own_ticks=100)
    load = meter.read()
    assert load.cores == 2 and load.window_s == pytest.approx(1.0)
    assert load.others_busy == pytest.approx(1.0)
    assert "CPU time over the last 1.0 s" in load.basis
    assert choose_threads(2, cores=load.cores, others_busy=load.others_busy, quota=load.quota) == 1


def test_meter_reads_only_the_cpus_this_process_may_use(tmp_path):
    _proc(tmp_path, _stat((100, 0, 1000), (100, 0, 1000)), own_ticks=0)
    meter = CpuMeter(tmp_path, affinity=frozenset({1}))
    _proc(tmp_path, _stat((200, 0, 1000), (100, 0, 1100)), own_ticks=0)  # only cpu0 (not ours) was busy
    load = meter.read()
    assert load.cores == 1 and load.others_busy == pytest.approx(0.0)


def test_a_short_window_keeps_the_last_measured_one_and_the_next_read_spans_both(tmp_path):
    cpus = frozenset({0, 1})
    _proc(tmp_path, _stat((100, 0, 1000), (100, 0, 1000)), own_ticks=0)
    meter = CpuMeter(tmp_path, affinity=cpus)
    _proc(tmp_path, _stat((200, 0, 1000), (200, 0, 1000)), own_ticks=0)  # 1 s, both CPUs busy
    assert meter.read().others_busy == pytest.approx(2.0)
    _proc(tmp_path, _stat((205, 0, 1005), (205, 0, 1005)), own_ticks=0)  # 0.1 s later: too short
    short = meter.read()
    assert short.others_busy == pytest.approx(2.0) and "the last window measured" in short.basis
    _proc(tmp_path, _stat((205, 0, 1095), (205, 0, 1095)), own_ticks=0)  # 1.0 s after the accepted one
    load = meter.read()
    assert load.window_s == pytest.approx(1.0) and load.others_busy == pytest.approx(0.1)


def test_the_first_window_too_short_falls_back_to_the_load_average(tmp_path):
    cpus = frozenset({0, 1})
    _proc(tmp_path, _stat((100, 0, 1000), (100, 0, 1000)), own_ticks=0, loadavg="2.50 1.00 0.50 3/100 42")
    meter = CpuMeter(tmp_path, affinity=cpus)
    load = meter.read()  # no time has passed
    # the load average counts the asking thread itself: 2.5 - 1 = 1.5 cores of others
    assert load.basis == "1-minute load average" and load.others_busy == pytest.approx(1.5)
    _proc(tmp_path, _stat((100, 0, 1000), (100, 0, 1000)), own_ticks=0, loadavg="9.00 1.00 0.50 3/100 42")
    assert meter.read().others_busy == pytest.approx(2.0)  # never more than the CPUs


def test_nothing_readable_never_raises_and_leaves_the_ceiling(tmp_path, monkeypatch):
    def no_loadavg():
        raise OSError("no load average here")

    monkeypatch.setattr(cpu_load.os, "getloadavg", no_loadavg)
    meter = CpuMeter(tmp_path / "nothing", affinity=frozenset({0, 1, 2, 3}))
    load = meter.read()
    assert load.others_busy is None and load.quota is None and load.cores == 4
    fit = AdaptiveThreads(3, meter=meter)
    choice = fit.choose()
    assert (choice.n_threads, choice.n_threads_batch) == (3, 3)
    assert "unknown" in choice.why


def test_cgroup_quota_caps_the_count(tmp_path):
    root = tmp_path / "root"
    shutil.copytree(ROOTS / "cgroup_v2", root)  # cpu.max: 1.5 cores
    _proc(root, _stat((100, 0, 1000), (100, 0, 1000)), own_ticks=0)
    meter = CpuMeter(root, affinity=frozenset({0, 1}))
    _proc(root, _stat((100, 0, 1100), (100, 0, 1100)), own_ticks=0)  # idle
    fit = AdaptiveThreads(2, meter=meter)
    choice = fit.choose()
    assert choice.load.quota == 1.5 and choice.n_threads == 1
    assert "cgroup quota 1.5 cores" in choice.why


def test_adaptive_threads_drop_prompt_threads_with_decode_ones(tmp_path):
    cpus = frozenset({0, 1})
    _proc(tmp_path, _stat((100, 0, 1000), (100, 0, 1000)), own_ticks=0)
    fit = AdaptiveThreads(2, 2, meter=CpuMeter(tmp_path, affinity=cpus))
    _proc(tmp_path, _stat((100, 0, 1100), (100, 0, 1100)), own_ticks=0)  # idle
    idle = fit.choose()
    assert (idle.n_threads, idle.n_threads_batch, idle.ceiling) == (2, 2, 2)
    _proc(tmp_path, _stat((200, 0, 1100), (150, 0, 1150)), own_ticks=0)  # 1.5 cores busy
    busy = fit.choose()
    assert (busy.n_threads, busy.n_threads_batch) == (1, 1) and fit.last is busy
    assert busy.why.startswith("1 of 2 threads: other programs used 1.50 of 2 CPUs")


def test_the_first_choice_takes_a_short_load_window_over_a_stale_load_average(tmp_path):
    """A small model loads in 0.1-0.2 s; the load average still counts the last minute's work."""
    cpus = frozenset({0, 1})
    stale = "1.80 1.00 0.50 1/100 42"  # a benchmark's previous run, just ended
    _proc(tmp_path, _stat((100, 0, 1000), (100, 0, 1000)), own_ticks=0, loadavg=stale)
    fit = AdaptiveThreads(2, meter=CpuMeter(tmp_path, affinity=cpus))
    # the load took 0.15 s (15 ticks a CPU), the process itself used 12 ticks, others 1
    _proc(tmp_path, _stat((112, 0, 1003), (101, 0, 1014)), own_ticks=12, loadavg=stale)
    first = fit.choose()
    assert first.load.window_s == pytest.approx(0.15) and first.n_threads == 2
    assert first.load.others_busy == pytest.approx(1 / 0.15 / 100)
    # later choices need a window of MIN_WINDOW_S: a 0.15 s one keeps the last measured
    _proc(tmp_path, _stat((127, 0, 1003), (101, 0, 1029)), own_ticks=12, loadavg=stale)
    assert "the last window measured" in fit.choose().load.basis
