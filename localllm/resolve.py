"""What a MODEL argument means, decided once for `load()` and every command.

MODEL is "auto", a catalog name ("family" or "family:quant"), a Hub reference
(`hf.co/OWNER/REPO`, `hf.co/OWNER/REPO:Q4_K_M`, `OWNER/REPO/FILE.gguf`: localllm.hub), a
model another tool keeps on disk (`ollama:NAME:TAG`, `lmstudio:PUBLISHER/REPO/FILE.gguf`,
`gpt4all:FILE.gguf`, `hf:OWNER/REPO/FILE.gguf`: localllm.store.discover), a .gguf file, or
an ONNX folder (or .onnx file). A path is validated and planned from its own header or
config; a Hub reference from its header, read with range requests; a name from the catalog;
"auto" from the catalog and every model already on disk (localllm.auto). `localllm plan`,
`run`, `bench`, `chat` and `load()` all go through `resolve()`, so a form that works in one
works in all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from localllm.catalog import family_from_gguf_metadata, load_catalog
from localllm.errors import CatalogError, InvalidModelError, ModelNotFoundError, ModelUnavailableError
from localllm.hardware.detect import probe
from localllm.placement import KVType, Placement
from localllm.planner import RUNTIME_ALIASES, plan, plan_among, plan_local, plan_local_onnx
from localllm.planner.api import ask_workers
from localllm.quantmix import gguf_weights
from localllm.validate import PICKLE_SUFFIXES, GGUFInfo, OnnxFolderInfo, validate_model_path

if TYPE_CHECKING:  # pragma: no cover
    from localllm.catalog import Family, Variant
    from localllm.hardware import Hardware
    from localllm.hub import HubRef
    from localllm.planner import Plan
    from localllm.runtimes.rpc import WorkerInfo
    from localllm.store.discover import LocalModel

__all__ = ["Resolved", "check", "is_auto", "local_model_path", "plan_for", "resolve"]

log = logging.getLogger(__name__)

# Context for a local file the planner cannot size: llama.cpp's server default (n_ctx
# 4096), capped at what the model was trained for.
DEFAULT_LOCAL_CONTEXT = 4096
# Endings that mean "a file", whether or not it exists: the formats localllm runs and the
# ones it refuses with a reason (validate.py), so a typo'd path never reads as a catalog miss.
_FILE_SUFFIXES = (".gguf", ".onnx", ".safetensors", *sorted(PICKLE_SUFFIXES))


@dataclass(frozen=True)
class Resolved:
    """A MODEL argument, resolved: a local path with its plan, or a catalog plan."""

    path: Path | None  # the local file or folder; None for a catalog model (the store fetches it)
    plan: Plan | None  # None only for a local GGUF whose architecture the planner cannot size
    placement: Placement
    info: GGUFInfo | OnnxFolderInfo | None = None  # what validation read of a local path
    note: str = ""  # why there is no plan, when there is none
    hub: HubRef | None = None  # a Hub reference: load() fetches every part with localllm.hub.hub_pull
    display: str = ""  # the name to show when it is not the file's (an Ollama blob is "sha256-...")

    @property
    def name(self) -> str:
        """The model's name as shown to people: the file's stem, the folder's name, or the variant."""
        if self.display:
            return self.display
        if self.path is not None:
            return self.path.stem if self.path.is_file() else self.path.name
        assert self.plan is not None
        return self.plan.variant.name


def is_auto(model: object) -> bool:
    """Whether a MODEL argument is "auto" (any case, any surrounding blanks)."""
    return isinstance(model, str) and model.strip().lower() == "auto"


def local_model_path(model: str | os.PathLike[str] | Family | Variant) -> Path | None:
    """The Path when `model` names a file or folder, else None (a catalog name, a Hub reference,
    a model another tool keeps on disk by its name, or "auto").

    A path is a PathLike; or text with a path separator, a leading "~" or ".", or a model
    file ending (.gguf, .onnx, and the refused pickle/safetensors ones); or text naming
    something that exists. The path need not exist: `resolve()` then says so.
    """
    if isinstance(model, os.PathLike):
        return Path(model).expanduser()
    if not isinstance(model, str):  # a Family or Variant
        return None
    text = model.strip()
    if not text or text.lower() == "auto" or _kind(text) is not None:
        return None
    seps = {s for s in (os.sep, os.altsep, "/") if s}
    p = Path(text).expanduser()
    if (
        any(s in text for s in seps)
        or text.startswith(("~", "."))
        or text.lower().endswith(_FILE_SUFFIXES)
        or p.exists()
    ):
        return p
    return None


def resolve(
    model: str | os.PathLike[str] | Family | Variant = "auto",
    *,
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    runtime: str | None = None,
    kv_type: str | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    workers: Sequence[str | WorkerInfo] | None = None,
) -> Resolved:
    """Resolve and plan a MODEL argument; does no download. `parallel`: batch work's sequences
    decoded together (localllm.planner.plan; with workload="batch"). `workers`: llama.cpp RPC
    workers the plan may use (localllm.planner.plan), asked once here.

    Raises:
        ModelNotFoundError: a path that does not exist, or a name the catalog lacks.
        InvalidModelError: a local file that is malformed, refused, or wrong for `runtime`.
        NoFittingVariantError: "auto" and nothing in the catalog fits.
    """
    options: dict[str, Any] = {
        "context": context,
        "workload": workload,
        "runtime": runtime,
        "kv_type": kv_type,
        "threads": threads,
        "parallel": parallel,
    }
    # asked once, whatever the plans below try (a Hub model is planned up to twice)
    options["workers"] = ask_workers(workers)
    if is_auto(model):
        return _resolve_auto(hardware=hardware, **options)
    named = _named_elsewhere(model)
    if named is not None:  # a Hub reference, or a model another tool keeps on disk
        ref, found = named
        if ref is not None:
            from localllm.hub import plan_hub

            try:
                p = plan_hub(ref, hardware=hardware, **options)
            except (ModelNotFoundError, ModelUnavailableError) as exc:
                text = str(model).strip()
                if text.lower().startswith(_HUB_PREFIXES):
                    raise
                # OWNER/REPO/FILE.gguf is also how a missing relative path looks: say both
                raise ModelNotFoundError(
                    f"no such file: {text} does not exist here; read as a Hub reference (OWNER/REPO/FILE.gguf): {exc}",
                    name=text,
                ) from exc
            return Resolved(path=None, plan=p, placement=p.placement, hub=ref)
        assert found is not None
        info = _validate(found.path, model)
        r = _plan_local(found.path, info, hardware=hardware, **options)
        return replace(r, display=found.name)
    path = local_model_path(model)
    if path is None:
        assert not isinstance(model, os.PathLike)  # local_model_path gives every PathLike a Path
        name = model.strip() if isinstance(model, str) else model
        p = plan(name, hardware=hardware, **options)
        return Resolved(path=None, plan=p, placement=p.placement)
    info = _validate(path, model)
    return _plan_local(path, info, hardware=hardware, **options)


def _resolve_auto(*, hardware: Hardware | None, **options: Any) -> Resolved:
    """ "auto": the best of the catalog and the models already on disk; offline, of what is on
    disk. No download here: load() takes the best that can be had now (localllm.auto.obtain)."""
    from localllm.auto import candidates, is_disk_model, label, within_reach

    pool = candidates()
    # offline, what is on disk; else everything (what can be downloaded is known only by trying)
    p = plan_among(within_reach(pool) or pool, auto=True, hardware=hardware, **options)
    v = p.variant
    if is_disk_model(v):  # a model found on disk: its file, shown by the name it loads by
        return Resolved(path=Path(str(v.path)), plan=p, placement=p.placement, display=label(v))
    return Resolved(path=None, plan=p, placement=p.placement)


_HUB_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/", "https://hf.co/")


def _kind(text: str) -> Literal["local", "hub"] | None:
    """ "local" for a model another tool keeps on disk, named by its tool (`ollama:NAME:TAG`),
    "hub" for a Hub reference, else None. An existing path always wins over the Hub's
    OWNER/REPO/FILE.gguf form. Looks nothing up."""
    from localllm.hub import parse_ref
    from localllm.store import discover

    if discover.is_local_name(text):
        return "local"
    if Path(text).expanduser().exists():
        return None
    try:
        return "hub" if parse_ref(text) is not None else None
    except ModelNotFoundError:  # a malformed repository id: an error if it is plainly meant for the Hub
        return "hub" if text.lower().startswith(_HUB_PREFIXES) else None


def _named_elsewhere(model: object) -> tuple[HubRef | None, LocalModel | None] | None:
    """(a Hub reference, None) or (None, a model on disk named by its tool) for text that names
    one, else None.

    Raises:
        ModelNotFoundError: a tool's name that is not on disk (with the closest names found).
    """
    if not isinstance(model, str):
        return None
    text = model.strip()
    kind = _kind(text)
    if kind == "local":
        from localllm.store import discover

        return None, discover.find_local(text)
    if kind == "hub":
        from localllm.hub import parse_ref

        return parse_ref(text), None
    return None


def check(model: str | os.PathLike[str]) -> Path | None:
    """The cheap part of `resolve()`, without probing or planning: a path must exist and be a
    valid model, a name must be in the catalog. Returns the path, or None for a name or "auto".

    Raises:
        ModelNotFoundError, InvalidModelError: as `resolve()`.
    """
    named = _named_elsewhere(model)
    if named is not None:
        _, found = named
        return found.path if found is not None else None  # a Hub reference is checked when planned
    path = local_model_path(model)
    if path is not None:
        _validate(path, model)
    elif not is_auto(model):
        load_catalog().find(str(model))
    return path


def plan_for(
    model: str | os.PathLike[str] | Family | Variant = "auto",
    *,
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    runtime: str | None = None,
    kv_type: str | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    workers: Sequence[str | WorkerInfo] | None = None,
) -> Plan:
    """The Plan for any MODEL form: "auto", a catalog name or "name:quant", a .gguf file or an ONNX folder.

    Like `localllm.plan`, which takes catalog names only; a local file is planned from its
    own header (exact tensor bytes and architecture). Does no download.

    Raises:
        ModelNotFoundError: a path that does not exist, or a name the catalog lacks.
        InvalidModelError: a local file that is malformed or refused, or whose architecture
            the planner cannot size (`load()` still runs it, on the CPU).
        NoFittingVariantError: "auto" and nothing in the catalog fits.
    """
    r = resolve(
        model,
        hardware=hardware,
        context=context,
        workload=workload,
        runtime=runtime,
        kv_type=kv_type,
        threads=threads,
        parallel=parallel,
        workers=workers,
    )
    if r.plan is None:
        raise InvalidModelError(r.note, path=str(r.path))
    return r.plan


def _validate(path: Path, model: object) -> GGUFInfo | OnnxFolderInfo:
    if not path.exists():
        raise ModelNotFoundError(
            f"no such file: {path} (there is no model file or folder at that path). Check the path, or "
            "give a catalog name (`localllm models` lists them) or 'auto'",
            name=str(model),
        )
    return validate_model_path(path)


def _plan_local(
    path: Path,
    info: GGUFInfo | OnnxFolderInfo,
    *,
    hardware: Hardware | None,
    context: int | None,
    workload: str,
    runtime: str | None,
    kv_type: str | None,
    threads: int | None,
    parallel: int | None = None,
    workers: Sequence[str | WorkerInfo] | None = None,
) -> Resolved:
    """A plan and placement for a validated local file: the planner's, sized from the file itself
    (an ONNX folder never uses `workers`: they are llama.cpp's)."""
    wanted = RUNTIME_ALIASES.get(runtime.strip().lower(), runtime.strip().lower()) if runtime else None
    if isinstance(info, OnnxFolderInfo):  # an ONNX folder or .onnx file
        if wanted not in (None, "onnxruntime"):
            raise InvalidModelError(
                f"{path} is an ONNX model; runtime {runtime!r} cannot run it (use runtime 'onnxruntime')",
                path=str(path),
            )
        if kv_type is not None:
            raise InvalidModelError(
                f"{path} is an ONNX export, which fixes its own KV cache type; "
                f"kv_type {kv_type!r} is a llama.cpp option: leave it out",
                path=str(path),
            )
        onnx_plan = plan_local_onnx(
            info,
            path=str(path),
            hardware=hardware,
            context=context,
            workload=workload,
            threads=threads,
            parallel=parallel,
        )
        return Resolved(path=path, plan=onnx_plan, placement=onnx_plan.placement, info=info)
    if wanted not in (None, "llama.cpp"):
        raise InvalidModelError(
            f"{path} is a GGUF file; runtime {runtime!r} cannot run it (use runtime 'llama.cpp')", path=str(path)
        )
    try:
        tied = not any(t.name == "output.weight" for t in info.tensors)
        family = family_from_gguf_metadata(info.metadata, name=path.stem, tied_embeddings=tied)
    except CatalogError as exc:  # an architecture the planner cannot size: llama.cpp may still run it
        why = str(exc)
    else:
        gguf_plan = plan_local(
            family,
            weight_bytes=info.tensor_bytes,
            path=str(path),
            context=context,
            workload=workload,
            runtime=wanted,
            kv_type=kv_type,
            threads=threads,
            hardware=hardware,
            weights=gguf_weights(info.tensors),
            parallel=parallel,
            workers=workers,
        )
        return Resolved(path=path, plan=gguf_plan, placement=gguf_plan.placement, info=info)
    # an architecture the planner cannot size: a CPU placement from probe() facts
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
    hw = hardware if hardware is not None else probe()
    cores = threads or hw.cpu.physical_cores or int(hw.cpu.effective_cores or 1)
    meta = info.metadata
    trained = meta.get(f"{meta.get('general.architecture')}.context_length")
    n_ctx = context or min(DEFAULT_LOCAL_CONTEXT, int(trained) if trained else DEFAULT_LOCAL_CONTEXT)
    n = max(1, int(cores))
    note = (
        f"cannot plan {path} ({why}): the planner cannot size its memory. localllm still loads it on "
        f"the CPU with n_ctx {n_ctx} and {n} thread{'s' if n != 1 else ''} (`localllm run {path} PROMPT`)"
    )
    log.info("%s", note)  # load() warns; plan_for raises it
    # kv_type is not checked here: llama.cpp's runtime refuses one it does not know
    # batch work on a file the planner cannot size: the sequences asked, else one
    placement = Placement(
        runtime="llama.cpp", n_ctx=n_ctx, n_threads=n, kv_type=cast(KVType, kv_type or "f16"), n_seq=parallel or 1
    )
    return Resolved(path=path, plan=None, placement=placement, info=info, note=note)
