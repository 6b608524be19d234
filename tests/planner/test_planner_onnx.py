"""ONNX Runtime in the planner: the execution provider per profile, all-or-nothing GPU memory,
the estimator for ONNX exports and local folders, the choice between runtimes, the CLI."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

import localllm
from localllm import planner
from localllm.catalog import load_catalog
from localllm.cli import main
from localllm.errors import ModelNotFoundError
from localllm.estimator import ONNX_KV_COPIES, estimate_onnx, onnx_kv_type
from localllm.formats.onnx_folder import validate_onnx_folder
from localllm.hardware import RuntimeInfo
from localllm.hardware.detect import load_profile

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
COREML = "CoreMLExecutionProvider"
QWEN = "qwen2.5-0.5b-instruct"


def with_runtimes(hw, providers=(CUDA, CPU), *, llama_gpu: bool | None = None):
    return dataclasses.replace(
        hw,
        runtimes=(
            RuntimeInfo("llama.cpp", installed=True, gpu_offload=llama_gpu),
            RuntimeInfo("onnxruntime", installed=True, version="1.22", providers=tuple(providers)),
        ),
    )


def provider_reason(p) -> str:
    return next(r for r in p.reasons if r.startswith("ONNX Runtime provider"))


# -- provider per profile --------------------------------------------------------------------


def test_rtx4090_with_cuda_in_onnxruntime_runs_fully_on_the_gpu():
    p = planner.plan(QWEN, hardware=with_runtimes(load_profile("desktop-rtx4090-64gb")), runtime="onnx")
    assert p.runtime == "onnxruntime" and p.placement.provider == CUDA
    assert p.where == "gpu" and p.fits
    assert "RTX 4090" in provider_reason(p) and "CUDA" in provider_reason(p)
    # all of the weights on the GPU, none in RAM: no partial offload for ONNX
    assert p.memory.device("gpu0").weights == p.variant.size
    assert p.memory.host.weights == 0
    assert "(CUDAExecutionProvider)" in p.explain().splitlines()[0]


def test_rtx4090_without_cuda_provider_falls_back_to_cpu_and_says_why():
    p = planner.plan(QWEN, hardware=load_profile("desktop-rtx4090-64gb"), runtime="onnxruntime")
    assert p.placement.provider == CPU and p.where == "cpu"
    why = provider_reason(p)
    assert "NVIDIA GPU" in why and "onnxruntime-gpu" in why and CUDA in why
    assert p.memory.host.weights == p.variant.size and len(p.memory.devices) == 1


def test_macbook_air_m2_uses_coreml_in_unified_memory():
    p = planner.plan(QWEN, hardware=load_profile("macbook-air-m2-8gb"), runtime="onnx")
    assert p.placement.provider == COREML and p.where == "gpu" and p.fits
    assert "Apple Silicon" in provider_reason(p)
    assert "pool" in {b.device for b in p.budgets}
    assert p.needed <= p.available


@pytest.mark.parametrize("profile", ["laptop-x86-8gb", "laptop-x86-16gb", "container-4gib", "raspberry-pi-5-8gb"])
def test_plain_machines_use_the_cpu_provider(profile):
    p = planner.plan(QWEN, hardware=load_profile(profile), runtime="onnx")
    assert p.placement.provider == CPU and p.where == "cpu"
    assert p.fits and p.needed <= p.available
    assert provider_reason(p).startswith(f"ONNX Runtime provider {CPU}: CPU")


def test_gpu_too_small_means_all_on_the_cpu_never_split():
    hw = with_runtimes(load_profile("desktop-rtx4090-64gb"))
    small = dataclasses.replace(hw.gpus[0], memory_free=1 * 2**30, budget=None)
    hw = dataclasses.replace(hw, gpus=(small,))
    p = planner.plan("phi-3.5-mini-instruct", hardware=hw, runtime="onnx")
    assert p.where == "cpu" and p.placement.provider == CPU and p.placement.n_gpu_layers == 0
    assert "cannot split" in " ".join(p.reasons)
    assert "does not fit on the GPU for CUDAExecutionProvider" in provider_reason(p)
    assert all(d.device == "cpu" for d in p.memory.devices)


def test_two_gpus_onnx_uses_one_and_warns():
    p = planner.plan(QWEN, hardware=with_runtimes(load_profile("workstation-2x-rtx3090")), runtime="onnx")
    assert p.placement.provider == CUDA and p.placement.tensor_split == ()
    assert [d.device for d in p.memory.devices if d.device != "cpu"] == ["gpu0"]
    assert any("does not split" in w for w in p.warnings)


def test_fp16_graphs_rank_after_fp32_ones_on_the_cpu_provider():
    p = planner.plan(QWEN, hardware=load_profile("laptop-x86-16gb"), runtime="onnx")
    assert onnx_kv_type(p.variant) == "f32" and p.placement.kv_type == "f32"
    rejected = {r.name: r.why for r in p.rejected}
    assert "float32" in rejected[f"{QWEN}:onnx-q4f16"]


# -- estimator -------------------------------------------------------------------------------


def test_estimate_onnx_weights_from_size_and_kv_from_config():
    cat = load_catalog()
    fp32, q4f16 = cat.find(f"{QWEN}:fp32"), cat.find(f"{QWEN}:q4f16")
    f = fp32.family
    e32 = estimate_onnx(fp32, n_ctx=4096)
    e16 = estimate_onnx(q4f16, n_ctx=4096)
    assert e32.kv_type == "f32" and e16.kv_type == "f16"
    assert e32.host.weights == fp32.size and e16.host.weights == q4f16.size
    per_token_f16 = 2 * f.n_layer * f.n_head_kv * f.head_dim * 2
    assert e16.host.kv_cache == ONNX_KV_COPIES * per_token_f16 * 4096
    assert e32.host.kv_cache == 2 * e16.host.kv_cache
    gpu = estimate_onnx(fp32, n_ctx=4096, on_gpu=True)
    assert gpu.device("gpu0").weights == fp32.size and gpu.host.weights == 0 and gpu.host.kv_cache == 0
    with pytest.raises(ValueError, match="f16 or f32"):
        estimate_onnx(fp32, n_ctx=512, kv_type="q8_0")


@pytest.fixture(scope="module")
def tiny_folder(tiny_onnx):
    return tiny_onnx


def test_plan_local_onnx_folder_from_its_files(tiny_folder):
    info = validate_onnx_folder(tiny_folder)
    p = planner.plan_local_onnx(info, hardware=load_profile("laptop-x86-8gb"), context=256)
    assert p.runtime == "onnxruntime" and p.placement.provider == CPU and p.fits
    assert p.variant.format == "onnx" and p.variant.size == info.weights_bytes
    assert p.memory.host.weights == info.weights_bytes
    assert p.memory.host.kv_cache == ONNX_KV_COPIES * info.kv_bytes_per_token() * 256
    assert p.placement.n_ctx == 256 and p.placement.kv_type == "f32"


def test_load_folder_and_onnx_file_are_planned(tiny_folder):
    hw = load_profile("laptop-x86-8gb")
    for path in (tiny_folder, tiny_folder / "onnx" / "model.onnx"):
        with localllm.load(path, context=128, hardware=hw) as m:
            assert m.plan is not None and m.plan.runtime == "onnxruntime"
            assert m.info.placement.provider == CPU and m.info.placement.n_ctx == 128
            assert m.generate("Hello", max_tokens=4, temperature=0).text is not None


# -- the runtime choice ----------------------------------------------------------------------


def test_auto_prefers_llama_cpp_on_a_cpu_only_machine_and_lists_onnx():
    p = planner.plan("auto", hardware=load_profile("laptop-x86-16gb"))
    assert p.runtime == "llama.cpp"
    assert any(r.startswith("runtime llama.cpp: preferred") for r in p.reasons)
    onnx = [r for r in p.rejected if r.name.endswith("(onnxruntime)")]
    assert onnx and "llama.cpp is preferred" in onnx[0].why


def test_auto_takes_onnx_where_llama_cpp_cannot_use_the_gpu():
    hw = with_runtimes(load_profile("desktop-rtx4090-64gb"), llama_gpu=False)
    p = planner.plan("auto", hardware=hw)
    assert p.runtime == "onnxruntime" and p.placement.provider == CUDA and p.where == "gpu"
    reason = next(r for r in p.reasons if r.startswith("runtime onnxruntime"))
    assert "built without GPU offload" in reason
    assert p.rejected[0].name.endswith("(llama.cpp)")


def test_auto_keeps_llama_cpp_when_it_offloads_too():
    p = planner.plan("auto", hardware=with_runtimes(load_profile("desktop-rtx4090-64gb"), llama_gpu=True))
    assert p.runtime == "llama.cpp" and p.where == "gpu"


def test_bad_runtime_requests():
    hw = load_profile("laptop-x86-16gb")
    with pytest.raises(ValueError, match="llama.cpp option"):
        planner.plan(QWEN, hardware=hw, runtime="onnx", kv_type="q8_0")
    with pytest.raises(ModelNotFoundError, match="gguf file"):
        planner.plan(f"{QWEN}:q4_k_m", hardware=hw, runtime="onnx")
    with pytest.raises(ModelNotFoundError, match="unknown runtime"):
        planner.plan(QWEN, hardware=hw, runtime="tensorflow")
    # an ONNX variant named without a runtime plans for onnxruntime
    assert planner.plan(f"{QWEN}:q4f16", hardware=hw).runtime == "onnxruntime"


# -- CLI and import cost ---------------------------------------------------------------------


def test_cli_plan_runtime_onnx_json_shows_provider(capsys):
    rc = main(["plan", QWEN, "--runtime", "onnx", "--profile", "macbook-air-m2-8gb", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["format"] == "onnx" and data["placement"]["runtime"] == "onnxruntime"
    assert data["placement"]["provider"] == COREML
    assert any(r.startswith(f"ONNX Runtime provider {COREML}") for r in data["reasons"])


def test_cli_plan_runtime_onnx_live_explains_provider(capsys):
    rc = main(["plan", QWEN, "--runtime", "onnx"])
    out = capsys.readouterr().out
    assert rc == 0 and "with onnxruntime (" in out.splitlines()[0]
    assert "ONNX Runtime provider CPUExecutionProvider:" in out  # no GPU on the test machine


def test_planning_onnx_does_not_import_onnxruntime():
    code = (
        "import sys; from localllm import planner; from localllm.hardware.detect import load_profile;"
        "p = planner.plan('auto', hardware=load_profile('macbook-air-m2-8gb'), runtime='onnx');"
        "assert p.placement.provider, p;"
        "print(sorted(m for m in ('onnxruntime', 'numpy', 'onnx', 'llama_cpp') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
