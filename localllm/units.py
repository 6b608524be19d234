"""Byte counts in words, one rule for the whole package.

File sizes are decimal (GB, MB), as the Hub, browsers and disk tools show them; memory is
binary (GiB, MiB), as the OS, nvidia-smi and llama.cpp's logs show it.
"""

from __future__ import annotations

__all__ = ["GIB", "MIB", "file_size", "memory_size", "parse_memory"]

MIB = 2**20
GIB = 2**30
_UNITS = {
    "": 1,
    "k": 2**10,
    "kib": 2**10,
    "kb": 10**3,
    "m": MIB,
    "mib": MIB,
    "mb": 10**6,
    "g": GIB,
    "gib": GIB,
    "gb": 10**9,
    "t": 2**40,
    "tib": 2**40,
    "tb": 10**12,
}


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


def parse_memory(text: str) -> int:
    """Bytes from '2G' / '2GiB' (binary), '2GB' (decimal), '512M', '1.5g' or a plain byte count.

    Raises ValueError, saying what it takes, for anything else or a size below 1 byte.
    """
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :]
    try:
        value = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise ValueError(f"{text!r} is not a memory size; write it like 2G, 512M or 1.5GiB") from None
    if not value >= 1:
        raise ValueError(f"{text!r} is not a memory size of at least 1 byte")
    return int(value)
