"""The ONNX Runtime engine on real ONNX files built at test time (localllm.testing.onnx).

Logits are held against a numpy forward pass over the same weights; the Model
behaviours run through `localllm.load(folder)`; bad folders must fail with a clear
InvalidModelError; the provider choice is a table over hardware profiles.
"""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

import localllm
from localllm.errors import ContextOverflowError, InvalidModelError, RuntimeUnavailableError
from localllm.formats.onnx_folder import validate_onnx_folder
from localllm.generation import SamplingOptions, join, run
from localllm.hardware import Accelerator, CPUInfo, GPUInfo, Hardware, RuntimeInfo
from localllm.placement import Placement
from localllm.providers import CPU, choose_provider
from localllm.runtimes import load_engine
from localllm.runtimes.base import Engine
from localllm.runtimes.onnx import OnnxEngine, TokenBytes, provider_chain
from localllm.testing import reference_decoder, write_onnx_folder
from localllm.validate import validate_model_path

SEED = 3  # the seed conftest builds tiny_onnx with
GREEDY = dict(temperature=0.0)


def engine_for(folder, **placement) -> OnnxEngine:
    placement = Placement(**{"runtime": "onnxruntime", "n_ctx": 256, "n_threads": 1, **placement})
    return OnnxEngine(folder, placement, hardware=Hardware())


@pytest.fixture(scope="module")
def engine(tiny_onnx):
    e = engine_for(tiny_onnx)
    yield e
    e.close()


@pytest.fixture(scope="module")
def model(tiny_onnx):
    m = localllm.load(tiny_onnx)
    yield m
    m.close()


# -- numerics against the numpy reference ------------------------------------------------


def test_engine_meets_the_protocol(engine):
    assert isinstance(engine, Engine)
    assert engine.runtime == "onnxruntime" and engine.provider == CPU
    meta = engine.metadata()
    assert meta["n_layer"] == 2 and meta["kv_dtype"] == "float32" and meta["tokenizer"] == "byte_level"


def test_logits_match_reference_with_and_without_cache(engine, tiny_onnx):
    ref = reference_decoder(tiny_onnx, seed=SEED)
    prompt = engine.tokenize("hello world, the cat is fast")
    engine.rewind(0)
    logits = engine.eval(prompt).copy()
    expected = ref.forward(prompt)[-1]
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)

    seq = list(prompt)
    tokens_cached = []
    for _ in range(12):
        tok = int(np.argmax(logits))
        ref_cached = ref.forward([tok])[-1]  # numpy with its own KV cache
        ref_full = reference_decoder(tiny_onnx, seed=SEED).forward(seq + [tok])[-1]  # no cache
        tokens_cached.append(tok)
        seq.append(tok)
        logits = engine.eval([tok]).copy()
        np.testing.assert_allclose(logits, ref_cached, atol=1e-4, rtol=0)
        np.testing.assert_allclose(logits, ref_full, atol=1e-4, rtol=0)
    # the whole sequence at once, from an empty cache, gives the same last logits
    engine.rewind(0)
    np.testing.assert_allclose(engine.eval(seq).copy(), logits, atol=1e-4, rtol=0)
    # and the greedy tokens the reference picks without any cache are the ones the engine picked
    ref_seq = list(prompt)
    for _ in range(12):
        ref_seq.append(int(np.argmax(ref.forward(ref_seq, use_cache=False)[-1])))
    assert ref_seq[len(prompt) :] == tokens_cached


def test_greedy_loop_equals_reference_tokens(engine, tiny_onnx):
    ref = reference_decoder(tiny_onnx, seed=SEED)
    prompt = engine.tokenize("one two three")
    engine.rewind(0)
    done = join(run(engine, prompt, SamplingOptions(max_tokens=10, **GREEDY)))
    expected, seq = [], list(prompt)
    logits = ref.forward(seq)[-1]
    for _ in range(10):
        expected.append(int(np.argmax(logits)))
        logits = ref.forward([expected[-1]])[-1]
    assert list(done.token_ids) == expected and done.finish_reason == "length"
    assert done.timings.decode_tokens == 10 and done.timings.decode_tps > 0


def test_float16_cache_matches_reference(tiny_onnx_f16):
    e = engine_for(tiny_onnx_f16)
    try:
        assert e.metadata()["kv_dtype"] == "float16"
        ref = reference_decoder(tiny_onnx_f16, seed=SEED)
        prompt = e.tokenize("hello world")
        np.testing.assert_allclose(e.eval(prompt).copy(), ref.forward(prompt)[-1], atol=2e-2, rtol=0)
        for tok in (40, 41, 42):
            np.testing.assert_allclose(e.eval([tok]).copy(), ref.forward([tok])[-1], atol=2e-2, rtol=0)
    finally:
        e.close()


def test_fused_group_query_attention_layout(tmp_path):
    """onnxruntime-genai's layout: GroupQueryAttention contrib op, positions from the mask, no position_ids."""
    folder = write_onnx_folder(tmp_path / "gqa", seed=SEED, attention="gqa")
    e = engine_for(folder, n_batch=4)
    try:
        assert e.info.io.position_ids is None
        ref = reference_decoder(folder, seed=SEED)
        prompt = e.tokenize("hello world, the cat is fast")
        np.testing.assert_allclose(e.eval(prompt).copy(), ref.forward(prompt)[-1], atol=1e-4, rtol=0)
        for tok in (40, 41):
            np.testing.assert_allclose(e.eval([tok]).copy(), ref.forward([tok])[-1], atol=1e-4, rtol=0)
        e.rewind(3)
        ref.reset()
        ref.forward(prompt[:3])
        np.testing.assert_allclose(e.eval([9, 10]).copy(), ref.forward([9, 10])[-1], atol=1e-4, rtol=0)
    finally:
        e.close()


def test_batches_and_rewind_keep_the_cache_exact(tiny_onnx):
    e = engine_for(tiny_onnx, n_batch=3)
    try:
        ref = reference_decoder(tiny_onnx, seed=SEED)
        prompt = e.tokenize("what is the answer to this question, model?")
        assert len(prompt) > 6
        np.testing.assert_allclose(e.eval(prompt).copy(), ref.forward(prompt)[-1], atol=1e-4, rtol=0)
        assert e.n_past == len(prompt) and list(e.cached_tokens) == prompt
        e.rewind(4)
        assert list(e.cached_tokens) == prompt[:4]
        ref.reset()
        ref.forward(prompt[:4])
        np.testing.assert_allclose(e.eval([7, 8]).copy(), ref.forward([7, 8])[-1], atol=1e-4, rtol=0)
        assert e.n_past == 6
    finally:
        e.close()


def test_context_overflow_and_closed_engine(tiny_onnx):
    e = engine_for(tiny_onnx, n_ctx=8)
    with pytest.raises(ContextOverflowError) as err:
        e.eval(list(range(3, 12)))
    assert err.value.n_ctx == 8 and err.value.n_prompt == 9
    e.close()
    e.close()  # idempotent
    with pytest.raises(localllm.GenerationError, match="closed"):
        e.eval([3])


def test_optimized_model_is_cached_on_disk(tiny_onnx):
    first = engine_for(tiny_onnx)
    path = first.optimized_path
    assert path is not None and path.is_file() and (path.parent / "model.onnx.data").is_file()
    second = engine_for(tiny_onnx)
    assert second.optimized_path == path
    prompt = [5, 6, 7, 8]
    np.testing.assert_allclose(first.eval(prompt).copy(), second.eval(prompt).copy(), atol=1e-6)
    first.close()
    second.close()
    uncached = OnnxEngine(
        tiny_onnx, Placement(runtime="onnxruntime", n_ctx=64), hardware=Hardware(), cache_optimized=False
    )
    assert uncached.optimized_path is None
    uncached.close()


# -- tokens -------------------------------------------------------------------------------


def test_token_bytes_rebuild_text_byte_for_byte(engine):
    text = "héllo wörld ☃ 🙂 the cat\nanswer: 42"
    ids = engine.tokenize(text, add_bos=False)
    assert b"".join(engine.token_bytes(t) for t in ids) == text.encode("utf-8")
    im_end = engine.tokenize("<|im_end|>", add_bos=False)
    assert len(im_end) == 1 and engine.token_bytes(im_end[0]) == b"" and engine.is_eog(im_end[0])
    assert len(engine.tokenize("<|im_end|>", add_bos=False, special=False)) > 1
    assert engine.has_token("<|im_start|>") and not engine.has_token("hello")
    assert engine.token_bytes(engine.n_vocab + 10) == b""


def test_sentencepiece_style_vocabulary_bytes():
    from tokenizers import Tokenizer, decoders, models, normalizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ("▁", "h", "e", "l", "o", "▁h", "▁he", "▁hel", "▁hell", "▁hello"):
        vocab[piece] = len(vocab)
    merges = [("▁", "h"), ("▁h", "e"), ("▁he", "l"), ("▁hel", "l"), ("▁hell", "o")]
    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.add_special_tokens(["<s>", "</s>"])
    tb = TokenBytes(tok, json.loads(tok.to_str()))
    assert tb.kind == "sentencepiece"
    ids = tok.encode("hello ☃").ids
    assert [tok.id_to_token(i) for i in ids][:2] == ["▁hello", "▁"]
    assert b"".join(tb(i) for i in ids) == " hello ☃".encode()
    assert tb(vocab["<0xE2>"]) == b"\xe2" and tb(1) == b""


# -- the Model API over ONNX --------------------------------------------------------------


def test_load_folder_generate(model):
    assert model.info.runtime == "onnxruntime"
    done = model.generate("Hello", max_tokens=8, **GREEDY)
    assert done.completion_tokens == 8 and done.finish_reason == "length" and isinstance(done.text, str)


def test_stream_equals_generate(model):
    chunks = list(model.stream("the cat is", max_tokens=16, **GREEDY))
    done = model.generate("the cat is", max_tokens=16, **GREEDY)
    assert "".join(c.text for c in chunks) == done.text
    assert tuple(t for c in chunks for t in c.token_ids) == done.token_ids
    assert chunks[-1].finish_reason == done.finish_reason == "length"


def test_seeded_sampling_is_reproducible(model):
    a = model.generate("one two", max_tokens=12, temperature=1.0, seed=7)
    b = model.generate("one two", max_tokens=12, temperature=1.0, seed=7)
    assert a.token_ids == b.token_ids


def test_stop_strings(model):
    full = model.generate("hello world", max_tokens=24, **GREEDY).text
    visible = full.strip()
    assert len(visible) >= 4, f"need some text to cut: {full!r}"
    stop = visible[len(visible) // 2 : len(visible) // 2 + 2]
    cut = model.generate("hello world", max_tokens=24, stop=[stop], **GREEDY)
    assert cut.finish_reason == "stop"
    assert cut.text == full[: full.index(stop)]
    assert stop not in cut.text


def test_chat_template_is_applied(model):
    rendered = model.render_chat([{"role": "user", "content": "hi"}])
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    done = model.chat([{"role": "user", "content": "hi"}], max_tokens=6, **GREEDY)
    assert done.prompt_tokens == model.count_tokens(rendered) or done.prompt_tokens == len(model.tokenize(rendered))
    streamed = "".join(c.text for c in model.chat_stream([{"role": "user", "content": "hi"}], max_tokens=6, **GREEDY))
    assert streamed == done.text


def test_cancel_stops_the_stream(model):
    stop = threading.Event()
    chunks = []
    for chunk in model.stream("hello", max_tokens=200, stop_event=stop, **GREEDY):
        chunks.append(chunk)
        stop.set()
    assert chunks[-1].finish_reason == "cancelled"
    assert sum(len(c.token_ids) for c in chunks) < 200


# -- bad folders ----------------------------------------------------------------------------


@pytest.fixture()
def folder_copy(tiny_onnx, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_onnx, dst)
    return dst


def test_valid_folder_is_described(tiny_onnx):
    info = validate_onnx_folder(tiny_onnx)
    assert info.model_file.name == "model.onnx" and info.n_layer == 2 and info.n_head_kv == 2
    assert info.head_dim == 16 and info.kv_bytes_per_token() == 2 * 2 * 2 * 16 * 4
    assert info.io.position_ids == "position_ids" and info.chat_template and info.eos_token == "<|im_end|>"
    assert validate_onnx_folder(tiny_onnx / "onnx" / "model.onnx").folder == tiny_onnx

    assert validate_model_path(tiny_onnx).model_file == info.model_file


def test_missing_tokenizer(folder_copy):
    (folder_copy / "tokenizer.json").unlink()
    with pytest.raises(InvalidModelError, match="no tokenizer: tokenizer.json is missing") as err:
        localllm.load(folder_copy)
    assert err.value.path.endswith("tokenizer.json")


def test_truncated_onnx_file(folder_copy):
    f = folder_copy / "onnx" / "model.onnx"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match=r"model\.onnx .*(truncated|not a readable ONNX)"):
        validate_onnx_folder(folder_copy)


def test_truncated_and_missing_external_data(folder_copy):
    data = folder_copy / "onnx" / "model.onnx_data"
    size = data.stat().st_size
    with open(data, "r+b") as fh:
        fh.truncate(size - 1000)
    with pytest.raises(InvalidModelError, match=r"model\.onnx_data is truncated: \d+ bytes") as err:
        validate_onnx_folder(folder_copy)
    assert err.value.path.endswith("model.onnx_data")
    data.unlink()
    with pytest.raises(InvalidModelError, match="weights file model.onnx_data is missing"):
        validate_onnx_folder(folder_copy)


def _rename_io(folder, old: str, new: str, *, output: bool = False) -> None:
    import onnx

    path = folder / "onnx" / "model.onnx"
    m = onnx.load_model(str(path), load_external_data=False)
    for vi in m.graph.output if output else m.graph.input:
        if vi.name == old:
            vi.name = new
    for node in m.graph.node:
        for seq in (node.output if output else node.input,):
            for i, name in enumerate(seq):
                if name == old:
                    seq[i] = new
    onnx.save_model(m, str(path))


def test_unexpected_input_name(folder_copy):
    _rename_io(folder_copy, "input_ids", "tokens")
    with pytest.raises(InvalidModelError, match=r"no input 'input_ids'.*unexpected input\(s\) \['tokens'\]"):
        validate_onnx_folder(folder_copy)


def test_unexpected_output_name(folder_copy):
    _rename_io(folder_copy, "present.1.value", "kv.1.v", output=True)
    with pytest.raises(InvalidModelError, match=r"present value names missing for layer\(s\) \[1\]"):
        validate_onnx_folder(folder_copy)


def test_other_bad_folders(folder_copy, tmp_path):
    (folder_copy / "config.json").write_text("{not json")
    with pytest.raises(InvalidModelError, match="config.json is not valid JSON"):
        validate_onnx_folder(folder_copy)
    (folder_copy / "config.json").unlink()
    (folder_copy / "genai_config.json").unlink()
    with pytest.raises(InvalidModelError, match="no config.json"):
        validate_onnx_folder(folder_copy)
    with pytest.raises(InvalidModelError, match="no .onnx file"):
        validate_onnx_folder(tmp_path)
    with pytest.raises(InvalidModelError, match="does not exist"):
        validate_onnx_folder(tmp_path / "nowhere")


def test_unavailable_provider_is_a_clear_error(tiny_onnx):
    with pytest.raises(RuntimeUnavailableError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        OnnxEngine(tiny_onnx, Placement(runtime="onnxruntime", provider="CUDAExecutionProvider"))


def test_the_engine_never_probes_the_machine_itself(tiny_onnx):
    """Without a provider in the placement it needs the caller's hardware; load_engine passes a probe."""
    placement = Placement(runtime="onnxruntime", n_ctx=64)
    with pytest.raises(ValueError, match="hardware="):
        OnnxEngine(tiny_onnx, placement)
    e = load_engine(tiny_onnx, placement)
    assert e.n_ctx == 64 and "from the plan" not in e.provider_reason  # chosen over the probe
    e.close()


# -- execution providers --------------------------------------------------------------------

ALL = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CoreMLExecutionProvider",
    "DmlExecutionProvider",
    "OpenVINOExecutionProvider",
    "ROCMExecutionProvider",
    "MIGraphXExecutionProvider",
    "CPUExecutionProvider",
)

# profile -> (provider with every provider installed, provider with CUDA + CPU, with the CPU wheel only)
PROFILE_TABLE = {
    "desktop-rtx4090-64gb": ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU),
    "workstation-2x-rtx3090": ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU),
    "jetson-orin-nano-8gb": ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU),
    "laptop-rtx4060-16gb": ("TensorrtExecutionProvider", "CUDAExecutionProvider", CPU),
    "desktop-rx7900xtx": ("MIGraphXExecutionProvider", CPU, CPU),
    "macbook-air-m2-8gb": ("CoreMLExecutionProvider", CPU, CPU),
    "macbook-pro-m3-max-64gb": ("CoreMLExecutionProvider", CPU, CPU),
    "container-4gib": ("OpenVINOExecutionProvider", CPU, CPU),
    "laptop-x86-8gb": ("OpenVINOExecutionProvider", CPU, CPU),
    "laptop-x86-16gb": (CPU, CPU, CPU),
    "raspberry-pi-5-8gb": (CPU, CPU, CPU),
}


@pytest.mark.parametrize("name", sorted(PROFILE_TABLE))
def test_provider_choice_per_profile(name):
    hw = localllm.load_profile(name)
    every, cuda, cpu_only = PROFILE_TABLE[name]
    provider, reason = choose_provider(hw, ALL)
    assert provider == every and reason
    assert choose_provider(hw, ("CUDAExecutionProvider", CPU))[0] == cuda
    provider, reason = choose_provider(hw, (CPU,))
    assert provider == cpu_only
    if hw.gpus and hw.gpus[0].vendor == "nvidia":
        assert "onnxruntime-gpu" in reason and "NVIDIA" in reason


def test_every_profile_is_in_the_table():
    assert set(localllm.list_profiles()) <= set(PROFILE_TABLE), "add new profiles to PROFILE_TABLE"


def test_provider_choice_by_hand():
    win_gpu = Hardware(os="windows", cpu=CPUInfo(vendor="AMD"), gpus=(GPUInfo(0, "amd", "Radeon 780M"),))
    assert choose_provider(win_gpu, ("DmlExecutionProvider", CPU))[0] == "DmlExecutionProvider"
    intel_npu = Hardware(
        os="linux", cpu=CPUInfo(vendor="AuthenticAMD"), accelerators=(Accelerator("npu", "Intel NPU (Meteor Lake)"),)
    )
    assert choose_provider(intel_npu, ("OpenVINOExecutionProvider", CPU)) == (
        "OpenVINOExecutionProvider",
        "Intel NPU: OpenVINO (available in this onnxruntime)",
    )
    plain = Hardware(os="linux", cpu=CPUInfo(vendor="AuthenticAMD", physical_cores=8))
    provider, reason = choose_provider(plain, ALL)
    assert provider == CPU and "8 cores" in reason and "no GPU" in reason
    # without an explicit list the probe's runtime facts are used, else CPU only is assumed
    nvidia = Hardware(
        gpus=(GPUInfo(0, "nvidia", "RTX 4090"),),
        runtimes=(RuntimeInfo("onnxruntime", True, providers=("CUDAExecutionProvider", CPU)),),
    )
    assert choose_provider(nvidia)[0] == "CUDAExecutionProvider"
    assert choose_provider(Hardware(gpus=(GPUInfo(0, "nvidia", "RTX 4090"),)))[0] == CPU


def test_provider_chain_falls_back_to_cpu(tmp_path):
    chain = provider_chain("TensorrtExecutionProvider", device_id=1, cache_dir=tmp_path)
    assert [p if isinstance(p, str) else p[0] for p in chain] == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        CPU,
    ]
    assert chain[0][1]["trt_engine_cache_enable"] and chain[1][1] == {"device_id": 1}
    assert provider_chain(CPU) == [CPU]
    assert provider_chain("CoreMLExecutionProvider") == ["CoreMLExecutionProvider", CPU]
