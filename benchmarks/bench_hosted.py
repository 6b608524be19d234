"""What running a model split across workers in a child process costs per call (issue 19).

    python benchmarks/bench_hosted.py [--smollm2 PATH] [--tokens 64] [--rounds 3] [--rpc DIR]

Two llama.cpp RPC workers on 127.0.0.1 (the tests' build by default, ~/.cache/localllm-test-rpc),
the real SmolLM2-135M-Instruct Q4_1, every layer on the workers (n_gpu_layers 99, split 1:1),
one thread. Measured, medians of --rounds, one-token `eval` calls after a 6-token prompt:

  in-process  LlamaCppEngine after rpc.attach in this benchmark's own child (what the hosted
              engine's child runs), timed there: the llama.cpp + RPC cost of a token
  hosted      load_engine(...) -> HostedEngine, timed here: the same plus the socket round trip
              and the logits copy into the shared file
  no-op call  a request the child answers without touching llama.cpp (the round trip alone)
  row copy    the child's copy of one logits row into the shared file
  pickled     the rejected design: one [n_vocab] float32 row sent back through the socket pair
              as a pickled array instead of the shared file (a round trip, no model involved)

The in-process run is a child of its own because an attached worker stays connected to the
process that attached it, and a worker serves one client at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

SMOLLM2 = Path.home() / ".cache" / "localllm-test-models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
RPC = Path.home() / ".cache" / "localllm-test-rpc"
PROMPT = "The capital of France is"

IN_PROCESS = """
import json, sys, time
from localllm.placement import Placement
from localllm.runtimes import rpc
from localllm.runtimes.llamacpp import LlamaCppEngine
from localllm.runtimes.rpc_build import find_rpc_build
path, n, endpoints = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
rpc.attach(endpoints, find_rpc_build())
e = LlamaCppEngine(path, Placement(n_ctx=512, n_threads=1, n_gpu_layers=99, workers=tuple(endpoints),
                                   tensor_split=(1.0, 1.0)))
logits = e.eval(e.tokenize(sys.argv[3]))
times, out = [], []
for _ in range(n):
    tok = int(logits.argmax()); out.append(tok)
    t0 = time.perf_counter(); logits = e.eval([tok]); times.append(time.perf_counter() - t0)
e.close()
print(json.dumps({"times": times, "tokens": out}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_workers(build, n: int = 2) -> tuple[list[subprocess.Popen], list[str]]:
    from localllm.runtimes import rpc

    procs, endpoints = [], []
    for _ in range(n):
        port = free_port()
        env = {**os.environ, "LD_LIBRARY_PATH": str(build.folder)}
        cmd = [str(build.server), "--host", "127.0.0.1", "--port", str(port), "--threads", "1"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        endpoints.append(f"127.0.0.1:{port}")
        for _ in range(300):
            try:
                rpc.hello(endpoints[-1], timeout=1.0)
                break
            except rpc.WorkerUnavailableError:
                time.sleep(0.1)
    return procs, endpoints


def hosted(path: Path, endpoints: list[str], n: int) -> dict:
    from localllm.placement import Placement
    from localllm.runtimes import load_engine

    placement = Placement(n_ctx=512, n_threads=1, n_gpu_layers=99, workers=tuple(endpoints), tensor_split=(1.0, 1.0))
    e = load_engine(path, placement)
    try:
        logits = e.eval(e.tokenize(PROMPT))
        times, out = [], []
        for _ in range(n):
            tok = int(logits.argmax())
            out.append(tok)
            t0 = time.perf_counter()
            logits = e.eval([tok])
            times.append(time.perf_counter() - t0)
        noop = []
        for _ in range(200):
            t0 = time.perf_counter()
            e._call("pid")
            noop.append(time.perf_counter() - t0)
        return {"times": times, "tokens": out, "noop": noop}
    finally:
        e.close()


def pickled_round_trip(n_vocab: int, n: int = 200) -> list[float]:
    """A float32 [n_vocab] row pickled back through a socket pair per request."""
    import numpy as np

    a, b = socket.socketpair()
    parent, child = Connection(a.detach()), Connection(b.detach())
    row = np.random.default_rng(0).standard_normal(n_vocab).astype(np.float32)

    def serve() -> None:
        for _ in range(n):
            child.recv()
            child.send(("ok", row, None))

    t = threading.Thread(target=serve)
    t.start()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        parent.send(("eval", ([1],), 0))
        parent.recv()
        times.append(time.perf_counter() - t0)
    t.join()
    return times


def copy_into_shared(n_vocab: int, n: int = 2000) -> list[float]:
    """What the child adds to each eval: one logits row copied into a shared memfd map."""
    import mmap

    import numpy as np

    fd = os.memfd_create("bench") if hasattr(os, "memfd_create") else os.open(os.devnull, os.O_RDWR)
    os.ftruncate(fd, n_vocab * 4 * 16)
    mm = mmap.mmap(fd, n_vocab * 4 * 16)
    flat = np.frombuffer(mm, dtype=np.float32)
    row = np.random.default_rng(0).standard_normal(n_vocab).astype(np.float32)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        flat[:n_vocab] = row
        times.append(time.perf_counter() - t0)
    del flat
    mm.close()
    os.close(fd)
    return times


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", type=Path, default=SMOLLM2)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rpc", type=Path, default=None, help="folder of the RPC build")
    args = ap.parse_args()
    from localllm.runtimes.rpc_build import BUILD_ENV, find_rpc_build, installed_llama_cpp_version

    folder = args.rpc or RPC / f"llama-cpp-python-{installed_llama_cpp_version()}"
    os.environ[BUILD_ENV] = str(folder)
    build = find_rpc_build()
    if build is None:
        sys.exit(f"no RPC build in {folder}: run `localllm worker --build-only` with {BUILD_ENV}={folder}")
    procs, endpoints = start_workers(build)
    rows = []
    try:
        for _ in range(args.rounds):
            cmd = [sys.executable, "-c", IN_PROCESS, str(args.smollm2), str(args.tokens), PROMPT, *endpoints]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            inproc = json.loads(done.stdout.strip().splitlines()[-1])
            host = hosted(args.smollm2, endpoints, args.tokens)
            assert host["tokens"] == inproc["tokens"], "hosted and in-process greedy tokens differ"
            rows.append((ms(inproc["times"]), ms(host["times"]), ms(host["noop"])))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    pickled = ms(pickled_round_trip(49152))
    copied = ms(copy_into_shared(49152))
    inproc_ms = statistics.median(r[0] for r in rows)
    host_ms = statistics.median(r[1] for r in rows)
    noop_ms = statistics.median(r[2] for r in rows)
    print("rounds (in-process, hosted, no-op ms):", ", ".join(f"({a:.2f}, {b:.2f}, {c:.3f})" for a, b, c in rows))
    print(f"per-token eval, {args.tokens} tokens, median of {args.rounds} rounds (SmolLM2 on 2 workers):")
    print(f"  in-process  {inproc_ms:7.3f} ms")
    print(f"  hosted      {host_ms:7.3f} ms  (+{host_ms - inproc_ms:.3f} ms, {100 * (host_ms / inproc_ms - 1):+.1f}%)")
    print(f"  no-op call  {noop_ms:7.3f} ms  (the round trip alone)")
    print(f"  row copy    {copied:7.3f} ms  (49152 float32 into the shared map, in the child)")
    print(f"  pickled row {pickled:7.3f} ms  (49152 float32 through the socket, the design not taken)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
