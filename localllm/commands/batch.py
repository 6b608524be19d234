"""`localllm batch MODEL INPUT.jsonl [-o OUT.jsonl]`: many prompts in one pass, results in order.

Each input line is {"prompt": "..."} or {"messages": [...]}, with optional "id",
"max_tokens", "stop" and "seed". A prompt goes as a user message through the chat template
(after --system), as `localllm run` does; --raw completes it as plain text. Each output line
is {"id" (or "index", the line's place among the input's records, from 0), "text",
"finish_reason", "prompt_tokens", "completion_tokens"} and "error" when that line failed: bad
JSON, a bad option, a template error or a prompt too long fail their own line only.

With -o, results are appended to OUT as the lines finish, in input order, and a rerun with
the same OUT skips the lines already there (by id, or by index): an interrupted job resumes.
Items cancelled by Ctrl-C are not written, so they run next time. A line that failed is
written as an error row and counts as done (OUT stays append-only, one row per line): fix the
input and delete its row from OUT to run it again. Progress (items done, aggregate tokens/s)
goes to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from localllm.commands.plan import MODEL_HELP
from localllm.commands.run import _auto_lines, _positive, _progress, add_load_options, add_sampling_options
from localllm.errors import InvalidOptionError, InvalidOptionTypeError, LocalLLMError

# Per-line options a record may carry; the rest of the sampling options come from the command line.
LINE_OPTIONS = ("max_tokens", "stop", "seed")
# Progress is redrawn at most this often (a batch of short items finishes many per second).
PROGRESS_EVERY_S = 0.2


def register(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="run many prompts (a JSONL file) in one pass, results in order; resumable",
        description='Load MODEL and answer every line of INPUT (JSONL: {"prompt": ...} or '
        '{"messages": [...]}, optional "id", "max_tokens", "stop", "seed"), several '
        "sequences at once. Results go to OUT (or stdout) in input order; rerunning with "
        "the same OUT skips the lines already done (a failed line too: delete its error row to retry it).",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("input", metavar="INPUT.jsonl", help="one prompt or conversation per line; '-' reads stdin")
    p.add_argument("-o", "--output", metavar="OUT.jsonl", help="append results here and resume from it")
    p.add_argument(
        "--parallel", type=_positive, metavar="N", help="sequences decoded together (default: the planner's)"
    )
    p.add_argument("--raw", action="store_true", help="complete prompts as plain text (no chat template)")
    p.add_argument("--system", metavar="TEXT", help="system message for prompt lines (not with --raw)")
    add_sampling_options(p, each="each item ")
    add_load_options(p, ctx_help="context window of each sequence, in tokens")
    p.set_defaults(func=run)


@dataclass
class Record:
    """One input line: what to run, or why it cannot."""

    index: int  # place among the input's records (non-blank lines), from 0
    line: int  # line number in the file, from 1
    id: Any = None
    prompt: str | None = None
    messages: list | None = None
    options: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return ("id", json.dumps(self.id)) if self.id is not None else ("index", str(self.index))


def read_records(lines: list[str], *, raw: bool, system: str | None, base: dict[str, Any]) -> list[Record]:
    """The records of a JSONL input; a bad line becomes a Record with its error."""
    from localllm.generation import SamplingOptions

    records: list[Record] = []
    for n, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        rec = Record(index=len(records), line=n)
        records.append(rec)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            rec.error = f"line {n}: not JSON ({exc.msg} at column {exc.colno}); each line is one JSON object"
            continue
        if not isinstance(data, dict):
            rec.error = f"line {n}: a JSON {type(data).__name__}, not an object with 'prompt' or 'messages'"
            continue
        rec.id = data.get("id")
        if ("prompt" in data) == ("messages" in data):
            rec.error = f"line {n}: give exactly one of 'prompt' (text) or 'messages' (a conversation)"
            continue
        rec.options = {k: data[k] for k in LINE_OPTIONS if k in data}
        try:
            SamplingOptions.from_kwargs(**{**base, **rec.options})
        except (InvalidOptionError, InvalidOptionTypeError) as exc:
            rec.error = f"line {n}: {exc}"
            continue
        if "messages" in data:
            rec.messages = data["messages"]
            if system and isinstance(rec.messages, list) and not _has_system(rec.messages):
                rec.messages = [{"role": "system", "content": system}, *rec.messages]
        elif raw:
            rec.prompt = data["prompt"]
        else:
            rec.messages = [{"role": "system", "content": system}] if system else []
            rec.messages.append({"role": "user", "content": data["prompt"]})
    return records


def _has_system(messages: list) -> bool:
    return bool(messages) and isinstance(messages[0], dict) and messages[0].get("role") == "system"


def done_keys(path: Path) -> tuple[set[tuple[str, str]], bool]:
    """Keys of the results OUT already holds, and whether it ends mid-line (a run cut while writing)."""
    if not path.exists():
        return set(), False
    text = path.read_text(encoding="utf-8")
    keys: set[tuple[str, str]] = set()
    for line in text.splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by an interruption: that record runs again
        if isinstance(data, dict) and "id" in data:
            keys.add(("id", json.dumps(data["id"])))
        elif isinstance(data, dict) and "index" in data:
            keys.add(("index", str(data["index"])))
    return keys, bool(text) and not text.endswith("\n")


class OrderedWriter:
    """Writes results in input order as they finish: a result waits until all before it are out."""

    def __init__(self, out: TextIO, order: list[Record]) -> None:
        self._out, self._order, self._next = out, order, 0
        self._ready: dict[int, dict[str, Any]] = {}

    def put(self, rec: Record, result: dict[str, Any] | None) -> None:
        """result None: the record was cancelled; it and everything after it are not written."""
        self._ready[rec.index] = result if result is not None else {}
        while self._next < len(self._order) and self._order[self._next].index in self._ready:
            row = self._ready.pop(self._order[self._next].index)
            if not row:  # cancelled: stop here, so a rerun starts from it
                self._next = len(self._order)
                return
            self._out.write(json.dumps(row, ensure_ascii=False) + "\n")
            self._out.flush()
            self._next += 1


def _row(rec: Record, text: str, finish: str, prompt_tokens: int, completion_tokens: int, error: object) -> dict:
    row: dict[str, Any] = {"id": rec.id} if rec.id is not None else {"index": rec.index}
    row.update(text=text, finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
    if error is not None:
        row["error"] = str(error)
    return row


def run(args) -> int:
    # imported when the command runs: `localllm --help` stays fast
    from localllm.commands.run import _options
    from localllm.generation import SamplingOptions
    from localllm.model import load

    if args.raw and args.system:
        raise LocalLLMError("--raw completes plain text, so --system cannot apply; drop one of them")
    base = _options(args)
    SamplingOptions.from_kwargs(**base)  # a bad option is reported before the model loads
    lines = (sys.stdin.read() if args.input == "-" else _read_input(args.input)).splitlines()
    records = read_records(lines, raw=args.raw, system=args.system, base=base)
    out_path = Path(args.output) if args.output else None
    done, cut = done_keys(out_path) if out_path is not None else (set(), False)
    todo = [r for r in records if r.key not in done]
    skipped = len(records) - len(todo)
    print(
        f"{len(records)} lines in {args.input}; {skipped} already in {out_path}, {len(todo)} to run"
        if out_path is not None and skipped
        else f"{len(records)} lines in {args.input}",
        file=sys.stderr,
        flush=True,
    )
    out = open(out_path, "a", encoding="utf-8") if out_path is not None else sys.stdout  # noqa: SIM115
    try:
        if cut:
            out.write("\n")  # the cut line stays unreadable; its record runs again below
        writer = OrderedWriter(out, todo)
        for rec in todo:
            if rec.error is not None:
                writer.put(rec, _row(rec, "", "error", 0, 0, rec.error))
        runnable = [r for r in todo if r.error is None]
        if runnable:
            _run_records(args, load, runnable, writer, base)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _read_input(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LocalLLMError(f"input file {path} does not exist; give a JSONL file, one prompt per line") from None


def _run_records(args, load, records: list[Record], writer: OrderedWriter, base: dict[str, Any]) -> None:
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    with load(
        args.model,
        context=args.ctx,
        runtime=args.runtime,
        offline=args.offline,
        progress=_progress,
        force=args.force,
        threads=args.threads,
        workers=args.workers,
        parallel=args.parallel,
        workload="batch",
    ) as llm:
        print(
            f"loaded {llm.info.name} ({llm.info.runtime}, {llm.info.placement.n_seq} sequences of "
            f"{llm.info.n_ctx} tokens, {llm.info.load_seconds:.2f}s)",
            file=sys.stderr,
            flush=True,
        )
        for line in _auto_lines(args.model, llm):
            print(line, file=sys.stderr, flush=True)
        progress = _Progress(len(records))
        try:
            # conversations, then (with --raw) plain prompts: each kind is one batch
            for chat in (True, False):
                group = [r for r in records if (r.messages is not None) == chat]
                if group:
                    _run_group(llm, group, chat, writer, progress, base)
        finally:
            progress.end()


def _run_group(llm, group: list[Record], chat: bool, writer: OrderedWriter, progress: _Progress, base: dict) -> None:
    inputs = [r.messages if chat else r.prompt for r in group]
    options: dict[str, Any] = dict(base)
    for name in LINE_OPTIONS:  # one value per line: the line's own, else the command line's
        if any(name in r.options for r in group):
            default = base.get(name, getattr(_defaults(), name))
            values = [r.options.get(name, default) for r in group]
            # a per-item stop is a list of stop lists (a list of strings is every item's)
            options[name] = [_stops(v) for v in values] if name == "stop" else values
    texts: list[list[str]] = [[] for _ in group]
    n_ids = [0] * len(group)
    for j, chunk in llm.stream_batch(inputs, chat=chat, **options):
        texts[j].append(chunk.text)
        n_ids[j] += len(chunk.token_ids)
        progress.tokens(len(chunk.token_ids))
        if chunk.finish_reason is None:
            continue
        rec = group[j]
        if chunk.finish_reason == "cancelled":
            writer.put(rec, None)
        else:
            t = chunk.timings
            row = _row(rec, "".join(texts[j]), chunk.finish_reason, t.prompt_tokens if t else 0, n_ids[j], chunk.error)
            if chunk.parsed is not None:
                row["parsed"] = chunk.parsed.model_dump() if hasattr(chunk.parsed, "model_dump") else chunk.parsed
            if chunk.incomplete:
                row["incomplete"] = True
            writer.put(rec, row)
        progress.item()


def _defaults():
    from localllm.generation import SamplingOptions

    return SamplingOptions()


def _stops(value: object) -> tuple[str, ...] | object:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value) if isinstance(value, list) else value


class _Progress:
    """`12/100 items, 3,456 tokens, 41.2 tok/s` on stderr, redrawn in place."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.n_tokens = total, 0, 0
        self.t0 = self._last = time.perf_counter()

    def tokens(self, n: int) -> None:
        self.n_tokens += n
        if time.perf_counter() - self._last >= PROGRESS_EVERY_S:
            self._draw()

    def item(self) -> None:
        self.done += 1
        self._draw()

    def _draw(self) -> None:
        self._last = now = time.perf_counter()
        tps = self.n_tokens / (now - self.t0) if now > self.t0 else 0.0
        print(
            f"\r{self.done}/{self.total} items, {self.n_tokens} tokens, {tps:.1f} tok/s aggregate",
            end="",
            file=sys.stderr,
            flush=True,
        )

    def end(self) -> None:
        self._draw()
        print(file=sys.stderr, flush=True)
