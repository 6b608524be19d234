"""Bounded reads from a mapped GGUF file: no read goes past what the file holds.

    UINT8 ... FLOAT64, SCALARS, TYPE_NAMES   GGUF value types (gguf.cpp enum gguf_type)
    Malformed(message, offset)               a structural defect at a byte offset
    map_file(f, size)                        the file mapped read-only (a context manager)
    Reader(mm, size, label, avail)           little-endian reads, each checked against what is left
    NeedMore(offset)                         a read past the bytes at hand (a header prefix), not a defect

Every length a file claims is compared with the bytes actually left before anything is
read or allocated (localllm.formats.gguf holds the parser built on these reads). A Reader over a
prefix of a file (a header fetched with HTTP range requests) is given the file's real `size` and
the `avail` bytes it holds: a read that fits the file but passes `avail` raises NeedMore, so the
caller fetches more; the sanity checks keep comparing lengths with the real file size.
"""

from __future__ import annotations

import mmap
import struct
from itertools import repeat
from typing import Any, BinaryIO

__all__ = [
    "ARRAY",
    "BOOL",
    "FLOAT32",
    "FLOAT64",
    "INT16",
    "INT32",
    "INT64",
    "INT8",
    "MAX_STRING_BYTES",
    "Malformed",
    "NeedMore",
    "Reader",
    "SCALARS",
    "STRING",
    "TYPE_NAMES",
    "U64",
    "UINT16",
    "UINT32",
    "UINT64",
    "UINT8",
    "gather",
    "map_file",
]

MAX_STRING_BYTES = 1 << 30  # llama.cpp gguf.cpp GGUF_MAX_STRING_LENGTH

# GGUF value types (gguf.cpp enum gguf_type): name, struct format, size in bytes
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
SCALARS = {
    UINT8: ("uint8", "<B", 1),
    INT8: ("int8", "<b", 1),
    UINT16: ("uint16", "<H", 2),
    INT16: ("int16", "<h", 2),
    UINT32: ("uint32", "<I", 4),
    INT32: ("int32", "<i", 4),
    FLOAT32: ("float32", "<f", 4),
    BOOL: ("bool", "<?", 1),
    UINT64: ("uint64", "<Q", 8),
    INT64: ("int64", "<q", 8),
    FLOAT64: ("float64", "<d", 8),
}
TYPE_NAMES = {**{k: v[0] for k, v in SCALARS.items()}, STRING: "string", ARRAY: "array"}
U64 = struct.Struct("<Q").unpack_from


class Malformed(Exception):
    """A structural defect at a byte offset; the parser turns it into InvalidModelError."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


class NeedMore(Exception):
    """A read needs bytes up to `offset` but only a prefix of the file is at hand: fetch more."""

    def __init__(self, offset: int):
        super().__init__(f"need the file's bytes up to offset {offset}")
        self.offset = offset


class map_file:
    """mmap a file read-only (a context manager); bounds are checked by Reader."""

    def __init__(self, f: BinaryIO, size: int):
        self.mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)

    def __enter__(self) -> mmap.mmap:
        return self.mm

    def __exit__(self, *exc: object) -> None:
        self.mm.close()


class Reader:
    """Bounded little-endian reads from a mapped file (or a prefix of one: `avail` bytes of a
    file of `size`); every read checks what is left."""

    def __init__(self, mm: mmap.mmap | bytes, size: int, label: str, avail: int | None = None):
        self.mm, self.size, self.pos, self.label = mm, size, 0, label
        self.avail = size if avail is None else min(avail, size)

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise Malformed(
                f"the file ends while reading {what}: {n} bytes needed at byte offset {self.pos}, "
                f"{self.size - self.pos} left (the file is {self.size} bytes: truncated?)",
                self.pos,
            )
        if n > self.avail - self.pos:
            raise NeedMore(self.pos + n)

    def scalar(self, vtype: int, what: str) -> Any:
        _, fmt, n = SCALARS[vtype]
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.mm, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self.scalar(UINT32, what)

    def u64(self, what: str) -> int:
        return self.scalar(UINT64, what)

    def raw_string(self, what: str, limit: int = MAX_STRING_BYTES) -> bytes:
        start = self.pos
        n = self.u64(f"the length of {what}")
        if n > limit:
            raise Malformed(f"{what} claims a length of {n} bytes, over the limit of {limit}", start)
        if n > self.size - self.pos:
            raise Malformed(
                f"{what} claims a length of {n} bytes but only {self.size - self.pos} bytes are left in the file", start
            )
        if n > self.avail - self.pos:
            raise NeedMore(self.pos + n)
        v = self.mm[self.pos : self.pos + n]
        self.pos += n
        return v

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        return self.raw_string(what, limit).decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str, limit: int, item: str = "element {i} of {what}") -> None:
        """Walk `count` length-prefixed strings checking each length, without copying any.

        A tight loop first (a 128k-token vocabulary in ~20 ms); only when it finds a bad
        length does the careful walk run again, for the exact token and offset.
        """
        mm, pos = self.mm, self.pos
        try:
            for _ in repeat(None, count):
                (n,) = U64(mm, pos)  # struct.error past the end of the map
                if n > limit:
                    break
                pos += 8 + n
            else:
                if pos <= self.avail:
                    self.pos = pos
                    return
        except struct.error:
            pass
        self._skip_strings_checked(count, what, limit, item)
        raise Malformed(f"{what} is malformed", self.pos)  # unreachable: the checked walk raised

    def collect_tokens(self, count: int, what: str, limit: int, item: str) -> tuple[set[bytes], bool]:
        """skip_strings that also gathers the strings' bytes into a set; returns (the set,
        whether some string may hold a NUL byte).

        Fast path: one copy of the span the tokens likely fill, walked as bytes (slicing a
        bytes object is cheaper than slicing the map), for strings under 256 bytes, whose
        length fields then hold exactly 7 zero bytes each: so a zero count over the span
        tells whether any text holds a NUL. Anything else (a longer token, a bad length, a
        span too short) takes the general walk over the map.
        """
        start, left = self.pos, self.avail - self.pos
        span = min(left, 24 * count + 64)  # real vocabularies average well under 16 bytes a token
        buf = self.mm[start : start + span]
        got = gather(buf, count, 255)
        if got is not None:
            texts, end = got
            self.pos = start + end
            return texts, buf.count(b"\0", 0, end) != 7 * count
        mm, pos = self.mm, start
        out: list[bytes] = []
        try:
            for _ in repeat(None, count):
                (n,) = U64(mm, pos)
                if n > limit:
                    break
                pos += 8
                out.append(mm[pos : pos + n])  # a short slice near the end of the map: caught below
                pos += n
            else:
                if pos <= self.avail:
                    self.pos = pos
                    return set(out), True
        except struct.error:
            pass
        self._skip_strings_checked(count, what, limit, item)
        raise Malformed(f"{what} is malformed", self.pos)  # unreachable: the checked walk raised

    def _skip_strings_checked(self, count: int, what: str, limit: int, item: str) -> None:
        mm, size, pos = self.mm, self.size, self.pos
        for i in range(count):
            label = item.format(i=i, what=what)
            if min(size, self.avail) - pos < 8:
                self.pos = pos
                self.need(8, f"the length of {label}")
            (n,) = U64(mm, pos)
            if n > limit:
                raise Malformed(f"{label} claims a length of {n} bytes, over the limit of {limit}", pos)
            if n > size - pos - 8:
                raise Malformed(
                    f"{label} claims a length of {n} bytes but only {size - pos - 8} bytes are left in the "
                    f"file (truncated?)",
                    pos,
                )
            pos += 8 + n
        if pos > self.avail:
            raise NeedMore(pos)
        self.pos = pos

    def array_values(self, elem: int, count: int, what: str) -> list[Any]:
        if elem == STRING:
            return [self.string(f"element {i} of {what}") for i in range(count)]
        _, fmt, n = SCALARS[elem]
        self.need(n * count, f"{count} {TYPE_NAMES[elem]} elements of {what}")
        vals = list(struct.unpack_from(f"<{count}{fmt[1]}", self.mm, self.pos)) if count else []
        self.pos += n * count
        return vals


def gather(buf: bytes, count: int, limit: int) -> tuple[set[bytes], int] | None:
    """(the set of `count` length-prefixed strings at the start of `buf`, the offset past them),
    or None when a length exceeds `limit` or the strings run past `buf`."""
    out: list[bytes] = []  # list.append is a specialized call, set.add is not: then set() in C
    pos = 8
    try:
        for _ in repeat(None, count):
            (n,) = U64(buf, pos - 8)
            if n > limit:
                return None
            end = pos + n
            out.append(buf[pos:end])
            pos = end + 8
    except struct.error:
        return None
    end = pos - 8
    return (set(out), end) if end <= len(buf) else None
