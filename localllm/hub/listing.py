"""A Hub repository's GGUF models at a revision: file sizes and LFS sha256, cached with the commit.

    list_gguf(repo, revision, offline)  -> Listing: one HubModel per model (a split's parts as one),
                                           from the Hub (huggingface_hub's model_info with file
                                           metadata) or, offline or unreachable, from the cache
    repo_dir(repo) / commit_dir(repo, commit)   <localllm home>/hub/<owner>--<repo>[/<commit>]
    hub_error(exc, repo, what)          the LocalLLMError for a huggingface_hub / HTTP failure

The cache: `refs/<revision>` holds the commit the revision pointed at, `<commit>/listing.json`
the listing, `<commit>/<file>.header` the header bytes (localllm.hub.header). A commit's files
never change, so what is cached under it is good forever; only a branch name moves.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from localllm import __version__
from localllm.errors import LocalLLMError, ModelNotFoundError, ModelUnavailableError
from localllm.formats.gguf import SPLIT_NAME, split_name
from localllm.hub.refs import check_repo_id, quant_of
from localllm.paths import home
from localllm.store.locations import hub_endpoint, is_offline

__all__ = ["HubFile", "HubModel", "LISTING_VERSION", "Listing", "commit_dir", "hub_error", "list_gguf", "repo_dir"]

log = logging.getLogger(__name__)

LISTING_VERSION = 1  # listing.json's schema
API_TIMEOUT_S = 10.0  # huggingface_hub's own default for API calls
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class HubFile:
    """One file of a repository: its path in the repo, size, and LFS sha256 (None when not in LFS)."""

    filename: str
    size: int
    sha256: str | None


@dataclass(frozen=True)
class HubModel:
    """One GGUF model of a repository: one file, or a split's parts in order."""

    parts: tuple[HubFile, ...]
    quant: str | None  # from the file name ("Q4_K_M"); None when it names none

    @property
    def filename(self) -> str:
        return self.parts[0].filename

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def label(self) -> str:
        """What names it among the repo's models: its quant, else its file name."""
        return self.quant or self.filename


@dataclass(frozen=True)
class Listing:
    """A repository's GGUF models at a commit, and what was left out (with why)."""

    repo: str
    revision: str
    commit: str
    models: tuple[HubModel, ...]
    skipped: tuple[str, ...] = ()
    cached: bool = field(default=False, compare=False)  # read from the cache, not the Hub


def repo_dir(repo: str) -> Path:
    return home() / "hub" / repo.replace("/", "--")


def commit_dir(repo: str, commit: str) -> Path:
    if not _COMMIT.match(commit):  # it names a folder: never a path from a server unchecked
        raise ModelUnavailableError(f"{repo}: the Hub gave {commit!r} as the commit, not a 40-hex sha")
    return repo_dir(repo) / commit


def _ref_file(repo: str, revision: str) -> Path:
    return repo_dir(repo) / "refs" / quote(revision, safe="")


def list_gguf(repo: str, revision: str = "main", *, offline: bool | None = None) -> Listing:
    """The GGUF models of `repo` at `revision`, from the Hub or, offline, from the cache.

    Raises:
        ModelNotFoundError: no such repository (or private without a token), no such revision,
            or no GGUF file in it.
        ModelUnavailableError: gated and not granted, or offline / unreachable with nothing cached.
    """
    check_repo_id(repo)
    if is_offline(offline):
        cached = _cached(repo, revision)
        if cached is None:
            raise ModelUnavailableError(
                f"{repo}@{revision}: offline (LOCALLLM_OFFLINE / HF_HUB_OFFLINE) and its file list is not "
                f"cached. Plan or pull it once online (`localllm plan hf.co/{repo}`), or unset offline mode."
            )
        log.info("%s@%s: offline, using the file list cached for commit %s", repo, revision, cached.commit)
        return cached
    try:
        info = _model_info(repo, revision)
    except ModelUnavailableError as exc:
        cached = _cached(repo, revision)
        if cached is None:
            raise
        log.warning("%s; using the file list cached for commit %s", exc, cached.commit)
        return cached
    listing = _group(repo, revision, info)
    _save(listing)
    return listing


def _model_info(repo: str, revision: str) -> tuple[str, list[HubFile]]:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint(), library_name="localllm", library_version=__version__)
    try:
        # token=None: huggingface_hub uses HF_TOKEN or the saved login (`hf auth login`), as it does
        info = api.model_info(repo, revision=revision, files_metadata=True, timeout=API_TIMEOUT_S)
    except Exception as exc:
        raise hub_error(exc, repo, f"list the files of {repo}@{revision}") from exc
    commit = info.sha or ""
    files = [
        HubFile(s.rfilename, int(s.size or (s.lfs.size if s.lfs else 0)), s.lfs.sha256.lower() if s.lfs else None)
        for s in info.siblings or ()
    ]
    return commit, files


def hub_error(exc: BaseException, repo: str, what: str) -> LocalLLMError:
    """The LocalLLMError saying why `what` failed: gated, not found or private, no such revision,
    or the Hub unreachable."""
    from huggingface_hub import errors as hf

    page = f"{hub_endpoint()}/{repo}"
    if isinstance(exc, LocalLLMError):
        return exc
    if isinstance(exc, hf.GatedRepoError):  # before RepositoryNotFoundError, its base class
        return ModelUnavailableError(
            f"{repo} is a gated repository: access is denied until you accept its terms at {page} and "
            "authenticate (`hf auth login`, or set HF_TOKEN to a token of the account that accepted them).",
            url=page,
        )
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelNotFoundError(
            f"{repo}: no such repository on the Hub ({hub_endpoint()}), or it is private and needs a token "
            "that may read it (`hf auth login`, or HF_TOKEN). Check the name.",
            name=repo,
        )
    if isinstance(exc, hf.RevisionNotFoundError):
        return ModelNotFoundError(
            f"{repo}: could not {what}: no such revision (branch, tag or commit) in {page}.", name=repo
        )
    if isinstance(exc, hf.RemoteEntryNotFoundError):
        return ModelNotFoundError(f"{repo}: could not {what}: the file is not in the repository.", name=repo)
    if isinstance(exc, hf.HfHubHTTPError):
        status = getattr(getattr(exc, "response", None), "status_code", None)
        return ModelUnavailableError(
            f"could not {what}: the Hub answered HTTP {status} ({str(exc).splitlines()[0]}). Try again later.",
            url=page,
        )
    return ModelUnavailableError(
        f"could not {what}: the Hub ({hub_endpoint()}) is unreachable ({type(exc).__name__}: {exc}). Check the "
        "connection, or plan offline a model whose file list is cached (LOCALLLM_OFFLINE=1).",
        url=page,
    )


def _group(repo: str, revision: str, info: tuple[str, list[HubFile]]) -> Listing:
    commit, files = info
    commit_dir(repo, commit)  # checks the commit is one
    skipped: list[str] = []
    models: list[HubModel] = []
    splits: dict[tuple[str, int], dict[int, HubFile]] = {}
    for f in sorted(files, key=lambda f: f.filename):
        base = f.filename.rsplit("/", 1)[-1]
        if not base.lower().endswith(".gguf"):
            continue
        if "mmproj" in base.lower():
            skipped.append(f"{f.filename}: a vision projector (mmproj), not a language model")
            continue
        m = SPLIT_NAME.match(f.filename)
        if m and int(m["count"]) > 1:
            splits.setdefault((m["prefix"], int(m["count"])), {})[int(m["no"])] = f
            continue
        models.append(HubModel((f,), quant_of(f.filename)))
    for (prefix, count), parts in sorted(splits.items()):
        missing = [split_name(prefix, i, count) for i in range(1, count + 1) if i not in parts]
        if missing:
            skipped.append(
                f"{split_name(prefix, 1, count)}: a model split in {count} parts, but "
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not in the repository"
            )
            continue
        models.append(HubModel(tuple(parts[i] for i in range(1, count + 1)), quant_of(prefix + ".gguf")))
    return Listing(repo, revision, commit, tuple(models), tuple(skipped))


def _save(listing: Listing) -> None:
    folder = commit_dir(listing.repo, listing.commit)
    data = {"version": LISTING_VERSION, **asdict(listing)}
    data.pop("cached")
    _write(folder / "listing.json", json.dumps(data, indent=1).encode())
    _write(_ref_file(listing.repo, listing.revision), listing.commit.encode())


def _write(path: Path, data: bytes) -> None:
    """Atomically: a reader sees the old content or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _cached(repo: str, revision: str) -> Listing | None:
    ref = _ref_file(repo, revision)
    commit = revision if _COMMIT.match(revision) else None
    try:
        commit = commit or ref.read_text().strip()
        data: dict[str, Any] = json.loads((commit_dir(repo, commit) / "listing.json").read_text())
    except (OSError, ValueError, LocalLLMError):
        return None
    if data.get("version") != LISTING_VERSION or data.get("repo") != repo:
        return None
    try:
        models = tuple(
            HubModel(tuple(HubFile(**p) for p in m["parts"]), m.get("quant")) for m in data.get("models", ())
        )
        return Listing(repo, revision, data["commit"], models, tuple(data.get("skipped", ())), cached=True)
    except (KeyError, TypeError):
        return None


def write_cache_file(repo: str, commit: str, name: str, data: bytes) -> Path:
    """Store bytes under the commit's cache folder (a header), atomically; returns the path."""
    path = commit_dir(repo, commit) / (quote(name, safe="") + ".header")
    _write(path, data)
    return path


def cache_file(repo: str, commit: str, name: str) -> Path:
    return commit_dir(repo, commit) / (quote(name, safe="") + ".header")
