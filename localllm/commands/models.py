"""`localllm models`: the catalog, with how each variant fits this machine."""

from __future__ import annotations

import dataclasses
import json

from localllm.commands.plan import add_hardware_options, hardware_from
from localllm.errors import LocalLLMError
from localllm.placement import Where


def register(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list the model catalog and how each variant fits",
        description="List every catalog variant with its size and where it would run.",
    )
    p.add_argument("--fits", action="store_true", help="only variants that fit")
    add_hardware_options(p)
    p.add_argument("--ctx", type=int, default=None, metavar="N", help="minimum context in tokens")
    p.add_argument("--local", action="store_true", help="list the model files already on disk")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


_WHERE: dict[Where, str] = {"gpu": "GPU", "partial": "partial", "cpu": "CPU", "none": "does not fit"}


def run(args) -> int:
    if args.local:
        return _run_local(args)
    from localllm.planner import fit_table  # keeps `localllm --help` from loading the planner

    rows = fit_table(hardware_from(args), context=args.ctx)
    if args.fits:
        rows = tuple(r for r in rows if r.fits)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "variant": r.variant.name,
                        "format": r.variant.format,
                        "size": r.variant.size,
                        "size_estimated": r.variant.size_estimated,
                        "fit": r.where,
                        "fits": r.fits,
                        "needed": r.needed,
                        "available": r.available,
                        "n_ctx": r.n_ctx,
                        "n_gpu_layers": r.n_gpu_layers,
                        "tokens_per_s": r.tokens_per_s,
                        "why": r.why,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return 0
    header = f"{'variant':38} {'size':>9} {'fit':>13} {'memory':>9} {'ctx':>6} {'tok/s':>6}"
    print(header)
    print("-" * len(header))
    for r in rows:
        size = f"{'~' if r.variant.size_estimated else ''}{r.variant.size / 1e9:.2f} GB"
        tps = f"{r.tokens_per_s:.0f}" if r.tokens_per_s else "-"
        print(f"{r.variant.name:38} {size:>9} {_WHERE[r.where]:>13} {r.needed / 1e9:7.2f} GB {r.n_ctx:>6} {tps:>6}")
    if not rows:
        print("(nothing fits: `localllm plan` explains why)")
    print("\n~ size computed from tensor shapes; memory = weights + KV cache + compute + runtime at that context")
    return 0


def _run_local(args) -> int:
    try:
        from localllm.store import list_local  # keeps `localllm --help` from loading the store
    except ImportError:
        raise LocalLLMError("listing local models needs localllm.store, which is not built yet") from None
    items = list(list_local())
    if args.json:
        print(json.dumps([_plain(i) for i in items], indent=2, default=str))
        return 0
    if not items:
        print("no model files on disk yet (`localllm pull MODEL` fetches one)")
    for i in items:
        print(_line(i))
    return 0


def _plain(item):
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return item if isinstance(item, (dict, str)) else str(item)


def _line(item) -> str:
    name = getattr(item, "name", None) or getattr(item, "variant", None) or str(item)
    path = getattr(item, "path", "")
    size = getattr(item, "size", None)
    size_s = f"{size / 1e9:7.2f} GB" if isinstance(size, int) else ""
    return f"{str(name):40} {size_s} {path}"
