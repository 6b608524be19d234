"""Which constrained-decoding library: llguidance against outlines-core, on real vocabularies.

    pip install outlines-core            # the comparison only; localllm itself uses llguidance
    python benchmarks/bench_constraints.py [--shape llama-3.2-1b] [--steps 200]

For each vocabulary (the real SmolLM2-135M's 49,152 tokens; with --shape also a random-weight
model of that shape and its 128,256-token vocabulary, built under benchmarks/.bench/):
- compile: the time to build the library's tokenizer/vocabulary view once, and to compile the
  test schema (nested objects, arrays, enums, number bounds, a pattern) for it;
- mask: the time per token to compute the allowed-token mask and advance, over a valid document
  of the schema tokenized by the model (the work a constrained decode adds per token), median
  and max;
- correctness: valid and invalid documents (an age over its maximum, a value outside the enum,
  a zip that breaks its pattern, a missing required field, an extra key) fed token by token:
  a library is right on a document when it accepts exactly the valid ones. outlines-core builds
  one regular expression of the schema, so what a regex cannot say it does not enforce.
xgrammar is left out: its wheel requires torch, transformers and triton (several GB) for a mask.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "editor", "viewer"]},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "role", "address", "tags"],
    "additionalProperties": False,
}
GOOD = {"name": "Ada", "age": 36, "role": "admin", "address": {"city": "London", "zip": "12345"}, "tags": ["x", "y"]}
BAD = {
    "age over its maximum": {**GOOD, "age": 150},
    "value outside the enum": {**GOOD, "role": "owner"},
    "zip breaks its pattern": {**GOOD, "address": {"city": "London", "zip": "12a45"}},
    "missing required field": {k: v for k, v in GOOD.items() if k != "role"},
    "extra key": {**GOOD, "nickname": "A"},
    "four tags, max three": {**GOOD, "tags": ["a", "b", "c", "d"]},
}


def model_path(args: argparse.Namespace) -> Path:
    if args.shape:
        from localllm.synthetic import synthetic_gguf

        return synthetic_gguf(HERE / ".bench", args.shape, "Q4_K_M", say=lambda line: print(line, file=sys.stderr))
    root = Path(os.environ.get("LOCALLLM_TEST_MODELS") or Path.home() / ".cache" / "localllm-test-models")
    return root / "SmolLM2-135M-Instruct.Q4_1.gguf"  # what the tests fetch from the package index


class Llg:
    name = "llguidance"

    def __init__(self, engine) -> None:
        from localllm.constraints import tokenizer_for

        t = time.perf_counter()
        self.tok = tokenizer_for(engine)
        self.vocab_s = time.perf_counter() - t

    def compile(self, schema: dict) -> None:
        import llguidance

        self.grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
        self.matcher = llguidance.LLMatcher(self.tok, self.grammar, log_level=0)

    def reset(self) -> None:
        self.matcher.reset()

    def step(self, token: int, mask) -> bool:
        self.matcher.unsafe_compute_mask_ptr(mask.ctypes.data, mask.nbytes)
        return bool(self.matcher.consume_token(token))

    def accepting(self) -> bool:
        return bool(self.matcher.is_accepting())


class Outlines:
    name = "outlines-core"

    def __init__(self, engine) -> None:
        import outlines_core

        t = time.perf_counter()
        pieces = engine.vocab_bytes()
        eos = next(t for t in range(engine.n_vocab) if engine.is_eog(t))
        table: dict[bytes, list[int]] = {}
        for i, b in enumerate(pieces):
            if b and b[:1] != b"\xff" and i != eos:
                table.setdefault(b, []).append(i)
        self.vocab = outlines_core.Vocabulary(eos, table)
        self.vocab_s = time.perf_counter() - t

    def compile(self, schema: dict) -> None:
        import outlines_core
        from outlines_core.json_schema import build_regex_from_schema

        self.index = outlines_core.Index(build_regex_from_schema(json.dumps(schema)), self.vocab)
        self.guide = outlines_core.Guide(self.index)

    def reset(self) -> None:
        import outlines_core

        self.guide = outlines_core.Guide(self.index)

    def step(self, token: int, mask) -> bool:
        self.guide.write_mask_into(mask.ctypes.data, mask.size, 4)
        try:
            self.guide.advance(token, return_tokens=False)
        except Exception:
            return False
        return True

    def accepting(self) -> bool:
        return bool(self.guide.is_finished())


def feed(lib, tokens: list[int], mask) -> bool:
    lib.reset()
    return all(lib.step(t, mask) for t in tokens) and lib.accepting()


def run(lib_cls, engine, steps: int) -> dict:
    import numpy as np

    lib = lib_cls(engine)
    t = time.perf_counter()
    lib.compile(SCHEMA)
    compile_s = time.perf_counter() - t
    mask = np.zeros((engine.n_vocab + 31) // 32, dtype=np.int32)
    from localllm.constraints import tokenizer_for

    # one tokenization for both libraries: llguidance's greedy one over the model's vocabulary (the
    # model's own may start with a SentencePiece space, which no JSON grammar takes)
    tokenize = tokenizer_for(engine).greedy_tokenize
    tokens = tokenize(json.dumps(GOOD))
    times = []
    while len(times) < steps:
        lib.reset()
        for tok in tokens:
            t = time.perf_counter()
            lib.step(tok, mask)
            times.append(time.perf_counter() - t)
    right = {"valid document": feed(lib, tokens, mask)}
    for what, bad in BAD.items():
        right[what] = not feed(lib, tokenize(json.dumps(bad)), mask)
    return {
        "library": lib.name,
        "vocab_s": lib.vocab_s,
        "compile_s": compile_s,
        "mask_ms_median": statistics.median(times) * 1e3,
        "mask_ms_max": max(times) * 1e3,
        "right": right,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", help="also a random-weight model of this shape (e.g. llama-3.2-1b)")
    ap.add_argument("--steps", type=int, default=300, help="mask timings per library")
    args = ap.parse_args()
    import localllm

    paths = [model_path(argparse.Namespace(shape=None))]
    if args.shape:
        paths.append(model_path(args))
    for path in paths:
        with localllm.load(path, context=512) as m:
            engine = m._engine
            print(f"\nmodel {path.name}: {engine.n_vocab} tokens")
            print(f"{'library':14} {'vocab s':>8} {'compile s':>10} {'mask ms p50':>12} {'max':>8}  right")
            for lib_cls in (Llg, Outlines):
                try:
                    r = run(lib_cls, engine, args.steps)
                except ImportError as exc:
                    print(f"{lib_cls.name:14} not installed ({exc})")
                    continue
                wrong = [k for k, ok in r["right"].items() if not ok]
                right = f"{sum(r['right'].values())}/{len(r['right'])}" + (
                    f" (wrong: {', '.join(wrong)})" if wrong else ""
                )
                print(
                    f"{r['library']:14} {r['vocab_s']:8.3f} {r['compile_s']:10.3f} {r['mask_ms_median']:12.3f} "
                    f"{r['mask_ms_max']:8.2f}  {right}"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
