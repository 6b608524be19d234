"""How close the planner's predictions are to what this machine measures.

    python benchmarks/estimator_accuracy.py                 # memory, speed and threads
    python benchmarks/estimator_accuracy.py --only memory   # or speed, threads
    python benchmarks/estimator_accuracy.py --json out.json

Models: random-weight GGUFs with the shapes of SmolLM2-135M, Qwen2.5-0.5B and
Llama-3.2-1B (`localllm.tinymodels.SHAPES`), written as F16 then quantized by llama.cpp
to Q4_K_M and Q8_0 (the smallest also run as F16), cached in benchmarks/.bench/accuracy/
(gitignored). Every case runs in a fresh process through `localllm.bench` (localllm's
own load and token loop, the planner's placement).

1. memory: contexts 512, 2048 and 8192; the process loads the model, reads a short
   prompt and generates a few tokens; its peak resident memory (VmHWM: memory-mapped
   weights count once touched, and decode touches them all) against the planner's host
   estimate. Target: within 10 % or 100 MiB, whichever is larger.
2. speed: decode tokens/s (mean of --repeat runs) against the planner's prediction
   from the measured memory bandwidth. Target: within 25 %.
3. threads: decode tokens/s at 1..cores+1 threads (runs interleaved, so contention hits
   all counts alike); the planner's automatic choice must reach 0.95 of the best.

The machine is shared: the load average is printed beside each section.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".bench" / "accuracy"
MiB = 2**20

SHAPES = ("smollm2-135m", "qwen2.5-0.5b", "llama-3.2-1b")
QUANTS = {"smollm2-135m": ("F16", "Q8_0", "Q4_K_M"), "qwen2.5-0.5b": ("Q8_0", "Q4_K_M"),
          "llama-3.2-1b": ("Q8_0", "Q4_K_M")}
CONTEXTS = (512, 2048, 8192)
MEMORY_TARGET_FRACTION = 0.10
MEMORY_TARGET_BYTES = 100 * MiB
SPEED_TARGET = 0.25
THREADS_TARGET = 0.95


def model_path(shape: str, quant: str) -> Path:
    """The cached random-weight model, built (F16, then quantized) when missing."""
    from localllm.tinymodels import quantize_gguf, write_llama_gguf

    CACHE.mkdir(parents=True, exist_ok=True)
    dst = CACHE / f"{shape}-random-{quant.lower()}.gguf"
    if dst.exists():
        return dst
    f16 = CACHE / f"{shape}-random-f16.gguf"
    if not f16.exists():
        print(f"  writing {f16.name} ...", file=sys.stderr, flush=True)
        tmp = f16.with_suffix(".tmp")
        write_llama_gguf(tmp, shape, f16=True, name=f"{shape}-random")
        os.replace(tmp, f16)
    if quant.upper() == "F16":
        return f16
    print(f"  quantizing {shape} to {quant} ...", file=sys.stderr, flush=True)
    tmp = dst.with_suffix(".tmp")
    quantize_gguf(f16, tmp, quant)
    os.replace(tmp, dst)
    return dst


def load_avg() -> str:
    try:
        return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def memory_cases(shapes, contexts) -> list[dict]:
    from localllm.bench import bench

    rows = []
    print(f"\n## memory: predicted host memory vs measured peak RSS ({load_avg()})")
    print(f"{'model':32s} {'ctx':>5s} {'predicted':>10s} {'measured':>10s} {'error':>9s} {'error%':>7s}  target")
    for shape in shapes:
        for quant in QUANTS[shape]:
            path = model_path(shape, quant)
            for ctx in contexts:
                r = bench(path, n_prompt=16, n_gen=4, context=ctx, repeat=1, warmup=False)
                pred, meas = r.predicted.host_bytes, r.peak_rss
                err = pred - meas
                ok = abs(err) <= max(MEMORY_TARGET_FRACTION * meas, MEMORY_TARGET_BYTES)
                row = {"model": f"{shape} {quant}", "ctx": ctx, "predicted": pred, "measured": meas,
                       "error": err, "error_pct": 100 * err / meas, "ok": ok,
                       "breakdown": r.predicted.memory.get("cpu"), "before_load": r.runs[0].rss_before_load}
                rows.append(row)
                print(f"{row['model']:32s} {ctx:5d} {pred / MiB:8.0f}Mi {meas / MiB:8.0f}Mi {err / MiB:+7.0f}Mi "
                      f"{row['error_pct']:+6.1f}%  {'ok' if ok else 'MISS'}", flush=True)
    return rows


def speed_cases(shapes, repeat: int, n_gen: int) -> list[dict]:
    from localllm.bench import bench

    rows = []
    print(f"\n## speed: predicted vs measured decode tokens/s, ctx 2048 ({load_avg()})")
    print(f"{'model':32s} {'threads':>7s} {'predicted':>9s} {'measured':>9s} {'spread':>15s} {'ratio':>6s}  target")
    for shape in shapes:
        for quant in QUANTS[shape]:
            r = bench(model_path(shape, quant), n_prompt=32, n_gen=n_gen, context=2048, repeat=repeat)
            pred, meas = r.predicted.decode_tps, r.mean("decode_tps")
            lo, hi = r.spread("decode_tps")
            ratio = meas / pred if pred else None
            ok = ratio is not None and abs(ratio - 1) <= SPEED_TARGET
            rows.append({"model": f"{shape} {quant}", "threads": r.placement["n_threads"], "predicted": pred,
                         "measured": meas, "min": lo, "max": hi, "ratio": ratio, "ok": ok,
                         "basis": r.predicted.decode_basis, "runs": [x.decode_tps for x in r.runs]})
            print(f"{shape + ' ' + quant:32s} {r.placement['n_threads']:7d} {pred or 0:9.1f} {meas:9.1f} "
                  f"{lo:6.1f}..{hi:6.1f} {ratio or 0:6.2f}  {'ok' if ok else 'MISS'}", flush=True)
    return rows


def thread_sweep(models, repeat: int, n_gen: int) -> list[dict]:
    from localllm.bench import bench

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    counts = list(range(1, cores + 2))
    out = []
    print(f"\n## threads: decode tokens/s by thread count, ctx 2048 ({load_avg()})")
    for shape, quant in models:
        path = model_path(shape, quant)
        auto = bench(path, n_prompt=4, n_gen=2, context=2048, repeat=1, warmup=True).placement["n_threads"]
        runs: dict[int, list[float]] = {n: [] for n in counts}
        for i in range(repeat):
            for n in (counts if i % 2 == 0 else counts[::-1]):  # ABBA: drift hits every count alike
                r = bench(path, n_prompt=16, n_gen=n_gen, context=2048, threads=n, repeat=1, warmup=False)
                runs[n].append(r.mean("decode_tps"))
        means = {n: sum(v) / len(v) for n, v in runs.items()}
        best = max(means, key=means.get)
        share = means[auto] / means[best]
        ok = share >= THREADS_TARGET
        cells = "  ".join(f"{n}t {means[n]:6.1f} ({min(runs[n]):.1f}..{max(runs[n]):.1f})" for n in counts)
        print(f"{shape + ' ' + quant:28s} {cells}   auto {auto}t = {share:.2f} of best ({best}t)  "
              f"{'ok' if ok else 'MISS'}", flush=True)
        out.append({"model": f"{shape} {quant}", "auto": auto, "best": best, "share": share, "ok": ok,
                    "runs": {str(k): v for k, v in runs.items()}})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("memory", "speed", "threads"), action="append")
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=SHAPES)
    ap.add_argument("--contexts", nargs="+", type=int, default=list(CONTEXTS))
    ap.add_argument("--repeat", type=int, default=3, help="runs per speed / thread case")
    ap.add_argument("--gen", type=int, default=32, help="tokens decoded per speed run")
    ap.add_argument("--json", metavar="FILE", help="write every number to FILE")
    args = ap.parse_args()
    parts = args.only or ["memory", "speed", "threads"]
    from localllm.bandwidth import machine_bandwidth

    bw = machine_bandwidth()
    print(f"memory bandwidth {bw.gbs:.1f} GB/s ({bw.threads} threads), {bw.per_thread_gbs:.1f} GB/s per thread "
          f"(measured {bw.date}); {load_avg()}")
    results: dict = {"bandwidth": bw.__dict__}
    t0 = time.time()
    if "memory" in parts:
        results["memory"] = memory_cases(args.shapes, args.contexts)
    if "speed" in parts:
        results["speed"] = speed_cases(args.shapes, args.repeat, args.gen)
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
