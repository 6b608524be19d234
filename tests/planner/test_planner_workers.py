"""Plans across llama.cpp RPC workers (issue 19): each worker a device with its own budget, the
layers split by what each offers, the link's cost in the predicted speed, and workers used only
when the model does not fit here. Pure: the workers are described as rpc.describe would."""

from __future__ import annotations

import pytest

from localllm.errors import InvalidOptionError
from localllm.hardware.detect import load_profile
from localllm.planner import plan
from localllm.planner.api import find_workers
from localllm.planner.workers import ROUND_TRIPS_PER_WORKER, WORKER_MARGIN, WORKERS_ENV
from localllm.runtimes.rpc import WorkerInfo

GIB = 2**30


def worker(port: int, gib: float, rtt: float | None = 0.0005) -> WorkerInfo:
    size = int(gib * GIB)
    return WorkerInfo(f"10.0.0.{port - 50050}:{port}", (7, 0, 0), ((size, size),), rtt)


@pytest.fixture
def container():
    return load_profile("container-4gib")  # 4 GiB cgroup: a Qwen3-8B Q4_K_M (5 GB) does not fit


def test_a_model_too_big_here_is_split_across_two_workers_by_what_each_offers(container):
    alone = plan("qwen3-8b:q4_k_m", hardware=container, workers=[])
    assert not alone.fits
    ws = [worker(50052, 3.0), worker(50053, 2.0)]
    p = plan("qwen3-8b:q4_k_m", hardware=container, workers=ws)
    assert p.fits and p.where in ("gpu", "partial")
    assert p.placement.workers == ("10.0.0.2:50052", "10.0.0.3:50053")
    assert p.placement.n_gpu_layers > 0
    budgets = [3 * GIB - WORKER_MARGIN, 2 * GIB - WORKER_MARGIN]
    share = budgets[0] / sum(budgets)
    assert p.placement.tensor_split == pytest.approx((share, 1 - share), abs=1e-3)
    on_workers = [d for d in p.memory.devices if d.device != "cpu"]
    assert len(on_workers) == 2
    for d, budget in zip(on_workers, budgets, strict=True):  # each within what that worker offers
        assert 0 < d.total <= budget
        assert d.n_layers > 0
    assert on_workers[0].n_layers > on_workers[1].n_layers  # the larger offer takes more layers
    text = p.explain()
    assert "llama.cpp RPC workers" in text and "add memory, not speed" in text
    assert "offered by worker 10.0.0.2:50052" in text and "round trip 0.50 ms" in text
    assert "it does not fit in RAM here alone" in text
    assert f"x {ROUND_TRIPS_PER_WORKER} round trips" in p.tokens_per_s_basis
    assert p.to_dict()["placement"]["workers"] == ["10.0.0.2:50052", "10.0.0.3:50053"]


def test_a_model_that_fits_here_does_not_use_the_workers(container):
    p = plan("qwen3-1.7b:q4_k_m", hardware=container, workers=[worker(50052, 3.0)])
    assert p.fits and p.where == "cpu"
    assert p.placement.workers == () and p.placement.n_gpu_layers == 0 and p.placement.tensor_split == ()
    assert any("workers are not needed" in r for r in p.reasons)
    assert p.placement == plan("qwen3-1.7b:q4_k_m", hardware=container, workers=[]).placement


def test_the_link_costs_speed_and_a_slower_link_costs_more(container):
    fast = plan("qwen3-8b:q4_k_m", hardware=container, workers=[worker(50052, 3.0, 0.0001), worker(50053, 2.0, 0.0001)])
    slow = plan("qwen3-8b:q4_k_m", hardware=container, workers=[worker(50052, 3.0, 0.02), worker(50053, 2.0, 0.02)])
    assert fast.tokens_per_s and slow.tokens_per_s
    assert slow.tokens_per_s < fast.tokens_per_s
    # 2 workers x 2 round trips x 20 ms = 80 ms a token at least: under 12.5 tokens/s
    assert slow.tokens_per_s < 1 / (2 * ROUND_TRIPS_PER_WORKER * 0.02)
    assert "20.00 ms measured" in slow.tokens_per_s_basis


def test_workers_too_small_for_the_model_leave_it_unfit_saying_so(container):
    p = plan("qwen3-8b:q4_k_m", hardware=container, workers=[worker(50052, 0.5)])
    assert not p.fits
    assert p.placement.workers == ()


def test_a_worker_that_cannot_be_used_is_left_out_with_its_reason(container):
    broken = WorkerInfo("10.0.0.9:50052", (0, 0, 0), (), error="worker 10.0.0.9:50052 cannot be reached (left out)")
    p = plan("qwen3-8b:q4_k_m", hardware=container, workers=[worker(50052, 3.0), worker(50053, 2.0), broken])
    assert p.fits and "10.0.0.9:50052" not in p.placement.workers
    assert any("10.0.0.9:50052 cannot be reached" in w for w in p.warnings)


def test_endpoints_come_from_the_environment_and_a_typo_is_refused(monkeypatch):
    # no RPC build in this test's LOCALLLM_HOME: every worker is left out, saying how to build one
    monkeypatch.setenv("LOCALLLM_RPC_DIR", "/nonexistent/rpc")
    monkeypatch.setenv(WORKERS_ENV, "127.0.0.1:1, 127.0.0.1:2,")
    found, left_out = find_workers(None)
    assert found == ()
    assert [w.split(" left out")[0] for w in left_out] == ["worker 127.0.0.1:1", "worker 127.0.0.1:2"]
    assert all("localllm worker --build-only" in w for w in left_out)
    monkeypatch.delenv(WORKERS_ENV)
    assert find_workers(None) == ((), ())
    with pytest.raises(InvalidOptionError, match="not host:port"):
        find_workers(["127.0.0.1"])
