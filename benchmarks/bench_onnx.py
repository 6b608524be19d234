"""localllm's ONNX Runtime path against onnxruntime-genai, on the same model folder, on CPU.

Builds (once) a random-weight Qwen2.5-0.5B-shaped decoder folder with
`localllm.testing` (fp32 weights, external data, genai_config.json), then decodes the
same prompt greedily with both:

- localllm: `OnnxEngine` driven by the shared token loop `localllm.generation.run`
  (what `Model.generate` runs), numpy sampling, per-token bytes and UTF-8 decoding;
- onnxruntime-genai: `Generator.generate_next_token()` with greedy search.

Both use the same ONNX Runtime, graph and thread count; the runs alternate in ABBA
order and the median of the paired ratios (localllm / genai) is the result. Greedy outputs must be identical (a
correctness cross-check). Needs the `bench` extra: pip install -e ".[bench]".

    python benchmarks/bench_onnx.py --threads 2 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 0.95  # issue: at least 0.95 of onnxruntime-genai's decode tokens/s


def build(folder: Path, shape: str, threads: int, attention: str) -> Path:
    from localllm.testing import write_onnx_folder

    if not (folder / "onnx" / "model.onnx").is_file():
        t0 = time.perf_counter()
        write_onnx_folder(folder, shape, seed=0, context_length=4096, attention=attention)
        print(f"built {shape} folder in {time.perf_counter() - t0:.1f}s: {folder}", file=sys.stderr)
    cfg_path = folder / "genai_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["decoder"]["session_options"]["intra_op_num_threads"] = threads
    cfg["model"]["decoder"]["session_options"]["inter_op_num_threads"] = 1
    cfg_path.write_text(json.dumps(cfg, indent=2))
    return folder


def run_localllm(engine, prompt: list[int], n_gen: int) -> tuple[float, list[int]]:
    from localllm.generation import SamplingOptions, join, run

    engine.rewind(0)  # no prefix reuse: both sides process the whole prompt
    done = join(run(engine, prompt, SamplingOptions(temperature=0, max_tokens=n_gen)))
    return done.timings.decode_tps, list(done.token_ids)


class Interleaved:
    """Wraps the localllm engine for `generation.run`; before each decode step it steps genai once.

    Per token, both sides are timed back to back (a second or so apart, the order
    alternating), so the load other
    processes put on a shared CPU hits both alike; the paired per-token ratio is robust to it.
    localllm's time per token is its `eval` plus the loop's work until the next `eval`
    (sampling, bytes, UTF-8, stop strings); genai's is one `generate_next_token()`.
    """

    def __init__(self, engine, og, model) -> None:
        self._engine, self._og, self._model = engine, og, model
        self.ours: list[float] = []
        self.theirs: list[float] = []
        self.genai_tokens: list[int] = []
        self._gen = None
        self._ours_eval = None
        self._returned = None
        self._step = 0

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def eval(self, tokens):
        now = time.perf_counter()
        if self._gen is None:  # the prompt: genai processes it and picks its first token
            params = self._og.GeneratorParams(self._model)
            params.set_search_options(max_length=4096, do_sample=False)
            self._gen = self._og.Generator(self._model, params)
            self._gen.append_tokens(list(tokens))
            self._gen.generate_next_token()
            self.genai_tokens.append(int(self._gen.get_next_tokens()[0]))
            return self._engine.eval(tokens)
        if self._ours_eval is not None:  # the loop's work since control came back counts as ours
            self.ours.append(self._ours_eval + (now - self._returned))
        self._step += 1
        # alternate which side goes first, so neither always runs on a cache the other warmed
        if self._step % 2:
            self._genai_step()
            t0 = time.perf_counter()
            logits = self._engine.eval(tokens)
            self._returned = time.perf_counter()
            self._ours_eval = self._returned - t0
        else:
            t0 = time.perf_counter()
            logits = self._engine.eval(tokens)
            self._ours_eval = time.perf_counter() - t0
            self._genai_step()
            self._returned = time.perf_counter()
        return logits

    def _genai_step(self) -> None:
        t0 = time.perf_counter()
        self._gen.generate_next_token()  # runs the model on its last token, picks the next
        self.theirs.append(time.perf_counter() - t0)
        self.genai_tokens.append(int(self._gen.get_next_tokens()[0]))


def run_interleaved(og, model, engine, prompt: list[int], n_gen: int):
    from localllm.generation import SamplingOptions, join, run

    engine.rewind(0)
    proxy = Interleaved(engine, og, model)
    done = join(run(proxy, prompt, SamplingOptions(temperature=0, max_tokens=n_gen)))
    proxy._gen = None
    n = min(len(proxy.ours), len(proxy.theirs))
    return proxy.ours[:n], proxy.theirs[:n], list(done.token_ids), proxy.genai_tokens[: len(done.token_ids)]


def run_genai(og, model, prompt: list[int], n_gen: int) -> tuple[float, list[int]]:
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + n_gen, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt)
    out: list[int] = []
    t_first = None
    while not gen.is_done() and len(out) < n_gen:
        gen.generate_next_token()
        out.append(int(gen.get_next_tokens()[0]))
        if t_first is None:
            t_first = time.perf_counter()  # same point as localllm's Timings: after the first token
    t_end = time.perf_counter()
    del gen
    return (len(out) - 1) / (t_end - t_first), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="qwen2.5-0.5b", help="a localllm.testing.SHAPES name")
    ap.add_argument(
        "--dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "localllm-bench-onnx",
        help="where the model folder is built (reused when present)",
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--attention",
        choices=("standard", "gqa"),
        default="standard",
        help="standard ONNX ops, or the fused GroupQueryAttention op genai's builder uses",
    )
    ap.add_argument("--prompt-tokens", type=int, default=8)
    ap.add_argument("--gen", type=int, default=24, help="tokens to generate per run")
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument(
        "--mode",
        choices=("interleaved", "abba"),
        default="interleaved",
        help="interleaved: one genai step before each localllm step, paired per token; abba: whole runs in ABBA order",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import onnxruntime_genai as og

    from localllm.hardware import Hardware
    from localllm.placement import Placement
    from localllm.runtimes.onnx import OnnxEngine

    folder = build(args.dir / f"{args.shape}-{args.attention}", args.shape, args.threads, args.attention)
    os.environ.setdefault("LOCALLLM_HOME", str(args.dir / "home"))  # the optimized-model cache
    placement = Placement(runtime="onnxruntime", n_ctx=4096, n_threads=args.threads, provider="CPUExecutionProvider")
    engine = OnnxEngine(folder, placement, hardware=Hardware())
    print(
        f"localllm load {engine.load_seconds:.1f}s ({engine.provider}, optimized model {engine.optimized_path})",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    config = og.Config(str(folder))
    config.clear_providers()  # CPU
    genai = og.Model(config)
    print(f"genai load {time.perf_counter() - t0:.1f}s (onnxruntime-genai {og.__version__})", file=sys.stderr)

    prompt = [(7 * i + 3) % 300 + 3 for i in range(args.prompt_tokens)]
    if args.mode == "interleaved":
        return _interleaved(args, og, genai, engine, prompt)
    ours, theirs, ratios = [], [], []
    run_localllm(engine, prompt[:4], 4)  # warm-up both (first-run allocations)
    run_genai(og, genai, prompt[:4], 4)
    for r in range(args.runs):
        # ABBA order, so a drift in machine load (the CPU is shared) hits both sides alike
        if r % 2 == 0:
            tps, toks_a = run_localllm(engine, prompt, args.gen)
            tps_b, toks_b = run_genai(og, genai, prompt, args.gen)
        else:
            tps_b, toks_b = run_genai(og, genai, prompt, args.gen)
            tps, toks_a = run_localllm(engine, prompt, args.gen)
        ours.append(tps)
        theirs.append(tps_b)
        ratios.append(tps / tps_b)
        same = toks_a == toks_b
        print(
            f"run {r + 1}: localllm {tps:.2f} tok/s, onnxruntime-genai {tps_b:.2f} tok/s, "
            f"ratio {tps / tps_b:.3f}, same tokens: {same}",
            file=sys.stderr,
        )
        if not same:
            print(f"  localllm {toks_a[:12]}...\n  genai    {toks_b[:12]}...", file=sys.stderr)
    a, b = statistics.median(ours), statistics.median(theirs)
    ratio = statistics.median(ratios)
    result = {
        "shape": args.shape,
        "attention": args.attention,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "generated": args.gen,
        "runs": args.runs,
        "localllm_decode_tps": round(a, 3),
        "genai_decode_tps": round(b, 3),
        "ratio": round(ratio, 4),
        "ratio_of_medians": round(a / b, 4),
        "target": TARGET_RATIO,
        "onnxruntime": __import__("onnxruntime").__version__,
        "onnxruntime_genai": og.__version__,
        "weights_bytes": engine.info.weights_bytes,
    }
    engine.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"decode tokens/s (median of {args.runs}): localllm {a:.2f}, onnxruntime-genai {b:.2f}; "
            f"median paired ratio {ratio:.3f} (target >= {TARGET_RATIO})"
        )
    return 0 if ratio >= TARGET_RATIO else 1


def _interleaved(args, og, genai, engine, prompt) -> int:
    run_interleaved(og, genai, engine, prompt[:4], 4)  # warm-up
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(args.runs):
        a, b, toks_a, toks_b = run_interleaved(og, genai, engine, prompt, args.gen)
        ours += a[1:]  # the first step after the prompt still settles allocations
        theirs += b[1:]
        print(
            f"run {r + 1}: localllm {len(a) / sum(a):.2f} tok/s, onnxruntime-genai {len(b) / sum(b):.2f} tok/s, "
            f"same tokens: {toks_a == toks_b}",
            file=sys.stderr,
        )
    ratios = [t / o for o, t in zip(ours, theirs, strict=False)]  # tokens/s ratio = time ratio inverted
    ratio = statistics.median(ratios)
    result = {
        "mode": "interleaved",
        "shape": args.shape,
        "attention": args.attention,
        "threads": args.threads,
        "prompt_tokens": args.prompt_tokens,
        "generated": args.gen,
        "runs": args.runs,
        "paired_tokens": len(ratios),
        "localllm_decode_tps": round(1 / statistics.median(ours), 3),
        "genai_decode_tps": round(1 / statistics.median(theirs), 3),
        "ratio": round(ratio, 4),
        "ratio_of_totals": round(sum(theirs) / sum(ours), 4),
        "ratio_p25_p75": [round(q, 4) for q in statistics.quantiles(ratios, n=4)[::2]],
        "target": TARGET_RATIO,
        "onnxruntime": __import__("onnxruntime").__version__,
        "onnxruntime_genai": og.__version__,
        "weights_bytes": engine.info.weights_bytes,
    }
    engine.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"decode tokens/s (median per token): localllm {result['localllm_decode_tps']}, onnxruntime-genai "
            f"{result['genai_decode_tps']}; median paired ratio {ratio:.3f} (target >= {TARGET_RATIO})"
        )
    return 0 if ratio >= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
