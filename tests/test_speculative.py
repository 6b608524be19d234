"""Prompt-lookup speculative decoding: the drafter alone, then the shared loop on real engines
(SmolLM2 through llama.cpp, the tiny ONNX decoder), token for token against plain decoding."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from localllm.errors import InvalidOptionError, InvalidOptionTypeError
from localllm.generation import SamplingOptions, join, run
from localllm.placement import Placement
from localllm.speculative import DRAFT_FLOOR, DRAFT_MAX, MIN_MATCH, PromptLookup, check_speculative, drafter_for

# --- the drafter, pure ----------------------------------------------------------------

A = list(range(100, 140))  # 40 distinct tokens


def test_no_draft_until_the_context_end_matches_min_match_tokens():
    ctx = [*A, 7, *A[: MIN_MATCH - 1]]  # the end matches the start of A for MIN_MATCH - 1 tokens
    d = PromptLookup(ctx)
    assert d.match() == (MIN_MATCH - 1, MIN_MATCH - 1)
    assert d.propose([], 16) == []
    assert d.propose([A[MIN_MATCH - 1]], 16) == A[MIN_MATCH : MIN_MATCH + 8]  # one more: drafts K=8


def test_drafts_what_followed_the_deepest_recent_match():
    deep = [*A[:20], 1, 2, 3]  # long ago: 20 tokens then the key
    shallow = [9, 9, 1, 2, 3, 50, 51, 52]  # recently: the same key after other tokens
    d = PromptLookup([*deep, 60, 61, *shallow, *A[:20], 1, 2, 3])
    start, depth = d.match()
    assert depth == 23 and d.tokens[start - 1] == 3 and d.tokens[start] == 60
    assert d.propose([], 16) == [60, 61, 9, 9, 1, 2, 3, 50]


def test_the_draft_stops_at_limit_and_the_cap_k_adapts():
    ctx = [*A, 7, *A[:MIN_MATCH]]
    d = PromptLookup(ctx)
    assert d.k == 8 and d.propose([], 5) == A[MIN_MATCH : MIN_MATCH + 5]
    assert d.propose([], 1) == []  # a 1-token draft costs more than it can save
    d.feedback(8, 8)
    assert d.k == 16
    d.feedback(16, 16)
    assert d.k == DRAFT_MAX
    d.feedback(16, 9)  # rejected at the 10th: the cap becomes what was taken, and one more
    assert d.k == 10
    d.feedback(10, 0)
    assert d.k == DRAFT_FLOOR


def test_the_reply_is_taken_in_as_it_grows():
    prompt = [*A, 7]
    d = PromptLookup(prompt)
    assert d.propose(A[:5], 16) == []  # 5 matching tokens: not enough
    assert d.propose(A[:MIN_MATCH], 16) == A[MIN_MATCH : MIN_MATCH + 8]
    assert d.tokens == [*prompt, *A[:MIN_MATCH]]
    assert d.propose(A[: MIN_MATCH + 3], 4) == A[MIN_MATCH + 3 : MIN_MATCH + 7]  # only the new 3 are added


def test_a_draft_never_runs_past_the_context_it_copies():
    cycle = [5, 6, 7, 8, 9]
    d = PromptLookup(cycle * 4)  # the end matches 15 tokens, 5 back: 5 followers exist
    assert d.propose([], 16) == cycle


def test_drafter_bounds_are_checked():
    with pytest.raises(ValueError, match="bad drafter bounds"):
        PromptLookup([], min_match=2)
    with pytest.raises(ValueError, match="bad drafter bounds"):
        PromptLookup([], draft_min=5, draft_max=4)


# --- the option ------------------------------------------------------------------------


def test_speculative_option_values():
    assert SamplingOptions().speculative == "auto"
    assert SamplingOptions(speculative=None).speculative == "off"
    assert SamplingOptions.from_kwargs(speculative="prompt-lookup").speculative == "prompt-lookup"
    assert check_speculative("off") == "off"
    with pytest.raises(InvalidOptionError, match="'auto', 'prompt-lookup', 'off'") as err:
        SamplingOptions.from_kwargs(speculative="ngram")
    assert isinstance(err.value, ValueError) and err.value.option == "speculative" and err.value.value == "ngram"
    with pytest.raises(InvalidOptionTypeError) as terr:
        SamplingOptions(speculative=True)  # type: ignore[arg-type]
    assert isinstance(terr.value, TypeError) and "speculative" in str(terr.value)


def test_drafter_for_needs_the_mode_and_an_engine_with_eval_all():
    class NoEvalAll:
        pass

    class WithEvalAll:
        def __init__(self, runtime, exact=True):
            self.runtime = runtime
            self.batch_logits_exact = exact

        def eval_all(self, tokens):  # pragma: no cover - never called here
            raise AssertionError

    assert drafter_for("off", WithEvalAll("llama.cpp"), [1, 2]) is None
    assert drafter_for("prompt-lookup", NoEvalAll(), [1, 2]) is None
    assert isinstance(drafter_for("prompt-lookup", WithEvalAll("onnxruntime"), [1, 2]), PromptLookup)
    # "auto": where the benchmark measured a gain
    assert isinstance(drafter_for("auto", WithEvalAll("llama.cpp"), [1, 2]), PromptLookup)
    assert drafter_for("auto", WithEvalAll("onnxruntime"), [1, 2]) is None
    # and only where a verified draft cannot change the output
    assert drafter_for("auto", WithEvalAll("llama.cpp", exact=False), [1, 2]) is None
    assert isinstance(drafter_for("prompt-lookup", WithEvalAll("llama.cpp", exact=False), [1, 2]), PromptLookup)


# --- on SmolLM2 through llama.cpp -------------------------------------------------------

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
        if amount < min_total:
            skipped += 1
            continue
        totals[customer] = totals.get(customer, 0.0) + amount
        counts[customer] = counts.get(customer, 0) + 1
    return totals, counts, skipped
'''
QUESTION = f"Repeat this code exactly:\n\n```python\n{CODE}```"
SEEDED = {"temperature": 0.7, "seed": 0, "repeat_penalty": 1.1}  # a seed whose reply copies, in part


class Recording:
    """The engine, with a log of its eval_all and rewind calls (n_past before, tokens / n_keep)."""

    def __init__(self, engine) -> None:
        self._engine, self.log = engine, []

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def eval_all(self, tokens):
        self.log.append(("eval_all", self._engine.n_past, len(tokens)))
        rows = self._engine.eval_all(tokens)
        assert self._engine.n_past <= self._engine.n_ctx
        return rows

    def rewind(self, n_keep):
        self.log.append(("rewind", self._engine.n_past, n_keep))
        self._engine.rewind(n_keep)

    def ended_inside_a_draft(self) -> bool:
        """The last step verified a draft, took some of it and cut the rest."""
        if len(self.log) < 2 or self.log[-1][0] != "rewind" or self.log[-2][0] != "eval_all":
            return False
        _, before, n = self.log[-2]
        return before + 1 < self.log[-1][2] < before + n


def _engine(path, n_ctx=1024):
    from localllm.runtimes.llamacpp import LlamaCppEngine

    # One thread and flash attention: llama.cpp then computes each row of a batch exactly as it
    # computes that token alone (test_eval_all_rows_are_the_one_token_rows holds it to that), so
    # speculation must give plain decoding's tokens bit for bit.
    p = Placement(runtime="llama.cpp", n_ctx=n_ctx, n_threads=1, n_batch=512, n_ubatch=512, flash_attn=True)
    return LlamaCppEngine(path, p)


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    e = _engine(smollm2_gguf)
    yield e
    e.close()


def _prompt(engine, question=QUESTION):
    return engine.tokenize(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n", add_bos=False)


def _pair(engine, prompt, **options):
    """(plain, speculative) completions of the same request from an empty cache, and the
    speculative run's log."""
    engine.rewind(0)
    plain = join(run(engine, prompt, SamplingOptions(speculative="off", **options)))
    cache = engine.cached_tokens
    engine.rewind(0)
    rec = Recording(engine)
    spec = join(run(rec, prompt, SamplingOptions(speculative="prompt-lookup", **options)))
    assert engine.cached_tokens == cache  # the rejected drafts' cells are gone: what plain leaves
    return plain, spec, rec


def test_eval_all_rows_are_the_one_token_rows(smol):
    prompt = _prompt(smol)
    smol.rewind(0)
    smol.eval(prompt[:-8])
    one = [smol.eval([t]).copy() for t in prompt[-8:]]
    smol.rewind(len(prompt) - 8)
    rows = smol.eval_all(prompt[-8:])
    assert rows.shape == (8, smol.n_vocab) and rows.dtype == np.float32
    assert smol.cached_tokens == tuple(prompt)
    assert all(np.array_equal(a, b) for a, b in zip(one, rows, strict=True))


@pytest.mark.parametrize("options", [{"temperature": 0}, SEEDED], ids=["greedy", "seeded"])
def test_speculation_gives_plain_decodings_tokens(smol, options):
    plain, spec, _ = _pair(smol, _prompt(smol), max_tokens=160, **options)
    assert spec.token_ids == plain.token_ids and spec.text == plain.text
    assert spec.finish_reason == plain.finish_reason
    t = spec.timings
    assert t.accepted_tokens > 0 and t.drafted_tokens > t.accepted_tokens  # took drafts and refused some
    assert t.decode_tokens == plain.timings.decode_tokens  # emitted tokens, not evaluated ones
    assert plain.timings.drafted_tokens == plain.timings.accepted_tokens == 0


def _taken(rec: Recording, n_prompt: int) -> set[int]:
    """Indices in the reply of the tokens that came from accepted drafts."""
    out: set[int] = set()
    for (op, before, _), (_, _, keep) in zip(rec.log, rec.log[1:], strict=False):
        if op == "eval_all":  # the draft's first token sits after the token it follows
            out.update(range(before + 1 - n_prompt, keep - n_prompt))
    return out


def test_max_tokens_and_stop_strings_inside_an_accepted_draft(smol):
    prompt = _prompt(smol)
    plain, spec, rec = _pair(smol, prompt, temperature=0, max_tokens=160)
    taken = _taken(rec, len(prompt))
    assert len(taken) > 10 and spec.token_ids == plain.token_ids
    runs = sorted(g for g in taken if g - 1 in taken and g + 1 in taken)  # inside an accepted run
    last_from_draft = 0
    for m in runs[:: max(1, len(runs) // 4)]:
        smol.rewind(0)
        rec = Recording(smol)
        c = join(run(rec, prompt, SamplingOptions(temperature=0, max_tokens=m + 1, speculative="prompt-lookup")))
        assert c.token_ids == plain.token_ids[: m + 1] and c.finish_reason == "length", m
        assert smol.n_past == len(prompt) + m  # the last token sampled is not evaluated
        # the last verify took its draft whole, up to the token before the last: cut to fit max_tokens
        last_from_draft += len(rec.log) > 1 and rec.log[-2][0] == "eval_all" and m - 1 in _taken(rec, len(prompt))
    assert last_from_draft >= 2
    # a stop string starting at a token in the middle of an accepted run
    pieces = [smol.token_bytes(t).decode("utf-8", "replace") for t in plain.token_ids]
    stopped_inside = 0
    for g in runs[::3]:
        at = len("".join(pieces[:g]))
        stop = plain.text[at : at + 6]
        if len(stop) < 6 or plain.text.index(stop) != at:
            continue
        p2, s2, rec = _pair(smol, prompt, temperature=0, max_tokens=160, stop=(stop,))
        assert s2.text == p2.text == plain.text[:at] and s2.finish_reason == p2.finish_reason == "stop"
        assert s2.token_ids == p2.token_ids
        stopped_inside += rec.ended_inside_a_draft()
    assert stopped_inside >= 2


def test_drafts_stop_at_the_context_window(smollm2_gguf):
    engine = _engine(smollm2_gguf, n_ctx=256)
    try:
        prompt = _prompt(engine)
        plain, spec, rec = _pair(engine, prompt, temperature=0, max_tokens=None)
        assert spec.token_ids == plain.token_ids and spec.finish_reason == plain.finish_reason == "length"
        assert len(prompt) + len(spec.token_ids) == engine.n_ctx  # the window, exactly, both ways
        assert spec.timings.accepted_tokens > 0
        assert max(before + n for op, before, n in rec.log if op == "eval_all") <= engine.n_ctx
    finally:
        engine.close()


def test_cancel_between_two_tokens_of_a_draft(smol):
    prompt = _prompt(smol)
    _, full, rec = _pair(smol, prompt, temperature=0, max_tokens=160)
    taken = _taken(rec, len(prompt))
    runs = sorted(g for g in taken if g - 1 in taken and g + 1 in taken)

    def until(n, mode):
        smol.rewind(0)
        stop, got, rec = threading.Event(), [], Recording(smol)
        for chunk in run(rec, prompt, SamplingOptions(temperature=0, max_tokens=160, speculative=mode), stop):
            got.append(chunk)
            if sum(len(c.token_ids) for c in got) >= n:
                stop.set()  # seen by the next token's step: inside a verified draft when speculating
        return join(got), rec

    inside = 0
    for g in runs[:: max(1, len(runs) // 3)]:
        plain, _ = until(g + 1, "off")
        spec, rec = until(g + 1, "prompt-lookup")
        assert spec.finish_reason == plain.finish_reason == "cancelled"
        assert spec.token_ids == plain.token_ids == full.token_ids[: len(plain.token_ids)]
        assert len(spec.token_ids) >= g + 1
        inside += rec.ended_inside_a_draft()
        # the cache holds the prompt and the reply but its last token, or all of it when the
        # cancel was seen after a draft token's row was evaluated (as a plain step after its eval)
        n = spec.timings.decode_tokens
        assert smol.n_past - len(prompt) in (n - 1, n) and spec.timings.drafted_tokens > 0
    assert inside >= 2


def test_model_api_and_timings(smollm2_gguf, one_core):
    import localllm

    with localllm.load(smollm2_gguf, context=1024, hardware=one_core) as m:
        messages = [{"role": "user", "content": QUESTION}]
        on = m.chat(messages, temperature=0, max_tokens=120, speculative="prompt-lookup")
        # from an empty cache too: a prompt reused from the cache has its last token evaluated
        # alone, which llama.cpp computes a little differently from the same token in a chunk
        m._engine.rewind(0)
        off = m.chat(messages, temperature=0, max_tokens=120, speculative="off")
        assert on.text == off.text and on.timings.accepted_tokens > 0 and off.timings.drafted_tokens == 0
        with pytest.raises(InvalidOptionError, match="speculative"):
            m.generate("hi", speculative="lookup")


# --- on the tiny ONNX decoder -------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_engine(tiny_onnx):
    from localllm.runtimes.onnx import OnnxEngine

    e = OnnxEngine(tiny_onnx, Placement(runtime="onnxruntime", n_ctx=256, n_threads=1, provider="CPUExecutionProvider"))
    yield e
    e.close()


def test_onnx_eval_all_is_every_rows_logits(onnx_engine):
    e = onnx_engine
    tokens = e.tokenize("the cat sat on the mat")
    e.rewind(0)
    e.eval(tokens[:2])
    one = [e.eval([t]).copy() for t in tokens[2:]]
    e.rewind(2)
    rows = e.eval_all(tokens[2:])
    assert rows.shape == (len(tokens) - 2, e.n_vocab) and rows.dtype == np.float32
    assert e.cached_tokens == tuple(tokens)
    # ONNX Runtime's batched matmul rounds a little differently from its one-row one
    assert np.allclose(np.stack(one), rows, atol=1e-5)


# the random decoder's logits are nearly flat (std 0.5): only a low temperature lets its replies
# repeat themselves, and at 0.02 the runner-up still comes up now and then
@pytest.mark.parametrize("options", [{"temperature": 0}, {"temperature": 0.02, "seed": 3}], ids=["greedy", "seeded"])
def test_onnx_speculation_gives_plain_decodings_tokens(onnx_engine, options):
    prompt = onnx_engine.tokenize("the cat sat on the mat and the dog sat on the log " * 3)
    plain, spec, _ = _pair(onnx_engine, prompt, max_tokens=120, **options)
    assert spec.token_ids == plain.token_ids and spec.finish_reason == plain.finish_reason
    assert spec.timings.accepted_tokens > 0


# --- the command line ---------------------------------------------------------------------


def test_run_takes_speculative_and_refuses_an_unknown_mode(tiny_gguf):
    import json
    import subprocess
    import sys

    def cli(*extra):
        args = [str(tiny_gguf), "the cat sat", "--raw", "--temperature", "0", "--max-tokens", "8", "--threads", "1"]
        return subprocess.run(
            [sys.executable, "-m", "localllm", "run", *args, *extra], capture_output=True, text=True, timeout=300
        )

    off, on = cli("--speculative", "off", "--json"), cli("--speculative", "prompt-lookup", "--json")
    assert off.returncode == on.returncode == 0, off.stderr + on.stderr
    a, b = json.loads(off.stdout), json.loads(on.stdout)
    assert a["text"] == b["text"] and a["timings"]["drafted_tokens"] == 0
    bad = cli("--speculative", "ngram")
    assert bad.returncode == 2 and "invalid choice: 'ngram'" in bad.stderr
