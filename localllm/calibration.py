"""What this machine measured: memory bandwidth and `localllm bench` results, kept per machine.

One JSON file per machine under `<home>/machines/<key>.json`, where the key is derived
from the hardware facts that decide speed (CPU, cores, RAM, GPUs), so a profile or a
hand-built Hardware never picks up this machine's numbers. The planner takes a
`Calibration` value and prefers its measured decode speed to the bandwidth formula, and
its measured batch throughput (benchmarks/bench_batch.py) to the batch prediction, and
where `localllm bench --runtimes` measured both runtimes on one model, the faster runtime.

    {"key": ..., "bandwidth": {...}, "bench": [{...}, ...], "loads": [...], "batch": [...],
     "runtimes": [...]}

Every section is optional and records ignore fields they do not know, so files written by
older versions (without "batch" or "runtimes") load as they are.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.paths import home

if TYPE_CHECKING:  # pragma: no cover
    from localllm.catalog import Family, Variant
    from localllm.hardware import Hardware
    from localllm.placement import KVType

__all__ = [
    "BandwidthRecord",
    "BatchRecord",
    "BenchRecord",
    "Calibration",
    "ExtraBuffersVerdict",
    "LoadRecord",
    "RuntimeRecord",
    "load_calibration",
    "machine_file",
    "machine_key",
    "model_signature",
    "save_bandwidth",
    "save_batch",
    "save_bench",
    "save_extra_buffers",
    "save_load",
    "save_runtimes",
]


def _log():
    # imported when needed: probe() reads this module, and logging/hashlib/json/tempfile
    # would add tens of milliseconds to its cold path
    import logging

    return logging.getLogger(__name__)


# A measured record matches a planned variant when the weights differ by at most this
# share: a catalog variant is sized by its file, a local file by its tensor bytes
# (the header adds a few MB).
WEIGHT_MATCH_TOLERANCE = 0.03
# Bench records kept per machine (newest win; one per model signature, threads and layers).
MAX_BENCH_RECORDS = 200
# Load records kept per machine (newest win; one per file and placement).
MAX_LOAD_RECORDS = 200
# Batch records kept per machine (newest win; one per file, sequences, threads and layers).
MAX_BATCH_RECORDS = 200
# Runtime records kept per machine (newest win; one per runtime, model and threads).
MAX_RUNTIME_RECORDS = 100


@dataclass(frozen=True)
class ExtraBuffersVerdict:
    """Whether ggml's extra buffer types (AMX, repacked weights) run on this machine with this
    llama.cpp build: a one-off trial in a subprocess (runtimes.llamacpp.trial_extra_buffers)."""

    build: str  # llama-cpp-python version and a digest of its system info
    ok: bool
    detail: str  # what the trial saw ("decoded a token", "killed by SIGILL", ...)
    date: str


@dataclass(frozen=True)
class LoadRecord:
    """Resident memory one load of a local file really took at a placement: the process's
    resident set after the first evaluation minus before the load (weights touched, repacked
    copies, KV cache, buffers). Kept after every load; plans of the same file prefer it."""

    path: str
    file_size: int
    mtime_ns: int
    n_ctx: int
    n_gpu_layers: int
    kv_type: KVType
    flash_attn: bool
    extra_buffers: bool
    resident_bytes: int
    date: str

    def same_file(self, path: str, file_size: int, mtime_ns: int) -> bool:
        return (self.path, self.file_size, self.mtime_ns) == (path, file_size, mtime_ns)


@dataclass(frozen=True)
class BatchRecord:
    """Aggregate decode speed of `n_seq` sequences decoded together from one local file, measured
    by benchmarks/bench_batch.py (the window where all of them decode; prompt reading outside it)."""

    path: str  # absolute
    file_size: int
    mtime_ns: int
    n_seq: int
    n_threads: int
    n_gpu_layers: int  # as a Placement holds it (-1: everything)
    n_ctx: int  # context of each sequence
    aggregate_tps: float  # decode tokens/s of all the sequences together
    step_ms: float  # one decode step for all of them (n_seq / aggregate_tps)
    date: str  # ISO date
    runtime: str = "llama.cpp"
    model: str = ""  # file name, for people

    def same_file(self, path: str, file_size: int, mtime_ns: int) -> bool:
        return (self.path, self.file_size, self.mtime_ns) == (path, file_size, mtime_ns)


@dataclass(frozen=True)
class BandwidthRecord:
    """Memory read bandwidth measured on this machine (GB/s = 10**9 bytes/s)."""

    gbs: float  # all threads together
    per_thread_gbs: float  # one thread
    threads: int  # threads used for `gbs`
    bytes: int  # array size read
    date: str  # ISO date of the measurement
    method: str = "numpy max() over an int64 array, best of N"


@dataclass(frozen=True)
class BenchRecord:
    """One `localllm bench` result: means over repetitions."""

    signature: str  # model_signature(): architecture shape, without the weights
    weight_bytes: int
    n_threads: int
    n_gpu_layers: int
    n_ctx: int
    decode_tps: float
    prompt_tps: float
    peak_rss: int  # bytes, VmHWM
    date: str  # ISO date
    model: str = ""  # file name, for people
    load_s: float = 0.0
    ttft_s: float = 0.0
    n_prompt: int = 0
    n_gen: int = 0
    gpu_memory: int | None = None

    def matches(
        self, signature: str, weight_bytes: int, *, n_threads: int | None = None, n_gpu_layers: int | None = None
    ) -> bool:
        if self.signature != signature:
            return False
        if abs(self.weight_bytes - weight_bytes) > WEIGHT_MATCH_TOLERANCE * max(weight_bytes, 1):
            return False
        if n_threads is not None and self.n_threads != n_threads:
            return False
        return n_gpu_layers is None or self.n_gpu_layers == n_gpu_layers


@dataclass(frozen=True)
class RuntimeRecord:
    """One runtime's speed on one model, measured by `localllm bench --runtimes` in fresh processes
    that alternated with the other runtime's file of the same model; `session` ties the two."""

    runtime: str  # "llama.cpp" or "onnxruntime"
    signature: str  # model_signature() of the planned variant's family
    weight_bytes: int  # the planned variant's size
    variant: str  # the planned variant's name (a catalog "family:quant", or the file's)
    n_threads: int
    where: str  # "cpu", "gpu" or "partial": the plan's place when it was measured
    n_ctx: int
    decode_tps: float  # median of the runs
    prompt_tps: float  # median of the runs
    peak_rss: int  # bytes, the largest VmHWM of the runs
    date: str  # ISO date
    session: str  # the comparison this belongs to (its start, ISO), shared by both runtimes' records
    runs: int = 0
    decode_min: float = 0.0
    decode_max: float = 0.0
    path: str = ""  # the file or folder measured
    cpu_features: str = ""  # CPU flags that decide int8/int4 kernels (AVX2, AVX512_VNNI...), for people
    load_average: float | None = None  # 1-minute load average when the comparison started

    def matches(self, runtime: str, variant: Variant) -> bool:
        """Whether this measured `variant` with `runtime`: the same shape and size, or for a catalog
        variant (whose size may be an estimate until it is downloaded) the same name."""
        if self.runtime != runtime:
            return False
        if variant.path is None and self.variant == variant.name:
            return True
        return self.signature == model_signature(variant.family) and abs(
            self.weight_bytes - variant.size
        ) <= WEIGHT_MATCH_TOLERANCE * max(variant.size, 1)


@dataclass(frozen=True)
class Calibration:
    """Measured figures for one machine (empty when nothing was measured)."""

    key: str = ""
    bandwidth: BandwidthRecord | None = None
    bench: tuple[BenchRecord, ...] = field(default=())
    extra_buffers: ExtraBuffersVerdict | None = None  # the trial of the installed build, when run
    loads: tuple[LoadRecord, ...] = field(default=())
    batch: tuple[BatchRecord, ...] = field(default=())
    runtimes: tuple[RuntimeRecord, ...] = field(default=())

    def runtime_pair(self, llama: Variant, onnx: Variant) -> tuple[RuntimeRecord, RuntimeRecord] | None:
        """(llama.cpp's, ONNX Runtime's) records of the newest comparison that measured both variants."""
        sessions: dict[str, dict[str, RuntimeRecord]] = {}
        for r in self.runtimes:
            for runtime, v in (("llama.cpp", llama), ("onnxruntime", onnx)):
                if r.matches(runtime, v):
                    sessions.setdefault(r.session, {})[runtime] = r
        pairs = [(s, got) for s, got in sessions.items() if len(got) == 2]
        if not pairs:
            return None
        _, got = max(pairs, key=lambda p: p[0])
        return got["llama.cpp"], got["onnxruntime"]

    def lookup(
        self, family: Family, weight_bytes: int, *, n_threads: int | None = None, n_gpu_layers: int | None = None
    ) -> BenchRecord | None:
        """The newest bench record for this model shape and size (and threads/layers when given)."""
        sig = model_signature(family)
        found = [r for r in self.bench if r.matches(sig, weight_bytes, n_threads=n_threads, n_gpu_layers=n_gpu_layers)]
        return max(found, key=lambda r: r.date) if found else None


def model_signature(family: Family) -> str:
    """The architecture facts that decide speed and memory, as one string (no name)."""
    f = family
    return f"{f.arch}/L{f.n_layer}/E{f.n_embd}/H{f.n_head}/KV{f.n_head_kv}/D{f.head_dim}/FF{f.n_ff or 0}/V{f.n_vocab}"


def machine_key(hw: Hardware) -> str:
    """A file-name-safe key for a machine, from the facts that decide its speed."""
    import re
    import zlib  # a builtin: cheaper to import than hashlib, and the key needs no cryptography

    cpu, mem = hw.cpu, hw.memory
    facts = [
        hw.os,
        cpu.arch,
        cpu.brand or "",
        str(cpu.physical_cores),
        str(cpu.logical_cores),
        str(round((mem.total or 0) / 2**30)),
    ]
    facts += [f"{g.vendor}:{g.name}:{round((g.memory_total or 0) / 2**30)}" for g in hw.gpus]
    digest = f"{zlib.crc32('|'.join(facts).encode()):08x}"
    brand = re.sub(r"[^a-z0-9]+", "-", (cpu.brand or cpu.arch).lower()).strip("-")[:40]
    return f"{brand}-{digest}"


def machine_file(hw: Hardware) -> Path:
    return home() / "machines" / f"{machine_key(hw)}.json"


def load_calibration(hw: Hardware) -> Calibration:
    """This machine's measured figures; empty when none were kept (or the file is unreadable)."""
    path = machine_file(hw)
    data = _read(path)
    if not data:
        return Calibration(key=machine_key(hw))
    bw = data.get("bandwidth")
    try:
        bandwidth = BandwidthRecord(**_known(BandwidthRecord, bw)) if isinstance(bw, dict) else None
    except (TypeError, ValueError):
        _log().warning("ignoring a malformed bandwidth record in %s", path)
        bandwidth = None
    records = []
    for item in data.get("bench", ()):
        try:
            records.append(BenchRecord(**_known(BenchRecord, item)))
        except (TypeError, ValueError):
            _log().warning("ignoring a malformed bench record in %s", path)
    loads = []
    for item in data.get("loads", ()):
        try:
            loads.append(LoadRecord(**_known(LoadRecord, item)))
        except (TypeError, ValueError):
            _log().warning("ignoring a malformed load record in %s", path)
    batch = []
    for item in data.get("batch", ()):
        try:
            batch.append(BatchRecord(**_known(BatchRecord, item)))
        except (TypeError, ValueError):
            _log().warning("ignoring a malformed batch record in %s", path)
    runtimes = []
    for item in data.get("runtimes", ()):
        try:
            runtimes.append(RuntimeRecord(**_known(RuntimeRecord, item)))
        except (TypeError, ValueError):
            _log().warning("ignoring a malformed runtime record in %s", path)
    verdict = None
    eb = data.get("extra_buffers")
    if isinstance(eb, dict):
        try:
            verdict = ExtraBuffersVerdict(**_known(ExtraBuffersVerdict, eb))
        except (TypeError, ValueError):
            _log().warning("ignoring a malformed extra-buffers verdict in %s", path)
    return Calibration(
        key=machine_key(hw),
        bandwidth=bandwidth,
        bench=tuple(records),
        extra_buffers=verdict,
        loads=tuple(loads),
        batch=tuple(batch),
        runtimes=tuple(runtimes),
    )


def save_load(hw: Hardware, record: LoadRecord) -> Path:
    """Keep what a load measured, replacing an older record of the same file and placement."""
    same = ("path", "file_size", "mtime_ns", "n_ctx", "n_gpu_layers", "kv_type", "flash_attn", "extra_buffers")
    mine = asdict(record)

    def change(data: dict[str, Any]) -> None:
        kept = [
            r for r in data.get("loads", ()) if not (isinstance(r, dict) and all(r.get(k) == mine[k] for k in same))
        ]
        data["loads"] = (kept + [mine])[-MAX_LOAD_RECORDS:]

    return _update(hw, change)


def save_batch(hw: Hardware, record: BatchRecord) -> Path:
    """Keep a measured batch throughput, replacing an older one of the same file, sequences,
    threads, layers and runtime; returns the file."""
    same = ("path", "file_size", "mtime_ns", "n_seq", "n_threads", "n_gpu_layers", "runtime")
    mine = asdict(record)

    def change(data: dict[str, Any]) -> None:
        kept = [
            r for r in data.get("batch", ()) if not (isinstance(r, dict) and all(r.get(k) == mine[k] for k in same))
        ]
        data["batch"] = (kept + [mine])[-MAX_BATCH_RECORDS:]

    return _update(hw, change)


def save_runtimes(hw: Hardware, records: tuple[RuntimeRecord, ...] | list[RuntimeRecord]) -> Path:
    """Keep one comparison's records, replacing older ones of the same runtime, variant and threads;
    a record left without the other runtime's record of its session is dropped. Returns the file."""
    same = ("runtime", "signature", "weight_bytes", "variant", "n_threads")
    mine = [asdict(r) for r in records]

    def change(data: dict[str, Any]) -> None:
        kept = [
            r
            for r in data.get("runtimes", ())
            if isinstance(r, dict) and not any(all(r.get(k) == m[k] for k in same) for m in mine)
        ]
        every = (kept + mine)[-MAX_RUNTIME_RECORDS:]
        runtimes_of: dict[object, set[object]] = {}
        for r in every:
            runtimes_of.setdefault(r.get("session"), set()).add(r.get("runtime"))
        data["runtimes"] = [r for r in every if len(runtimes_of[r.get("session")]) > 1]

    return _update(hw, change)


def save_extra_buffers(hw: Hardware, verdict: ExtraBuffersVerdict) -> Path:
    """Keep the extra-buffers trial's verdict for this machine and build."""
    return _update(hw, lambda data: data.__setitem__("extra_buffers", asdict(verdict)))


def _update(hw: Hardware, change: Any) -> Path:
    """Read this machine's file, let `change(data)` edit it, write it back atomically; returns the file."""
    path = machine_file(hw)
    data = _read(path) or {}
    data["key"] = machine_key(hw)
    change(data)
    _write(path, data)
    return path


def save_bandwidth(hw: Hardware, record: BandwidthRecord) -> Path:
    """Keep a bandwidth measurement for this machine; returns the file."""
    return _update(hw, lambda data: data.__setitem__("bandwidth", asdict(record)))


def save_bench(hw: Hardware, record: BenchRecord) -> Path:
    """Keep a bench result for this machine, replacing an older one for the same model,
    threads and GPU layers; returns the file."""

    def change(data: dict[str, Any]) -> None:
        kept = [
            r
            for r in data.get("bench", ())
            if not (
                isinstance(r, dict)
                and r.get("signature") == record.signature
                and r.get("weight_bytes") == record.weight_bytes
                and r.get("n_threads") == record.n_threads
                and r.get("n_gpu_layers") == record.n_gpu_layers
            )
        ]
        data["bench"] = (kept + [asdict(record)])[-MAX_BENCH_RECORDS:]

    return _update(hw, change)


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _read(path: Path) -> dict[str, Any] | None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        _log().warning("cannot read %s (%s); measured figures ignored", path, exc)
        return None
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict[str, Any]) -> None:
    import json
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".machine-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; it holds no secrets
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
