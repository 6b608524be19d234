"""Builders of tiny real models for tests and benchmarks (numpy.testing style).

    from localllm.testing import write_llama_gguf, quantize_gguf, write_onnx_folder

GGUF files come from localllm.synthetic (the same writer `localllm bench --synthetic`
uses); ONNX folders from localllm.testing.onnx. numpy, gguf, onnx and tokenizers are
imported only when a builder is called.
"""
