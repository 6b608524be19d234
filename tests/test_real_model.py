"""localllm on a real model (SmolLM2-135M-Instruct, Q4_1): its tokenizer, template and output,
held against raw llama-cpp-python and against measured memory."""

from __future__ import annotations

import codecs
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import localllm

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Les fleurs du jardin sont",  # plain French
    "日本の首都は",  # Japanese: multi-byte pieces split across tokens
    "Schöne Grüße aus Köln, und",
]
N_CTX = 512
N_TOKENS = 24


@pytest.fixture(scope="module")
def smol(smollm2_gguf, one_core):
    m = localllm.load(smollm2_gguf, context=N_CTX, hardware=one_core)
    yield m
    m.close()


@pytest.fixture(scope="module")
def raw(smollm2_gguf, smol):
    """llama-cpp-python's own Llama on the same file, at the same placement."""
    from llama_cpp import Llama

    p = smol.info.placement
    llm = Llama(
        model_path=str(smollm2_gguf),
        n_ctx=p.n_ctx,
        n_threads=1,
        n_threads_batch=1,
        n_batch=p.n_batch,
        n_ubatch=p.n_ubatch,
        flash_attn=p.flash_attn,
        n_gpu_layers=0,
        verbose=False,
    )
    yield llm
    llm.close()


def _raw_greedy(llm, tokens: list[int], n: int) -> list[int]:
    import llama_cpp

    llm.reset()
    out = []
    for tok in llm.generate(tokens, temp=0.0, top_k=1, top_p=1.0, min_p=0.0, repeat_penalty=1.0, reset=True):
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        out.append(tok)
        if len(out) == n:
            break
    return out


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_completion_is_raw_llama_cpps_token_for_token(smol, raw, prompt):
    ours_in = smol.tokenize(prompt, add_bos=smol._engine.add_bos)
    raw_in = raw.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)  # raw adds BOS only if the model asks
    assert ours_in == raw_in, "the same tokens go in (BOS handling included)"
    out = smol.generate(prompt, temperature=0, max_tokens=N_TOKENS)
    assert list(out.token_ids) == _raw_greedy(raw, raw_in, N_TOKENS)
    # the raw bytes as text; a character that max_tokens cut in two is not text yet
    raw_text = codecs.getincrementaldecoder("utf-8")("replace").decode(raw.detokenize(out.token_ids), final=False)
    assert out.text == raw_text
    assert "\ufffd" not in out.text


CONVERSATION = [
    {"role": "system", "content": "You are a terse assistant. Answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Japan? Réponds aussi en français."},
]


def test_chat_prompt_is_the_models_template_under_hugging_face_semantics(smol, smollm2_gguf):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from localllm.validate import validate_gguf

    meta = validate_gguf(smollm2_gguf).metadata
    reference = Jinja2ChatFormatter(
        template=meta["tokenizer.chat_template"],
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        add_generation_prompt=True,
    )
    assert smol.info.template_source == "gguf"
    assert smol.render_chat(CONVERSATION) == reference(messages=CONVERSATION).prompt
    # and written out by hand, from SmolLM2's published ChatML format
    assert smol.render_chat(CONVERSATION) == (
        "<|im_start|>system\nYou are a terse assistant. Answer in one short sentence.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd of Japan? Réponds aussi en français.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # without a system message the template adds its own default one
    assert smol.render_chat(CONVERSATION[1:2]).startswith(
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    )


@pytest.mark.parametrize(
    "question", ["What is the capital of Germany?", "Écris une phrase sur le café.", "Name three colors."]
)
def test_replies_end_at_the_turn_end_and_stream_pieces_join(smol, question):
    messages = [{"role": "user", "content": question}]
    chunks = list(smol.chat_stream(messages, temperature=0, max_tokens=200))
    text = "".join(c.text for c in chunks)
    final = chunks[-1]
    assert final.finish_reason == "eos", text  # ended at its end-of-turn token, not cut by max_tokens
    for marker in ("<|im_end|>", "<|im_start|>", "<|endoftext|>"):
        assert marker not in text
    assert "\ufffd" not in text and text.strip()
    again = smol.chat(messages, temperature=0, max_tokens=200)
    assert again.text == text and again.finish_reason == "eos"
    assert len(again.token_ids) == again.completion_tokens
    # the end-of-turn token is not part of the reply's tokens
    assert smol.tokenize("<|im_end|>")[0] not in again.token_ids


def test_the_model_answers(smol):
    """Right answers from a 135M model at Q4_1 (it calls Paris "L'Étoile" greedily, as raw llama.cpp does)."""
    ask = lambda q: smol.chat([{"role": "user", "content": q}], temperature=0, max_tokens=60).text  # noqa: E731
    assert "Berlin" in ask("What is the capital of Germany?")
    assert "4" in ask("What is 2+2?")


_PEAK = textwrap.dedent("""
    import json, sys
    import localllm
    from localllm.runtimes.llamacpp import use_extra_buffers
    path = sys.argv[1]
    # the one-off extra-buffers trial an AMX build makes on a machine (kept): a plan made before it
    # assumes the larger, repacked figure; one made after knows whether the kernels run here
    use_extra_buffers()
    with localllm.load(path) as m:
        m.generate("The history of the city of Paris", temperature=0, max_tokens=32)
        p = m.plan
        status = open("/proc/self/status").read()
        hwm = int(next(l for l in status.splitlines() if l.startswith("VmHWM")).split()[1]) * 1024
        print(json.dumps({"predicted": p.memory.host.total, "measured": hwm, "n_ctx": m.info.n_ctx,
                          "threads": m.info.placement.n_threads}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS read from /proc")
def test_predicted_memory_at_the_plans_context_matches_peak_rss(smollm2_gguf, tmp_path):
    """In a fresh process: load at the plan's own context, generate, and read the peak resident set."""
    env = {"LOCALLLM_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK, str(smollm2_gguf)], capture_output=True, text=True, timeout=300, env=env
    )
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    err = r["predicted"] - r["measured"]
    assert abs(err) <= max(0.10 * r["measured"], 100 * 2**20), r


# -- the real Hugging Face Hub (pytest -m network) ---------------------------------------------


@pytest.mark.network
def test_a_real_hub_download_is_the_models_config(tmp_path):
    """huggingface_hub fetches SmolLM2-135M-Instruct's config.json from the real Hub, and it
    describes the shape the synthetic SmolLM2 is built with."""
    from huggingface_hub import hf_hub_download

    from localllm.testing import SHAPES

    # the autouse fixture points HF_ENDPOINT at a dead port; this test means the real Hub
    path = hf_hub_download(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "config.json",
        endpoint="https://huggingface.co",
        cache_dir=tmp_path / "hub",
        etag_timeout=30,
    )
    config = json.loads(Path(path).read_text(encoding="utf-8"))
    s = SHAPES["smollm2-135m"]
    assert config["model_type"] == s.model_type == "llama"
    assert (
        config["num_hidden_layers"],
        config["hidden_size"],
        config["num_attention_heads"],
        config["num_key_value_heads"],
        config["intermediate_size"],
        config["max_position_embeddings"],
        config["vocab_size"],
        config["tie_word_embeddings"],
    ) == (s.n_layer, s.n_embd, s.n_head, s.n_head_kv, s.n_ff, s.n_ctx_train, s.n_vocab, s.tied_embeddings)
    assert config["rope_theta"] == s.rope_theta and config["rms_norm_eps"] == s.rms_eps
