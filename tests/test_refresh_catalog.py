"""tools/refresh_catalog.py against a fake Hub on 127.0.0.1: sizes and hashes rewritten in place."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import pytest

from localllm.catalog import load_catalog
from localllm.testing.hub import FakeHub

REPO = Path(__file__).resolve().parents[1]

CATALOG = """\
# a small catalog for the refresh tool
schema = 1

[quants.Q4_K_M]
ppl_delta = 0.1754
source = "llama.cpp quantize QUANT_OPTIONS"

[families."tiny-chat"]
display_name = "Tiny Chat"
arch = "llama"
n_layer = 2
n_head = 2
n_head_kv = 2
head_dim = 4
n_embd = 8
n_ctx_train = 64
n_vocab = 32
quality = 1.0
quality_source = "none"
license = "mit"
gguf_repo = "someone/Tiny-Chat-GGUF"
gguf_filename = "Tiny-Chat-{quant}.gguf"

# -- variants (this comment stays) --
[[variants]]
family = "tiny-chat"
quant = "Q4_K_M"
size = 1000  # close to the real file
size_estimated = true

[[variants]]
family = "tiny-chat"
quant = "Q8_0"
size = 100
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"

[[variants]]
family = "tiny-chat"
quant = "Q2_K"
size = 500
size_estimated = true

[[variants]]
family = "tiny-chat"
quant = "F32"
size = 3
path = "starter/whatever.gguf"
"""


def _tool():
    spec = importlib.util.spec_from_file_location("refresh_catalog", REPO / "tools" / "refresh_catalog.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["refresh_catalog"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def hub():
    with FakeHub() as h:
        h.add_file("someone/Tiny-Chat-GGUF", "Tiny-Chat-Q4_K_M.gguf", b"q" * 1010)
        h.add_file("someone/Tiny-Chat-GGUF", "Tiny-Chat-Q8_0.gguf", b"8" * 2000)
        yield h


def test_refresh_rewrites_sizes_and_hashes_in_place_and_reports_what_is_missing(tmp_path, hub, capsys):
    path = tmp_path / "models.toml"
    path.write_text(CATALOG, encoding="utf-8")
    rc = _tool().main(["--catalog", str(path), "--endpoint", hub.url])
    err = capsys.readouterr().err
    assert rc == 1  # a file was missing
    assert "missing on the Hub: someone/Tiny-Chat-GGUF/Tiny-Chat-Q2_K.gguf (tiny-chat:q2_k)" in err
    assert "size moved: tiny-chat:q8_0: 100 -> 2,000" in err and "tiny-chat:q4_k_m" not in err.split("moved")[-1]
    assert "sha256 changed: tiny-chat:q8_0" in err

    new = path.read_text(encoding="utf-8")
    assert "# a small catalog for the refresh tool" in new and "# -- variants (this comment stays) --" in new
    commit = hub.repos["someone/Tiny-Chat-GGUF"].commit[:7]
    cat = load_catalog(path)
    q4, q8, q2, packaged = cat.variants
    assert (q4.size, q4.sha256, q4.size_estimated) == (1010, hashlib.sha256(b"q" * 1010).hexdigest(), False)
    assert (q8.size, q8.sha256) == (2000, hashlib.sha256(b"8" * 2000).hexdigest())
    assert (q2.size, q2.size_estimated, q2.sha256) == (500, True, None)  # missing: left as it was
    assert (packaged.size, packaged.sha256) == (3, None)
    assert new.count(f'size_source = "Hub listing someone/Tiny-Chat-GGUF@{commit}"') == 2
    assert "size = 1010  # close" not in new  # the value is replaced whole, comment and all
    # one listing per repository, not one per file
    assert len([r for r in hub.api_requests() if "/api/models/someone/Tiny-Chat-GGUF" in r[1]]) == 1
    # a second run changes nothing more
    before = path.read_text(encoding="utf-8")
    _tool().main(["--catalog", str(path), "--endpoint", hub.url])
    assert path.read_text(encoding="utf-8") == before


def test_dry_run_prints_the_diff_and_writes_nothing(tmp_path, hub, capsys):
    path = tmp_path / "models.toml"
    path.write_text(CATALOG, encoding="utf-8")
    _tool().main(["--catalog", str(path), "--endpoint", hub.url, "--dry-run"])
    out = capsys.readouterr().out
    assert path.read_text(encoding="utf-8") == CATALOG
    assert "-size = 1000  # close to the real file" in out and "+size = 1010" in out
    assert "-size_estimated = true" in out and f'+sha256 = "{hashlib.sha256(b"q" * 1010).hexdigest()}"' in out


def test_an_unknown_repository_is_reported_not_fatal(tmp_path, capsys):
    path = tmp_path / "models.toml"
    path.write_text(CATALOG, encoding="utf-8")
    with FakeHub() as empty:
        rc = _tool().main(["--catalog", str(path), "--endpoint", empty.url])
    assert rc == 1 and "repository not listed: someone/Tiny-Chat-GGUF" in capsys.readouterr().err
    assert path.read_text(encoding="utf-8") == CATALOG


def test_catalog_sizes_keeps_refreshed_and_foreign_entries_when_it_regenerates(tmp_path, hub):
    """After a refresh, `tools/catalog_sizes.py --write` keeps the Hub's numbers and any entry
    it does not generate itself (another quant, a package-index variant) instead of recomputing."""
    spec = importlib.util.spec_from_file_location("catalog_sizes", REPO / "tools" / "catalog_sizes.py")
    sizes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sizes)
    import tomllib

    text = (REPO / "localllm" / "data" / "models.toml").read_text(encoding="utf-8")
    families = tomllib.loads(text)["families"]
    refreshed = text.replace(
        'family = "qwen3-4b"\nquant = "Q4_K_M"\nsize = ',
        'family = "qwen3-4b"\nquant = "Q4_K_M"\nsize_source = "Hub listing x@1234567"\nsize = 1\n# was ',
    )
    foreign = '[[variants]]\nfamily = "qwen3-4b"\nquant = "Q4_1"\nsize = 7\n\n# END GENERATED VARIANTS'
    refreshed = refreshed.replace("# END GENERATED VARIANTS", foreign)
    block = sizes.variants_block(families, refreshed)
    assert 'size_source = "Hub listing x@1234567"\nsize = 1\n' in block
    assert 'quant = "Q4_1"\nsize = 7' in block
    # the foreign entry moves next to its family once; after that, regenerating changes nothing
    start, end = refreshed.index("# BEGIN GENERATED"), refreshed.index("# END GENERATED")
    written = refreshed[: refreshed.index("\n", start) + 1] + block + refreshed[end:]
    assert sizes.variants_block(families, written) == block
    assert block.index('quant = "Q4_1"') < block.index('family = "gemma-3-1b-it"')
