"""Every MODEL form in every command: "auto", a catalog name, name:quant, a .gguf file, an ONNX
folder (or .onnx file); plan, run, bench, chat and load() resolve them the same way."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import localllm
from localllm.cli import main
from localllm.resolve import check, local_model_path
from localllm.starter import starter_gguf, starter_onnx

GGUF_NAME = "qwen2.5-0.5b-instruct:q4_k_m"
ONNX_NAME = "qwen2.5-0.5b-instruct:int8"  # the onnx-community export (only ONNX has INT8)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """A working folder holding the starter model as bare names: `mine.gguf` and `mine-onnx`."""
    (tmp_path / "mine.gguf").symlink_to(starter_gguf())
    (tmp_path / "mine-onnx").symlink_to(starter_onnx(), target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- what counts as a path ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "model.gguf",
        "Model.GGUF",
        "dir/model",
        "./x",
        "~/models/m.gguf",
        "model.onnx",
        "weights.bin",
        "weights.safetensors",
    ],
)
def test_paths_are_paths_whether_or_not_they_exist(text):
    assert local_model_path(text) == Path(text).expanduser()


@pytest.mark.parametrize(
    "text", ["auto", " auto ", "AUTO", "qwen2.5-1.5b-instruct", GGUF_NAME, "falcon-7b", "no-such-model"]
)
def test_names_are_not_paths(text):
    assert local_model_path(text) is None


def test_an_existing_bare_name_is_a_path(in_tmp):
    assert local_model_path("mine-onnx") == Path("mine-onnx")
    assert local_model_path(Path("anything")) == Path("anything")  # a PathLike always is


# --- localllm plan ------------------------------------------------------------------------


def test_plan_gguf_file_prints_the_plan_json(capsys):
    rc = main(["plan", str(starter_gguf()), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["fits"] is True
    assert data["format"] == "gguf" and data["path"] == str(starter_gguf())
    assert data["placement"]["runtime"] == "llama.cpp"
    assert data["size"] > 0 and data["size_estimated"] is False  # exact tensor bytes from the header
    assert set(data["memory"]["cpu"]) >= {"weights", "kv_cache", "compute", "overhead", "total"}


@pytest.mark.parametrize("which", ["folder", "onnx file"])
def test_plan_onnx_folder_prints_the_plan_json(capsys, which):
    target = starter_onnx() if which == "folder" else starter_onnx() / "onnx" / "model.onnx"
    rc = main(["plan", str(target), "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["fits"] is True
    assert data["format"] == "onnx" and data["placement"]["runtime"] == "onnxruntime"
    assert data["placement"]["provider"] == "CPUExecutionProvider"


def test_plan_local_file_explains_like_a_catalog_plan(capsys):
    rc = main(["plan", str(starter_gguf()), "--profile", "raspberry-pi-5-8gb"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("starter:local") and "fits:" in out and "placement:" in out and "why:" in out
    assert "threads=4" in out and "[profile raspberry-pi-5-8gb]" in out  # the Pi's cores, not this machine's


def test_plan_bare_names_in_the_working_folder(in_tmp, capsys):
    assert main(["plan", "mine.gguf", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "gguf"
    assert main(["plan", "mine-onnx", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "onnx"


def test_plan_name_and_name_quant_and_auto(capsys):
    assert main(["plan", GGUF_NAME, "--profile", "laptop-x86-16gb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["variant"] == GGUF_NAME
    assert main(["plan", ONNX_NAME, "--profile", "laptop-x86-16gb", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "onnx" and data["placement"]["runtime"] == "onnxruntime"
    assert main(["plan", "qwen2.5-0.5b-instruct", "--profile", "laptop-x86-16gb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "qwen2.5-0.5b-instruct"
    assert main(["plan", "auto", "--profile", "laptop-x86-16gb", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fits"] is True


def test_plan_missing_path_says_no_such_file_not_catalog(tmp_path, capsys):
    missing = tmp_path / "nothere.gguf"
    assert main(["plan", str(missing), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"error: no such file: {missing}" in captured.err and "catalog" not in captured.err.split(")")[0]
    assert main(["plan", "models/nothere"]) == 1
    assert "no such file: models/nothere" in capsys.readouterr().err


def test_plan_unknown_name_keeps_the_catalog_suggestions(capsys):
    assert main(["plan", "qwen2.5-1.5b-instrukt", "--json"]) == 1
    err = capsys.readouterr().err
    assert "no model called 'qwen2.5-1.5b-instrukt' in the catalog" in err and "qwen2.5-1.5b-instruct" in err


def test_plan_local_file_with_the_wrong_runtime_or_option_is_clear(capsys):
    assert main(["plan", str(starter_gguf()), "--runtime", "onnx"]) == 1
    assert "is a GGUF file" in capsys.readouterr().err
    assert main(["plan", str(starter_onnx()), "--runtime", "llama.cpp"]) == 1
    assert "is an ONNX model" in capsys.readouterr().err
    assert main(["plan", str(starter_onnx()), "--kv-type", "q8_0"]) == 1
    assert "llama.cpp option" in capsys.readouterr().err


def test_plan_refuses_a_bad_file_with_its_reason(tmp_path, capsys):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(starter_gguf().read_bytes()[:3000])
    assert main(["plan", str(cut)]) == 1
    assert str(cut) in capsys.readouterr().err
    folder = tmp_path / "hf-clone"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"{}")
    assert main(["plan", str(folder)]) == 1
    assert "without an ONNX model" in capsys.readouterr().err


def test_plan_ctx_below_the_floor_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "--ctx", "8"])
    assert exit_.value.code == 2 and "at least 16" in capsys.readouterr().err


# --- load() and plan_for ------------------------------------------------------------------


def test_plan_for_takes_every_form():
    hw = localllm.load_profile("laptop-x86-16gb")
    assert localllm.plan_for(starter_gguf(), hardware=hw).variant.format == "gguf"
    assert localllm.plan_for(str(starter_onnx()), hardware=hw).variant.format == "onnx"
    assert localllm.plan_for(GGUF_NAME, hardware=hw).variant.name == GGUF_NAME
    assert localllm.plan_for("qwen2.5-0.5b-instruct", hardware=hw).family.name == "qwen2.5-0.5b-instruct"
    assert localllm.plan_for("auto", hardware=hw).fits
    # the same answer as the catalog planner for a name
    assert localllm.plan_for(GGUF_NAME, hardware=hw) == localllm.plan(GGUF_NAME, hardware=hw)


def test_load_missing_path_is_model_not_found(tmp_path):
    with pytest.raises(localllm.ModelNotFoundError, match="no such file") as err:
        localllm.load(str(tmp_path / "nothere.gguf"))
    assert isinstance(err.value, LookupError) and err.value.name == str(tmp_path / "nothere.gguf")


def test_load_name_quant_offline_says_it_is_not_on_disk():
    with pytest.raises(localllm.ModelUnavailableError):
        localllm.load(GGUF_NAME, offline=True, threads=1)


def test_load_bare_onnx_folder_name(in_tmp):
    with localllm.load("mine-onnx", threads=1) as m:
        assert m.info.runtime == "onnxruntime" and m.info.name == "mine-onnx"
        assert m.plan is not None and m.info.placement == m.plan.placement
        assert m.info.placement.n_threads == 1
        assert m.chat([{"role": "user", "content": "What is 23+19?"}], temperature=0).text == "23 + 19 = 42."


# --- localllm bench -----------------------------------------------------------------------


def test_bench_onnx_forms_are_refused_clearly(capsys):
    assert main(["bench", str(starter_onnx())]) == 1
    err = capsys.readouterr().err
    assert "is an ONNX model" in err and "bench measures GGUF files" in err
    assert main(["bench", ONNX_NAME]) == 1
    assert "is an ONNX model" in capsys.readouterr().err


def test_bench_names_not_on_disk_say_how_to_get_them(capsys):
    assert main(["bench", GGUF_NAME]) == 1
    err = capsys.readouterr().err
    assert f"{GGUF_NAME} is not on disk" in err and f"localllm pull {GGUF_NAME}" in err


def test_bench_missing_path_and_unknown_name(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nothere.gguf")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["bench", "qwen2.5-1.5b-instrukt"]) == 1
    assert "no model called" in capsys.readouterr().err


# --- localllm chat (the app itself replaced by a recorder) -----------------------------------


@pytest.fixture
def opened(monkeypatch):
    """What `localllm chat` would open the app with, instead of opening it."""
    import localllm.tui.launch

    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(localllm.tui.launch, "run", lambda model, **kw: calls.append((model, kw)) or 0)
    return calls


def test_chat_accepts_every_form(in_tmp, opened):
    for form in (
        "auto",
        GGUF_NAME,
        "qwen2.5-0.5b-instruct",
        str(starter_gguf()),
        "mine.gguf",
        "mine-onnx",
        str(starter_onnx() / "onnx" / "model.onnx"),
    ):
        assert main(["chat", form]) == 0, form
    models = [m for m, _ in opened]
    assert models[:3] == ["auto", GGUF_NAME, "qwen2.5-0.5b-instruct"]
    # a path reaches the app as a path with a separator, whatever form it was typed in
    assert all(os.sep in m and Path(m).exists() for m in models[3:])
    assert Path(models[5]).resolve() == starter_onnx().resolve()


def test_chat_reports_a_bad_model_before_opening_the_app(tmp_path, opened, capsys):
    assert main(["chat", str(tmp_path / "nothere.gguf")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["chat", "qwen2.5-1.5b-instrukt"]) == 1
    assert "did you mean" in capsys.readouterr().err
    assert main(["chat", "qwen2.5-1.5b-instruct:q9"]) == 1
    assert "available:" in capsys.readouterr().err
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(starter_gguf().read_bytes()[:3000])
    assert main(["chat", str(cut)]) == 1
    assert opened == []


def test_check_returns_the_path_or_none(in_tmp):
    assert check("auto") is None and check(GGUF_NAME) is None
    assert check("mine.gguf") == Path("mine.gguf")
    with pytest.raises(localllm.ModelNotFoundError, match="no such file"):
        check("gone.gguf")


def test_a_gguf_the_planner_cannot_size_is_explained_not_planned(tmp_path, capsys):
    """An architecture without attention heads (Mamba): plan says why; load() would still try it on the CPU."""
    import gguf
    import numpy as np

    from localllm.resolve import resolve

    path = tmp_path / "mamba.gguf"
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_name("mamba")
    w.add_block_count(1)
    w.add_embedding_length(4)
    w.add_context_length(1024)
    from localllm.testing import tiny_vocab

    tokens, scores, types = tiny_vocab()  # a real tokenizer and a layer: the validator refuses less
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_tensor("token_embd.weight", np.zeros((len(tokens), 4), dtype=np.float32))
    w.add_tensor("blk.0.ssm_in.weight", np.zeros((8, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert main(["plan", str(path), "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and f"error: cannot plan {path}" in captured.err and "head_count" in captured.err
    with pytest.raises(localllm.InvalidModelError, match="loads it on the CPU"):
        localllm.plan_for(path)
    r = resolve(path, threads=1, context=512)
    assert r.plan is None and r.placement.runtime == "llama.cpp"
    assert (r.placement.n_ctx, r.placement.n_threads, r.placement.n_gpu_layers) == (512, 1, 0)


def test_pull_a_path_says_it_downloads_catalog_models(tmp_path, capsys):
    """A path has nothing to download: pull says so (and how to use the file), not "no model in the catalog"."""
    assert main(["pull", str(starter_gguf())]) == 1
    err = capsys.readouterr().err
    assert "is a file already on disk" in err and "localllm run" in err and "catalog" in err
    assert main(["pull", str(tmp_path / "gone.gguf")]) == 1
    assert "nothing is there" in capsys.readouterr().err
