"""Fixtures for localllm.hub: a FakeHub on 127.0.0.1 serving the real SmolLM2 file and a split model."""

from __future__ import annotations

from pathlib import Path

import pytest

from localllm.testing.hub import FakeHub

REPO = "tester/SmolLM2-135M-Instruct-GGUF"
SPLIT_REPO = "tester/tiny-split-GGUF"
SMOL_FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
TINY_FILE = "SmolLM2-135M-Instruct-Q2_K.gguf"  # a tiny model under a smaller quant's name


def write_split(src: Path, out: Path, per_part: int) -> list[Path]:
    """`src` rewritten as a split model (as gguf-split / convert_hf_to_gguf --split-max-tensors
    write one: split.no, split.count, split.tensors.count in every part, the rest in the first)."""
    from gguf import GGUFReader, GGUFValueType, GGUFWriter

    r = GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = GGUFWriter(out, arch=arch, split_max_tensors=per_part)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == GGUFValueType.ARRAY else None
        w.add_key_value(name, f.contents(), vtype, sub_type=sub)
    for t in r.tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return sorted(out.parent.glob(f"{out.stem}-*-of-*.gguf"))


@pytest.fixture(scope="session")
def split_parts(tiny_gguf, tmp_path_factory) -> list[Path]:
    """The tiny model split in 3 parts (tiny-split-0000N-of-00003.gguf)."""
    folder = tmp_path_factory.mktemp("split")
    n = _tensor_count(tiny_gguf)
    parts = write_split(tiny_gguf, folder / "tiny-split-F32.gguf", per_part=-(-n // 3))
    assert len(parts) == 3, parts
    return parts


def _tensor_count(p: Path) -> int:
    from gguf import GGUFReader

    return len(GGUFReader(p).tensors)


@pytest.fixture
def fake_hub(monkeypatch, smollm2_gguf, tiny_gguf, split_parts):
    """A FakeHub with the real SmolLM2 Q4_1 file, a tiny model named as a Q2_K, and a split repo."""
    with FakeHub() as hub:
        hub.add_file(REPO, SMOL_FILE, smollm2_gguf)
        hub.add_file(REPO, TINY_FILE, tiny_gguf)
        hub.add_file(REPO, "README.md", b"# SmolLM2\n", lfs=False)
        hub.add_file(REPO, "mmproj-SmolLM2-f16.gguf", tiny_gguf)
        for p in split_parts:
            hub.add_file(SPLIT_REPO, p.name, p)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        yield hub
