"""Decode speed with and without a JSON schema (structured output, localllm.constraints).

    python benchmarks/bench_structured.py [--runs 5] [--tokens 128] [--threads N] [--shape llama-3.2-1b]
                                          [--speculative auto --kv-type q8_0]

The same chat request ("describe a user as JSON"), at temperature 0, either free or with
json_schema=SCHEMA (nested objects, an array, an enum, number bounds, a pattern). Each run is a
fresh Python process (`localllm.load` with the plan's placement, one warm-up chat, then the
measured one); runs alternate free, schema, free, schema... so drift on a shared machine hits both
alike. decode tok/s is Timings.decode_tps (tokens after the first / time after the first, as in
bench_llamacpp.py). The ratio is the median over adjacent (free, schema) pairs. With the schema
every token also pays for llguidance's mask and applying it to the logits.

Models: the real SmolLM2-135M-Instruct (49,152 tokens; what the tests fetch) and, with --shape, a
random-weight model of that shape (llama-3.2-1b: a 128,256-token vocabulary) built under
benchmarks/.bench/. Target (issue 18): schema / free >= 0.9 on both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 24},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
        },
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 4},
        "bio": {"type": "string", "maxLength": 200},
    },
    "required": ["name", "age", "role", "address", "tags", "bio"],
}
PROMPT = "Describe a user of our website as JSON, with a long bio."

CHILD = r"""
import json, sys
import localllm
path, mode, n_tokens, threads, schema = sys.argv[1:6]
speculative, kv_type = sys.argv[7], sys.argv[8]
kw = {"threads": int(threads)} if int(threads) else {}
m = localllm.load(path, context=1024, **kw)
if kv_type:  # the same plan with another KV cache type (the engine is swapped before any use)
    import dataclasses
    from localllm.runtimes.llamacpp import LlamaCppEngine
    placement = dataclasses.replace(m.info.placement, kv_type=kv_type)
    m._engine.close()
    m._engine = LlamaCppEngine(m.info.path, placement)
opts = {"json_schema": json.loads(schema)} if mode == "schema" else {}
ask = [{"role": "user", "content": sys.argv[6]}]
m.chat(ask, temperature=0, max_tokens=16, **opts)  # warm-up: the first constrained call builds the vocabulary view
c = m.chat(ask, temperature=0, max_tokens=int(n_tokens), speculative=speculative, **opts)
print(json.dumps({"mode": mode, "decode_tps": c.timings.decode_tps, "n": c.completion_tokens,
                  "finish": c.finish_reason, "threads": m.info.placement.n_threads, "text": c.text[:80],
                  "accepted": c.timings.accepted_tokens}))
"""


def model_path(shape: str | None) -> Path:
    if shape:
        from localllm.synthetic import synthetic_gguf

        return synthetic_gguf(HERE / ".bench", shape, "Q4_K_M", say=lambda line: print(line, file=sys.stderr))
    root = Path(os.environ.get("LOCALLLM_TEST_MODELS") or Path.home() / ".cache" / "localllm-test-models")
    path = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the tests once (tests/conftest.py fetches it)")
    return path


def child(path: Path, mode: str, args: argparse.Namespace) -> dict:
    argv = [str(path), mode, str(args.tokens), str(args.threads or 0), json.dumps(SCHEMA), PROMPT]
    argv += [args.speculative, args.kv_type or ""]
    out = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{mode} run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench(path: Path, args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {"free": [], "schema": []}
    for i in range(args.runs):
        for mode in ("free", "schema") if i % 2 == 0 else ("schema", "free"):
            r = child(path, mode, args)
            runs[mode].append(r)
            print(
                f"  run {i + 1} {mode:6s} decode {r['decode_tps']:7.2f} tok/s ({r['n']} tokens, {r['finish']}, "
                f"drafts accepted {r['accepted']}, "
                f"{r['threads']} threads, load avg {os.getloadavg()[0]:.2f})",
                file=sys.stderr,
                flush=True,
            )
    pairs = [s["decode_tps"] / f["decode_tps"] for f, s in zip(runs["free"], runs["schema"], strict=True)]
    return {
        "model": path.name,
        "free_tps": statistics.median(r["decode_tps"] for r in runs["free"]),
        "schema_tps": statistics.median(r["decode_tps"] for r in runs["schema"]),
        "ratio": statistics.median(pairs),
        "pairs": pairs,
        "schema_tokens": [r["n"] for r in runs["schema"]],
        "free_tokens": [r["n"] for r in runs["free"]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="(free, schema) pairs, each a fresh process")
    ap.add_argument("--tokens", type=int, default=128, help="max_tokens of the measured reply")
    ap.add_argument("--threads", type=int, default=0, help="0: the plan's")
    ap.add_argument("--shape", help="also a random-weight model of this shape (e.g. llama-3.2-1b)")
    ap.add_argument(
        "--speculative",
        default="off",
        help="off (the default: the mask's cost alone), auto or prompt-lookup: drafts, with the text the "
        "grammar forces drafted first (where the engine's batch logits are exact: q8_0 KV, or one thread)",
    )
    ap.add_argument("--kv-type", help="another KV cache type than the plan's (q8_0: drafting is exact at 2 threads)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    import platform

    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    print(f"CPU: {cpu or platform.processor()}, {os.cpu_count()} logical cores", file=sys.stderr)
    results = [bench(model_path(None), args)]
    if args.shape:
        results.append(bench(model_path(args.shape), args))
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"\n{'model':40} {'free tok/s':>10} {'schema tok/s':>12} {'ratio':>6}  pairs")
    for r in results:
        pairs = ", ".join(f"{p:.3f}" for p in r["pairs"])
        print(f"{r['model']:40} {r['free_tps']:10.2f} {r['schema_tps']:12.2f} {r['ratio']:6.3f}  {pairs}")
    ok = all(r["ratio"] >= 0.9 for r in results)
    print(f"\ntarget schema/free >= 0.9: {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
