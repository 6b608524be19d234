"""Prompt-lookup speculative decoding on vs off, on the real SmolLM2-135M-Instruct.

    python benchmarks/bench_speculative.py [--runs 3] [--tokens 400] [--quick] [--kv-type q8_0]
                                           [--threads N] [--model PATH | --shape llama-3.2-1b]

Two chat prompts, greedy (temperature 0):
  code   a 40-line Python function, asked to rename one variable and return the whole code:
         the reply repeats the prompt, which is what prompt lookup is for;
  prose  a story: the reply repeats nothing of the prompt, which shows what drafting costs
         where it cannot help.
Each run is a fresh Python process (`localllm.load` with the plan's placement, one
`Model.chat`); runs alternate off, on, off, on... so drift on a shared machine hits both alike.
decode tok/s is Timings.decode_tps: tokens after the first / time after the first, the
definition of benchmarks/bench_llamacpp.py. The ratio is the median over adjacent (off, on)
pairs. Acceptance is accepted / drafted draft tokens (Timings.accepted_tokens, drafted_tokens).
Token ids on and off are compared: with llama.cpp on the CPU a batch of tokens is not always
computed with the same rounding as one token at a time (see localllm/speculative.py), so the
first differing token is reported when there is one, next to where plain decoding itself moves
when its prompt is read in 32-token chunks instead of 64 (--baseline-noise).

--replay estimates instead of timing whole replies, for tuning on a busy machine: it times one
decode of b = 1..17 tokens (interleaved, the fastest of 15) in one process, records the plain greedy
reply to ten prompts of different kinds, and runs each reply again through the drafter and the
verify loop, pricing each decode by its batch size: the speedup a quiet machine would see, as
the drafting is a function of the tokens alone (the constants in localllm/speculative.py were
chosen this way).

Target (issue 16): code decode ratio on/off >= 1.3 with identical greedy output.
The model: ~/.cache/localllm-test-models/SmolLM2-135M-Instruct.Q4_1.gguf (what the tests
download; LOCALLLM_TEST_MODELS moves it). --shape builds a random-weight model of that shape
under benchmarks/.bench/ instead (acceptance then says little: its replies are noise).
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
CACHE = HERE / ".bench"

CODE = '''def summarize_orders(orders, min_total=0.0, currency="EUR"):
    """Totals per customer for the orders at or above min_total, largest first."""
    totals = {}
    counts = {}
    skipped = 0
    for order in orders:
        customer = order.get("customer")
        if not customer:
            skipped += 1
            continue
        amount = float(order.get("amount", 0.0))
        if order.get("currency", currency) != currency:
            rate = order.get("rate")
            if rate is None:
                skipped += 1
                continue
            amount = amount * float(rate)
        if amount < min_total:
            skipped += 1
            continue
        totals[customer] = totals.get(customer, 0.0) + amount
        counts[customer] = counts.get(customer, 0) + 1
    rows = []
    for customer, total in totals.items():
        average = total / counts[customer]
        rows.append(
            {
                "customer": customer,
                "total": round(total, 2),
                "orders": counts[customer],
                "average": round(average, 2),
                "currency": currency,
            }
        )
    rows.sort(key=lambda row: row["total"], reverse=True)
    return {"rows": rows, "skipped": skipped, "customers": len(rows)}
'''
PROMPTS = {
    "code": "Rename the variable `totals` to `sums` in this Python function and return the whole code, "
    "nothing else:\n\n```python\n" + CODE + "```",
    "prose": "Write a short story about a lighthouse keeper who finds a message in a bottle.",
}

# loads the model as the plan says (threads and KV type overridable), in each child process
SETUP = r"""
import dataclasses, json, sys, time
import localllm
path, prompt, mode, n_tokens, ctx, threads, kv_type, chunk = sys.argv[1:9]
# a count given is fixed (the plan's adapts to the load before each generation, see cpu_load)
m = localllm.load(path, context=int(ctx), threads=int(threads) if threads != "0" else None)
if kv_type:  # the same plan with another KV cache type (the engine is swapped before any use)
    from localllm.runtimes.llamacpp import LlamaCppEngine
    placement = dataclasses.replace(m.info.placement, kv_type=kv_type)
    m._engine.close()
    m._engine = LlamaCppEngine(path, placement)
if chunk != "0":
    m._engine.prompt_chunk = int(chunk)
"""
CHILD = (
    SETUP
    + r"""
c = m.chat([{"role": "user", "content": prompt}], temperature=0, max_tokens=int(n_tokens), speculative=mode)
t = c.timings
print(json.dumps({"mode": mode, "decode_tps": t.decode_tps, "ttft_s": t.ttft_s, "n": len(c.token_ids),
                  "tokens": list(c.token_ids), "drafted": t.drafted_tokens, "accepted": t.accepted_tokens,
                  "prompt_tokens": t.prompt_tokens, "finish": c.finish_reason,
                  "threads": m.info.placement.n_threads, "text": c.text}))
"""
)
# --replay: the price of one decode of b tokens with every row's logits (b = 1..DRAFT_MAX+1,
# interleaved, the fastest of `reps`), then each prompt's plain greedy reply
REPLAY_CHILD = (
    SETUP
    + r"""
from localllm.speculative import DRAFT_MAX
e, reps = m._engine, 15
probe = e.tokenize("def f(x):\n    return x + 1\n" * 40, add_bos=False)
e.rewind(0)
e.eval(probe[:200])
times = {b: [] for b in range(1, DRAFT_MAX + 2)}
for _ in range(reps):
    for b, seen in times.items():
        e.rewind(200)
        t0 = time.perf_counter()
        e.eval(probe[200:201]) if b == 1 else e.eval_all(probe[200:200 + b])
        seen.append(time.perf_counter() - t0)
replies = {}
for name, text in json.loads(prompt).items():
    e.rewind(0)
    c = m.chat([{"role": "user", "content": text}], temperature=0, max_tokens=int(n_tokens), speculative="off")
    # the reply's tokens, and the prompt's as they sit in the cache (the last reply token is not there)
    replies[name] = {"prompt": list(e.cached_tokens[: c.timings.prompt_tokens]), "reply": list(c.token_ids),
                     "eos": c.finish_reason == "eos"}
# the fastest of the runs: what other work on the machine adds is never negative
print(json.dumps({"cost": {b: min(v) for b, v in times.items()}, "replies": replies}))
"""
)


def child(path: Path, prompt: str, mode: str, args: argparse.Namespace, chunk: int = 0, code: str = CHILD) -> dict:
    argv = [str(path), prompt, mode, str(args.tokens), str(args.ctx), str(args.threads or 0), args.kv_type or ""]
    out = subprocess.run([sys.executable, "-c", code, *argv, str(chunk)], capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise SystemExit(f"{mode} run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def first_difference(a: list[int], b: list[int]) -> int | None:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def model_path(args: argparse.Namespace) -> Path:
    if args.shape:
        from localllm.synthetic import synthetic_gguf

        return synthetic_gguf(CACHE, args.shape, args.quant, say=lambda line: print(line, file=sys.stderr, flush=True))
    if args.model:
        return Path(args.model)
    root = Path(os.environ.get("LOCALLLM_TEST_MODELS") or Path.home() / ".cache" / "localllm-test-models")
    path = root / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the tests once (tests/conftest.py fetches it) or pass --model")
    return path


def bench_prompt(name: str, path: Path, args: argparse.Namespace) -> dict:
    prompt = PROMPTS[name]
    runs: dict[str, list[dict]] = {"off": [], "prompt-lookup": []}
    for i in range(args.runs):
        for mode in ("off", "prompt-lookup") if i % 2 == 0 else ("prompt-lookup", "off"):
            r = child(path, prompt, mode, args)
            runs[mode].append(r)
            rate = f"accepted {r['accepted']}/{r['drafted']}" if r["drafted"] else "no drafts"
            print(
                f"  {name} run {i + 1} {mode:13s} decode {r['decode_tps']:7.2f} tok/s  ({r['n']} tokens, "
                f"prompt {r['prompt_tokens']}, {rate}, {r['threads']} threads, load avg {os.getloadavg()[0]:.2f})",
                file=sys.stderr,
                flush=True,
            )
    off, on = runs["off"], runs["prompt-lookup"]
    pairs = [b["decode_tps"] / a["decode_tps"] for a, b in zip(off, on, strict=True) if a["decode_tps"] > 0]
    drafted = sum(r["drafted"] for r in on)
    diffs = [first_difference(a["tokens"], b["tokens"]) for a, b in zip(off, on, strict=True)]
    out = {
        "prompt": name,
        "prompt_tokens": off[0]["prompt_tokens"],
        "tokens": off[0]["n"],
        "off_tps": statistics.median(r["decode_tps"] for r in off),
        "on_tps": statistics.median(r["decode_tps"] for r in on),
        "ratio": statistics.median(pairs) if pairs else 0.0,
        "pairs": pairs,
        "acceptance": sum(r["accepted"] for r in on) / drafted if drafted else 0.0,
        "drafted_per_run": drafted / len(on),
        "identical": all(d is None for d in diffs),
        "first_difference": diffs,
        "off_outputs_agree": all(r["tokens"] == off[0]["tokens"] for r in off),
    }
    if args.baseline_noise:  # where plain decoding itself moves when the prompt's chunks move
        plain32 = child(path, prompt, "off", args, chunk=32)
        out["plain_chunk32_first_difference"] = first_difference(off[0]["tokens"], plain32["tokens"])
    return out


def replay_prompts() -> dict[str, str]:
    """Replies of many kinds, for --replay: text from this repository and made-up facts."""
    root = HERE.parent
    src = (root / "localllm" / "sampling.py").read_text(encoding="utf-8")
    text = (root / "README.md").read_text(encoding="utf-8")
    people = "\n".join(
        f"{n}, {a}, {c}"
        for n, a, c in zip(
            ["Alice", "Bob", "Carla", "Daniel", "Eva", "Frank"],
            (31, 45, 27, 52, 38, 29),
            ["Paris", "London", "Rome", "Vienna", "Prague", "Oslo"],
            strict=True,
        )
    )
    return {
        **PROMPTS,
        "types": "Add type hints to this Python class and return the whole code:\n\n```python\n"
        + src[src.index("class StopMatcher") : src.index("class Sampler")]
        + "```",
        "rewrite": "Rewrite this paragraph in a more formal tone:\n\n" + text[:700],
        "summary": "Summarize this text in three sentences:\n\n" + text[:2500],
        "extract": "From this text, list every person's name and their city as `name: city` lines, nothing "
        "else.\n\nMaria Lopez moved from Madrid to Berlin in 2019, where she met Tomasz Nowak, a baker from "
        "Gdansk. Their friend Aiko Tanaka still lives in Osaka, but visits Berlin each summer with her brother "
        "Kenji Tanaka. Last year Pierre Dubois, a teacher from Lyon, joined them, and so did Ana Silva from Porto.",
        "json": "Convert this to JSON with keys name, age, city for each person:\n\n" + people,
        "explain": "Explain how a hash table works, with an example in Python.",
        "list": "List ten countries in Europe and their capitals.",
        "chat": "What is the capital of France? Answer in one sentence.",
    }


def replay(reply: dict, cost: dict[int, float], max_tokens: int) -> dict:
    """The plain reply run again through the drafter and the verify loop of generation.run, each
    decode priced by the measured cost of its batch: (plain time / speculative time, counts)."""
    from localllm.speculative import PromptLookup

    out, eos = reply["reply"], reply["eos"]
    drafter, gen = PromptLookup(reply["prompt"]), out[:1]
    spent = drafted = accepted = 0.0
    while len(gen) < len(out) + eos and len(gen) < max_tokens:
        draft = drafter.propose(gen, max_tokens - len(gen) - 1)
        spent += cost[1 + len(draft)]
        n = 0  # the draft tokens the model samples too: the reply's own next tokens
        while n < len(draft) and len(gen) + n < len(out) and draft[n] == out[len(gen) + n]:
            n += 1
        if draft:
            drafter.feedback(len(draft), n)
            drafted, accepted = drafted + len(draft), accepted + n
        if len(gen) + n == len(out):  # the row after the reply's last token: it samples the eos
            break
        gen += out[len(gen) : len(gen) + n + 1]
    plain = (len(out) - 1 + eos) * cost[1]  # one decode per token after the first (and the eos)
    return {"speedup": plain / spent if spent else 1.0, "drafted": drafted, "accepted": accepted, "n": len(out)}


def run_replay(path: Path, args: argparse.Namespace) -> int:
    prompts = replay_prompts()
    got = child(path, json.dumps(prompts), "off", args, code=REPLAY_CHILD)
    cost = {int(b): t for b, t in got["cost"].items()}
    print("decode of b tokens, ms: " + ", ".join(f"{b}: {1000 * t:.1f}" for b, t in cost.items()))
    print(f"\n{'reply':8s} {'prompt':>6s} {'tokens':>6s} {'speedup':>8s} {'accept':>7s}")
    rows = {name: replay(r, cost, args.tokens) for name, r in got["replies"].items()}
    for name, r in rows.items():
        rate = f"{r['accepted'] / r['drafted']:7.1%}" if r["drafted"] else "      -"
        print(f"{name:8s} {len(got['replies'][name]['prompt']):6d} {r['n']:6d} {r['speedup']:8.2f} {rate}")
    geo = statistics.geometric_mean(r["speedup"] for r in rows.values())
    print(f"geometric mean {geo:.2f}, lowest {min(r['speedup'] for r in rows.values()):.2f}")
    print(f"load avg at the end {os.getloadavg()[0]:.2f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per mode and prompt (alternating)")
    ap.add_argument("--tokens", type=int, default=400, help="max tokens per reply")
    ap.add_argument("--quick", action="store_true", help="one run each, 200 tokens")
    ap.add_argument("--ctx", type=int, default=2048)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="this many threads, fixed (default: the plan's, which adapts to the load: on a busy "
        "machine the two sides may then run at different counts)",
    )
    ap.add_argument("--kv-type", choices=("f16", "q8_0", "q4_0", "f32"), help="KV cache type (default: the plan's)")
    ap.add_argument("--prompts", default="code,prose", help="comma-separated: code, prose")
    ap.add_argument("--model", help="a GGUF file (default: the tests' SmolLM2)")
    ap.add_argument("--shape", help="a random-weight model of this shape instead (e.g. llama-3.2-1b)")
    ap.add_argument("--quant", default="Q4_K_M", help="with --shape")
    ap.add_argument("--baseline-noise", action="store_true", help="also decode plain with 32-token prompt chunks")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument(
        "--replay",
        action="store_true",
        help="instead: time one decode of 1..17 tokens, record plain greedy replies to ten prompts, and "
        "replay each through the drafter priced by those times (one process: machine load cancels out)",
    )
    args = ap.parse_args()
    if args.quick:
        args.runs, args.tokens = 1, 200
    path = model_path(args)
    if args.replay:
        return run_replay(path, args)
    print(
        f"model {path.name}; {args.tokens} tokens; runs {args.runs}; threads {args.threads or 'plan'}; "
        f"KV {args.kv_type or 'plan'}; load avg {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
        flush=True,
    )
    child(path, "Hi", "off", argparse.Namespace(**{**vars(args), "tokens": 2}))  # warm the page cache
    results = [bench_prompt(name, path, args) for name in args.prompts.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"\n{'prompt':7s} {'prompt tok':>10s} {'off tok/s':>10s} {'on tok/s':>9s} {'ratio':>6s} {'accept':>7s} same")
    for r in results:
        same = "yes" if r["identical"] else f"no (first difference at {r['first_difference']})"
        print(
            f"{r['prompt']:7s} {r['prompt_tokens']:10d} {r['off_tps']:10.2f} {r['on_tps']:9.2f} "
            f"{r['ratio']:6.2f} {r['acceptance']:7.1%} {same}"
        )
        if "plain_chunk32_first_difference" in r:
            print(
                f"        plain decoding with 32-token prompt chunks differs at {r['plain_chunk32_first_difference']}"
            )
    print("pairs: " + "; ".join(f"{r['prompt']} {', '.join(f'{p:.2f}' for p in r['pairs'])}" for r in results))
    print(f"load avg at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
