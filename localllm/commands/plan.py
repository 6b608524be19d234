"""`localllm plan`: what would run here (or on a profile), where, and why."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("plan", help="show which model variant and placement fit this machine, and why",
                       description="Plan a model for this machine (or a hardware profile) and explain the choice.")
    p.add_argument("model", nargs="?", default="auto", metavar="MODEL[:QUANT]",
                   help='a catalog name such as "qwen2.5-1.5b-instruct:q4_k_m", or "auto" (default)')
    add_hardware_options(p)
    p.add_argument("--ctx", type=int, default=None, metavar="N", help="minimum context in tokens")
    p.add_argument("--workload", choices=("interactive", "batch"), default="interactive")
    p.add_argument("--runtime", choices=("llama.cpp", "onnxruntime", "onnx"), default=None,
                   help="runtime to plan for (onnx = onnxruntime); default: weigh both")
    p.add_argument("--kv-type", choices=("f16", "q8_0", "q4_0"), default=None, help="KV cache type")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def add_hardware_options(p) -> None:
    p.add_argument("--profile", metavar="NAME|FILE", default=None,
                   help="plan for a hardware profile (`localllm probe --list-profiles`) instead of this machine")


def hardware_from(args):
    """The Hardware named by --profile, or a live probe."""
    if args.profile:
        from localllm.hwprobe import load_profile

        return load_profile(args.profile)
    from localllm.hwprobe import probe

    return probe(runtimes=True)


def run(args) -> int:
    from localllm.planner import plan

    result = plan(args.model, hardware=hardware_from(args), context=args.ctx, workload=args.workload,
                  runtime=args.runtime, kv_type=args.kv_type)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.explain())
    return 0 if result.fits else 1
