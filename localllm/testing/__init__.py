"""Builders of tiny real models for tests and benchmarks (numpy.testing style).

    from localllm.testing import Shape, write_llama_gguf, quantize_gguf, write_onnx_folder

- GGUF files: `write_llama_gguf`, `write_llama_weights`, `quantize_gguf` and the
  vocabularies `spm_vocab`, `tiny_vocab`, from localllm.synthetic (the same writer
  `localllm bench --synthetic` uses).
- ONNX folders: `write_onnx_folder`, its numpy twin `reference_decoder` /
  `ReferenceDecoder`, `build_tokenizer` and `build_decoder_graph`, from localllm.testing.onnx.
- `Shape`: the model dimensions both take (`SHAPES` holds real models' shapes).
- A chat model double for UI tests and benchmarks: `FakeChatModel` streams a reply at a set
  token rate; `markdown_reply` writes a realistic Markdown reply of a given length
  (localllm.testing.fake_chat).

Importing this is cheap: numpy, gguf, onnx, tokenizers and llama_cpp are imported only
when a builder is called.
"""

from __future__ import annotations

from localllm.synthetic import (
    SHAPES,
    Shape,
    quantize_gguf,
    spm_vocab,
    tiny_vocab,
    write_llama_gguf,
    write_llama_weights,
)
from localllm.testing.fake_chat import FakeChatModel, markdown_reply, split_tokens
from localllm.testing.onnx import (
    ReferenceDecoder,
    build_decoder_graph,
    build_tokenizer,
    reference_decoder,
    write_onnx_folder,
)

__all__ = [
    "SHAPES",
    "FakeChatModel",
    "ReferenceDecoder",
    "Shape",
    "build_decoder_graph",
    "build_tokenizer",
    "markdown_reply",
    "quantize_gguf",
    "reference_decoder",
    "spm_vocab",
    "split_tokens",
    "tiny_vocab",
    "write_llama_gguf",
    "write_llama_weights",
    "write_onnx_folder",
]
