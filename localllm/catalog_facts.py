"""Exact sizes and sha256 of catalog files, learnt from the Hub at first download.

Most catalog sizes are estimates (tools/catalog_sizes.py) until a maintainer runs
tools/refresh_catalog.py with a network. A download from the Hub is checked against the
Hub's own size and LFS sha256, so once a file has come down verified those figures are
facts: they are kept in <localllm home>/catalog-facts.json, keyed by repository and file,
and `localllm.catalog.load_catalog()` puts them in place of the estimate for this user (the
planner then sizes that variant exactly, and later checks hold the file to them).

    record(repo, filename, size, sha256)   after a Hub download verified against the Hub
    read() -> {(repo, filename): (size, sha256)}
    stamp() -> a value that changes when the file does (the catalog's cache key)
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

from localllm.paths import home

__all__ = ["FACTS_FILE", "facts_path", "read", "record", "stamp"]

log = logging.getLogger(__name__)

FACTS_FILE = "catalog-facts.json"


def facts_path() -> Path:
    return home() / FACTS_FILE


def stamp() -> tuple[str, int]:
    """(the file, its mtime in ns; 0 when there is none): what the catalog's cache is keyed by."""
    p = facts_path()
    try:
        return str(p), p.stat().st_mtime_ns
    except OSError:
        return str(p), 0


def read() -> dict[tuple[str, str], tuple[int, str]]:
    """The facts kept so far; {} when there are none or the file is unreadable (logged)."""
    p = facts_path()
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring %s: %s", p, exc)
        return {}
    out: dict[tuple[str, str], tuple[int, str]] = {}
    for key, fact in data.get("files", {}).items() if isinstance(data, dict) else ():
        repo, _, filename = str(key).partition("::")
        size, sha = (fact.get("size"), fact.get("sha256")) if isinstance(fact, dict) else (None, None)
        if repo and filename and isinstance(size, int) and size > 0 and isinstance(sha, str) and len(sha) == 64:
            out[(repo, filename)] = (size, sha.lower())
    return out


def record(repo: str, filename: str, size: int, sha256: str) -> None:
    """Keep a file's exact size and sha256 (as the Hub verified them); never raises for a disk error."""
    p = facts_path()
    files = {f"{r}::{f}": {"size": s, "sha256": h} for (r, f), (s, h) in read().items()}
    files[f"{repo}::{filename}"] = {"size": int(size), "sha256": sha256.lower()}
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".facts-", dir=p.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"schema": 1, "files": files}, f, indent=1, sort_keys=True)
        os.replace(tmp, p)
    except OSError as exc:
        log.warning("could not keep the Hub's figures for %s/%s in %s: %s", repo, filename, p, exc)
