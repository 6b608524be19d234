"""Where other tools keep their GGUF files, and how each layout is read (for localllm.store.discover).

Every function here only lists folders, stats files and reads small text files (Ollama
manifests, LM Studio's pointer and settings, GPT4All's INI). Nothing is written, hashed
or parsed beyond that; an entry that cannot be read is skipped with a debug log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from localllm.store.locations import hf_cache_dir

__all__ = [
    "LocalModel",
    "MAX_DEPTH",
    "MAX_ENTRIES",
    "OLLAMA_DEFAULT_HOST",
    "OLLAMA_DEFAULT_NAMESPACE",
    "OLLAMA_MODEL_MEDIA_TYPE",
    "OLLAMA_SYSTEM_MODELS",
    "dirs_roots",
    "gpt4all_roots",
    "hf_roots",
    "is_model_file",
    "lmstudio_roots",
    "ollama_display_name",
    "ollama_roots",
    "scan_dirs",
    "scan_gpt4all",
    "scan_hf",
    "scan_lmstudio",
    "scan_ollama",
    "walk_gguf",
]

log = logging.getLogger(__name__)

# Ollama's layer media type for the GGUF weights (server/images.go); the others (template,
# params, system, license, projector, adapter) are ignored here
OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_HOST = "registry.ollama.ai"  # types/model/name.go: defaultHost
OLLAMA_DEFAULT_NAMESPACE = "library"  # ... defaultNamespace
# the Linux install script runs `ollama serve` as the user "ollama" whose home is /usr/share/ollama
OLLAMA_SYSTEM_MODELS: tuple[Path, ...] = (Path("/usr/share/ollama/.ollama/models"),)
MANIFEST_MAX_BYTES = 1 << 20  # a manifest is a few hundred bytes; anything bigger is not one
SETTINGS_MAX_BYTES = 1 << 20
# bounds for a recursive search (LOCALLLM_MODEL_DIRS, HF snapshots): a huge folder never hangs a listing
MAX_DEPTH = 4
MAX_ENTRIES = 2000  # directory entries visited per folder searched
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)


@dataclass(frozen=True)
class LocalModel:
    """A GGUF model another tool (or the user) put on disk."""

    name: str  # what it loads by: "ollama:smollm2:135m", "lmstudio:pub/repo/file.gguf", a path...
    path: Path  # the file to open (Ollama: the blob; HF cache: the snapshot path)
    size: int  # bytes, from stat
    source: str  # "ollama", "lmstudio", "gpt4all", "huggingface" or "dirs"
    sha256: str | None = None  # when the layout names it (Ollama and HF blobs are named by it); not checked here


def is_model_file(name: str) -> bool:
    """A .gguf file that is a whole model or a split model's first part: not a projector or a download."""
    low = name.lower()
    if not low.endswith(".gguf") or low.startswith((".", "incomplete-")) or "mmproj" in low:
        return False
    split = _SPLIT.search(low)
    return split is None or int(split.group(1)) == 1


def _home() -> Path:
    return Path(os.path.expanduser("~"))


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    except OSError as exc:
        log.debug("cannot list %s: %s", folder, exc)
        return []


def _files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())
    except OSError as exc:
        log.debug("cannot list %s: %s", folder, exc)
        return []


def _size(path: Path) -> int | None:
    try:
        st = path.stat()  # follows symlinks: a dangling one (an unfinished HF download) is skipped
    except OSError as exc:
        log.debug("skipping %s: %s", path, exc)
        return None
    return st.st_size if path.is_file() else None


def _read_small(path: Path, limit: int) -> str | None:
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        log.debug("cannot read %s: %s", path, exc)
        return None
    if len(data) > limit:
        log.debug("skipping %s: over %d bytes", path, limit)
        return None
    return data.decode("utf-8", errors="replace")


def walk_gguf(root: Path, *, max_depth: int = MAX_DEPTH, max_entries: int = MAX_ENTRIES) -> list[Path]:
    """Model files under `root`, at most `max_depth` levels below it (root/1/2/3/file.gguf for 4),
    visiting at most `max_entries` directory entries in all."""
    found: list[Path] = []
    stack = [(root, 0)]
    visited = 0
    searched: set[tuple[int, int]] = set()  # (device, inode): a symlinked folder or a loop is searched once
    while stack:
        folder, depth = stack.pop()
        try:
            st = folder.stat()
        except OSError as exc:
            log.debug("cannot list %s: %s", folder, exc)
            continue
        if (st.st_dev, st.st_ino) in searched:
            continue
        searched.add((st.st_dev, st.st_ino))
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            log.debug("cannot list %s: %s", folder, exc)
            continue
        for e in entries:
            visited += 1
            if visited > max_entries:
                log.debug("stopped searching %s after %d entries", root, max_entries)
                return sorted(found)
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir():
                    if depth + 1 < max_depth:
                        stack.append((Path(e.path), depth + 1))
                elif is_model_file(e.name) and e.is_file():
                    found.append(Path(e.path))
            except OSError as exc:
                log.debug("skipping %s: %s", e.path, exc)
    return sorted(found)


# -- Ollama ------------------------------------------------------------------------------


def ollama_roots() -> list[Path]:
    """OLLAMA_MODELS if set, else ~/.ollama/models (and on Linux the system service's store)."""
    env = os.environ.get("OLLAMA_MODELS")
    if env:
        return [Path(env).expanduser()]
    roots = [_home() / ".ollama" / "models"]
    if sys.platform.startswith("linux"):
        roots += [p for p in OLLAMA_SYSTEM_MODELS if os.access(p, os.R_OK | os.X_OK)]
    return roots


def ollama_display_name(host: str, namespace: str, model: str, tag: str) -> str:
    """Ollama's own short form (Name.DisplayShortest): default host and namespace left out, tag kept."""
    if host.lower() != OLLAMA_DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace.lower() != OLLAMA_DEFAULT_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def scan_ollama(root: Path) -> Iterator[LocalModel]:
    """manifests/<host>/<namespace>/<model>/<tag> naming blobs/sha256-<hex>."""
    manifests = root / "manifests"
    for host in _subdirs(manifests):
        for namespace in _subdirs(host):
            for model in _subdirs(namespace):
                for tag in _files(model):
                    found = _ollama_model(root, tag, (host.name, namespace.name, model.name, tag.name))
                    if found is not None:
                        yield found


def _ollama_model(root: Path, manifest: Path, parts: tuple[str, str, str, str]) -> LocalModel | None:
    text = _read_small(manifest, MANIFEST_MAX_BYTES)
    if text is None:
        return None
    try:
        layers = json.loads(text).get("layers")
        layer = next(x for x in layers if isinstance(x, dict) and x.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE)
        algo, _, digest = str(layer["digest"]).partition(":")
    except (ValueError, AttributeError, TypeError, KeyError, StopIteration) as exc:
        log.debug("skipping the Ollama manifest %s: no model layer (%s)", manifest, type(exc).__name__)
        return None
    if algo != "sha256" or not _SHA256.fullmatch(digest):
        log.debug("skipping the Ollama manifest %s: digest %r is not a sha256", manifest, layer.get("digest"))
        return None
    # "sha256-<hex>" since Ollama 0.1.3x; older stores named blobs "sha256:<hex>"
    for blob in (root / "blobs" / f"sha256-{digest}", root / "blobs" / f"sha256:{digest}"):
        size = _size(blob) if blob.exists() else None
        if size is None:
            continue
        if isinstance(layer.get("size"), int) and layer["size"] != size:
            log.debug("skipping %s: %d bytes, its manifest %s says %d", blob, size, manifest, layer["size"])
            return None
        return LocalModel("ollama:" + ollama_display_name(*parts), blob, size, "ollama", digest)
    log.debug("skipping the Ollama manifest %s: its blob sha256-%s is missing", manifest, digest)
    return None


# -- LM Studio ---------------------------------------------------------------------------


def lmstudio_roots() -> list[Path]:
    """LM Studio's models folders: its home pointer's, settings.json's downloadsFolder, and the defaults."""
    home = _home()
    homes = [home / ".lmstudio", home / ".cache" / "lm-studio"]
    pointer = _read_small(home / ".lmstudio-home-pointer", 4096)
    if pointer and pointer.strip():
        homes.insert(0, Path(pointer.strip()).expanduser())
    roots: list[Path] = []
    for h in homes:
        settings = _read_small(h / "settings.json", SETTINGS_MAX_BYTES)
        if settings:
            try:
                folder = json.loads(settings).get("downloadsFolder")
            except (ValueError, AttributeError):
                folder = None
            if isinstance(folder, str) and folder:
                roots.append(Path(folder).expanduser())
        roots.append(h / "models")
    return roots


def scan_lmstudio(root: Path) -> Iterator[LocalModel]:
    """<root>/<publisher>/<repo>/<file>.gguf, the one depth LM Studio itself lists."""
    for publisher in _subdirs(root):
        for repo in _subdirs(publisher):
            for f in _files(repo):
                size = _size(f) if is_model_file(f.name) else None
                if size is not None:
                    yield LocalModel(f"lmstudio:{publisher.name}/{repo.name}/{f.name}", f, size, "lmstudio")


# -- GPT4All -----------------------------------------------------------------------------


def gpt4all_roots() -> list[Path]:
    """GPT4All's modelPath setting, its default folder (Qt's AppLocalDataLocation), the Python bindings' cache."""
    home = _home()
    if sys.platform == "win32":
        local = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
        default = local / "nomic.ai" / "GPT4All"
        ini = Path(os.environ.get("APPDATA") or home / "AppData" / "Roaming") / "nomic.ai" / "GPT4All.ini"
    elif sys.platform == "darwin":
        default = home / "Library" / "Application Support" / "nomic.ai" / "GPT4All"
        ini = home / ".config" / "nomic.ai" / "GPT4All.ini"
    else:
        default = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share") / "nomic.ai" / "GPT4All"
        ini = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "nomic.ai" / "GPT4All.ini"
    roots = [default, home / ".cache" / "gpt4all"]
    setting = _ini_value(ini, "modelPath")
    if setting:
        roots.insert(0, Path(setting).expanduser())
    return roots


def _ini_value(path: Path, key: str) -> str | None:
    """A key of a Qt INI file's [General] section (GPT4All's settings), read by hand: Qt's INI is not configparser's."""
    text = _read_small(path, SETTINGS_MAX_BYTES)
    if text is None:
        return None
    section = "General"
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "General" and line.partition("=")[0].strip() == key:
            value = line.partition("=")[2].strip()
            return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value or None
    return None


def scan_gpt4all(root: Path) -> Iterator[LocalModel]:
    """<root>/<file>.gguf; a download in progress is "incomplete-<file>" (modellist.cpp)."""
    for f in _files(root):
        size = _size(f) if is_model_file(f.name) else None
        if size is not None:
            yield LocalModel(f"gpt4all:{f.name}", f, size, "gpt4all")


# -- Hugging Face cache ------------------------------------------------------------------


def hf_roots() -> list[Path]:
    """The Hugging Face hub cache, as localllm.store reads it."""
    return [hf_cache_dir()]


def scan_hf(root: Path) -> Iterator[LocalModel]:
    """models--<owner>--<repo>/snapshots/<rev>/**.gguf, symlinks into blobs/<sha256>; refs/main's revision first."""
    for repo_dir in _subdirs(root):
        if not repo_dir.name.startswith("models--"):
            continue
        owner, sep, repo = repo_dir.name[len("models--") :].partition("--")
        if not sep:
            continue
        snapshots = _subdirs(repo_dir / "snapshots")
        main = (_read_small(repo_dir / "refs" / "main", 4096) or "").strip()
        snapshots.sort(key=lambda s: s.name != main)  # stable: main first, then by name
        for snap in snapshots:
            for f in walk_gguf(snap):
                size = _size(f)
                if size is None:
                    continue
                blob = f.resolve().name
                rel = f.relative_to(snap).as_posix()
                yield LocalModel(
                    f"hf:{owner}/{repo}/{rel}", f, size, "huggingface", blob if _SHA256.fullmatch(blob) else None
                )


# -- LOCALLLM_MODEL_DIRS -----------------------------------------------------------------


def dirs_roots() -> list[Path]:
    """The folders in LOCALLLM_MODEL_DIRS (os.pathsep between them), read now."""
    value = os.environ.get("LOCALLLM_MODEL_DIRS", "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def scan_dirs(root: Path) -> Iterator[LocalModel]:
    """Any *.gguf under the folder, to MAX_DEPTH down; it loads by its path."""
    for f in walk_gguf(root):
        size = _size(f)
        if size is not None:
            yield LocalModel(str(f.absolute()), f.absolute(), size, "dirs")
