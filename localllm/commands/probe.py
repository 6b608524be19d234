"""`localllm probe`: what this machine has (or what a profile describes)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import localllm

if TYPE_CHECKING:  # pragma: no cover
    from localllm.hardware import Hardware


def register(sub) -> None:
    p = sub.add_parser(
        "probe",
        help="show this machine's hardware: memory, CPU, GPUs, runtimes",
        description="Probe this machine (or show a hardware profile) and print what was found.",
    )
    p.add_argument("--json", action="store_true", help="print JSON (the same fields as a profile)")
    p.add_argument("--save", metavar="FILE", type=Path, help="write the result as a TOML hardware profile to FILE")
    p.add_argument(
        "--runtimes",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also report llama.cpp / ONNX Runtime (imports them; default: on)",
    )
    p.add_argument(
        "--profile", metavar="NAME_OR_FILE", help="show a hardware profile instead of probing (see --list-profiles)"
    )
    p.add_argument("--list-profiles", action="store_true", help="list the bundled profiles")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list_profiles:
        for name in localllm.list_profiles():
            print(name)
        return 0
    hw = localllm.load_profile(args.profile) if args.profile else localllm.probe(runtimes=args.runtimes)
    if args.save:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(hw.to_toml(), encoding="utf-8")
    if args.json:
        print(json.dumps(hw.to_dict(), indent=2))
    else:
        print(render(hw))
        if args.save:
            print(f"\nsaved to {args.save}")
    return 0


def gib(n: int | float | None) -> str:
    """Memory in GiB (MiB under 1 GiB), "unknown" for None."""
    from localllm.units import memory_size  # here: `localllm --help` imports every command module

    return memory_size(n, unknown="unknown")


def _cores(n: float | None) -> str:
    if n is None:
        return "?"
    return str(int(n)) if float(n).is_integer() else f"{n:.2f}"


def render(hw: Hardware) -> str:
    """A readable table: one heading per area, memory sizes in GiB."""
    rows: list[tuple[str, str]] = []
    add = rows.append
    title = hw.name or "this machine"
    if hw.description:
        title += f": {hw.description}"
    system = f"{hw.os} {hw.os_version or ''}".strip()
    if hw.python:
        system += f", Python {hw.python}"
    add(("System", system))

    c = hw.cpu
    add(("CPU", f"{c.brand or 'unknown CPU'} ({c.vendor or '?'}, {c.arch})"))
    cores = f"{_cores(c.physical_cores)} physical / {_cores(c.logical_cores)} logical cores"
    limits = []
    if c.affinity_cores is not None:
        limits.append(f"affinity {c.affinity_cores}")
    if c.quota_cores is not None:
        limits.append(f"cgroup quota {_cores(c.quota_cores)}")
    cores += f", usable {_cores(c.effective_cores)}"
    if limits:
        cores += f" ({', '.join(limits)})"
    add(("", cores))
    add(("", "flags: " + (" ".join(c.flags) or "none known")))

    m = hw.memory
    add(
        (
            "Memory",
            f"{gib(m.total)} total, {gib(m.available)} available, swap {gib(m.swap_total)}"
            + (f" ({gib(m.swap_free)} free)" if m.swap_free is not None else ""),
        )
    )
    if m.cgroup_limit is not None:
        add(
            (
                "",
                f"cgroup v{m.cgroup_version} limit {gib(m.cgroup_limit)}, "
                f"in use {gib(m.cgroup_usage)}, headroom {gib(m.cgroup_headroom)}",
            )
        )
    else:
        add(("", "cgroup: no memory limit"))
    usable = f"usable now {gib(m.usable)}"
    if m.bandwidth_gbs:
        usable += f", bandwidth {m.bandwidth_gbs:g} GB/s"
    add(("", usable))

    if not hw.gpus:
        add(("GPUs", "none found"))
    for i, g in enumerate(hw.gpus):
        line = f"[{g.index}] {g.name} ({g.vendor}"
        line += f", {g.backend})" if g.backend else ")"
        mem = f"{gib(g.memory_total)}"
        if g.memory_free is not None:
            mem += f", {gib(g.memory_free)} free"
        if g.unified:
            mem += ", unified with RAM"
        parts = [mem]
        if g.budget is not None:
            parts.append(f"budget {gib(g.budget)} ({g.budget_basis or 'basis unknown'})")
        if g.compute_capability:
            parts.append(f"compute {g.compute_capability}")
        if g.driver_version:
            parts.append(f"driver {g.driver_version}" + (f" / CUDA {g.cuda_version}" if g.cuda_version else ""))
        if g.bandwidth_gbs:
            parts.append(f"{g.bandwidth_gbs:g} GB/s")
        add(("GPUs" if i == 0 else "", line))
        add(("", "    " + ", ".join(parts)))

    if hw.accelerators:
        for i, a in enumerate(hw.accelerators):
            add(
                (
                    "Accelerators" if i == 0 else "",
                    f"{a.name} ({a.kind})" + (f" at {a.path}" if a.path else "") + ", no runtime uses it yet",
                )
            )
    else:
        add(("Accelerators", "none found"))

    disk = gib(hw.disk_free) + " free" if hw.disk_free is not None else "unknown"
    if hw.disk_path:
        disk += f" at {hw.disk_path}"
    add(("Disk", disk))
    power = {True: "on battery", False: "mains power", None: "unknown"}[hw.on_battery]
    add(("Power", power))

    if hw.runtimes:
        for i, r in enumerate(hw.runtimes):
            if not r.installed:
                text = f"{r.name}: not installed"
            else:
                text = f"{r.name} {r.version or ''}".rstrip()
                if r.gpu_offload is not None:
                    text += f", GPU offload {'yes' if r.gpu_offload else 'no'}"
                if r.providers:
                    text += f", providers {', '.join(r.providers)}"
            add(("Runtimes" if i == 0 else "", text))
    for i, note in enumerate(hw.notes):
        add(("Notes" if i == 0 else "", f"- {note}"))

    width = max(len(k) for k, _ in rows) + 2
    lines = [f"localllm probe: {title}"]
    lines += [f"{k:<{width}}{v}" for k, v in rows]
    return "\n".join(lines)
