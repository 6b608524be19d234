"""`localllm run MODEL "prompt"`: answer a prompt, streamed to stdout.

By default PROMPT goes as a user message through the model's chat template (its own, or
a fallback for its family), as `ollama run` and `llama-cli` do; `--raw` completes the
text as it is. Text goes to stdout as it is generated; status and timings go to stderr,
so `localllm run m.gguf "..." > out.txt` captures only the model's words. `--json`
prints one JSON object with the text, finish reason and timings instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from localllm.commands.plan import MODEL_HELP, add_worker_options, context_arg
from localllm.errors import InvalidOptionError, LocalLLMError
from localllm.speculative import SPECULATIVE_MODES


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="answer a prompt with a model (chat template applied), streamed to stdout",
        description="Load MODEL and answer PROMPT: the prompt goes as a user message through "
        "the model's chat template (its own, or a fallback for its family) and "
        "the reply streams to stdout. --raw completes PROMPT as plain text "
        "instead.",
    )
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("prompt", metavar="PROMPT", help="the prompt; '-' reads it from stdin")
    p.add_argument(
        "--raw", action="store_true", help="plain text completion: no chat template, PROMPT is continued as it is"
    )
    # the default since chat became it; kept so older scripts that pass it still run
    p.add_argument("--chat", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--system", metavar="TEXT", help="system message (not with --raw)")
    add_sampling_options(p)
    add_load_options(p)
    p.add_argument("--json", action="store_true", help="print the full result with timings as JSON")
    p.set_defaults(func=run)


def add_sampling_options(p, *, each: str = "") -> None:
    """The sampling flags `run` and `batch` share (read back by `_options`); `each` words them per item."""
    p.add_argument("--max-tokens", type=int, metavar="N", help=f"stop {each}after N tokens (default 512)")
    p.add_argument("--temperature", type=float, metavar="T", help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, metavar="K")
    p.add_argument("--top-p", type=float, metavar="P")
    p.add_argument("--min-p", type=float, metavar="P")
    p.add_argument("--repeat-penalty", type=float, metavar="R")
    seed_help = "make sampling reproducible" + (" (a line's own seed wins)" if each else "")
    p.add_argument("--seed", type=int, metavar="N", help=seed_help)
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop string (repeatable)")
    g = p.add_argument_group("structured output (one of these; the reply is held to it token by token)")
    g.add_argument("--json-schema", metavar="SCHEMA", help="a JSON schema: a file, or the JSON itself ('{...}')")
    g.add_argument("--regex", metavar="RE", help="a regular expression the whole reply matches")
    g.add_argument("--choice", action="append", metavar="TEXT", help="the reply is exactly one of these (repeatable)")
    g.add_argument(
        "--grammar", metavar="FILE", help="a grammar file: Lark (start: ...) or llama.cpp's GBNF (root ::= ...)"
    )
    if not each:  # batch steps many sequences at once and does not speculate (run_batch)
        p.add_argument(
            "--speculative",
            choices=SPECULATIVE_MODES,
            help="prompt-lookup drafts tokens from n-gram matches in the prompt and checks them in one "
            "batch: faster when the reply repeats the prompt (editing code) (default: auto)",
        )


def add_load_options(p, *, ctx_help: str = "context window in tokens") -> None:
    """The loading flags `run` and `batch` share: context, threads, runtime, offline, force."""
    p.add_argument("--ctx", type=context_arg, metavar="N", help=ctx_help)
    p.add_argument(
        "--threads",
        type=_positive,
        metavar="N",
        help="CPU threads (default: the plan's, from the cores or what bench measured fastest)",
    )
    p.add_argument("--runtime", choices=("llama.cpp", "onnxruntime"), help="override the planner's runtime")
    p.add_argument("--offline", action="store_true", default=None, help="never touch the network")
    p.add_argument("--force", action="store_true", help="load even if the plan predicts it will not fit")
    add_worker_options(p)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return n


def _options(args) -> dict:
    pairs = {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "seed": args.seed,
        "stop": tuple(args.stop) if args.stop else None,
        "speculative": getattr(args, "speculative", None),
        "json_schema": _schema_arg(args.json_schema) if args.json_schema else None,  # run and batch both have these
        "regex": args.regex,
        "choices": args.choice,
        "grammar": _read_arg("--grammar", args.grammar) if args.grammar else None,
    }
    return {k: v for k, v in pairs.items() if v is not None}


def _schema_arg(value: str) -> str:
    """--json-schema: the JSON itself, or a file of it (make_constraint checks the JSON)."""
    return value if value.lstrip().startswith(("{", "[", "true", "false")) else _read_arg("--json-schema", value)


def _read_arg(flag: str, path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LocalLLMError(
            f"{flag} {path}: cannot read it ({exc.__class__.__name__}: {exc}); give a readable text file"
        ) from None


def _progress(done: int, total: int | None = None, *_: object) -> None:
    from localllm.units import file_size  # not at the top: `localllm --help` loads this module

    if total:
        print(f"\rdownloading {file_size(done)}/{file_size(total)}", end="", file=sys.stderr, flush=True)


def run(args) -> int:
    # imported when the command runs: `localllm --help` stays fast
    from localllm.generation import SamplingOptions
    from localllm.model import load

    if args.raw and (args.chat or args.system):
        raise LocalLLMError(
            f"--raw completes plain text, so {'--chat' if args.chat else '--system'} cannot apply; drop one of them"
        )
    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    options = _options(args)
    # bad input is reported before the model loads (seconds for a big one), not after
    SamplingOptions.from_kwargs(**options)
    if not prompt.strip():
        raise InvalidOptionError(
            f"the prompt is empty ({'stdin gave no text' if args.prompt == '-' else repr(prompt)}); "
            "give the text to answer, or '-' to read it from stdin",
            option="prompt",
            value=prompt,
            allowed="non-blank text",
        )
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
    ) as llm:
        print(
            f"loaded {llm.info.name} ({llm.info.runtime}, n_ctx {llm.info.n_ctx}, {llm.info.load_seconds:.2f}s)",
            file=sys.stderr,
            flush=True,
        )
        for line in _auto_lines(args.model, llm):
            print(line, file=sys.stderr, flush=True)
        if args.raw:
            chunks = llm.stream(prompt, **options)
        else:
            messages = [{"role": "system", "content": args.system}] if args.system else []
            messages.append({"role": "user", "content": prompt})
            # as in the TUI: drop whole old turns rather than fail (the library's default is
            # "error"); a lone prompt too long for the window still says so
            chunks = llm.chat_stream(messages, overflow="truncate", **options)
        parts: list[str] = []
        ids: list[int] = []
        last = None
        for chunk in chunks:
            parts.append(chunk.text)
            ids.extend(chunk.token_ids)
            last = chunk
            if not args.json and chunk.text:
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
        timings = last.timings if last is not None else None
        if args.json:
            result = {
                "model": llm.info.name,
                "path": llm.info.path,
                "runtime": llm.info.runtime,
                "mode": "raw" if args.raw else "chat",
                "text": "".join(parts),
                "finish_reason": last.finish_reason if last else None,
                "prompt_tokens": timings.prompt_tokens if timings else 0,
                "completion_tokens": len(ids),
                "timings": asdict(timings) if timings else None,
            }
            if last is not None and last.parsed is not None:
                parsed = last.parsed
                result["parsed"] = parsed.model_dump() if hasattr(parsed, "model_dump") else parsed
            if last is not None and last.incomplete:
                result["incomplete"] = True
            json.dump(result, sys.stdout, ensure_ascii=False, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write("\n")
            if last is not None and timings is not None:
                cut = " (cut inside the structure: incomplete)" if last.incomplete else ""
                print(
                    f"[{last.finish_reason}]{cut} {len(ids)} tokens; prompt {timings.prompt_tokens} tokens "
                    f"at {timings.prompt_tps:.1f} tok/s, first token {timings.ttft_s * 1000:.0f} ms, "
                    f"decode {timings.decode_tps:.1f} tok/s"
                    + (
                        f", drafts accepted {timings.accepted_tokens}/{timings.drafted_tokens}"
                        if timings.drafted_tokens
                        else ""
                    ),
                    file=sys.stderr,
                )
    return 0


def _auto_lines(model: str, llm) -> list[str]:
    """What "auto" chose and where from (each candidate tried before it, and why it could not
    be had), or why it fell back to the built-in starter."""
    from localllm.resolve import is_auto

    if getattr(llm.info, "note", ""):
        return [f"note: {llm.info.note}"]
    plan = getattr(llm, "plan", None)
    if not is_auto(model) or plan is None or not plan.sources:
        return []
    *before, chosen = plan.sources
    return [f"auto: not available: {line}" for line in before] + [f"auto chose {chosen}"]
