"""`localllm plan`: what would run here (or on a profile), where, and why."""

from __future__ import annotations

import argparse
import json

from localllm.placement import KV_TYPES, RUNTIMES

MODEL_HELP = (
    '"auto", a catalog name or name:quant (e.g. "qwen3-1.7b:q4_k_m"), a Hub repository '
    "(hf.co/OWNER/REPO[:QUANT] or OWNER/REPO/FILE.gguf), another tool's model (ollama:NAME:TAG, "
    "lmstudio:PUBLISHER/REPO/FILE.gguf), a .gguf file, or an ONNX folder (or .onnx file)"
)
# the planner's floor for a context window (planner.machine.prepare refuses less)
MIN_CONTEXT = 16


def context_arg(text: str) -> int:
    """argparse type for --ctx: a whole number of tokens, at least MIN_CONTEXT."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of tokens: {text!r}") from None
    if n < MIN_CONTEXT:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_CONTEXT} tokens, got {n}")
    return n


def register(sub) -> None:
    p = sub.add_parser(
        "plan",
        help="show which model variant and placement fit this machine, and why",
        description="Plan a model for this machine (or a hardware profile) and explain the choice.",
    )
    p.add_argument("model", nargs="?", default="auto", metavar="MODEL", help=MODEL_HELP + ' (default "auto")')
    add_hardware_options(p)
    p.add_argument("--ctx", type=context_arg, default=None, metavar="N", help="minimum context in tokens")
    p.add_argument("--workload", choices=("interactive", "batch"), default="interactive")
    p.add_argument(
        "--runtime",
        choices=(*RUNTIMES, "onnx"),
        default=None,
        help="runtime to plan for (onnx = onnxruntime); default: weigh both",
    )
    p.add_argument("--kv-type", choices=KV_TYPES, default=None, help="KV cache type")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_worker_options(p)
    p.set_defaults(func=run)


def add_hardware_options(p) -> None:
    p.add_argument(
        "--profile",
        metavar="NAME|FILE",
        default=None,
        help="plan for a hardware profile (`localllm probe --list-profiles`) instead of this machine",
    )


def add_worker_options(p) -> None:
    p.add_argument(
        "--workers",
        type=_endpoints,
        metavar="HOST:PORT,...",
        default=None,
        help="llama.cpp RPC workers (`localllm worker` there) whose memory the plan may use when the model "
        "does not fit here (default: $LOCALLLM_WORKERS)",
    )


def _endpoints(text: str) -> list[str]:
    return [e.strip() for e in text.split(",") if e.strip()]


def hardware_from(args):
    """The Hardware named by --profile, or a live probe."""
    # imported here, as below: `localllm --help` loads this module and should stay fast
    from localllm.hardware.detect import load_profile, probe

    if args.profile:
        return load_profile(args.profile)
    return probe(runtimes=True)


def run(args) -> int:
    from localllm.resolve import plan_for

    # plan_for, not planner.plan: a .gguf file or an ONNX folder is planned from its own header
    result = plan_for(
        args.model,
        hardware=hardware_from(args),
        context=args.ctx,
        workload=args.workload,
        runtime=args.runtime,
        kv_type=args.kv_type,
        workers=args.workers,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.explain())
    return 0 if result.fits else 1
