"""Evaluate the shipped starter model on its held-out set, through localllm's own runtimes.

    python tools/eval_starter.py                     # GGUF (llama.cpp) and the ONNX folder
    python tools/eval_starter.py --runtime llama.cpp --n 100 --json

The evaluation set comes from tools/starter_corpus.py's held-out split (addition and
subtraction pairs, and exact user strings, that training never saw) drawn with its own
seed. Each item is one user turn; the reply (greedy, through `Model.chat`) must equal
the expected answer exactly. Needs no torch.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import starter_corpus as corpus  # noqa: E402

EVAL_SEED = 20251126  # the training data uses train_starter.SEED; this set has its own
STARTER = Path(__file__).resolve().parent.parent / "localllm" / "starter"
TARGETS = {"llama.cpp": STARTER / "starter.gguf", "onnxruntime": STARTER / "starter-onnx"}
# Tasks reported; "addition" is two-digit + two-digit (the target), "addition_any" mixes in one digit.
EVAL_TASKS = ("addition", "addition_any", "subtraction", "smalltalk", "localllm")


def eval_set(n: int, seed: int = EVAL_SEED) -> dict[str, list[tuple[str, str]]]:
    """{task: [(user, expected reply)]}, held-out items only."""
    rng = random.Random(seed)
    out: dict[str, list[tuple[str, str]]] = {}
    out["addition"] = [corpus.arithmetic(rng, "+", "eval", two_digit=True) for _ in range(n)]
    out["addition_any"] = [corpus.arithmetic(rng, "+", "eval", two_digit=False) for _ in range(n)]
    out["subtraction"] = [corpus.arithmetic(rng, "-", "eval", two_digit=True) for _ in range(n)]
    for task in ("smalltalk", "localllm"):
        out[task] = [corpus.intent_turn(rng, task, "eval")[:2] for _ in range(n)]
    return out


def evaluate(
    target: Path, items: dict[str, list[tuple[str, str]]], *, runtime: str | None = None, show_errors: int = 3
) -> dict:
    """Exact-match accuracy per task of the model at `target`."""
    import localllm

    t0 = time.perf_counter()
    report = {"target": str(target), "tasks": {}}
    import dataclasses

    # one thread: llama.cpp's workers spin at each barrier, which crawls on shared cores (and a
    # 1M-parameter model gains nothing from more)
    hw = localllm.probe()
    hw = dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, physical_cores=1, quota_cores=None))
    with localllm.load(target, hardware=hw) as model:  # the runtime follows the file: .gguf or ONNX folder
        report["runtime"] = model.info.runtime
        for task, pairs in items.items():
            right, errors = 0, []
            for user, expected in pairs:
                got = model.chat([{"role": "user", "content": user}], temperature=0, max_tokens=200).text
                if got == expected:
                    right += 1
                elif len(errors) < show_errors:
                    errors.append({"user": user, "expected": expected, "got": got})
            report["tasks"][task] = {
                "n": len(pairs),
                "correct": right,
                "accuracy": right / len(pairs),
                "errors": errors,
            }
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--runtime",
        choices=sorted(TARGETS),
        action="append",
        help="runtime(s) to evaluate (default: each whose file exists)",
    )
    ap.add_argument("--n", type=int, default=200, help="items per task")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    items = eval_set(args.n)
    runtimes = args.runtime or [r for r, p in TARGETS.items() if p.exists()]
    reports = [evaluate(TARGETS[r], items, runtime=r) for r in runtimes]
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    for rep in reports:
        print(f"{rep['runtime']}: {rep['target']} ({rep['seconds']} s)")
        for task, r in rep["tasks"].items():
            print(f"  {task:<13} {r['correct']:>4}/{r['n']:<4} {100 * r['accuracy']:5.1f} %")
            for e in r["errors"]:
                print(f"      {e['user']!r}: expected {e['expected']!r}, got {e['got']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
