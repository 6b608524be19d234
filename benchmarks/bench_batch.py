"""Batch decoding against the same prompts run one after another: aggregate decode tokens/s.

    python benchmarks/bench_batch.py [--threads 2] [--tokens 64] [--sizes 1,2,4,8,16]
        [--smollm2 PATH] [--onnx FOLDER] [--skip-1b] [--ctx 256] [--no-save]

Models: the Llama-3.2-1B-shaped random-weight Q4_K_M (built and cached as
benchmarks/bench_llamacpp.py does, under benchmarks/.bench/), the real SmolLM2-135M-Instruct
Q4_1 (the tests' cached copy by default), and an ONNX folder when given.

Each configuration is a fresh Python process:
  seq      `load(path)` (n_seq 1), then `generate(prompt, temperature=0)` for each of the 16
           prompts in turn. Aggregate decode tokens/s = tokens after each item's first / the
           time after each item's first token, summed over items (Timings.decode_tps's
           definition, pooled).
  batch N  `load(path, parallel=N)`, then `stream_batch(prompts[:N], temperature=0)`: the N
           sequences in one llama_decode per step. Aggregate decode tokens/s = tokens that
           arrive after the last item's first token / the time from then to the end (the window
           where all N sequences decode together; prompt reading is outside it).
ms/step is the time one decode step takes at that size (N / aggregate tokens/s): the compute
per step, which is what limits the speedup once it grows with N. Greedy outputs of every
batch item are checked identical to the sequential run of the same prompt.

Each llama.cpp batch size measured is kept in this machine's calibration file
(calibration.BatchRecord: file, sequences, threads, aggregate tokens/s, ms/step) unless
--no-save; the planner then picks N for that file from these numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".bench"
SMOLLM2 = Path.home() / ".cache" / "localllm-test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
SUBJECTS = (
    "the history of the bicycle",
    "how bread is made",
    "why the sky is blue",
    "the life of honey bees",
    "how a steam engine works",
    "the rules of chess",
    "what makes a good garden",
    "the water cycle",
    "how ships float",
    "the planets of the solar system",
    "the first computers",
    "how to learn a language",
    "the migration of birds",
    "why cats purr",
    "how paper is recycled",
    "the invention of the telephone",
)
PROMPTS = [f"Write a long, detailed essay about {s}. Begin with its origins and go on at length." for s in SUBJECTS]

CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
import localllm
kw = {"context": args["ctx"], "threads": args["threads"]}
if args["runtime"]:
    kw["runtime"] = args["runtime"]
prompts, n_tok = args["prompts"], args["tokens"]
if args["mode"] == "seq":
    with localllm.load(args["path"], **kw) as llm:
        llm.generate(prompts[0], temperature=0, max_tokens=2)  # warm: pages mapped, buffers allocated
        items, dec_tok, dec_s, t0 = [], 0, 0.0, time.perf_counter()
        for p in prompts:
            llm._engine.rewind(0)  # no prefix reuse between prompts: each is read whole, as in a batch
            c = llm.generate(p, temperature=0, max_tokens=n_tok)
            t = c.timings
            items.append({"tokens": list(c.token_ids), "finish": c.finish_reason, "total_s": t.total_s})
            if t.decode_tokens > 1 and t.decode_tps > 0:
                dec_tok += t.decode_tokens - 1
                dec_s += (t.decode_tokens - 1) / t.decode_tps
        wall = time.perf_counter() - t0
        n_seq = llm.info.placement.n_seq
    print(json.dumps({"items": items, "agg_tps": dec_tok / dec_s if dec_s else 0.0, "wall_s": wall, "n_seq": n_seq}))
else:
    n = args["n"]
    with localllm.load(args["path"], parallel=n, **kw) as llm:
        llm.generate_batch(prompts[:n], temperature=0, max_tokens=2)  # warm, as above
        toks = [[] for _ in range(n)]
        first = [None] * n
        stamps = []  # (time, tokens in the chunk)
        t0 = time.perf_counter()
        for i, ch in llm.stream_batch(prompts[:n], temperature=0, max_tokens=n_tok):
            now = time.perf_counter()
            toks[i].extend(ch.token_ids)
            if ch.token_ids and first[i] is None:
                first[i] = now
            stamps.append((now, len(ch.token_ids)))
        t_end = time.perf_counter()
        started = max(f for f in first if f is not None)
        window = sum(k for at, k in stamps if at > started)
        pl = llm.info.placement
    agg = window / (t_end - started) if t_end > started else 0.0
    print(json.dumps({"items": [{"tokens": t} for t in toks], "agg_tps": agg, "wall_s": t_end - t0,
                      "n_seq": pl.n_seq, "n_gpu_layers": pl.n_gpu_layers, "n_ctx": pl.n_ctx}))
"""


def child(path: Path, mode: str, n: int, args: argparse.Namespace, runtime: str | None) -> dict:
    spec = {
        "path": str(path),
        "mode": mode,
        "n": n,
        "ctx": args.ctx,
        "threads": args.threads,
        "tokens": args.tokens,
        "prompts": PROMPTS[: max(args.sizes)],
        "runtime": runtime,
    }
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, timeout=3600)
    if out.returncode != 0:
        raise SystemExit(f"{mode} {n} on {path.name} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_model(label: str, path: Path, args: argparse.Namespace, runtime: str | None = None) -> list[str]:
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    say(f"{label}: sequential, {max(args.sizes)} prompts x {args.tokens} tokens ...")
    seq = child(path, "seq", 1, args, runtime)
    say(f"  sequential {seq['agg_tps']:.2f} tok/s (wall {seq['wall_s']:.1f}s)")
    rows = [
        f"{label} ({runtime or 'llama.cpp'}, {args.threads} threads, {args.tokens} tokens/item)",
        f"  {'N':>3} {'agg decode tok/s':>17} {'sequential':>11} {'ratio':>6} {'ms/step':>8} "
        f"{'wall s (batch/seq)':>20}  greedy = sequential",
    ]
    for n in args.sizes:
        b = child(path, "batch", n, args, runtime)
        same = [bt["tokens"] == st["tokens"] for bt, st in zip(b["items"], seq["items"][:n], strict=True)]
        diff = [i for i, ok in enumerate(same) if not ok]
        seq_wall = sum(it["total_s"] for it in seq["items"][:n])
        ratio = b["agg_tps"] / seq["agg_tps"] if seq["agg_tps"] else 0.0
        step_ms = 1000 * n / b["agg_tps"] if b["agg_tps"] else 0.0
        note = "yes" if not diff else f"NO: items {diff} differ"
        if b["n_seq"] != n:
            note += f" (loaded with n_seq {b['n_seq']})"
        rows.append(
            f"  {n:>3} {b['agg_tps']:>17.2f} {seq['agg_tps']:>11.2f} {ratio:>5.2f}x {step_ms:>8.1f} "
            f"{b['wall_s']:>9.1f}/{seq_wall:<9.1f}  {note}"
        )
        say(rows[-1])
        if args.save and runtime is None and b["n_seq"] == n and not diff and b["agg_tps"] > 0:
            keep(path, n, b, args)
    return rows


def keep(path: Path, n: int, b: dict, args: argparse.Namespace) -> None:
    """Keep one measured batch size in this machine's calibration file, for the planner."""
    from datetime import datetime, timezone

    import localllm
    from localllm.calibration import BatchRecord, save_batch

    st = path.stat()
    record = BatchRecord(
        path=os.path.abspath(path),  # as planner.machine.batches_of matches it
        file_size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        n_seq=n,
        n_threads=args.threads,
        n_gpu_layers=b["n_gpu_layers"],
        n_ctx=b["n_ctx"],
        aggregate_tps=b["agg_tps"],
        step_ms=1000 * n / b["agg_tps"],
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model=path.name,
    )
    save_batch(localllm.probe(), record)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=64, help="tokens decoded per item")
    ap.add_argument("--ctx", type=int, default=256, help="context of each sequence")
    ap.add_argument("--sizes", default="1,2,4,8,16", help="batch sizes, comma-separated")
    ap.add_argument("--smollm2", type=Path, default=SMOLLM2, help="the real SmolLM2-135M-Instruct GGUF")
    ap.add_argument("--onnx", type=Path, help="an ONNX model folder to run too")
    ap.add_argument("--skip-1b", action="store_true", help="leave out the Llama-3.2-1B-shaped model")
    ap.add_argument("--skip-smollm2", action="store_true")
    ap.add_argument("--no-save", dest="save", action="store_false", help="keep no calibration records")
    args = ap.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if max(args.sizes) > len(PROMPTS):
        raise SystemExit(f"at most {len(PROMPTS)} sequences (one prompt each)")

    import localllm

    cpu = localllm.probe().cpu
    rows = [f"CPU: {cpu.brand} ({cpu.physical_cores} cores, {cpu.logical_cores} threads); load avg {os.getloadavg()}"]
    if not args.skip_1b:
        from localllm.synthetic import synthetic_gguf

        path = synthetic_gguf(CACHE, "llama-3.2-1b", "Q4_K_M", say=lambda line: print(line, file=sys.stderr))
        rows += bench_model("Llama-3.2-1B-shaped Q4_K_M", path, args)
    if not args.skip_smollm2:
        if not args.smollm2.is_file():
            raise SystemExit(f"no SmolLM2 GGUF at {args.smollm2}; pass --smollm2 PATH or --skip-smollm2")
        rows += bench_model("SmolLM2-135M-Instruct Q4_1", args.smollm2, args)
    if args.onnx is not None:
        rows += bench_model(f"ONNX {args.onnx.name}", args.onnx, args, runtime="onnxruntime")
    print("\n".join(rows))
    print(f"command: python benchmarks/bench_batch.py {' '.join(sys.argv[1:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
