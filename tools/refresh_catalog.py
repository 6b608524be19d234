"""Refresh the catalog's GGUF sizes and sha256 from the Hub's own file listings (needs a network).

    python tools/refresh_catalog.py --dry-run     # print the diff models.toml would get
    python tools/refresh_catalog.py               # rewrite models.toml in place
    python tools/refresh_catalog.py --endpoint http://127.0.0.1:8080 --catalog some/models.toml

For every GGUF variant with a repo and filename it asks the Hub for the repository's listing
once (`HfApi.model_info(repo, files_metadata=True)`) and sets the variant's `size` (the file's
exact byte count), `sha256` (its LFS oid) and `size_source = "Hub listing <repo>@<commit>"`,
dropping `size_estimated`. The file is edited line by line inside each [[variants]] entry, so
comments and layout stay. It reports files the listing lacks (a wrong filename pattern), sizes
that moved by more than --tolerance, and hashes that changed. Exit status 1 when a file or a
repository was missing, after writing what it could.

ONNX variants are checked for presence only: their `size` is a whole folder's, which one file's
listing does not give. Packaged variants (a `path`, no repo) are left alone.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "localllm" / "data" / "models.toml"
DEFAULT_ENDPOINT = "https://huggingface.co"
TOLERANCE = 0.03  # a computed size within 3 % is the estimate working; more is worth a look

sys.path.insert(0, str(ROOT))  # run from a checkout: the catalog reader lives in the package
from localllm.catalog import load_catalog  # noqa: E402


@dataclass(frozen=True)
class Listed:
    size: int
    sha256: str | None


@dataclass
class Report:
    updated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # "repo/filename (variant)"
    failed_repos: list[str] = field(default_factory=list)  # "repo: why"
    moved: list[str] = field(default_factory=list)
    rehashed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.failed_repos

    def lines(self) -> list[str]:
        out = [f"{len(self.updated)} variant(s) sized from the Hub"]
        out += [f"size moved: {m}" for m in self.moved]
        out += [f"sha256 changed: {m}" for m in self.rehashed]
        out += [f"missing on the Hub: {m}" for m in self.missing]
        out += [f"repository not listed: {m}" for m in self.failed_repos]
        return out


def list_repo(api: Any, repo: str) -> tuple[str, dict[str, Listed]]:
    """(commit, {filename: Listed}) for one repository, from one model_info call."""
    info = api.model_info(repo, files_metadata=True)
    files: dict[str, Listed] = {}
    for s in info.siblings or []:
        lfs = getattr(s, "lfs", None)
        sha = getattr(lfs, "sha256", None) if lfs is not None else None
        size = getattr(lfs, "size", None) if lfs is not None else None
        size = size if size is not None else s.size
        if size is not None:
            files[s.rfilename] = Listed(int(size), sha)
    return str(info.sha or "unknown"), files


def _entry_spans(lines: list[str]) -> list[tuple[int, int]]:
    """[start, end) line ranges of each [[variants]] entry, in file order (tomllib's order too)."""
    heads = [i for i, ln in enumerate(lines) if re.match(r"\s*\[\[variants\]\]\s*(#.*)?$", ln)]
    spans = []
    for i in heads:
        end = next((j for j in range(i + 1, len(lines)) if re.match(r"\s*\[", lines[j])), len(lines))
        spans.append((i, end))
    return spans


def _set_key(entry: list[str], key: str, value: str, after: str) -> None:
    """Set `key = value` in an entry's lines: in place if there, else right after `after`'s line."""
    pat = re.compile(rf"^(\s*){re.escape(key)}\s*=")
    for i, ln in enumerate(entry):
        if pat.match(ln):
            entry[i] = f"{pat.match(ln).group(1)}{key} = {value}"  # type: ignore[union-attr]
            return
    at = next((i for i, ln in enumerate(entry) if re.match(rf"^\s*{re.escape(after)}\s*=", ln)), 0)
    entry.insert(at + 1, f"{key} = {value}")


def _drop_key(entry: list[str], key: str) -> None:
    entry[:] = [ln for ln in entry if not re.match(rf"^\s*{re.escape(key)}\s*=", ln)]


def refresh(text: str, catalog_path: str, api: Any, *, tolerance: float = TOLERANCE) -> tuple[str, Report]:
    """The catalog text with every listed GGUF variant's size and sha256 as the Hub gives them."""
    cat = load_catalog(catalog_path)
    lines = text.split("\n")
    spans = _entry_spans(lines)
    if len(spans) != len(cat.variants):
        raise SystemExit(f"{catalog_path}: found {len(spans)} [[variants]] lines but {len(cat.variants)} variants")
    report = Report()
    listings: dict[str, tuple[str, dict[str, Listed]] | None] = {}
    edits: dict[int, list[str]] = {}
    for (start, end), v in zip(spans, cat.variants, strict=True):
        if not v.repo or not v.filename:
            continue
        if v.repo not in listings:
            try:
                listings[v.repo] = list_repo(api, v.repo)
            except Exception as exc:  # RepositoryNotFound, gated, network: report, go on
                listings[v.repo] = None
                report.failed_repos.append(f"{v.repo}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
        listing = listings[v.repo]
        if listing is None:
            continue
        commit, files = listing
        got = files.get(v.filename)
        if got is None:
            report.missing.append(f"{v.repo}/{v.filename} ({v.name})")
            continue
        if v.format != "gguf":
            continue  # an ONNX folder: present, its size is not one file's
        if v.size and abs(got.size - v.size) > tolerance * v.size:
            report.moved.append(f"{v.name}: {v.size:,} -> {got.size:,} ({100 * (got.size - v.size) / v.size:+.1f} %)")
        if v.sha256 and got.sha256 and v.sha256 != got.sha256:
            report.rehashed.append(f"{v.name}: {v.sha256[:12]}... -> {got.sha256[:12]}...")
        entry = lines[start:end]
        _set_key(entry, "size", str(got.size), after="quant")
        _drop_key(entry, "size_estimated")
        if got.sha256:
            _set_key(entry, "sha256", f'"{got.sha256}"', after="size")
        _set_key(entry, "size_source", f'"Hub listing {v.repo}@{commit[:7]}"', after="size")
        edits[start] = entry
        report.updated.append(v.name)
    out: list[str] = []
    i = 0
    for start, end in spans:
        if start in edits:
            out += lines[i:start] + edits[start]
            i = end
    out += lines[i:]
    return "\n".join(out), report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", default=str(CATALOG), help="models.toml to refresh (default: the package's)")
    parser.add_argument(
        "--endpoint",
        default=os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT,
        help="Hub URL (default: $HF_ENDPOINT or %(default)s)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the diff, write nothing")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="report sizes that move more (fraction)")
    args = parser.parse_args(argv)

    from huggingface_hub import HfApi

    path = Path(args.catalog)
    text = path.read_text(encoding="utf-8")
    new, report = refresh(text, str(path), HfApi(endpoint=args.endpoint), tolerance=args.tolerance)
    if args.dry_run:
        diff = difflib.unified_diff(
            text.splitlines(keepends=True), new.splitlines(keepends=True), str(path), f"{path} (refreshed)"
        )
        sys.stdout.writelines(diff)
    elif new != text:
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(new, encoding="utf-8")
        os.replace(tmp, path)
    for line in report.lines():
        print(line, file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
