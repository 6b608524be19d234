"""The model catalog: facts as published, name resolution, errors with file and line."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from localllm.catalog import QUANT_ORDER, Family, Variant, family_from_gguf_metadata, load_catalog
from localllm.errors import CatalogError, ModelNotFoundError
from localllm.validate import validate_gguf

REPO = Path(__file__).resolve().parents[2]

# issue 3's table of public config values
ARCH = {
    "falcon-7b-instruct": (32, 71, 1, 64, 4544, 2048, 65024, False),
    "llama-3.2-1b-instruct": (16, 32, 8, 64, 2048, 131072, 128256, True),
    "llama-3.2-3b-instruct": (28, 24, 8, 128, 3072, 131072, 128256, True),
    "llama-3.1-8b-instruct": (32, 32, 8, 128, 4096, 131072, 128256, False),
    "qwen2.5-0.5b-instruct": (24, 14, 2, 64, 896, 32768, 151936, True),
    "qwen2.5-1.5b-instruct": (28, 12, 2, 128, 1536, 32768, 151936, True),
    "qwen2.5-3b-instruct": (36, 16, 2, 128, 2048, 32768, 151936, True),
    "qwen2.5-7b-instruct": (28, 28, 4, 128, 3584, 32768, 152064, False),
    "phi-3.5-mini-instruct": (32, 32, 32, 96, 3072, 131072, 32064, False),
    "mistral-7b-instruct-v0.3": (32, 32, 8, 128, 4096, 32768, 32768, False),
    "gemma-2-2b-it": (26, 8, 4, 256, 2304, 8192, 256000, True),
    "smollm2-135m-instruct": (30, 9, 3, 64, 576, 8192, 49152, True),
    "smollm2-360m-instruct": (32, 15, 5, 64, 960, 8192, 49152, True),
    "smollm2-1.7b-instruct": (24, 32, 32, 64, 2048, 8192, 49152, True),
    "tinyllama-1.1b-chat": (22, 32, 4, 64, 2048, 2048, 32000, False),
    # issue 14: config.json values (Qwen3-0.6B/1.7B's GGUFs carry output.weight: untied in the file)
    "qwen3-0.6b": (28, 16, 8, 128, 1024, 40960, 151936, False),
    "qwen3-1.7b": (28, 16, 8, 128, 2048, 40960, 151936, False),
    "qwen3-4b": (36, 32, 8, 128, 2560, 40960, 151936, True),
    "qwen3-8b": (36, 32, 8, 128, 4096, 40960, 151936, False),
    "gemma-3-1b-it": (26, 4, 1, 256, 1152, 32768, 262144, True),
    "gemma-3-4b-it": (34, 8, 4, 256, 2560, 131072, 262144, True),
    "phi-4-mini-instruct": (32, 24, 8, 128, 3072, 131072, 200064, True),
    "smollm3-3b": (36, 16, 4, 128, 2048, 65536, 128256, True),
}
# families whose repositories publish bf16, not f16, as the 16-bit file: no F16 variant
NO_F16 = {"qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "gemma-3-1b-it", "gemma-3-4b-it"} | {
    "phi-4-mini-instruct",
    "smollm3-3b",
}


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


@pytest.mark.parametrize("name", sorted(ARCH))
def test_architecture_facts_match_the_published_configs(cat, name):
    f = cat.find(name)
    assert isinstance(f, Family)
    got = (f.n_layer, f.n_head, f.n_head_kv, f.head_dim, f.n_embd, f.n_ctx_train, f.n_vocab, f.tied_embeddings)
    assert got == ARCH[name]
    assert f.quality is not None and f.quality_source and f.license


def test_every_family_has_the_eight_gguf_quants_with_source_and_size(cat):
    # every published family; the packaged starter model has one hand-written variant
    published = [f for f in cat.families if not all(v.packaged for v in cat.variants_of(f))]
    assert len(published) == len(ARCH) == len(cat.families) - 1
    for f in published:
        # ONNX variants and files from other sources in other quants (SmolLM2's Q4_1 wheel) are extra
        vs = [v for v in cat.variants_of(f) if v.format == "gguf" and v.quant in QUANT_ORDER]
        expected = tuple(q for q in QUANT_ORDER if not (q == "F16" and f.name in NO_F16))
        assert tuple(v.quant for v in vs) == expected, f.name
        sizes = [v.size for v in vs]
        assert sizes[-1] == max(sizes) and sizes[0] == min(sizes)  # F16 (or Q8_0) largest, Q2_K smallest
        for v in vs:
            assert v.repo and v.filename and v.filename.endswith(".gguf") and "{" not in v.filename
            assert v.penalty_source and "llama.cpp" in v.penalty_source


def test_gemma2_head_dim_is_not_hidden_over_heads_and_half_its_layers_slide(cat):
    g = cat.find("gemma-2-2b-it")
    assert g.head_dim == 256 != g.n_embd // g.n_head
    assert g.sliding_window == 4096 and g.n_sliding_layers == 13
    assert g.is_sliding_layer(0) and not g.is_sliding_layer(1)


def test_quality_falls_with_the_quant_penalty(cat):
    vs = cat.variants_of("llama-3.1-8b-instruct")
    by = {v.quant: v for v in vs}
    assert by["Q2_K"].quality < by["Q4_K_M"].quality < by["Q6_K"].quality < by["Q8_0"].quality
    assert by["Q2_K"].quality < cat.find("llama-3.2-3b-instruct:q4_k_m").quality  # 8B at 2 bits ranks below 3B at 4


@pytest.mark.parametrize(
    "query, expected",
    [
        ("qwen2.5-1.5b-instruct:q4_k_m", "qwen2.5-1.5b-instruct:q4_k_m"),
        ("Qwen2.5-1.5B-Instruct:Q4_K_M", "qwen2.5-1.5b-instruct:q4_k_m"),
        ("falcon-7b:fp16", "falcon-7b-instruct:f16"),
        ("falcon-7b", "falcon-7b-instruct"),
        ("Gemma 2 2B Instruct", "gemma-2-2b-it"),
    ],
)
def test_find_resolves_names(cat, query, expected):
    found = cat.find(query)
    assert found.name == expected
    assert isinstance(found, Variant if ":" in expected else Family)


def test_unknown_model_suggests_near_names(cat):
    with pytest.raises(ModelNotFoundError) as e:
        cat.find("qwen2.5-1.5b-instrukt")
    assert "qwen2.5-1.5b-instruct" in str(e.value)
    assert "qwen2.5-1.5b-instruct" in e.value.suggestions
    assert isinstance(e.value, LookupError)


def test_ambiguous_prefix_lists_the_candidates(cat):
    with pytest.raises(ModelNotFoundError) as e:
        cat.find("llama")
    assert "llama-3.2-1b-instruct" in str(e.value) and "llama-3.1-8b-instruct" in str(e.value)


def test_unknown_quant_lists_the_available_ones(cat):
    with pytest.raises(ModelNotFoundError) as e:
        cat.find("falcon-7b:q9_9")
    msg = str(e.value)
    assert "q9_9" in msg and "q4_0" in msg and "q8_0" in msg and "f16" in msg


GOOD_FAMILY = """
[families."tiny-starter"]
display_name = "Tiny starter"
arch = "llama"
n_layer = 2
n_head = 4
n_head_kv = 2
head_dim = 16
n_embd = 64
n_ctx_train = 512
n_vocab = 256
quality = 1.0
quality_source = "none: a test model"
"""


def test_malformed_toml_names_file_and_line(tmp_path):
    p = tmp_path / "models.toml"
    p.write_text(GOOD_FAMILY + "n_ff = = 3\n", encoding="utf-8")
    with pytest.raises(CatalogError) as e:
        load_catalog(p)
    line = GOOD_FAMILY.count("\n") + 1
    assert e.value.line == line and e.value.path == str(p)
    assert f"{p}:{line}" in str(e.value)


def test_missing_fact_names_the_family_and_its_line(tmp_path):
    p = tmp_path / "models.toml"
    p.write_text(GOOD_FAMILY.replace("head_dim = 16\n", ""), encoding="utf-8")
    with pytest.raises(CatalogError) as e:
        load_catalog(p)
    assert "head_dim" in str(e.value) and e.value.line == 2


def test_variant_of_unknown_family_is_an_error(tmp_path):
    p = tmp_path / "models.toml"
    p.write_text(
        GOOD_FAMILY + '\n[[variants]]\nfamily = "nope"\nquant = "Q8_0"\nsize = 10\nrepo = "a/b"\n', encoding="utf-8"
    )
    with pytest.raises(CatalogError, match="unknown family 'nope'") as e:
        load_catalog(p)
    assert e.value.line == GOOD_FAMILY.count("\n") + 2


def test_a_packaged_starter_variant_has_a_path_instead_of_a_repo(tmp_path):
    p = tmp_path / "models.toml"
    p.write_text(
        GOOD_FAMILY + '\n[[variants]]\nfamily = "tiny-starter"\nquant = "Q8_0"\nsize = 123456\n'
        'path = "starter/tiny-starter-q8_0.gguf"\n',
        encoding="utf-8",
    )
    cat = load_catalog(p)
    v = cat.find("tiny-starter:q8_0")
    assert v.packaged and v.repo is None and v.path == "starter/tiny-starter-q8_0.gguf" and v.size == 123456


def test_catalog_is_cached_until_the_file_changes(tmp_path):
    p = tmp_path / "models.toml"
    p.write_text(GOOD_FAMILY, encoding="utf-8")
    a = load_catalog(p)
    assert load_catalog(p) is a
    p.write_text(GOOD_FAMILY.replace("Tiny starter", "Tiny starter 2") + "\n", encoding="utf-8")

    os.utime(p, ns=(1, 10**18))
    assert load_catalog(p).families[0].display_name == "Tiny starter 2"


def _sizes_tool():
    spec = importlib.util.spec_from_file_location("catalog_sizes", REPO / "tools" / "catalog_sizes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_size_estimates_match_published_sizes_within_half_a_percent(cat):
    tool = _sizes_tool()
    import tomllib

    families = tomllib.loads((REPO / "localllm" / "data" / "models.toml").read_text(encoding="utf-8"))["families"]
    for (fname, quant), (published, rounding, _) in tool.CHECKS.items():
        est, _ = tool.file_size(families[fname], quant)
        assert abs(est - published) <= max(0.005 * published, rounding), (fname, quant, est, published)


def test_published_sizes_are_the_files_own_byte_counts(cat):
    import tomllib

    raw = tomllib.loads((REPO / "localllm" / "data" / "models.toml").read_text(encoding="utf-8"))["variants"]
    source = {(r["family"], r["quant"]): r.get("size_source", "") for r in raw}
    # issue 11: the Hub's byte counts of these very files, not Ollama's all-layers total nor a rounded figure
    for name, size in (("llama-3.2-3b-instruct:q4_k_m", 2_019_377_696), ("qwen2.5-7b-instruct:q4_k_m", 4_683_074_240)):
        v = cat.find(name)
        assert (v.size, v.size_estimated) == (size, False), name
        assert "bartowski" in source[(v.family.name, v.quant)]
    # the cpu-int4-awq export keeps about 2.7 GB of weights in its .onnx.data file: an estimate, said so
    phi = next(v for v in cat.variants_of("phi-3.5-mini-instruct") if v.format == "onnx")
    assert "cpu-int4-awq" in phi.filename and phi.size_estimated
    assert 2.65e9 <= phi.size <= 2.8e9 and "2.7 GB" in source[(phi.family.name, phi.quant)]


def test_k_quant_fallbacks_for_rows_not_a_multiple_of_256():
    tool = _sizes_tool()
    falcon = {"arch": "falcon", "n_layer": 32, "n_head": 71, "n_head_kv": 1, "head_dim": 64}
    c = {"wv": 0, "down": 0}
    # attn_output rows are 4544 wide: Q4_K would be wrong, llama.cpp falls back to Q5_0
    assert (
        tool.tensor_type(falcon | {"tied_embeddings": False}, "Q4_K_M", "blk.0.attn_output.weight", 4544, 4544, c)
        == "Q5_0"
    )
    smol = {"arch": "llama", "n_layer": 30, "n_head": 9, "n_head_kv": 3, "tied_embeddings": True}
    assert tool.tensor_type(smol, "Q6_K", "blk.0.ffn_up.weight", 576, 1536, c) == "Q8_0"
    assert tool.tensor_type(smol, "Q2_K", "blk.0.attn_q.weight", 576, 576, c) == "IQ4_NL"
    # Falcon's Q4_K_M is much larger than its Q4_0 (about 5.5 bits per weight)
    cat = load_catalog()
    f = cat.find("falcon-7b-instruct")
    q4km = cat.find("falcon-7b-instruct:q4_k_m").size
    assert q4km > 1.15 * cat.find("falcon-7b-instruct:q4_0").size
    assert 5.3 < q4km * 8 / f.n_params < 5.7


def test_the_catalog_file_is_what_the_tool_writes():
    """models.toml's variants are regenerated by the tool, not edited by hand."""
    tool = _sizes_tool()
    import tomllib

    text = (REPO / "localllm" / "data" / "models.toml").read_text(encoding="utf-8")
    families = tomllib.loads(text)["families"]
    assert tool.variants_block(families, text) in text
    assert tool.variants_block(families) in text  # nothing hand-edited or refreshed yet: all computed


def test_family_from_gguf_metadata():
    meta = {
        "general.architecture": "gemma2",
        "general.name": "My Gemma",
        "gemma2.block_count": 26,
        "gemma2.attention.head_count": 8,
        "gemma2.attention.head_count_kv": 4,
        "gemma2.attention.key_length": 256,
        "gemma2.embedding_length": 2304,
        "gemma2.context_length": 8192,
        "gemma2.attention.sliding_window": 4096,
        "gemma2.feed_forward_length": 9216,
        "tokenizer.ggml.tokens": ["a"] * 300,
    }
    f = family_from_gguf_metadata(meta, name="local:my-gemma", tied_embeddings=True)
    assert (f.n_layer, f.n_head, f.n_head_kv, f.head_dim, f.n_embd, f.n_ctx_train, f.n_vocab) == (
        26,
        8,
        4,
        256,
        2304,
        8192,
        300,
    )
    assert f.sliding_window == 4096 and f.n_sliding_layers == 13 and f.tied_embeddings
    with pytest.raises(CatalogError, match="block_count"):
        family_from_gguf_metadata({"general.architecture": "llama"}, name="x")


def test_family_from_a_real_gguf_header(tiny_gguf):
    info = validate_gguf(tiny_gguf)
    f = family_from_gguf_metadata(
        info.metadata, name="tiny", tied_embeddings=not any(t.name == "output.weight" for t in info.tensors)
    )
    arch = info.architecture
    assert f.n_layer == info.metadata[f"{arch}.block_count"]
    assert f.n_embd == info.metadata[f"{arch}.embedding_length"]
    assert f.n_vocab > 0 and f.head_dim * f.n_head >= f.n_embd // 2


def test_every_variant_name_finds_that_variant_again():
    """What a plan prints (`variant.name`) is what `localllm pull NAME` and `load(NAME)` take back;
    an ONNX export is `family:onnx-QUANT`, so `:fp16` (GGUF F16) and `:onnx-fp16` are both reachable."""
    cat = load_catalog()
    for v in cat.variants:
        assert cat.find(v.name) is v, v.name
    qwen = "qwen2.5-0.5b-instruct"
    assert cat.find(f"{qwen}:fp16").format == "gguf" and cat.find(f"{qwen}:onnx-fp16").format == "onnx"
    assert cat.find(f"{qwen}:int8").name == f"{qwen}:onnx-int8"  # only the ONNX export has INT8
