"""The planner's entry points for the catalog and GGUF files: `plan`, `plan_local`, `fit_table`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from localllm.calibration import Calibration
from localllm.catalog import Catalog, Family, Variant, load_catalog, local_variant
from localllm.errors import ModelNotFoundError, NoFittingVariantError
from localllm.hardware import Hardware
from localllm.hardware.detect import probe
from localllm.placement import RUNTIMES, Runtime
from localllm.planner.batch import assess_for
from localllm.planner.machine import calibration_for, loads_of, prepare
from localllm.planner.rank import choose
from localllm.planner.runtime import onnx_may_accelerate, pick_runtime, runtime_for, runtime_name
from localllm.planner.search import where_of
from localllm.planner.values import Plan, VariantFit
from localllm.planner.workers import workers_from_env

if TYPE_CHECKING:  # pragma: no cover
    from localllm.runtimes.rpc import WorkerInfo

__all__ = ["ask_workers", "find_workers", "fit_table", "plan", "plan_among", "plan_local"]


def plan(
    model: str | Family | Variant = "auto",
    *,
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    runtime: str | None = None,
    kv_type: str | None = None,
    headroom: int | None = None,
    catalog: Catalog | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    workers: Sequence[str | WorkerInfo] | None = None,
) -> Plan:
    """Choose what to run and where.

    Args:
        model: "auto", a catalog name ("family" or "family:quant"), a Family or a Variant.
        hardware: the machine; None probes this one.
        context: minimum context in tokens; None aims for DEFAULT_CONTEXT and may shrink
            toward CONTEXT_FLOOR.
        workload: "interactive" (real-time) or "batch".
        runtime: "llama.cpp" or "onnxruntime" ("onnx"); None weighs both: llama.cpp unless
            ONNX Runtime has a better place for the model (a GPU llama.cpp cannot use).
        kv_type: KV cache type for llama.cpp, "f16" (default), "q8_0" or "q4_0" (an ONNX
            export fixes its own, f16 or f32).
        headroom: bytes of RAM to leave free beyond the planner's own margin.
        catalog: the catalog; None loads the bundled one.
        calibration: measured figures (localllm.calibration); None reads this machine's
            kept figures when `hardware` is a live probe (not a profile). Measured decode
            speeds are preferred to the bandwidth formula.
        threads: CPU threads; None chooses (cores, or what bench measured fastest).
        parallel: batch work: sequences to decode together, each with `context` tokens
            (placement.n_seq; never fewer: the context shrinks toward BATCH_CONTEXT_FLOOR
            instead unless given, and a plan that still does not fit has `fits` False). None
            for batch work: the most that fit, up to MAX_PARALLEL, capped where predicted
            throughput stops rising (planner.batch). Only 1 (or None) for interactive work.
        workers: llama.cpp RPC workers ("host:port", or rpc.WorkerInfo already asked) whose
            memory the plan may use when the model does not fit here (planner.workers); each is
            asked what it offers (network I/O, a few ms each); one that does not answer is left
            out, with the reason in `warnings`. None: LOCALLLM_WORKERS, else none.

    Returns a Plan; for a named model that does not fit, `fits` is False (the caller
    decides). Raises:
        NoFittingVariantError: "auto" and nothing in the catalog fits.
        ModelNotFoundError: unknown model, quant or runtime choice.
        InvalidOptionError: parallel below 1 or above MAX_SEQ, or above 1 for interactive work.
    """
    catalog = catalog or load_catalog()
    rt = runtime_name(runtime)
    auto = isinstance(model, str) and model.strip().lower() == "auto"
    pools = _pools(catalog, model, auto=auto, runtime=rt, kv_type=kv_type)
    return _plan_pools(
        pools,
        auto=auto,
        catalog=catalog,
        hardware=hardware,
        context=context,
        workload=workload,
        runtime=rt,
        kv_type=kv_type,
        headroom=headroom,
        calibration=calibration,
        threads=threads,
        parallel=parallel,
        workers=workers,
    )


def plan_among(
    variants: Sequence[Variant],
    *,
    auto: bool = True,
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    runtime: str | None = None,
    kv_type: str | None = None,
    headroom: int | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    workers: Sequence[str | WorkerInfo] | None = None,
) -> Plan:
    """The best of `variants`: the files of a Hub repository, models already on disk, or the
    catalog less what could not be had. Arguments as for `plan`.

    `auto` ranks as "auto" does (tier, interactive speed, quality, then the smaller file) and
    raises NoFittingVariantError when nothing fits; auto=False ranks as a named model's quants
    (quality first) and returns the smallest, `fits` False, when nothing fits.

    Raises:
        NoFittingVariantError: `auto` and none of `variants` fits.
        ModelNotFoundError: `variants` is empty, or none runs on `runtime`.
    """
    rt = runtime_name(runtime)
    every = list(variants)
    pools = {r: [v for v in every if runtime_for(v) == r] for r in ((rt,) if rt else RUNTIMES)}
    if rt is None and kv_type is not None:  # a KV type is a llama.cpp option
        pools.pop("onnxruntime")
    pools = {r: pool for r, pool in pools.items() if pool}
    if not pools:
        raise ModelNotFoundError(f"no candidate model to plan{f' for runtime {rt!r}' if rt else ''}", name=None)
    return _plan_pools(
        pools,
        auto=auto,
        catalog=None,
        hardware=hardware,
        context=context,
        workload=workload,
        runtime=rt,
        kv_type=kv_type,
        headroom=headroom,
        calibration=calibration,
        threads=threads,
        parallel=parallel,
        workers=workers,
    )


def _plan_pools(
    pools: dict[Runtime, list[Variant]],
    *,
    auto: bool,
    catalog: Catalog | None,
    hardware: Hardware | None,
    context: int | None,
    workload: str,
    runtime: Runtime | None,
    kv_type: str | None,
    headroom: int | None,
    calibration: Calibration | None,
    threads: int | None,
    parallel: int | None,
    workers: Sequence[str | WorkerInfo] | None,
) -> Plan:
    """The plan for the best variant of each runtime's pool, then the better runtime."""
    found, left_out = find_workers(workers) if "llama.cpp" in pools else ((), ())
    if hardware is None:
        hardware = probe()
        if "onnxruntime" in pools and (runtime == "onnxruntime" or onnx_may_accelerate(hardware)):
            hardware = probe(runtimes=True)  # which execution providers this onnxruntime has
    calibration = calibration_for(hardware, calibration)
    plans: dict[Runtime, Plan | NoFittingVariantError] = {}
    for pool_rt, pool in pools.items():
        req, m, _ = prepare(
            hardware,
            context=context,
            workload=workload,
            runtime=pool_rt,
            kv_type=kv_type,
            headroom=headroom,
            calibration=calibration,
            threads=threads,
            parallel=parallel,
            workers=found,
            left_out=left_out,
        )
        try:
            plans[pool_rt] = choose(pool, m, req, pool_rt, auto=auto, catalog=catalog)
        except NoFittingVariantError as exc:
            if len(pools) == 1:
                raise
            plans[pool_rt] = exc
    if len(plans) == 1:
        (only,) = plans.values()
        assert isinstance(only, Plan)  # a lone runtime's NoFittingVariantError was raised above
        return only
    return pick_runtime(plans["llama.cpp"], plans["onnxruntime"], calibration, hardware)


def _pools(
    catalog: Catalog, model: str | Family | Variant, *, auto: bool, runtime: Runtime | None, kv_type: str | None
) -> dict[Runtime, list[Variant]]:
    """The variants to weigh, per runtime that runs them."""
    if auto:
        found: Family | Variant | None = None
    else:
        found = catalog.find(model) if isinstance(model, str) else model
    if isinstance(found, Variant):
        if runtime is not None and runtime != runtime_for(found):
            raise ModelNotFoundError(
                f"{found.name} is a {found.format} file, which {runtime} does not run; "
                f"use runtime {runtime_for(found)!r}",
                name=found.name,
            )
        return {runtime_for(found): [found]}
    # the packaged starter is a fallback load() takes when nothing can be fetched, not a
    # candidate "auto" weighs (else nothing would ever fail to fit)
    every = [v for v in catalog.variants if not v.packaged] if found is None else list(catalog.variants_of(found))
    pools = {rt: [v for v in every if runtime_for(v) == rt] for rt in ((runtime,) if runtime else RUNTIMES)}
    if runtime is None and kv_type is not None:  # a KV type is a llama.cpp option
        pools.pop("onnxruntime")
    pools = {rt: pool for rt, pool in pools.items() if pool} or pools
    if not any(pools.values()):
        what = "the catalog" if found is None else found.name
        raise ModelNotFoundError(
            f"{what} has no variants for runtime {runtime!r}", name=None if found is None else found.name
        )
    return pools


def plan_local(
    family: Family,
    *,
    weight_bytes: int,
    path: str | None = None,
    quant: str = "local",
    hardware: Hardware | None = None,
    context: int | None = None,
    workload: str = "interactive",
    runtime: str | None = None,
    kv_type: str | None = None,
    headroom: int | None = None,
    calibration: Calibration | None = None,
    threads: int | None = None,
    weights: tuple = (),
    parallel: int | None = None,
    workers: Sequence[str | WorkerInfo] | None = None,
) -> Plan:
    """Plan a local GGUF file: `family` from its header (catalog.family_from_gguf_metadata),
    `weight_bytes` its exact tensor bytes, `weights` its tensor table (quantmix.gguf_weights:
    which weights the CPU backend repacks). `calibration`, `threads` and `parallel` as for `plan`; a
    measured load of the same file (calibration.LoadRecord) corrects the memory estimate.
    `workers` as for `plan`.
    (A local ONNX folder: `plan_local_onnx`.)"""
    variant = local_variant(family, weight_bytes=weight_bytes, path=path, quant=quant, weights=weights)
    hardware = hardware if hardware is not None else probe()
    calibration = calibration_for(hardware, calibration)
    found, left_out = find_workers(workers)
    req, m, rt = prepare(
        hardware,
        context=context,
        workload=workload,
        runtime=runtime,
        kv_type=kv_type,
        headroom=headroom,
        calibration=calibration,
        threads=threads,
        parallel=parallel,
        workers=found,
        left_out=left_out,
    )
    if path is not None and calibration is not None and calibration.loads:
        m = replace(m, loads=loads_of(path, calibration))
    return choose([variant], m, req, rt, auto=False, catalog=None)


def ask_workers(workers: Sequence[str | WorkerInfo] | None) -> list[WorkerInfo]:
    """The workers a plan may use (those given, else LOCALLLM_WORKERS), each asked what it offers
    unless already asked (rpc.find_workers; one that cannot be used carries its `error`)."""
    given = list(workers_from_env() if workers is None else workers)
    asked = [w for w in given if not isinstance(w, str)]
    names = [w for w in given if isinstance(w, str)]
    if names:
        from localllm.runtimes import rpc  # sockets: only for a plan with workers

        asked += rpc.find_workers(names)
    return asked


def find_workers(
    workers: Sequence[str | WorkerInfo] | None,
) -> tuple[tuple[WorkerInfo, ...], tuple[str, ...]]:
    """`ask_workers`, split: the usable ones, and why any was left out."""
    asked = ask_workers(workers)
    return tuple(w for w in asked if w.error is None), tuple(w.error for w in asked if w.error is not None)


def fit_table(
    hardware: Hardware | None = None,
    *,
    catalog: Catalog | None = None,
    context: int | None = None,
    workload: str = "interactive",
    kv_type: str | None = None,
    headroom: int | None = None,
    parallel: int | None = None,
) -> tuple[VariantFit, ...]:
    """Every catalog variant with where it would run here (the `localllm models --fits` table);
    for batch work with `parallel` sequences (None: the planner's choice per variant)."""
    catalog = catalog or load_catalog()
    hardware = hardware if hardware is not None else probe()
    calibration = calibration_for(hardware, None)
    rows = []
    for v in catalog.variants:
        req, m, _ = prepare(
            hardware,
            context=context,
            workload=workload,
            runtime=runtime_for(v),
            kv_type=kv_type,
            headroom=headroom,
            calibration=calibration,
            parallel=parallel,
        )
        c = assess_for(v, m, req)
        rows.append(
            VariantFit(
                variant=v,
                where=where_of(c.tier, unfit="none"),
                fits=c.fits,
                needed=c.needed,
                available=c.available,
                n_ctx=c.n_ctx,
                n_gpu_layers=c.est.n_gpu_layers,
                tokens_per_s=c.tokens_per_s,
                why=c.why,
                n_seq=c.n_seq,
            )
        )
    return tuple(rows)
