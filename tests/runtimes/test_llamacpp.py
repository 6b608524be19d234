"""The llama.cpp engine on real tiny GGUF files, driven by the shared loop."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from localllm.errors import GenerationError, InvalidModelError
from localllm.generation import SamplingOptions, Utf8Decoder, join, run
from localllm.placement import Placement
from localllm.runtimes import load_engine
from localllm.runtimes.base import Engine
from localllm.runtimes.llamacpp import LlamaCppEngine

# one thread: llama.cpp's worker threads spin at each barrier, which crawls on shared CI cores
PLACEMENT = Placement(n_ctx=512, n_threads=1, n_batch=64, n_ubatch=64)
GREEDY = SamplingOptions(temperature=0, max_tokens=40)


@pytest.fixture(scope="module")
def engine(tiny_gguf):
    e = LlamaCppEngine(tiny_gguf, PLACEMENT)
    yield e
    e.close()


def test_engine_meets_the_protocol_and_reports_facts(engine):
    assert isinstance(engine, Engine)
    assert engine.runtime == "llama.cpp" and engine.n_ctx == 512 and engine.n_vocab == 554
    assert engine.bos_token == "<s>" and engine.eos_token == "<|im_end|>"
    assert "<|im_start|>" in engine.chat_template
    assert engine.has_token("<|im_start|>") and not engine.has_token("hello world")
    meta = engine.metadata()
    assert meta["architecture"] == "llama" and meta["n_layer"] == 2 and meta["parameters"] > 0
    assert engine.is_eog(4) and not engine.is_eog(300)
    assert engine.load_seconds > 0


def test_byte_tokens_round_trip_multibyte_text(engine):
    text = "héllo 世界 🙂"
    ids = engine.tokenize(text, add_bos=False)
    pieces = [engine.token_bytes(t) for t in ids]
    assert any(len(p) == 1 and p[0] >= 0x80 for p in pieces)  # characters really arrive byte by byte
    d = Utf8Decoder()
    assert "".join(d.feed(p) for p in pieces).lstrip() + d.flush() == text


def test_eval_returns_logits_view_and_rewind_restores_state(engine):
    engine.rewind(0)
    prompt = engine.tokenize("the cat is on the moon")
    first = engine.eval(prompt).copy()
    assert first.dtype == np.float32 and first.shape == (engine.n_vocab,)
    assert engine.cached_tokens == tuple(prompt) and engine.n_past == len(prompt)
    engine.eval([300, 301])
    engine.rewind(len(prompt) - 1)
    again = engine.eval(prompt[-1:])
    np.testing.assert_allclose(again, first, rtol=1e-4, atol=1e-4)
    engine.rewind(0)
    assert engine.n_past == 0


def test_greedy_output_is_deterministic_across_loads(tiny_gguf, engine):
    prompt = engine.tokenize("hello world")
    a = join(run(engine, prompt, GREEDY))
    with _fresh(tiny_gguf) as other:
        b = join(run(other, prompt, GREEDY))
    assert a.token_ids == b.token_ids and a.text == b.text and a.completion_tokens > 0


class _fresh:
    def __init__(self, path):
        self.e = LlamaCppEngine(path, PLACEMENT)

    def __enter__(self):
        return self.e

    def __exit__(self, *exc):
        self.e.close()


def test_prompt_longer_than_n_batch_is_split(tiny_gguf, engine):
    long = engine.tokenize(" ".join(["hello world"] * 20))
    assert PLACEMENT.n_batch < len(long) < PLACEMENT.n_ctx
    engine.rewind(0)
    logits = engine.eval(long).copy()  # four batches of 64
    assert engine.n_past == len(long)
    one_batch = LlamaCppEngine(tiny_gguf, Placement(n_ctx=512, n_threads=1, n_batch=512))
    try:
        np.testing.assert_allclose(one_batch.eval(long), logits, rtol=1e-3, atol=1e-3)
    finally:
        one_batch.close()


def test_quantized_file_loads_and_generates(tiny_gguf_q8):
    with _fresh(tiny_gguf_q8) as e:
        c = join(run(e, e.tokenize("hello"), GREEDY))
        assert c.completion_tokens > 0 and "Q8_0" in e.metadata()["description"]


def test_create_completion_trap_does_not_hit_our_loop(engine):
    """llama-cpp-python's create_completion failed with "failed to find a memory slot" after a
    few tokens on a model like this; our loop decodes 300 single tokens without a failure."""
    sampled = []
    # greedy tokens, each evaluated, 300 times
    engine.rewind(0)
    logits = engine.eval(engine.tokenize("hello"))
    for _ in range(300):
        tok = int(np.argmax(logits))
        sampled.append(tok)
        logits = engine.eval([tok])
    assert engine.n_past == len(engine.tokenize("hello")) + 300
    c = join(
        run(
            engine,
            engine.tokenize("the"),
            SamplingOptions(temperature=1.0, seed=3, max_tokens=250, top_k=0, top_p=1.0, min_p=0.0),
        )
    )
    assert c.finish_reason in ("length", "eos") and c.completion_tokens >= 1


def test_context_creation_failure_carries_llama_cpp_reason(tiny_gguf):
    # head_dim 16 is not a multiple of q8_0's block of 32: llama.cpp refuses the context
    with pytest.raises(GenerationError, match="block size 32"):
        LlamaCppEngine(tiny_gguf, Placement(n_ctx=256, kv_type="q8_0", flash_attn=True))


def test_bad_file_and_bad_placement_raise_clear_errors(tmp_path, tiny_gguf):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:4000])
    with pytest.raises(InvalidModelError, match="could not load"):
        LlamaCppEngine(cut, PLACEMENT)
    with pytest.raises(ValueError, match="KV cache type"):
        LlamaCppEngine(tiny_gguf, Placement(kv_type="q5_x"))
    with pytest.raises(InvalidModelError, match="folder"):
        load_engine(tmp_path, PLACEMENT)


def test_closed_engine_refuses_work(tiny_gguf):
    e = LlamaCppEngine(tiny_gguf, PLACEMENT)
    e.close()
    e.close()  # idempotent
    with pytest.raises(GenerationError, match="closed"):
        e.eval([1])


def test_nothing_native_reaches_file_descriptor_2(tiny_gguf, tmp_path):
    """llama.cpp writes its logs to fd 2 unless told otherwise; ours go to `logging` only."""
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(tiny_gguf.read_bytes()[:4000])
    script = textwrap.dedent(f"""
        import logging
        from localllm.generation import SamplingOptions, join, run
        from localllm.placement import Placement
        from localllm.runtimes.llamacpp import LlamaCppEngine
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append(record)
        logging.getLogger("localllm").addHandler(Keep())
        logging.getLogger("localllm").setLevel(logging.DEBUG)
        e = LlamaCppEngine({str(tiny_gguf)!r}, Placement(n_ctx=256, n_threads=1))
        join(run(e, e.tokenize("hello"), SamplingOptions(temperature=0, max_tokens=20)))
        for bad in ({str(cut)!r},):
            try:
                LlamaCppEngine(bad, Placement(n_ctx=256))
            except Exception:
                pass
        try:
            LlamaCppEngine({str(tiny_gguf)!r}, Placement(n_ctx=256, kv_type="q8_0", flash_attn=True))
        except Exception:
            pass
        e.close()
        native = [r for r in records if r.name.endswith(".native")]
        print(len(native), sum(r.levelno >= logging.ERROR for r in native))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert out.stderr == b""
    n_native, n_errors = map(int, out.stdout.split())
    assert n_native > 20 and n_errors >= 2  # the chatter went to logging instead
