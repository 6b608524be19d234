"""Catalog sizes that are estimates become the Hub's exact figures once a file came down verified."""

from __future__ import annotations

import hashlib
import json

from localllm import catalog_facts, store
from localllm.catalog import load_catalog
from localllm.testing.hub import FakeHub


def test_a_verified_download_puts_the_hubs_size_and_sha256_in_the_catalog(monkeypatch, tiny_gguf):
    name = "qwen2.5-0.5b-instruct:q4_k_m"
    before = load_catalog().find(name)
    assert before.size_estimated and before.sha256 is None  # the premise: an estimate, no hash
    content = tiny_gguf.read_bytes()
    with FakeHub() as hub:
        hub.add_file(before.repo, before.filename, content)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        got = store.pull(before)
    assert got.verified_by == "hub" and got.source == "hub"
    after = load_catalog().find(name)
    sha = hashlib.sha256(content).hexdigest()
    assert (after.size, after.sha256, after.size_estimated) == (len(content), sha, False)
    assert load_catalog().find("qwen2.5-0.5b-instruct:q8_0").size_estimated  # only that file changed
    assert store.resolve(after) == got.path  # the file is held to its figures, and meets them
    # the figures are kept per user, beside the cache; a broken file of them is ignored, not fatal
    kept = json.loads(catalog_facts.facts_path().read_text())
    assert kept["files"][f"{before.repo}::{before.filename}"]["size"] == len(content)
    catalog_facts.facts_path().write_text("{not json")
    assert load_catalog().find(name).size_estimated


def test_a_catalog_given_by_path_is_taken_as_written(tmp_path):
    catalog_facts.record("bartowski/Qwen2.5-0.5B-Instruct-GGUF", "Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", 123, "a" * 64)
    bundled = load_catalog()
    own = load_catalog(bundled.path)
    v = "qwen2.5-0.5b-instruct:q4_k_m"
    assert bundled.find(v).size == 123 and own.find(v).size_estimated
