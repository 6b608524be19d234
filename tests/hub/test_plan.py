"""Planning a Hub model from its header, read with range requests from a FakeHub on 127.0.0.1."""

from __future__ import annotations

import time

import pytest

from localllm.errors import InvalidModelError, ModelNotFoundError, ModelUnavailableError
from localllm.hardware.detect import load_profile
from localllm.hub import HubRef, list_gguf, parse_ref, plan_hub
from localllm.resolve import plan_for
from localllm.testing.hub import FakeHub
from tests.hub.conftest import REPO, SMOL_FILE, SPLIT_REPO

MiB = 1024 * 1024


def test_plan_reads_only_headers_and_matches_the_local_plan(fake_hub, smollm2_gguf):
    hw = load_profile("laptop-x86-16gb")
    t0 = time.perf_counter()
    plan = plan_hub(parse_ref(f"hf.co/{REPO}"), hardware=hw)
    first_s = time.perf_counter() - t0
    sent, n_req = fake_hub.total_bytes_sent(), len(fake_hub.requests)
    assert sent < 8 * MiB, sent
    assert plan.variant.filename == SMOL_FILE  # the bigger quant fits: the best that fits
    assert plan.variant.repo == REPO and plan.variant.sha256 == fake_hub.repos[REPO].files[SMOL_FILE].sha256
    local = plan_for(smollm2_gguf, hardware=hw)
    assert (plan.needed, plan.memory) == (local.needed, local.memory)
    assert plan.placement == local.placement
    assert "SmolLM2" in plan.explain()

    fake_hub.reset_counts()
    t0 = time.perf_counter()
    again = plan_hub(parse_ref(f"hf.co/{REPO}:Q4_1"), hardware=hw, offline=True)
    cached_s = time.perf_counter() - t0
    assert fake_hub.requests == [] and again.needed == local.needed
    print(f"\nfirst plan: {sent:,} bytes in {n_req} requests, {first_s:.2f} s; cached plan {cached_s * 1000:.0f} ms")


def test_a_second_plan_online_makes_only_the_listing_request(fake_hub):
    hw = load_profile("laptop-x86-16gb")
    plan_hub(parse_ref(f"hf.co/{REPO}:Q4_1"), hardware=hw)
    fake_hub.reset_counts()
    plan_hub(parse_ref(f"hf.co/{REPO}:Q4_1"), hardware=hw)
    assert fake_hub.file_requests() == [] and fake_hub.bytes_sent == {}


def test_offline_without_a_cache_says_what_to_do(fake_hub, monkeypatch):
    monkeypatch.setenv("LOCALLLM_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="offline"):
        plan_hub(parse_ref(f"hf.co/{REPO}"))
    assert fake_hub.requests == []


def test_unreachable_hub_uses_the_cached_listing(fake_hub, monkeypatch):
    hw = load_profile("laptop-x86-16gb")
    first = plan_hub(parse_ref(f"hf.co/{REPO}"), hardware=hw)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert plan_hub(parse_ref(f"hf.co/{REPO}"), hardware=hw).needed == first.needed


def test_listing_groups_splits_and_leaves_out_projectors(fake_hub):
    listing = list_gguf(REPO)
    assert sorted(m.quant for m in listing.models) == ["Q2_K", "Q4_1"]
    assert any("mmproj" in s for s in listing.skipped)
    split = list_gguf(SPLIT_REPO)
    assert len(split.models) == 1 and len(split.models[0].parts) == 3


def test_split_missing_part_is_named(fake_hub):
    files = fake_hub.repos[SPLIT_REPO].files
    gone = sorted(files)[1]
    del files[gone]
    listing = list_gguf(SPLIT_REPO)
    assert listing.models == () and gone in listing.skipped[0]
    with pytest.raises(ModelNotFoundError, match="no GGUF model"):
        plan_hub(parse_ref(f"hf.co/{SPLIT_REPO}"))


def test_split_plans_as_one_model(fake_hub, split_parts):
    plan = plan_hub(parse_ref(f"hf.co/{SPLIT_REPO}"), hardware=load_profile("laptop-x86-16gb"))
    assert plan.variant.filename == split_parts[0].name
    assert len(fake_hub.file_requests()) == 3  # one header request per part


def test_unknown_quant_lists_the_repos_quants(fake_hub):
    with pytest.raises(ModelNotFoundError, match="Q2_K, Q4_1"):
        plan_hub(HubRef(REPO, quant="Q8_0"))


def test_gated_and_private_repos_say_so(fake_hub):
    fake_hub.gated.add(REPO)
    with pytest.raises(ModelUnavailableError, match="gated.*HF_TOKEN"):
        plan_hub(HubRef(REPO))
    fake_hub.gated.clear()
    fake_hub.private.add(REPO)
    with pytest.raises(ModelNotFoundError, match="private"):
        plan_hub(HubRef(REPO))


def test_server_ignoring_range_is_not_downloaded_whole(fake_hub):
    fake_hub.ignore_range = True
    plan_hub(HubRef(REPO, quant="Q4_1"), hardware=load_profile("laptop-x86-16gb"))
    assert fake_hub.total_bytes_sent() < 24 * MiB  # of a 98 MB file (socket buffers included)


def test_body_cut_short_is_resumed_or_refused(fake_hub):
    fake_hub.cut_next_get_after = 1000
    plan_hub(HubRef(REPO, quant="Q4_1"), hardware=load_profile("laptop-x86-16gb"))  # resumed
    fake_hub.reset_counts()
    fake_hub.cut_after = 0
    with pytest.raises(ModelUnavailableError, match="cut short"):
        plan_hub(HubRef(REPO, quant="Q2_K"))


def test_truncated_file_is_refused(monkeypatch, smollm2_gguf):
    with FakeHub() as hub:
        hub.add_file("t/cut-GGUF", "m-Q4_1.gguf", smollm2_gguf.read_bytes()[:300_000])
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(InvalidModelError, match="truncated|ends|left"):
            plan_hub(HubRef("t/cut-GGUF"))


def test_hostile_headers_are_refused(monkeypatch, smollm2_gguf):
    import struct

    head = bytearray(smollm2_gguf.read_bytes()[: 4 * MiB])
    absurd = bytes(head[:8]) + struct.pack("<Q", 1 << 40) + bytes(head[16:])  # tensor count 2^40
    huge_key = bytes(head[:24]) + struct.pack("<Q", (1 << 63) - 1) + bytes(head[32:])  # first key's length
    with FakeHub() as hub:
        hub.add_file("t/bad-GGUF", "a-Q4_1.gguf", absurd + bytes(60 * MiB))
        hub.add_file("t/bad-GGUF", "b-Q8_0.gguf", huge_key)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        with pytest.raises(InvalidModelError, match="absurd tensor count"):
            plan_hub(HubRef("t/bad-GGUF", quant="Q4_1"))
        with pytest.raises(InvalidModelError, match="key 0"):
            plan_hub(HubRef("t/bad-GGUF", quant="Q8_0"))
        assert hub.total_bytes_sent() < 8 * MiB


def test_a_repos_quants_rank_by_llama_cpps_perplexity_table_not_by_size():
    # the best quant that fits is ranked as a catalog family's quants are: Q8_0 before F16 and
    # BF16 (the same quality within rounding, a smaller file), Q4_K_M before Q4_0; a quant the
    # table lacks (IQ4_XS) is rated as the repo's nearest file in size that it has
    import dataclasses

    from localllm.catalog import load_catalog
    from localllm.hardware.detect import load_profile
    from localllm.hub.listing import HubFile, HubModel
    from localllm.hub.plan import HubVariant, _ranked
    from localllm.planner import plan_among

    base = load_catalog().find("qwen2.5-0.5b-instruct:q4_k_m")
    sizes = {"Q4_0": 350, "IQ4_XS": 360, "Q4_K_M": 390, "Q8_0": 530, "F16": 990, "BF16": 990}
    found = [
        HubVariant(
            dataclasses.replace(base, quant=q, filename=f"m-{q}.gguf", size=mb * 10**6),
            HubModel((HubFile(f"m-{q}.gguf", mb * 10**6, None),), q),
            listing=None,  # type: ignore[arg-type]
            exact=True,
        )
        for q, mb in sizes.items()
    ]
    ranked = {v.quant: v for v in _ranked(found)}
    assert ranked["Q8_0"].quality > ranked["Q4_K_M"].quality > ranked["Q4_0"].quality
    assert ranked["IQ4_XS"].quality_penalty == ranked["Q4_0"].quality_penalty  # 360 MB is nearest to 350
    assert ranked["BF16"].quality_penalty == ranked["F16"].quality_penalty
    chosen = plan_among(list(ranked.values()), auto=False, hardware=load_profile("laptop-x86-16gb"))
    assert chosen.variant.quant == "Q8_0", chosen.explain()
