"""Check a model file before any native loader sees it.

GGUF files come from strangers on the internet, and crafted headers (huge string or
array lengths, wrong array element types, dimension products that overflow, tensor data
outside the file, malformed byte tokens) have caused heap overflows and unbounded
allocations in llama.cpp's loader (CVE-2025-49847 and several fixes since). So the
header is parsed here, in pure Python, with every length checked against the bytes
that are actually left in the file before anything is read or allocated. A well-formed
file then meets the rules llama.cpp's own loader asserts on (localllm.formats.gguf_rules:
hyperparameters, tensor types and shapes, the tokenizer against its vocabulary), with
every token text checked unique and byte tokens in the exact form llama.cpp looks up.
Only a file that passes is handed to llama.cpp.

    validate_model_path(path)   dispatch: .gguf file, ONNX folder, refused formats
    validate_gguf(path)         -> GGUFInfo, or InvalidModelError saying what and where
    refuse_pickle(path)         pickle-based checkpoints are refused, never unpickled

Nothing here imports llama_cpp; the installed library is consulted (as a file, not
loaded) only for an architecture missing from the static list.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import mmap
import os
import re
import struct
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

# ONNX folders are checked by the ONNX runtime's module (graph names, external data, tokenizer)
from localllm.formats.onnx_folder import OnnxFolderInfo, is_onnx_folder, validate_onnx_folder

__all__ = [
    "GGML_TYPES",
    "GGUFArray",
    "GGUFInfo",
    "OnnxFolderInfo",
    "PICKLE_SUFFIXES",
    "SUPPORTED_ARCHITECTURES",
    "TensorInfo",
    "is_supported_architecture",
    "refuse_pickle",
    "validate_gguf",
    "validate_model_path",
    "validate_onnx_folder",
]

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v1 was dropped by llama.cpp; v3 is current (gguf.cpp GGUF_VERSION)
HEADER_BYTES = 24  # magic u32, version u32, tensor count u64, kv count u64

# Sane bounds. Real models have a few dozen keys and at most a few thousand tensors;
# the limits sit far above that but far below what could exhaust memory.
MAX_KV = 65_536
MAX_TENSORS = 1_048_576
MAX_KEY_BYTES = 65_536
MAX_STRING_BYTES = 1 << 30  # llama.cpp gguf.cpp GGUF_MAX_STRING_LENGTH
MAX_ARRAY_ELEMENTS = 1 << 30  # llama.cpp gguf.cpp GGUF_MAX_ARRAY_ELEMENTS
MAX_TOKEN_BYTES = 65_536  # real tokens are tens of bytes; CVE-2025-49847 was an oversized token
GGML_MAX_DIMS = 4  # ggml.h
GGML_MAX_NAME = 64  # ggml.h: tensor names must be shorter than this (NUL included)
INT64_MAX = (1 << 63) - 1
DEFAULT_ALIGNMENT = 32  # gguf.cpp GGUF_DEFAULT_ALIGNMENT
SMALL_ARRAY = 1024  # arrays up to this many elements are kept in GGUFInfo.metadata as tuples

# GGUF value types (gguf.cpp enum gguf_type): name, struct format, size in bytes
_UINT8, _INT8, _UINT16, _INT16, _UINT32, _INT32, _FLOAT32, _BOOL, _STRING, _ARRAY, _UINT64, _INT64, _FLOAT64 = range(13)
_SCALARS = {
    _UINT8: ("uint8", "<B", 1),
    _INT8: ("int8", "<b", 1),
    _UINT16: ("uint16", "<H", 2),
    _INT16: ("int16", "<h", 2),
    _UINT32: ("uint32", "<I", 4),
    _INT32: ("int32", "<i", 4),
    _FLOAT32: ("float32", "<f", 4),
    _BOOL: ("bool", "<?", 1),
    _UINT64: ("uint64", "<Q", 8),
    _INT64: ("int64", "<q", 8),
    _FLOAT64: ("float64", "<d", 8),
}
_TYPE_NAMES = {**{k: v[0] for k, v in _SCALARS.items()}, _STRING: "string", _ARRAY: "array"}

# Element types llama.cpp casts these arrays to (llama-vocab.cpp); a different type
# with the same count would make it read past the array.
_REQUIRED_ARRAY_TYPES = {
    "tokenizer.ggml.tokens": (_STRING,),
    "tokenizer.ggml.scores": (_FLOAT32,),
    "tokenizer.ggml.token_type": (_INT32,),
    "tokenizer.ggml.merges": (_STRING,),
    "tokenizer.ggml.added_tokens": (_STRING,),
    "tokenizer.ggml.precompiled_charsmap": (_UINT8, _INT8),
}
# Keys that must hold a single value of this type when present.
_REQUIRED_SCALAR_TYPES = {
    "general.architecture": _STRING,
    "general.alignment": _UINT32,  # gguf.cpp refuses any other type
    "tokenizer.ggml.model": _STRING,
    "tokenizer.chat_template": _STRING,
}
_TOKEN_TYPE_BYTE = 6  # llama.h LLAMA_TOKEN_TYPE_BYTE
# llama-vocab.cpp:4003 looks byte tokens up as "<0x" + two of "0123456789ABCDEF" + ">": a
# lowercase <0x0a> is never found, and the first newline then throws std::out_of_range
_BYTE_TOKEN = re.compile(rb"<0x[0-9A-F]{2}>")
_U64 = struct.Struct("<Q").unpack_from

# Architectures the llama.cpp vendored by llama-cpp-python 0.3.36 knows (src/llama-arch.cpp,
# LLM_ARCH_NAMES), minus "clip" (vision projectors, not language models). A name missing
# here is looked up in the installed library itself (see is_supported_architecture), and
# a test checks that every name here is in the installed library.
SUPPORTED_ARCHITECTURES = frozenset(
    [
        "llama",
        "llama4",
        "deci",
        "falcon",
        "grok",
        "gpt2",
        "gptj",
        "gptneox",
        "mpt",
        "baichuan",
        "starcoder",
        "refact",
        "bert",
        "modern-bert",
        "nomic-bert",
        "nomic-bert-moe",
        "neo-bert",
        "jina-bert-v2",
        "jina-bert-v3",
        "eurobert",
        "bloom",
        "stablelm",
        "qwen",
        "qwen2",
        "qwen2moe",
        "qwen2vl",
        "qwen3",
        "qwen3moe",
        "qwen3next",
        "qwen3vl",
        "qwen3vlmoe",
        "qwen35",
        "qwen35moe",
        "qwen4exp",
        "phi2",
        "phi3",
        "phimoe",
        "plamo",
        "plamo2",
        "plamo3",
        "codeshell",
        "orion",
        "internlm2",
        "minicpm",
        "minicpm3",
        "gemma",
        "gemma2",
        "gemma3",
        "gemma3n",
        "gemma4",
        "gemma4-assistant",
        "gemma-embedding",
        "starcoder2",
        "mamba",
        "mamba2",
        "maple",
        "jamba",
        "falcon-h1",
        "xverse",
        "command-r",
        "cohere2",
        "cohere2moe",
        "dbrx",
        "olmo",
        "olmo2",
        "olmoe",
        "muse-glimmer",
        "openelm",
        "arctic",
        "deepseek",
        "deepseek2",
        "deepseek2-ocr",
        "deepseek32",
        "deepseek4",
        "chatglm",
        "glm4",
        "glm4moe",
        "glm-dsa",
        "bitnet",
        "t5",
        "t5encoder",
        "jais",
        "jais2",
        "nemotron",
        "nemotron_h",
        "nemotron_h_moe",
        "exaone",
        "exaone4",
        "exaone-moe",
        "rwkv6",
        "rwkv6qwen2",
        "rwkv7",
        "arwkv7",
        "granite",
        "granitemoe",
        "granitehybrid",
        "graniteswitch",
        "granite_swa",
        "chameleon",
        "wavtokenizer-dec",
        "plm",
        "bailingmoe",
        "bailingmoe2",
        "bailingmoe3",
        "dots1",
        "dots3note",
        "arcee",
        "afmoe",
        "laguna",
        "ernie4_5",
        "ernie4_5-moe",
        "hunyuan-moe",
        "hunyuan-dense",
        "hunyuan_vl",
        "hy_v3",
        "hy_v4",
        "smollm3",
        "gpt-oss",
        "lfm2",
        "lfm2moe",
        "dream",
        "smallthinker",
        "llada",
        "llada-moe",
        "seed_oss",
        "grovemoe",
        "apertus",
        "minimax-01",
        "hrm_text",
        "minimax-m2",
        "minimax-m3",
        "cogvlm",
        "rnd1",
        "pangu-embedded",
        "mistral3",
        "eagle3",
        "dflash",
        "mistral4",
        "paddleocr",
        "mimo2",
        "step35",
        "spark2_5",
        "llama-embed",
        "maincoder",
        "kimi-linear",
        "kimi-k3",
        "glm5-next",
        "talkie",
        "mellum",
        "nanbeige",
        "qwen3tts",
        "pockettts",
    ]
)

# ggml type id -> (name, elements per block, bytes per block): ggml's type_traits
# (ggml/src/ggml.c blck_size / type_size), as gguf-py 0.19.0 lists them in
# gguf.constants.GGML_QUANT_SIZES. Inline because importing gguf (and numpy with it) costs
# more than the whole check; tests/test_validate.py holds this table equal to gguf's.
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

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
_ZIP_MAGIC = b"PK\x03\x04"
_ADVICE = "Re-download it, or get the file from a trusted source (the model's official GGUF repository)."


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
        with open(self.path, "rb") as f, _map(f, self.file_size) as mm:
            r = _Reader(mm, self.file_size, str(self.path))
            r.pos = value.offset
            elem = next(k for k, v in _TYPE_NAMES.items() if v == value.element_type)
            return tuple(r.array_values(elem, value.length, key))


# -- dispatch ----------------------------------------------------------------------------


def validate_model_path(path: str | os.PathLike) -> GGUFInfo | OnnxFolderInfo:
    """Check a local model path before loading it.

    Raises:
        InvalidModelError: the path is missing, refused (pickle formats), of an unknown
            kind, or malformed.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise InvalidModelError(f"{p}: no such file or folder.", path=str(p))
    if p.is_dir():
        if is_onnx_folder(p):  # *.onnx at the top or in onnx/, as published exports have it
            return validate_onnx_folder(p)
        weights = sorted(f.name for f in p.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES | {".safetensors"})
        hint = (
            f" It holds {', '.join(weights[:3])}: Transformers weights, which localllm does not run." if weights else ""
        )
        raise InvalidModelError(
            f"{p} is a folder without an ONNX model (*.onnx) in it.{hint} Give a .gguf file or a folder "
            "holding an ONNX export (model.onnx with tokenizer.json).",
            path=str(p),
        )
    suffix = p.suffix.lower()
    refuse_pickle(p)  # by extension, and a renamed pickle or PyTorch zip is refused whatever its name
    if suffix == ".gguf":
        return validate_gguf(p)
    if suffix == ".safetensors":
        raise InvalidModelError(
            f"{p} is a safetensors file: localllm runs GGUF files (llama.cpp) and ONNX folders. Download a GGUF "
            "build of this model, or convert it with llama.cpp's convert_hf_to_gguf.py.",
            path=str(p),
        )
    if suffix == ".onnx":
        return validate_onnx_folder(p)
    with open(p, "rb") as f:
        head = f.read(4)
    if head == GGUF_MAGIC:  # a GGUF file with another name is still a GGUF file
        return validate_gguf(p)
    raise InvalidModelError(
        f"{p}: unknown model format (extension {suffix or 'none'!r}, first bytes {head!r}). localllm loads "
        ".gguf files and ONNX model folders.",
        path=str(p),
    )


def refuse_pickle(path: str | os.PathLike) -> None:
    """Raise InvalidModelError for a pickle-based checkpoint; never unpickles anything.

    Refused by extension (.bin, .pt, .pth, .pkl, .pickle, .ckpt) and by content: a
    pickle stream (protocol 2 or later) or a PyTorch zip archive, whatever the name.
    """
    p = Path(path)
    reason = None
    if p.suffix.lower() in PICKLE_SUFFIXES:
        reason = f"its extension {p.suffix!r} is a PyTorch/pickle checkpoint format"
    elif p.is_file():
        with open(p, "rb") as f:
            head = f.read(4)
        if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
            reason = f"it is a Python pickle (protocol {head[1]})"
        elif head == _ZIP_MAGIC and _zip_holds_pickle(p):
            reason = "it is a PyTorch zip archive holding pickled data"
    if reason:
        raise InvalidModelError(
            f"{p} was refused: {reason}. Loading a pickle can run arbitrary code, so localllm never unpickles "
            "model files. Use a GGUF build of the model (or an ONNX export; safetensors weights can be "
            "converted with llama.cpp's convert_hf_to_gguf.py).",
            path=str(p),
        )


def _zip_holds_pickle(p: Path) -> bool:
    import zipfile  # only for a file that starts like a zip

    try:
        with zipfile.ZipFile(p) as z:  # reads the central directory only
            return any(n.endswith((".pkl", "data/")) or "/data/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return True  # a damaged zip claiming to be a model: refuse rather than guess


# -- GGUF --------------------------------------------------------------------------------


def validate_gguf(path: str | os.PathLike) -> GGUFInfo:
    """Parse and check a GGUF file's header, metadata and tensor table.

    Raises:
        InvalidModelError: with what is wrong, where (byte offset), the numbers, and
            what to do.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        f = open(p, "rb")
    except OSError as exc:
        raise InvalidModelError(f"{p}: cannot read the file ({exc.strerror or exc}).", path=str(p)) from exc
    with f:
        if size < HEADER_BYTES:
            head = f.read(4)
            if not head:
                raise InvalidModelError(f"{p} is empty (0 bytes). {_ADVICE}", path=str(p))
            if head != GGUF_MAGIC[: len(head)]:
                _check_magic(head, p)
            raise InvalidModelError(
                f"{p} is truncated: {size} bytes, shorter than the {HEADER_BYTES}-byte GGUF header. {_ADVICE}",
                path=str(p),
            )
        with _map(f, size) as mm:
            return _parse(mm, size, p)


class _Bad(Exception):
    """Internal: a structural defect at a byte offset."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


def _check_magic(head: bytes, p: Path) -> None:
    if head == GGUF_MAGIC:
        return
    if (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) or head == _ZIP_MAGIC:
        refuse_pickle(p)
    legacy = {b"lmgg": "GGML", b"fmgg": "GGMF", b"tjgg": "GGJT"}.get(head)
    if legacy:
        raise InvalidModelError(
            f"{p} is in the old {legacy} format, which llama.cpp no longer loads. Download the GGUF build of "
            "this model instead.",
            path=str(p),
        )
    raise InvalidModelError(
        f"{p} is not a GGUF file: it starts with {head!r} at byte offset 0, not {GGUF_MAGIC!r}. {_ADVICE}", path=str(p)
    )


class _map:
    """mmap a file read-only (a context manager); bounds are checked by _Reader."""

    def __init__(self, f, size: int):
        self.mm = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)

    def __enter__(self) -> mmap.mmap:
        return self.mm

    def __exit__(self, *exc) -> None:
        self.mm.close()


class _Reader:
    """Bounded little-endian reads from a mapped file; every read checks what is left."""

    def __init__(self, mm, size: int, label: str):
        self.mm, self.size, self.pos, self.label = mm, size, 0, label

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise _Bad(
                f"the file ends while reading {what}: {n} bytes needed at byte offset {self.pos}, "
                f"{self.size - self.pos} left (the file is {self.size} bytes: truncated?)",
                self.pos,
            )

    def scalar(self, vtype: int, what: str):
        _, fmt, n = _SCALARS[vtype]
        self.need(n, what)
        (v,) = struct.unpack_from(fmt, self.mm, self.pos)
        self.pos += n
        return v

    def u32(self, what: str) -> int:
        return self.scalar(_UINT32, what)

    def u64(self, what: str) -> int:
        return self.scalar(_UINT64, what)

    def raw_string(self, what: str, limit: int = MAX_STRING_BYTES) -> bytes:
        start = self.pos
        n = self.u64(f"the length of {what}")
        if n > limit:
            raise _Bad(f"{what} claims a length of {n} bytes, over the limit of {limit}", start)
        if n > self.size - self.pos:
            raise _Bad(
                f"{what} claims a length of {n} bytes but only {self.size - self.pos} bytes are left in the file", start
            )
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
                (n,) = _U64(mm, pos)  # struct.error past the end of the map
                if n > limit:
                    break
                pos += 8 + n
            else:
                if pos <= self.size:
                    self.pos = pos
                    return
        except struct.error:
            pass
        self._skip_strings_checked(count, what, limit, item)
        raise _Bad(f"{what} is malformed", self.pos)  # unreachable: the checked walk raised

    def collect_tokens(self, count: int, what: str, limit: int, item: str) -> tuple[set[bytes], bool]:
        """skip_strings that also gathers the strings' bytes into a set; returns (the set,
        whether some string may hold a NUL byte).

        Fast path: one copy of the span the tokens likely fill, walked as bytes (slicing a
        bytes object is cheaper than slicing the map), for strings under 256 bytes, whose
        length fields then hold exactly 7 zero bytes each: so a zero count over the span
        tells whether any text holds a NUL. Anything else (a longer token, a bad length, a
        span too short) takes the general walk over the map.
        """
        start, left = self.pos, self.size - self.pos
        span = min(left, 24 * count + 64)  # real vocabularies average well under 16 bytes a token
        buf = self.mm[start : start + span]
        got = _gather(buf, count, 255)
        if got is not None:
            texts, end = got
            self.pos = start + end
            return texts, buf.count(b"\0", 0, end) != 7 * count
        mm, pos = self.mm, start
        out: list[bytes] = []
        try:
            for _ in repeat(None, count):
                (n,) = _U64(mm, pos)
                if n > limit:
                    break
                pos += 8
                out.append(mm[pos : pos + n])  # a short slice near the end of the map: caught below
                pos += n
            else:
                if pos <= self.size:
                    self.pos = pos
                    return set(out), True
        except struct.error:
            pass
        self._skip_strings_checked(count, what, limit, item)
        raise _Bad(f"{what} is malformed", self.pos)  # unreachable: the checked walk raised

    def _skip_strings_checked(self, count: int, what: str, limit: int, item: str) -> None:
        mm, size, pos = self.mm, self.size, self.pos
        for i in range(count):
            label = item.format(i=i, what=what)
            if size - pos < 8:
                self.pos = pos
                self.need(8, f"the length of {label}")
            (n,) = _U64(mm, pos)
            if n > limit:
                raise _Bad(f"{label} claims a length of {n} bytes, over the limit of {limit}", pos)
            if n > size - pos - 8:
                raise _Bad(
                    f"{label} claims a length of {n} bytes but only {size - pos - 8} bytes are left in the "
                    f"file (truncated?)",
                    pos,
                )
            pos += 8 + n
        self.pos = pos

    def array_values(self, elem: int, count: int, what: str) -> list:
        if elem == _STRING:
            return [self.string(f"element {i} of {what}") for i in range(count)]
        _, fmt, n = _SCALARS[elem]
        self.need(n * count, f"{count} {_TYPE_NAMES[elem]} elements of {what}")
        vals = list(struct.unpack_from(f"<{count}{fmt[1]}", self.mm, self.pos)) if count else []
        self.pos += n * count
        return vals


def _gather(buf: bytes, count: int, limit: int) -> tuple[set[bytes], int] | None:
    """(the set of `count` length-prefixed strings at the start of `buf`, the offset past them),
    or None when a length exceeds `limit` or the strings run past `buf`."""
    out: list[bytes] = []  # list.append is a specialized call, set.add is not: then set() in C
    pos = 8
    try:
        for _ in repeat(None, count):
            (n,) = _U64(buf, pos - 8)
            if n > limit:
                return None
            end = pos + n
            out.append(buf[pos:end])
            pos = end + 8
    except struct.error:
        return None
    end = pos - 8
    return (set(out), end) if end <= len(buf) else None


def _fail(p: Path, message: str, offset: int | None = None) -> InvalidModelError:
    where = f" (byte offset {offset})" if offset is not None else ""
    return InvalidModelError(f"{p} is not a valid GGUF file: {message}{where}. {_ADVICE}", path=str(p))


def _parse(mm, size: int, p: Path) -> GGUFInfo:
    r = _Reader(mm, size, str(p))
    _check_magic(bytes(mm[:4]), p)
    r.pos = 4
    try:
        version = r.u32("the version")
        if version not in SUPPORTED_VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in SUPPORTED_VERSIONS:
                raise _Bad(
                    f"GGUF version {version} looks like version {swapped} written big-endian; "
                    f"this machine needs a little-endian GGUF file",
                    4,
                )
            if version == 1:
                raise _Bad(
                    "GGUF version 1 is no longer supported by llama.cpp; download a current (v3) build of the model", 4
                )
            raise _Bad(f"unsupported GGUF version {version} (supported: {', '.join(map(str, SUPPORTED_VERSIONS))})", 4)
        n_tensors = r.u64("the tensor count")
        n_kv = r.u64("the key/value count")
        # each key/value needs at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes,
        # each tensor info 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes
        left = size - r.pos
        if n_kv > MAX_KV or n_kv * 14 > left:
            raise _Bad(
                f"absurd key/value count {n_kv} (limit {MAX_KV}; {left} bytes left in the file "
                f"hold at most {left // 14})",
                16,
            )
        if n_tensors > MAX_TENSORS or n_tensors * 24 > left:
            raise _Bad(
                f"absurd tensor count {n_tensors} (limit {MAX_TENSORS}; {left} bytes left in the file "
                f"hold at most {left // 24})",
                8,
            )

        metadata, types, facts = _read_kv(r, n_kv)
        alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        try:
            gguf_rules.check_alignment(alignment)
        except gguf_rules.RuleError as bad:
            raise _Bad(str(bad), facts["offsets"]["general.alignment"]) from None
        arch = metadata.get("general.architecture")
        if arch is None:
            raise _Bad("the key general.architecture is missing", 24)
        _check_vocab(r, metadata, facts)
        tensors, data_offset, tensor_bytes = _read_tensors(r, n_tensors, alignment, size)
    except _Bad as bad:
        raise _fail(p, str(bad), bad.offset) from None
    if not is_supported_architecture(arch):
        raise InvalidModelError(
            f"{p}: architecture {arch!r} is not supported by the installed llama.cpp (llama-cpp-python "
            f"{_llama_cpp_version() or 'unknown version'}). Use a model of a supported architecture "
            f"(llama, qwen2, gemma2, phi3...) or upgrade llama-cpp-python.",
            path=str(p),
        )
    _check_rules(p, arch, metadata, types, facts, tensors)
    return GGUFInfo(
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


def _check_rules(p: Path, arch: str, metadata: dict, types: dict, facts: dict, tensors: list[TensorInfo]) -> None:
    """What llama.cpp's loader asserts on (localllm.formats.gguf_rules), once the structure is sound."""
    vocab = facts.get("vocab")
    try:
        gguf_rules.check_hparams(arch, metadata, {k: _TYPE_NAMES[t] for k, t in types.items()}, facts["elems"])
        gguf_rules.check_tensors(arch, metadata, tensors, vocab.n_tokens if vocab else None)
        gguf_rules.check_tokenizer(arch, metadata, vocab)
    except gguf_rules.RuleError as bad:
        raise _fail(p, str(bad), facts["offsets"].get(bad.key) if bad.key else None) from None


def _read_kv(r: _Reader, n_kv: int) -> tuple[dict, dict, dict]:
    """Read every key/value; big arrays are walked and summarized, vocab arrays kept for checks."""
    metadata: dict[str, Any] = {}
    types: dict[str, int] = {}
    facts: dict[str, Any] = {"offsets": {}, "elems": {}}
    for i in range(n_kv):
        start = r.pos
        key_b = r.raw_string(f"key {i}", MAX_KEY_BYTES)
        if not key_b:
            raise _Bad(f"key {i} is empty", start)
        key = key_b.decode("utf-8", errors="replace")
        if key in metadata:
            raise _Bad(f"duplicate key {key!r} (key {i})", start)
        facts["offsets"][key] = start
        vtype_pos = r.pos
        vtype = r.u32(f"the value type of {key!r}")
        if vtype not in _TYPE_NAMES:
            raise _Bad(f"key {key!r} has unknown value type {vtype} (valid: 0-12)", vtype_pos)
        types[key] = vtype
        want = _REQUIRED_SCALAR_TYPES.get(key)
        if want is not None and vtype != want:
            raise _Bad(f"key {key!r} must be a {_TYPE_NAMES[want]} but is a {_TYPE_NAMES[vtype]}", vtype_pos)
        if vtype == _STRING:
            metadata[key] = r.string(f"the value of {key!r}")
        elif vtype != _ARRAY:
            metadata[key] = r.scalar(vtype, f"the value of {key!r}")
        else:
            metadata[key] = _read_array(r, key, facts)
    return metadata, types, facts


def _read_array(r: _Reader, key: str, facts: dict):
    at = r.pos
    elem = r.u32(f"the element type of {key!r}")
    count = r.u64(f"the length of {key!r}")
    if elem not in _TYPE_NAMES:
        raise _Bad(f"array {key!r} has unknown element type {elem}", at)
    if elem == _ARRAY:
        raise _Bad(f"array {key!r} holds arrays; nested arrays are not allowed in GGUF", at)
    allowed = _REQUIRED_ARRAY_TYPES.get(key)
    if allowed and elem not in allowed:
        want = " or ".join(_TYPE_NAMES[t] for t in allowed)
        raise _Bad(
            f"array {key!r} must hold {want} elements but holds {_TYPE_NAMES[elem]}; llama.cpp would read past its end",
            at,
        )
    facts["elems"][key] = _TYPE_NAMES[elem]
    min_size = 8 if elem == _STRING else _SCALARS[elem][2]
    left = r.size - r.pos
    if count > MAX_ARRAY_ELEMENTS or count * min_size > left:
        raise _Bad(
            f"array {key!r} claims {count} {_TYPE_NAMES[elem]} elements, which need at least "
            f"{count * min_size} bytes; {left} are left in the file",
            at,
        )
    first = r.pos
    if key == "tokenizer.ggml.tokens":
        facts["tokens"] = _read_tokens(r, count, key)
    elif key == "tokenizer.ggml.token_type":
        facts["token_type"] = _read_int32s(r, count, key)
    elif elem == _STRING:
        r.skip_strings(count, repr(key), MAX_STRING_BYTES)
    else:
        r.need(count * min_size, f"the elements of {key!r}")
        r.pos += count * min_size
    facts.setdefault("counts", {})[key] = count
    if count <= SMALL_ARRAY:
        return _small(r, elem, first, count, key)
    return GGUFArray(element_type=_TYPE_NAMES[elem], length=count, offset=first)


def _small(r: _Reader, elem: int, first: int, count: int, key: str) -> tuple:
    """Re-read a short array (tokens/token types of tiny vocabularies) as a tuple."""
    end = r.pos
    r.pos = first
    try:
        return tuple(r.array_values(elem, count, repr(key)))
    finally:
        r.pos = end


def _read_tokens(r: _Reader, count: int, key: str) -> tuple[int, int, set[bytes], bool]:
    """Check every token's length; returns (offset of the first, count, the set of their texts,
    whether one may hold a NUL byte)."""
    first = r.pos
    texts, nul = r.collect_tokens(count, repr(key), MAX_TOKEN_BYTES, item="token {i}")
    return first, count, texts, nul


def _token_bytes(r: _Reader, tokens: tuple, wanted: list[int]) -> dict[int, tuple[int, bytes]]:
    """(offset, bytes) of the tokens at the sorted indices `wanted` (lengths already checked)."""
    mm, pos = r.mm, tokens[0]
    out: dict[int, tuple[int, bytes]] = {}
    i = 0
    for j in wanted:
        for _ in repeat(None, j - i):
            pos += 8 + _U64(mm, pos)[0]
        i = j
        (n,) = _U64(mm, pos)
        out[j] = pos, mm[pos + 8 : pos + 8 + n]
    return out


def _read_int32s(r: _Reader, count: int, key: str) -> array:
    r.need(4 * count, f"the elements of {key!r}")
    vals = array("i")
    vals.frombytes(r.mm[r.pos : r.pos + 4 * count])
    if sys.byteorder == "big":
        vals.byteswap()
    r.pos += 4 * count
    return vals


def _check_vocab(r: _Reader, metadata: dict, facts: dict) -> None:
    tokens = facts.get("tokens")
    offsets = facts["offsets"]
    if tokens is None:
        return
    n = tokens[1]
    if n == 0 or n > 2**31 - 1:
        raise _Bad(f"the vocabulary has {n} tokens (llama.cpp needs 1 to 2^31-1)", offsets["tokenizer.ggml.tokens"])
    for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        if key in metadata:
            count = facts.get("counts", {}).get(key, 0)
            if count < n:
                raise _Bad(
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
            raise _Bad(
                f"token {i} is marked as a byte token but its text is {shown!r}, not <0xHH> with two uppercase "
                f"hex digits (the only form llama.cpp looks up: without it the byte has no token)",
                at,
            )
    facts["vocab"] = gguf_rules.Vocab(n_tokens=n, texts=texts, n_byte_tokens=len(byte_ids))


def _unique_texts(r: _Reader, tokens: tuple[int, int, set[bytes], bool]) -> set[bytes]:
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
        (length,) = _U64(mm, pos)
        raw = mm[pos + 8 : pos + 8 + length]
        text = raw.split(b"\0", 1)[0] or b"[EMPTY_%d]" % i  # gguf.cpp:1099 hands out c_str()
        j = seen.setdefault(text, i)
        if j != i:
            shown = text[:40].decode("utf-8", errors="replace")
            why = " (llama.cpp reads a token only up to its first NUL byte)" if b"\0" in raw else ""
            raise _Bad(
                f"tokens {j} and {i} have the same text {shown!r}{why}; llama.cpp needs every token text to "
                f"be unique and aborts on a repeat",
                pos,
            )
        pos += 8 + length
    return set(seen)


def _read_tensors(r: _Reader, n_tensors: int, alignment: int, size: int) -> tuple[list[TensorInfo], int, int]:
    sizes = GGML_TYPES
    raw = []
    names: set[str] = set()
    for i in range(n_tensors):
        start = r.pos
        name = r.string(f"the name of tensor {i}", MAX_KEY_BYTES)
        if len(name.encode()) >= GGML_MAX_NAME:
            raise _Bad(
                f"tensor {i} name {name[:80]!r} is {len(name.encode())} bytes; llama.cpp allows at most "
                f"{GGML_MAX_NAME - 1}",
                start,
            )
        if name in names:
            raise _Bad(f"duplicate tensor name {name!r} (tensor {i})", start)
        names.add(name)
        at = r.pos
        n_dims = r.u32(f"the dimension count of {name!r}")
        if n_dims > GGML_MAX_DIMS:
            raise _Bad(f"tensor {name!r} has {n_dims} dimensions; at most {GGML_MAX_DIMS} are allowed", at)
        shape = tuple(r.u64(f"dimension {d} of {name!r}") for d in range(n_dims))
        n_elements = 1
        for d in shape:
            n_elements *= d
        if any(d > INT64_MAX for d in shape) or n_elements > INT64_MAX:
            raise _Bad(
                f"tensor {name!r} has shape {list(shape)}, whose element count {n_elements} overflows "
                f"int64 (max {INT64_MAX})",
                at,
            )
        at = r.pos
        gtype = r.u32(f"the type of {name!r}")
        if gtype not in sizes:
            raise _Bad(f"tensor {name!r} has unknown ggml type {gtype}", at)
        tname, blk, blk_bytes = sizes[gtype]
        if shape and shape[0] % blk:
            raise _Bad(
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
        raise _Bad(
            f"the tensor data should start at byte {data_offset} but the file is only {size} bytes (truncated)", r.pos
        )
    tensors = []
    expected = 0
    for name, shape, tname, rel, nbytes, at in raw:
        if rel % alignment:
            raise _Bad(f"tensor {name!r} data offset {rel} is not a multiple of the alignment {alignment}", at)
        start, end = data_offset + rel, data_offset + rel + nbytes
        if end > size:
            raise _Bad(
                f"tensor {name!r} needs bytes {start} to {end} but the file ends at {size} "
                f"(truncated by {end - size} bytes, or a bad offset)",
                at,
            )
        if rel < expected:
            raise _Bad(
                f"tensor {name!r} at data offset {rel} overlaps the previous tensor, which ends at {expected}", at
            )
        if rel != expected:
            raise _Bad(
                f"tensor {name!r} is at data offset {rel}, expected {expected}: llama.cpp needs tensors "
                f"stored in order, each padded to {alignment} bytes",
                at,
            )
        expected = -(-(rel + nbytes) // alignment) * alignment
        tensors.append(TensorInfo(name=name, shape=shape, ggml_type=tname, offset=start, nbytes=nbytes))
    return tensors, data_offset, sum(t.nbytes for t in tensors)


# -- architectures -----------------------------------------------------------------------


def is_supported_architecture(arch: str) -> bool:
    """Whether the installed llama.cpp knows this architecture (no model is loaded)."""
    if arch in SUPPORTED_ARCHITECTURES:
        return True
    return arch.encode() in _library_architectures(arch)


@functools.lru_cache(maxsize=64)
def _library_architectures(arch: str) -> frozenset[bytes]:
    """Look for `arch` as a NUL-terminated string in the installed libllama (read, not loaded).

    Covers a newer llama.cpp than the static list knows. Returns {arch} if found.
    """
    lib = _libllama_path()
    if lib is None or not arch or len(arch) > 64:
        return frozenset()
    needle = b"\0" + arch.encode() + b"\0"
    try:
        with open(lib, "rb") as f, _map(f, lib.stat().st_size) as mm:
            found = mm.find(needle) != -1
    except (OSError, ValueError):
        return frozenset()
    return frozenset({arch.encode()}) if found else frozenset()


def _libllama_path() -> Path | None:
    spec = importlib.util.find_spec("llama_cpp")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in ("libllama.so", "libllama.dylib", "llama.dll"):
        for cand in (root / "lib" / name, root / name):
            if cand.is_file():
                return cand
    return None


def _llama_cpp_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("llama_cpp_python")
    except Exception:  # metadata missing: only used in a message
        return None
