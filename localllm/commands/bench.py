"""`localllm bench`: measure a model here, beside what the planner predicted; with --runtimes,
measure one model with both runtimes (llama.cpp and ONNX Runtime) so plans take the faster."""

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
    from localllm.bench_runtimes import RuntimeComparison
    from localllm.calibration import BandwidthRecord
    from localllm.catalog import Variant
    from localllm.hardware import Hardware
    from localllm.planner import Plan

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
        "model `auto` would use, if it is on disk); ONNX models are measured with --runtimes",
    )
    p.add_argument(
        "other",
        nargs="?",
        default=None,
        metavar="OTHER",
        help="with --runtimes: the same model in the other format (a .gguf file and an ONNX folder, either order)",
    )
    p.add_argument(
        "--runtimes",
        action="store_true",
        help="measure the model with llama.cpp (its GGUF variant) and ONNX Runtime (its ONNX variant), "
        "alternating in fresh processes, and keep which is faster here: later plans take it. MODEL is a "
        "catalog family with both formats (default: the family `auto` would use), or give a GGUF file "
        "and an ONNX folder",
    )
    p.add_argument(
        "--pull",
        action="store_true",
        help="with --runtimes: download the variants that are not on disk (without it, bench says what "
        "it would download)",
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

    if args.runtimes:
        return _runtimes(args)
    if args.other is not None or args.pull:
        raise InvalidModelError("a second MODEL and --pull go with --runtimes (one model in both formats)")
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


# -- --runtimes ---------------------------------------------------------------------------------------


def _runtimes(args: argparse.Namespace) -> int:
    from localllm.bench_runtimes import compare_runtimes, record_comparison
    from localllm.hardware.bandwidth import machine_bandwidth
    from localllm.hardware.detect import probe

    if args.synthetic or args.sweep_threads:
        raise InvalidModelError(
            "--runtimes measures a real model in both formats; it takes no --synthetic or --sweep-threads"
        )
    gguf, onnx, context, threads = _runtime_targets(args)
    hw = probe()
    machine_bandwidth(hw, refresh=args.refresh_bandwidth)  # the children's predictions use it
    hw = probe(refresh=True)
    if not args.json:
        print(
            f"measuring {gguf[1].name} with llama.cpp and {onnx[1].name} with ONNX Runtime ({args.repeat} runs "
            f"each, alternating, fresh processes, {_threads(threads)}, n_ctx {context})...",
            file=sys.stderr,
            flush=True,
        )
    c = compare_runtimes(
        gguf,
        onnx,
        n_prompt=args.prompt,
        n_gen=args.gen,
        context=context,
        threads=threads,
        rounds=args.repeat,
        hardware=hw,
        progress=None if args.json else _runtime_progress,
    )
    saved = None if args.no_save else record_comparison(c, hw)
    if args.json:
        print(json.dumps({**c.to_dict(), "saved_to": str(saved) if saved else None}, indent=2))
        return 0
    print(_render_runtimes(c, saved))
    return 0


def _runtime_targets(args: argparse.Namespace) -> tuple[tuple[Path, Variant], tuple[Path, Variant], int, int]:
    """(the GGUF file and its planned variant, the ONNX one, the context and threads both run at)."""
    from localllm.resolve import local_model_path, resolve

    if args.other is not None:  # a local pair
        sides: dict[str, tuple[Path, Plan]] = {}
        for given in (args.model, args.other):
            path = local_model_path(given)
            if path is None:
                raise InvalidModelError(
                    f"with two models, --runtimes takes a .gguf file and an ONNX folder of the same model; "
                    f"{given!r} is not a path"
                )
            r = resolve(path, context=args.ctx, threads=args.threads)
            if r.plan is None:
                raise InvalidModelError(r.note, path=str(path))
            rt = r.placement.runtime
            if rt in sides:
                raise InvalidModelError(
                    f"{sides[rt][0]} and {path} are both {rt} models; --runtimes compares a .gguf file "
                    "(llama.cpp) with an ONNX folder (ONNX Runtime)",
                    path=str(path),
                )
            sides[rt] = (path, r.plan)
        pairs = sides["llama.cpp"], sides["onnxruntime"]
    else:
        pairs = _catalog_pair(args)
    (gpath, gplan), (opath, oplan) = pairs
    context = args.ctx or min(gplan.placement.n_ctx, oplan.placement.n_ctx)
    threads = args.threads or gplan.placement.n_threads
    return (gpath, gplan.variant), (opath, oplan.variant), context, threads


def _catalog_pair(args: argparse.Namespace):
    """((path, plan) of the GGUF variant, (path, plan) of the ONNX one) the planner picks for a catalog
    family here, each on disk (downloaded first with --pull)."""
    from localllm import store
    from localllm.catalog import Variant, load_catalog
    from localllm.planner import plan
    from localllm.resolve import is_auto, local_model_path

    catalog = load_catalog()
    both = sorted({v.family.name for v in catalog.variants if v.format == "onnx"})
    model = args.model or "auto"
    if local_model_path(model) is not None:
        raise InvalidModelError(
            "--runtimes measures one model in both formats: give a .gguf file and an ONNX folder of the same "
            f"model (localllm bench --runtimes FILE.gguf FOLDER), or a catalog family with both ({', '.join(both)})"
        )
    found = plan("auto", catalog=catalog, context=args.ctx).variant.family if is_auto(model) else catalog.find(model)
    family = found.family if isinstance(found, Variant) else found
    if family.name not in both:
        raise ModelNotFoundError(
            f"{family.name} has no ONNX variant in the catalog, so there is nothing to compare; families with "
            f"both formats: {', '.join(both)} (or give a .gguf file and an ONNX folder)",
            name=family.name,
        )
    plans = {}
    for rt in ("llama.cpp", "onnxruntime"):
        if isinstance(found, Variant) and (found.format == "onnx") == (rt == "onnxruntime"):
            plans[rt] = plan(found, catalog=catalog, context=args.ctx, threads=args.threads, runtime=rt)
        else:
            plans[rt] = plan(family, catalog=catalog, context=args.ctx, threads=args.threads, runtime=rt)
    paths = {rt: store.resolve(p.variant) for rt, p in plans.items()}
    missing = [plans[rt].variant for rt, path in paths.items() if path is None]
    if missing and not args.pull:
        what = "; ".join(
            f"{v.name} ({v.format.upper()}, {_mib(v.size)} from {v.repo or 'its source'})" for v in missing
        )
        raise ModelNotFoundError(
            f"to compare the runtimes on {family.name}, bench would download {what}. Add --pull to download "
            f"{'it' if len(missing) == 1 else 'them'} first (or `localllm pull NAME`)",
            name=family.name,
        )
    for v in missing:
        from localllm.commands.pull import ProgressBar

        bar = ProgressBar(v.name, stream=sys.stderr)
        try:
            rt = "onnxruntime" if v.format == "onnx" else "llama.cpp"
            paths[rt] = store.fetch(v, progress=bar)
        finally:
            bar.finish()
    return tuple((Path(str(paths[rt])), plans[rt]) for rt in ("llama.cpp", "onnxruntime"))


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n != 1 else ''}"


def _mib(n: int) -> str:
    return f"{n / MiB:.0f} MiB"


def _runtime_progress(runtime: str, i: int, run: RunMeasurement) -> None:
    print(
        f"  {runtime:12s} run {i + 1}: load {run.load_s:.2f} s, prompt {run.prompt_tps:.1f} tok/s, decode "
        f"{run.decode_tps:.1f} tok/s, peak RSS {run.peak_rss / MiB:.0f} MiB",
        file=sys.stderr,
        flush=True,
    )


def _render_runtimes(c: RuntimeComparison, saved: Path | None) -> str:
    from localllm.planner.runtime import RUNTIME_SWITCH_MARGIN, faster_runtime

    p = c.llama.result.placement
    lines = [
        f"{c.llama.variant} (llama.cpp) vs {c.onnx.variant} (ONNX Runtime): {len(c.llama.result.runs)} runs each, "
        f"alternating, each a fresh process; {_threads(p['n_threads'])}, n_ctx {p['n_ctx']}",
        "",
        f"{'':12s} {'decode tok/s: median (min..max)':>32s} {'prompt tok/s':>13s} {'peak RSS':>10s} {'load':>8s}",
    ]
    for side in (c.llama, c.onnx):
        r = side.result
        lo, hi = r.spread("decode_tps") or (0.0, 0.0)
        decode = f"{side.decode_tps:.1f} ({lo:.1f}..{hi:.1f})"
        lines.append(
            f"{side.runtime:12s} {decode:>32s} {r.median('prompt_tps') or 0:>13.1f} "
            f"{r.peak_rss / MiB:>6.0f} MiB {r.median('load_s') or 0:>6.2f} s"
        )
    lines.append("")
    if c.ratio:
        lines.append(f"ONNX Runtime / llama.cpp decode: {c.ratio:.2f}x (load average {c.load_average})")
    chosen = faster_runtime(c.llama.decode_tps, c.onnx.decode_tps)
    if saved:
        close = chosen == "llama.cpp" and (c.ratio or 0) > 1
        lines.append(
            f"kept in {saved}: plans for this model here now use {chosen}"
            + (f" (ONNX Runtime must be {RUNTIME_SWITCH_MARGIN - 1:.0%} faster to be chosen)" if close else "")
        )
    elif c.unsteady:
        lines.append(f"not kept: {c.unsteady}")
    return "\n".join(lines)
