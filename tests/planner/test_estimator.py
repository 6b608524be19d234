"""Memory arithmetic: KV cache, compute buffers, the host/GPU split, decode speed."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from localllm.catalog import Family, Variant, load_catalog
from localllm.estimator import (
    HOST_RUNTIME_OVERHEAD,
    compute_buffer_bytes,
    decode_tokens_per_second,
    estimate,
    kv_cache_bytes,
    weight_split,
)


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


def test_kv_cache_per_token_matches_the_formula(cat):
    falcon = cat.find("falcon-7b-instruct")
    phi = cat.find("phi-3.5-mini-instruct")
    # 2 · n_layer · n_head_kv · head_dim · 2 bytes: Falcon 8 KiB/token, Phi-3.5 384 KiB/token
    assert kv_cache_bytes(falcon, 1024) == 1024 * 8 * 1024
    assert kv_cache_bytes(phi, 1024) == 1024 * 384 * 1024
    assert kv_cache_bytes(phi, 1024, "q8_0") == int(1024 * 384 * 1024 * 34 / 32 / 2)
    assert kv_cache_bytes(phi, 1024, "q4_0") == int(1024 * 384 * 1024 * 18 / 32 / 2)
    with pytest.raises(ValueError, match="q3_0"):
        kv_cache_bytes(phi, 1024, "q3_0")


def test_sliding_window_layers_hold_only_their_window_when_asked(cat):
    g = cat.find("gemma-2-2b-it")
    full = kv_cache_bytes(g, 8192, swa_full=True)
    iswa = kv_cache_bytes(g, 8192, swa_full=False)
    per_layer_full = full // 26
    # 13 global layers keep 8192 cells, 13 sliding layers 4096 + one ubatch (512)
    assert iswa == 13 * per_layer_full + 13 * per_layer_full * (4096 + 512) // 8192
    assert kv_cache_bytes(g, 2048, swa_full=False) == kv_cache_bytes(g, 2048)  # window larger than context


def test_compute_buffer_grows_with_vocab_batch_and_without_flash_attention(cat):
    g = cat.find("gemma-2-2b-it")
    q = cat.find("qwen2.5-0.5b-instruct")
    assert compute_buffer_bytes(g, n_ctx=4096) > compute_buffer_bytes(q, n_ctx=4096)  # 256k vs 152k vocab
    assert compute_buffer_bytes(g, n_ctx=4096, n_ubatch=256) < compute_buffer_bytes(g, n_ctx=4096)
    phi = cat.find("phi-3.5-mini-instruct")
    assert compute_buffer_bytes(phi, n_ctx=16384, flash_attn=True) < compute_buffer_bytes(phi, n_ctx=16384)


def test_weight_split_adds_up_to_the_file(cat):
    for name in ("falcon-7b-instruct:q4_k_m", "llama-3.2-1b-instruct:q8_0", "qwen2.5-0.5b-instruct:f16"):
        v = cat.find(name)
        embd, layer, out = weight_split(v)
        in_file = embd + (0 if v.family.tied_embeddings else out) + layer * v.family.n_layer
        assert 0.99 * v.size <= in_file <= v.size


def test_layers_go_to_the_gpu_from_the_end_and_the_output_last(cat):
    v = cat.find("llama-3.1-8b-instruct:q4_k_m")
    L = v.family.n_layer
    cpu_only = estimate(v, n_ctx=4096)
    assert [d.device for d in cpu_only.devices] == ["cpu"]
    all_layers = estimate(v, n_ctx=4096, n_gpu_layers=L)
    with_output = estimate(v, n_ctx=4096, n_gpu_layers=L + 1)
    embd, layer, out = weight_split(v)
    assert all_layers.device("gpu0").weights == L * layer
    assert with_output.device("gpu0").weights == L * layer + out
    assert with_output.host.weights == embd  # the token embedding stays on the host
    assert all_layers.host.weights == embd + out
    assert with_output.host.kv_cache == 0 and with_output.device("gpu0").kv_cache == cpu_only.host.kv_cache


def test_tied_embeddings_are_duplicated_for_a_gpu_output(cat):
    v = cat.find("llama-3.2-1b-instruct:q4_k_m")
    embd, layer, out = weight_split(v)
    e = estimate(v, n_ctx=2048, n_gpu_layers=v.family.n_layer + 1)
    assert e.host.weights == embd and e.device("gpu0").weights == v.family.n_layer * layer + embd


def test_two_gpus_share_the_layers_by_weight(cat):
    v = cat.find("llama-3.1-8b-instruct:q8_0")
    e = estimate(v, n_ctx=4096, n_gpu_layers=33, gpu_shares=(3.0, 1.0))
    assert e.device("gpu0").n_layers == 24 and e.device("gpu1").n_layers == 8
    assert e.device("gpu1").weights > 8 * weight_split(v)[1]  # the output went to the last GPU


def test_estimate_covers_the_measured_peak_rss(cat):
    """benchmarks/estimator_accuracy.py: a random Llama-3.2-1B-shaped Q4_K_M (799,862,784 tensor bytes) peaked
    at 955,654,144 bytes RSS (VmHWM) at n_ctx 2048 with localllm's runtime, flash attention on (the CPU plan).
    (DESIGN.md's ~1.5 GB was raw llama-cpp-python, whose Llama class keeps n_ctx x n_vocab scores.)"""
    v = dataclasses.replace(cat.find("llama-3.2-1b-instruct:q4_k_m"), size=799_862_784)
    need = estimate(v, n_ctx=2048, flash_attn=True).total
    measured = 955_654_144
    assert measured <= need <= measured + max(0.10 * measured, 100 * 2**20)
    assert HOST_RUNTIME_OVERHEAD < 0.3e9


def test_decode_speed_is_bandwidth_over_bytes_per_token(cat):
    v = cat.find("qwen2.5-7b-instruct:q4_k_m")
    e = estimate(v, n_ctx=4096, n_gpu_layers=v.family.n_layer + 1)
    tps, basis = decode_tokens_per_second(v, e, cpu_bandwidth_gbs=50, gpu_bandwidth_gbs=(1000.0,))
    read = e.device("gpu0").weights + e.device("gpu0").kv_cache // 2
    assert tps == pytest.approx(0.7 * 1000e9 / read, rel=0.01)
    assert "1000 GB/s" in basis
    slow, _ = decode_tokens_per_second(v, e, cpu_bandwidth_gbs=50, gpu_bandwidth_gbs=(500.0,))
    assert slow == pytest.approx(tps / 2, rel=0.01)
    none, why = decode_tokens_per_second(v, e, cpu_bandwidth_gbs=None, gpu_bandwidth_gbs=(None,))
    assert none is None and "unknown" in why
    cpu = estimate(v, n_ctx=4096)
    two, _ = decode_tokens_per_second(v, cpu, cpu_bandwidth_gbs=200, cpu_threads=2)
    eight, _ = decode_tokens_per_second(v, cpu, cpu_bandwidth_gbs=200, cpu_threads=8)
    assert two < eight  # few threads cannot use the whole bus


# -- counts from a hostile header (issue 12): no loop over, no division by, a file's numbers --------


def _family(**kw) -> Family:
    base = dict(
        name="x",
        display_name="x",
        arch="llama",
        n_layer=2,
        n_head=4,
        n_head_kv=2,
        head_dim=16,
        n_embd=64,
        n_ctx_train=2048,
        n_vocab=554,
        n_ff=128,
    )
    return Family(**{**base, **kw})


def _finishes(fn, seconds: float = 10.0):
    done: list = []
    t = threading.Thread(target=lambda: done.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert done, f"did not finish in {seconds} s"
    return done[0]


def test_kv_cache_is_counted_without_walking_the_layers():
    """block_count = 2^31-1 once made kv_cache_bytes step through every layer in Python."""
    per_cell = 2 * 2 * 16 * 2  # K and V, 2 KV heads of 16, f16
    huge = _family(n_layer=2**31 - 1)
    assert _finishes(lambda: kv_cache_bytes(huge, 1024)) == (2**31 - 1) * 1024 * per_cell
    sliding = _family(n_layer=2**32 - 1, sliding_window=4096, sliding_window_pattern=6, arch="gemma3")
    n_global = (2**32 - 1) // 6  # layers 5, 11, 17, ... keep the whole context
    assert kv_cache_bytes(sliding, 8192, swa_full=True) == (2**32 - 1) * 8192 * per_cell
    iswa = _finishes(lambda: kv_cache_bytes(sliding, 8192, swa_full=False))
    assert iswa == n_global * 8192 * per_cell + (2**32 - 1 - n_global) * (4096 + 512) * per_cell


@pytest.mark.parametrize("pattern", [None, 1, 2, 6])
def test_kv_cache_counts_sliding_layers_as_the_per_layer_rule_does(pattern):
    f = _family(n_layer=26, sliding_window=1024, sliding_window_pattern=pattern, arch="gemma2")
    per_cell = 2 * 2 * 16 * 2
    ctx, window = 4096, 1024 + 512  # padded to 256: both already are
    for start in range(0, 27, 3):
        for stop in range(start, 27, 2):
            for step in (1, 2, 3):
                layers = range(start, stop, step)
                want = sum((window if f.is_sliding_layer(i) else ctx) * per_cell for i in layers)
                assert kv_cache_bytes(f, ctx, layers=layers, swa_full=False) == want, (layers, pattern)
                assert kv_cache_bytes(f, ctx, layers=layers[::-1], swa_full=False) == want


def test_weight_split_and_estimate_survive_zero_layers():
    """block_count = 0 once raised ZeroDivisionError in weight_split."""
    v = Variant(family=_family(n_layer=0), quant="local", size=10**6)
    embd, layer, out = weight_split(v)
    assert layer == 0 and embd > 0 and out > 0
    assert estimate(v, n_ctx=512).total > 0


# -- issue 14: the new architectures, from the headers llama.cpp's converter writes ---------------


def _header(f: Family, **extra) -> dict:
    """The `{arch}.*` keys convert_hf_to_gguf.py writes for a family (head size as key_length)."""
    a = f.arch
    meta = {
        "general.architecture": a,
        f"{a}.block_count": f.n_layer,
        f"{a}.embedding_length": f.n_embd,
        f"{a}.feed_forward_length": f.n_ff,
        f"{a}.attention.head_count": f.n_head,
        f"{a}.attention.head_count_kv": f.n_head_kv,
        f"{a}.attention.key_length": f.head_dim,
        f"{a}.attention.value_length": f.head_dim,
        f"{a}.context_length": f.n_ctx_train,
        f"{a}.vocab_size": f.n_vocab,
    }
    if f.sliding_window:
        meta[f"{a}.attention.sliding_window"] = f.sliding_window
    return meta | {f"{a}.{k}": v for k, v in extra.items()}


@pytest.mark.parametrize(
    ("name", "extra", "n_sliding"),
    [
        ("qwen3-1.7b", {}, 0),  # head_dim 128 from key_length, not 2048 / 16
        ("qwen3-0.6b", {}, 0),  # 1024 / 16 would be 64
        ("gemma-3-1b-it", {}, 22),  # 26 layers, global at 5, 11, 17, 23
        ("gemma-3-4b-it", {}, 29),  # 34 layers, global at 5, 11, 17, 23, 29
        ("phi-4-mini-instruct", {"attention.sliding_window": 262144}, 0),  # llama.cpp disables Phi SWA
        ("smollm3-3b", {}, 0),
    ],
)
def test_a_new_architectures_header_gives_the_catalogs_family(cat, name, extra, n_sliding):
    from localllm.catalog import family_from_gguf_metadata

    want = cat.find(name)
    got = family_from_gguf_metadata(_header(want, **extra), name=name, tied_embeddings=want.tied_embeddings)
    keys = ("arch", "n_layer", "n_head", "n_head_kv", "head_dim", "n_embd", "n_ff", "n_vocab", "tied_embeddings")
    assert {k: getattr(got, k) for k in keys} == {k: getattr(want, k) for k in keys}
    assert (got.sliding_window, got.sliding_window_pattern) == (want.sliding_window, want.sliding_window_pattern)
    assert got.n_sliding_layers == want.n_sliding_layers == n_sliding
    assert [got.is_sliding_layer(i) for i in range(got.n_layer)] == [
        want.is_sliding_layer(i) for i in range(want.n_layer)
    ]
    for swa_full in (True, False):
        assert kv_cache_bytes(got, 8192, swa_full=swa_full) == kv_cache_bytes(want, 8192, swa_full=swa_full)
    assert got.n_params == want.n_params


def test_gemma3_local_layers_hold_only_their_window_when_asked(cat):
    g = cat.find("gemma-3-1b-it")
    per_cell = 2 * g.n_head_kv * g.head_dim * 2
    full = kv_cache_bytes(g, 32768)
    assert full == g.n_layer * 32768 * per_cell  # swa_full (llama-cpp-python's default): every layer whole
    swa = kv_cache_bytes(g, 32768, swa_full=False)
    assert swa == 4 * 32768 * per_cell + 22 * 1024 * per_cell  # window 512 + n_ubatch 512, padded to 256


NEW_SMALL = ["qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "gemma-3-1b-it", "gemma-3-4b-it"]
NEW_SMALL += ["phi-4-mini-instruct", "smollm3-3b"]


@pytest.mark.parametrize("name", NEW_SMALL)
def test_the_new_families_plan_on_an_8gb_laptop(name):
    from localllm.hardware.detect import load_profile
    from localllm.planner import plan

    p = plan(name, hardware=load_profile("laptop-x86-8gb"))
    assert p.fits and p.variant.family.name == name and p.variant.format == "gguf"
    assert p.memory.total >= p.variant.size  # the weights are in the estimate
    assert p.placement.n_ctx >= 2048
