"""`localllm models`: the catalog, with how each variant fits this machine; `--local`: the files on disk."""

from __future__ import annotations

import json
import textwrap

from localllm.commands.plan import add_hardware_options, hardware_from
from localllm.errors import InvalidModelError, LocalLLMError
from localllm.placement import Where
from localllm.units import file_size, memory_size


def register(sub) -> None:
    p = sub.add_parser(
        "models",
        help="list the model catalog and how each variant fits",
        description="List every catalog variant with its size and where it would run.",
    )
    p.add_argument("--fits", action="store_true", help="only variants that fit")
    add_hardware_options(p)
    p.add_argument("--ctx", type=int, default=None, metavar="N", help="minimum context in tokens")
    p.add_argument(
        "--local",
        action="store_true",
        help="list the model files already on disk, with how each fits: localllm's cache, the Hugging Face "
        "cache, Ollama, LM Studio, GPT4All and the folders in LOCALLLM_MODEL_DIRS (read, never changed)",
    )
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
    """Every model file on disk, ours and other tools', with its fit: headers read, nothing loaded."""
    # imported here: `localllm --help` should not load the store, the planner or the GGUF reader
    from localllm.store import list_local
    from localllm.store.discover import discover

    hardware = hardware_from(args)
    rows = [dict(item, **_fit(item["path"], hardware, args.ctx)) for item in _on_disk(list_local(), discover())]
    if args.fits:
        rows = [r for r in rows if r["fits"]]
    if args.json:
        print(json.dumps([dict(r, path=str(r["path"])) for r in rows], indent=2))
        return 0
    if not rows:
        print("no model files on disk yet (`localllm pull MODEL` fetches one)" if not args.fits else "(none fits)")
        return 0
    header = f"{'name':36} {'source':11} {'size':>9}  fit"
    print(header)
    print("-" * 78)
    for r in rows:
        name = r["name"]
        if len(name) > 36:  # a long name keeps its own line, whole, so it can be copied
            print(name)
            name = ""
        print(f"{name:36} {r['source']:11} {file_size(r['size']):>9}  {_verdict(r)}")
        if not r["fits"]:
            why = _first_sentence(r["why"]).replace(str(r["path"]), "this file")  # the row names it already
            for line in textwrap.wrap(why, width=74, break_on_hyphens=False, break_long_words=False):
                print("    " + line)
    print("\nfit: where it would run and the context it gets; load one by its name or path")
    return 0


def _on_disk(ours, theirs) -> list[dict]:
    """localllm's own files first (catalog names), then other tools' models; each real file once."""
    rows: list[dict] = []
    seen: set[object] = set()
    for f in ours:
        if f.variant is None and f.path.suffix.lower() not in (".gguf", ".onnx"):
            continue  # an ONNX folder's side files, tokenizer files...
        rows.append({"name": f.variant or str(f.path), "source": f.source, "size": f.size, "path": f.path})
    for m in theirs:
        rows.append({"name": m.name, "source": m.source, "size": m.size, "path": m.path, "sha256": m.sha256})
    out = []
    for r in rows:
        try:
            st = r["path"].stat()
            same: object = (st.st_dev, st.st_ino)
        except OSError:
            same = r["path"]
        if same not in seen:
            seen.add(same)
            out.append(r)
    return out


def _fit(path, hardware, context) -> dict:
    """Where a local file would run, from its header: one bad file is a row saying why, never an error."""
    from localllm.resolve import resolve

    try:
        r = resolve(path, hardware=hardware, context=context)
    except InvalidModelError as exc:
        return {"fit": "invalid", "fits": False, "why": str(exc)}
    except (LocalLLMError, OSError) as exc:
        return {"fit": "cannot plan", "fits": False, "why": str(exc)}
    if r.plan is None:  # an architecture the planner cannot size: llama.cpp may still run it, on the CPU
        return {"fit": "cannot plan", "fits": False, "why": r.note, "n_ctx": r.placement.n_ctx}
    p = r.plan
    why = "" if p.fits else f"needs {memory_size(p.needed)} of {memory_size(p.available)} available"
    return {
        "fit": p.where if p.fits else "none",
        "fits": p.fits,
        "needed": p.needed,
        "available": p.available,
        "n_ctx": p.placement.n_ctx,
        "n_gpu_layers": p.placement.n_gpu_layers,
        "tokens_per_s": p.tokens_per_s,
        "runtime": p.placement.runtime,
        "why": why,
    }


def _verdict(row: dict) -> str:
    if row["fit"] in _WHERE and row["fits"]:
        return f"{_WHERE[row['fit']]}, ctx {row['n_ctx']}"
    return {"none": "DOES NOT FIT"}.get(row["fit"], row["fit"])


def _first_sentence(text: str) -> str:
    """The what-happened part of an error message; `--json` has all of it."""
    cut = text.find(". ")
    return text if cut < 0 else text[: cut + 1]
