"""parse_ref: the forms that name a Hub model, and everything else left alone."""

from __future__ import annotations

import pytest

from localllm.errors import ModelNotFoundError
from localllm.hub import HubRef, parse_ref, quant_of


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("hf.co/bartowski/Qwen2.5-1.5B-Instruct-GGUF", HubRef("bartowski/Qwen2.5-1.5B-Instruct-GGUF")),
        ("huggingface.co/o/r", HubRef("o/r")),
        ("https://huggingface.co/o/r", HubRef("o/r")),
        ("hf.co/o/r:q4_k_m", HubRef("o/r", quant="Q4_K_M")),
        ("hf.co/o/r:IQ4_XS", HubRef("o/r", quant="IQ4_XS")),
        ("hf.co/o/r:bf16@dev", HubRef("o/r", quant="BF16", revision="dev")),
        ("hf.co/o/r@dev:f16", HubRef("o/r", quant="F16", revision="dev")),
        ("o/r/model-Q8_0.gguf", HubRef("o/r", filename="model-Q8_0.gguf")),
        ("o/r/sub/m.gguf@abc", HubRef("o/r", filename="sub/m.gguf", revision="abc")),
        ("hf.co/o/r/m.gguf", HubRef("o/r", filename="m.gguf")),
        ("https://huggingface.co/o/r/blob/main/m.gguf", HubRef("o/r", filename="m.gguf")),
        ("https://huggingface.co/o/r/resolve/v1/m.gguf?download=true", HubRef("o/r", filename="m.gguf", revision="v1")),
    ],
)
def test_hub_forms(text, want):
    assert parse_ref(text) == want


@pytest.mark.parametrize(
    "text",
    [
        "qwen2.5-1.5b-instruct:q4_k_m",
        "auto",
        "./x.gguf",
        "/abs/x.gguf",
        "~/x.gguf",
        "x.gguf",
        "o/r",
        "https://example.com/a/b.gguf",
    ],
)
def test_other_names_are_not_hub_refs(text):
    assert parse_ref(text) is None


@pytest.mark.parametrize(
    "text", ["hf.co/onlyowner", "hf.co/o/r--x", "hf.co/o/-r", "hf.co/o/r:Q9_NOPE", "hf.co/o/r/README.md"]
)
def test_bad_hub_refs_say_the_rule(text):
    with pytest.raises(ModelNotFoundError):
        parse_ref(text)


def test_quant_from_file_names():
    assert quant_of("Qwen2.5-1.5B-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert quant_of("m.IQ2_XXS.gguf") == "IQ2_XXS"
    assert quant_of("gemma-3-4b-it-UD-Q4_K_XL.gguf") == "UD-Q4_K_XL"
    assert quant_of("model-bf16-00001-of-00002.gguf") == "BF16"
    assert quant_of("model.gguf") is None
