"""What "auto" means: the best model that fits this machine and can be had now.

The candidates are every catalog variant (fetched from its sources: the Hub, the package
index) and every real model already on disk (localllm's own cache, the Hugging Face cache,
Ollama, LM Studio, GPT4All and LOCALLLM_MODEL_DIRS: localllm.store.discover), each of
those planned from its own header, so its need is exact. The planner ranks them all as it
ranks the catalog (tier, interactive speed, quality, then the smaller file).

    candidates(catalog)        -> catalog variants + models on disk, as Variants
    obtain(candidates, ...)    -> (Plan, Path): the best one that is on disk or can be fetched now
    load_auto(...)             -> Model: what load("auto") does; the built-in starter when
                                  nothing can be had (`info.note` says what was tried)

`obtain` walks the ranking: a model on disk is taken at once; one that is not is fetched
(`store.pull`, which tries its sources in order); one that cannot be had now is left out,
with every catalog variant whose sources are known unreachable (the Hub, once it failed to
answer; everything not on disk, offline), and the ranking is made again. What was tried,
and where the chosen file came from, is kept in `Plan.sources` (`explain()` shows it).

A model on disk that is not in the catalog gets a quality for ranking: the catalog
family's when the shapes are the same model's (architecture, layers, widths, heads,
vocabulary), else the nearest catalog family by parameter count, less
UNKNOWN_QUALITY_DISCOUNT points (a model nobody rated is not assumed to be as good).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.catalog import Catalog, Family, Variant, family_from_gguf_metadata, load_catalog, local_variant
from localllm.errors import CatalogError, InvalidModelError, ModelUnavailableError, NoFittingVariantError
from localllm.units import file_size

if TYPE_CHECKING:  # pragma: no cover
    from localllm.hardware import Hardware
    from localllm.model import Model
    from localllm.planner import Plan

__all__ = [
    "NOT_GENERATIVE",
    "DiskModel",
    "UNKNOWN_QUALITY_DISCOUNT",
    "candidates",
    "disk_models",
    "is_disk_model",
    "label",
    "load_auto",
    "obtain",
    "within_reach",
]

log = logging.getLogger(__name__)

# Quality points a model on disk loses when its family is not in the catalog and its quality is
# borrowed from the catalog family nearest in size: unrated, so not ranked as if rated the same.
UNKNOWN_QUALITY_DISCOUNT = 5.0

# Architectures that embed or encode rather than write text (GPT4All's folder often holds a
# nomic-bert embedder): never what "auto" should chat with
NOT_GENERATIVE = frozenset(
    {"bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert", "jina-bert-v2", "jina-bert-v3", "t5encoder"}
)


@dataclass(frozen=True)
class DiskModel:
    """A model file already on disk, as "auto" weighs it."""

    name: str  # what it loads by: "ollama:smollm2:135m", "lmstudio:pub/repo/file.gguf", a path
    path: Path
    source: str  # "ollama", "lmstudio", "gpt4all", "huggingface", "dirs", "localllm"
    variant: Variant  # planned from its own header; variant.path is the file


def candidates(catalog: Catalog | None = None) -> list[Variant]:
    """Catalog variants (not the built-in starter) and the models found on disk."""
    catalog = catalog or load_catalog()
    return [v for v in catalog.variants if not v.packaged] + [m.variant for m in disk_models(catalog)]


def disk_models(catalog: Catalog | None = None) -> list[DiskModel]:
    """Real models other tools (and localllm) left on disk that are not catalog variants, each
    planned from its header. A file that fails validation, or that the planner cannot size, is
    left out (logged): "auto" only takes what it can plan."""
    from localllm.store import discover, list_local

    catalog = catalog or load_catalog()
    found: list[tuple[str, Path, str]] = []
    try:
        found += [(m.name, m.path, m.source) for m in discover.discover()]
    except OSError as exc:  # a foreign store that cannot be read is not an error for "auto"
        log.debug("looking for models on disk failed: %s", exc)
    found += [(str(f.path), f.path, f.source) for f in list_local(catalog) if f.variant is None]
    out: list[DiskModel] = []
    seen: set[Path] = set()
    for name, path, source in found:
        try:
            real = path.resolve()
            st = real.stat()
        except OSError:
            continue
        if real in seen:
            continue
        seen.add(real)
        # read by its own path, not the link's target: a split's parts are found by their names
        v = _disk_variant(str(path), st.st_size, st.st_mtime_ns, name, catalog)
        if v is not None:
            out.append(DiskModel(name=name, path=path, source=source, variant=v))
    return out


_header_cache: dict[tuple[str, int, int, str], Variant | None] = {}


def _disk_variant(path: str, size: int, mtime_ns: int, name: str, catalog: Catalog) -> Variant | None:
    key = (path, size, mtime_ns, name)
    if key not in _header_cache:
        _header_cache[key] = _read_variant(Path(path), name, catalog)
    return _header_cache[key]


def _read_variant(path: Path, name: str, catalog: Catalog) -> Variant | None:
    from localllm.quantmix import file_type_quant, gguf_weights
    from localllm.validate import GGUFInfo, validate_model_path

    try:
        info = validate_model_path(path)  # a split model's first part: all its parts, as one
        if not isinstance(info, GGUFInfo):
            return None
        kind = info.metadata.get("general.type")
        if info.architecture in NOT_GENERATIVE or kind in ("adapter", "mmproj", "clip"):
            log.info("not weighing %s for auto: a %s, not a model that writes text", name, kind or info.architecture)
            return None
        tied = not any(t.name == "output.weight" for t in info.tensors)
        family = family_from_gguf_metadata(info.metadata, name=name, tied_embeddings=tied)
    except (InvalidModelError, CatalogError) as exc:
        log.info("not weighing %s for auto: %s", name, exc)
        return None
    general = info.metadata.get("general.name")
    display = general if isinstance(general, str) and general.strip() else Path(name).name
    quality, basis = rate(family, catalog)
    family = replace(family, display_name=display[:80], quality=quality, quality_source=basis)
    quant = file_type_quant(info.metadata.get("general.file_type")) or "local"
    # the quant's perplexity cost, as the catalog's variants of that quant carry it
    penalty = next((c.quality_penalty for c in catalog.variants if c.quant == quant and c.format == "gguf"), 0.0)
    v = local_variant(
        family, weight_bytes=info.tensor_bytes, path=str(path), quant=quant, weights=gguf_weights(info.tensors)
    )
    return replace(v, quality_penalty=penalty)


def rate(family: Family, catalog: Catalog) -> tuple[float, str]:
    """(quality, where it comes from) for a model's family read from its header."""
    same = [
        f
        for f in catalog.families
        if f.quality
        and (f.arch, f.n_layer, f.n_embd, f.n_head, f.n_head_kv, f.n_vocab)
        == (family.arch, family.n_layer, family.n_embd, family.n_head, family.n_head_kv, family.n_vocab)
    ]
    if same:
        best = max(same, key=lambda f: f.quality or 0.0)
        return float(best.quality or 0.0), f"the catalog's {best.display_name}: same shape ({best.quality_source})"
    rated = [f for f in catalog.families if f.quality]
    if not rated:
        return 0.0, "not rated"
    n = max(family.n_params, 1)
    near = min(rated, key=lambda f: abs(math.log(max(f.n_params, 1) / n)))
    q = max(0.0, float(near.quality or 0.0) - UNKNOWN_QUALITY_DISCOUNT)
    return q, (
        f"not in the catalog: rated as {near.display_name} ({near.n_params / 1e9:.2g}B parameters, the nearest "
        f"in size to its {n / 1e9:.2g}B) less {UNKNOWN_QUALITY_DISCOUNT:g} points"
    )


def obtain(
    pool: Sequence[Variant],
    *,
    plan_options: dict[str, Any],
    offline: bool | None = None,
    progress: Callable[..., Any] | None = None,
    first: Plan | None = None,
) -> tuple[Plan, Path]:
    """The best-ranked of `pool` that is on disk or can be fetched now, and its file.

    `plan_options` are `plan_among`'s keywords (hardware, context, workload, runtime,
    kv_type, threads); `first` the plan already made over `pool`, if any.

    Raises:
        NoFittingVariantError: nothing in `pool` fits.
        ModelUnavailableError: something fits but none of it can be had now; `tried` says
            what was tried and why each failed.
    """
    from localllm import store
    from localllm.planner import plan_among

    left = list(pool)
    tried: list[str] = []
    plan = first
    while left:
        if plan is None:
            try:
                plan = plan_among(left, auto=True, **plan_options)
            except NoFittingVariantError:
                if not tried:
                    raise
                break
        v = plan.variant
        if is_disk_model(v):  # a model found on disk
            return replace(plan, sources=(*tried, f"{label(v)}: on disk at {v.path}")), Path(str(v.path))
        try:
            got = store.pull(v, progress=progress, offline=offline)
        except ModelUnavailableError as exc:
            each = getattr(exc, "tried", ()) or ()  # one line per source the store tried
            why = "; ".join(_first_sentence(s) for s in each) if each else _first_sentence(str(exc))
            tried.append(f"{v.name} ({file_size(v.size)}): {why}")
            left = [c for c in left if c != v and _may_obtain(c, offline)]
            plan = None
            continue
        came = getattr(got, "source", None) or ("downloaded" if got.downloaded else "on disk")
        where = f"{came}: {got.path}" if not got.downloaded else f"{came} ({file_size(v.size)})"
        before = tuple(f"{v.name}: {t}" for t in getattr(got, "tried", ()) or ())
        return replace(plan, sources=(*tried, *before, f"{v.name}: {where}")), Path(got.path)
    raise ModelUnavailableError(
        "no model that fits this machine can be had now; tried, best first:\n  " + "\n  ".join(tried),
        tried=tuple(tried),
    )


def within_reach(pool: Sequence[Variant], offline: bool | None = None) -> list[Variant]:
    """The candidates that may be had now without trying the network: all of them, unless
    offline (then only what is on disk) or the Hub is known to be unreachable (then not what
    only the Hub has). Empty when nothing is."""
    from localllm import store

    if not store.is_offline(offline) and store.hub_unreachable() is None:
        return list(pool)
    return [v for v in pool if _may_obtain(v, offline)]


def _first_sentence(text: str) -> str:
    """The first sentence of an error: what went wrong, without the how-to that follows."""
    line = text.strip().splitlines()[0] if text.strip() else text
    head, sep, _ = line.partition(". ")
    return (head if sep else line).rstrip(".")


def is_disk_model(v: Variant) -> bool:
    """A model found on disk (`disk_models`): its file is an absolute path, unlike the catalog's
    starter, whose path is inside the package."""
    return v.path is not None and Path(v.path).is_absolute()


def label(v: Variant) -> str:
    """How a candidate is named to people: a model on disk by the name it loads by
    ("ollama:smollm2:135m"), a catalog variant by its catalog name."""
    return v.family.name if is_disk_model(v) else v.name


def _may_obtain(v: Variant, offline: bool | None) -> bool:
    """Whether `v` is still worth trying: on disk, or a source not known to be out of reach."""
    from localllm import store

    if is_disk_model(v):
        return Path(str(v.path)).is_file()
    if store.resolve(v) is not None:
        return True
    if store.is_offline(offline):
        return False
    left = [s for s in store.sources(v) if s != "disk"]  # on disk was asked above
    if store.hub_unreachable() is not None:
        left = [s for s in left if s != "hub"]
    return bool(left)


def load_auto(
    *,
    context: int | None,
    runtime: str | None,
    offline: bool | None,
    progress: Callable[..., Any] | None,
    hardware: Hardware | None,
    threads: int | None,
    workload: str = "interactive",
    parallel: int | None = None,
    workers: Sequence[Any] | None = None,
) -> Model:
    """The best-ranked model that fits and is on disk or can be fetched now; the built-in
    starter when none can be had (`info.note` says why, and what to get). `workload`,
    `parallel` and `workers` as for localllm.planner.plan (workers asked once here)."""
    from localllm.model import _open
    from localllm.planner.api import ask_workers
    from localllm.validate import validate_model_path

    options: dict[str, Any] = {
        "hardware": hardware,
        "context": context,
        "runtime": runtime,
        "threads": threads,
        "workload": workload,
        "parallel": parallel,
    }
    options["workers"] = ask_workers(workers)  # asked once, however many candidates are planned
    try:
        plan, path = obtain(candidates(), plan_options=options, offline=offline, progress=progress)
    except ModelUnavailableError as exc:
        return _load_starter(exc, hardware=hardware, threads=threads)
    validate_model_path(path)
    name = label(plan.variant)
    log.info("auto chose %s (%s)", name, plan.sources[-1] if plan.sources else "")
    return _open(path, plan.placement, name=name, plan=plan, hardware=hardware)


def _load_starter(exc: ModelUnavailableError, *, hardware: Hardware | None, threads: int | None = None) -> Model:
    """The starter model shipped in the package, when nothing "auto" would choose is on disk or
    can be fetched now; `info.note` (also logged) says so and names the model to get."""
    tried = getattr(exc, "tried", ()) or ()
    best = tried[0].split(" (", 1)[0] if tried else None
    why = "; ".join(tried) if tried else str(exc).rstrip(".")
    get = f" With network access, get the real one: localllm pull {best}" if best else ""
    note = (
        f"No model that fits this machine is on disk, and none can be downloaded now ({why}). Using the built-in "
        f"starter model instead: it knows small sums, a little small talk and localllm itself.{get}"
    )
    log.warning("%s", note)
    from localllm.model import load
    from localllm.starter import starter_gguf

    model = load(starter_gguf(), hardware=hardware, threads=threads)
    model.info = replace(model.info, note=note)
    return model
