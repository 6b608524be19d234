"""Data that ships with localllm: models.toml (the catalog) and profiles/ (real devices).

Read with importlib.resources (see localllm.resources); no code lives here.
"""
