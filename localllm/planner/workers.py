"""llama.cpp RPC workers as devices of a plan (issue 19): their budgets and the link's cost.

A worker (`localllm worker` on this or another machine) is a device to llama.cpp, like a GPU:
layers offloaded with n_gpu_layers go to the workers in the proportions of tensor_split, the
rest stay on this machine's CPU. The planner therefore sees each worker as one more device
with a budget (what the worker offers, capped at its --mem, less WORKER_MARGIN) and reuses the
partial-offload search: workers first, then this machine's CPU, as the issue orders it.

A layer split runs the layers one after another, so workers add memory, not speed: each
token's decode time is the sum of every device's part plus the link. Per token, llama.cpp's
client sends each worker its input activations and waits for its output: about
ROUND_TRIPS_PER_WORKER round trips at the latency measured when the plan was made
(rpc.describe), plus the bytes at LINK_BYTES_PER_S (not measured; assumed).

The plan uses the workers only when the model does not fit here at the target context: a
split that is not needed only costs link time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from localllm.hardware import GPUInfo
from localllm.units import MIB, memory_size

if TYPE_CHECKING:  # pragma: no cover
    from localllm.catalog import Variant
    from localllm.estimator import MemoryEstimate
    from localllm.runtimes.rpc import WorkerInfo

__all__ = [
    "LINK_BYTES_PER_S",
    "ROUND_TRIPS_PER_WORKER",
    "WORKERS_ENV",
    "WORKER_BACKEND",
    "WORKER_MARGIN",
    "link_seconds",
    "worker_devices",
    "workers_from_env",
]

WORKERS_ENV = "LOCALLLM_WORKERS"  # "host:port,host:port"
WORKER_BACKEND = "rpc"  # GPUInfo.backend of a worker seen as a device
# Kept free of what a worker offers: its own compute buffers and the rpc-server process beyond
# the tensors a plan counts (the offer is already 90% of its usable RAM by default).
WORKER_MARGIN = 64 * MIB
# Round trips per worker per decoded token: llama.cpp's client sets the worker's inputs, runs
# its graph and reads its output back (set_tensor and graph_compute need no answer in protocol
# 3+; get_tensor does; a synchronisation may add one).
ROUND_TRIPS_PER_WORKER = 2
# Link bandwidth assumed (1 Gbit/s Ethernet; loopback and faster links only make it cheaper):
# a token moves n_embd float32 activations to and from each worker, and the logits back from
# the last one when the output layer is there.
LINK_BYTES_PER_S = 125e6


def workers_from_env() -> tuple[str, ...]:
    """LOCALLLM_WORKERS as endpoints ("" or unset: none)."""
    return tuple(e.strip() for e in os.environ.get(WORKERS_ENV, "").split(",") if e.strip())


def worker_devices(
    workers: Sequence[WorkerInfo], *, start: int, bandwidth_gbs: float | None
) -> tuple[tuple[GPUInfo, ...], tuple[int, ...], tuple[str, ...]]:
    """Each worker as a device (GPUInfo with backend "rpc"), its budget and its basis in words.

    `bandwidth_gbs`: the memory bandwidth its layers decode at (a worker does not say its own:
    the caller assumes this machine's CPU)."""
    devices, budgets, bases = [], [], []
    for i, w in enumerate(workers):
        devices.append(
            GPUInfo(
                index=start + i,
                vendor=WORKER_BACKEND,
                name=f"worker {w.endpoint}",
                memory_total=w.total,
                memory_free=w.free,
                backend=WORKER_BACKEND,
                bandwidth_gbs=bandwidth_gbs,
            )
        )
        budgets.append(max(0, w.free - WORKER_MARGIN))
        rtt = f", round trip {w.rtt_s * 1e3:.2f} ms" if w.rtt_s is not None else ""
        bases.append(f"{memory_size(w.free)} offered by worker {w.endpoint} minus {memory_size(WORKER_MARGIN)}{rtt}")
    return tuple(devices), tuple(budgets), tuple(bases)


def link_seconds(
    variant: Variant, est: MemoryEstimate, gpus: Sequence[GPUInfo], rtts: Sequence[float | None]
) -> tuple[float, str]:
    """Seconds per decoded token spent on the link to the workers `est` uses, and how."""
    f = variant.family
    used = []
    for d in est.devices:
        if d.device == "cpu" or not d.total:
            continue
        i = int(d.device[3:])
        if i < len(gpus) and gpus[i].backend == WORKER_BACKEND:
            used.append(i)
    if not used:
        return 0.0, ""
    rtt_known = [r for r in rtts if r is not None]
    rtt = max(rtt_known) if rtt_known else 0.001
    moved = len(used) * 2 * f.n_embd * 4
    if est.n_gpu_layers > f.n_layer:  # the output layer on the last worker: the logits come back
        moved += f.n_vocab * 4
    seconds = len(used) * ROUND_TRIPS_PER_WORKER * rtt + moved / LINK_BYTES_PER_S
    how = (
        f"link {seconds * 1e3:.2f} ms/token: {len(used)} worker(s) x {ROUND_TRIPS_PER_WORKER} round trips x "
        f"{rtt * 1e3:.2f} ms{' measured' if rtt_known else ' assumed'} + {moved / 1e3:.0f} kB at "
        f"{LINK_BYTES_PER_S * 8 / 1e9:g} Gbit/s assumed"
    )
    return seconds, how
