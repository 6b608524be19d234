"""GGUF models that other tools already downloaded: found, named, never touched.

    discover(sources=None) -> list[LocalModel]   every model file found, one per real file
    find_local(name)       -> LocalModel          the file behind "ollama:...", "lmstudio:..." ...
    is_local_name(text)    -> bool                whether text uses one of those prefixes

What is read, from the environment as it is at the call (HOME, OLLAMA_MODELS, HF_HOME...):

ollama       OLLAMA_MODELS, else ~/.ollama/models (on Linux also /usr/share/ollama/.ollama/models,
             the system service's store, when readable). manifests/<host>/<namespace>/<model>/<tag>
             is a JSON manifest (schemaVersion 2); its layer with mediaType
             application/vnd.ollama.image.model names the GGUF as "sha256:<hex>", stored as
             blobs/sha256-<hex> (blobs/sha256:<hex> in old stores). Template, params, system,
             license and projector layers are ignored. Named as Ollama shows it (`ollama list`,
             Name.DisplayShortest): "ollama:smollm2:135m"; another namespace keeps it
             ("ollama:user/model:tag"), another host keeps both ("ollama:hf.co/owner/repo:Q4_K_M").
             The tag is always shown, ":latest" included; a name given without one means ":latest",
             as in Ollama. Names match case-insensitively, as Ollama's do. A blob whose size
             differs from the manifest's is skipped. sha256 is the digest (not checked here).
lmstudio     ~/.lmstudio-home-pointer's folder (LM Studio's home when moved), ~/.lmstudio and
             ~/.cache/lm-studio (before 0.3): each home's settings.json "downloadsFolder" (not in
             LM Studio's docs; seen in its settings files) and <home>/models.
             <models>/<publisher>/<repo>/<file>.gguf, the depth LM Studio lists:
             "lmstudio:publisher/repo/file.gguf".
gpt4all      the modelPath of GPT4All's settings (<config>/nomic.ai/GPT4All.ini), its default
             folder (Linux ~/.local/share/nomic.ai/GPT4All, macOS ~/Library/Application
             Support/nomic.ai/GPT4All, Windows %LOCALAPPDATA%\\nomic.ai\\GPT4All) and the Python
             bindings' ~/.cache/gpt4all; flat: "gpt4all:file.gguf".
huggingface  store.locations.hf_cache_dir(): models--<owner>--<repo>/snapshots/<rev>/**.gguf
             (symlinks into blobs/<sha256>; the snapshot path is reported, refs/main's revision
             first): "hf:owner/repo/file.gguf". A file still downloading is a blobs/*.incomplete
             with no snapshot link yet, so it is never listed.
dirs         LOCALLLM_MODEL_DIRS (folders separated by os.pathsep), searched for *.gguf at most
             MAX_DEPTH (4) levels below each, visiting at most MAX_ENTRIES (2,000) entries per
             folder, symlinked folders once; named by the file's absolute path.

Everywhere: only stat and small text files are read (no hashing, no GGUF header); nothing is
ever written, moved or deleted in another tool's folders. Skipped: vision projectors
(mmproj), split parts after the first (-00002-of-00003.gguf), downloads in progress (.part,
.incomplete, GPT4All's incomplete-*), hidden entries, and anything unreadable or malformed
(a debug log, never an exception: a broken foreign store must not break a listing). One
file found under several names (two Ollama tags, a hardlink) is listed once, under the
first name (the same file is the same device and inode); `find_local` still finds it by any
of them.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from localllm.errors import InvalidOptionError, ModelNotFoundError
from localllm.store.discover_layouts import (
    MAX_DEPTH,
    MAX_ENTRIES,
    OLLAMA_DEFAULT_HOST,
    OLLAMA_DEFAULT_NAMESPACE,
    LocalModel,
    dirs_roots,
    gpt4all_roots,
    hf_roots,
    lmstudio_roots,
    ollama_roots,
    scan_dirs,
    scan_gpt4all,
    scan_hf,
    scan_lmstudio,
    scan_ollama,
)

__all__ = ["MAX_DEPTH", "MAX_ENTRIES", "PREFIXES", "SOURCES", "LocalModel", "discover", "find_local", "is_local_name"]

log = logging.getLogger(__name__)

_LAYOUTS: dict[str, tuple[Callable[[], list[Path]], Callable[[Path], Iterator[LocalModel]]]] = {
    "ollama": (ollama_roots, scan_ollama),
    "lmstudio": (lmstudio_roots, scan_lmstudio),
    "gpt4all": (gpt4all_roots, scan_gpt4all),
    "huggingface": (hf_roots, scan_hf),
    "dirs": (dirs_roots, scan_dirs),
}
SOURCES: tuple[str, ...] = tuple(_LAYOUTS)
# the name prefix of each source that loads by a prefixed name ("dirs" load by their path)
PREFIXES: dict[str, str] = {"ollama:": "ollama", "lmstudio:": "lmstudio", "gpt4all:": "gpt4all", "hf:": "huggingface"}
_LABELS = {"ollama": "Ollama", "lmstudio": "LM Studio", "gpt4all": "GPT4All", "huggingface": "Hugging Face cache"}


def is_local_name(text: object) -> bool:
    """Whether `text` names a model by one of the local prefixes: ollama:, lmstudio:, gpt4all:, hf:."""
    return isinstance(text, str) and text.strip().lower().startswith(tuple(PREFIXES))


def discover(*, sources: Iterable[str] | None = None) -> list[LocalModel]:
    """Every GGUF model found in the other tools' stores and LOCALLLM_MODEL_DIRS, one per real file.

    Read-only and fast: folder listings, stat and the small manifest/settings files.

    Args:
        sources: some of SOURCES ("ollama", "lmstudio", "gpt4all", "huggingface", "dirs");
            default all, in that order (the order a file found twice is named by).

    Raises:
        InvalidOptionError: a source not in SOURCES.
    """
    out: list[LocalModel] = []
    seen: set[object] = set()
    for m in _scan(_sources(sources)):
        same = _identity(m.path)
        if same in seen:
            log.debug("%s is a file already listed: listed once", m.name)
            continue
        seen.add(same)
        out.append(m)
    return out


def find_local(name: str) -> LocalModel:
    """The model behind a prefixed name: "ollama:NAME[:TAG]", "lmstudio:pub/repo/file.gguf",
    "gpt4all:file.gguf" or "hf:owner/repo/file.gguf" (Hugging Face cache only; no download).

    An Ollama name without a tag means ":latest". An LM Studio "pub/repo" with one model
    file in it names that file.

    Raises:
        ModelNotFoundError: no such model there; the message says where it looked and the
            closest names found (also `.suggestions`).
    """
    text = name.strip() if isinstance(name, str) else ""
    prefix = next((p for p in PREFIXES if text.lower().startswith(p)), None)
    if prefix is None or not text[len(prefix) :].strip():
        raise ModelNotFoundError(
            f"{name!r} is not a local model name: use ollama:NAME[:TAG], lmstudio:PUBLISHER/REPO/FILE.gguf, "
            "gpt4all:FILE.gguf or hf:OWNER/REPO/FILE.gguf (`localllm models --local` lists them)",
            name=str(name),
        )
    source = PREFIXES[prefix]
    rest = text[len(prefix) :].strip()
    found = list(_scan([source]))
    if source == "ollama":
        want = _ollama_key(rest)
        hits = [m for m in found if _ollama_key(m.name[len(prefix) :]) == want]
    else:
        hits = [m for m in found if m.name[len(prefix) :] == rest]
        hits = hits or [m for m in found if m.name[len(prefix) :].lower() == rest.lower()]
        if not hits and source == "lmstudio":  # "publisher/repo" holding one model file
            inside = [m for m in found if m.name[len(prefix) :].lower().startswith(rest.lower().rstrip("/") + "/")]
            hits = inside if len(inside) == 1 else []
    if hits:
        return hits[0]
    raise _not_found(prefix + rest, source, rest, found)


def _not_found(name: str, source: str, rest: str, found: list[LocalModel]) -> ModelNotFoundError:
    names = sorted({m.name for m in found})
    close: list[str] = []
    if source == "ollama":  # the same model under other tags first: "qwen2.5-coder" -> "...:0.5b"
        host, namespace, model, _ = _ollama_key(rest)
        close = [n for n in names if _ollama_key(n[len("ollama:") :])[:3] == (host, namespace, model)]
    close += [n for n in difflib.get_close_matches(name, names, n=3, cutoff=0.4) if n not in close]
    if not close and source == "lmstudio":
        close = [n for n in names if n.lower().startswith(name.lower().rstrip("/") + "/")]
    where = ", ".join(str(r) for r in _LAYOUTS[source][0]()) or "(no folder)"
    label = _LABELS[source]
    what = f"{len(names)} model{'s' if len(names) != 1 else ''} there" if names else "no models there"
    hint = f"; did you mean {' or '.join(close[:3])}?" if close else "."
    return ModelNotFoundError(
        f"no {label} model named {name!r}: looked in {where} and found {what}{hint} "
        "`localllm models --local` lists every model on disk.",
        name=name,
        suggestions=tuple(close[:3]),
    )


def _ollama_key(text: str) -> tuple[str, str, str, str]:
    """(host, namespace, model, tag) of an Ollama name, defaults filled in as ParseName does; lowercased."""
    text = text.strip()
    slash = text.rfind("/")
    colon = text.rfind(":")
    base, tag = (text[:colon], text[colon + 1 :]) if colon > slash else (text, "")
    parts = base.split("/")
    if len(parts) >= 3:
        host, namespace, model = parts[-3], parts[-2], parts[-1]
    elif len(parts) == 2:
        host, namespace, model = OLLAMA_DEFAULT_HOST, parts[0], parts[1]
    else:
        host, namespace, model = OLLAMA_DEFAULT_HOST, OLLAMA_DEFAULT_NAMESPACE, parts[0]
    return host.lower(), namespace.lower(), model.lower(), (tag or "latest").lower()


def _sources(sources: Iterable[str] | None) -> list[str]:
    if sources is None:
        return list(SOURCES)
    chosen = [sources] if isinstance(sources, str) else list(sources)
    bad = [s for s in chosen if s not in _LAYOUTS]
    if bad:
        raise InvalidOptionError(
            f"unknown model source {bad[0]!r}: the sources are {', '.join(SOURCES)}",
            option="sources",
            value=bad[0],
            allowed=", ".join(SOURCES),
        )
    return chosen


def _scan(sources: Iterable[str]) -> Iterator[LocalModel]:
    """Every model of those sources, a file found twice included (find_local matches any of its names)."""
    for source in sources:
        roots_of, scan = _LAYOUTS[source]
        seen_roots: set[Path] = set()
        for root in roots_of():
            real = _real(root)
            if real in seen_roots or not root.is_dir():
                continue
            seen_roots.add(real)
            try:
                yield from scan(root)
            except OSError as exc:  # a store that vanished or changed under the scan
                log.debug("stopped reading %s at %s: %s", source, root, exc)


def _identity(path: Path) -> object:
    """The file itself: (device, inode), so a symlink, a hardlink or a second tag of one blob is one file."""
    try:
        st = path.stat()
    except OSError:
        return _real(path)
    return (st.st_dev, st.st_ino) if st.st_ino else _real(path)


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()
