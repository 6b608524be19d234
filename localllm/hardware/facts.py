"""Hardware facts as frozen values: a live probe and a profile file are the same type.

Sizes are bytes, bandwidths GB/s (10**9 bytes per second). `None` means unknown;
TOML has no null, so unknown fields are simply left out of a profile.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localllm.errors import ProfileNotFoundError

__all__ = ["Accelerator", "CPUInfo", "GPUInfo", "Hardware", "MemoryInfo", "RuntimeInfo"]


@dataclass(frozen=True)
class MemoryInfo:
    """System memory, with the cgroup limit the process really lives under."""

    total: int | None = None  # host physical RAM
    available: int | None = None  # host MemAvailable
    swap_total: int | None = None
    swap_free: int | None = None
    cgroup_version: int | None = None  # 1 or 2 when a limit applies
    cgroup_limit: int | None = None  # None: no limit
    cgroup_usage: int | None = None  # working set: usage minus inactive file cache
    bandwidth_gbs: float | None = None  # memory read bandwidth, measured or from the spec sheet

    @property
    def cgroup_headroom(self) -> int | None:
        """Bytes the cgroup still allows, or None when there is no limit."""
        if self.cgroup_limit is None:
            return None
        return max(0, self.cgroup_limit - (self.cgroup_usage or 0))

    @property
    def limit(self) -> int | None:
        """Total memory this process may ever use: host RAM capped by the cgroup limit."""
        values = [v for v in (self.total, self.cgroup_limit) if v is not None]
        return min(values) if values else None

    @property
    def usable(self) -> int | None:
        """Bytes usable right now: the smaller of host-available and cgroup headroom."""
        values = [v for v in (self.available, self.cgroup_headroom) if v is not None]
        return min(values) if values else None


@dataclass(frozen=True)
class CPUInfo:
    arch: str = "unknown"  # normalized: x86_64, arm64, ...
    vendor: str | None = None
    brand: str | None = None
    physical_cores: int | None = None
    logical_cores: int | None = None
    quota_cores: float | None = None  # cgroup cpu.max quota/period; None: unlimited
    affinity_cores: int | None = None  # CPUs this process may run on (sched_getaffinity, `nproc`)
    flags: tuple[str, ...] = ()  # normalized feature names, sorted

    @property
    def effective_cores(self) -> float | None:
        """Logical cores capped by the CPU affinity mask and the cgroup CPU quota."""
        values = [float(v) for v in (self.logical_cores, self.affinity_cores, self.quota_cores) if v is not None]
        return min(values) if values else None

    def has(self, flag: str) -> bool:
        return flag in self.flags


@dataclass(frozen=True)
class GPUInfo:
    index: int
    vendor: str  # nvidia | amd | intel | apple
    name: str
    memory_total: int | None = None
    memory_free: int | None = None
    unified: bool = False  # shares system RAM (Apple Silicon, Jetson, iGPUs)
    budget: int | None = None  # bytes the GPU may really use, where not all of memory_total
    budget_basis: str | None = None  # how `budget` was decided
    backend: str | None = None  # cuda | rocm | metal | vulkan | sycl
    compute_capability: str | None = None  # NVIDIA, e.g. "8.9"
    uuid: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    bandwidth_gbs: float | None = None

    @property
    def usable_memory(self) -> int | None:
        """Bytes the planner may place on this GPU before its own margins."""
        if self.budget is not None:
            return self.budget
        return self.memory_free if self.memory_free is not None else self.memory_total


@dataclass(frozen=True)
class Accelerator:
    kind: str  # npu | neuron | ane | ...
    name: str
    path: str | None = None


@dataclass(frozen=True)
class RuntimeInfo:
    name: str  # "llama.cpp" | "onnxruntime"
    installed: bool = False
    version: str | None = None
    gpu_offload: bool | None = None  # llama.cpp built with a GPU backend
    providers: tuple[str, ...] = ()  # ONNX Runtime execution providers
    # the CPU backend features llama.cpp was built with (llama_print_system_info: AVX2, AVX512,
    # DOTPROD, AMX_INT8, REPACK, ...): which weights ggml repacks (localllm.repack)
    cpu_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hardware:
    name: str | None = None  # profile name; None for a live probe
    description: str | None = None
    os: str = "unknown"  # linux | darwin | windows
    os_version: str | None = None
    python: str | None = None
    memory: MemoryInfo = field(default_factory=MemoryInfo)
    cpu: CPUInfo = field(default_factory=CPUInfo)
    gpus: tuple[GPUInfo, ...] = ()
    accelerators: tuple[Accelerator, ...] = ()
    runtimes: tuple[RuntimeInfo, ...] = ()  # filled only by probe(runtimes=True)
    disk_free: int | None = None  # at the model cache
    disk_path: str | None = None
    on_battery: bool | None = None
    notes: tuple[str, ...] = ()  # what could not be learned, and why

    # -- conversion ---------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data, with unknown (None) values left out: ready for TOML or JSON."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hardware:
        return _from_plain(cls, data)

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    @classmethod
    def from_toml(cls, source: str | Path) -> Hardware:
        """Read a profile from a TOML file path or a TOML string."""
        if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.endswith(".toml")):
            path = Path(source)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise ProfileNotFoundError(f"hardware profile {str(path)!r} does not exist") from None
        else:
            text = str(source)
        # imported here: tomllib costs ~5-10 ms, and `import localllm` must stay cheap
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        return cls.from_dict(tomllib.loads(text))

    def runtime(self, name: str) -> RuntimeInfo | None:
        return next((r for r in self.runtimes if r.name == name), None)


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if v is None:
                continue
            out[f.name] = _to_plain(v)
        return out
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _from_plain(cls: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"expected a table for {cls.__name__}, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown field(s) for {cls.__name__}: {', '.join(sorted(unknown))}")
    kwargs = {name: _coerce(hints[name], value) for name, value in data.items()}
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(args[0], value) if len(args) == 1 else value
    if origin is tuple:
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(item, v) for v in value)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _from_plain(hint, value)
    if hint is float and isinstance(value, int):
        return float(value)
    return value
