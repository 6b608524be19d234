"""The fuzz corpus, CI subset (issue 12): hostile GGUF files never crash, hang or leak a bare exception.

Mutants of three valid models (the tiny fixture, the shipped starter, the real SmolLM2
with sparse tensor data) are each planned, loaded, asked for 4 tokens and chatted with,
every one in its own child process (tests/fuzzrun.py, run as a fresh process so its
forks inherit no threads). Every outcome must be a successful run or a clean
`LocalLLMError`: never a signal, a hang, a bare Python exception or a silent exit. A
failure lists the mutation classes that misbehave, how, with an example seed, so
`fuzzgguf.mutate(source, seed, folder)` rebuilds the file. The long run (2,000+ files,
next to raw llama-cpp-python) is tools/fuzz_gguf.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import fuzzgguf
import fuzzrun
import pytest

FUZZRUN = Path(__file__).resolve().with_name("fuzzrun.py")
# One pass over every variant split between the two small models (seed modulo the list
# picks the variant), and the first 50 (every class at least once) on SmolLM2.
_HALF = (len(fuzzgguf.VARIANTS) + 1) // 2
SUBSET = {"tiny": (0, _HALF), "starter": (_HALF, len(fuzzgguf.VARIANTS) - _HALF), "smollm2": (0, 50)}
TIMEOUT_S = 8.0  # per file; a healthy child takes 0.05-0.3 s here
# Seconds each source may take before no new file starts (the rest are reported as not
# run): keeps the whole test near 3 minutes while hangs still cost a timeout each.
BUDGET_S = {"tiny": 60.0, "starter": 60.0, "smollm2": 45.0}


def _source_path(name: str, request: pytest.FixtureRequest) -> Path:
    if name == "starter":
        from localllm.starter import starter_gguf

        return starter_gguf()
    return request.getfixturevalue({"tiny": "tiny_gguf", "smollm2": "smollm2_gguf"}[name])


def test_mutants_are_deterministic(tiny_gguf, tmp_path):
    spec = fuzzgguf.read_spec(tiny_gguf)
    identity = next(i for i, (cls, _) in enumerate(fuzzgguf.VARIANTS) if cls == "identity")
    assert fuzzgguf.mutate(spec, identity, tmp_path, sparse=False).path.read_bytes() == tiny_gguf.read_bytes()
    for seed in (3, 50, 77, 150, identity + len(fuzzgguf.VARIANTS)):
        a = fuzzgguf.mutate(spec, seed, tmp_path).path.read_bytes()
        b = fuzzgguf.mutate(fuzzgguf.read_spec(tiny_gguf), seed, tmp_path).path.read_bytes()
        assert a == b, f"seed {seed} gave two different files"
    # the CI subset runs every variant once across the two small models
    tiny, starter = SUBSET["tiny"], SUBSET["starter"]
    covered = {s % len(fuzzgguf.VARIANTS) for start, n in (tiny, starter) for s in range(start, start + n)}
    assert covered == set(range(len(fuzzgguf.VARIANTS)))


def test_sparse_mutants_cost_their_header_only(smollm2_gguf, tmp_path):
    m = fuzzgguf.mutate(smollm2_gguf, 0, tmp_path)  # 98 MB source: sparse by default
    assert m.path.stat().st_size > 90_000_000
    assert m.path.stat().st_blocks * 512 < 8_000_000


@pytest.mark.slow
@pytest.mark.parametrize("source", list(SUBSET))
def test_fuzz_corpus(source, request, tmp_path):
    path = _source_path(source, request)
    start, count = SUBSET[source]
    out = tmp_path / "results.json"
    budget = BUDGET_S[source]
    proc = subprocess.run(
        [
            sys.executable,
            str(FUZZRUN),
            "--timeout",
            str(TIMEOUT_S),
            "--budget",
            str(budget),
            "--json",
            str(out),
            f"{source}:{start}:{count}:{path}",
        ],
        capture_output=True,
        text=True,
        timeout=budget + TIMEOUT_S + 120,
    )
    assert proc.returncode == 0 and out.is_file(), (
        f"the fuzz runner failed:\n{proc.stdout[-2000:]}{proc.stderr[-4000:]}"
    )
    data = json.loads(out.read_text())
    results = [fuzzrun.Result(**r) for r in data["results"]]
    line = fuzzrun.summary_line(results, f"fuzz {source} (seeds {start}..{start + count - 1})")
    print(line)
    bad = [r for r in results if r.outcome in fuzzrun.BAD]
    not_run = data["planned"] - len(results)
    note = (
        (
            f"; {not_run} files not run: the {budget:.0f} s budget ran out (hangs cost {TIMEOUT_S:.0f} s each) "
            f"or the mutator failed ({proc.stderr.strip()[-500:] or 'no message'})"
        )
        if not_run
        else ""
    )
    if bad or not_run:  # the table, not a repr of every result
        pytest.fail(f"{line}{note}\n{fuzzrun.failure_table(results, width=160)}", pytrace=False)
