"""The request and the machine as the search sees them: `prepare` checks the options and
turns a Hardware into a `Machine` (memory budgets and their margins, the GPUs a runtime
can use, threads, llama.cpp's weight-repacking facts, the ONNX Runtime provider)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from localllm.calibration import BatchRecord, Calibration, LoadRecord, load_calibration
from localllm.errors import InvalidOptionError, InvalidOptionTypeError
from localllm.estimator import BANDWIDTH_EFFICIENCY, CPU_THREAD_BANDWIDTH_GBS
from localllm.hardware import GPUInfo, Hardware
from localllm.placement import KV_TYPES, KVType, Runtime
from localllm.planner.runtime import runtime_name
from localllm.planner.values import MAX_SEQ, WORKLOADS, DeviceBudget, Workload
from localllm.planner.workers import worker_devices
from localllm.providers import GPU_VENDORS, provider_for
from localllm.repack import EXTRA_BUFFERS_ENV, features_from_cpu_flags, repack_rule
from localllm.units import MIB, file_size

if TYPE_CHECKING:  # pragma: no cover
    from localllm.runtimes.rpc import WorkerInfo

__all__ = [
    "APPLE_WORKING_SET_FRACTION",
    "DEFAULT_THREADS",
    "GPU_MARGIN",
    "GPU_MARGIN_DEFAULT",
    "Machine",
    "RAM_FRACTION",
    "Request",
    "batches_of",
    "calibration_for",
    "gpu_api",
    "loads_of",
    "prepare",
]

# Part of the usable RAM (MemAvailable, or the cgroup headroom, whichever is smaller) a
# plan may take: the rest stays for page cache growth, the app and the user's other
# programs. llama.cpp's own fitter assumes unlimited system RAM and ignores cgroups; we
# do not.
RAM_FRACTION = 0.90

# Device memory kept free on every GPU beyond our estimate: Ollama reserves 457 MiB per
# CUDA/ROCm GPU and 512 MiB on Metal (its gpu overhead defaults); our estimate already
# counts the runtime context (estimator.GPU_RUNTIME_OVERHEAD).
GPU_MARGIN = {"cuda": 457 * MIB, "rocm": 457 * MIB, "metal": 512 * MIB}
GPU_MARGIN_DEFAULT = 512 * MIB  # vulkan, sycl, unknown

# Apple GPUs may use recommendedMaxWorkingSetSize, about 65-75 % of RAM; when the probe
# could not read it, take the low end.
APPLE_WORKING_SET_FRACTION = 0.65

# Threads when the CPU core count is unknown.
DEFAULT_THREADS = 4

# The GPU API llama.cpp would drive a GPU with, when the probe did not name one.
_GPU_API_OF_VENDOR = {"nvidia": "cuda", "apple": "metal", "amd": "rocm"}


@dataclass(frozen=True)
class Machine:
    hw: Hardware
    ram: int | None  # bytes a plan may use in RAM (None: unknown)
    ram_basis: str
    gpus: tuple[GPUInfo, ...]  # GPUs the runtime can use
    gpu_budgets: tuple[int, ...]
    gpu_bases: tuple[str, ...]
    unified: bool
    threads: int  # decode threads
    notes: tuple[str, ...] = ()
    calibration: Calibration | None = None  # measured figures for this machine
    threads_explicit: bool = False  # the caller fixed the thread count
    provider: str | None = None  # ONNX Runtime execution provider (runtime onnxruntime)
    provider_why: str = ""
    batch_threads: int = 0  # prompt-processing threads (0: as decode)
    threads_basis: str = ""
    # llama.cpp's CPU backend features where it repacks weights (empty: no repacking), whether
    # an AMX build's AMX buffer works here, and where the facts come from
    repack: frozenset[str] = frozenset()  # empty: extra buffers off (env or a failed AMX trial)
    amx_usable: bool = True
    repack_basis: str = ""
    loads: tuple[LoadRecord, ...] = ()  # measured loads of the local file being planned
    # llama.cpp RPC workers (planner.workers): the devices after the GPUs, if any, in `gpus`
    workers: tuple[WorkerInfo, ...] = ()

    @property
    def worker_rtts(self) -> tuple[float | None, ...]:
        return tuple(w.rtt_s for w in self.workers)

    def budgets(self, *, with_gpus: bool) -> tuple[DeviceBudget, ...]:
        out = [
            DeviceBudget(
                "cpu" if not self.unified else "pool", self.ram if self.ram is not None else -1, self.ram_basis
            )
        ]
        if with_gpus:
            out += [
                DeviceBudget(f"gpu{i}", b, basis)
                for i, (b, basis) in enumerate(zip(self.gpu_budgets, self.gpu_bases, strict=True))
            ]
        return tuple(out)


@dataclass(frozen=True)
class Request:
    ctx_target: int | None  # None: DEFAULT_CONTEXT capped by the family
    ctx_explicit: bool
    workload: Workload
    runtime: Runtime
    kv_type: KVType
    onnx_kv_type: KVType | None = None  # a local ONNX folder's cache type (from its graph)
    onnx_kv_per_token: int | None = None  # ...and its bytes per token
    # sequences decoded together: what the caller asked (batch work), None for the planner's
    # choice (planner.batch); always 1 for interactive work
    n_seq: int | None = 1


def prepare(
    hw: Hardware,
    *,
    context: int | None,
    workload: str,
    runtime: str | None,
    kv_type: str | None,
    headroom: int | None,
    calibration: Calibration | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    workers: Sequence[WorkerInfo] = (),
    left_out: Sequence[str] = (),
) -> tuple[Request, Machine, Runtime]:
    """Check the options (ValueError / ModelNotFoundError) and describe the machine for `runtime`;
    `workers` (llama.cpp only) as found by rpc.find_workers, `left_out` the reasons it gave."""
    if workload not in WORKLOADS:
        raise ValueError(f"workload must be one of {', '.join(WORKLOADS)}, got {workload!r}")
    n_seq = _parallel(parallel, workload)
    kv = kv_type or "f16"
    rt = runtime_name(runtime)
    if rt == "onnxruntime" and kv_type is not None:
        raise ValueError(
            f"kv_type {kv_type!r} is a llama.cpp option: an ONNX export fixes its KV-cache type "
            "(f16 or f32) in its graph; leave kv_type unset for onnxruntime"
        )
    if kv not in KV_TYPES:
        raise ValueError(f"kv_type must be one of {', '.join(KV_TYPES)}, got {kv_type!r}")
    if context is not None and (not isinstance(context, int) or context < 16):
        raise ValueError(f"context must be a whole number of tokens >= 16, got {context!r}")
    if headroom is not None and headroom < 0:
        raise ValueError(f"headroom must be >= 0 bytes, got {headroom!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
    rt = rt or "llama.cpp"
    req = Request(
        ctx_target=context,
        ctx_explicit=context is not None,
        workload=workload,
        runtime=rt,
        kv_type=kv,
        n_seq=n_seq,
    )
    m = _machine(hw, runtime=rt, headroom=headroom or 0, calibration=calibration, threads=threads)
    if rt == "llama.cpp" and (workers or left_out):
        m = _with_workers(m, tuple(workers), tuple(left_out))
    return req, m, rt


def _with_workers(m: Machine, workers: tuple[WorkerInfo, ...], left_out: tuple[str, ...]) -> Machine:
    """`m` with the workers as devices. A local GPU is left out of such a plan: llama.cpp orders
    its devices by registration, and this version plans workers on a CPU-only main machine."""
    notes = list(m.notes) + list(left_out)
    if not workers:
        return replace(m, notes=tuple(notes))
    if m.gpus:
        notes.append(f"the local GPU ({m.gpus[0].name}) is not used in a plan across workers (not supported yet)")
    # a worker does not say how fast it computes: taken as this machine's CPU with as many threads
    threads_bw = m.threads * CPU_THREAD_BANDWIDTH_GBS / BANDWIDTH_EFFICIENCY
    bw = min(m.hw.memory.bandwidth_gbs or threads_bw, threads_bw)
    gpus, budgets, bases = worker_devices(workers, start=0, bandwidth_gbs=bw)
    return replace(
        m, gpus=gpus, gpu_budgets=budgets, gpu_bases=bases, unified=False, workers=workers, notes=tuple(notes)
    )


def _parallel(parallel: object, workload: str) -> int | None:
    """The sequences to decode together: `parallel` checked, None for the planner's choice (batch
    work), 1 for interactive work.

    Raises:
        InvalidOptionTypeError: not a whole number.
        InvalidOptionError: below 1 or above MAX_SEQ, or above 1 for interactive work.
    """
    if parallel is None:
        return None if workload == "batch" else 1
    if isinstance(parallel, bool) or not isinstance(parallel, int):
        raise InvalidOptionTypeError(
            f"parallel must be a whole number of sequences, got {parallel!r}",
            option="parallel",
            value=parallel,
            allowed=f"1..{MAX_SEQ}",
        )
    if not 1 <= parallel <= MAX_SEQ:
        raise InvalidOptionError(
            f"parallel must be 1 to {MAX_SEQ} sequences (llama.cpp's most), got {parallel}",
            option="parallel",
            value=parallel,
            allowed=f"1..{MAX_SEQ}",
        )
    if parallel > 1 and workload != "batch":
        raise InvalidOptionError(
            f"parallel={parallel} decodes {parallel} sequences together, which is batch work: pass "
            "workload='batch' with it (interactive work decodes one sequence)",
            option="parallel",
            value=parallel,
            allowed="1 for interactive work",
        )
    return parallel


def calibration_for(hw: Hardware, given: Calibration | None) -> Calibration | None:
    """The measured figures to plan with: those given, else this machine's kept ones for a
    live probe (a profile describes another machine)."""
    if given is not None or hw.name is not None:
        return given
    return load_calibration(hw)


def loads_of(path: str, calibration: Calibration) -> tuple[LoadRecord, ...]:
    """The measured loads of this very file (same path, size and modification time)."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    where = os.path.abspath(path)
    return tuple(r for r in calibration.loads if r.same_file(where, st.st_size, st.st_mtime_ns))


def batches_of(path: str | None, m: Machine) -> tuple[BatchRecord, ...]:
    """The measured batch throughputs of this very file (same path, size and modification
    time) at the machine's decode threads; none for a catalog variant or a moved file."""
    cal = m.calibration
    if path is None or cal is None or not cal.batch:
        return ()
    try:
        st = os.stat(path)
    except OSError:
        return ()
    where = os.path.abspath(path)
    return tuple(r for r in cal.batch if r.same_file(where, st.st_size, st.st_mtime_ns) and r.n_threads == m.threads)


def gpu_api(g: GPUInfo) -> str | None:
    """The GPU's compute API (cuda, rocm, metal...): the probe's, else the vendor's usual one."""
    if g.backend:
        return g.backend
    return _GPU_API_OF_VENDOR.get(g.vendor)


def _machine(
    hw: Hardware, *, runtime: Runtime, headroom: int, calibration: Calibration | None, threads: int | None
) -> Machine:
    mem = hw.memory
    notes: list[str] = []
    usable = mem.usable if mem.usable is not None else mem.limit
    ram: int | None
    if usable is None:
        ram, basis = None, "system memory unknown"
        notes.append("could not learn how much memory is free; the plan assumes it is enough")
    else:
        ram = max(0, int(usable * RAM_FRACTION) - headroom)
        src = (
            "cgroup headroom"
            if (mem.cgroup_headroom is not None and mem.cgroup_headroom == usable)
            else ("available RAM" if mem.usable is not None else "RAM limit")
        )
        basis = f"{RAM_FRACTION:.0%} of {file_size(usable)} {src}"
        if mem.cgroup_limit is not None:
            basis += f", cgroup limit {file_size(mem.cgroup_limit)}"
        if headroom:
            basis += f", minus {file_size(headroom)} headroom"
    llama = hw.runtime("llama.cpp")
    gpus: list[GPUInfo] = []
    if runtime == "llama.cpp" and llama is not None and llama.gpu_offload is False and hw.gpus:
        notes.append("llama.cpp here is built without GPU offload: the GPU is not used")
    elif runtime == "llama.cpp":
        gpus = [g for g in hw.gpus if _gpu_memory(g, hw) and gpu_api(g)]
    provider, provider_why = None, ""
    if runtime == "onnxruntime":
        provider, provider_why, gpus, onnx_notes = _onnx_machine(hw)
        notes += onnx_notes
    unified = bool(gpus) and all(g.unified for g in gpus)
    budgets, bases = [], []
    for g in gpus:
        raw = _gpu_memory(g, hw)
        assert raw is not None  # only GPUs with a known memory were kept
        margin = GPU_MARGIN.get(gpu_api(g) or "", GPU_MARGIN_DEFAULT)
        budgets.append(max(0, raw - margin))
        what = "working-set budget" if g.budget is not None else ("free" if g.memory_free is not None else "total")
        bases.append(f"{file_size(raw)} {what} on {g.name} minus {file_size(margin)} margin")
    repack, amx_usable, repack_basis = _repack(hw, calibration) if runtime == "llama.cpp" else (frozenset(), True, "")
    if threads is not None:
        decode, batch, t_basis = threads, threads, "as asked"
    else:
        decode = batch = _threads(hw)
        t_basis = _threads_basis(hw)
    return Machine(
        hw=hw,
        ram=ram,
        ram_basis=basis,
        gpus=tuple(gpus),
        gpu_budgets=tuple(budgets),
        gpu_bases=tuple(bases),
        unified=unified,
        threads=decode,
        notes=tuple(notes),
        calibration=calibration,
        threads_explicit=threads is not None,
        batch_threads=batch,
        threads_basis=t_basis,
        provider=provider,
        provider_why=provider_why,
        repack=repack,
        amx_usable=amx_usable,
        repack_basis=repack_basis,
    )


def _onnx_machine(hw: Hardware) -> tuple[str, str, list[GPUInfo], list[str]]:
    """(provider, why, the one GPU it runs on or none, notes) for ONNX Runtime on `hw`."""
    provider, why = provider_for(hw)
    vendors = GPU_VENDORS.get(provider, ())
    gpus = [g for g in hw.gpus if g.vendor in vendors and _gpu_memory(g, hw)]
    notes = []
    if len(gpus) > 1:
        notes.append(
            f"ONNX Runtime runs a model on one GPU ({gpus[0].name}); it does not split it across the {len(gpus)} here"
        )
    return provider, why, gpus[:1], notes


def _repack(hw: Hardware, calibration: Calibration | None) -> tuple[frozenset[str], bool, str]:
    """(CPU backend features that make ggml repack weights, AMX usable, the basis in words).

    From the installed llama.cpp build's own feature list when the probe read it, else from
    the CPU's flags (what a native or all-variants build picks). LOCALLLM_LLAMA_EXTRA_BUFFERS=0
    turns repacking off, as it does in the engine; an AMX build whose one-off trial failed on
    this machine runs with it off too (runtimes.llamacpp.use_extra_buffers).
    """
    setting = os.environ.get(EXTRA_BUFFERS_ENV, "").strip()
    if setting == "0":
        return frozenset(), False, f"weight repacking off ({EXTRA_BUFFERS_ENV}=0)"
    llama = hw.runtime("llama.cpp")
    if llama is not None and llama.cpu_features:
        feats, src = frozenset(llama.cpu_features), "the installed llama.cpp build"
    else:
        feats, src = features_from_cpu_flags(hw.cpu.flags, hw.cpu.arch), "this CPU's features"
    amx_usable = True
    if "AMX_INT8" in feats and setting != "1":
        verdict = calibration.extra_buffers if calibration is not None else None
        if verdict is not None and not verdict.ok:
            return frozenset(), False, f"weight repacking off: AMX kernels failed their trial here ({verdict.detail})"
        amx_usable = verdict is None or verdict.ok
    types, _, amx = repack_rule(feats, amx_usable=amx_usable)
    if not types and not amx:  # extra buffers stay on (a load record says so), nothing to repack
        return feats, amx_usable, f"no weight repacking on {src}"
    return (
        feats,
        amx_usable,
        (
            f"ggml repacks {', '.join(sorted(types | amx))} weights on {src}: "
            "the copy is resident beside the mapped file"
        ),
    )


def _gpu_memory(g: GPUInfo, hw: Hardware) -> int | None:
    if g.usable_memory is not None:
        return g.usable_memory
    if g.vendor == "apple" and hw.memory.total:
        return int(hw.memory.total * APPLE_WORKING_SET_FRACTION)
    return None


def _threads(hw: Hardware) -> int:
    cpu = hw.cpu
    n = cpu.physical_cores
    if not n and cpu.logical_cores:
        n = max(1, cpu.logical_cores // 2) if cpu.logical_cores > 1 else 1
    n = n or DEFAULT_THREADS
    if cpu.quota_cores is not None:
        n = min(n, max(1, int(cpu.quota_cores)))
    return n


def _threads_basis(hw: Hardware) -> str:
    cpu = hw.cpu
    parts = [
        f"{cpu.physical_cores} physical cores"
        if cpu.physical_cores
        else (f"{cpu.logical_cores} logical cores / 2" if cpu.logical_cores else f"default {DEFAULT_THREADS}")
    ]
    if cpu.quota_cores is not None:
        parts.append(f"capped by the cgroup CPU quota of {cpu.quota_cores:g}")
    return ", ".join(parts)
