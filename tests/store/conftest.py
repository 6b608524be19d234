"""Other tools' model stores, laid out as each tool writes them, under a fake HOME in tmp_path."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from discoverhelp import SMOLLM2_SHA256, Stores, add_blob, link_or_copy, sha256_file, write_manifest

from localllm.store import discover_layouts


@pytest.fixture
def stores(tmp_path, monkeypatch, smollm2_gguf, tiny_gguf, tiny_gguf_q8) -> Stores:
    """Ollama, LM Studio, GPT4All, the HF cache and two LOCALLLM_MODEL_DIRS folders, under a fake HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    for env in ("OLLAMA_MODELS", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HF_HUB_CACHE"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setattr(discover_layouts, "OLLAMA_SYSTEM_MODELS", ())  # never the machine's own service store

    # Ollama: the real SmolLM2 file as the model blob of two tags, and a `ollama pull hf.co/...` manifest
    ollama = home / ".ollama" / "models"
    link_or_copy(smollm2_gguf, ollama / "blobs" / f"sha256-{SMOLLM2_SHA256}")
    smol_layer = {
        "mediaType": "application/vnd.ollama.image.model",
        "digest": f"sha256:{SMOLLM2_SHA256}",
        "size": smollm2_gguf.stat().st_size,
    }
    template = add_blob(ollama, b"{{ .Prompt }}", "application/vnd.ollama.image.template")
    params = add_blob(ollama, b'{"stop": ["<|im_end|>"]}', "application/vnd.ollama.image.params")
    config = add_blob(ollama, b"{}", "application/vnd.docker.container.image.v1+json")
    for tag in ("135m", "latest"):
        write_manifest(
            ollama, f"registry.ollama.ai/library/smollm2/{tag}", [smol_layer, template, params], config["digest"]
        )
    tiny_sha = sha256_file(tiny_gguf)
    shutil.copyfile(tiny_gguf, ollama / "blobs" / f"sha256-{tiny_sha}")
    tiny_layer = {
        "mediaType": "application/vnd.ollama.image.model",
        "digest": f"sha256:{tiny_sha}",
        "size": tiny_gguf.stat().st_size,
    }
    write_manifest(ollama, "hf.co/someone/Tiny-GGUF/Q8_0", [tiny_layer, template])
    # broken entries: never an exception, never listed
    (ollama / "manifests/registry.ollama.ai/library/broken").mkdir(parents=True)
    (ollama / "manifests/registry.ollama.ai/library/broken/bad-json").write_text("{not json")
    missing = {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "d" * 64, "size": 10}
    write_manifest(ollama, "registry.ollama.ai/library/broken/missing-blob", [missing])
    bad = {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:../../etc/passwd", "size": 10}
    write_manifest(ollama, "registry.ollama.ai/library/broken/bad-digest", [bad])
    write_manifest(ollama, "registry.ollama.ai/library/broken/no-model-layer", [template, params])
    wrong_size = dict(tiny_layer, size=123)
    write_manifest(ollama, "registry.ollama.ai/library/broken/wrong-size", [wrong_size])
    (ollama / "manifests/registry.ollama.ai/library/broken/list").write_text('{"layers": 7}')
    # a download in progress: Ollama writes blobs/sha256-<hex>-partial and the manifest last
    (ollama / "blobs" / f"sha256-{'e' * 64}-partial").write_bytes(b"GGUF")

    # LM Studio: publisher/repo/file.gguf, plus a vision projector, a later split part and a download
    lmstudio = home / ".lmstudio" / "models"
    repo = lmstudio / "someone" / "Tiny-GGUF"
    repo.mkdir(parents=True)
    shutil.copyfile(tiny_gguf_q8, repo / "tiny-Q8_0.gguf")
    shutil.copyfile(tiny_gguf, repo / "mmproj-tiny-f16.gguf")
    shutil.copyfile(tiny_gguf, repo / "big-Q4_K_M-00002-of-00003.gguf")
    (repo / "tiny-F32.gguf.part").write_bytes(b"GGUF")
    (lmstudio / "stray.gguf").write_bytes(b"GGUF")  # not at the depth LM Studio lists

    # GPT4All: one flat folder; a download in progress is "incomplete-<file>"
    gpt4all = home / ".local" / "share" / "nomic.ai" / "GPT4All"
    gpt4all.mkdir(parents=True)
    shutil.copyfile(tiny_gguf, gpt4all / "tiny-f32.gguf")
    (gpt4all / "incomplete-other.gguf").write_bytes(b"GGUF")

    # the Hugging Face cache: a snapshot symlink into blobs/<sha256>, one dangling (never finished)
    hf = Path(os.environ["HF_HOME"]) / "hub"
    hf_repo = hf / "models--someone--Tiny-GGUF"
    (hf_repo / "blobs").mkdir(parents=True)
    shutil.copyfile(tiny_gguf_q8, hf_repo / "blobs" / sha256_file(tiny_gguf_q8))
    (hf_repo / "blobs" / ("f" * 64 + ".incomplete")).write_bytes(b"GGUF")
    snap = hf_repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (snap / "tiny-Q8_0.gguf").symlink_to(Path("../../blobs") / sha256_file(tiny_gguf_q8))
    (snap / "other.gguf").symlink_to(Path("../../blobs") / ("f" * 64))
    (hf_repo / "refs").mkdir()
    (hf_repo / "refs" / "main").write_text("0123abcd")

    # LOCALLLM_MODEL_DIRS: two folders, one file nested, one too deep to be searched
    d1, d2 = tmp_path / "models-a", tmp_path / "models-b"
    (d1 / "nested" / "x").mkdir(parents=True)
    shutil.copyfile(tiny_gguf, d1 / "nested" / "x" / "a.gguf")
    deep = d1 / "1" / "2" / "3" / "4"
    deep.mkdir(parents=True)
    shutil.copyfile(tiny_gguf, deep / "too-deep.gguf")
    d2.mkdir()
    shutil.copyfile(tiny_gguf_q8, d2 / "b.gguf")
    monkeypatch.setenv("LOCALLLM_MODEL_DIRS", os.pathsep.join([str(d1), str(d2)]))
    return Stores(home, ollama, lmstudio, gpt4all, hf, (d1, d2), tiny_sha)
