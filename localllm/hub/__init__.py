"""Models on the Hugging Face Hub: named, listed, planned from their headers, then downloaded.

    parse_ref(text)            -> HubRef | None   hf.co/OWNER/REPO[:QUANT][@REV], OWNER/REPO/FILE.gguf
    list_gguf(repo, revision)  -> Listing   the repo's GGUF models (splits as one), sizes, LFS sha256
    fetch_header(...)          -> Header    a file's header by range requests, validated, cached
    hub_variants(ref)          -> list[HubVariant]   the ref's models as planner Variants
    plan_hub(ref, ...)         -> Plan      the best model that fits, exact from its own header
    hub_pull(variant, ...)     -> Pulled    every part downloaded side by side and verified

    refs.py     references and quant names     listing.py  the file list and the cache
    header.py   range-read headers             plan.py     variants, plans, downloads

Everything read from the Hub is cached under <localllm home>/hub/<owner>--<repo>/ with its
commit, so planning again is offline and instant. huggingface_hub is imported only when used.
"""

from __future__ import annotations

from localllm.hub.header import INITIAL_BYTES, MAX_HEADER_BYTES, Header, fetch_header
from localllm.hub.listing import HubFile, HubModel, Listing, list_gguf
from localllm.hub.plan import HubVariant, hub_pull, hub_variants, plan_hub
from localllm.hub.refs import FILE_REF, HubRef, parse_ref, quant_of

__all__ = [
    "FILE_REF",
    "INITIAL_BYTES",
    "MAX_HEADER_BYTES",
    "Header",
    "HubFile",
    "HubModel",
    "HubRef",
    "HubVariant",
    "Listing",
    "fetch_header",
    "hub_pull",
    "hub_variants",
    "list_gguf",
    "parse_ref",
    "plan_hub",
    "quant_of",
]
