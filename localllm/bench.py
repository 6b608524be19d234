"""Measure a model on this machine and hold it against what the planner predicted.

Each repetition runs in a fresh Python process (so load time and peak resident memory
are those of one real load), which loads the file (a GGUF file, or an ONNX folder for
`localllm bench --runtimes`: localllm.bench_runtimes) with localllm's own runtime, feeds a
prompt of about `n_prompt` tokens and generates `n_gen` tokens greedily. The parent
gathers the runs; `BenchResult` has the means, spreads and the planner's predictions
(from its formulas, never from earlier measurements), and `record()` keeps the result
in this machine's calibration so later plans use measured figures.

On a shared machine the wall-clock decode rate measures the neighbours as much as the
model, so each run also reports the share of its threads' time the process really ran
(`decode_cpu_share`) and the rate per CPU-second (`decode_tps_cpu`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.calibration import BenchRecord, Calibration, load_calibration, model_signature, save_bench
from localllm.catalog import family_from_gguf_metadata
from localllm.errors import GenerationError, InvalidModelError
from localllm.formats.onnx_folder import validate_onnx_folder
from localllm.hardware.detect import probe
from localllm.model import Model
from localllm.planner import Plan, plan_local, plan_local_onnx
from localllm.quantmix import file_type_quant, gguf_weights
from localllm.runtimes import load_engine
from localllm.validate import validate_gguf

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable

    from localllm.hardware import Hardware

__all__ = ["BenchResult", "Prediction", "RunMeasurement", "bench", "measure_in_child", "measure_once", "record"]

DEFAULT_PROMPT_TOKENS = 128  # a short chat turn with some history
DEFAULT_GEN_TOKENS = 64  # enough decode steps for a stable rate
DEFAULT_REPEAT = 3
CHILD_TIMEOUT_S = 1800  # one repetition; a 1B model on two busy cores takes well under a minute

# the quants of localllm.quantmix.FILE_TYPES (a GGUF's general.file_type) the planner knows
_PLANNER_QUANTS = frozenset({"F32", "F16", "Q4_0", "Q8_0", "Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "BF16"})

_WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "the",
    "lazy",
    "dog",
    "while",
    "local",
    "models",
    "answer",
    "questions",
    "write",
    "text",
    "and",
    "chat",
    "with",
    "you",
    "on",
    "your",
    "own",
    "machine",
]


# A bench result whose decode speeds disagree by more than this (median absolute deviation
# over the median) is not kept for plans: the machine was too busy to measure it.
NOISE_LIMIT = 0.15


@dataclass(frozen=True)
class RunMeasurement:
    """One repetition, in one fresh process."""

    load_s: float
    ttft_s: float
    prompt_tokens: int
    prompt_tps: float
    decode_tokens: int
    decode_tps: float
    peak_rss: int  # bytes: VmHWM (mapped weights included once touched)
    rss_before_load: int  # bytes: VmHWM after imports, before the model
    gpu_memory: int | None = None  # bytes this process holds on GPUs (NVML), None without a GPU
    finish_reason: str = ""
    # 1 / the median time between tokens: the rate while no other program held the cores,
    # which a shared machine's mean hides (a preempted step waits a whole time slice)
    decode_tps_median: float = 0.0
    # Share of its threads' time the process really ran while decoding (process CPU time /
    # wall time / threads): near 1 on an idle machine, lower when other programs compete.
    decode_cpu_share: float = 0.0
    # Decode tokens per second of CPU time per thread: the speed the cores deliver when the
    # process has them; on a shared machine this is the figure to hold a prediction against
    decode_tps_cpu: float = 0.0


@dataclass(frozen=True)
class Prediction:
    """What the planner predicted for this placement, from its formulas."""

    decode_tps: float | None
    decode_basis: str
    host_bytes: int  # peak resident memory on the host
    gpu_bytes: int | None  # all GPUs, None when nothing is offloaded
    memory: dict[str, dict[str, int]] = field(default_factory=dict)  # per device breakdown


@dataclass(frozen=True)
class BenchResult:
    model: str
    weight_bytes: int
    signature: str
    placement: dict[str, Any]
    n_prompt: int
    n_gen: int
    runs: tuple[RunMeasurement, ...]
    predicted: Prediction
    date: str

    def mean(self, name: str) -> float | None:
        vals = [getattr(r, name) for r in self.runs if getattr(r, name) is not None]
        return statistics.fmean(vals) if vals else None

    def median(self, name: str) -> float | None:
        """The robust figure: one run at a busy moment does not move it."""
        vals = [getattr(r, name) for r in self.runs if getattr(r, name) is not None]
        return statistics.median(vals) if vals else None

    def noise(self, name: str) -> float | None:
        """Median absolute deviation over the median: 0 for steady runs, large when they disagree."""
        vals = [getattr(r, name) for r in self.runs if getattr(r, name) is not None]
        if not vals:
            return None
        mid = statistics.median(vals)
        return statistics.median(abs(v - mid) for v in vals) / mid if mid else None

    @property
    def unsteady(self) -> str | None:
        """Why this result is too noisy to calibrate plans with, or None when it is steady enough.

        Decode speed is kept as the median of the runs, so one run slowed by a neighbour does not
        count; but when the runs disagree with each other (their median absolute deviation is
        above NOISE_LIMIT of the median), no figure is trustworthy.
        """
        vals = [r.decode_tps for r in self.runs]
        noise = self.noise("decode_tps")
        if noise is not None and noise > NOISE_LIMIT:
            runs = ", ".join(f"{v:.1f}" for v in vals)
            return (
                f"decode speed varied too much between runs ({runs} tok/s: median absolute deviation "
                f"{noise:.0%} of the median {self.median('decode_tps'):.1f}, limit {NOISE_LIMIT:.0%}); "
                "other programs were probably competing for the cores. Run again on a quieter machine, "
                "or with more --repeat"
            )
        return None

    @property
    def outliers(self) -> tuple[int, ...]:
        """Runs whose decode speed is far (over 3 median absolute deviations, and 20 %) from the median."""
        mid = self.median("decode_tps") or 0.0
        mad = (self.noise("decode_tps") or 0.0) * mid
        return tuple(i for i, r in enumerate(self.runs) if abs(r.decode_tps - mid) > max(3 * mad, 0.2 * mid))

    def stdev(self, name: str) -> float | None:
        vals = [getattr(r, name) for r in self.runs if getattr(r, name) is not None]
        return statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None)

    def spread(self, name: str) -> tuple[float, float] | None:
        vals = [getattr(r, name) for r in self.runs if getattr(r, name) is not None]
        return (min(vals), max(vals)) if vals else None

    @property
    def peak_rss(self) -> int:
        """The largest peak over the runs (memory must cover the worst run)."""
        return max(r.peak_rss for r in self.runs)

    def ratio(self, name: str) -> float | None:
        """measured / predicted for decode_tps, peak_rss or gpu_memory."""
        measured: float | None
        if name in ("decode_tps", "decode_tps_median", "decode_tps_cpu"):
            measured, pred = self.mean(name), self.predicted.decode_tps
        elif name == "peak_rss":
            measured, pred = self.peak_rss, self.predicted.host_bytes
        elif name == "gpu_memory":
            measured, pred = self.mean("gpu_memory"), self.predicted.gpu_bytes
        else:
            raise ValueError(f"no prediction for {name!r}; use decode_tps, decode_tps_median, peak_rss or gpu_memory")
        return measured / pred if measured and pred else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["summary"] = {
            k: {"mean": self.mean(k), "stdev": self.stdev(k), "min_max": self.spread(k)}
            for k in (
                "load_s",
                "ttft_s",
                "prompt_tps",
                "decode_tps",
                "decode_tps_median",
                "decode_tps_cpu",
                "decode_cpu_share",
                "peak_rss",
                "gpu_memory",
            )
        }
        out["ratios"] = {
            k: self.ratio(k) for k in ("decode_tps", "decode_tps_median", "decode_tps_cpu", "peak_rss", "gpu_memory")
        }
        return out

    def to_record(self) -> BenchRecord:
        gpu = self.mean("gpu_memory")
        return BenchRecord(
            signature=self.signature,
            weight_bytes=self.weight_bytes,
            n_threads=int(self.placement["n_threads"]),
            n_gpu_layers=int(self.placement["n_gpu_layers"]),
            n_ctx=int(self.placement["n_ctx"]),
            decode_tps=round(self.median("decode_tps") or 0.0, 3),
            prompt_tps=round(self.median("prompt_tps") or 0.0, 3),
            peak_rss=self.peak_rss,
            date=self.date,
            model=Path(self.model).name,
            load_s=round(self.median("load_s") or 0.0, 4),
            ttft_s=round(self.median("ttft_s") or 0.0, 4),
            n_prompt=self.n_prompt,
            n_gen=self.n_gen,
            gpu_memory=int(gpu) if gpu else None,
        )


def bench(
    path: str | os.PathLike[str],
    *,
    n_prompt: int = DEFAULT_PROMPT_TOKENS,
    n_gen: int = DEFAULT_GEN_TOKENS,
    context: int | None = None,
    threads: int | None = None,
    repeat: int = DEFAULT_REPEAT,
    warmup: bool = True,
    progress: Callable[[int, RunMeasurement], object] | None = None,
) -> BenchResult:
    """Measure `path` (a GGUF file) `repeat` times, each in a fresh process.

    Args:
        n_prompt: about this many prompt tokens. n_gen: tokens to generate.
        context: n_ctx (default: the planner's choice). threads: override the planner's threads.
        warmup: one uncounted short run first, so the first counted load does not pay for
            reading the file from disk.
        progress: called with (index, RunMeasurement) after each counted run.

    Raises:
        ValueError: bad counts. InvalidModelError: not a usable GGUF file.
        GenerationError: a run failed (its stderr is in the message).
    """
    if n_prompt < 1 or n_gen < 2 or repeat < 1:
        raise ValueError(f"need n_prompt >= 1, n_gen >= 2 and repeat >= 1; got {n_prompt}, {n_gen}, {repeat}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".gguf":
        raise InvalidModelError(f"bench measures a .gguf file; {str(p)!r} is not one", path=str(p))
    spec = {"path": str(p), "n_prompt": n_prompt, "n_gen": n_gen, "context": context, "threads": threads}
    if warmup:
        measure_in_child({**spec, "n_prompt": 4, "n_gen": 2})
    runs: list[RunMeasurement] = []
    first: dict[str, Any] | None = None
    for i in range(repeat):
        out = measure_in_child(spec)
        first = first or out
        run = RunMeasurement(**out["run"])
        runs.append(run)
        if progress is not None:
            progress(i, run)
    assert first is not None  # repeat >= 1
    return result_of(str(p), first, runs, n_prompt=n_prompt, n_gen=n_gen)


def result_of(
    model: str, first: dict[str, Any], runs: list[RunMeasurement], *, n_prompt: int, n_gen: int
) -> BenchResult:
    """A BenchResult from the runs of one model and the first child's report (its plan and prediction)."""
    return BenchResult(
        model=model,
        weight_bytes=first["weight_bytes"],
        signature=first["signature"],
        placement=first["placement"],
        n_prompt=n_prompt,
        n_gen=n_gen,
        runs=tuple(runs),
        predicted=Prediction(**first["predicted"]),
        date=_dt.datetime.now().isoformat(timespec="seconds"),
    )


def record(result: BenchResult, hw: Hardware | None = None) -> Path | None:
    """Keep `result` (its medians) in this machine's calibration; returns the file, or None when
    the result is too noisy to plan with (`result.unsteady` says why)."""
    if result.unsteady:
        return None
    if hw is None:
        hw = probe()
    return save_bench(hw, result.to_record())


def measure_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """`measure_once` in a fresh Python process; its plain-data report. `spec` holds its arguments
    (path, n_prompt, n_gen, context, threads).

    Raises:
        GenerationError: the child failed or ran past CHILD_TIMEOUT_S (its stderr is in the message).
    """
    cmd = [sys.executable, "-m", "localllm.bench", json.dumps(spec)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise GenerationError(
            f"a bench run of {spec['path']} took over {CHILD_TIMEOUT_S} s and was stopped; "
            "try fewer tokens (--prompt/--gen) or a smaller model"
        ) from None
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if out.returncode != 0 or not lines:
        tail = (out.stderr or out.stdout).strip()[-2000:]
        raise GenerationError(f"the bench run of {spec['path']} failed (exit {out.returncode}):\n{tail}")
    return json.loads(lines[-1])


# -- in the child process --------------------------------------------------------------------------


def measure_once(
    path: str | os.PathLike[str], *, n_prompt: int, n_gen: int, context: int | None = None, threads: int | None = None
) -> dict[str, Any]:
    """One load + prompt + decode in this process (call it in a fresh one); plain data.

    `path` is a GGUF file (llama.cpp) or an ONNX folder or .onnx file (ONNX Runtime).
    """
    rss_before = _peak_rss()
    p = Path(path)
    plan, weight_bytes = _plan_here(p, context=context, threads=threads)
    placement = replace(plan.placement, adapt_threads=False)  # a record is tokens/s at exactly n_threads
    engine = load_engine(p, placement)
    with Model(engine, name=p.stem, path=p, placement=placement, plan=plan) as model:
        prompt = _prompt_of(model, n_prompt, placement.n_ctx - n_gen - 1)
        stamps: list[tuple[float, int]] = []
        cpu: list[float] = []
        for chunk in model.stream(prompt, max_tokens=n_gen, temperature=0):
            stamps.append((time.perf_counter(), len(chunk.token_ids)))
            cpu.append(time.process_time())
            last = chunk
        t = last.timings
        assert t is not None  # the last chunk of a stream carries the timings
        per_token = [(b[0] - a[0]) / b[1] for a, b in zip(stamps, stamps[1:], strict=False) if b[1]]
        n_after_first = sum(n for _, n in stamps[1:])
        wall, cpu_s = stamps[-1][0] - stamps[0][0], cpu[-1] - cpu[0]
        threads_used = placement.n_threads
        share = cpu_s / wall / threads_used if wall > 0 else 0.0
        tps_cpu = n_after_first / (cpu_s / threads_used) if cpu_s > 0 else 0.0
        run = RunMeasurement(
            load_s=t.load_s,
            ttft_s=t.ttft_s,
            prompt_tokens=t.prompt_tokens,
            prompt_tps=t.prompt_tps,
            decode_tokens=t.decode_tokens,
            decode_tps=t.decode_tps,
            peak_rss=_peak_rss(),
            rss_before_load=rss_before,
            gpu_memory=_gpu_memory() if placement.n_gpu_layers else None,
            finish_reason=last.finish_reason or "",
            decode_tps_median=1 / statistics.median(per_token) if per_token else 0.0,
            decode_cpu_share=round(share, 3),
            decode_tps_cpu=tps_cpu,
        )
    mem = {
        d.device: {
            "weights": d.weights,
            "repacked": d.repacked,
            "kv_cache": d.kv_cache,
            "compute": d.compute,
            "overhead": d.overhead,
            "total": d.total,
        }
        for d in plan.memory.devices
    }
    gpu = sum(d.total for d in plan.memory.devices if d.device != "cpu")
    pred = Prediction(
        decode_tps=plan.tokens_per_s,
        decode_basis=plan.tokens_per_s_basis,
        host_bytes=plan.memory.host.total,
        gpu_bytes=gpu or None,
        memory=mem,
    )
    pl = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(replace(placement)).items()}
    return {
        "run": asdict(run),
        "predicted": asdict(pred),
        "placement": pl,
        "weight_bytes": weight_bytes,
        "signature": model_signature(plan.variant.family),
        "where": plan.where,
    }


def _plan_here(p: Path, *, context: int | None, threads: int | None) -> tuple[Plan, int]:
    """(the plan for a local file on this machine, its weight bytes). The prediction is the formula's
    (with this machine's measured bandwidth), never an earlier measurement of this same model."""
    hw = probe()
    kept = load_calibration(hw)
    formula_only = Calibration(bandwidth=kept.bandwidth, extra_buffers=kept.extra_buffers)
    if p.is_dir() or p.suffix.lower() == ".onnx":
        onnx = validate_onnx_folder(p)
        plan = plan_local_onnx(
            onnx, path=str(p), hardware=hw, context=context, calibration=formula_only, threads=threads
        )
        return plan, int(onnx.weights_bytes)
    info = validate_gguf(p)
    tied = not any(t.name == "output.weight" for t in info.tensors)
    family = family_from_gguf_metadata(info.metadata, name=p.stem, tied_embeddings=tied)
    plan = plan_local(
        family,
        weight_bytes=info.tensor_bytes,
        path=str(p),
        context=context,
        hardware=hw,
        quant=_quant_name(info.metadata.get("general.file_type")),
        calibration=formula_only,
        threads=threads,
        weights=gguf_weights(info.tensors),
    )
    return plan, info.tensor_bytes


def _quant_name(file_type: object) -> str:
    """The quant name of a GGUF general.file_type, "local" for one the planner does not know."""
    quant = file_type_quant(file_type)
    return quant if quant in _PLANNER_QUANTS else "local"


def _prompt_of(model: Model, n_tokens: int, limit: int) -> str:
    """Text that tokenizes to about n_tokens (never more than `limit`)."""
    n_tokens = max(1, min(n_tokens, limit))
    words = max(1, n_tokens)
    for _ in range(6):
        text = " ".join(_WORDS[i % len(_WORDS)] for i in range(words))
        count = model.count_tokens(text)
        if count == n_tokens or (count < n_tokens and words > 4 * n_tokens):
            break
        words = max(1, int(words * n_tokens / max(count, 1)))
    while words > 1 and model.count_tokens(text) > n_tokens:
        words -= 1
        text = " ".join(_WORDS[i % len(_WORDS)] for i in range(words))
    return text


def _peak_rss() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB elsewhere


def _gpu_memory() -> int | None:
    """Bytes this process holds on NVIDIA GPUs (NVML), or None when NVML cannot tell."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        total, pid = 0, os.getpid()
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid == pid and proc.usedGpuMemory:
                    total += int(proc.usedGpuMemory)
        return total or None
    except Exception:
        return None
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


if __name__ == "__main__":  # the child: python -m localllm.bench '<json spec>'
    _spec = json.loads(sys.argv[1])
    print(
        json.dumps(
            measure_once(
                _spec["path"],
                n_prompt=_spec["n_prompt"],
                n_gen=_spec["n_gen"],
                context=_spec.get("context"),
                threads=_spec.get("threads"),
            )
        )
    )
