"""How close the planner's predictions are to what this machine measures.

    python benchmarks/estimator_accuracy.py                 # memory, speed and threads
    python benchmarks/estimator_accuracy.py --only memory   # or speed, threads
    python benchmarks/estimator_accuracy.py --json out.json

Models: random-weight GGUFs with the shapes of SmolLM2-135M, Qwen2.5-0.5B and
Llama-3.2-1B (`localllm.synthetic.SHAPES`), written as F16 then quantized by llama.cpp
to Q4_K_M and Q8_0 (the smallest also run as F16), cached in benchmarks/.bench/accuracy/
(gitignored). Every case runs in a fresh process through `localllm.bench` (localllm's
own load and token loop, the planner's placement).

1. memory: contexts 512, 2048 and 8192, with ggml's weight repacking on and off
   (--repack); the process loads the model, reads a short
   prompt and generates a few tokens; its peak resident memory (VmHWM: memory-mapped
   weights count once touched, and decode touches them all) against the planner's host
   estimate. Target: within 10 % or 100 MiB, whichever is larger.
2. speed: decode tokens/s (mean of --repeat runs) against the planner's prediction
   from the measured memory bandwidth. Target: within 25 %, judged on tokens per
   CPU-second per thread (on a shared machine wall-clock speed measures the neighbours).
3. threads: wall-clock decode tokens/s at 1..cores+1 threads (runs interleaved, so
   contention hits all counts alike); the first round is kept as calibration and the
   planner's choice with it must reach 0.95 of the best on the later rounds.

The machine is shared: the load average is printed beside each section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from localllm.bench import bench
from localllm.calibration import Calibration
from localllm.catalog import family_from_gguf_metadata
from localllm.hardware.bandwidth import machine_bandwidth
from localllm.planner import plan_local
from localllm.repack import EXTRA_BUFFERS_ENV
from localllm.synthetic import synthetic_gguf
from localllm.validate import validate_gguf

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".bench" / "accuracy"
MiB = 2**20

SHAPES = ("smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b")
QUANTS = {
    "smollm2-135m": ("F16", "Q8_0", "Q4_K_M"),
    "qwen2.5-0.5b": ("Q8_0", "Q4_K_M"),
    "llama-3.2-1b": ("Q8_0", "Q4_K_M"),
}
CONTEXTS = (512, 2048, 8192)
MEMORY_TARGET_FRACTION = 0.10
MEMORY_TARGET_BYTES = 100 * MiB
SPEED_TARGET = 0.25
THREADS_TARGET = 0.95


def model_path(shape: str, quant: str) -> Path:
    """The cached random-weight model, built (F16, then quantized) when missing; F16 is kept
    because several quants (and F16 itself) are measured."""
    return synthetic_gguf(
        CACHE, shape, quant, keep_f16=True, say=lambda line: print(f"  {line}", file=sys.stderr, flush=True)
    )


def load_avg() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def memory_cases(shapes, contexts, repack: str = "on") -> list[dict]:
    """Every shape, quant and context with ggml's weight repacking on (llama.cpp's default on
    this CPU) or off (LOCALLLM_LLAMA_EXTRA_BUFFERS=0, which both the engine in the child and
    the estimate honour)."""
    rows = []
    if repack == "off":
        os.environ[EXTRA_BUFFERS_ENV] = "0"
    else:
        os.environ.pop(EXTRA_BUFFERS_ENV, None)
    print(f"\n## memory, weight repacking {repack}: predicted host memory vs measured peak RSS ({load_avg()})")
    print(
        f"{'model':32s} {'ctx':>5s} {'predicted':>10s} {'repacked':>9s} {'measured':>10s} {'error':>9s} "
        f"{'error%':>7s}  target"
    )
    for shape in shapes:
        for quant in QUANTS[shape]:
            path = model_path(shape, quant)
            for ctx in contexts:
                r = bench(path, n_prompt=16, n_gen=4, context=ctx, repeat=1, warmup=False)
                pred, meas = r.predicted.host_bytes, r.peak_rss
                err = pred - meas
                ok = abs(err) <= max(MEMORY_TARGET_FRACTION * meas, MEMORY_TARGET_BYTES)
                row = {
                    "model": f"{shape} {quant}",
                    "repack": repack,
                    "ctx": ctx,
                    "predicted": pred,
                    "measured": meas,
                    "error": err,
                    "error_pct": 100 * err / meas,
                    "ok": ok,
                    "breakdown": r.predicted.memory.get("cpu"),
                    "before_load": r.runs[0].rss_before_load,
                }
                rows.append(row)
                repacked = (row["breakdown"] or {}).get("repacked", 0)
                print(
                    f"{row['model']:32s} {ctx:5d} {pred / MiB:8.0f}Mi {repacked / MiB:7.0f}Mi {meas / MiB:8.0f}Mi "
                    f"{err / MiB:+7.0f}Mi "
                    f"{row['error_pct']:+6.1f}%  {'ok' if ok else 'MISS'}",
                    flush=True,
                )
    return rows


def speed_cases(shapes, repeat: int, n_gen: int, threads: int) -> list[dict]:
    """Decode speed at `threads`, against the formula. On a shared machine the wall-clock rate
    depends on what else runs, so the target is judged on tokens per CPU-second per thread
    (the speed the cores deliver while the process has them); both are shown."""
    rows = []
    print(f"\n## speed: predicted vs measured decode tokens/s, ctx 2048, {threads} thread(s) ({load_avg()})")
    print(
        f"{'model':24s} {'predicted':>9s} {'wall':>7s} {'cpu-time':>8s} {'cpu share':>9s} {'ratio(cpu)':>10s} "
        f"{'ratio(wall)':>11s}  target"
    )
    for shape in shapes:
        for quant in QUANTS[shape]:
            r = bench(model_path(shape, quant), n_prompt=16, n_gen=n_gen, context=2048, threads=threads, repeat=repeat)
            pred = r.predicted.decode_tps
            wall, cpu, share = r.mean("decode_tps"), r.mean("decode_tps_cpu"), r.mean("decode_cpu_share")
            ratio = cpu / pred if pred else None
            ok = ratio is not None and abs(ratio - 1) <= SPEED_TARGET
            rows.append(
                {
                    "model": f"{shape} {quant}",
                    "threads": threads,
                    "predicted": pred,
                    "wall": wall,
                    "cpu_time": cpu,
                    "cpu_share": share,
                    "ratio_cpu": ratio,
                    "ratio_wall": wall / pred if pred else None,
                    "ok": ok,
                    "basis": r.predicted.decode_basis,
                    "runs": [(x.decode_tps, x.decode_tps_cpu, x.decode_cpu_share) for x in r.runs],
                }
            )
            print(
                f"{shape + ' ' + quant:24s} {pred or 0:9.1f} {wall:7.1f} {cpu:8.1f} {share:9.0%} {ratio or 0:10.2f} "
                f"{wall / pred if pred else 0:11.2f}  {'ok' if ok else 'MISS'}",
                flush=True,
            )
    return rows


def thread_sweep(models, repeat: int, n_gen: int) -> list[dict]:
    """Wall-clock decode speed by thread count. Round 1 is kept as calibration (what
    `localllm bench --threads N` keeps); the planner's choice with it is then judged on the
    later rounds, which it has not seen. The formula's default (physical cores) is shown too."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = list(range(1, cores + 2))
    out = []
    print(f"\n## threads: wall-clock decode tokens/s by thread count, ctx 2048 ({load_avg()})")
    for shape, quant in models:
        path = model_path(shape, quant)
        info = validate_gguf(path)
        family = family_from_gguf_metadata(
            info.metadata, name=path.stem, tied_embeddings=not any(t.name == "output.weight" for t in info.tensors)
        )
        results: dict[int, list] = {n: [] for n in counts}
        for i in range(max(2, repeat)):
            for n in counts if i % 2 == 0 else counts[::-1]:  # ABBA: drift hits every count alike
                results[n].append(
                    bench(
                        path,
                        n_prompt=16,
                        n_gen=n_gen,
                        context=2048,
                        threads=n,
                        repeat=1,
                        warmup=(i == 0 and n == counts[0]),
                    )
                )
        cal = Calibration(bench=tuple(results[n][0].to_record() for n in counts))
        default = plan_local(
            family, weight_bytes=info.tensor_bytes, context=2048, calibration=Calibration()
        ).placement.n_threads
        chosen = plan_local(family, weight_bytes=info.tensor_bytes, context=2048, calibration=cal).placement.n_threads
        held = {n: sum(r.mean("decode_tps") for r in v[1:]) / len(v[1:]) for n, v in results.items()}
        best = max(held, key=held.get)
        share, share_default = held[chosen] / held[best], held[default] / held[best]
        ok = share >= THREADS_TARGET
        cells = "  ".join(f"{n}t {held[n]:5.1f}" for n in counts)
        print(
            f"{shape + ' ' + quant:24s} {cells}   planner (calibrated) {chosen}t = {share:.2f} of best ({best}t), "
            f"default {default}t = {share_default:.2f}  {'ok' if ok else 'MISS'}",
            flush=True,
        )
        out.append(
            {
                "model": f"{shape} {quant}",
                "chosen": chosen,
                "default": default,
                "best": best,
                "share": share,
                "share_default": share_default,
                "ok": ok,
                "runs": {str(n): [r.mean("decode_tps") for r in v] for n, v in results.items()},
            }
        )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("memory", "speed", "threads"), action="append")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    ap.add_argument("--contexts", nargs="+", type=int, default=list(CONTEXTS))
    ap.add_argument("--repeat", type=int, default=3, help="runs per speed / thread case")
    ap.add_argument("--gen", type=int, default=32, help="tokens decoded per speed run")
    ap.add_argument("--speed-threads", type=int, default=1, help="threads for the speed section (default 1)")
    ap.add_argument(
        "--repack",
        choices=("on", "off", "both"),
        default="both",
        help="memory with ggml's weight repacking on, off, or both (default)",
    )
    ap.add_argument("--json", metavar="FILE", help="write every number to FILE")
    args = ap.parse_args()
    parts = args.only or ["memory", "speed", "threads"]
    bw = machine_bandwidth()
    print(
        f"memory bandwidth {bw.gbs:.1f} GB/s ({bw.threads} threads), {bw.per_thread_gbs:.1f} GB/s per thread "
        f"(measured {bw.date}); {load_avg()}"
    )
    results: dict = {"bandwidth": bw.__dict__}
    t0 = time.time()
    if "memory" in parts:
        modes = ("on", "off") if args.repack == "both" else (args.repack,)
        results["memory"] = [row for mode in modes for row in memory_cases(args.shapes, args.contexts, mode)]
        os.environ.pop("LOCALLLM_LLAMA_EXTRA_BUFFERS", None)
    if "speed" in parts:
        results["speed"] = speed_cases(args.shapes, args.repeat, args.gen, args.speed_threads)
    if "threads" in parts:
        models = [(s, "Q4_K_M") for s in args.shapes if s != "qwen2.5-0.5b"] or [(args.shapes[0], "Q4_K_M")]
        results["threads"] = thread_sweep(models, args.repeat, args.gen)
    verdicts = {k: all(r["ok"] for r in v) for k, v in results.items() if isinstance(v, list)}
    summary = ", ".join(f"{k}: {'all within target' if ok else 'MISSES'}" for k, ok in verdicts.items())
    print(f"\n{summary} ({time.time() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
