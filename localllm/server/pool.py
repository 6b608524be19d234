"""The models a server holds: loaded when a request names them, only when they fit, unloaded
when idle.

A request names a model in any form `localllm.load` takes. The pool plans it against the
memory left after the models it already holds (each counted at its plan's need), loads it if
it fits, otherwise unloads the least recently used idle model first, and otherwise refuses
with the plan's numbers (InsufficientMemoryError: a 507). Each loaded model runs one worker
thread, `Model.run_feed`, so requests to it share its batch steps (continuous batching), and
idle models unload after their keep-alive.

Library code: nothing here prints or knows HTTP; localllm/server/app.py maps errors to
statuses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from localllm.batching import BatchFeed, BatchItem
from localllm.errors import GenerationError, InsufficientMemoryError, InvalidOptionError
from localllm.units import memory_size

if TYPE_CHECKING:  # pragma: no cover
    from localllm.generation import Chunk
    from localllm.hardware import Hardware
    from localllm.model import Model

__all__ = ["DEFAULT_KEEP_ALIVE_S", "DEFAULT_QUEUE", "ModelPool", "PoolConfig", "ServedModel", "parse_keep_alive"]

log = logging.getLogger(__name__)

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's default: 5 minutes
DEFAULT_QUEUE = 64  # requests waiting per model before 429; a few seconds of work each
REAP_EVERY_S = 1.0  # how often idle models are looked at for unloading


def parse_keep_alive(value: object, default: float) -> float:
    """Seconds from Ollama's keep_alive forms: a number of seconds, "5m", "30s", "1h", "0"
    (unload after this request); a negative value keeps the model loaded (inf). None: default."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InvalidOptionError(
            f"keep_alive must be seconds or a duration like '5m', got {value!r}",
            option="keep_alive",
            value=value,
            allowed="seconds or '30s', '5m', '1h'",
        )
    seconds: float
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
        unit = next((u for u in ("ms", "s", "m", "h") if text.endswith(u)), "")
        try:
            seconds = float(text[: len(text) - len(unit)]) * units.get(unit, 1.0)
        except ValueError:
            raise InvalidOptionError(
                f"keep_alive must be seconds or a duration like '5m', got {value!r}",
                option="keep_alive",
                value=value,
                allowed="seconds or '30s', '5m', '1h'",
            ) from None
    else:
        raise InvalidOptionError(
            f"keep_alive must be seconds or a duration like '5m', got {value!r}",
            option="keep_alive",
            value=value,
            allowed="seconds or '30s', '5m', '1h'",
        )
    return float("inf") if seconds < 0 else seconds


@dataclass(frozen=True)
class PoolConfig:
    """How the pool loads models: the load() arguments every model gets."""

    hardware: Hardware | None = None  # plan for these facts (a profile) instead of probing once
    parallel: int | None = 4  # sequences decoded together per model
    context: int | None = None  # each sequence's context (default: the plan's)
    threads: int | None = None
    keep_alive_s: float = DEFAULT_KEEP_ALIVE_S
    queue: int = DEFAULT_QUEUE
    offline: bool | None = None


class ServedModel:
    """One loaded model and the worker thread that runs its requests."""

    def __init__(self, key: str, model: Model, queue: int, needed: int) -> None:
        self.key = key
        self.model = model
        self.needed = needed  # bytes counted against the pool's budget
        self.feed = BatchFeed(max_waiting=queue)
        self.active = 0  # requests submitted and not finished
        self.last_used = time.monotonic()
        self.keep_alive_s = float("inf")  # the last request's keep-alive: counted from its end
        self.expires_at = float("inf")
        self.loaded_at = time.time()
        self._sinks: dict[int, Callable[[Chunk], None]] = {}
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name=f"localllm-serve:{key}", daemon=True)
        self._thread.start()

    def submit(self, item: BatchItem, sink: Callable[[Chunk], None], cancel: threading.Event) -> int:
        """Queue one item; `sink(chunk)` is called from the worker thread for each of its chunks."""
        with self._lock:
            index = self.feed.submit(item, cancel)  # QueueFullError when the queue is full
            self._sinks[index] = sink
            self.active += 1
            self.last_used = time.monotonic()
        return index

    def _work(self) -> None:
        try:
            for index, chunk in self.model.run_feed(self.feed):
                with self._lock:
                    sink = self._sinks.get(index)
                    if chunk.finish_reason is not None:
                        self._sinks.pop(index, None)
                        self.active -= 1
                        self.last_used = time.monotonic()
                        self.expires_at = self.last_used + self.keep_alive_s  # as Ollama: from the end
                if sink is not None:
                    sink(chunk)
        except Exception as exc:  # the engine failed: every request still waiting ends with it
            log.exception("%s: the worker failed", self.key)
            error = exc if isinstance(exc, GenerationError) else GenerationError(f"{self.key}: {exc}")
            self._fail_all(error)
        else:
            self._fail_all(GenerationError(f"model {self.key!r} was unloaded before this request ran; send it again"))

    def _fail_all(self, error: Exception) -> None:
        from localllm.generation import Chunk

        with self._lock:
            sinks, self._sinks = self._sinks, {}
            self.active = 0
        for sink in sinks.values():
            sink(Chunk("", (), "error", None, error=error))

    def close(self) -> None:
        """Stop taking requests, let those going finish (or end cancelled by model.close)."""
        self.feed.close()
        self._thread.join(timeout=30)
        self.model.close()


class ModelPool:
    """The models a server holds, by the name requests gave them."""

    def __init__(self, config: PoolConfig | None = None) -> None:
        self.config = config or PoolConfig()
        self.models: dict[str, ServedModel] = {}
        self._loading = asyncio.Lock()
        self._base: Hardware | None = None

    # --- budget ----------------------------------------------------------------------
    def base_hardware(self) -> Hardware:
        if self._base is None:
            if self.config.hardware is not None:
                self._base = self.config.hardware
            else:
                from localllm.hardware import probe

                self._base = probe()
        return self._base

    def used(self) -> int:
        return sum(m.needed for m in self.models.values())

    def budget(self) -> Hardware:
        """The machine as a new model sees it: the memory the held models take is gone."""
        hw = self.base_hardware()
        used = self.used()
        mem = hw.memory
        memory = replace(
            mem,
            available=None if mem.available is None else max(0, mem.available - used),
            cgroup_usage=None if mem.cgroup_limit is None else (mem.cgroup_usage or 0) + used,
        )
        return replace(hw, memory=memory)

    # --- getting a model ---------------------------------------------------------------
    async def get(self, name: str, keep_alive: float | None = None) -> ServedModel:
        """The model `name` names, loaded now if it is not held yet (in a thread: loading blocks)."""
        served = self.models.get(name)
        if served is None:
            async with self._loading:  # one load at a time: each plans against what the last took
                served = self.models.get(name)
                if served is None:
                    served = await asyncio.to_thread(self._load_fitting, name)
                    self.models[name] = served
        served.last_used = time.monotonic()
        served.keep_alive_s = self.config.keep_alive_s if keep_alive is None else keep_alive
        served.expires_at = served.last_used + served.keep_alive_s
        return served

    def preload(self, name: str) -> ServedModel:
        """Load `name` now and keep it (no keep-alive): `localllm serve MODEL`, before it listens,
        so a model that cannot load is an error on the command line, not in the server's log."""
        served = self.models.get(name) or self._load_fitting(name)
        self.models[name] = served
        return served

    def _load_fitting(self, name: str) -> ServedModel:
        while True:
            try:
                return self._load(name)
            except InsufficientMemoryError as exc:
                victim = self._least_recently_used_idle()
                if victim is None:
                    held = ", ".join(f"{k} ({memory_size(m.needed)})" for k, m in self.models.items()) or "none"
                    raise InsufficientMemoryError(
                        f"{name!r} does not fit in the memory this server has left: {exc} "
                        f"Models held: {held}; those busy cannot be unloaded. Retry when they are idle, "
                        "or ask for a smaller model.",
                        needed=getattr(exc, "needed", None),
                        available=getattr(exc, "available", None),
                        plan=getattr(exc, "plan", None),
                    ) from exc
                log.info("unloading %s (idle, least recently used) to make room for %s", victim.key, name)
                self.unload(victim.key)

    def _load(self, name: str) -> ServedModel:
        import localllm

        cfg = self.config
        model = localllm.load(
            name,
            context=cfg.context,
            hardware=self.budget(),
            threads=cfg.threads,
            parallel=cfg.parallel,
            offline=cfg.offline,
        )
        needed = model.plan.needed if model.plan is not None and model.plan.needed else _file_size(model.info.path)
        return ServedModel(name, model, cfg.queue, needed)

    def _least_recently_used_idle(self) -> ServedModel | None:
        idle = [m for m in self.models.values() if m.active == 0]
        return min(idle, key=lambda m: m.last_used) if idle else None

    # --- letting go ----------------------------------------------------------------------
    def unload(self, key: str) -> bool:
        served = self.models.pop(key, None)
        if served is None:
            return False
        served.close()
        return True

    def expired(self, now: float | None = None) -> list[str]:
        """The idle models whose keep-alive ran out."""
        now = time.monotonic() if now is None else now
        return [k for k, m in self.models.items() if m.active == 0 and now >= m.expires_at]

    async def reap_forever(self) -> None:
        """Unload expired models, every REAP_EVERY_S (on the event loop; each close in a thread)."""
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            for key in self.expired():
                served = self.models.pop(key, None)
                if served is not None:
                    log.info("unloading %s: idle past its keep-alive", key)
                    await asyncio.to_thread(served.close)

    def close(self) -> None:
        for key in list(self.models):
            self.unload(key)


def _file_size(path: str) -> int:
    try:
        if os.path.isdir(path):
            return sum(e.stat().st_size for e in os.scandir(path) if e.is_file())
        return os.path.getsize(path)
    except OSError:
        return 0


def describe(served: ServedModel) -> dict[str, Any]:
    """What /api/ps and /v1/models say about a held model."""
    info = served.model.info
    return {
        "name": served.key,
        "path": info.path,
        "runtime": info.runtime,
        "n_ctx": info.n_ctx,
        "parallel": info.placement.n_seq,
        "size": served.needed,
        "active": served.active,
        "expires_at": served.expires_at,
        "loaded_at": served.loaded_at,
        "metadata": dict(info.metadata),
    }
