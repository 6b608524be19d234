"""`localllm pull MODEL`: download a catalog model or a Hub model into the cache, with a progress bar on stderr.

MODEL is a catalog name (family or family:quant), "auto" (what `load("auto")` would use:
the best model that fits and can be had now), or a Hub reference (`hf.co/OWNER/REPO`,
`hf.co/OWNER/REPO:QUANT`, `OWNER/REPO/FILE.gguf`), planned from its header first so that
only a file that fits is downloaded.
"""

from __future__ import annotations

import sys
import time

from localllm.errors import ModelNotFoundError

BAR_WIDTH = 28
REDRAW_EVERY_S = 0.1  # redraw the bar at most ten times a second


def register(sub) -> None:
    p = sub.add_parser(
        "pull",
        help="download a model into the local cache",
        description="Download a catalog model (family or family:quant) or a Hub model (hf.co/OWNER/REPO"
        "[:QUANT], OWNER/REPO/FILE.gguf) and verify it. A family or a Hub repository without a quant gets "
        "the variant the planner picks for this machine; "
        '"auto" gets what `localllm chat` would use: the best model that fits and can be had now.',
    )
    p.add_argument(
        "model",
        help='catalog name, e.g. "qwen2.5-1.5b-instruct:q4_k_m", a family, "auto", or hf.co/OWNER/REPO[:QUANT]',
    )
    p.add_argument("--force", action="store_true", help="download again even if a verified copy is on disk")
    p.set_defaults(func=run)


def run(args) -> int:
    from localllm import store  # imported when the command runs: `localllm --help` stays fast
    from localllm.resolve import is_auto

    if is_auto(args.model) and not args.force:
        return _pull_auto()
    variant, hub = _pick_variant(args.model)
    bar = ProgressBar(variant.name, stream=sys.stderr)
    try:
        if hub:
            from localllm.hub import hub_pull

            got = hub_pull(variant, progress=bar, offline=False, force_download=args.force)
        else:
            got = store.pull(variant, progress=bar, offline=False, force_download=args.force)
    finally:
        bar.finish()
    for line in _report(variant, got):
        print(line, file=sys.stderr)
    print(got.path)
    return 0


def _pull_auto() -> int:
    """What load("auto") would take: the best model that fits and is on disk or can be fetched now."""
    from localllm import auto

    bar = ProgressBar("auto", stream=sys.stderr)
    try:
        plan, path = auto.obtain(auto.candidates(), plan_options={}, offline=False, progress=bar)
    finally:
        bar.finish()
    for line in plan.sources:
        print(line, file=sys.stderr)
    print(path)
    return 0


def _report(variant, got) -> list[str]:
    """What to tell the user about a store.Pulled: catalog disagreements, then what the file was checked against."""
    name = variant.name
    lines = [f"warning: {w}" for w in got.warnings]
    if not got.downloaded:
        lines.append(f"{name} is already on disk: {got.path}")
    if got.verified_by in ("hub", "catalog"):
        if got.downloaded:
            source = "the Hub's" if got.verified_by == "hub" else "the catalog's"
            lines.append(f"{name}: verified against {source} sha256 and saved")
    elif got.verified_by is None:
        recorded = (
            f"; recorded sha256 {got.sha256} (later loads are held to it)"
            if got.sha256
            else "; its sha256 was never recorded"
        )
        lines.append(f"{name}: unverified: no published sha256{recorded}")
    others = [f for f in got.unverified if f != variant.filename]  # an ONNX folder's side files
    if others:
        lines.append(
            f"{name}: unverified: no published sha256 for {', '.join(others)}; their sha256 is recorded "
            "(later loads are held to it)"
        )
    return lines


def _pick_variant(name: str):
    """(a Variant, whether it is a Hub model) for a name: an exact catalog variant, the planner's
    choice for a family / "auto", or a Hub reference planned from its header."""
    # imported when the command runs: `localllm --help` stays fast
    from localllm.catalog import Variant, load_catalog
    from localllm.hub import parse_ref
    from localllm.planner import plan
    from localllm.resolve import is_auto, local_model_path, resolve
    from localllm.store import discover

    path = local_model_path(name)
    if path is not None:  # a file on disk has nothing to download
        there = "is a file already on disk" if path.exists() else "is a path, and nothing is there"
        raise ModelNotFoundError(
            f"{name!r} {there}: pull downloads catalog and Hub models (`localllm models` lists them). "
            f"To use a local file, give its path to run, chat, plan or bench "
            f'(localllm run {path} "PROMPT")',
            name=name,
        )
    if discover.is_local_name(name):  # a model another tool keeps on disk (ollama:NAME...)
        kept = discover.find_local(name)
        raise ModelNotFoundError(
            f"{name!r} is already on disk at {kept.path} (kept by {kept.source}; localllm reads it in place): "
            f'nothing to download. Use it as it is: localllm run {name} "PROMPT"',
            name=name,
        )
    if parse_ref(name) is not None:
        r = resolve(name)  # planned from its header: only a file that fits is downloaded
        assert r.plan is not None  # a Hub model is always planned
        return r.plan.variant, True
    catalog = load_catalog()
    found = None if is_auto(name) else catalog.find(name)
    if isinstance(found, Variant):
        return found, False
    return plan(name, catalog=catalog).variant, False


class ProgressBar:
    """Renders progress(done, total) callbacks as one redrawn line (only on a terminal)."""

    def __init__(self, label: str, *, stream=sys.stderr):
        self.label, self.stream = label, stream
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.start = time.monotonic()
        self.first_done: int | None = None
        self.last_draw = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = done  # a resumed download starts above zero
            if done:
                print(f"resuming {self.label} at {_size(done)}", file=self.stream)
        if not self.tty or (now - self.last_draw < REDRAW_EVERY_S and (total is None or done < total)):
            return
        self.last_draw = now
        rate = (done - self.first_done) / max(now - self.start, 1e-6)
        if total:
            frac = min(done / total, 1.0)
            filled = int(frac * BAR_WIDTH)
            eta = (total - done) / rate if rate > 0 else None
            line = (
                f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {frac:4.0%} "
                f"{_size(done)}/{_size(total)} {_size(rate)}/s"
                + (f" ETA {int(eta) // 60}:{int(eta) % 60:02d}" if eta is not None else "")
            )
        else:
            line = f"{self.label} {_size(done)} {_size(rate)}/s"
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
        self.drawn = True

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _size(n: float) -> str:
    """Bytes and KB below a megabyte (a slow start still shows a rate), else units.file_size."""
    from localllm.units import file_size  # not at the top: `localllm --help` loads this module

    if n < 1000:
        return f"{n:.0f} B"
    if n < 1e6:
        return f"{n / 1000:.1f} KB"
    return file_size(n)
