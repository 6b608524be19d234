"""Choose the model variant, runtime and placement that truly fit a machine, and say why.

A pure function of (Hardware, Catalog, request): no I/O once the hardware is known.

- values.py   Plan (explain, to_dict), VariantFit, Rejected, DeviceBudget, workloads
- machine.py  the request and the machine: RAM and GPU budgets, margins, threads, repacking
- search.py   one variant: GPU, partial offload, CPU, each down one shrinking-context ladder
- batch.py    batch work: how many sequences to decode together, their aggregate tokens/s
- rank.py     across variants: the choice, its reasons, warnings, rejected list, Placement
- runtime.py  runtime names and aliases, and the choice between llama.cpp and ONNX Runtime
- onnx.py     a local ONNX folder: its Family, `plan_local_onnx`
- api.py      `plan`, `plan_among` (any list of variants), `plan_local`, `fit_table`

Search order for each variant: fully on the GPU(s) at the target context; fully on the
GPU(s) with the context shrunk toward a floor; partial offload (as many layers as fit);
CPU at the target context; CPU with the context shrunk. Across variants, "auto" takes
the best tier first, then (for interactive work) variants predicted to decode at least
INTERACTIVE_MIN_TOKENS_PER_S, then the highest quality, then the smaller file.
"""

from __future__ import annotations

from localllm.estimator import MemoryEstimate
from localllm.placement import KV_TYPES, RUNTIMES
from localllm.planner.api import fit_table, plan, plan_among, plan_local
from localllm.planner.batch import BATCH_NEAR_BEST, batch_throughput
from localllm.planner.machine import (
    APPLE_WORKING_SET_FRACTION,
    DEFAULT_THREADS,
    GPU_MARGIN,
    GPU_MARGIN_DEFAULT,
    RAM_FRACTION,
)
from localllm.planner.onnx import plan_local_onnx
from localllm.planner.rank import INTERACTIVE_MIN_TOKENS_PER_S, THREAD_SWITCH_MARGIN
from localllm.planner.runtime import RUNTIME_ALIASES
from localllm.planner.search import CONTEXT_FLOOR, DEFAULT_CONTEXT
from localllm.planner.values import (
    BATCH_CONTEXT,
    BATCH_CONTEXT_FLOOR,
    MAX_PARALLEL,
    MAX_REJECTED,
    MAX_SEQ,
    WORKLOADS,
    DeviceBudget,
    Plan,
    Rejected,
    VariantFit,
    Workload,
)

__all__ = [
    "APPLE_WORKING_SET_FRACTION",
    "BATCH_CONTEXT",
    "BATCH_CONTEXT_FLOOR",
    "BATCH_NEAR_BEST",
    "CONTEXT_FLOOR",
    "DEFAULT_CONTEXT",
    "DEFAULT_THREADS",
    "DeviceBudget",
    "GPU_MARGIN",
    "GPU_MARGIN_DEFAULT",
    "INTERACTIVE_MIN_TOKENS_PER_S",
    "KV_TYPES",
    "MAX_PARALLEL",
    "MAX_REJECTED",
    "MAX_SEQ",
    "MemoryEstimate",
    "Plan",
    "RAM_FRACTION",
    "RUNTIMES",
    "RUNTIME_ALIASES",
    "Rejected",
    "THREAD_SWITCH_MARGIN",
    "VariantFit",
    "WORKLOADS",
    "Workload",
    "batch_throughput",
    "fit_table",
    "plan",
    "plan_among",
    "plan_local",
    "plan_local_onnx",
]
