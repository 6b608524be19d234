"""`localllm bench`: measure a model here, beside what the planner predicted."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from localllm.commands.plan import context_arg
from localllm.errors import InvalidModelError, ModelNotFoundError
from localllm.synthetic import SHAPES, synthetic_gguf

if TYPE_CHECKING:  # pragma: no cover
    from localllm.bench import BenchResult, RunMeasurement
    from localllm.calibration import BandwidthRecord
    from localllm.hardware import Hardware

MiB = 2**20


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure speed and memory of a model here, beside the planner's predictions",
        description="Load a model in fresh processes, measure prompt and decode tokens/s, load time, time to "
        "first token and peak memory, and print each beside the planner's prediction. Results "
        "are kept for this machine; later plans use the measured speed.",
    )
    p.add_argument(
        "model",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="a .gguf file, a catalog name or name:quant of a GGUF variant, or 'auto' (default: the "
        "model `auto` would use, if it is on disk); ONNX models are not measured",
    )
    p.add_argument(
        "--synthetic",
        metavar="SHAPE[:QUANT]",
        default=None,
        help=f"measure a random-weight model of a real shape instead ({', '.join(s for s in SHAPES if s != 'tiny')}"
        "; quant Q4_K_M by default, or Q8_0, F16): measures the machine, not a model's output",
    )
    p.add_argument("--prompt", type=int, default=128, metavar="N", help="prompt tokens (about; default 128)")
    p.add_argument("--gen", type=int, default=64, metavar="N", help="tokens to generate (default 64)")
    p.add_argument("--ctx", type=context_arg, default=None, metavar="N", help="context window (default: the plan's)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads (default: the plan's)")
    p.add_argument("--repeat", type=int, default=3, metavar="N", help="repetitions, each a fresh process (default 3)")
    p.add_argument(
        "--sweep-threads",
        action="store_true",
        help="measure every thread count from 1 to the cores (each kept: plans then use the fastest)",
    )
    p.add_argument("--refresh-bandwidth", action="store_true", help="measure the memory bandwidth again")
    p.add_argument("--no-save", action="store_true", help="do not keep the result for this machine")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


# The imports inside functions below keep `localllm --help` fast: it imports every command module.


def run(args: argparse.Namespace) -> int:
    from localllm.bench import bench, record
    from localllm.hardware.bandwidth import machine_bandwidth
    from localllm.hardware.detect import probe

    path = _model_path(args)
    hw = probe()
    if not args.json:
        print(f"measuring {path.name} ({args.repeat} runs in fresh processes)...", file=sys.stderr, flush=True)
    bw = machine_bandwidth(hw, refresh=args.refresh_bandwidth)
    hw = probe(refresh=True)  # now with the kept bandwidth
    if args.sweep_threads:
        return _sweep(args, path, hw)
    result = bench(
        path,
        n_prompt=args.prompt,
        n_gen=args.gen,
        context=args.ctx,
        threads=args.threads,
        repeat=args.repeat,
        progress=None if args.json else _progress,
    )
    saved = None if args.no_save else record(result, hw)
    load = _load_average()
    if args.json:
        out = result.to_dict()
        out["bandwidth"] = bw.__dict__
        out["saved_to"] = str(saved) if saved else None
        out["unsteady"] = result.unsteady  # why nothing was kept, when the runs disagreed
        out["load_average"] = load
        print(json.dumps(out, indent=2))
        return 0
    print(_render(result, bw, saved, load, hw))
    return 0


def _sweep(args: argparse.Namespace, path: Path, hw: Hardware) -> int:
    from localllm.bench import bench, record

    if args.threads is not None:
        raise InvalidModelError("give either --threads or --sweep-threads, not both")
    cores = int(hw.cpu.effective_cores or hw.cpu.logical_cores or 1)
    rows = []
    for n in range(1, cores + 1):
        if not args.json:
            print(f"{n} thread(s):", file=sys.stderr, flush=True)
        r = bench(
            path,
            n_prompt=args.prompt,
            n_gen=args.gen,
            context=args.ctx,
            threads=n,
            repeat=args.repeat,
            progress=None if args.json else _progress,
        )
        saved = None if args.no_save else record(r, hw)
        if r.unsteady and not args.json:
            print(f"  not kept: {r.unsteady}", file=sys.stderr, flush=True)
        rows.append((n, r, saved))
    if args.json:
        print(
            json.dumps(
                {
                    "model": str(path),
                    "saved_to": str(rows[0][2]) if rows[0][2] else None,
                    "by_threads": {str(n): r.to_dict() for n, r, _ in rows},
                },
                indent=2,
            )
        )
        return 0
    best = max(rows, key=lambda x: x[1].mean("decode_tps") or 0.0)
    print(
        f"{path.name}: decode tokens/s by threads (mean of {args.repeat}, min..max), "
        f"n_ctx {rows[0][1].placement['n_ctx']}"
    )
    for n, r, _ in rows:
        lo, hi = r.spread("decode_tps") or (0.0, 0.0)
        print(
            f"  {n:2d} threads  {r.mean('decode_tps'):7.1f}  ({lo:.1f}..{hi:.1f})  prompt {r.mean('prompt_tps'):.1f} "
            f"tok/s  CPU share {r.mean('decode_cpu_share'):.0%}{'   <- fastest' if n == best[0] else ''}"
        )
    if rows[0][2]:
        print(f"kept in {rows[0][2]}: plans for this model here now use {best[0]} thread(s)")
    return 0


def _model_path(args: argparse.Namespace) -> Path:
    from localllm.resolve import resolve

    if args.synthetic:
        if args.model:
            raise InvalidModelError("give either MODEL or --synthetic, not both")
        return _synthetic(args.synthetic)
    # the same MODEL forms as plan/run/load; "no such file" for a path that is not there
    resolved = resolve(args.model or "auto", context=args.ctx)
    if resolved.path is not None:
        if hasattr(resolved.info, "kv_bytes_per_token"):
            raise InvalidModelError(
                f"{resolved.path} is an ONNX model; localllm bench measures GGUF files (llama.cpp). For its "
                f"speed, see the timings of `localllm run {resolved.path} PROMPT --json`",
                path=str(resolved.path),
            )
        return resolved.path
    from localllm import store

    assert resolved.plan is not None  # a catalog model always has a plan
    variant = resolved.plan.variant
    why = variant.name if args.model else f"the model `auto` would use here, {variant.name},"
    if variant.format != "gguf":
        raise InvalidModelError(
            f"{variant.name} is an ONNX model; localllm bench measures GGUF files (llama.cpp): "
            f"give a GGUF variant (`localllm models` lists them) or a .gguf file"
        )
    local = store.resolve(variant)
    if local is None:
        raise ModelNotFoundError(
            f"{why} is not on disk. Download it with `localllm pull {variant.name}`, pass a .gguf file, or "
            f"measure this machine with a random-weight model: `localllm bench --synthetic smollm2-135m`",
            name=variant.name,
        )
    return Path(local)


def _synthetic(spec: str) -> Path:
    from localllm.paths import home

    shape, _, quant = spec.partition(":")
    shape, quant = shape.strip().lower(), (quant.strip() or "Q4_K_M").upper()
    if shape not in SHAPES:
        raise InvalidModelError(f"unknown --synthetic shape {shape!r}; use one of {', '.join(SHAPES)}")
    if quant not in ("Q4_K_M", "Q8_0", "F16", "Q4_0", "Q6_K"):
        raise InvalidModelError(f"unknown --synthetic quant {quant!r}; use Q4_K_M, Q8_0, Q6_K, Q4_0 or F16")
    from localllm.runtimes.llamacpp import install_log_handler

    install_log_handler()  # llama.cpp's quantizer log goes to `logging`, not the terminal
    return synthetic_gguf(home() / "bench", shape, quant, say=lambda line: print(line, file=sys.stderr, flush=True))


def _progress(i: int, run: RunMeasurement) -> None:
    print(
        f"  run {i + 1}: load {run.load_s:.2f} s, first token {run.ttft_s:.2f} s, prompt {run.prompt_tps:.1f} "
        f"tok/s, decode {run.decode_tps:.1f} tok/s, peak RSS {run.peak_rss / MiB:.0f} MiB",
        file=sys.stderr,
        flush=True,
    )


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _render(r: BenchResult, bw: BandwidthRecord, saved: Path | None, load: list[float] | None, hw: Hardware) -> str:
    p = r.placement
    where = "CPU" if not p["n_gpu_layers"] else f"n_gpu_layers {p['n_gpu_layers']}"
    first = r.runs[0]
    lines = [
        f"{Path(r.model).name}: {r.weight_bytes / MiB:.0f} MiB of weights, n_ctx {p['n_ctx']}, {p['n_threads']} "
        f"thread{'s' if p['n_threads'] != 1 else ''}, {where}, flash attention {'on' if p['flash_attn'] else 'off'}",
        f"{len(r.runs)} runs, each a fresh process: prompt {first.prompt_tokens} tokens, "
        f"{first.decode_tokens} generated (greedy)",
        f"memory bandwidth {bw.gbs:.1f} GB/s on {bw.threads} threads, {bw.per_thread_gbs:.1f} GB/s on one "
        f"(measured {bw.date[:10]})",
        "",
    ]
    head = f"{'':24s} {'measured: mean ± sd':>24s} {'min..max':>18s} {'predicted':>11s} {'ratio':>7s}"
    lines.append(head)

    def row(label, name, scale=1.0, unit="", pred=None, ratio=None, fmt="{:.2f}"):
        mean, sd, spread = r.mean(name), r.stdev(name), r.spread(name)
        if mean is None or sd is None or spread is None:  # all three are None together: no run has it
            return
        m = f"{fmt.format(mean / scale)} ± {fmt.format(sd / scale)}{unit}"
        s = f"{fmt.format(spread[0] / scale)}..{fmt.format(spread[1] / scale)}"
        pr = f"{fmt.format(pred / scale)}{unit}" if pred else "-"
        ra = f"{ratio:.2f}" if ratio else "-"
        lines.append(f"{label:24s} {m:>24s} {s:>18s} {pr:>11s} {ra:>7s}")

    row("decode tokens/s", "decode_tps", pred=r.predicted.decode_tps, ratio=r.ratio("decode_tps"), fmt="{:.1f}")
    row(
        "  per CPU-second", "decode_tps_cpu", pred=r.predicted.decode_tps, ratio=r.ratio("decode_tps_cpu"), fmt="{:.1f}"
    )
    row("prompt tokens/s", "prompt_tps", fmt="{:.1f}")
    row("time to first token", "ttft_s", unit=" s", fmt="{:.3f}")
    row("load time", "load_s", unit=" s", fmt="{:.3f}")
    row(
        "peak resident memory",
        "peak_rss",
        scale=MiB,
        unit=" MiB",
        pred=r.predicted.host_bytes,
        ratio=r.ratio("peak_rss"),
        fmt="{:.0f}",
    )
    if r.mean("gpu_memory") is not None or r.predicted.gpu_bytes:
        row(
            "GPU memory",
            "gpu_memory",
            scale=MiB,
            unit=" MiB",
            pred=r.predicted.gpu_bytes,
            ratio=r.ratio("gpu_memory"),
            fmt="{:.0f}",
        )
    lines.append("")
    lines.append(
        "ratio = measured / predicted; per CPU-second = tokens per second of CPU time per thread (the "
        "speed when the cores are ours); the planner does not predict prompt speed, first token or load time"
    )
    lines.append(f"decode prediction: {r.predicted.decode_basis}")
    cpu = r.predicted.memory.get("cpu")
    if cpu:
        repacked = f" + repacked {cpu['repacked'] / MiB:.0f}" if cpu.get("repacked") else ""
        lines.append(
            f"memory prediction: weights {cpu['weights'] / MiB:.0f}{repacked} + KV "
            f"{cpu['kv_cache'] / MiB:.0f} + compute "
            f"{cpu['compute'] / MiB:.0f} + runtime {cpu['overhead'] / MiB:.0f} MiB"
        )
    cores = hw.cpu.effective_cores or 1
    share = r.mean("decode_cpu_share")
    if (load and load[0] > cores) or (share is not None and share < 0.8):
        lines.append(
            f"note: while decoding, the process ran {share or 0:.0%} of its threads' time (load average "
            f"{load[0] if load else 0:.1f} on {cores:g} cores): other programs were running, so wall-clock "
            "speeds are lower and spread wider than on an idle machine"
        )
    if r.outliers:
        far = ", ".join(f"run {i + 1} ({r.runs[i].decode_tps:.1f} tok/s)" for i in r.outliers)
        lines.append(f"far from the median, so not counted in it: {far}")
    if saved:
        lines.append(
            f"kept in {saved}: plans for this model here now use the measured decode speed "
            f"(the median of the runs, {r.median('decode_tps'):.1f} tok/s)"
        )
    elif r.unsteady:
        lines.append(f"not kept: {r.unsteady}")
    return "\n".join(lines)
