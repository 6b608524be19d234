"""`localllm serve` against llama-cpp-python's own server, same model, same threads.

    pip install -e '.[test]' 'llama-cpp-python[server]==0.3.36'
    python benchmarks/bench_server.py [--model M.gguf] [--clients 1,4,8] [--requests 16] [--rounds 2]

Each round starts each server as a fresh process (alternating which goes first), then for
each client count C sends `--requests` streamed chat completions from C concurrent clients
(each client sends its next request when its last one ends) and measures:
  throughput  completion tokens of all requests / wall time from first send to last byte
  ttft        time from a request's send to its first content event (p50, p95)
Both servers get the same model, context per request (--ctx), threads (--threads) and
temperature 0 with max_tokens --tokens; llama-cpp-python's server runs one request at a
time (started with --interrupt_requests False: by default a new request cuts off the one
streaming, which would count as throughput lost), localllm's decodes up to --parallel
together (continuous batching). Each side counts its own usage.completion_tokens; the two
sample differently at temperature 0 (llama-cpp-python keeps its repeat penalty of 1.1), so
replies end at slightly different lengths.

Target (issue 17): localllm ahead in throughput at 4 and 8 clients, within 10 % at 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
QUESTIONS = [
    "Explain in two sentences why the sky is blue.",
    "Write a short poem about the sea.",
    "List three uses of a paperclip.",
    "What is the difference between a virus and a bacterium?",
    "Describe a cat to someone who has never seen one.",
    "Give me a recipe for a simple salad.",
    "Why do we have seasons?",
    "Tell me a fact about the moon.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(side: str, model: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str, str]:
    port = free_port()
    if side == "localllm":
        cmd = [
            sys.executable,
            "-m",
            "localllm",
            "serve",
            model,
            "--port",
            str(port),
            "--ctx",
            str(args.ctx),
            "--threads",
            str(args.threads),
            "--parallel",
            str(args.parallel),
            "--offline",
        ]
        name = model
    else:
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            model,
            "--port",
            str(port),
            "--n_ctx",
            str(args.ctx),
            "--n_threads",
            str(args.threads),
            "--n_threads_batch",
            str(args.threads),
            # by default a new request interrupts the one streaming: every request should finish
            "--interrupt_requests",
            "False",
        ]
        name = model
    env = dict(os.environ, LOCALLLM_OFFLINE="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    probe = "/health" if side == "localllm" else "/v1/models"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{side} server exited {proc.returncode}: {' '.join(cmd)}")
        try:
            if httpx.get(url + probe, timeout=2).status_code == 200:
                return proc, url, name
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    proc.kill()
    raise SystemExit(f"{side} server did not start in 180 s")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def one_request(client: httpx.AsyncClient, url: str, model: str, q: str, tokens: int) -> tuple[float, int]:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": q}],
        "temperature": 0,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft = None
    n = 0
    pieces = 0
    async with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                n = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if (choice.get("delta") or {}).get("content"):
                    pieces += 1
                    if ttft is None:
                        ttft = time.perf_counter() - t0
    return (ttft if ttft is not None else time.perf_counter() - t0), (n or pieces)


async def load_test(url: str, model: str, clients: int, requests: int, tokens: int) -> dict:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(QUESTIONS[i % len(QUESTIONS)])
    ttfts: list[float] = []
    total = 0

    async def worker() -> None:
        nonlocal total
        async with httpx.AsyncClient(timeout=600) as client:
            while not queue.empty():
                q = queue.get_nowait()
                ttft, n = await one_request(client, url, model, q, tokens)
                ttfts.append(ttft)
                total += n

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - t0
    ttfts.sort()
    return {
        "throughput": total / wall,
        "tokens": total,
        "wall_s": wall,
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a GGUF file (default: the tests' SmolLM2)")
    ap.add_argument("--clients", default="1,4,8")
    ap.add_argument("--requests", type=int, default=16, help="requests per client count")
    ap.add_argument("--rounds", type=int, default=2, help="fresh server pairs, alternating")
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens per request")
    ap.add_argument("--ctx", type=int, default=1024, help="context per request")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8, help="localllm's sequences decoded together")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    model = args.model or str(Path.home() / ".cache/localllm-test-models/SmolLM2-135M-Instruct.Q4_1.gguf")
    if not Path(model).is_file():
        raise SystemExit(f"{model} is missing: run the tests once (they fetch SmolLM2) or pass --model")
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError as exc:
        raise SystemExit(
            f"llama-cpp-python's server is not installed ({exc}): pip install 'llama-cpp-python[server]'"
        ) from None
    counts = [int(c) for c in args.clients.split(",")]
    results: dict[str, dict[int, list[dict]]] = {"localllm": {}, "llama-cpp-python": {}}
    for r in range(args.rounds):
        order = ["localllm", "llama-cpp-python"] if r % 2 == 0 else ["llama-cpp-python", "localllm"]
        for side in order:
            proc, url, name = start(side, model, args)
            try:
                asyncio.run(load_test(url, name, 1, 2, 8))  # warm: first-request costs out of the measurement
                for c in counts:
                    res = asyncio.run(load_test(url, name, c, args.requests, args.tokens))
                    results[side].setdefault(c, []).append(res)
                    print(
                        f"round {r + 1} {side:17s} clients {c}: {res['throughput']:6.1f} tok/s  "
                        f"ttft p50 {res['ttft_p50']:.3f}s p95 {res['ttft_p95']:.3f}s  ({res['tokens']} tokens)",
                        flush=True,
                    )
            finally:
                stop(proc)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
    print(
        f"\n{cpu}, {os.cpu_count()} CPUs; {args.threads} threads, ctx {args.ctx}, {args.tokens} tokens/request, "
        f"{args.requests} requests per client count, medians of {args.rounds} rounds; load avg {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'clients':>7s} {'localllm tok/s':>15s} {'llama-cpp-python':>17s} {'ratio':>6s} "
        f"{'ttft p50 (ours/theirs)':>24s} {'ttft p95 (ours/theirs)':>24s}"
    )
    summary = {}
    for c in counts:
        ours = results["localllm"][c]
        theirs = results["llama-cpp-python"][c]
        med = lambda rs, k: statistics.median(x[k] for x in rs)  # noqa: E731
        ratio = med(ours, "throughput") / med(theirs, "throughput")
        summary[c] = ratio
        print(
            f"{c:7d} {med(ours, 'throughput'):15.1f} {med(theirs, 'throughput'):17.1f} {ratio:6.2f} "
            f"{med(ours, 'ttft_p50'):11.3f}/{med(theirs, 'ttft_p50'):.3f}s {med(ours, 'ttft_p95'):14.3f}/"
            f"{med(theirs, 'ttft_p95'):.3f}s"
        )
    if args.json:
        print(json.dumps({"results": results, "ratios": summary}))


if __name__ == "__main__":
    main()
