"""The TUI's view of the library: what it asks of localllm, through its public API only. No Textual here.

Everything in this module may block (probe, plan, fetch, load): the app calls it from
thread workers. Values come back as plain frozen dataclasses the screens render.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import localllm
from localllm import store
from localllm.units import memory_size

__all__ = [
    "FIT_LABELS",
    "Progress",
    "StartupReport",
    "VariantRow",
    "advice_for",
    "describe_placement",
    "hardware_lines",
    "list_models",
    "load_model",
    "looks_like_path",
    "startup_report",
]

# planner fit kind -> what the switcher shows
FIT_LABELS = {"gpu": "GPU", "partial": "partial", "cpu": "CPU", "none": "does not fit"}


@dataclass(frozen=True)
class StartupReport:
    """What the start-up screen shows before loading."""

    hardware: tuple[str, ...]  # one line per fact
    target: str  # what load() will be given
    plan_text: str = ""  # the planner's explanation (why this model/variant/placement)
    rejected: tuple[str, ...] = ()  # alternatives the planner turned down, with why
    error: str = ""  # set when nothing can be loaded: the planner's words
    advice: str = ""  # what to do about the error

    @property
    def ok(self) -> bool:
        return not self.error


@dataclass(frozen=True)
class Progress:
    """A fetch/load progress step for the progress bar; total None means indeterminate."""

    stage: str  # "download" | "load"
    done: float = 0.0
    total: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class VariantRow:
    """A line of the model switcher."""

    target: str  # what to pass to load(): "family:quant" or a path
    name: str
    quant: str
    size_bytes: int | None
    fit: str  # one of FIT_LABELS' values, or "local file"
    on_disk: bool
    note: str = ""
    available: bool = True  # can be loaded now: on disk, or downloadable (False: offline and not on disk)


def looks_like_path(model: str) -> bool:
    return localllm.local_model_path(model) is not None  # the rule load() and every command use


def sources_note(sources: Sequence[str], name: str) -> str:
    """A line for the chat when "auto" could not have its first choice: where the model came
    from and the best one it could not get, with why ("" when it got its first choice)."""
    missed = [s for s in sources if not s.startswith(f"{name}: ")]
    if not missed or not sources:
        return ""
    came = sources[-1].removeprefix(f"{name}: ").split(" (", 1)[0]
    where = "Found on disk" if came.startswith("on disk") else f"From the {came}"
    best, _, why = missed[0].partition(": ")
    reason = why.split("): ", 1)[-1] if why else "not available"  # after "hub (URL): "
    reason = reason.split(": ", 1)[-1] if reason.startswith("Cannot get ") else reason
    more = f", and {len(missed) - 1} more" if len(missed) > 1 else ""
    return f"\n\n{where}: {best} could not be had now ({reason}){more}. F4 lists what was tried."


def hardware_lines(hw: Any) -> tuple[str, ...]:
    """A short, human summary of a localllm.Hardware."""
    lines = []
    if getattr(hw, "name", None):
        lines.append(f"Profile {hw.name} (planning for that machine, not this one)")
    cpu = getattr(hw, "cpu", None)
    if cpu is not None:
        cores = f"{cpu.physical_cores or '?'} cores / {cpu.logical_cores or '?'} threads"
        if getattr(cpu, "quota_cores", None):
            cores += f", cgroup quota {cpu.quota_cores:g}"
        lines.append(f"CPU     {cpu.brand or cpu.arch} ({cores})")
    mem = getattr(hw, "memory", None)
    if mem is not None:
        total, usable = mem.limit, mem.usable
        text = f"RAM     {memory_size(total, digits=1)} total, {memory_size(usable, digits=1)} usable now"
        if mem.cgroup_limit:
            text += f" (cgroup limit {memory_size(mem.cgroup_limit, digits=1)})"
        lines.append(text)
    gpus = tuple(getattr(hw, "gpus", ()) or ())
    if gpus:
        for g in gpus:
            lines.append(
                f"GPU {g.index}   {g.name} ({memory_size(getattr(g, 'memory_total', None), digits=1)},"
                f" {memory_size(getattr(g, 'memory_free', None), digits=1)} free)"
            )
    else:
        lines.append("GPU     none found: running on the CPU")
    runtimes = [r for r in (getattr(hw, "runtimes", ()) or ()) if getattr(r, "installed", False)]
    if runtimes:
        lines.append("Runtime " + ", ".join(f"{r.name} {getattr(r, 'version', '') or ''}".strip() for r in runtimes))
    return tuple(lines)


def describe_placement(placement: Any) -> str:
    """ "CPU, 2 threads" / "GPU 33 layers + CPU 4 threads"."""
    if placement is None:
        return "?"
    threads = getattr(placement, "n_threads", None)
    layers = getattr(placement, "n_gpu_layers", 0) or 0
    if getattr(placement, "runtime", "") == "onnxruntime":
        provider = (getattr(placement, "provider", None) or "CPUExecutionProvider").replace("ExecutionProvider", "")
        return f"{provider}, {threads} threads"
    if layers == 0:
        return f"CPU, {threads} threads"
    return f"GPU {'all' if layers < 0 else layers} layers, {threads} threads"


def startup_report(
    model: str | None, *, context: int | None = None, probe: Callable[[], Any] | None = None
) -> StartupReport:
    """Probe the machine and plan; never raises for a LocalLLMError (it becomes .error)."""
    target = model or "auto"
    try:
        hw = (probe or localllm.probe)()
        hw_lines = hardware_lines(hw)
    except Exception as exc:  # the probe is best-effort; say so and go on
        hw, hw_lines = None, (f"hardware probe failed: {exc}",)
    if looks_like_path(target):
        path = Path(target).expanduser()
        if not path.exists():
            return StartupReport(
                hw_lines,
                target,
                error=f"{path} does not exist.",
                advice="Check the path, or run `localllm chat` without a model to let localllm choose one.",
            )
        return StartupReport(
            hw_lines,
            target,
            plan_text=f"Loading the local file {path} ({memory_size(path.stat().st_size)}); "
            "placement is planned from its header and this machine.",
        )
    try:  # plan_for: a Hub repository, another tool's model and "auto" over what is on disk too
        plan = (
            localllm.plan_for(target, hardware=hw, context=context)
            if hw is not None
            else localllm.plan_for(target, context=context)
        )
    except localllm.LocalLLMError as exc:
        failed = getattr(exc, "plan", None)  # the plan that did not fit, when the planner got that far
        text = failed.explain() if failed is not None and hasattr(failed, "explain") else ""
        return StartupReport(hw_lines, target, plan_text=text, error=str(exc), advice=advice_for(exc))
    rejected = tuple(_rejected_lines(plan))
    if not getattr(plan, "fits", True):
        return StartupReport(
            hw_lines,
            target,
            plan_text=plan.explain(),
            rejected=rejected,
            error=f"{_variant_name(plan)} is predicted not to fit in this machine's memory.",
            advice="Pick a smaller model with the model switcher (ctrl+o), ask for a "
            "smaller context (`localllm chat --ctx 2048`), or free some memory.",
        )
    name = _variant_name(plan)
    return StartupReport(hw_lines, name or target, plan_text=plan.explain(), rejected=rejected)


def load_model(
    target: str, *, context: int | None = None, progress: Callable[[Progress], None] | None = None
) -> localllm.Model:
    """localllm.load with the store's download progress turned into Progress values."""

    def on_download(*args: Any, **kwargs: Any) -> None:
        if progress is not None:
            progress(_as_progress(*args, **kwargs))

    if looks_like_path(target):
        return localllm.load(Path(target).expanduser(), context=context)
    return localllm.load(target, context=context, progress=on_download)


def list_models(*, hardware: Any = None, extra: Sequence[str | os.PathLike[str]] = ()) -> list[VariantRow]:
    """Every catalog variant with its fit on this machine, plus local files and the models other
    tools keep; on-disk ones marked, and offline (LOCALLLM_OFFLINE / HF_HUB_OFFLINE) those that
    are not marked unavailable."""
    offline = store.is_offline()
    rows: list[VariantRow] = []
    seen: set[str] = set()
    for p in extra:
        path = Path(p).expanduser()
        if str(path) in seen or not path.exists():
            continue
        seen.add(str(path))
        rows.append(VariantRow(str(path), path.stem, "", path.stat().st_size, "local file", True))
    try:  # models other tools keep (Ollama, LM Studio, GPT4All, the HF cache, LOCALLLM_MODEL_DIRS)
        from localllm.store import discover

        for m in discover.discover():
            if m.name not in seen:
                seen.add(m.name)
                rows.append(VariantRow(m.name, m.name, "", m.size, "local file", True, f"kept by {m.source}"))
    except OSError:  # a foreign store that cannot be read: the switcher still offers the rest
        pass
    local_paths = set()
    try:
        for item in store.list_local():
            if item.variant:
                local_paths.add(item.variant)
    except Exception:  # an unreadable or missing cache: nothing marked on disk
        pass
    try:
        fits = localllm.fit_table(hardware)
    except Exception:  # the switcher still offers local files
        fits = ()
    for f in fits:
        v = f.variant
        on_disk = v.name in local_paths
        rows.append(
            VariantRow(
                v.name,
                v.name,
                str(getattr(v, "quant", "")),
                getattr(v, "size", None),
                FIT_LABELS.get(f.where, f.where),
                on_disk,
                f.why or "",
                available=on_disk or not offline,
            )
        )
    return rows


# --- helpers -------------------------------------------------------------------------


def _variant_name(plan: Any) -> str:
    v = getattr(plan, "variant", None)
    return str(getattr(v, "name", v) or "")


def _rejected_lines(plan: Any) -> list[str]:
    return [f"{r.name}: {r.why}" for r in getattr(plan, "rejected", ()) or ()]


def advice_for(exc: BaseException) -> str:
    """What to do about a load or plan error, for the start-up screen."""
    if isinstance(exc, localllm.ModelUnavailableError):
        return (
            "The model is not on disk and cannot be downloaded now. Connect to the internet and "
            "run `localllm pull MODEL`, or open a local file: `localllm chat path/to/model.gguf`."
        )
    if isinstance(exc, localllm.InsufficientMemoryError):
        return (
            "Nothing in the catalog fits in this machine's free memory. Close other programs, "
            "ask for a smaller context (`--ctx 2048`), or open a small local GGUF file."
        )
    if isinstance(exc, localllm.ModelNotFoundError):
        return "Run `localllm models` to see the catalog names."
    if isinstance(exc, localllm.DownloadError):
        return "Check the network and the free disk space, then retry (ctrl+r)."
    return "See `localllm plan` for details."


def _as_progress(*args: Any, **kwargs: Any) -> Progress:
    """The store's callback arguments, whatever their shape, as a Progress."""
    if args and len(args) == 1 and not kwargs:
        p = args[0]
        done = getattr(p, "done", None) or getattr(p, "downloaded", None) or getattr(p, "completed", 0)
        total = getattr(p, "total", None)
        return Progress(
            "download", float(done or 0), float(total) if total else None, str(getattr(p, "filename", "") or "")
        )
    if len(args) >= 2:
        return Progress("download", float(args[0] or 0), float(args[1]) if args[1] else None)
    done = kwargs.get("done", kwargs.get("downloaded", 0))
    total = kwargs.get("total")
    return Progress("download", float(done or 0), float(total) if total else None)
