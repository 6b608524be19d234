"""Decode on a busy machine: localllm's adaptive threads against raw llama-cpp-python's.

    python benchmarks/bench_busy.py [--hogs 0,1,2] [--runs 3] [--tokens 24] [--quick]
                                    [--shape llama-3.2-1b | --model PATH] [--extras] [--json]

A hog is a child process that spins on one core for the whole block of runs at one hog
count; it is bounded (a deadline, and it exits within ~10 ms once this script is gone) and
killed when the block ends. For each hog count the sides below run in fresh processes, in
an order that rotates from run to run so drift on a shared machine hits all alike:

  localllm         `localllm.load(path, context=N)`: the plan's threads (physical cores) as a
                   ceiling, re-chosen before the generation from the CPU others leave free
  localllm@fixed   `localllm.load(path, context=N, threads=cores)`: what localllm did before
  raw@default      `llama_cpp.Llama(path, ...)` without n_threads (its own default,
                   cpu_count // 2 decode threads and cpu_count for prompts)
  raw@K            `llama_cpp.Llama(path, n_threads=K, n_threads_batch=K, ...)` for K in
                   1..physical cores: the sweep for the best fixed count (raw@cores is the
                   "threads = physical cores" case)
  --extras adds    raw@cores with OMP_WAIT_POLICY=PASSIVE, and raw@cores with a ggml threadpool
                   of poll=0 attached (llama_attach_threadpool): the two options measured before
                   choosing neither (see localllm/hardware/cpu_load.py)
  --onnx FOLDER    instead: localllm's ONNX engine (threads = cores, spinning off when busy at
                   load) against onnx@K (ONNX Runtime threads fixed at K, spinning on) and
                   onnx@cores-nospin

Definitions as in benchmarks/bench_llamacpp.py: decode = tokens after the first / time after
the first, greedy; both sides get localllm's placement otherwise (n_ctx, batch, flash
attention, KV type, weight repacking). The model is the random-weight GGUF bench_llamacpp
builds (cached in benchmarks/.bench/), or --model PATH (e.g. the real SmolLM2).

Targets (issue 16): with 1 and 2 hogs, localllm >= 2x raw@cores, >= 1.0x raw@default and
>= 0.9x the best raw@K; with 0 hogs unchanged: localllm / localllm@fixed about 1 on an idle
machine (the plan's count on both; where other programs keep cores busy, adapting wins).
Every ratio is the median of per-run ratios (the runs of one index ran next to each other);
raw@default, whose decode threads are one raw@K's, is pooled with it for the best fixed count.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_llamacpp import PROMPT, build_model  # noqa: E402 - the same model and prompt

from localllm.testing.hogs import start_hog  # noqa: E402

CHILD = r"""
import ctypes, json, os, sys, time
side, path, n_tokens, prompt = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[5]
placement = json.loads(sys.argv[4])
threads = placement.get("threads")  # None: the side's own default
if side == "raw":
    import llama_cpp
    import llama_cpp.llama_cpp as lib
    _default = lib.llama_model_default_params
    def _params():
        p = _default()
        p.use_extra_bufts = placement["extra_buffers"]
        return p
    lib.llama_model_default_params = _params
    kw = {} if threads is None else {"n_threads": threads, "n_threads_batch": threads}
    llm = llama_cpp.Llama(path, n_ctx=placement["n_ctx"], n_batch=placement["n_batch"], n_ubatch=placement["n_ubatch"],
                          flash_attn=placement["flash_attn"], type_k=placement["type_kv"], type_v=placement["type_kv"],
                          n_gpu_layers=0, verbose=False, **kw)
    keep = None
    if placement.get("poll0"):  # a ggml threadpool that sleeps instead of spinning, attached to the context
        d = os.path.join(os.path.dirname(lib.__file__), "lib")
        base, cpu = ctypes.CDLL(os.path.join(d, "libggml-base.so")), ctypes.CDLL(os.path.join(d, "libggml-cpu.so"))
        ll = ctypes.CDLL(os.path.join(d, "libllama.so"))
        params = (ctypes.c_ubyte * 528)()  # struct ggml_threadpool_params: cpumask[512], n_threads, prio, poll, ...
        base.ggml_threadpool_params_init.argtypes = [ctypes.c_void_p, ctypes.c_int]
        base.ggml_threadpool_params_init(ctypes.addressof(params), llm.n_threads)
        ctypes.c_uint32.from_buffer(params, 520).value = 0
        cpu.ggml_threadpool_new.argtypes, cpu.ggml_threadpool_new.restype = [ctypes.c_void_p], ctypes.c_void_p
        pool = cpu.ggml_threadpool_new(ctypes.addressof(params))
        ll.llama_attach_threadpool.argtypes = [ctypes.c_void_p] * 3
        ll.llama_attach_threadpool(llm._ctx.ctx, pool, pool)
        keep = (params, pool)
    used = llm.n_threads
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    stamps = []
    for tok in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):
        stamps.append(time.perf_counter())
        if lib.llama_vocab_is_eog(llm._model.vocab, tok) or len(stamps) > n_tokens:
            break
    decode_tps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    why = ""
elif side == "onnx":
    import localllm
    import localllm.runtimes.onnx as onnx_runtime
    if placement["spin"] != "auto":  # force ONNX Runtime's spinning on or off, whatever the load
        onnx_runtime.busy_at_load = lambda threads, load: placement["spin"] == "off"
    llm = localllm.load(path, context=placement["n_ctx"], threads=threads)
    llm.generate("hello", max_tokens=2, temperature=0)  # ORT's first run allocates: not decode
    got = list(llm.stream(prompt, temperature=0, max_tokens=n_tokens + 1))
    decode_tps = got[-1].timings.decode_tps
    used = llm.info.placement.n_threads
    why = "spinning " + ("on" if llm._engine.spinning else "off")
else:
    import localllm
    llm = localllm.load(path, context=placement["n_ctx"], threads=threads)
    got = list(llm.stream(prompt, temperature=0, max_tokens=n_tokens + 1))
    decode_tps = got[-1].timings.decode_tps
    used = llm._engine.n_threads
    fit = llm._engine.adaptive_threads
    why = fit.last.why if fit is not None and fit.last is not None else "fixed"
print(json.dumps({"decode_tps": decode_tps, "threads": used, "why": why, "load_avg": os.getloadavg()[0]}))
"""


def start_hogs(n: int, seconds: float) -> list[subprocess.Popen]:
    return [start_hog(seconds) for _ in range(n)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for h in hogs:
        h.kill()
    for h in hogs:
        h.wait()


def child(side: str, path: Path, n_tokens: int, placement: dict, env: dict[str, str]) -> dict:
    kind = side.split("@")[0] if side.startswith(("raw", "onnx")) else "localllm"
    kind = "onnx" if side == "localllm-onnx" else kind
    out = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path), str(n_tokens), json.dumps(placement), PROMPT],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, **env},
    )
    if out.returncode != 0:
        raise SystemExit(f"{side} run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sides(cores: int, *, extras: bool, onnx: bool = False) -> dict[str, tuple[dict, dict[str, str]]]:
    """Each side's name -> (its placement changes, its environment changes)."""
    if onnx:  # ONNX Runtime fixes its threads per session: localllm only turns spinning off when busy
        sweep = {f"onnx@{k}": ({"threads": k, "spin": "on"}, {}) for k in range(1, cores + 1)}
        return {
            "localllm-onnx": ({"threads": cores, "spin": "auto"}, {}),
            **sweep,
            f"onnx@{cores}-nospin": ({"threads": cores, "spin": "off"}, {}),
        }
    out: dict[str, tuple[dict, dict[str, str]]] = {
        "localllm": ({"threads": None}, {}),
        "localllm@fixed": ({"threads": cores}, {}),
        "raw@default": ({"threads": None}, {}),
    }
    for k in range(1, cores + 1):
        out[f"raw@{k}"] = ({"threads": k}, {})
    if extras:
        out[f"raw@{cores}+PASSIVE"] = ({"threads": cores}, {"OMP_WAIT_POLICY": "PASSIVE"})
        out[f"raw@{cores}+poll0"] = ({"threads": cores, "poll0": True}, {})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hogs", default="0,1,2", help="hog counts, comma-separated")
    ap.add_argument("--runs", type=int, default=3, help="runs of every side per hog count")
    ap.add_argument("--tokens", type=int, default=24, help="tokens decoded after the first")
    ap.add_argument("--shape", default="llama-3.2-1b")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--model", type=Path, default=None, help="a GGUF file instead of the random-weight shape")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--quick", action="store_true", help="1 run, 12 tokens (a sanity check, not a measurement)")
    ap.add_argument("--extras", action="store_true", help="also raw@cores with OMP_WAIT_POLICY=PASSIVE and poll=0")
    ap.add_argument(
        "--onnx",
        type=Path,
        default=None,
        help="an ONNX model folder: localllm's ONNX engine (spinning off when busy at load) against fixed "
        "ONNX Runtime threads with spinning on, instead of the llama.cpp sides",
    )
    ap.add_argument("--json", action="store_true", help="print every run as JSON at the end")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.tokens = 1, 12
    hog_counts = [int(h) for h in args.hogs.split(",")]

    import localllm

    cores = localllm.probe().cpu.physical_cores or os.cpu_count() or 1
    if args.onnx is not None:
        path, base = args.onnx, {"n_ctx": args.ctx}
    else:
        path = args.model if args.model is not None else build_model(args.shape, args.quant)
        base = llama_placement(path, args.ctx, cores)
    plan = sides(cores, extras=args.extras, onnx=args.onnx is not None)
    size = sum(f.stat().st_size for f in path.rglob("*")) if path.is_dir() else path.stat().st_size
    print(
        f"model {path.name} ({size / 2**20:.0f} MiB); {cores} physical cores, "
        f"{os.cpu_count()} CPUs; {args.tokens} tokens x {args.runs} runs; hogs {hog_counts}; "
        f"load avg {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
        flush=True,
    )
    first = next(iter(plan))
    child(first, path, 2, {**base, **plan[first][0]}, {})  # warm the page cache
    results: dict[int, dict[str, list[dict]]] = {}
    names = list(plan)
    for hogs in hog_counts:
        runs: dict[str, list[dict]] = {name: [] for name in names}
        procs = start_hogs(hogs, seconds=3600)
        try:
            time.sleep(0.5)  # let the hogs reach the CPUs before the first window starts
            for i in range(args.runs):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    changes, env = plan[name]
                    r = child(name, path, args.tokens, {**base, **changes}, env)
                    runs[name].append(r)
                    print(
                        f"  hogs {hogs} run {i + 1} {name:18s} {r['decode_tps']:7.2f} tok/s  threads {r['threads']}"
                        f"  load avg {r['load_avg']:.2f}  {r['why'] if name == 'localllm' else ''}",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            stop_hogs(procs)
        results[hogs] = runs
    report(results, cores)
    if args.json:
        print(json.dumps({"cores": cores, "placement": base, "results": results}))
    return 0


def llama_placement(path: Path, ctx: int, cores: int) -> dict:
    """localllm's placement for path, which the raw sides use too (bench_llamacpp does the same)."""
    import localllm
    from localllm.runtimes.llamacpp import GGML_TYPE_OF_KV

    with localllm.load(path, context=ctx, threads=cores) as m:
        p = m.info.placement
        extra_buffers = m._engine.extra_buffers
    return {
        "n_ctx": p.n_ctx,
        "n_batch": p.n_batch,
        "n_ubatch": p.n_ubatch,
        "flash_attn": p.flash_attn,
        "type_kv": GGML_TYPE_OF_KV[p.kv_type],
        "extra_buffers": extra_buffers,
    }


def report(results: dict[int, dict[str, list[dict]]], cores: int) -> None:
    def med(runs: list[dict]) -> float:
        return statistics.median(r["decode_tps"] for r in runs)

    def paired(a: list[dict], b: list[dict]) -> float:
        # the runs of one index ran next to each other: their ratio cancels most drift
        return statistics.median(x["decode_tps"] / y["decode_tps"] for x, y in zip(a, b, strict=True))

    print()
    print(f"{'hogs':>4s}  {'side':18s} {'decode tok/s (median, range)':30s} threads")
    for hogs, runs in results.items():
        for name, rs in runs.items():
            vals = [r["decode_tps"] for r in rs]
            used = sorted({r["threads"] for r in rs})
            print(f"{hogs:4d}  {name:18s} {med(rs):7.2f} ({min(vals):.2f}..{max(vals):.2f}){'':12s} {used}")
    print()
    for hogs, runs in results.items():
        if "localllm-onnx" in runs:
            ours = runs["localllm-onnx"]
            sweep = {k: v for k, v in runs.items() if k[5:].isdigit()}
            best = max(sweep, key=lambda k: med(sweep[k]))
            spin = ", ".join(sorted({r["why"] for r in ours}))
            top = runs[f"onnx@{cores}"]
            print(
                f"hogs {hogs}: localllm-onnx ({spin}) / onnx@{cores} {paired(ours, top):.2f}, "
                f"/best fixed ({best}) {paired(ours, runs[best]):.2f}; onnx@{cores}-nospin / onnx@{cores} "
                f"{paired(runs[f'onnx@{cores}-nospin'], top):.2f}"
            )
            continue
        ours = runs["localllm"]
        sweep = {k: v for k, v in runs.items() if k[4:].isdigit()}
        best = max(sweep, key=lambda k: med(sweep[k]))
        vs_cores = paired(ours, runs[f"raw@{cores}"])
        vs_default = paired(ours, runs["raw@default"])
        vs_best = paired(ours, runs[best])
        # raw@default decodes with the threads of one raw@K (cpu_count // 2): one configuration measured
        # twice. Picking the better of two noisy medians of it overstates the best fixed count (with two
        # hogs they differed by 30%), so where the best is that K its runs and raw@default's are pooled.
        twin = f"raw@{(os.cpu_count() or 2) // 2}"
        if best == twin:
            pooled = runs[twin] + runs["raw@default"]
            vs_best = statistics.median(
                x["decode_tps"] / y["decode_tps"] for x, y in zip(ours + ours, pooled, strict=True)
            )
            best += "+raw@default"
        vs_before = paired(ours, runs["localllm@fixed"])
        line = (
            f"hogs {hogs}: localllm/raw@{cores} {vs_cores:.2f}, /raw@default {vs_default:.2f}, "
            f"/best fixed ({best}) {vs_best:.2f}, /localllm@fixed {vs_before:.2f}"
        )
        if hogs:
            ok = vs_cores >= 2.0 and vs_default >= 1.0 and vs_best >= 0.9
            line += f"  (targets >= 2, >= 1.0, >= 0.9: {'PASS' if ok else 'FAIL'})"
        else:
            # idle, both run the plan's count; on a machine others keep busy, adapting may win
            line += f"  (target: not below localllm@fixed, >= 0.95: {'PASS' if vs_before >= 0.95 else 'FAIL'})"
        print(line)
    print(f"load avg at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
