"""The planner over every hardware profile, and its properties."""

from __future__ import annotations

import dataclasses
import threading

import pytest
from hypothesis import given, settings, strategies as st

from localllm.catalog import Family, family_from_gguf_metadata, load_catalog
from localllm.errors import NoFittingVariantError
from localllm.hardware import CPUInfo, GPUInfo, Hardware, MemoryInfo, RuntimeInfo
from localllm.hardware.detect import list_profiles, load_profile
from localllm.planner import RAM_FRACTION, fit_table, plan, plan_local
from localllm.validate import validate_gguf

PROFILES = list_profiles()
GB = 10**9


def _budget_ok(p):
    budgets = {b.device: b.available for b in p.budgets}
    for d in p.memory.devices:
        if d.device in budgets:
            assert d.total <= budgets[d.device], (d, budgets)
    if "pool" in budgets:
        assert p.needed <= budgets["pool"]


def test_there_are_profiles():
    assert {"laptop-x86-16gb", "laptop-x86-8gb", "container-4gib"} <= set(PROFILES)


@pytest.mark.parametrize("profile", PROFILES)
def test_auto_plan_fits_within_the_profile_budget(profile):
    hw = load_profile(profile)
    p = plan(hardware=hw)
    assert p.fits and p.hardware_name == hw.name
    _budget_ok(p)
    usable = hw.memory.usable
    assert p.memory.host.total <= usable * RAM_FRACTION
    text = p.explain()
    assert p.variant.name in text and "why:" in text
    d = p.to_dict()
    assert d["variant"] == p.variant.name and d["fits"] is True and d["placement"]["n_ctx"] == p.placement.n_ctx
    if hw.gpus and p.where == "gpu":
        assert p.placement.n_gpu_layers == -1
    if not hw.gpus:
        assert p.where == "cpu" and p.placement.n_gpu_layers == 0


@pytest.mark.parametrize("profile", PROFILES)
def test_fit_table_agrees_with_plan(profile):
    hw = load_profile(profile)
    rows = fit_table(hw)
    assert len(rows) == len(load_catalog().variants)
    chosen = plan(hardware=hw)
    row = next(r for r in rows if r.variant.name == chosen.variant.name)
    assert row.fits and row.where == chosen.where


def test_falcon_on_the_16gb_laptop_picks_q8_0_and_explains_f16():
    p = plan("falcon-7b", hardware=load_profile("laptop-x86-16gb"))
    assert p.fits and p.variant.quant == "Q8_0" and p.where == "cpu"
    assert p.placement.n_ctx == 2048  # all Falcon-7B was trained on
    f16 = next(r for r in p.rejected if r.name == "falcon-7b-instruct:f16")
    assert "does not fit" in f16.why and f16.needed > f16.available
    text = p.explain()
    assert "weights 7.67 GB" in text and "falcon-7b-instruct:f16" in text and "KV" in text


def test_falcon_on_the_8gb_laptop_is_smaller_or_a_clear_refusal():
    hw = load_profile("laptop-x86-8gb")
    p = plan("falcon-7b", hardware=hw)
    if p.fits:
        assert p.variant.size < load_catalog().find("falcon-7b:q8_0").size
        _budget_ok(p)
    else:
        assert "DOES NOT FIT" in p.explain() and p.needed > p.available
    f16 = plan("falcon-7b:f16", hardware=hw)
    assert not f16.fits and f16.needed > f16.available
    assert any("needs" in r for r in f16.reasons)


def test_container_is_bound_by_its_cgroup_not_host_ram():
    hw = load_profile("container-4gib")
    assert hw.memory.available > 30 * GB and hw.memory.cgroup_limit == 4 * 2**30
    p = plan(hardware=hw)
    assert p.needed <= hw.memory.cgroup_limit
    big = plan("llama-3.1-8b-instruct:q4_k_m", hardware=hw)
    assert not big.fits and big.available < 4 * 2**30
    assert "cgroup" in big.explain()
    assert p.placement.n_threads == 2  # cgroup CPU quota of 2 cores


def test_unified_memory_is_one_pool():
    hw = load_profile("macbook-air-m2-8gb")
    p = plan(hardware=hw)
    assert any(b.device == "pool" for b in p.budgets)
    assert p.needed <= next(b.available for b in p.budgets if b.device == "pool")


def test_two_gpus_split_the_layers():
    hw = load_profile("workstation-2x-rtx3090")
    p = plan("llama-3.1-8b-instruct:f16", hardware=hw)
    assert p.fits and p.where == "gpu"
    assert len(p.placement.tensor_split) == 2 and sum(p.placement.tensor_split) == pytest.approx(1, abs=1e-3)
    assert p.memory.device("gpu0").n_layers > 0 and p.memory.device("gpu1").n_layers > 0


def test_partial_offload_when_the_gpu_is_too_small():
    hw = load_profile("laptop-rtx4060-16gb")
    p = plan("llama-3.1-8b-instruct:q8_0", hardware=hw)
    assert p.fits and p.where == "partial"
    assert 0 < p.placement.n_gpu_layers < 32
    _budget_ok(p)


def test_batch_work_on_cpu_warns_and_interactive_does_not():
    hw = load_profile("laptop-x86-16gb")
    assert any("batch" in w for w in plan("qwen2.5-1.5b", hardware=hw, workload="batch").warnings)
    assert not any("batch" in w for w in plan("qwen2.5-1.5b", hardware=hw).warnings)
    gpu = plan("qwen2.5-1.5b", hardware=load_profile("desktop-rtx4090-64gb"), workload="batch")
    assert not any("batch" in w for w in gpu.warnings)


def test_nothing_fits_raises_with_the_smallest_need():
    hw = Hardware(name="tiny", memory=MemoryInfo(total=2**30, available=200 * 10**6))
    with pytest.raises(NoFittingVariantError) as e:
        plan(hardware=hw)
    assert e.value.needed > e.value.available
    assert "smollm2-135m" in str(e.value)


def test_explicit_context_is_a_minimum():
    hw = load_profile("laptop-x86-16gb")
    p = plan("phi-3.5-mini-instruct", hardware=hw, context=16384)
    assert p.placement.n_ctx == 16384
    with pytest.raises(ValueError):
        plan(hardware=hw, workload="sometimes")


def test_plan_local_file(tiny_gguf):
    info = validate_gguf(tiny_gguf)
    fam = family_from_gguf_metadata(info.metadata, name="tiny")
    p = plan_local(fam, weight_bytes=info.tensor_bytes, path=str(tiny_gguf), hardware=load_profile("laptop-x86-8gb"))
    assert p.fits and p.variant.path == str(tiny_gguf) and p.variant.size == info.tensor_bytes
    assert p.memory.host.weights >= info.tensor_bytes * 0.9


# -- properties -----------------------------------------------------------------------------------


def _cpu_machine(ram: int) -> Hardware:
    return Hardware(
        name="h",
        memory=MemoryInfo(total=ram, available=ram, bandwidth_gbs=50.0),
        cpu=CPUInfo(physical_cores=8, logical_cores=16),
    )


@settings(max_examples=25, deadline=None)
@given(ram=st.integers(min_value=1 * GB, max_value=64 * GB), extra=st.integers(min_value=0, max_value=32 * GB))
def test_more_memory_never_lowers_quality_and_the_choice_fits(ram, extra):
    """On a CPU machine the choice always fits, and more RAM never yields a lower quality."""
    small = plan(hardware=_cpu_machine(ram))
    big = plan(hardware=_cpu_machine(ram + extra))
    for p in (small, big):
        assert p.fits and p.memory.host.total <= p.available
    assert round(big.variant.quality, 1) >= round(small.variant.quality, 1)


_TIER = {"gpu": 0, "partial": 1, "cpu": 2}


@settings(max_examples=20, deadline=None)
@given(vram=st.integers(min_value=1 * GB, max_value=24 * GB), extra=st.integers(min_value=0, max_value=24 * GB))
def test_more_gpu_memory_never_moves_a_model_off_the_gpu(vram, extra):
    """With a GPU the search order puts GPU-resident first: more GPU memory never worsens the tier,
    and within the same tier never lowers quality."""

    def hw(v):
        return Hardware(
            name="g",
            memory=MemoryInfo(total=32 * GB, available=24 * GB, bandwidth_gbs=60.0),
            cpu=CPUInfo(physical_cores=8),
            gpus=(
                GPUInfo(
                    index=0,
                    vendor="nvidia",
                    name="G",
                    memory_total=v,
                    memory_free=v,
                    backend="cuda",
                    bandwidth_gbs=500.0,
                ),
            ),
        )

    a, b = plan(hardware=hw(vram)), plan(hardware=hw(vram + extra))
    assert a.fits and b.fits
    assert _TIER[b.where] <= _TIER[a.where]
    if b.where == a.where:
        assert round(b.variant.quality, 1) >= round(a.variant.quality, 1)


def test_llama_cpp_without_gpu_offload_plans_on_cpu():
    hw = dataclasses.replace(
        load_profile("desktop-rtx4090-64gb"),
        runtimes=(RuntimeInfo(name="llama.cpp", installed=True, gpu_offload=False),),
    )
    p = plan(hardware=hw)
    assert p.where == "cpu" and any("without GPU offload" in w for w in p.warnings)


@pytest.mark.parametrize("n_ctx_train", [0, -5, 1, 2, 3])
def test_contexts_end_for_any_trained_context(n_ctx_train):
    """A header's context_length of 0 once made the context search loop forever."""
    family = Family(
        name="x",
        display_name="x",
        arch="llama",
        n_layer=2,
        n_head=4,
        n_head_kv=2,
        head_dim=16,
        n_embd=64,
        n_ctx_train=n_ctx_train,
        n_vocab=554,
        n_ff=128,
    )
    done: list = []
    t = threading.Thread(
        target=lambda: done.append(
            plan_local(family, weight_bytes=10**6, path="x.gguf", hardware=load_profile("laptop-x86-16gb"), threads=1)
        ),
        daemon=True,
    )
    t.start()
    t.join(10)
    assert done, "plan_local did not finish in 10 s"
    assert done[0].placement.n_ctx >= 1


def test_plan_among_ranks_a_given_list_as_auto_ranks_the_catalog():
    # plan_among is what "auto" over the Hub's files or the models on disk uses: over the
    # catalog's own variants it must choose what plan("auto") chooses, and a list without
    # that variant must choose something else that fits
    from localllm.catalog import load_catalog
    from localllm.hardware.detect import load_profile
    from localllm.planner import plan, plan_among

    hw = load_profile("laptop-x86-16gb")
    every = [v for v in load_catalog().variants if not v.packaged]
    auto = plan("auto", hardware=hw)
    among = plan_among(every, hardware=hw)
    assert among.variant == auto.variant and among.needed == auto.needed
    rest = plan_among([v for v in every if v != auto.variant], hardware=hw)
    assert rest.variant != auto.variant and rest.fits
