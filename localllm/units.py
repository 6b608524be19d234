"""Byte counts in words, one rule for the whole package.

File sizes are decimal (GB, MB), as the Hub, browsers and disk tools show them; memory is
binary (GiB, MiB), as the OS, nvidia-smi and llama.cpp's logs show it.
"""

from __future__ import annotations

__all__ = ["GIB", "MIB", "file_size", "memory_size"]

MIB = 2**20
GIB = 2**30


def file_size(n: int | float | None, *, unknown: str = "?") -> str:
    """'7.67 GB' from 1 GB up, else '512.0 MB'; `unknown` for None."""
    if n is None:
        return unknown
    return f"{n / 1e9:.2f} GB" if abs(n) >= 1e9 else f"{n / 1e6:.1f} MB"


def memory_size(n: int | float | None, *, unknown: str = "?", digits: int = 2) -> str:
    """'3.52 GiB' from 1 GiB up, else '640.0 MiB'; `unknown` for None."""
    if n is None:
        return unknown
    return f"{n / GIB:.{digits}f} GiB" if abs(n) >= GIB else f"{n / MIB:.1f} MiB"
