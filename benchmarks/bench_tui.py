"""The chat TUI while a reply streams fast: key echo and the longest stall of the UI thread.

    python benchmarks/bench_tui.py [--rates 0,100,1000,10000] [--tokens 1000,8000] [--code-lines 300]
        [--seconds 6] [--size 120x40] [--key-interval 0.04] [--quick] [--profile [N]] [--stalls [MS]] [--json]
        [--model PATH]

The real ChatApp under Textual's Pilot (headless), fed by localllm.testing.FakeChatModel: a
Markdown reply (headings, paragraphs, lists, Python code fences, tables: markdown_reply) at a
fixed rate in tokens/s. Each rate x reply length runs once, in this process; then each rate with
a reply that is mostly one code block of --code-lines lines ("reply tokens" says "code"); rate 0
is the baseline: no reply, only typing, for --seconds.

  echo     a thread types a letter into the prompt every --key-interval seconds while the reply
           streams (through the driver's thread-safe send, as a terminal's input thread does);
           each key's time to the first frame that shows it (frames are also turned into terminal
           output, which headless Textual skips, so that cost counts). p50 / p95 / max, ms.
  stall    a thread asks the event loop every 5 ms to run a callback and records how late it
           runs: the longest wait is the longest stall of the UI thread. "stall" is while the
           reply streams, "at end" from its end to 0.5 s after it is stored (the final render).
  final    ms from the worker's last message to the reply shown whole and stored: text that came
           faster than the machine can show it is shown after the model is done.
  ui cpu   CPU time of the UI thread / wall time while the reply streams (1.0 = a whole core).
  updates  reply-text messages (ReplyDelta) handled per second of streaming.

A reply that would take longer than --seconds is stopped with Escape after that long (at
100 tokens/s the reply is --seconds x 100 tokens). Every key typed must land in the prompt in
order, and the stored reply must be the text written (all of it when it was not stopped), or
the run fails.

--model PATH: also one run with a real model (llama.cpp; a .gguf file, e.g. the tests' SmolLM2-135M)
writing a long reply (greedy, up to 1,000 tokens) to "write a long story": its own rate ("tokens/s"
says "real"), the decoder in C threads beside the UI as in use.

--profile N: cProfile the UI thread (the main thread) in each run and print its top N functions
(BENCH_TUI_SORT=cumulative to sort by cumulative time). --stalls MS: sample the UI thread's
stack every 5 ms and print, for each stall over MS, the frames seen most during it.

Before/after a change: run the same command with PYTHONPATH at a checkout of each (the older one
needs localllm/testing/fake_chat.py copied in). Numbers here compare designs on one machine;
the machine's load is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

LETTERS = "abcdefghijklmnoprstuvwxyz"  # no q: nothing the prompt might bind


def code_reply(lines: int) -> str:
    """A short answer around one long Python code block (a coding assistant's usual reply)."""
    from localllm.testing import markdown_reply

    code = []
    for i in range(lines):
        if i % 12 == 0:
            code += ["", f"def step_{i}(items: list[int], limit: int = {i}) -> list[int]:"]
        elif i % 12 == 1:
            code.append(f'    """Step {i}: keep what is under the limit."""')
        else:
            code.append(("        " if i % 3 else "    ") + f"value_{i} = compute(items, {i}) + limit  # {i}")
    body = "\n".join(code).lstrip("\n")
    return markdown_reply(150, seed=1) + "\n```python\n" + body + "\n```\n\n" + markdown_reply(150, seed=2)


@dataclass
class Result:
    rate: int
    tokens: int | str
    streamed: int = 0  # tokens written before the end (or the stop)
    stream_s: float = 0.0
    updates_per_s: float = 0.0
    ui_cpu: float = 0.0
    keys: int = 0
    echo_ms: list[float] = field(default_factory=list)
    stall_ms: float = 0.0  # the longest while the reply streams
    stall_end_ms: float = 0.0  # the longest from its end to 0.5 s after it is stored
    final_ms: float = 0.0  # ReplyDone handled to ReplyFinished: the end-of-reply work
    real_tps: float = 0.0  # a real model's decode rate (--model)
    profile: str = ""

    def row(self) -> dict[str, object]:
        echo = sorted(self.echo_ms)

        def pct(p: float) -> float:
            return round(echo[min(len(echo) - 1, int(p * len(echo)))], 1) if echo else float("nan")

        return {
            "tokens/s": self.rate if self.rate >= 0 else f"real {self.real_tps:.0f}",
            "reply tokens": self.tokens if self.rate else 0,  # "code": code_reply
            "streamed": self.streamed,
            "stream s": round(self.stream_s, 2),
            "updates/s": round(self.updates_per_s, 1),
            "ui cpu": round(self.ui_cpu, 2),
            "keys": self.keys,
            "echo p50 ms": round(statistics.median(echo), 1) if echo else float("nan"),
            "echo p95 ms": pct(0.95),
            "echo max ms": round(echo[-1], 1) if echo else float("nan"),
            "stall ms": round(self.stall_ms, 1),
            "stall at end ms": round(self.stall_end_ms, 1),
            "final ms": round(self.final_ms, 1),
        }


class Probe:
    """The event loop's lateness, sampled from a thread every 5 ms; with `stacks`, the UI thread's stack too."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stacks: bool) -> None:
        self.loop, self.stacks = loop, stacks
        self.lags: list[tuple[float, float]] = []  # (when asked, how late it ran)
        self.samples: list[tuple[float, tuple[str, ...]]] = []  # (when, the UI thread's frames, outermost first)
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            asked = time.perf_counter()
            self.loop.call_soon_threadsafe(lambda asked=asked: self.lags.append((asked, time.perf_counter() - asked)))
            if self.stacks:
                frame = sys._current_frames().get(self._main)  # type: ignore[arg-type]
                stack = []
                while frame is not None:
                    stack.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}")
                    frame = frame.f_back
                self.samples.append((asked, tuple(reversed(stack))))
            time.sleep(0.005)

    def longest(self, start: float, end: float) -> float:
        return max((lag for t, lag in self.lags if start <= t <= end), default=0.0)

    def report(self, origin: float, end: float, threshold_ms: float) -> str:
        """Each stall over the threshold: when, how long, and the UI thread's frames seen most during it."""
        out = []
        spans: list[tuple[float, float]] = []
        for asked, lag in self.lags:
            if lag * 1000 >= threshold_ms and not (spans and asked < spans[-1][1]):
                spans.append((asked, asked + lag))
        for a, b in spans:
            inside = [stack for t, stack in self.samples if a <= t <= b]
            counts: dict[str, int] = {}
            for stack in inside:
                for frame in dict.fromkeys(stack[-40:]):
                    counts[frame] = counts.get(frame, 0) + 1
            where = "streaming" if a < end else "after the end"
            out.append(f"stall {1000 * (b - a):.0f} ms at {a - origin:.2f} s ({where}), {len(inside)} samples:")
            top = sorted(counts.items(), key=lambda kv: -kv[1])
            out += [f"    {n:3d}  {frame}" for frame, n in top if n >= max(1, len(inside) // 4)][:30]
        return "\n".join(out) + "\n"


class Typist:
    """Types letters into the app from a thread, and notes the first frame that shows each."""

    def __init__(self, app, prompt, interval: float) -> None:
        from textual._compositor import CompositorUpdate

        self.app, self.prompt, self.interval = app, prompt, interval
        self.sent: list[float] = []  # when each key was sent
        self.shown: list[float] = []  # when the first frame with that many keys in the prompt was drawn
        self._typing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        display = app._display

        def timed_display(screen: object, renderable: object) -> None:
            display(screen, renderable)
            if isinstance(renderable, CompositorUpdate):
                renderable.render_segments(app.console)  # what a terminal driver does with it
            if self._typing.is_set() or len(self.shown) < len(self.sent):
                now = time.perf_counter()
                while len(self.shown) < min(len(prompt.text), len(self.sent)):
                    self.shown.append(now)

        app._display = timed_display

    def start(self) -> None:
        self._typing.set()
        self._thread.start()

    def stop(self) -> None:
        self._typing.clear()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def typed(self) -> str:
        return "".join(LETTERS[i % len(LETTERS)] for i in range(len(self.sent)))

    def echo_ms(self) -> list[float]:
        return [1000 * (b - a) for a, b in zip(self.sent, self.shown, strict=False)]

    def _run(self) -> None:
        from textual import events

        i = 0
        while self._typing.is_set():
            ch = LETTERS[i % len(LETTERS)]
            event = events.Key(ch, ch)
            event.set_sender(self.app)
            self.sent.append(time.perf_counter())
            self.app._driver.send_message(event)
            i += 1
            time.sleep(self.interval)


async def measure(
    rate: int,
    tokens: int | str,
    *,
    seconds: float,
    size: tuple[int, int],
    key_interval: float,
    profile: int,
    stalls: float,
    tmp: Path,
    model_path: str = "",
) -> Result:
    from localllm.testing import FakeChatModel, markdown_reply, split_tokens
    from localllm.tui.app import ChatApp
    from localllm.tui.reply import ReplyDelta, ReplyDone
    from localllm.tui.screens import ChatScreen
    from localllm.tui.widgets import PromptArea

    if isinstance(tokens, int):
        reply = markdown_reply(tokens, seed=tokens)
    else:  # "code:N" (code_reply), or "real" (--model: this reply is not used)
        reply = code_reply(int(tokens[5:])) if tokens.startswith("code:") else ""
    model = FakeChatModel(reply, tokens_per_s=rate or None)
    (tmp / "fake.gguf").write_bytes(b"GGUF")  # the start-up report needs the file to exist
    target, loader, sampling = str(tmp / "fake.gguf"), (lambda target, **kw: model), {"temperature": 0}
    prompt_text = "hello"
    if model_path:  # the real thing: localllm.load through the app's own loader
        target, loader, sampling = model_path, None, {"temperature": 0, "max_tokens": 1000}
        prompt_text = "write a long story"
    result = Result(rate, tokens)
    deltas: list[float] = []
    done_at: list[float] = []  # ReplyDone handled: the worker finished
    finished: list[float] = []  # ReplyFinished: the reply is stored and shown
    counted: list[object] = []  # the ReplyDeltas counted (kept alive: an id is unique only while alive)

    def hook(message: object) -> None:
        if isinstance(message, ReplyDelta):
            if not any(m is message for m in counted[-3:]):  # one that bubbles up is seen at each pump
                counted.append(message)
                deltas.append(time.perf_counter())
        elif isinstance(message, ReplyDone) and not done_at:
            done_at.append(time.perf_counter())
        elif isinstance(message, ChatScreen.ReplyFinished) and not finished:
            finished.append(time.perf_counter())

    db = tmp / f"chats-{rate}-{tokens}.sqlite3"
    app = ChatApp(target, db_path=db, loader=loader, sampling=sampling)
    async with app.run_test(size=size, message_hook=hook) as pilot:
        await _until(lambda: app.model is not None and isinstance(app.screen, ChatScreen), 60, "the app to start")
        prompt = app.chat_screen.query_one(PromptArea)
        await pilot.press(*[{" ": "space"}.get(ch, ch) for ch in prompt_text])
        await pilot.pause()
        gc.collect()
        probe = Probe(asyncio.get_running_loop(), stacks=bool(stalls))
        typist = Typist(app, prompt, key_interval)
        profiler = cProfile.Profile() if profile else None
        probe.start()
        if profiler is not None:
            profiler.enable()
        try:
            if rate:
                app._driver.send_message(_key(app, "enter"))
                await _until(lambda: bool(deltas), 30, "the reply to start")
                start = deltas[0]
            else:
                prompt.load_text("")
                start = time.perf_counter()
            cpu = time.thread_time()  # this coroutine runs on the UI thread
            typist.start()
            stop_at = start + seconds
            while (not rate or not done_at) and time.perf_counter() < stop_at:
                await asyncio.sleep(0.02)
            if rate:
                if not done_at:
                    app._driver.send_message(_key(app, "escape"))
                await _until(lambda: bool(done_at), 30, "the reply to end")
            end = done_at[0] if rate else time.perf_counter()
            result.ui_cpu = (time.thread_time() - cpu) / max(1e-9, time.perf_counter() - start)
            if rate:  # text that came faster than the screen can show comes after the model's end
                await _until(lambda: bool(finished), 300, "the reply to be shown and stored")
            typist.stop()
            await _until(lambda: len(prompt.text) >= len(typist.sent), 60, "the keys typed to land")
            await asyncio.sleep(0.5)  # the final render shows
        finally:
            typist.stop()
            probe.stop()
            if profiler is not None:
                profiler.disable()
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("BENCH_TUI_SORT", "tottime")).print_stats(
                profile
            )
            result.profile = out.getvalue()
        result.stall_ms = 1000 * probe.longest(start, end)
        if rate:
            result.stall_end_ms = 1000 * probe.longest(end, finished[0] + 0.5)
            result.final_ms = 1000 * (finished[0] - done_at[0])
            result.updates_per_s = len(deltas) / max(1e-9, end - start)
        if stalls:
            result.profile += probe.report(start, end, stalls)
        result.stream_s = end - start
        result.streamed = model.streamed
        if model_path:  # what the real model wrote, at what rate
            (chat,) = app.history.chats()
            meta = app.history.messages(chat.id)[-1].meta
            result.streamed, result.real_tps = int(meta.get("tokens", 0)), float(meta.get("decode_tps", 0.0))
        result.keys = len(typist.sent)
        result.echo_ms = typist.echo_ms()
        if prompt.text != typist.typed:
            raise SystemExit(f"{rate} tokens/s: keys lost or out of order: {prompt.text!r} != {typist.typed!r}")
        if rate and not model_path:
            (chat,) = app.history.chats()
            stored = app.history.messages(chat.id)[-1].content
            whole = model.streamed == len(split_tokens(reply))
            if not reply.startswith(stored) or (whole and stored != reply):
                raise SystemExit(f"{rate} tokens/s: the stored reply is not the text written")
    return result


async def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def _key(app, key: str):
    from textual import events

    event = events.Key(key, None)
    event.set_sender(app)
    return event


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="0,100,1000,10000", help="tokens/s, comma separated (0: typing only)")
    parser.add_argument("--tokens", default="1000,8000", help="reply lengths in tokens, comma separated")
    parser.add_argument("--code-lines", type=int, default=300, help="lines of the code-block reply (0: none)")
    parser.add_argument("--seconds", type=float, default=6.0, help="stop a longer reply after this long")
    parser.add_argument("--size", default="120x40", help="terminal columns x rows")
    parser.add_argument("--key-interval", type=float, default=0.04, help="seconds between typed keys")
    parser.add_argument("--quick", action="store_true", help="0, 1,000 and 10,000 tokens/s, 4,000 tokens, 3 s")
    parser.add_argument("--profile", type=int, nargs="?", const=25, default=0, help="print the UI thread's top N")
    parser.add_argument("--stalls", type=float, nargs="?", const=100.0, default=0.0, help="explain stalls over MS")
    parser.add_argument("--model", default="", help="also a run with this real model file")
    parser.add_argument("--json", action="store_true", help="one JSON object per run")
    args = parser.parse_args()
    if args.quick:
        args.rates, args.tokens, args.seconds = "0,1000,10000", "4000", 3.0
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    rates = [int(x) for x in args.rates.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["LOCALLLM_HOME"] = str(Path(tmp) / "home")  # no user cache, keymap or chats touched
        os.environ["LOCALLLM_DATA"] = str(Path(tmp) / "data")
        runs: list[tuple[int, int | str]] = [(0, 0)] if 0 in rates else []
        runs += [(rate, tokens) for tokens in (int(x) for x in args.tokens.split(",")) for rate in rates if rate]
        if args.code_lines:
            runs += [(rate, f"code:{args.code_lines}") for rate in rates if rate]
        if args.model:
            runs.append((-1, "real"))
        for rate, tokens in runs:
            r = asyncio.run(
                measure(
                    rate,
                    tokens,
                    seconds=args.seconds,
                    size=(cols, rows),
                    key_interval=args.key_interval,
                    profile=args.profile,
                    stalls=args.stalls,
                    tmp=Path(tmp),
                    model_path=args.model if rate < 0 else "",
                )
            )
            if args.json:
                print(json.dumps({**r.row(), **({"profile": r.profile} if r.profile else {})}), flush=True)
            else:
                print("  ".join(f"{k} {v}" for k, v in r.row().items()), flush=True)
                if r.profile:
                    print(r.profile, flush=True)
    print(f"load average {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
