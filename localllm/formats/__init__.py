"""Readers for the model file formats, shared by validation, the store and the runtimes.

gguf_rules.py   the checks llama.cpp's loader asserts, as plain functions
onnx_folder.py  an ONNX model folder: layout, graph names, external data
"""
