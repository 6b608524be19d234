"""GGUF headers already validated, remembered by file identity, so loading a model again skips
the walk over its header (about 0.1 s for a 128k-token vocabulary, most of localllm's own share
of a load).

A memo is keyed by everything that changes when the file does: its absolute path, device, inode,
size, modification and change times (st_ctime_ns moves on every write, rename or chmod and cannot
be set back by the user), and by the source of the rules that passed it (validate.py and the
formats modules): new rules validate every file again. The value is the GGUFInfo as JSON (never a
pickle). A memo that cannot be read or does not match is ignored, and the file is validated as new.
A file changed in the last RACY_S seconds is not remembered: file times tick coarsely (a few
milliseconds), so a rewrite of the same size right after a validation could keep its times (git's
"racy" entries, the same cure). Memos live in `<home>/validated/`, at most MAX_MEMOS of them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from localllm.formats.gguf import GGUFArray, GGUFInfo, TensorInfo
from localllm.paths import home

__all__ = ["MAX_MEMOS", "forget", "recall", "remember"]

log = logging.getLogger(__name__)

MAX_MEMOS = 256  # a memo is a few KB; a machine rarely keeps more models than this
RACY_S = 2.0  # well above any file system's timestamp granularity (FAT's is 2 s)
_FORMAT = 1  # of the memo files themselves
_RULES = (
    "validate.py",
    "formats/gguf.py",
    "formats/gguf_reader.py",
    "formats/gguf_rules.py",
    "formats/gguf_tokenizer.py",
)
_rules_digest: str | None = None


def _rules() -> str:
    """A digest of the code that validates a GGUF file (read once per process: ~60 KB)."""
    global _rules_digest
    if _rules_digest is None:
        h = hashlib.sha256()
        root = Path(__file__).resolve().parent.parent
        for name in _RULES:
            with contextlib.suppress(OSError):
                h.update((root / name).read_bytes())
        _rules_digest = h.hexdigest()
    return _rules_digest


def _identity(path: Path, st: os.stat_result) -> str:
    parts = (
        os.path.abspath(path),
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime_ns,
        st.st_ctime_ns,
        _rules(),
        _FORMAT,
    )
    return hashlib.sha256("\0".join(map(str, parts)).encode("utf-8", "surrogateescape")).hexdigest()


def _folder() -> Path:
    return home() / "validated"


def _encode(value: Any) -> Any:
    if isinstance(value, GGUFArray):
        return {"a": [value.element_type, value.length, value.offset]}
    if isinstance(value, tuple):
        return {"t": [_encode(v) for v in value]}
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    raise TypeError(f"a GGUF metadata value of type {type(value).__name__} has no memo form")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "a" in value:
            kind, length, offset = value["a"]
            return GGUFArray(kind, length, offset)
        return tuple(_decode(v) for v in value["t"])
    return value


def _dumps(info: GGUFInfo, key: str) -> str:
    return json.dumps(
        {
            "key": key,
            "path": str(info.path),
            "version": info.version,
            "architecture": info.architecture,
            "file_size": info.file_size,
            "metadata": {k: _encode(v) for k, v in info.metadata.items()},
            "tensors": [[t.name, list(t.shape), t.ggml_type, t.offset, t.nbytes] for t in info.tensors],
            "tensor_bytes": info.tensor_bytes,
            "alignment": info.alignment,
            "data_offset": info.data_offset,
        },
        ensure_ascii=True,  # metadata strings may hold lone surrogates (undecodable bytes)
    )


def _loads(text: str, key: str, path: Path) -> GGUFInfo | None:
    d = json.loads(text)
    if d.get("key") != key:
        return None
    return GGUFInfo(
        path=path,
        version=d["version"],
        architecture=d["architecture"],
        file_size=d["file_size"],
        metadata={k: _decode(v) for k, v in d["metadata"].items()},
        tensors=tuple(TensorInfo(n, tuple(s), t, o, b) for n, s, t, o, b in d["tensors"]),
        tensor_bytes=d["tensor_bytes"],
        alignment=d["alignment"],
        data_offset=d["data_offset"],
    )


def recall(path: Path, st: os.stat_result) -> GGUFInfo | None:
    """The GGUFInfo validated before for exactly this file, or None."""
    key = _identity(path, st)
    memo = _folder() / f"{key[:40]}.json"
    try:
        text = memo.read_text(encoding="utf-8")
    except OSError:
        return None
    try:
        return _loads(text, key, path)
    except (ValueError, KeyError, TypeError) as exc:  # damaged: validate again, and write it anew
        log.debug("ignoring the damaged validation memo %s (%s)", memo, exc)
        return None


def remember(info: GGUFInfo, st: os.stat_result) -> None:
    """Keep a validated file's GGUFInfo for the next load (best effort: a failure is logged only)."""
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) < RACY_S * 1e9:
        return
    key = _identity(info.path, st)
    folder = _folder()
    try:
        text = _dumps(info, key)
        folder.mkdir(parents=True, exist_ok=True)
        memo = folder / f"{key[:40]}.json"
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, memo)
        _prune(folder)
    except (OSError, TypeError, ValueError) as exc:
        log.debug("could not keep a validation memo for %s (%s)", info.path, exc)


def forget() -> int:
    """Remove every memo (the next load of each file validates it in full); returns how many."""
    n = 0
    with contextlib.suppress(OSError):
        for f in _folder().glob("*.json"):
            with contextlib.suppress(OSError):
                f.unlink()
                n += 1
    return n


def _prune(folder: Path) -> None:
    memos = list(folder.glob("*.json"))
    if len(memos) <= MAX_MEMOS:
        return
    by_age = sorted(memos, key=lambda f: f.stat().st_mtime_ns)
    for f in by_age[: len(memos) - MAX_MEMOS]:
        with contextlib.suppress(OSError):
            f.unlink()
