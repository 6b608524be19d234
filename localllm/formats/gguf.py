"""The GGUF format: the values a parsed file is described by, and the bounded parser.

    TensorInfo, GGUFArray, GGUFInfo   what a file holds (header facts, metadata, tensor table)
    GGML_TYPES                        ggml type id -> (name, elements per block, bytes per block)
    Layout                            what the rules need beyond GGUFInfo (types, offsets, vocabulary)
    parse(mm, size, path)             -> (GGUFInfo, Layout), or InvalidModelError saying what and where
    SPLIT_NO, SPLIT_NAME, split_name  a split model's keys and part names (llama.cpp gguf-split)
    malformed(path, message, offset)  the InvalidModelError for a defect at a byte offset

The parser checks structure: every length against the bytes left (localllm.formats.gguf_reader),
array element types llama.cpp casts to, the vocabulary (unique texts, byte tokens in the one form
llama.cpp looks up), tensor shapes, types and offsets. What llama.cpp's loader asserts on a
well-formed file (localllm.formats.gguf_rules) and which files are loaded at all are
localllm.validate's: validate_gguf is the entry point.
"""

from __future__ import annotations

import mmap
import re
import sys
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from types import MappingProxyType
from typing import Any

from localllm.errors import InvalidModelError
from localllm.formats import gguf_rules
from localllm.formats.gguf_reader import (
    ARRAY,
    FLOAT32,
    INT8,
    INT32,
    MAX_STRING_BYTES,
    SCALARS,
    STRING,
    TYPE_NAMES,
    U64,
    UINT8,
    UINT32,
    Malformed,
    Reader,
    map_file,
)
from localllm.formats.gguf_tokenizer import Vocab

__all__ = [
    "ADVICE",
    "GGML_TYPES",
    "GGUFArray",
    "GGUFInfo",
    "GGUF_MAGIC",
    "HEADER_BYTES",
    "Layout",
    "TensorInfo",
    "SPLIT_COUNT",
    "SPLIT_NAME",
    "SPLIT_NO",
    "SPLIT_TENSORS_COUNT",
    "split_name",
    "malformed",
    "parse",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 was dropped by llama.cpp; v3 is current (gguf.cpp GGUF_VERSION)
HEADER_BYTES = 24  # magic u32, version u32, tensor count u64, kv count u64
# llama.cpp llama-arch.cpp LLM_KV_SPLIT_*: gguf-split writes all three into every part (u16, u16,
# i32), and the first part alone carries the model's other keys
SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS_COUNT = "split.no", "split.count", "split.tensors.count"
# llama.cpp llama.cpp llama_split_path: "%s-%05d-of-%05d.gguf"; its loader finds the other parts by it
SPLIT_NAME = re.compile(r"^(?P<prefix>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)


def split_name(prefix: str, no: int, count: int) -> str:
    return f"{prefix}-{no:05d}-of-{count:05d}.gguf"  # part `no` (1-based) of `count`


# Sane bounds. Real models have a few dozen keys and at most a few thousand tensors;
# the limits sit far above that but far below what could exhaust memory.
MAX_KV = 65_536
MAX_TENSORS = 1_048_576
MAX_KEY_BYTES = 65_536
MAX_ARRAY_ELEMENTS = 1 << 30  # llama.cpp gguf.cpp GGUF_MAX_ARRAY_ELEMENTS
MAX_TOKEN_BYTES = 65_536  # real tokens are tens of bytes; CVE-2025-49847 was an oversized token
GGML_MAX_DIMS = 4  # ggml.h
GGML_MAX_NAME = 64  # ggml.h: tensor names must be shorter than this (NUL included)
INT64_MAX = (1 << 63) - 1
DEFAULT_ALIGNMENT = 32  # gguf.cpp GGUF_DEFAULT_ALIGNMENT
SMALL_ARRAY = 1024  # arrays up to this many elements are kept in GGUFInfo.metadata as tuples


# Element types llama.cpp casts these arrays to (llama-vocab.cpp); a different type
# with the same count would make it read past the array.
_REQUIRED_ARRAY_TYPES = {
    "tokenizer.ggml.tokens": (STRING,),
    "tokenizer.ggml.scores": (FLOAT32,),
    "tokenizer.ggml.token_type": (INT32,),
    "tokenizer.ggml.merges": (STRING,),
    "tokenizer.ggml.added_tokens": (STRING,),
    "tokenizer.ggml.precompiled_charsmap": (UINT8, INT8),
}
# Keys that must hold a single value of this type when present.
_REQUIRED_SCALAR_TYPES = {
    "general.architecture": STRING,
    "general.alignment": UINT32,  # gguf.cpp refuses any other type
    "tokenizer.ggml.model": STRING,
    "tokenizer.chat_template": STRING,
}
_TOKEN_TYPE_BYTE = 6  # llama.h LLAMA_TOKEN_TYPE_BYTE
# llama-vocab.cpp:4003 looks byte tokens up as "<0x" + two of "0123456789ABCDEF" + ">": a
# lowercase <0x0a> is never found, and the first newline then throws std::out_of_range
_BYTE_TOKEN = re.compile(rb"<0x[0-9A-F]{2}>")

# ggml type id -> (name, elements per block, bytes per block): ggml's type_traits
# (ggml/src/ggml.c blck_size / type_size), as gguf-py 0.19.0 lists them in
# gguf.constants.GGML_QUANT_SIZES. Inline because importing gguf (and numpy with it) costs
# more than the whole check; tests/formats/test_validate.py holds this table equal to gguf's.
# Ids 4, 5 (Q4_2, Q4_3) and 31-33 (Q4_0_4_4...) were removed from ggml: unknown here too.
GGML_TYPES: Mapping[int, tuple[str, int, int]] = MappingProxyType(
    {
        0: ("F32", 1, 4),
        1: ("F16", 1, 2),
        2: ("Q4_0", 32, 18),
        3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22),
        7: ("Q5_1", 32, 24),
        8: ("Q8_0", 32, 34),
        9: ("Q8_1", 32, 40),
        10: ("Q2_K", 256, 84),
        11: ("Q3_K", 256, 110),
        12: ("Q4_K", 256, 144),
        13: ("Q5_K", 256, 176),
        14: ("Q6_K", 256, 210),
        15: ("Q8_K", 256, 292),
        16: ("IQ2_XXS", 256, 66),
        17: ("IQ2_XS", 256, 74),
        18: ("IQ3_XXS", 256, 98),
        19: ("IQ1_S", 256, 50),
        20: ("IQ4_NL", 32, 18),
        21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82),
        23: ("IQ4_XS", 256, 136),
        24: ("I8", 1, 1),
        25: ("I16", 1, 2),
        26: ("I32", 1, 4),
        27: ("I64", 1, 8),
        28: ("F64", 1, 8),
        29: ("IQ1_M", 256, 56),
        30: ("BF16", 1, 2),
        34: ("TQ1_0", 256, 54),
        35: ("TQ2_0", 256, 66),
        39: ("MXFP4", 32, 17),
        40: ("NVFP4", 64, 36),
        41: ("Q1_0", 128, 18),
    }
)

ADVICE = "Re-download it, or get the file from a trusted source (the model's official GGUF repository)."


# -- values ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a GGUF file; `offset` is absolute (from the start of the file)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    offset: int
    nbytes: int


@dataclass(frozen=True)
class GGUFArray:
    """A metadata array too long to keep in memory; `GGUFInfo.array(key)` reads it."""

    element_type: str
    length: int
    offset: int  # of the first element, absolute


@dataclass(frozen=True)
class GGUFInfo:
    """What a validated GGUF file holds: header facts, metadata and tensor table.

    `metadata` has every scalar and string (the chat template included); arrays of up
    to SMALL_ARRAY elements are tuples, longer ones (tokens, merges) are GGUFArray
    summaries, read on demand with `array(key)`.
    """

    path: Path
    version: int
    architecture: str
    file_size: int
    metadata: Mapping[str, Any] = field(hash=False, repr=False)
    tensors: tuple[TensorInfo, ...] = field(repr=False)
    tensor_bytes: int
    alignment: int
    data_offset: int

    @property
    def n_tensors(self) -> int:
        return len(self.tensors)

    @property
    def n_kv(self) -> int:
        return len(self.metadata)

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    def array(self, key: str) -> tuple:
        """The full value of a metadata array (read from the file for long ones)."""
        value = self.metadata[key]
        if not isinstance(value, GGUFArray):
            if not isinstance(value, tuple):
                raise TypeError(f"metadata key {key!r} is not an array")
            return value
        with open(self.path, "rb") as f, map_file(f, self.file_size) as mm:
            r = Reader(mm, self.file_size, str(self.path))
            r.pos = value.offset
            elem = next(k for k, v in TYPE_NAMES.items() if v == value.element_type)
            return tuple(r.array_values(elem, value.length, key))


# -- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What the rules need of a parsed file beyond GGUFInfo, so a refusal can say where."""

    offsets: Mapping[str, int]  # metadata key -> byte offset of its entry
    types: Mapping[str, str]  # metadata key -> GGUF value type name ("uint32", "string", "array", ...)
    elems: Mapping[str, str]  # array key -> its element type name
    vocab: Vocab | None  # tokenizer.ggml.tokens as read, when the file has it


def malformed(p: Path, message: str, offset: int | None = None) -> InvalidModelError:
    """The error for a file that is not a valid GGUF file, saying where when `offset` is known."""
    where = f" (byte offset {offset})" if offset is not None else ""
    return InvalidModelError(f"{p} is not a valid GGUF file: {message}{where}. {ADVICE}", path=str(p))


def parse(
    mm: mmap.mmap | bytes, size: int, p: Path, *, avail: int | None = None, part: bool = False
) -> tuple[GGUFInfo, Layout]:
    """The header, metadata and tensor table of a mapped GGUF file (its magic already checked).

    `avail`: only the first `avail` bytes of the file of `size` are in `mm` (a header prefix).
    `part`: the file is a later part of a split model (split.no > 0), which has no architecture.

    Raises:
        InvalidModelError: a structural defect, with the numbers and its byte offset.
        NeedMore: (with `avail`) the header runs past the bytes at hand; its offset says how far.
    """
    r = Reader(mm, size, str(p), avail)
    r.pos = 4
    try:
        version = r.u32("the version")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in SUPPORTED_VERSIONS:
                raise Malformed(
                    f"GGUF version {version} looks like version {swapped} written big-endian; "
                    f"this machine needs a little-endian GGUF file",
                    4,
                )
            if version == 1:
                raise Malformed(
                    "GGUF version 1 is no longer supported by llama.cpp; download a current (v3) build of the model", 4
                )
            raise Malformed(
                f"unsupported GGUF version {version} (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})", 4
            )
        n_tensors = r.u64("the tensor count")
        n_kv = r.u64("the key/value count")
        # each key/value needs at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes,
        # each tensor info 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes
        left = size - r.pos
        if n_kv > MAX_KV or n_kv * 14 > left:
            raise Malformed(
                f"absurd key/value count {n_kv} (limit {MAX_KV}; {left} bytes left in the file "
                f"hold at most {left // 14})",
                16,
            )
        if n_tensors > MAX_TENSORS or n_tensors * 24 > left:
            raise Malformed(
                f"absurd tensor count {n_tensors} (limit {MAX_TENSORS}; {left} bytes left in the file "
                f"hold at most {left // 24})",
                8,
            )

        metadata, types, facts = _read_kv(r, n_kv)
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        try:
            gguf_rules.check_alignment(alignment)
        except gguf_rules.RuleError as bad:
            raise Malformed(str(bad), facts["offsets"]["general.alignment"]) from None
        arch = metadata.get("general.architecture")
        if arch is None and part and metadata.get(SPLIT_NO):
            arch = ""
        if arch is None:
            raise Malformed("the key general.architecture is missing", 24)
        _check_vocab(r, metadata, facts)
        tensors, data_offset, tensor_bytes = _read_tensors(r, n_tensors, alignment, size)
    except Malformed as bad:
        raise malformed(p, str(bad), bad.offset) from None
    info = GGUFInfo(
        path=p,
        version=version,
        architecture=arch,
        file_size=size,
        metadata=MappingProxyType(metadata),
        tensors=tuple(tensors),
        tensor_bytes=tensor_bytes,
        alignment=alignment,
        data_offset=data_offset,
    )
    layout = Layout(
        offsets=facts["offsets"],
        types={k: TYPE_NAMES[t] for k, t in types.items()},
        elems=facts["elems"],
        vocab=facts.get("vocab"),
    )
    return info, layout


def _read_kv(r: Reader, n_kv: int) -> tuple[dict, dict, dict]:
    """Read every key/value; big arrays are walked and summarized, vocab arrays kept for checks."""
    metadata: dict[str, Any] = {}
    types: dict[str, int] = {}
    facts: dict[str, Any] = {"offsets": {}, "elems": {}}
    for i in range(n_kv):
        start = r.pos
        key_b = r.raw_string(f"key {i}", MAX_KEY_BYTES)
        if not key_b:
            raise Malformed(f"key {i} is empty", start)
        key = key_b.decode("utf-8", errors="replace")
        if key in metadata:
            raise Malformed(f"duplicate key {key!r} (key {i})", start)
        facts["offsets"][key] = start
        vtype_pos = r.pos
        vtype = r.u32(f"the value type of {key!r}")
        if vtype not in TYPE_NAMES:
            raise Malformed(f"key {key!r} has unknown value type {vtype} (valid: 0-12)", vtype_pos)
        types[key] = vtype
        want = _REQUIRED_SCALAR_TYPES.get(key)
        if want is not None and vtype != want:
            raise Malformed(f"key {key!r} must be a {TYPE_NAMES[want]} but is a {TYPE_NAMES[vtype]}", vtype_pos)
        if vtype == STRING:
            metadata[key] = r.string(f"the value of {key!r}")
        elif vtype != ARRAY:
            metadata[key] = r.scalar(vtype, f"the value of {key!r}")
        else:
            metadata[key] = _read_array(r, key, facts)
    return metadata, types, facts


def _read_array(r: Reader, key: str, facts: dict):
    at = r.pos
    elem = r.u32(f"the element type of {key!r}")
    count = r.u64(f"the length of {key!r}")
    if elem not in TYPE_NAMES:
        raise Malformed(f"array {key!r} has unknown element type {elem}", at)
    if elem == ARRAY:
        raise Malformed(f"array {key!r} holds arrays; nested arrays are not allowed in GGUF", at)
    allowed = _REQUIRED_ARRAY_TYPES.get(key)
    if allowed and elem not in allowed:
        want = " or ".join(TYPE_NAMES[t] for t in allowed)
        raise Malformed(
            f"array {key!r} must hold {want} elements but holds {TYPE_NAMES[elem]}; llama.cpp would read past its end",
            at,
        )
    facts["elems"][key] = TYPE_NAMES[elem]
    min_size = 8 if elem == STRING else SCALARS[elem][2]
    left = r.size - r.pos
    if count > MAX_ARRAY_ELEMENTS or count * min_size > left:
        raise Malformed(
            f"array {key!r} claims {count} {TYPE_NAMES[elem]} elements, which need at least "
            f"{count * min_size} bytes; {left} are left in the file",
            at,
        )
    first = r.pos
    if key == "tokenizer.ggml.tokens":
        facts["tokens"] = _read_tokens(r, count, key)
    elif key == "tokenizer.ggml.token_type":
        facts["token_type"] = _read_int32s(r, count, key)
    elif elem == STRING:
        r.skip_strings(count, repr(key), MAX_STRING_BYTES)
    else:
        r.need(count * min_size, f"the elements of {key!r}")
        r.pos += count * min_size
    facts.setdefault("counts", {})[key] = count
    if count <= SMALL_ARRAY:
        return _small(r, elem, first, count, key)
    return GGUFArray(element_type=TYPE_NAMES[elem], length=count, offset=first)


def _small(r: Reader, elem: int, first: int, count: int, key: str) -> tuple:
    """Re-read a short array (tokens/token types of tiny vocabularies) as a tuple."""
    end = r.pos
    r.pos = first
    try:
        return tuple(r.array_values(elem, count, repr(key)))
    finally:
        r.pos = end


def _read_tokens(r: Reader, count: int, key: str) -> tuple[int, int, set[bytes], bool]:
    """Check every token's length; returns (offset of the first, count, the set of their texts,
    whether one may hold a NUL byte)."""
    first = r.pos
    texts, nul = r.collect_tokens(count, repr(key), MAX_TOKEN_BYTES, item="token {i}")
    return first, count, texts, nul


def _token_bytes(r: Reader, tokens: tuple, wanted: list[int]) -> dict[int, tuple[int, bytes]]:
    """(offset, bytes) of the tokens at the sorted indices `wanted` (lengths already checked)."""
    mm, pos = r.mm, tokens[0]
    out: dict[int, tuple[int, bytes]] = {}
    i = 0
    for j in wanted:
        for _ in repeat(None, j - i):
            pos += 8 + U64(mm, pos)[0]
        i = j
        (n,) = U64(mm, pos)
        out[j] = pos, mm[pos + 8 : pos + 8 + n]
    return out


def _read_int32s(r: Reader, count: int, key: str) -> array:
    r.need(4 * count, f"the elements of {key!r}")
    vals = array("i")
    vals.frombytes(r.mm[r.pos : r.pos + 4 * count])
    if sys.byteorder == "big":
        vals.byteswap()
    r.pos += 4 * count
    return vals


def _check_vocab(r: Reader, metadata: dict, facts: dict) -> None:
    tokens = facts.get("tokens")
    offsets = facts["offsets"]
    if tokens is None:
        return
    n = tokens[1]
    if n == 0 or n > 2**31 - 1:
        raise Malformed(
            f"the vocabulary has {n} tokens (llama.cpp needs 1 to 2^31-1)", offsets["tokenizer.ggml.tokens"]
        )
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key in metadata:
            count = facts.get("counts", {}).get(key, 0)
            if count < n:
                raise Malformed(
                    f"{key!r} has {count} entries for {n} tokens; llama.cpp would read past its end", offsets[key]
                )
    texts = _unique_texts(r, tokens)
    types = facts.get("token_type")
    byte_ids: list[int] = []
    # only tokens marked as byte tokens are read (array.index searches in C)
    i = 0
    while types is not None:
        try:
            i = types.index(_TOKEN_TYPE_BYTE, i, n)
        except ValueError:
            break
        byte_ids.append(i)
        i += 1
    for i, (at, text) in _token_bytes(r, tokens, byte_ids).items():
        if not _BYTE_TOKEN.fullmatch(text):
            shown = bytes(text[:32]).decode("utf-8", errors="replace")
            raise Malformed(
                f"token {i} is marked as a byte token but its text is {shown!r}, not <0xHH> with two uppercase "
                f"hex digits (the only form llama.cpp looks up: without it the byte has no token)",
                at,
            )
    facts["vocab"] = Vocab(n_tokens=n, texts=texts, n_byte_tokens=len(byte_ids))


def _unique_texts(r: Reader, tokens: tuple[int, int, set[bytes], bool]) -> set[bytes]:
    """Every token's text as llama.cpp sees it, checked unique (llama-vocab.cpp:2544 asserts
    id_to_token.size() == token_to_id.size(): a repeated text aborts the load).

    llama.cpp copies each token as a C string (gguf_get_arr_str), so a text ends at its first
    NUL byte, and an empty one is renamed "[EMPTY_<id>]" (llama-vocab.cpp:2510-2513). The walk
    already hashed the raw texts; only a vocabulary with a repeat, an empty token or a NUL
    byte walks again, applying those rules and finding which tokens collide.
    """
    pos, n, texts, nul = tokens
    if len(texts) == n and b"" not in texts and not (nul and b"\0" in b"".join(texts)):
        return texts
    mm = r.mm
    seen: dict[bytes, int] = {}
    for i in range(n):
        (length,) = U64(mm, pos)
        raw = mm[pos + 8 : pos + 8 + length]
        text = raw.split(b"\0", 1)[0] or b"[EMPTY_%d]" % i  # gguf.cpp:1099 hands out c_str()
        j = seen.setdefault(text, i)
        if j != i:
            shown = text[:40].decode("utf-8", errors="replace")
            why = " (llama.cpp reads a token only up to its first NUL byte)" if b"\0" in raw else ""
            raise Malformed(
                f"tokens {j} and {i} have the same text {shown!r}{why}; llama.cpp needs every token text to "
                f"be unique and aborts on a repeat",
                pos,
            )
        pos += 8 + length
    return set(seen)


def _read_tensors(r: Reader, n_tensors: int, alignment: int, size: int) -> tuple[list[TensorInfo], int, int]:
    sizes = GGML_TYPES
    raw = []
    names: set[str] = set()
    for i in range(n_tensors):
        start = r.pos
        name = r.string(f"the name of tensor {i}", MAX_KEY_BYTES)
        if len(name.encode()) >= GGML_MAX_NAME:
            raise Malformed(
                f"tensor {i} name {name[:80]!r} is {len(name.encode())} bytes; llama.cpp allows at most "
                f"{GGML_MAX_NAME - 1}",
                start,
            )
        if name in names:
            raise Malformed(f"duplicate tensor name {name!r} (tensor {i})", start)
        names.add(name)
        at = r.pos
        n_dims = r.u32(f"the dimension count of {name!r}")
        if n_dims > GGML_MAX_DIMS:
            raise Malformed(f"tensor {name!r} has {n_dims} dimensions; at most {GGML_MAX_DIMS} are allowed", at)
        shape = tuple(r.u64(f"dimension {d} of {name!r}") for d in range(n_dims))
        n_elements = 1
        for d in shape:
            n_elements *= d
        if any(d > INT64_MAX for d in shape) or n_elements > INT64_MAX:
            raise Malformed(
                f"tensor {name!r} has shape {list(shape)}, whose element count {n_elements} overflows "
                f"int64 (max {INT64_MAX})",
                at,
            )
        at = r.pos
        gtype = r.u32(f"the type of {name!r}")
        if gtype not in sizes:
            raise Malformed(f"tensor {name!r} has unknown ggml type {gtype}", at)
        tname, blk, blk_bytes = sizes[gtype]
        if shape and shape[0] % blk:
            raise Malformed(
                f"tensor {name!r} of type {tname} has rows of {shape[0]} elements, not a multiple of its "
                f"block size {blk}",
                at,
            )
        nbytes = n_elements // blk * blk_bytes
        at = r.pos
        rel = r.u64(f"the data offset of {name!r}")
        raw.append((name, shape, tname, rel, nbytes, at))
    data_offset = -(-r.pos // alignment) * alignment
    if raw and data_offset > size:
        raise Malformed(
            f"the tensor data should start at byte {data_offset} but the file is only {size} bytes (truncated)", r.pos
        )
    tensors = []
    expected = 0
    for name, shape, tname, rel, nbytes, at in raw:
        if rel % alignment:
            raise Malformed(f"tensor {name!r} data offset {rel} is not a multiple of the alignment {alignment}", at)
        start, end = data_offset + rel, data_offset + rel + nbytes
        if end > size:
            raise Malformed(
                f"tensor {name!r} needs bytes {start} to {end} but the file ends at {size} "
                f"(truncated by {end - size} bytes, or a bad offset)",
                at,
            )
        if rel < expected:
            raise Malformed(
                f"tensor {name!r} at data offset {rel} overlaps the previous tensor, which ends at {expected}", at
            )
        if rel != expected:
            raise Malformed(
                f"tensor {name!r} is at data offset {rel}, expected {expected}: llama.cpp needs tensors "
                f"stored in order, each padded to {alignment} bytes",
                at,
            )
        expected = -(-(rel + nbytes) // alignment) * alignment
        tensors.append(TensorInfo(name=name, shape=shape, ggml_type=tname, offset=start, nbytes=nbytes))
    return tensors, data_offset, sum(t.nbytes for t in tensors)
