"""The fuzz corpus's fork server: every mutated GGUF is loaded and run in its own child process.

    results = run_corpus([(Source("tiny", path), seed) for seed in range(100)], timeout=10)
    print(summary_line(results)); print(failure_table(results))

    python tests/fuzzrun.py --json out.json [--raw] [--timeout 20] NAME:START:COUNT:PATH ...

The parent imports localllm (or llama_cpp, for `mode="raw"`) once, writes each mutant
(`fuzzgguf.mutate`) and forks a child that runs it:

- localllm: `plan_for(path, hardware=<one core>)` (the default context: the planner's own
  search), `load(path, context=256, hardware=<one core>)`, `generate("hello", max_tokens=4,
  temperature=0)`, `chat([{"role": "user", "content": "hi"}], ...)`, `close()`;
- raw: `llama_cpp.Llama(model_path=..., n_ctx=256, n_threads=1, verbose=False)` and
  `create_completion("hello", max_tokens=4)`: llama.cpp alone, for comparison.

The child reports each stage it enters and its result through a pipe; the parent sorts
every file into one outcome:

    ok      loaded and ran
    error   a clean error: a LocalLLMError subclass (raw mode: any Python exception)
    bare    a Python exception that is not a LocalLLMError
    signal  the child was killed by a signal (SIGABRT, SIGSEGV...): which, and llama.cpp's last words
    hang    no result within the timeout, or memory growing past the limit: the child is killed
    exit    the child exited without reporting (a native exit() call)

Run it from a fresh process (the CLI, or tools/fuzz_gguf.py): forking a process whose
threads or OpenMP pool have already run (a pytest session that ran models) can deadlock
the child. Children run at a lower priority, without core dumps, and with llama.cpp's
backtrace (which attaches gdb) off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fuzzgguf  # noqa: E402

__all__ = ["BAD", "OUTCOMES", "Result", "Source", "failure_table", "main", "run_corpus", "summary_line"]

OUTCOMES = ("ok", "error", "bare", "signal", "hang", "exit")
BAD = ("bare", "signal", "hang", "exit")
TIMEOUT_S = 20.0  # a healthy tiny/135M-model child finishes in well under a second
MEMORY_LIMIT = 3 << 30  # resident bytes: the context_length=0 hang grew to 660 MB in 17 s
N_CTX = 256
_MAX_MESSAGE = 400  # characters of an error message kept (pipe writes stay under PIPE_BUF)


@dataclass(frozen=True)
class Source:
    name: str
    path: Path
    sparse: bool | None = None  # None: sparse above 16 MB (see fuzzgguf.mutate)


@dataclass(frozen=True)
class Result:
    source: str
    seed: int
    cls: str
    detail: str
    outcome: str  # one of OUTCOMES
    stage: str = ""  # plan | load | generate | chat | close (where it ended or failed)
    error: str = ""  # exception type, signal name, "timeout" or "memory"
    message: str = ""  # the exception's message, or llama.cpp's last line on a signal
    seconds: float = 0.0
    stages: str = ""  # per-stage results, e.g. "load ok, generate ok, chat ChatTemplateError"


# --- the children ---------------------------------------------------------------------
def _short(exc: BaseException) -> str:
    return f"{exc}"[:_MAX_MESSAGE]


def _child_localllm(path: str, hardware: Any, send: Callable[..., None]) -> None:
    import localllm
    from localllm.errors import LocalLLMError

    worst: dict[str, Any] = {"outcome": "ok"}
    stages: list[str] = []

    def stage(name: str, fn: Callable[[], Any]) -> Any:
        send(stage=name)
        try:
            value = fn()
        except LocalLLMError as exc:
            stages.append(f"{name} {type(exc).__name__}")
            if worst["outcome"] == "ok":
                worst.update(outcome="error", stage=name, error=type(exc).__name__, message=_short(exc))
            return exc
        except Exception as exc:  # noqa: BLE001 - a bare exception is what the corpus looks for
            stages.append(f"{name} {type(exc).__name__}!")
            if worst["outcome"] != "bare":
                worst.update(outcome="bare", stage=name, error=type(exc).__name__, message=_short(exc))
            return exc
        stages.append(f"{name} ok")
        return value

    # the plan at the model's own context first: load(context=256) never reaches the planner's
    # context search, which a file's context_length drives
    stage("plan", lambda: localllm.plan_for(path, hardware=hardware))
    model = stage("load", lambda: localllm.load(path, context=N_CTX, hardware=hardware))
    if not isinstance(model, BaseException):
        stage("generate", lambda: model.generate("hello", max_tokens=4, temperature=0))
        stage("chat", lambda: model.chat([{"role": "user", "content": "hi"}], max_tokens=4, temperature=0))
        stage("close", model.close)
    send(final=True, stages=", ".join(stages), **worst)


def _child_raw(path: str, hardware: Any, send: Callable[..., None]) -> None:
    import llama_cpp

    send(stage="load")
    try:
        llm = llama_cpp.Llama(model_path=path, n_ctx=N_CTX, n_threads=1, n_threads_batch=1, verbose=False)
    except Exception as exc:  # noqa: BLE001 - llama-cpp-python's clean refusal is a ValueError
        send(final=True, outcome="error", stage="load", error=type(exc).__name__, message=_short(exc))
        return
    send(stage="generate")
    try:
        llm.create_completion("hello", max_tokens=4, temperature=0)
    except Exception as exc:  # noqa: BLE001
        send(final=True, outcome="error", stage="generate", error=type(exc).__name__, message=_short(exc))
        return
    send(stage="close")
    llm.close()
    send(final=True, outcome="ok", stage="close")


def one_core_hardware() -> Any:
    """This machine's facts with one core, so every plan uses one llama.cpp thread."""
    import dataclasses

    import localllm

    hw = localllm.probe()
    return dataclasses.replace(hw, cpu=dataclasses.replace(hw.cpu, physical_cores=1, quota_cores=None))


def _prepare(mode: str) -> tuple[Callable[..., None], Any]:
    """Import everything once in the parent (children inherit it), with no model loaded."""
    if mode == "raw":
        import llama_cpp  # noqa: F401 - loads the shared library once

        return _child_raw, None
    import jinja2  # noqa: F401

    import localllm.chat_template  # noqa: F401
    import localllm.model  # noqa: F401
    import localllm.resolve  # noqa: F401
    import localllm.validate  # noqa: F401
    from localllm.runtimes import llamacpp

    llamacpp.install_log_handler()
    llamacpp.use_extra_buffers()  # an AMX machine's one-off trial runs here, not in every child
    return _child_localllm, one_core_hardware()


# --- the parent -----------------------------------------------------------------------
@dataclass
class _Running:
    pid: int
    fd: int
    source: str
    mutant: fuzzgguf.Mutant
    log: Path
    start: float
    buf: bytes = b""
    stage: str = "start"
    final: dict | None = None
    eof: bool = False


def _spawn(child: Callable[..., None], hardware: Any, source: str, m: fuzzgguf.Mutant, log: Path) -> _Running:
    r, w = os.pipe()
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(r)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL)
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            os.nice(5)

            def send(**msg: Any) -> None:
                os.write(w, (json.dumps(msg) + "\n").encode())

            child(str(m.path), hardware, send)
        except BaseException as exc:  # noqa: BLE001 - the harness itself failed in the child
            with contextlib.suppress(BaseException):  # the pipe may be gone: the child exits either way
                os.write(
                    w,
                    (
                        json.dumps(
                            {
                                "final": True,
                                "outcome": "bare",
                                "stage": "harness",
                                "error": type(exc).__name__,
                                "message": _short(exc),
                            }
                        )
                        + "\n"
                    ).encode(),
                )
        finally:
            os._exit(0)
    os.close(w)
    os.close(log_fd)
    return _Running(pid, r, source, m, log, time.monotonic())


def _read(run: _Running) -> None:
    try:
        data = os.read(run.fd, 65536)
    except OSError:
        data = b""
    if not data:
        run.eof = True
        return
    run.buf += data
    *lines, run.buf = run.buf.split(b"\n")
    for line in lines:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("final"):
            run.final = msg
        elif "stage" in msg:
            run.stage = msg["stage"]


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


_PATH = re.compile(r"(?:/[^\s:/]+)+/([^\s:/]+:\d+)")
_NATIVE = re.compile(r"GGML_ASSERT|GGML_ABORT|terminate called|what\(\)|error|fault|abort|fatal", re.I)


def _native_words(log: Path) -> str:
    """llama.cpp's last words (an assert, an uncaught C++ exception), paths shortened."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    picked = [ln for ln in lines if _NATIVE.search(ln)]
    return _PATH.sub(r"\1", " | ".join(picked[-2:] or lines[-1:]))[:_MAX_MESSAGE]


def _finish(run: _Running, status: int | None, killed: str = "") -> Result:
    os.close(run.fd)
    secs = time.monotonic() - run.start
    m = run.mutant
    base = dict(source=run.source, seed=m.seed, cls=m.cls, detail=m.detail, seconds=round(secs, 3))
    if killed:
        limit = "no result" if killed == "timeout" else f"resident memory past {MEMORY_LIMIT >> 20} MiB"
        res = Result(
            **base, outcome="hang", stage=run.stage, error=killed, message=f"{limit} after {secs:.1f} s in {run.stage}"
        )
    elif status is not None and os.WIFSIGNALED(status):
        try:
            name = signal.Signals(os.WTERMSIG(status)).name
        except ValueError:
            name = f"signal {os.WTERMSIG(status)}"
        res = Result(**base, outcome="signal", stage=run.stage, error=name, message=_native_words(run.log))
    elif run.final is not None:
        f = run.final
        message = f.get("message", "").replace(str(m.path.parent) + os.sep, "")  # the temp folder is noise
        res = Result(
            **base,
            outcome=f.get("outcome", "bare"),
            stage=f.get("stage", run.stage),
            error=f.get("error", ""),
            message=message,
            stages=f.get("stages", ""),
        )
    else:
        code = os.WEXITSTATUS(status) if status is not None and os.WIFEXITED(status) else -1
        res = Result(
            **base, outcome="exit", stage=run.stage, error=f"exit status {code}", message=_native_words(run.log)
        )
    for p in (run.log, m.path):
        p.unlink(missing_ok=True)
    return res


def run_corpus(
    jobs: Iterable[tuple[Source, int]],
    *,
    mode: str = "localllm",
    timeout: float = TIMEOUT_S,
    parallel: int = 1,
    work_dir: str | Path | None = None,
    deadline: float | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Mutate, fork, run and classify each (source, seed); at most `parallel` children at once.

    Mutants are written into `work_dir` (a temporary folder by default, removed afterwards)
    and deleted as soon as their child is done. `deadline` (time.monotonic()) stops
    starting new files once passed; the files left are not run (len(result) says how many ran;
    a mutator failure, printed to stderr, also leaves its file out).
    """
    if mode not in ("localllm", "raw"):
        raise ValueError(f"mode must be 'localllm' or 'raw', not {mode!r}")
    os.environ["GGML_NO_BACKTRACE"] = "1"  # ggml's abort handler would attach gdb to every crashing child
    os.environ.setdefault("LOCALLLM_OFFLINE", "1")
    child, hardware = _prepare(mode)
    own = work_dir is None
    folder = Path(tempfile.mkdtemp(prefix="localllm-fuzz-") if own else work_dir)
    specs: dict[str, fuzzgguf.Spec] = {}
    queue = list(jobs)
    queue.reverse()
    running: list[_Running] = []
    results: list[Result] = []
    n = 0

    def done(res: Result) -> None:
        results.append(res)
        if on_result is not None:
            on_result(res)

    try:
        while queue or running:
            while queue and len(running) < max(1, parallel) and (deadline is None or time.monotonic() < deadline):
                src, seed = queue.pop()
                if src.name not in specs:
                    specs[src.name] = fuzzgguf.read_spec(src.path)
                try:
                    m = fuzzgguf.mutate(specs[src.name], seed, folder, sparse=src.sparse)
                except Exception:  # a mutator bug: say which file, run the rest (it counts as not run)
                    import traceback

                    print(
                        f"fuzzrun: mutating {src.name} seed {seed} failed:\n{traceback.format_exc()}", file=sys.stderr
                    )
                    continue
                n += 1
                running.append(_spawn(child, hardware, src.name, m, folder / f"child-{n}.log"))
            if not running:
                break
            ready, _, _ = select.select([r.fd for r in running if not r.eof], [], [], 0.2)
            for run in running:
                if run.fd in ready:
                    _read(run)
            now = time.monotonic()
            for run in list(running):
                pid, status = os.waitpid(run.pid, os.WNOHANG)
                if pid:
                    while not run.eof:
                        _read(run)
                    done(_finish(run, status))
                    running.remove(run)
                    continue
                killed = "timeout" if now - run.start > timeout else "memory" if _rss(run.pid) > MEMORY_LIMIT else ""
                if killed:
                    os.kill(run.pid, signal.SIGKILL)
                    os.waitpid(run.pid, 0)
                    done(_finish(run, None, killed))
                    running.remove(run)
    finally:
        for run in running:  # interrupted: no child outlives the run
            try:
                os.kill(run.pid, signal.SIGKILL)
                os.waitpid(run.pid, 0)
            except OSError:
                pass
        if own:
            shutil.rmtree(folder, ignore_errors=True)
    return results


# --- reports --------------------------------------------------------------------------
def counts(results: Sequence[Result]) -> Counter:
    return Counter(r.outcome for r in results)


def summary_line(results: Sequence[Result], label: str = "fuzz") -> str:
    c = counts(results)
    secs = sum(r.seconds for r in results)
    return (
        f"{label}: {len(results)} files, " + ", ".join(f"{o} {c[o]}" for o in OUTCOMES) + f" ({secs:.1f} s in children)"
    )


def _what(r: Result) -> str:
    if r.outcome == "hang":
        return f"{r.error} in {r.stage}"
    text = f"{r.error} in {r.stage}"
    return f"{text}: {r.message}" if r.message else text


def failure_table(results: Sequence[Result], *, width: int = 110, examples: int = 1) -> str:
    """The bad outcomes grouped by mutation class and kind, largest groups first."""
    groups: dict[tuple[str, str, str, str], list[Result]] = {}
    for r in results:
        if r.outcome in BAD:
            key = (r.cls, r.outcome, r.stage, r.error)
            groups.setdefault(key, []).append(r)
    if not groups:
        return "no signals, hangs, bare exceptions or silent exits"
    rows = sorted(groups.items(), key=lambda kv: (kv[0][0], -len(kv[1])))
    lines = [f"{'class':<20} {'outcome':<7} {'n':>3}  what (example)"]
    for (cls, outcome, _stage, _err), rs in rows:
        ex = "; ".join(f"{r.source}#{r.seed} {r.detail}" for r in rs[:examples])
        what = _what(rs[0])
        lines.append(f"{cls:<20} {outcome:<7} {len(rs):>3}  {what}"[:width])
        lines.append(f"{'':<33}e.g. {ex}"[:width])
    return "\n".join(lines)


# --- command line ---------------------------------------------------------------------
def _parse_job(text: str) -> tuple[Source, int, int]:
    try:
        name, start, count, path = text.split(":", 3)
        return Source(name, Path(path)), int(start), int(count)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME:START:COUNT:PATH") from exc


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Run mutated GGUF files through localllm (or raw llama.cpp), one child process per file."
    )
    ap.add_argument(
        "jobs",
        nargs="+",
        type=_parse_job,
        metavar="NAME:START:COUNT:PATH",
        help="mutate PATH with seeds START..START+COUNT-1",
    )
    ap.add_argument("--raw", action="store_true", help="plain llama_cpp.Llama instead of localllm")
    ap.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds per file before it counts as a hang")
    ap.add_argument("--parallel", type=int, default=1, help="children at once (default 1)")
    ap.add_argument("--budget", type=float, default=None, help="stop starting files after this many seconds")
    ap.add_argument("--json", type=Path, help="write every result here")
    args = ap.parse_args(argv)
    home = None
    if "LOCALLLM_HOME" not in os.environ:  # never the user's cache
        home = tempfile.mkdtemp(prefix="localllm-fuzz-home-")
        os.environ["LOCALLLM_HOME"] = home
    try:
        jobs = [(src, seed) for src, start, count in args.jobs for seed in range(start, start + count)]
        deadline = time.monotonic() + args.budget if args.budget else None
        results = run_corpus(
            jobs,
            mode="raw" if args.raw else "localllm",
            timeout=args.timeout,
            parallel=args.parallel,
            deadline=deadline,
        )
    finally:
        if home:
            shutil.rmtree(home, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps({"planned": len(jobs), "results": [asdict(r) for r in results]}))
    print(summary_line(results, "raw llama.cpp" if args.raw else "localllm"))
    print(failure_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
