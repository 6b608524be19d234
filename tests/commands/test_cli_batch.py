"""`localllm batch MODEL INPUT.jsonl`: results in input order, resumable, bad lines reported in place."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import localllm
from localllm.cli import main

ONE_THREAD = ("--threads", "1")
ARGS = ("--raw", "--temperature", "0", "--max-tokens", "6", "--ctx", "128", "--parallel", "2", *ONE_THREAD)


def write_lines(path, rows) -> None:
    with open(path, "a", encoding="utf-8") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")


def read_out(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def expected(tiny_gguf, one_core):
    """What generate gives each prompt alone (greedy, 6 tokens), and a chat reply."""
    with localllm.load(tiny_gguf, context=128, hardware=one_core) as m:
        got = {p: m.generate(p, temperature=0, max_tokens=6) for p in ("hello world", "the cat", "one two", "moon")}
        got["chat:hi"] = m.chat([{"role": "user", "content": "hi"}], temperature=0, max_tokens=6)
        got["short"] = m.generate("the cat", temperature=0, max_tokens=2)
    return got


def test_batch_writes_in_order_reports_bad_lines_and_resumes(tiny_gguf, tmp_path, expected, capsys):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(
        src,
        [
            {"prompt": "hello world"},
            {"id": "b", "prompt": "the cat", "max_tokens": 2},
            "{not json",
            "",
            {"messages": [{"role": "user", "content": "hi"}]},
            {"prompt": "one two", "max_tokens": "many"},
        ],
    )
    assert main(["batch", str(tiny_gguf), str(src), "-o", str(out), *ARGS]) == 0
    rows = read_out(out)
    assert [r.get("id", r.get("index")) for r in rows] == [0, "b", 2, 3, 4]
    assert rows[0]["text"] == expected["hello world"].text and rows[0]["finish_reason"] == "length"
    assert rows[0]["completion_tokens"] == 6 and rows[0]["prompt_tokens"] == expected["hello world"].prompt_tokens
    assert rows[1]["text"] == expected["short"].text and rows[1]["completion_tokens"] == 2  # the line's own option
    assert rows[2]["finish_reason"] == "error" and "line 3: not JSON" in rows[2]["error"]
    assert rows[3]["text"] == expected["chat:hi"].text  # a conversation goes through the template
    assert rows[4]["finish_reason"] == "error" and "line 6" in rows[4]["error"] and "max_tokens" in rows[4]["error"]
    assert all("error" not in r for r in rows[:2])
    err = capsys.readouterr().err
    assert "5 lines in" in err and "3/3 items" in err and "tok/s aggregate" in err

    # append two lines and rerun: only those run, appended after the first results
    write_lines(src, [{"prompt": "moon"}, {"id": "b", "prompt": "the cat"}, {"id": 7, "prompt": "the cat"}])
    assert main(["batch", str(tiny_gguf), str(src), "-o", str(out), *ARGS]) == 0
    again = read_out(out)
    assert again[:5] == rows
    assert [r.get("id", r.get("index")) for r in again[5:]] == [5, 7]  # id "b" was done already
    assert again[5]["text"] == expected["moon"].text
    err = capsys.readouterr().err
    assert "6 already in" in err and "2 to run" in err  # the second "b" counts as done

    # nothing left: a third run loads nothing and writes nothing
    assert main(["batch", str(tiny_gguf), str(src), "-o", str(out), *ARGS]) == 0
    assert read_out(out) == again
    assert "loading" not in capsys.readouterr().err


def test_a_line_cut_by_an_interruption_runs_again(tiny_gguf, tmp_path, expected):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(src, [{"prompt": "hello world"}, {"prompt": "the cat"}])
    out.write_text(json.dumps({"index": 0, "text": "x", "finish_reason": "length"}) + '\n{"index": 1, "te')
    assert main(["batch", str(tiny_gguf), str(src), "-o", str(out), *ARGS]) == 0
    lines = out.read_text().splitlines()
    assert lines[1] == '{"index": 1, "te'  # left as it was, unreadable: ignored
    assert json.loads(lines[2])["index"] == 1 and json.loads(lines[2])["text"] == expected["the cat"].text


def test_batch_to_stdout_as_a_user_runs_it(tiny_gguf, tmp_path, expected):
    src = tmp_path / "in.jsonl"
    write_lines(src, [{"prompt": "the cat"}, {"prompt": "hello world"}])
    done = subprocess.run(
        [sys.executable, "-m", "localllm", "batch", str(tiny_gguf), str(src), *ARGS],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["index"], r["text"]) for r in rows] == [(0, expected["the cat"].text), (1, expected["hello world"].text)]
    assert "2/2 items" in done.stderr


def test_a_missing_input_file_is_an_error_not_a_crash(tiny_gguf, tmp_path, capsys):
    assert main(["batch", str(tiny_gguf), str(tmp_path / "nope.jsonl"), *ARGS]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_batch_holds_every_line_to_the_schema_and_writes_parsed(tiny_gguf, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_lines(src, [{"prompt": p} for p in ("hello world", "the cat", "moon")])
    n = {"type": "integer", "minimum": 0, "maximum": 99}
    schema = json.dumps({"type": "object", "properties": {"n": n}, "required": ["n"]})
    args = ("--raw", "--temperature", "1", "--max-tokens", "40", "--ctx", "128", "--parallel", "2", *ONE_THREAD)
    assert main(["batch", str(tiny_gguf), str(src), "-o", str(out), "--json-schema", schema, *args]) == 0
    rows = read_out(out)
    assert len(rows) == 3
    for r in rows:  # random weights: only the grammar makes these objects
        assert r.get("incomplete") or (json.loads(r["text"]) == r["parsed"] and 0 <= r["parsed"]["n"] <= 99), r
    assert any("parsed" in r for r in rows), rows
