"""localllm vs raw llama-cpp-python, side by side, on the same GGUF file and threads.

    python benchmarks/bench_llamacpp.py [--runs 5] [--tokens 64] [--shape llama-3.2-1b] [--quant Q4_K_M]

The model is a random-weight GGUF with Llama-3.2-1B's shape (F16 written with `gguf`,
then quantized by llama.cpp's `llama_model_quantize`), cached under benchmarks/.bench/
(gitignored). Each run is a fresh Python process; runs alternate raw, localllm, raw,
localllm... so drift on a shared machine hits both alike.

What is timed, in each child process:
  load     from before importing the library: raw: `import llama_cpp; llama_cpp.Llama(path,
           n_ctx, n_threads, n_threads_batch, n_batch, n_ubatch, verbose=False)`; localllm:
           `import localllm; localllm.load(path, context=n_ctx)` — everything it does: GGUF
           validation in Python, hardware probe, planning, llama.cpp load.
  ttft     raw: `Llama.generate(tokens, temp=0)` (llama.cpp's own greedy sampler chain) until
           its first token; localllm: `Model.stream(prompt, temperature=0)` until the first
           token is sampled (Timings.ttft_s; the prompt's tokenization is a few microseconds).
  decode   tokens after the first / time after the first (same definition for both).
Both sides use the placement localllm's planner chose (n_ctx, threads, batch, ubatch,
flash attention, KV cache type) and ggml's extra weight buffers (weight repacking) as
localllm runs them on this machine: on, unless an AMX build failed its trial or
LOCALLLM_LLAMA_EXTRA_BUFFERS says otherwise (localllm/runtimes/llamacpp.py). Greedy
tokens must be identical on both sides, which checks the comparison is like for like.

Targets (issue 4): decode tokens/s ratio localllm/raw >= 0.98; load + first token
ratio <= 1.1.
"""

from __future__ import annotations

import argparse
import compileall
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".bench"
PROMPT = (
    "The quick brown fox jumps over the lazy dog. Local models answer questions, "
    "write text and chat with you on your own machine."
)

CHILD = r"""
import json, os, resource, sys, time
side, path, n_tokens, placement = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
prompt = sys.argv[5]


def hardware(placement):
    # the probed machine, with the thread count this run asked for (so the planner picks it)
    import dataclasses
    from localllm import probe
    hw = probe()
    cpu = dataclasses.replace(hw.cpu, physical_cores=placement["n_threads"])
    return dataclasses.replace(hw, cpu=cpu)


t0 = time.perf_counter()  # both sides pay for importing their library
if side == "raw":
    import llama_cpp
    import llama_cpp.llama_cpp as lib
    _default = lib.llama_model_default_params
    def _params():
        p = _default()
        p.use_extra_bufts = placement["extra_buffers"]  # as localllm runs here (see the docstring)
        return p
    lib.llama_model_default_params = _params
    llm = llama_cpp.Llama(path, n_ctx=placement["n_ctx"], n_threads=placement["n_threads"],
                          n_threads_batch=placement["n_threads_batch"], n_batch=placement["n_batch"],
                          n_ubatch=placement["n_ubatch"], flash_attn=placement["flash_attn"],
                          type_k=placement["type_kv"], type_v=placement["type_kv"], n_gpu_layers=0, verbose=False)
    t1 = time.perf_counter()
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    out, stamps = [], []
    t2 = time.perf_counter()
    for tok in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):
        stamps.append(time.perf_counter())
        if llm._model.token_eos() == tok or lib.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        out.append(int(tok))
        if len(out) >= n_tokens:
            break
    load_s, ttft_s = t1 - t0, stamps[0] - t2
    decode_tps = (len(stamps) - 1) / (stamps[-1] - stamps[0])
else:
    import localllm
    llm = localllm.load(path, context=placement["n_ctx"], hardware=hardware(placement))
    t1 = time.perf_counter()
    got = list(llm.stream(prompt, temperature=0, max_tokens=n_tokens))
    timings = got[-1].timings
    out = [t for c in got for t in c.token_ids]
    load_s, ttft_s, decode_tps = t1 - t0, timings.ttft_s, timings.decode_tps
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"side": side, "load_s": load_s, "ttft_s": ttft_s, "decode_tps": decode_tps,
                  "n": len(out), "tokens": out, "peak_rss": rss}))
"""


def build_model(shape: str, quant: str) -> Path:
    from localllm.synthetic import synthetic_gguf

    return synthetic_gguf(CACHE, shape, quant, say=lambda line: print(line, file=sys.stderr, flush=True))


def child(side: str, path: Path, n_tokens: int, placement: dict, prompt: str = PROMPT) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, side, str(path), str(n_tokens), json.dumps(placement), prompt],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise SystemExit(f"{side} run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per side (alternating)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens to decode per run")
    ap.add_argument("--shape", default="llama-3.2-1b")
    ap.add_argument("--quant", default="Q4_K_M")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="threads for both sides (default: the plan's)")
    ap.add_argument(
        "--prompt-repeat",
        type=int,
        default=1,
        help="the prompt N times over: a long prompt times prompt reading (localllm reads it in "
        "chunks of PROMPT_CHUNK tokens, to see a stop between two; raw in n_batch batches)",
    )
    ap.add_argument("--json", action="store_true", help="print all runs as JSON")
    args = ap.parse_args()
    prompt = " ".join([PROMPT] * args.prompt_repeat)

    path = build_model(args.shape, args.quant)
    import localllm

    # An installed package runs from bytecode (pip compiles it, as it did llama_cpp). A source
    # tree edited under PYTHONDONTWRITEBYTECODE=1 has stale .pyc files, and every localllm
    # child would compile its modules again (~70 ms of load time raw never pays).
    compileall.compile_dir(os.path.dirname(localllm.__file__), quiet=1)
    with localllm.load(path, context=args.ctx) as m:  # the placement both sides use
        p = m.info.placement
        extra_buffers = m._engine.extra_buffers  # ggml's weight repacking, as localllm decided it here
    if args.threads:
        p = dataclasses.replace(p, n_threads=args.threads, n_threads_batch=args.threads)
    from localllm.runtimes.llamacpp import GGML_TYPE_OF_KV

    placement = {
        "n_ctx": p.n_ctx,
        "n_threads": p.n_threads,
        "n_threads_batch": p.n_threads_batch or p.n_threads,
        "n_batch": p.n_batch,
        "n_ubatch": p.n_ubatch,
        "flash_attn": p.flash_attn,
        "type_kv": GGML_TYPE_OF_KV[p.kv_type],
        "extra_buffers": extra_buffers,
    }
    print(
        f"model {path.name} ({path.stat().st_size / 2**20:.0f} MiB); placement {placement}; "
        f"{args.tokens} tokens; prompt x{args.prompt_repeat}; load avg {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
        flush=True,
    )

    runs: dict[str, list[dict]] = {"raw": [], "localllm": []}
    child("raw", path, 4, placement)  # warm the page cache so neither side pays the first read
    for i in range(args.runs):
        for side in ("raw", "localllm") if i % 2 == 0 else ("localllm", "raw"):
            r = child(side, path, args.tokens, placement, prompt)
            runs[side].append(r)
            print(
                f"  run {i + 1} {side:8s} load {r['load_s']:.3f}s  ttft {r['ttft_s']:.3f}s  "
                f"decode {r['decode_tps']:.2f} tok/s  ({r['n']} tokens, peak RSS "
                f"{r['peak_rss'] / 2**30:.2f} GiB)",
                file=sys.stderr,
                flush=True,
            )

    same = all(a["tokens"] == b["tokens"] for a, b in zip(runs["raw"], runs["localllm"], strict=False))

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    def spread(side: str, key: str) -> str:
        vals = [r[key] for r in runs[side]]
        return f"{min(vals):.3f}..{max(vals):.3f}"

    lft = {s: [r["load_s"] + r["ttft_s"] for r in runs[s]] for s in runs}
    # Each run i of one side ran right next to run i of the other: the ratio within a pair
    # cancels most of the drift of a shared machine; the median over pairs is the result.
    pair_decode = [b["decode_tps"] / a["decode_tps"] for a, b in zip(runs["raw"], runs["localllm"], strict=False)]
    pair_lft = [b / a for a, b in zip(lft["raw"], lft["localllm"], strict=False)]
    decode_ratio = statistics.median(pair_decode)
    lft_ratio = statistics.median(pair_lft)
    print()
    print(f"{'':10s} {'decode tok/s (median, range)':32s} {'load s':18s} {'ttft s':18s} {'load+ttft s':12s}")
    for s in ("raw", "localllm"):
        print(
            f"{s:10s} {med(s, 'decode_tps'):7.2f} ({spread(s, 'decode_tps'):>16s})      "
            f"{med(s, 'load_s'):.3f} ({spread(s, 'load_s')})  {med(s, 'ttft_s'):.3f} ({spread(s, 'ttft_s')})  "
            f"{statistics.median(lft[s]):.3f}"
        )
    print(f"per-pair decode ratios: {', '.join(f'{r:.3f}' for r in pair_decode)}")
    print(f"per-pair load+ttft ratios: {', '.join(f'{r:.3f}' for r in pair_lft)}")
    print(
        f"decode ratio localllm/raw (median of pairs) {decode_ratio:.3f} (target >= 0.98): "
        f"{'PASS' if decode_ratio >= 0.98 else 'FAIL'}"
    )
    print(
        f"load+first-token ratio localllm/raw (median of pairs) {lft_ratio:.3f} (target <= 1.1): "
        f"{'PASS' if lft_ratio <= 1.1 else 'FAIL'}"
    )
    print(f"greedy tokens identical on both sides: {same}; load avg at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        print(
            json.dumps(
                {
                    "placement": placement,
                    "runs": runs,
                    "decode_ratio": decode_ratio,
                    "load_ttft_ratio": lft_ratio,
                    "same_tokens": same,
                }
            )
        )
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
