"""Plan a Hub model exactly before downloading it, then download what the plan chose.

    hub_variants(ref, offline=)  -> list[Variant]: the ref's GGUF models (a split as one); those
                                    whose header was read are exact, the others sized from their
                                    file sizes (see below)
    plan_hub(ref, ...)           -> Plan: the best model of the ref that fits (exact: its header read)
    hub_pull(variant, ...)       -> store.Pulled: every part downloaded side by side, LFS sha256
                                    verified, the model validated as a whole

Headers read: for `:QUANT` or `/FILE.gguf`, that model's. For a whole repository, one model's
first (every quant of a repo shares the architecture, so the family), the others sized as
their file size less that header; then the chosen model's header is read too and it is planned
again exactly, so at most a few headers are read (a repo of 20 quants × 1-8 MiB would be slow
and costly to read whole), and the plan returned always rests on its own header.

Quality among a repo's quants: llama.cpp's perplexity cost of each quant, as the catalog
carries it (Q4_K_M +0.18, Q8_0 +0.003...), so "the best quant that fits" is ranked as a
catalog family's quants are (quality, then the smaller file: Q8_0 before F16). A quant that
table lacks is rated as the repo's nearest file in size that it has; a repo with no known
quant at all ranks by file size (the bigger the better).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from localllm.catalog import Variant, family_from_gguf_metadata, local_variant
from localllm.errors import CatalogError, InvalidModelError, ModelNotFoundError
from localllm.formats.gguf import GGUFInfo
from localllm.hub.header import Header, fetch_header
from localllm.hub.listing import HubModel, Listing, list_gguf
from localllm.hub.refs import HubRef, normalize_quant
from localllm.quantmix import gguf_weights
from localllm.store.values import ProgressCallback, Pulled, RepoFile
from localllm.validate import validate_gguf_parts, validate_gguf_split

__all__ = ["HubVariant", "hub_pull", "hub_variants", "plan_hub"]

log = logging.getLogger(__name__)

SIZE_PENALTY_SCALE = 4.0  # perplexity points between the smallest and largest file: ranks by size only
_SOURCE = "localllm: a Hub repository's quants ranked by file size"


@dataclasses.dataclass(frozen=True)
class HubVariant:
    """What localllm.hub keeps beside a Variant: where its parts are and whether it was sized exactly."""

    variant: Variant
    model: HubModel
    listing: Listing
    exact: bool  # sized from its own header(s), not from another quant's


def _models_for(ref: HubRef, listing: Listing) -> list[HubModel]:
    models = list(listing.models)
    if not models:
        left = f" ({'; '.join(listing.skipped)})" if listing.skipped else ""
        raise ModelNotFoundError(f"{ref.repo}@{ref.revision} holds no GGUF model{left}.", name=str(ref))
    if ref.filename:
        chosen = [m for m in models if any(p.filename == ref.filename for p in m.parts)]
        if not chosen:
            why = next((s for s in listing.skipped if s.startswith(ref.filename)), None)
            raise ModelNotFoundError(
                f"{ref.repo} has no GGUF model {ref.filename!r}{f' ({why})' if why else ''}; its GGUF files: "
                f"{', '.join(m.filename for m in models)}",
                name=str(ref),
                suggestions=tuple(f"{ref.repo}/{m.filename}" for m in models),
            )
        return chosen
    if ref.quant:
        chosen = [m for m in models if m.quant == normalize_quant(ref.quant)]
        if not chosen:
            quants = sorted({m.label for m in models})
            raise ModelNotFoundError(
                f"{ref.repo} has no {ref.quant} GGUF file; its quants: {', '.join(quants)} "
                f"(e.g. hf.co/{ref.repo}:{quants[0]})",
                name=str(ref),
                suggestions=tuple(f"hf.co/{ref.repo}:{q}" for q in quants),
            )
        return chosen[:1] if len(chosen) == 1 else chosen
    return models


def _headers(listing: Listing, model: HubModel, offline: bool | None) -> tuple[list[Header], GGUFInfo]:
    """Every part's header, and the model they make checked as one (validate_gguf's rules)."""
    split = len(model.parts) > 1
    heads = [fetch_header(listing.repo, listing.commit, p, part=split, offline=offline) for p in model.parts]
    if not split:
        return heads, heads[0].info
    info = validate_gguf_parts([(h.data, h.file.size, f"{listing.repo}/{h.file.filename}") for h in heads])
    return heads, info


def _exact(listing: Listing, model: HubModel, offline: bool | None) -> tuple[Variant, int]:
    """The variant sized from its own headers, and the header bytes of its first part."""
    heads, info = _headers(listing, model, offline)
    label = model.quant or "local"
    tied = not any(t.name == "output.weight" for t in info.tensors)
    try:
        family = family_from_gguf_metadata(info.metadata, name=listing.repo, tied_embeddings=tied)
    except CatalogError as exc:
        raise InvalidModelError(
            f"{listing.repo}/{model.filename}: cannot plan it ({exc}). Download it with `localllm pull` and run "
            "it by path, which loads it on the CPU.",
            path=f"{listing.repo}/{model.filename}",
        ) from exc
    v = local_variant(family, weight_bytes=info.tensor_bytes, quant=label, weights=gguf_weights(info.tensors))
    v = dataclasses.replace(
        v, repo=listing.repo, filename=model.filename, sha256=model.parts[0].sha256, size_estimated=False
    )
    return v, len(heads[0].data)


def _estimated(like: Variant, header_bytes: int, model: HubModel) -> Variant:
    """Another quant of the same repo, sized from its file size less a header like `like`'s."""
    weight = max(1, model.size - header_bytes * len(model.parts))
    return dataclasses.replace(
        like,
        quant=model.quant or "local",
        size=weight,
        filename=model.filename,
        sha256=model.parts[0].sha256,
        size_estimated=True,
        weights=(),
    )


def _ranked(found: Sequence[HubVariant]) -> list[Variant]:
    """The variants, each with its quant's quality penalty (see the module doc)."""
    from localllm.catalog import load_catalog

    # llama.cpp's perplexity cost of each quant, as the catalog's variants carry it
    known: dict[str, tuple[float, str | None]] = {}
    for c in load_catalog().variants:
        if c.format == "gguf" and c.penalty_source:
            known.setdefault(c.quant.upper(), (c.quality_penalty, c.penalty_source))
    known.setdefault("BF16", known.get("F16", (0.0, None)))  # 16 bits either way
    biggest = max(h.model.size for h in found)
    quants = {id(h): (h.variant.quant or "").upper() for h in found}
    rated = [(h.model.size, known[quants[id(h)]]) for h in found if quants[id(h)] in known]
    out = []
    for h in found:
        quant = quants[id(h)]
        if quant in known:
            penalty, source = known[quant]
        elif rated:  # a quant llama.cpp's table lacks (IQ4_XS, Q4_K_S...): as the nearest in size that it has
            size, (penalty, _) = min(rated, key=lambda r: abs(r[0] - h.model.size))
            source = f"{_SOURCE}: {quant or 'this file'} rated as the quant nearest in size ({size:,} bytes)"
        else:
            penalty, source = round(SIZE_PENALTY_SCALE * (1 - h.model.size / biggest), 4), _SOURCE
        out.append(dataclasses.replace(h.variant, quality_penalty=penalty, penalty_source=source))
    return out


def hub_variants(ref: HubRef, *, offline: bool | None = None) -> list[HubVariant]:
    """The ref's models as variants: the first exact (its header read), the others estimated.

    Raises:
        ModelNotFoundError: no such repository, revision, quant or file.
        InvalidModelError: a header is malformed or hostile.
        ModelUnavailableError: offline without a cache, unreachable, or gated.
    """
    listing = list_gguf(ref.repo, ref.revision, offline=offline)
    models = _models_for(ref, listing)
    # the one read first: Q4_K_M (the usual pick) when there, else the median size
    by_size = sorted(models, key=lambda m: m.size)
    lead = next((m for m in models if m.quant == "Q4_K_M"), by_size[len(by_size) // 2])
    v, header_bytes = _exact(listing, lead, offline)
    return [HubVariant(v if m is lead else _estimated(v, header_bytes, m), m, listing, exact=m is lead) for m in models]


def plan_hub(
    ref: HubRef,
    *,
    hardware=None,
    context: int | None = None,
    workload: str = "interactive",
    runtime: str | None = None,
    kv_type: str | None = None,
    threads: int | None = None,
    offline: bool | None = None,
    parallel: int | None = None,
    workers=None,
):
    """The plan for a Hub model: the best of the ref's models that fits, planned from its header.

    Arguments as for `localllm.planner.plan`. The Plan's variant carries repo, filename and the
    LFS sha256 of its first part; hub_pull(plan.variant) downloads it.

    Raises:
        as hub_variants.
    """
    from localllm.planner import plan_among

    found = hub_variants(ref, offline=offline)
    kw = dict(
        hardware=hardware,
        context=context,
        workload=workload,
        runtime=runtime,
        kv_type=kv_type,
        threads=threads,
        parallel=parallel,
        workers=workers,
    )
    for _ in range(len(found)):
        plan = plan_among(_ranked(found), auto=False, **kw)
        i = next(i for i, h in enumerate(found) if h.variant.filename == plan.variant.filename)
        if found[i].exact:
            return plan
        v, _ = _exact(found[i].listing, found[i].model, offline)  # read the chosen one's header: plan again
        found[i] = HubVariant(v, found[i].model, found[i].listing, exact=True)
    return plan_among(_ranked(found), auto=False, **kw)


def _model_of(variant: Variant, offline: bool | None) -> HubModel:
    if not variant.repo or not variant.filename:
        raise ModelNotFoundError(f"{variant.name} is not a Hub model (no repository and file)", name=variant.name)
    listing = list_gguf(variant.repo, "main", offline=offline)
    for m in listing.models:
        if m.filename == variant.filename:
            return m
    raise ModelNotFoundError(f"{variant.repo} has no GGUF model {variant.filename!r}", name=variant.name)


def hub_pull(
    variant: Variant,
    *,
    progress: ProgressCallback | None = None,
    offline: bool | None = None,
    force_download: bool = False,
) -> Pulled:
    """Download every part of a Hub model into the localllm cache, side by side under their names.

    Each part is fetched by localllm.store (resumable, free disk checked, sha256 checked against
    the Hub's LFS oid); then the model is validated as a whole. Returns the first part's Pulled.

    Raises:
        ChecksumMismatchError: a part's sha256 differs from the Hub's (nothing is left under its name).
        InvalidModelError: the downloaded model fails validation.
        ModelUnavailableError / DownloadError: as localllm.store.pull.
    """
    from localllm import store

    model = _model_of(variant, offline)
    pulled: list[Pulled] = []
    done = 0
    total = model.size
    for p in model.parts:

        def part_progress(n: int, _t: int | None, base: int = done) -> None:
            if progress is not None:
                progress(base + n, total)

        f = RepoFile(
            name=f"{variant.repo}/{p.filename}",
            repo=variant.repo or "",
            filename=p.filename,
            size=p.size,
            sha256=p.sha256,
            size_estimated=False,
        )
        pulled.append(store.pull(f, progress=part_progress, offline=offline, force_download=force_download))
        done += p.size
    first = pulled[0]
    validate_gguf_split(first.path)
    return dataclasses.replace(
        first,
        downloaded=any(x.downloaded for x in pulled),
        unverified=tuple(u for x in pulled for u in x.unverified),
        warnings=tuple(w for x in pulled for w in x.warnings),
    )
