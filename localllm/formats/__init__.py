"""Readers for the model file formats, shared by validation, the store and the runtimes.

gguf.py            a GGUF file's values (GGUFInfo, TensorInfo...) and its bounded parser
gguf_reader.py     the bounded reads under it: every length checked against what is left
gguf_rules.py      the checks llama.cpp's loader asserts, as plain functions
gguf_tokenizer.py  the checks llama.cpp's tokenizer needs of a vocabulary
onnx_folder.py     an ONNX model folder: layout, graph names, external data

What is refused, and the entry points (validate_model_path, validate_gguf), are in
localllm.validate.
"""
