"""localllm against raw llama-cpp-python in ONE process: both loaded, runs alternating.

    python benchmarks/bench_llamacpp_inproc.py [--pairs 8] [--tokens 96] [--shape llama-3.2-1b]

A diagnostic next to benchmarks/bench_llamacpp.py, which runs each side in a fresh process.
Here both models live in the same process, on the same file and placement (localllm's plan;
raw gets the same n_ctx, threads, batch, ubatch and flash attention), so whatever differs
between two processes (memory layout, what ran before the load) hits both alike, and only the
per-token paths differ: `Model.generate` (localllm's token loop, numpy sampling) against
`Llama.generate` (llama-cpp-python's, llama.cpp's sampler chain). It also times the engines
alone: localllm's `LlamaCppEngine.eval` against `Llama.eval`, one token at a time.

Decode = tokens after the first / time after the first, greedy. The ratio is the median of
adjacent (localllm, raw) pairs, their order alternating. Issue 16, on the 2-core EPYC: the
fresh-process bench gave 0.954-0.959; this gave 1.003 and 0.983 (localllm's model loaded
first; engine eval 28.62 against 28.11 ms a token) and 1.026 and 0.962 (--raw-first; 22.98
against 22.88, 23.68 against 24.26): the engines are level within this machine's noise of a
few percent, in either order.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_llamacpp import PROMPT, build_model  # noqa: E402 - the same model and prompt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--shape", default="llama-3.2-1b")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--raw-first", action="store_true", help="load raw's model first (the default: localllm's)")
    args = ap.parse_args()
    from llama_cpp import Llama

    import localllm

    path = build_model(args.shape, args.quant)
    m = localllm.load(path, context=args.ctx)
    p, extra_buffers = m.info.placement, m._engine.extra_buffers
    if args.raw_first:  # the plan is kept; the model loads again after raw's
        m.close()
    import llama_cpp.llama_cpp as lib

    default = lib.llama_model_default_params

    def params():  # ggml's weight repacking as localllm decided it here (as bench_llamacpp does)
        out = default()
        out.use_extra_bufts = extra_buffers
        return out

    lib.llama_model_default_params = params
    raw = Llama(
        model_path=str(path),
        n_ctx=p.n_ctx,
        n_threads=p.n_threads,
        n_threads_batch=p.n_threads_batch,
        n_batch=p.n_batch,
        n_ubatch=p.n_ubatch,
        flash_attn=p.flash_attn,
        verbose=False,
    )
    if args.raw_first:
        m = localllm.load(path, context=args.ctx)
    n = args.tokens

    def ours() -> float:
        return m.generate(PROMPT, temperature=0, max_tokens=n, speculative="off").timings.decode_tps

    def theirs() -> float:
        tokens = raw.tokenize(PROMPT.encode(), add_bos=True)
        t_first, got = None, 0
        for _ in raw.generate(tokens, temp=0.0, reset=True):
            t_first = t_first or time.perf_counter()
            got += 1
            if got >= n:
                break
        return (got - 1) / (time.perf_counter() - (t_first or time.perf_counter()))

    ratios = []
    for i in range(args.pairs):
        if i % 2 == 0:
            a, b = ours(), theirs()
        else:
            b, a = theirs(), ours()
        ratios.append(a / b)
        print(f"  pair {i + 1}: localllm {a:6.2f} raw {b:6.2f} tok/s  ratio {a / b:.3f}", file=sys.stderr, flush=True)

    engine, step = m._engine, []
    for i in range(args.pairs):  # the engines alone: one token at a time, 48 each, alternating
        for side in ("ours", "raw") if i % 2 == 0 else ("raw", "ours"):
            engine.rewind(0)
            raw.reset()
            start = engine.tokenize(PROMPT, add_bos=True)
            (engine.eval if side == "ours" else raw.eval)(start)
            t0 = time.perf_counter()
            for k in range(48):
                (engine.eval if side == "ours" else raw.eval)([1000 + k])
            step.append((side, (time.perf_counter() - t0) / 48 * 1e3))
    ms = {s: statistics.median(v for side, v in step if side == s) for s in ("ours", "raw")}
    print(f"\nplacement: {p}; loaded first: {'raw' if args.raw_first else 'localllm'}")
    print(f"decode ratio localllm/raw, one process (median of {args.pairs} pairs): {statistics.median(ratios):.3f}")
    print(f"engine eval ms/token: localllm {ms['ours']:.2f}, raw {ms['raw']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
