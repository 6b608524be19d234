"""`localllm run`: the chat template by default, `--raw` for plain completion, run as a user would."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from localllm.starter import starter_gguf, starter_onnx

# one llama.cpp thread: its workers spin at each barrier, which crawls on shared CI cores
ONE_THREAD = ("--threads", "1")
GREEDY = ("--temperature", "0")
TEMPLATE_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "localllm", "run", *args], capture_output=True, text=True, input=stdin, timeout=300
    )


def test_run_chats_by_default():
    done = run_cli(str(starter_gguf()), "What is 23+19?", *GREEDY, *ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "23 + 19 = 42.\n"
    assert "loaded starter" in done.stderr and "tok/s" in done.stderr  # status on stderr, words on stdout


def test_raw_completes_the_text_as_it_is():
    done = run_cli(str(starter_gguf()), "What is 23+19?", "--raw", *GREEDY, *ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert done.stdout == " = 10.\n"


def test_chat_flag_is_still_accepted_and_changes_nothing():
    done = run_cli(str(starter_gguf()), "What is 23+19?", "--chat", *GREEDY, *ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "23 + 19 = 42.\n"


def test_system_message_goes_into_the_prompt_and_json_says_chat():
    plain = json.loads(run_cli(str(starter_gguf()), "What is 23+19?", "--json", *GREEDY, *ONE_THREAD).stdout)
    with_system = run_cli(
        str(starter_gguf()), "What is 23+19?", "--system", "You answer sums briefly.", "--json", *GREEDY, *ONE_THREAD
    )
    assert with_system.returncode == 0, with_system.stderr
    data = json.loads(with_system.stdout)
    assert plain["mode"] == data["mode"] == "chat"
    assert plain["text"] == "23 + 19 = 42."
    assert data["prompt_tokens"] > plain["prompt_tokens"]  # the system turn is in the prompt
    raw = json.loads(run_cli(str(starter_gguf()), "What is 23+19?", "--raw", "--json", *GREEDY, *ONE_THREAD).stdout)
    assert raw["mode"] == "raw" and raw["text"] == " = 10."


def test_prompt_from_stdin_is_chatted_too():
    done = run_cli(str(starter_gguf()), "-", *GREEDY, *ONE_THREAD, stdin="What is 23+19?")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "23 + 19 = 42.\n"


def test_onnx_folder_chats_the_same():
    done = run_cli(str(starter_onnx()), "What is 23+19?", *GREEDY, *ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "23 + 19 = 42.\n"
    assert "onnxruntime" in done.stderr


def test_raw_with_system_is_a_clear_error():
    done = run_cli(str(starter_gguf()), "hi", "--raw", "--system", "be brief", *ONE_THREAD)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: --raw")
    assert done.stdout == ""


def test_bad_numbers_are_usage_errors_not_bugs():
    for flag, value in (("--ctx", "8"), ("--threads", "0")):
        done = run_cli(str(starter_gguf()), "hi", flag, value)
        assert done.returncode == 2 and f"argument {flag}" in done.stderr and "bug" not in done.stderr


def test_help_says_chat_is_the_default_and_hides_the_old_flag():
    done = subprocess.run(
        [sys.executable, "-m", "localllm", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "chat template" in text and "--raw" in text and "plain text completion" in text
    assert "--chat" not in text
    assert ".gguf file" in text and "ONNX folder" in text and "name:quant" in text


def test_a_model_without_a_template_says_which_fallback_it_chats_with(tmp_path):
    from localllm.testing import write_llama_gguf

    path = write_llama_gguf(tmp_path / "notemplate.gguf", seed=1, chat_template=None)
    done = run_cli(str(path), "hello", "--max-tokens", "4", "--ctx", "256", *GREEDY, *ONE_THREAD)
    assert done.returncode == 0, done.stderr
    assert "no chat template" in done.stderr  # the library's warning, on stderr
    assert not any(t in done.stdout for t in TEMPLATE_TOKENS)


def test_real_model_answers_a_question_without_template_tokens(smollm2_gguf):
    done = run_cli(
        str(smollm2_gguf), "What is the capital of France?", "--max-tokens", "48", "--ctx", "1024", *GREEDY, *ONE_THREAD
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert not any(t in done.stdout for t in TEMPLATE_TOKENS)
    assert "\ufffd" not in done.stdout


@pytest.mark.parametrize("extra", [(), ("--raw",)])
def test_real_model_json_text_is_clean(smollm2_gguf, extra):
    done = run_cli(
        str(smollm2_gguf),
        "What is the capital of France?",
        "--max-tokens",
        "24",
        "--ctx",
        "1024",
        "--json",
        *GREEDY,
        *ONE_THREAD,
        *extra,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["mode"] == ("raw" if extra else "chat")
    assert not any(t in data["text"] for t in TEMPLATE_TOKENS)
    assert data["completion_tokens"] <= 24


def test_raw_stdout_is_exactly_generate(tiny_gguf):
    import localllm

    with localllm.load(tiny_gguf, context=256, threads=1) as m:
        expected = m.generate("hello world", temperature=0, max_tokens=12).text
        chatted = m.chat([{"role": "user", "content": "hello world"}], temperature=0, max_tokens=12).text
    common = ("--max-tokens", "12", "--ctx", "256", *GREEDY, *ONE_THREAD)
    raw = run_cli(str(tiny_gguf), "hello world", "--raw", *common)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout == expected + "\n"
    chat = run_cli(str(tiny_gguf), "hello world", *common)
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == chatted + "\n"


def test_bad_options_and_an_empty_prompt_fail_before_the_model_loads(capsys):
    from localllm.cli import main

    assert main(["run", "no-such-file.gguf", "hi", "--temperature", "nan"]) == 1
    err = capsys.readouterr().err
    assert "temperature" in err and "nan" in err and "loading" not in err  # checked before any load
    assert main(["run", "no-such-file.gguf", "   "]) == 1
    err = capsys.readouterr().err
    assert "the prompt is empty" in err and "loading" not in err


def test_structured_output_flags(tmp_path):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    done = run_cli(
        str(starter_gguf()), "What is 23+19?", "--json-schema", json.dumps(schema), "--json", *GREEDY, *ONE_THREAD
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert json.loads(data["text"]) == data["parsed"] and isinstance(data["parsed"]["answer"], int)
    (tmp_path / "s.json").write_text(json.dumps(schema))
    from_file = run_cli(
        str(starter_gguf()), "What is 23+19?", "--json-schema", str(tmp_path / "s.json"), "--json", *GREEDY, *ONE_THREAD
    )
    assert json.loads(from_file.stdout)["parsed"] == data["parsed"]
    picked = run_cli(str(starter_gguf()), "Is 42 even?", "--choice", "yes", "--choice", "no", *GREEDY, *ONE_THREAD)
    assert picked.returncode == 0 and picked.stdout.strip() in ("yes", "no"), picked.stderr
    (tmp_path / "g.gbnf").write_text('root ::= [0-9]+ " apples"')
    counted = run_cli(
        str(starter_gguf()),
        "How many?",
        "--grammar",
        str(tmp_path / "g.gbnf"),
        "--max-tokens",
        "12",
        "--json",
        *GREEDY,
        *ONE_THREAD,
    )
    assert counted.returncode == 0, counted.stderr
    data = json.loads(counted.stdout)
    assert data.get("incomplete") or re.fullmatch(r"[0-9]+ apples", data["text"]), data


def test_bad_structured_output_flags_fail_before_loading(tmp_path):
    missing = run_cli(str(starter_gguf()), "hi", "--grammar", str(tmp_path / "nope.lark"))
    assert missing.returncode == 1 and "--grammar" in missing.stderr and "cannot read it" in missing.stderr
    bad = run_cli(str(starter_gguf()), "hi", "--regex", "(")
    assert bad.returncode == 1 and "invalid regex" in bad.stderr and "loading" not in bad.stderr
    both = run_cli(str(starter_gguf()), "hi", "--regex", "a", "--choice", "a")
    assert both.returncode == 1 and "were all given" in both.stderr
