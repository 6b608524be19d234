"""Both runtimes on one model, measured here: what `localllm bench --runtimes` runs.

Where a model is at hand in both formats (a catalog family's GGUF and ONNX variants, or a
GGUF file and an ONNX folder of the same model), each is loaded and run in fresh processes
(`localllm.bench.measure_in_child`), alternating A B, B A, A B..., at the same threads and
context, so a neighbour's load on a shared machine falls on both alike. Each side keeps its
runs as a `BenchResult` (medians, spread, the planner's prediction); `record_comparison`
keeps both in this machine's calibration (`RuntimeRecord`, tied by one session), which the
planner reads to choose the faster runtime (localllm.planner.runtime.pick_runtime).
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.bench import (
    DEFAULT_GEN_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    BenchResult,
    RunMeasurement,
    measure_in_child,
    record,
    result_of,
)
from localllm.calibration import RuntimeRecord, model_signature, save_runtimes

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from localllm.catalog import Variant
    from localllm.hardware import Hardware
    from localllm.placement import Runtime

__all__ = ["DEFAULT_ROUNDS", "RuntimeComparison", "RuntimeSide", "compare_runtimes", "record_comparison"]

DEFAULT_ROUNDS = 3  # runs of each runtime; the order alternates every round

# CPU flags that decide which int8/int4 kernels the two runtimes pick (kept with a record, for people
# reading it later: a rule for machines without measurements is only as good as these records)
_KERNEL_FLAGS = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "asimddp", "i8mm")


@dataclass(frozen=True)
class RuntimeSide:
    """One runtime's runs on its file, and the planned variant they are kept under."""

    runtime: Runtime
    path: str
    variant: str  # the planned variant's name
    signature: str  # model_signature of the planned variant's family
    weight_bytes: int  # the planned variant's size
    where: str  # where the child's plan ran it: "cpu", "gpu" or "partial"
    result: BenchResult

    @property
    def decode_tps(self) -> float:
        return self.result.median("decode_tps") or 0.0


@dataclass(frozen=True)
class RuntimeComparison:
    llama: RuntimeSide
    onnx: RuntimeSide
    session: str  # ISO time the comparison started: ties the two records
    load_average: float | None  # 1-minute load average when it started
    cpu_features: str

    @property
    def ratio(self) -> float | None:
        """ONNX Runtime's median decode speed over llama.cpp's."""
        return self.onnx.decode_tps / self.llama.decode_tps if self.llama.decode_tps else None

    @property
    def unsteady(self) -> str | None:
        """Why the comparison is too noisy to keep (either side's runs disagreed), or None."""
        for side in (self.llama, self.onnx):
            why = side.result.unsteady
            if why:
                return f"{side.runtime}: {why}"
        return None

    def to_records(self) -> tuple[RuntimeRecord, RuntimeRecord]:
        return tuple(self._record(side) for side in (self.llama, self.onnx))  # type: ignore[return-value]

    def _record(self, side: RuntimeSide) -> RuntimeRecord:
        r = side.result
        lo, hi = r.spread("decode_tps") or (0.0, 0.0)
        return RuntimeRecord(
            runtime=side.runtime,
            signature=side.signature,
            weight_bytes=side.weight_bytes,
            variant=side.variant,
            n_threads=int(r.placement["n_threads"]),
            where=side.where,
            n_ctx=int(r.placement["n_ctx"]),
            decode_tps=round(side.decode_tps, 3),
            prompt_tps=round(r.median("prompt_tps") or 0.0, 3),
            peak_rss=r.peak_rss,
            date=r.date,
            session=self.session,
            runs=len(r.runs),
            decode_min=round(lo, 3),
            decode_max=round(hi, 3),
            path=side.path,
            cpu_features=self.cpu_features,
            load_average=self.load_average,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "session": self.session,
            "load_average": self.load_average,
            "cpu_features": self.cpu_features,
            "ratio_onnx_over_llama": self.ratio,
            "unsteady": self.unsteady,
        }
        for key, side in (("llama.cpp", self.llama), ("onnxruntime", self.onnx)):
            d = {k: v for k, v in asdict(side).items() if k != "result"}
            out[key] = {**d, "decode_tps_median": side.decode_tps, "bench": side.result.to_dict()}
        return out


def compare_runtimes(
    gguf: tuple[str | os.PathLike[str], Variant],
    onnx: tuple[str | os.PathLike[str], Variant],
    *,
    n_prompt: int = DEFAULT_PROMPT_TOKENS,
    n_gen: int = DEFAULT_GEN_TOKENS,
    context: int | None = None,
    threads: int | None = None,
    rounds: int = DEFAULT_ROUNDS,
    warmup: bool = True,
    hardware: Hardware | None = None,
    progress: Callable[[str, int, RunMeasurement], object] | None = None,
) -> RuntimeComparison:
    """Measure a GGUF file with llama.cpp and an ONNX folder with ONNX Runtime, `rounds` runs each,
    each run a fresh process, the order alternating every round.

    Args:
        gguf, onnx: (the file or folder, the planned variant its records are kept under).
        context, threads: the same for both (None: each child's plan; pass them for a fair match).
        warmup: one short uncounted run of each first (page cache, ONNX Runtime's optimized graph).
        hardware: this machine's facts, for the CPU flags kept with the records.
        progress: called with (runtime, round, RunMeasurement) after each counted run.

    Raises:
        ValueError: bad counts. GenerationError: a run failed (its stderr is in the message).
    """
    if n_prompt < 1 or n_gen < 2 or rounds < 1:
        raise ValueError(f"need n_prompt >= 1, n_gen >= 2 and rounds >= 1; got {n_prompt}, {n_gen}, {rounds}")
    session = _dt.datetime.now().isoformat(timespec="seconds")
    load = _load_average()
    sides: dict[Runtime, tuple[str, Variant]] = {
        "llama.cpp": (str(gguf[0]), gguf[1]),
        "onnxruntime": (str(onnx[0]), onnx[1]),
    }
    spec: dict[str, Any] = {"n_prompt": n_prompt, "n_gen": n_gen, "context": context, "threads": threads}
    if warmup:
        for path, _ in sides.values():
            measure_in_child({**spec, "path": path, "n_prompt": 4, "n_gen": 2})
    runs: dict[Runtime, list[RunMeasurement]] = {"llama.cpp": [], "onnxruntime": []}
    first: dict[Runtime, dict[str, Any]] = {}
    for i in range(rounds):
        order: tuple[Runtime, Runtime] = ("llama.cpp", "onnxruntime") if i % 2 == 0 else ("onnxruntime", "llama.cpp")
        for runtime in order:
            out = measure_in_child({**spec, "path": sides[runtime][0]})
            first.setdefault(runtime, out)
            run = RunMeasurement(**out["run"])
            runs[runtime].append(run)
            if progress is not None:
                progress(runtime, i, run)

    def side(runtime: Runtime) -> RuntimeSide:
        path, variant = sides[runtime]
        got = first[runtime]
        result = result_of(path, got, runs[runtime], n_prompt=n_prompt, n_gen=n_gen)
        return RuntimeSide(
            runtime=runtime,
            path=os.path.abspath(path),
            variant=variant.name,
            signature=model_signature(variant.family),
            weight_bytes=int(variant.size),
            where=str(got.get("where", "cpu")),
            result=result,
        )

    return RuntimeComparison(
        llama=side("llama.cpp"),
        onnx=side("onnxruntime"),
        session=session,
        load_average=load,
        cpu_features=_cpu_features(hardware),
    )


def record_comparison(c: RuntimeComparison, hw: Hardware) -> Path | None:
    """Keep both runtimes' records of `c` for this machine (and llama.cpp's run as a bench record,
    as `localllm bench` keeps it); None when the runs were too noisy (`c.unsteady` says why)."""
    if c.unsteady:
        return None
    record(c.llama.result, hw)
    return save_runtimes(hw, c.to_records())


def _cpu_features(hw: Hardware | None) -> str:
    if hw is None:
        return ""
    flags = {f.lower() for f in hw.cpu.flags}
    return " ".join(f.upper() for f in _KERNEL_FLAGS if f in flags)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None
