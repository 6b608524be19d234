"""Models other tools downloaded: found in their own layouts, named to load, never written."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from discoverhelp import SMOLLM2_SHA256, write_manifest

import localllm
from localllm.errors import InvalidOptionError, ModelNotFoundError
from localllm.resolve import resolve
from localllm.store.discover import discover, find_local, is_local_name
from localllm.store.discover_layouts import is_model_file, walk_gguf

# --- a record of every write-like operation Python makes, for the read-only checks ----------
_WRITES: list[tuple[str, str]] = []
_RECORDING: list[bool] = []
_WRITE_EVENTS = {
    "os.remove",
    "os.rename",
    "os.mkdir",
    "os.rmdir",
    "os.chmod",
    "os.chown",
    "os.utime",
    "os.link",
    "os.symlink",
    "os.truncate",
    "shutil.rmtree",
    "shutil.move",
    "shutil.copyfile",
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _audit(event: str, args: tuple) -> None:
    if not _RECORDING:
        return
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, 0))[:3]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or bool((flags or 0) & _WRITE_FLAGS)
        if writes:
            _WRITES.append((event, str(path)))
    elif event in _WRITE_EVENTS:
        _WRITES.append((event, str(args[0]) if args else ""))


sys.addaudithook(_audit)  # hooks cannot be removed: it does nothing unless a test is recording


def _tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under root: (size, mtime_ns, mode), symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def _names(models) -> list[str]:
    return [m.name for m in models]


def test_every_layout_is_found_under_its_own_name(stores):
    found = {m.name: m for m in discover()}
    assert set(found) == {
        "ollama:smollm2:135m",  # the :latest tag is the same blob: listed once, under the first name
        "ollama:hf.co/someone/Tiny-GGUF:Q8_0",
        "lmstudio:someone/Tiny-GGUF/tiny-Q8_0.gguf",
        "gpt4all:tiny-f32.gguf",
        "hf:someone/Tiny-GGUF/tiny-Q8_0.gguf",
        str(stores.dirs[0] / "nested" / "x" / "a.gguf"),
        str(stores.dirs[1] / "b.gguf"),
    }
    smol = found["ollama:smollm2:135m"]
    assert smol.path == stores.ollama / "blobs" / f"sha256-{SMOLLM2_SHA256}"
    assert (smol.source, smol.size, smol.sha256) == ("ollama", 98_362_432, SMOLLM2_SHA256)
    assert found["ollama:hf.co/someone/Tiny-GGUF:Q8_0"].sha256 == stores.tiny_sha256
    hf = found["hf:someone/Tiny-GGUF/tiny-Q8_0.gguf"]
    assert hf.path.is_symlink() and hf.path.parent.name == "0123abcd"  # the snapshot path, not the blob
    assert hf.sha256 == hf.path.resolve().name and hf.size == hf.path.resolve().stat().st_size
    assert found["gpt4all:tiny-f32.gguf"].source == "gpt4all" and found["gpt4all:tiny-f32.gguf"].sha256 is None
    assert [m.source for m in discover()] == sorted(
        (m.source for m in discover()), key=["ollama", "lmstudio", "gpt4all", "huggingface", "dirs"].index
    )


def test_projectors_split_parts_and_downloads_are_skipped(stores):
    paths = {m.path.name for m in discover()}
    for skipped in ("mmproj-tiny-f16.gguf", "big-Q4_K_M-00002-of-00003.gguf", "tiny-F32.gguf.part"):
        assert skipped not in paths
    assert "incomplete-other.gguf" not in paths and "other.gguf" not in paths and "stray.gguf" not in paths
    assert "too-deep.gguf" not in paths  # five levels below a LOCALLLM_MODEL_DIRS folder
    assert is_model_file("Qwen2.5-7B-Q4_K_M-00001-of-00003.gguf")
    assert not is_model_file("Qwen2.5-7B-Q4_K_M-00003-of-00003.gguf")


def test_sources_narrow_the_scan_and_an_unknown_one_is_refused(stores):
    assert {m.source for m in discover(sources=["lmstudio", "gpt4all"])} == {"lmstudio", "gpt4all"}
    assert _names(discover(sources=["dirs"])) == [
        str(stores.dirs[0] / "nested" / "x" / "a.gguf"),
        str(stores.dirs[1] / "b.gguf"),
    ]
    with pytest.raises(InvalidOptionError, match="unknown model source 'olama'"):
        discover(sources=["olama"])


def test_ollama_models_env_and_nothing_anywhere(stores, tmp_path, monkeypatch):
    moved = tmp_path / "elsewhere"
    stores.ollama.rename(moved)
    assert not [m for m in discover() if m.source == "ollama"]
    monkeypatch.setenv("OLLAMA_MODELS", str(moved))
    assert find_local("ollama:smollm2:135m").path == moved / "blobs" / f"sha256-{SMOLLM2_SHA256}"
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "no-such-folder"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "no-hf"))
    monkeypatch.delenv("LOCALLLM_MODEL_DIRS")
    assert discover() == []


def test_the_scan_never_writes_even_to_a_read_only_tree(stores, tmp_path):
    roots = [stores.home, stores.hf, *stores.dirs]
    before = {str(r): _tree(r) for r in roots}
    expected = discover()
    made_read_only = []
    try:
        for r in roots:
            for dirpath, _, _ in os.walk(r):
                os.chmod(dirpath, stat.S_IRUSR | stat.S_IXUSR)
                made_read_only.append(dirpath)
        _RECORDING.append(True)
        try:
            again = discover()
            for name in ("ollama:smollm2", "lmstudio:someone/Tiny-GGUF", "gpt4all:tiny-f32.gguf"):
                find_local(name)
            with pytest.raises(ModelNotFoundError):
                find_local("ollama:nothing")
        finally:
            _RECORDING.clear()
    finally:
        for dirpath in made_read_only:
            os.chmod(dirpath, 0o755)
    assert again == expected
    assert _WRITES == []  # no open for writing, rename, chmod, utime... anywhere, while scanning
    after = {str(r): _tree(r) for r in roots}
    after_modes = {r: {k: v[:2] for k, v in t.items()} for r, t in after.items()}
    assert after_modes == {r: {k: v[:2] for k, v in t.items()} for r, t in before.items()}


def test_find_local_names_and_tags(stores):
    smol = stores.ollama / "blobs" / f"sha256-{SMOLLM2_SHA256}"
    assert find_local("ollama:smollm2:135m").path == smol
    assert find_local("ollama:smollm2").name == "ollama:smollm2:latest"  # no tag means :latest, as in Ollama
    assert find_local("ollama:library/smollm2:135m").path == smol
    assert find_local("ollama:registry.ollama.ai/library/SmolLM2:135M").path == smol  # Ollama names ignore case
    assert find_local("ollama:hf.co/someone/Tiny-GGUF:Q8_0").sha256 == stores.tiny_sha256
    lm = find_local("lmstudio:someone/Tiny-GGUF/tiny-Q8_0.gguf")
    assert lm.path == stores.lmstudio / "someone" / "Tiny-GGUF" / "tiny-Q8_0.gguf"
    assert find_local("lmstudio:someone/Tiny-GGUF") == lm  # the one model file in that repository folder
    assert find_local("gpt4all:tiny-f32.gguf").path == stores.gpt4all / "tiny-f32.gguf"
    assert find_local("hf:someone/Tiny-GGUF/tiny-Q8_0.gguf").source == "huggingface"
    assert is_local_name("ollama:smollm2") and is_local_name(" LMStudio:a/b/c.gguf") and is_local_name("hf:o/r/f")
    assert not is_local_name("qwen2.5-1.5b-instruct:q4_k_m") and not is_local_name("./ollama:x.gguf")
    assert not is_local_name(Path("ollama:x"))


def test_find_local_errors_name_where_and_the_closest(stores, monkeypatch):
    import shutil

    shutil.rmtree(stores.ollama / "manifests" / "registry.ollama.ai" / "library" / "smollm2")
    stores.ollama.joinpath("manifests/registry.ollama.ai/library/smollm2").mkdir()
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{SMOLLM2_SHA256}", "size": 98362432}
    write_manifest(stores.ollama, "registry.ollama.ai/library/qwen2.5-coder/0.5b", [layer])
    with pytest.raises(ModelNotFoundError) as e:
        find_local("ollama:qwen2.5-coder")  # only :0.5b exists; there is no :latest
    assert e.value.suggestions[0] == "ollama:qwen2.5-coder:0.5b"
    assert "ollama:qwen2.5-coder:0.5b" in str(e.value) and str(stores.ollama) in str(e.value)
    assert "localllm models --local" in str(e.value)
    with pytest.raises(ModelNotFoundError) as e:
        find_local("lmstudio:someone/Tiny-GGUF/tiny-Q8.gguf")
    assert e.value.suggestions == ("lmstudio:someone/Tiny-GGUF/tiny-Q8_0.gguf",)
    assert str(stores.lmstudio) in str(e.value)
    with pytest.raises(ModelNotFoundError, match="no GPT4All model named 'gpt4all:nope.gguf'.*found 1 model there"):
        find_local("gpt4all:nope.gguf")
    with pytest.raises(ModelNotFoundError, match="not a local model name"):
        find_local("ollama:")
    monkeypatch.setenv("OLLAMA_MODELS", str(stores.home / "none"))
    with pytest.raises(ModelNotFoundError, match="found no models there"):
        find_local("ollama:smollm2")


def test_lmstudio_home_pointer_settings_and_gpt4all_model_path(stores, tmp_path):
    moved = tmp_path / "lms-home"
    moved.mkdir()
    stores.lmstudio.rename(moved / "models")
    (stores.home / ".lmstudio-home-pointer").write_text(str(moved) + "\n")
    assert find_local("lmstudio:someone/Tiny-GGUF/tiny-Q8_0.gguf").path.is_relative_to(moved)
    custom = tmp_path / "lms-downloads" / "pub" / "repo"
    custom.mkdir(parents=True)
    (custom / "m.gguf").write_bytes(b"GGUF")
    (moved / "settings.json").write_text(json.dumps({"downloadsFolder": str(custom.parent.parent), "other": 1}))
    assert find_local("lmstudio:pub/repo/m.gguf").path == custom / "m.gguf"
    gpt = tmp_path / "gpt4all-models"
    gpt.mkdir()
    (gpt / "custom.gguf").write_bytes(b"GGUF")
    ini = stores.home / ".config" / "nomic.ai" / "GPT4All.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(f"[General]\nmodelPath={gpt}/\nthreadCount=4\n\n[download]\nmodelPath=/nowhere\n")
    assert find_local("gpt4all:custom.gguf").path == gpt / "custom.gguf"
    assert find_local("gpt4all:tiny-f32.gguf").path == stores.gpt4all / "tiny-f32.gguf"  # the default still read


def test_a_huge_folder_is_searched_within_bounds(tmp_path, monkeypatch):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3000):
        (big / f"note-{i:04}.txt").touch()
    (big / "zz-model.gguf").write_bytes(b"GGUF")  # sorted after the notes: past the entry budget
    assert walk_gguf(big) == []
    assert walk_gguf(big, max_entries=4000) == [big / "zz-model.gguf"]
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "self").symlink_to(loop, target_is_directory=True)
    (loop / "m.gguf").write_bytes(b"GGUF")
    assert walk_gguf(loop) == [loop / "m.gguf"]  # a symlink loop ends at the depth bound, once per file
    monkeypatch.setenv("LOCALLLM_MODEL_DIRS", str(loop))
    assert _names(discover(sources=["dirs"])) == [str(loop / "m.gguf")]


def test_an_ollama_blob_loads_and_generates_like_the_file_itself(stores, smollm2_gguf, one_core):
    """The lead's resolve() will call find_local(name).path: a blob with no .gguf ending, found by its magic."""
    blob = find_local("ollama:smollm2:135m").path
    assert blob.suffix == "" and blob.name.startswith("sha256-")
    texts = []
    for path in (blob, smollm2_gguf):
        with localllm.load(path, context=256, hardware=one_core) as m:
            texts.append(m.generate("The capital of France is", temperature=0, max_tokens=4).text)
    assert texts[0] == texts[1] and texts[0].strip()
    r = resolve(str(blob), hardware=one_core, context=256)
    assert r.path == blob and r.plan is not None and r.plan.fits
