"""hub_pull: every part downloaded side by side, checked against the Hub's LFS sha256, then loaded."""

from __future__ import annotations

import pytest

import localllm
from localllm.errors import ChecksumMismatchError, InvalidModelError
from localllm.hardware.detect import load_profile
from localllm.hub import HubRef, hub_pull, plan_hub
from localllm.store.locations import cache_dir
from localllm.validate import validate_model_path
from tests.hub.conftest import REPO, SPLIT_REPO, TINY_FILE


def test_pull_verifies_the_lfs_sha256(fake_hub, tiny_gguf):
    plan = plan_hub(HubRef(REPO, quant="Q2_K"), hardware=load_profile("laptop-x86-16gb"))
    got = hub_pull(plan.variant)
    assert got.downloaded and got.verified_by == "hub" and got.path.read_bytes() == tiny_gguf.read_bytes()
    assert got.path == cache_dir() / REPO.replace("/", "--") / TINY_FILE


def test_pull_refuses_a_wrong_sha256(fake_hub, tiny_gguf):
    fake_hub.add_file(REPO, TINY_FILE, tiny_gguf, sha256="0" * 64)
    plan = plan_hub(HubRef(REPO, quant="Q2_K"), hardware=load_profile("laptop-x86-16gb"))
    with pytest.raises(ChecksumMismatchError):
        hub_pull(plan.variant)
    target = cache_dir() / REPO.replace("/", "--") / TINY_FILE
    assert not target.exists()


def test_split_pull_lands_side_by_side_and_loads(fake_hub, split_parts, one_core):
    plan = plan_hub(HubRef(SPLIT_REPO), hardware=load_profile("laptop-x86-16gb"))
    got = hub_pull(plan.variant)
    folder = cache_dir() / SPLIT_REPO.replace("/", "--")
    assert sorted(p.name for p in folder.glob("*.gguf")) == [p.name for p in split_parts]
    info = validate_model_path(got.path)
    assert info.n_tensors == sum(validate_model_path_part_count(p) for p in split_parts)
    model = localllm.load(got.path, hardware=one_core)
    try:
        out = model.generate("Hello", max_tokens=4, temperature=0.0)
    finally:
        model.close()
    assert isinstance(out.text, str)


def validate_model_path_part_count(p) -> int:
    from gguf import GGUFReader

    return len(GGUFReader(p).tensors)


def test_a_split_part_alone_is_refused(split_parts, tmp_path):
    import shutil

    for p in split_parts[:2]:
        shutil.copy(p, tmp_path / p.name)
    with pytest.raises(InvalidModelError, match="missing"):
        validate_model_path(tmp_path / split_parts[0].name)
    with pytest.raises(InvalidModelError, match="first part"):
        validate_model_path(tmp_path / split_parts[1].name)
