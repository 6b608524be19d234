"""A seeded GGUF mutator: hostile variants of a valid GGUF file, for the fuzz corpus.

    spec = read_spec("model.gguf")              # parsed once (gguf.GGUFReader)
    m = mutate(spec, seed=7, out_dir=tmp)       # -> Mutant(seed, cls, detail, path)

Every seed picks one entry of `VARIANTS` (seed modulo its length; the list runs
round-robin over the classes, so any run of N consecutive seeds covers N different
variants and every class once per few dozen seeds) and draws that variant's free choices (which tensor,
which byte) from a `random.Random` seeded by the source's digest and the seed: the
same (source, seed) always gives the same bytes. The classes follow issue 12:
hyperparameter edits (`hp.*`), other key/value edits (`kv.*`, `arch.*`), tensor-table
edits (`tensor.*`), tokenizer edits (`tok.*`), hostile chat templates (`tmpl.*`),
header fields and random byte flips (`hdr.*`, `bytes.flip`), and truncations at every
structural boundary (`trunc.*`).

The mutant is written by a small serializer here rather than `gguf.GGUFWriter`, which
refuses most of what a fuzzer wants to write (wrong value types, duplicate keys, bad
offsets). Tensor data is copied from the source (`sparse=False`) or left as a hole
(`sparse=True`: seek and truncate, zeros inside), so mutants of a 100 MB model cost the
size of its header on disk and load in a blink.

The runner (fork server, outcome classes) is `fuzzrun.py` next to this file.
"""

from __future__ import annotations

import copy
import hashlib
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["KV", "Mutant", "Spec", "Tensor", "VARIANTS", "classes", "mutate", "read_spec", "variant_for"]

# GGUF value types (gguf.cpp enum gguf_type)
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {
    U8: "<B",
    I8: "<b",
    U16: "<H",
    I16: "<h",
    U32: "<I",
    I32: "<i",
    F32: "<f",
    BOOL: "<?",
    U64: "<Q",
    I64: "<q",
    F64: "<d",
}
# ggml types used by the tensor edits (ggml.h enum ggml_type)
T_F32, T_F16, T_Q4_0, T_Q4_1, T_Q8_0, T_Q4_K, T_Q6_K, T_BF16 = 0, 1, 2, 3, 8, 12, 14, 30
DEFAULT_ALIGNMENT = 32  # gguf.cpp GGUF_DEFAULT_ALIGNMENT
NAN, INF = float("nan"), float("inf")


@dataclass
class KV:
    key: str
    vtype: int
    value: Any  # int/float/bool, bytes for STR, a list for ARR
    elem: int = -1  # element type of an ARR


@dataclass
class Tensor:
    name: bytes
    dims: list[int]  # ggml order: ne0 (contiguous) first
    ggml_type: int
    offset: int  # relative to the data section
    src_offset: int | None  # absolute offset of its bytes in the source file (None: no data)
    src_nbytes: int


@dataclass
class Spec:
    """A GGUF file as editable values, plus where its tensor data lives in the source."""

    path: Path
    key: str  # digest of the source: seeds the per-mutant generator
    version: int
    kvs: list[KV]
    tensors: list[Tensor]
    alignment: int  # the layout alignment written into the mutant
    data_size: int  # bytes of the source's data section

    def find(self, key: str) -> KV | None:
        return next((kv for kv in self.kvs if kv.key == key), None)

    def get(self, key: str, default: Any = None) -> Any:
        kv = self.find(key)
        return default if kv is None else kv.value

    def set(self, key: str, vtype: int, value: Any, elem: int = -1) -> None:
        kv = self.find(key)
        if kv is None:
            self.kvs.append(KV(key, vtype, value, elem))
        else:
            kv.vtype, kv.value, kv.elem = vtype, value, elem

    def remove(self, key: str) -> bool:
        n = len(self.kvs)
        self.kvs = [kv for kv in self.kvs if kv.key != key]
        return len(self.kvs) != n

    def copy(self) -> Spec:
        """A copy to edit (bytes are immutable, so lists are copied, not their items)."""
        return Spec(
            self.path,
            self.key,
            self.version,
            [
                KV(kv.key, kv.vtype, list(kv.value) if isinstance(kv.value, list) else kv.value, kv.elem)
                for kv in self.kvs
            ],
            [Tensor(t.name, list(t.dims), t.ggml_type, t.offset, t.src_offset, t.src_nbytes) for t in self.tensors],
            self.alignment,
            self.data_size,
        )

    @property
    def arch(self) -> str:
        value = self.get("general.architecture", b"llama")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else "llama"

    def hp(self, name: str) -> str:
        return f"{self.arch}.{name}"

    @property
    def tokens(self) -> list[bytes]:
        return self.get("tokenizer.ggml.tokens", [])


@dataclass(frozen=True)
class Mutant:
    seed: int
    cls: str  # the mutation class, e.g. "hp.block_count"
    detail: str  # what exactly, e.g. "llama.block_count=0 (u32)"
    path: Path


# --- reading ------------------------------------------------------------------------
@lru_cache(maxsize=8)
def _read_spec_cached(path: str, mtime_ns: int, size: int) -> Spec:
    import gguf

    reader = gguf.GGUFReader(path)
    kvs = []
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        t = int(f.types[0])
        if t == STR:
            kvs.append(KV(name, STR, bytes(f.parts[f.data[0]])))
        elif t == ARR:
            elem = int(f.types[1]) if len(f.types) > 1 else U8
            if elem == STR:
                kvs.append(KV(name, ARR, [bytes(f.parts[i]) for i in f.data], STR))
            elif elem == ARR:  # arrays of arrays: no model here has one; keep it empty
                kvs.append(KV(name, ARR, [], U8))
            else:
                kvs.append(KV(name, ARR, [f.parts[i][0].item() for i in f.data], elem))
        else:
            kvs.append(KV(name, t, f.parts[f.data[0]][0].item()))
    tensors = [
        Tensor(
            t.name.encode("utf-8"),
            [int(d) for d in t.shape],
            int(t.tensor_type),
            int(t.data_offset) - int(reader.data_offset),
            int(t.data_offset),
            int(t.n_bytes),
        )
        for t in reader.tensors
    ]
    with open(path, "rb") as fh:
        digest = hashlib.sha256(f"{size}:".encode() + fh.read(1 << 20)).hexdigest()[:16]
    return Spec(Path(path), digest, 3, kvs, tensors, int(reader.alignment), size - int(reader.data_offset))


def read_spec(path: str | Path) -> Spec:
    """The source file as a Spec (parsed once per process and file version; callers get a copy)."""
    st = Path(path).stat()
    return _read_spec_cached(str(path), st.st_mtime_ns, st.st_size).copy()


# --- writing ------------------------------------------------------------------------
def nbytes(t: Tensor) -> int:
    """Bytes a tensor takes per ggml's type table (0 for an unknown type)."""
    import gguf

    try:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(t.ggml_type)]
    except (ValueError, KeyError):
        return 0
    n = size * (t.dims[0] // block) if t.dims else 0
    for d in t.dims[1:]:
        n *= d
    return n


def _pad(n: int, a: int) -> int:
    return n + (-n % a) if a > 0 else n


@dataclass
class _Layout:
    """Where things landed in the serialized header: for truncations and byte flips."""

    kv_spans: list[tuple[int, int]] = field(default_factory=list)
    tensor_spans: list[tuple[int, int]] = field(default_factory=list)
    numeric: list[tuple[int, int]] = field(default_factory=list)  # (offset, size) of counts, types, lengths
    header_end: int = 0  # end of the tensor-info table
    data_start: int = 0
    size: int = 0


class _Buf:
    def __init__(self, layout: _Layout) -> None:
        self.b = bytearray()
        self.layout = layout

    def num(self, fmt: str, v: Any) -> None:
        self.layout.numeric.append((len(self.b), struct.calcsize(fmt)))
        if fmt in ("<B", "<H", "<I", "<Q"):
            v = int(v) & ((1 << (8 * struct.calcsize(fmt))) - 1)  # a fuzzer may write -1 into a u32
        elif fmt in ("<b", "<h", "<i", "<q"):
            bits = 8 * struct.calcsize(fmt)
            v = ((int(v) + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))
        self.b += struct.pack(fmt, v)

    def string(self, s: bytes) -> None:
        self.num("<Q", len(s))
        self.b += s

    def value(self, vtype: int, value: Any, elem: int) -> None:
        if vtype == STR:
            self.string(value if isinstance(value, bytes) else str(value).encode())
        elif vtype == ARR:
            self.num("<I", elem)
            self.num("<Q", len(value))
            if elem == STR:  # lengths not in `numeric`: 49k of them would swamp the byte flips
                pack = struct.Struct("<Q").pack
                self.b += b"".join(pack(len(s)) + s for s in value)
            elif elem in _FMT:
                fmt = _FMT[elem]
                if fmt in ("<f", "<d"):
                    self.b += struct.pack(f"<{len(value)}{fmt[1]}", *value)
                else:
                    for v in value:
                        self.num(fmt, v)
        elif vtype in _FMT:
            self.num(_FMT[vtype], value)
        elif isinstance(value, bytes):  # an unknown type code: the old value's bytes follow
            self.string(value)
        elif isinstance(value, (int, float)):
            self.num("<d" if isinstance(value, float) else "<Q", value)


def serialize(spec: Spec, *, relayout: bool = True) -> tuple[bytes, _Layout, list[tuple[int, int, int]]]:
    """(header bytes up to the data section, layout, [(dst, src, n)] data copies).

    `relayout` recomputes tensor offsets from the (possibly edited) types and shapes, as a
    writer would; without it, offsets stay as the spec has them (a size change then
    disagrees with the table, which is the point of the "unsized" variants).
    """
    lay = _Layout()
    w = _Buf(lay)
    w.b += b"GGUF"
    w.num("<I", spec.version)
    w.num("<Q", len(spec.tensors))
    w.num("<Q", len(spec.kvs))
    for kv in spec.kvs:
        start = len(w.b)
        w.string(kv.key.encode())
        w.num("<I", kv.vtype)
        w.value(kv.vtype, kv.value, kv.elem)
        lay.kv_spans.append((start, len(w.b)))
    align = spec.alignment if spec.alignment > 0 else DEFAULT_ALIGNMENT
    if relayout:
        off = 0
        for t in spec.tensors:
            t.offset = off
            off = _pad(off + nbytes(t), align)
    for t in spec.tensors:
        start = len(w.b)
        w.string(t.name)
        w.num("<I", len(t.dims))
        for d in t.dims:
            w.num("<Q", d)
        w.num("<I", t.ggml_type)
        w.num("<Q", t.offset)
        lay.tensor_spans.append((start, len(w.b)))
    lay.header_end = len(w.b)
    lay.data_start = _pad(len(w.b), align)
    data_end = max((t.offset + nbytes(t) for t in spec.tensors), default=0) if relayout else spec.data_size
    if relayout and data_end > 4 * spec.data_size + (1 << 20):
        data_end = spec.data_size  # a huge declared size is written short, not as terabytes of holes
    lay.size = lay.data_start + max(0, data_end)
    copies = []
    for t in spec.tensors:
        if t.src_offset is None:
            continue
        n = min(t.src_nbytes, nbytes(t) or t.src_nbytes, max(0, lay.size - lay.data_start - t.offset))
        if n > 0 and t.offset < (1 << 62):
            copies.append((lay.data_start + t.offset, t.src_offset, n))
    return bytes(w.b), lay, copies


def write_mutant(
    spec: Spec,
    path: Path,
    *,
    sparse: bool,
    relayout: bool = True,
    post: Callable[[bytearray, _Layout], int | None] | None = None,
) -> Path:
    """Write `spec` to `path`. `post` edits the header bytes in place and may return a
    length to truncate the whole file to."""
    header, lay, copies = serialize(spec, relayout=relayout)
    buf = bytearray(header)
    cut = post(buf, lay) if post is not None else None
    size = lay.size if cut is None else min(cut, lay.size)
    with open(path, "wb") as f:
        f.write(bytes(buf[:size]))
        if size > len(buf):
            f.write(b"\0" * min(lay.data_start - len(buf), size - len(buf)))
        if not sparse and size > lay.data_start:
            with open(spec.path, "rb") as src:
                for dst, s, n in copies:
                    n = min(n, size - dst)
                    if n <= 0:
                        continue
                    src.seek(s)
                    f.seek(dst)
                    f.write(src.read(n))
        f.truncate(size)  # the rest (all of the data when sparse) is a hole of zeros
    return path


# --- the mutations ------------------------------------------------------------------
# A variant edits a Spec in place (rng: its free choices) and returns a description, or
# None when it does not apply to this source (the next variant is tried instead). It may
# set `ctx.relayout = False` or `ctx.post` (a header-bytes patch, see write_mutant).
class _Ctx:
    def __init__(self, spec: Spec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        self.relayout = True
        self.post: Callable[[bytearray, _Layout], int | None] | None = None
        self.notes: list[str] = []  # what `post` chose (offsets), appended to the description


Variant = Callable[[_Ctx], "str | None"]
VARIANTS: list[tuple[str, Variant]] = []


def _variants(cls: str, *makers: Variant) -> None:
    VARIANTS.extend((cls, m) for m in makers)


def _set_hp(name: str, value: Any, vtype: int = U32) -> Variant:
    def edit(c: _Ctx) -> str:
        key = c.spec.hp(name)
        c.spec.set(key, vtype, value)
        return f"{key}={value!r}"

    return edit


def _hp_rel(name: str, how: Callable[[int, random.Random], int], label: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        key = c.spec.hp(name)
        old = c.spec.get(key)
        if not isinstance(old, int):
            return None
        new = how(old, c.rng)
        c.spec.set(key, U32, new)
        return f"{key}={new} ({label}, was {old})"

    return edit


def _non_dividing(n: int, rng: random.Random, lo: int = 2) -> int:
    choices = [k for k in range(lo, max(lo + 1, 2 * n + 3)) if n % k]
    return rng.choice(choices) if choices else n + 1


def _head_non_dividing(c: _Ctx) -> str | None:
    s = c.spec
    kv = s.get(s.hp("attention.head_count_kv"), s.get(s.hp("attention.head_count")))
    if not isinstance(kv, int) or kv < 1:
        return None
    h = kv * c.rng.randint(1, 3) + c.rng.randint(1, kv) if kv > 1 else 3
    if kv > 1 and h % kv == 0:
        h += 1
    s.set(s.hp("attention.head_count"), U32, h)
    return f"head_count={h} with head_count_kv={kv} (not a multiple)"


def _kv_non_dividing(c: _Ctx) -> str | None:
    s = c.spec
    h = s.get(s.hp("attention.head_count"))
    if not isinstance(h, int) or h < 2:
        return None
    kv = _non_dividing(h, c.rng)
    s.set(s.hp("attention.head_count_kv"), U32, kv)
    return f"head_count_kv={kv} with head_count={h} (does not divide it)"


def _alignment(value: int, *, consistent: bool, vtype: int = U32) -> Variant:
    def edit(c: _Ctx) -> str:
        c.spec.set("general.alignment", vtype, value if vtype != STR else str(value).encode())
        if consistent:
            c.spec.alignment = value  # the file really is laid out that way
        else:
            c.relayout = False
        return f"general.alignment={value} ({'laid out so' if consistent else 'layout unchanged'})"

    return edit


_hp = _set_hp
_variants(
    "hp.context_length",
    _hp("context_length", 0),
    _hp("context_length", 1),
    _hp("context_length", 2**31 - 1),
    _hp("context_length", 2**32 - 1),
    _hp("context_length", 2**40, U64),
)
_variants(
    "hp.block_count",
    _hp("block_count", 0),
    _hp("block_count", 2**31 - 1),
    _hp("block_count", 2**32 - 1),
    _hp_rel("block_count", lambda n, r: n + 1, "one more than the layers present"),
    _hp_rel("block_count", lambda n, r: n + r.randint(2, 64), "more than the layers present"),
    _hp_rel("block_count", lambda n, r: max(1, n - 1), "one fewer than the layers present"),
)
_variants(
    "hp.head_count",
    _hp("attention.head_count", 0),
    _head_non_dividing,
    _hp("attention.head_count", 2**31 - 1),
    _hp_rel("attention.head_count", lambda n, r: n * 2, "twice the real count"),
)
_variants(
    "hp.head_count_kv",
    _hp("attention.head_count_kv", 0),
    _kv_non_dividing,
    _hp_rel("attention.head_count_kv", lambda n, r: n + 1, "one more than before"),
    _hp("attention.head_count_kv", 2**32 - 1),
)
_variants(
    "hp.rms_eps",
    *(_hp("attention.layer_norm_rms_epsilon", v, F32) for v in (NAN, -1e-5, INF, -INF, 0.0)),
    _hp("attention.layer_norm_rms_epsilon", NAN, F64),
)
_variants(
    "hp.rope",
    _hp("rope.freq_base", NAN, F32),
    _hp("rope.freq_base", 0.0, F32),
    _hp("rope.freq_base", INF, F32),
    _hp("rope.freq_base", -10000.0, F32),
    _hp("rope.dimension_count", 0),
    _hp("rope.dimension_count", 2**31),
    _hp_rel("rope.dimension_count", lambda n, r: n + 1, "odd"),
    _hp("rope.scaling.factor", NAN, F32),
    _hp("rope.scaling.factor", 0.0, F32),
)
_variants(
    "hp.embedding_length",
    _hp("embedding_length", 0),
    _hp("embedding_length", 2**32 - 1),
    _hp_rel("embedding_length", lambda n, r: n + 1, "one more than the tensors"),
)
_variants("hp.feed_forward_length", _hp("feed_forward_length", 0), _hp("feed_forward_length", 2**32 - 1))
_variants(
    "hp.key_length",
    _hp("attention.key_length", 0),
    _hp("attention.key_length", 2**31),
    _hp("attention.value_length", 0),
)
_variants(
    "hp.vocab_size",
    _hp("vocab_size", 0),
    _hp("vocab_size", 2**32 - 1),
    _hp_rel("vocab_size", lambda n, r: n + 1, "one more than the tokens"),
)
_variants(
    "hp.alignment",
    _alignment(0, consistent=False),
    _alignment(1, consistent=True),
    _alignment(3, consistent=False),
    _alignment(16, consistent=True),
    _alignment(16, consistent=False),
    _alignment(64, consistent=True),
    _alignment(2**31, consistent=False),
    _alignment(32, consistent=False, vtype=STR),
)


# key/value edits that are not hyperparameters
def _kv_remove(key: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        k = key.format(arch=c.spec.arch)
        return f"removed {k}" if c.spec.remove(k) else None

    return edit


def _kv_retype(key: str, vtype: int, value: Any, elem: int = -1) -> Variant:
    def edit(c: _Ctx) -> str | None:
        k = key.format(arch=c.spec.arch)
        if c.spec.find(k) is None:
            return None
        c.spec.set(k, vtype, value, elem)
        return f"{k} written as type {vtype} ({value!r:.40})"

    return edit


def _kv_duplicate(c: _Ctx) -> str:
    kv = copy.deepcopy(c.rng.choice(c.spec.kvs[:8]))
    c.spec.kvs.append(kv)
    return f"{kv.key} appears twice"


def _kv_bad_type(c: _Ctx) -> str:
    kv = c.rng.choice(c.spec.kvs)
    kv.vtype = c.rng.choice([13, 255, 2**31])
    return f"{kv.key} has value type {kv.vtype} (unknown)"


_variants(
    "kv.remove",
    *(
        _kv_remove(k)
        for k in (
            "general.architecture",
            "{arch}.block_count",
            "{arch}.embedding_length",
            "{arch}.attention.head_count",
            "{arch}.context_length",
            "tokenizer.ggml.model",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
        )
    ),
)
_variants(
    "kv.type",
    _kv_retype("{arch}.context_length", F32, 2048.0),
    _kv_retype("{arch}.block_count", STR, b"2"),
    _kv_retype("{arch}.attention.head_count", I64, -4),
    _kv_retype("{arch}.attention.layer_norm_rms_epsilon", U32, 1),
    _kv_retype("general.architecture", U32, 7),
    _kv_retype("tokenizer.ggml.tokens", ARR, [1, 2, 3], I32),
    _kv_retype("tokenizer.ggml.scores", ARR, [b"a", b"b"], STR),
    _kv_retype("tokenizer.ggml.bos_token_id", STR, b"1"),
    _kv_bad_type,
    _kv_duplicate,
)


def _arch(name: str, *, rename_keys: bool) -> Variant:
    def edit(c: _Ctx) -> str | None:
        old = c.spec.arch
        if old == name:
            return None
        if rename_keys:
            for kv in c.spec.kvs:
                if kv.key.startswith(old + "."):
                    kv.key = name + kv.key[len(old) :]
        c.spec.set("general.architecture", STR, name.encode())
        return f"general.architecture={name!r} ({'keys renamed' if rename_keys else 'keys kept'})"

    return edit


_variants(
    "arch.swap",
    _arch("qwen2", rename_keys=True),
    _arch("gemma", rename_keys=True),
    _arch("phi3", rename_keys=True),
    _arch("bert", rename_keys=True),
    _arch("mamba", rename_keys=True),
    _arch("qwen2", rename_keys=False),
    _arch("not-an-arch", rename_keys=True),
    _arch("", rename_keys=True),
)


# --- tensor edits
def _pick(c: _Ctx, want: Callable[[Tensor], bool]) -> Tensor | None:
    ts = [t for t in c.spec.tensors if want(t)]
    return c.rng.choice(ts) if ts else None


def _is_norm(t: Tensor) -> bool:
    return b"norm" in t.name


def _retype(norm: bool, ggml_type: int, *, sized: bool) -> Variant:
    def edit(c: _Ctx) -> str | None:
        t = _pick(c, lambda t: _is_norm(t) == norm and t.ggml_type != ggml_type)
        if t is None:
            return None
        t.ggml_type = ggml_type
        c.relayout = sized
        return f"{t.name.decode()} type {ggml_type} ({'size follows' if sized else 'size left as before'})"

    return edit


def _bad_type(c: _Ctx) -> str | None:
    t = _pick(c, lambda t: True)
    if t is None:
        return None
    t.ggml_type = c.rng.choice([4, 5, 39, 40, 1000, 2**31])  # 4/5 are removed Q4_2/Q4_3
    c.relayout = False
    return f"{t.name.decode()} type {t.ggml_type} (unknown or removed)"


def _remove_tensor(which: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        names = [t.name for t in c.spec.tensors]
        if which == "random":
            name = c.rng.choice(names) if names else None
        elif which == "random-layer":
            layer = [n for n in names if n.startswith(b"blk.")]
            name = c.rng.choice(layer) if layer else None
        else:
            name = which.encode() if which.encode() in names else None
        if name is None:
            return None
        c.spec.tensors = [t for t in c.spec.tensors if t.name != name]
        return f"removed tensor {name.decode()}"

    return edit


def _shape(how: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        t = _pick(c, lambda t: len(t.dims) >= (2 if how == "swap" else 1))
        if t is None:
            return None
        old = list(t.dims)
        i = c.rng.randrange(len(t.dims))
        if how == "plus1":
            t.dims[i] += 1
        elif how == "double":
            t.dims[i] *= 2
        elif how == "zero":
            t.dims[i] = 0
        elif how == "huge":
            t.dims[i] = 2**40
        elif how == "overflow":
            t.dims = [2**32] * 2 + [2**31] + [8]
        elif how == "add-dim":
            t.dims.append(1)
        elif how == "five-dims":
            t.dims = t.dims + [1] * (5 - len(t.dims))
        elif how == "swap":
            t.dims[0], t.dims[1] = t.dims[1], t.dims[0]
        elif how == "half":
            t.dims[-1] = max(1, t.dims[-1] // 2)
        c.relayout = how in ("plus1", "swap", "add-dim", "half", "zero")
        return f"{t.name.decode()} dims {old} -> {t.dims} ({how}{', relaid out' if c.relayout else ''})"

    return edit


def _offset(how: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        s = c.spec
        if len(s.tensors) < 2:
            return None
        serialize(s)  # fill in the real offsets first
        i = c.rng.randrange(1, len(s.tensors))
        t = s.tensors[i]
        old = t.offset
        if how == "plus1":
            t.offset += 1
        elif how == "overlap":
            t.offset = s.tensors[i - 1].offset
        elif how == "past-end":
            t.offset = s.data_size + s.alignment * c.rng.randint(1, 64)
        elif how == "huge":
            t.offset = 2**63 - s.alignment
        elif how == "max":
            t.offset = 2**64 - 1
        elif how == "gap":
            for u in s.tensors[i:]:
                u.offset += s.alignment
        c.relayout = False
        return f"{t.name.decode()} offset {old} -> {t.offset} ({how})"

    return edit


def _name(how: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        ts = c.spec.tensors
        if len(ts) < 2:
            return None
        t = c.rng.choice(ts)
        old = t.name
        if how == "duplicate":
            t.name = c.rng.choice([u.name for u in ts if u is not t])
        elif how == "unknown":
            t.name = b"blk.0.not_a_tensor.weight"
        elif how == "empty":
            t.name = b""
        elif how == "long":
            t.name = b"blk.0." + b"x" * 80
        elif how == "layer-too-high":
            t.name = b"blk.4096.attn_q.weight"
        return f"tensor {old.decode()} renamed {t.name[:40].decode()!r} ({how})"

    return edit


_variants(
    "tensor.norm_type",
    _retype(True, T_F16, sized=True),
    _retype(True, T_F16, sized=False),
    _retype(True, T_Q8_0, sized=True),
    _retype(True, T_Q8_0, sized=False),
    _retype(True, T_BF16, sized=True),
    _retype(True, T_Q4_0, sized=True),
)
_variants(
    "tensor.type",
    _retype(False, T_F16, sized=True),
    _retype(False, T_Q4_K, sized=True),
    _retype(False, T_Q6_K, sized=False),
    _retype(False, T_F32, sized=False),
    _bad_type,
)
_variants(
    "tensor.remove",
    _remove_tensor("output_norm.weight"),
    _remove_tensor("token_embd.weight"),
    _remove_tensor("output.weight"),
    _remove_tensor("random-layer"),
    _remove_tensor("random"),
)
_variants(
    "tensor.shape",
    *(_shape(h) for h in ("plus1", "double", "zero", "huge", "overflow", "add-dim", "five-dims", "swap", "half")),
)
_variants("tensor.offset", *(_offset(h) for h in ("plus1", "overlap", "past-end", "huge", "max", "gap")))
_variants("tensor.name", *(_name(h) for h in ("duplicate", "unknown", "empty", "long", "layer-too-high")))


# --- tokenizer edits
def _is_byte_token(tok: bytes) -> bool:
    return len(tok) == 6 and tok.startswith(b"<0x") and tok.endswith(b">")


def _tok_model(name: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        old = c.spec.get("tokenizer.ggml.model", b"")
        if old == name.encode():
            return None
        c.spec.set("tokenizer.ggml.model", STR, name.encode())
        return f"tokenizer.ggml.model {old.decode()!r} -> {name!r}"

    return edit


def _tok_pre(value: bytes | None) -> Variant:
    def edit(c: _Ctx) -> str:
        if value is None:
            c.spec.remove("tokenizer.ggml.pre")
            return "removed tokenizer.ggml.pre"
        c.spec.set("tokenizer.ggml.pre", STR, value)
        return f"tokenizer.ggml.pre={value.decode()!r}"

    return edit


def _byte_tokens(how: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        s = c.spec
        toks = list(s.tokens)
        idx = [i for i, t in enumerate(toks) if _is_byte_token(t)]
        if not idx:
            return None
        if how == "lower-all":
            for i in idx:
                toks[i] = toks[i][:3] + toks[i][3:5].lower() + b">"
        elif how == "lower-newline":
            if b"<0x0A>" not in toks:
                return None
            idx = [toks.index(b"<0x0A>")]
            toks[idx[0]] = b"<0x0a>"
        elif how == "bad-hex":
            idx = [c.rng.choice(idx)]
            toks[idx[0]] = b"<0xZZ>"
        elif how == "renamed":  # count kept: no byte fallback, shapes still agree
            for i in idx:
                toks[i] = b"[nobyte" + toks[i][3:5] + b"]"
        elif how == "normal-type":
            types = list(s.get("tokenizer.ggml.token_type", []))
            for i in idx:
                if i < len(types):
                    types[i] = 1
            s.set("tokenizer.ggml.token_type", ARR, types, I32)
            return f"the {len(idx)} byte tokens typed NORMAL"
        elif how == "dropped":  # count changes: every per-token array follows
            keep = [i for i in range(len(toks)) if i not in set(idx)]
            for key in ("tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
                kv = s.find(key)
                if kv is not None:
                    kv.value = [kv.value[i] for i in keep if i < len(kv.value)]
            toks = [toks[i] for i in keep]
        s.set("tokenizer.ggml.tokens", ARR, toks, STR)
        return f"byte tokens {how} ({len(idx)} of them)"

    return edit


def _bpe_byte_tokens(c: _Ctx) -> str | None:
    """GPT-2 vocabularies spell bytes as single characters (Ġ, Ċ): rename the newline's."""
    toks = list(c.spec.tokens)
    nl = "Ċ".encode()
    if nl not in toks:
        return None
    toks[toks.index(nl)] = b"[no-newline]"
    c.spec.set("tokenizer.ggml.tokens", ARR, toks, STR)
    return "the BPE newline byte token (\\u010a) renamed"


def _dup_token(how: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        toks = list(c.spec.tokens)
        if len(toks) < 300:
            return None
        normal = [i for i in range(len(toks)) if not _is_byte_token(toks[i]) and i > 5]
        if how == "normal":
            i, j = c.rng.sample(normal, 2)
        elif how == "special":
            i, j = c.rng.randrange(0, 5), c.rng.choice(normal)
        elif how == "byte":
            byte = [k for k in range(len(toks)) if _is_byte_token(toks[k])]
            if not byte:
                return None
            i, j = c.rng.choice(normal), c.rng.choice(byte)
        else:  # empty texts, twice
            i, j = c.rng.sample(normal, 2)
            toks[j] = b""
        toks[i] = toks[j]
        c.spec.set("tokenizer.ggml.tokens", ARR, toks, STR)
        return f"token {i} has the same text as token {j} ({toks[j][:20]!r}, {how})"

    return edit


def _merges(how: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        s = c.spec
        merges = s.get("tokenizer.ggml.merges")
        if merges is None:
            return None
        if how == "removed":
            s.remove("tokenizer.ggml.merges")
        elif how == "half":
            s.set("tokenizer.ggml.merges", ARR, merges[: len(merges) // 2], STR)
        elif how == "empty":
            s.set("tokenizer.ggml.merges", ARR, [], STR)
        elif how == "no-space":
            merges = list(merges)
            merges[c.rng.randrange(len(merges))] = b"nospacehere"
            s.set("tokenizer.ggml.merges", ARR, merges, STR)
        elif how == "unknown-token":
            s.set("tokenizer.ggml.merges", ARR, [b"\xe2\x96\x81zz qq"] + list(merges), STR)
        return f"tokenizer.ggml.merges {how}"

    return edit


def _short_array(key: str, how: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        kv = c.spec.find(key)
        if kv is None or not kv.value:
            return None
        n = {"by-one": len(kv.value) - 1, "half": len(kv.value) // 2, "empty": 0}[how]
        kv.value = kv.value[:n]
        return f"{key} shortened to {n} ({how})"

    return edit


def _special_id(key: str, how: str) -> Variant:
    def edit(c: _Ctx) -> str:
        n = len(c.spec.tokens)
        value = {"n_vocab": n, "past": n + 1000, "u32max": 2**32 - 1, "i32max": 2**31 - 1}.get(how, -1)
        c.spec.set(key, I32 if how == "negative" else U32, value)
        return f"{key}={value} ({how}, vocabulary of {n})"

    return edit


def _token_type_value(c: _Ctx) -> str | None:
    kv = c.spec.find("tokenizer.ggml.token_type")
    if kv is None or not kv.value:
        return None
    i = c.rng.randrange(len(kv.value))
    kv.value = list(kv.value)
    kv.value[i] = c.rng.choice([0, 7, 255, -1, 2**31 - 1])
    return f"token_type[{i}]={kv.value[i]} (not a llama_token_type)"


def _all_control(c: _Ctx) -> str | None:
    kv = c.spec.find("tokenizer.ggml.token_type")
    if kv is None:
        return None
    kv.value = [3] * len(kv.value)
    return "every token typed CONTROL"


def _token_text(how: str) -> Variant:
    def edit(c: _Ctx) -> str | None:
        toks = list(c.spec.tokens)
        if not toks:
            return None
        i = c.rng.randrange(len(toks))
        toks[i] = {"invalid-utf8": b"\xff\xfe\xc3", "nul": b"a\0b", "long": b"x" * 70_000}[how]
        c.spec.set("tokenizer.ggml.tokens", ARR, toks, STR)
        return f"token {i} text {how}"

    return edit


_variants(
    "tok.model",
    *(_tok_model(m) for m in ("none", "no_vocab", "bert", "rwkv", "llama", "gpt2", "t5", "plamo2", "foo", "")),
)
_variants("tok.pre", _tok_pre(b"not-a-pre-tokenizer"), _tok_pre(None), _tok_pre(b"qwen2"), _tok_pre(b""))
_variants(
    "tok.byte_tokens",
    *(_byte_tokens(h) for h in ("lower-all", "lower-newline", "bad-hex", "renamed", "normal-type", "dropped")),
    _bpe_byte_tokens,
)
_variants("tok.duplicate", *(_dup_token(h) for h in ("normal", "special", "byte", "empty")))
_variants("tok.merges", *(_merges(h) for h in ("removed", "half", "empty", "no-space", "unknown-token")))
_variants(
    "tok.array_length",
    _short_array("tokenizer.ggml.token_type", "by-one"),
    _short_array("tokenizer.ggml.token_type", "half"),
    _short_array("tokenizer.ggml.token_type", "empty"),
    _short_array("tokenizer.ggml.scores", "by-one"),
    _short_array("tokenizer.ggml.tokens", "by-one"),
    _short_array("tokenizer.ggml.tokens", "empty"),
)
_variants(
    "tok.special_ids",
    _special_id("tokenizer.ggml.bos_token_id", "n_vocab"),
    _special_id("tokenizer.ggml.eos_token_id", "n_vocab"),
    _special_id("tokenizer.ggml.eos_token_id", "u32max"),
    _special_id("tokenizer.ggml.unknown_token_id", "past"),
    _special_id("tokenizer.ggml.padding_token_id", "i32max"),
    _special_id("tokenizer.ggml.eot_token_id", "n_vocab"),
    _special_id("tokenizer.ggml.bos_token_id", "negative"),
)
_variants("tok.token_type", _token_type_value, _all_control)
_variants("tok.token_text", *(_token_text(h) for h in ("invalid-utf8", "nul", "long")))


# --- chat templates
def _template(text: str | bytes | None, label: str, *, vtype: int = STR) -> Variant:
    def edit(c: _Ctx) -> str:
        if text is None:
            c.spec.set("tokenizer.chat_template", vtype, 7 if vtype != ARR else [b"{{ x }}"], STR)
        else:
            c.spec.set("tokenizer.chat_template", STR, text if isinstance(text, bytes) else text.encode())
        return f"chat_template: {label}"

    return edit


_FOR_HI = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
# Jinja's sandbox refuses range() over 100,000 items, so unbounded work nests loops within it.
_NESTED = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
_variants(
    "tmpl.unbounded",
    _template(_NESTED + _FOR_HI, "nested range(10**5) loops (10**10 steps)"),
    _template("{% for i in range(10**10) %}x{% endfor %}", "range(10**10), over the sandbox's limit"),
    _template(
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "10**10 characters of output",
    ),
    _template("{{ 'a' * 10**9 }}", "'a' * 10**9"),
    _template("{{ ('ab' * 10**5) * 10**5 }}", "('ab' * 10**5) * 10**5"),
    _template(
        "{% for m in messages %}{% if m['content'] == 'hi' %}" + _NESTED + "{% endif %}{{ m['content'] }}{% endfor %}",
        "nested loops only when the content is 'hi'",
    ),
    _template(
        "{% if add_generation_prompt %}" + _NESTED + "{% endif %}" + _FOR_HI,
        "nested loops only with add_generation_prompt",
    ),
    _template(
        "{% if messages|length > 0 and messages[0]['content']|length > 1 %}{{ 'x' * 10**9 }}{% endif %}" + _FOR_HI,
        "huge output only for real content",
    ),
    _template(
        "{% set ns = namespace(s='a') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
        "doubling a string 64 times",
    ),
)
_variants(
    "tmpl.broken",
    _template("", "empty"),
    _template("{% if false %}x{% endif %}", "renders empty"),
    _template("   \n  ", "whitespace only"),
    _template("{% for m in messages %}", "unclosed for"),
    _template("{{ messages[0]['content'] ", "unclosed expression"),
    _template("{% endfor %}", "stray endfor"),
    _template("{{ raise_exception('refused') }}", "raise_exception"),
    _template("{{ messages[5]['content'] }}", "index past the messages"),
    _template("{{ 1 / 0 }}", "division by zero"),
    _template("{{ messages|length // 0 }}", "floor division by zero"),
    _template("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "unbounded macro recursion"),
    _template("{{ '%s' % (1, 2) }}", "bad % formatting"),
    _template("{{ messages[0].content.foo() }}", "call of an undefined method"),
    _template(b"{{ '\xff\xfe' }}" + _FOR_HI.encode(), "invalid UTF-8"),
    _template(None, "written as a u32", vtype=U32),
    _template(None, "written as an array", vtype=ARR),
)
_variants(
    "tmpl.sandbox",
    _template("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__subclasses__ walk"),
    _template("{{ cycler.__init__.__globals__.os.system('true') }}", "cycler globals to os.system"),
    _template("{{ self.__init__.__globals__ }}", "self.__init__.__globals__"),
    _template("{% for m in messages %}{{ m.update({'role': 'x'}) }}{% endfor %}", "mutating a message"),
)


# --- header fields, byte flips, truncations (edits of the serialized bytes)
def _header_field(offset: int, fmt: str, value: Any, label: str) -> Variant:
    def edit(c: _Ctx) -> str:
        def post(buf: bytearray, lay: _Layout) -> None:
            buf[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)

        c.post = post
        return f"header {label}"

    return edit


def _flip(k: int) -> Variant:
    def edit(c: _Ctx) -> str:
        rng = c.rng

        def post(buf: bytearray, lay: _Layout) -> None:
            for _ in range(k):
                if lay.numeric and rng.random() < 0.75:  # mostly counts, types and lengths: the fragile part
                    off, size = rng.choice(lay.numeric)
                    pos = off + rng.randrange(size)
                else:
                    pos = rng.randrange(lay.header_end)
                buf[pos] ^= 1 << rng.randrange(8) if rng.random() < 0.7 else rng.randrange(1, 256)
                c.notes.append(str(pos))

        c.post = post
        return f"{k} byte flip(s) in the header"

    return edit


def _truncate(where: str) -> Variant:
    def edit(c: _Ctx) -> str:
        rng = c.rng

        def post(buf: bytearray, lay: _Layout) -> int:
            if where == "in-header":
                cut = rng.randrange(0, 24)
            elif where == "after-header":
                cut = 24
            elif where in ("in-kv", "kv-boundary"):
                i = rng.randrange(len(lay.kv_spans))
                a, b = lay.kv_spans[i]
                cut = a if where == "kv-boundary" else rng.randrange(a + 1, b)
            elif where in ("in-tensor-info", "tensor-info-boundary"):
                if not lay.tensor_spans:
                    return lay.header_end
                i = rng.randrange(len(lay.tensor_spans))
                a, b = lay.tensor_spans[i]
                cut = a if where == "tensor-info-boundary" else rng.randrange(a + 1, b)
            elif where == "before-data":
                cut = lay.header_end
            elif where == "data-start":
                cut = lay.data_start
            elif where == "in-data":
                cut = rng.randrange(lay.data_start + 1, max(lay.data_start + 2, lay.size))
            else:  # one byte short
                cut = lay.size - 1
            c.notes.append(f"at byte {cut} of {lay.size}")
            return cut

        c.post = post
        return f"truncated {where}"

    return edit


_variants(
    "hdr.field",
    _header_field(0, "4s", b"GGUG", "magic GGUG"),
    _header_field(4, "<I", 1, "version 1"),
    _header_field(4, "<I", 2, "version 2"),
    _header_field(4, "<I", 4, "version 4"),
    _header_field(4, "<I", 2**32 - 1, "version 2^32-1"),
    _header_field(8, "<Q", 0, "n_tensors 0"),
    _header_field(8, "<Q", 2**63, "n_tensors 2^63"),
    _header_field(8, "<Q", 2**64 - 1, "n_tensors 2^64-1"),
    _header_field(16, "<Q", 0, "n_kv 0"),
    _header_field(16, "<Q", 2**64 - 1, "n_kv 2^64-1"),
)


def _count_delta(offset: int, delta: int, label: str) -> Variant:
    def edit(c: _Ctx) -> str:
        def post(buf: bytearray, lay: _Layout) -> None:
            (v,) = struct.unpack_from("<Q", buf, offset)
            struct.pack_into("<Q", buf, offset, (v + delta) % 2**64)

        c.post = post
        return f"header {label}"

    return edit


_variants(
    "hdr.count",
    _count_delta(8, 1, "n_tensors + 1"),
    _count_delta(8, -1, "n_tensors - 1"),
    _count_delta(16, 1, "n_kv + 1"),
    _count_delta(16, -1, "n_kv - 1"),
)
_variants("bytes.flip", *(_flip(k) for k in (1, 1, 2, 2, 4, 4, 8, 16)))
_variants("trunc.header", _truncate("in-header"), _truncate("after-header"))
_variants("trunc.kv", _truncate("in-kv"), _truncate("in-kv"), _truncate("kv-boundary"))
_variants("trunc.tensor_info", _truncate("in-tensor-info"), _truncate("tensor-info-boundary"), _truncate("before-data"))
_variants("trunc.data", _truncate("data-start"), _truncate("in-data"), _truncate("one-short"))


def _identity(c: _Ctx) -> str:
    return "unchanged (the source, rewritten)"


_variants("identity", _identity)


def _interleave(variants: list[tuple[str, Variant]]) -> list[tuple[str, Variant]]:
    """Round-robin over the classes, so any run of consecutive seeds spreads over all of them."""
    by_class: dict[str, list[tuple[str, Variant]]] = {}
    for cls, v in variants:
        by_class.setdefault(cls, []).append((cls, v))
    out: list[tuple[str, Variant]] = []
    for i in range(max(len(vs) for vs in by_class.values())):
        out.extend(vs[i] for vs in by_class.values() if i < len(vs))
    return out


VARIANTS[:] = _interleave(VARIANTS)


def classes() -> list[str]:
    """The mutation classes, in the order they first appear."""
    return list(dict.fromkeys(cls for cls, _ in VARIANTS))


def variant_for(seed: int) -> tuple[str, Variant]:
    return VARIANTS[seed % len(VARIANTS)]


def mutate(source: Spec | str | Path, seed: int, out_dir: str | Path, *, sparse: bool | None = None) -> Mutant:
    """Write the mutant of `source` for `seed` into `out_dir`; deterministic for (source, seed).

    `sparse` leaves the tensor data as zeros (a hole); by default it is used for sources
    over 16 MB.
    """
    base = source if isinstance(source, Spec) else read_spec(source)
    if sparse is None:
        sparse = base.path.stat().st_size > (16 << 20)
    for step in range(len(VARIANTS)):  # a variant that does not apply hands over to the next one
        cls, variant = VARIANTS[(seed + step) % len(VARIANTS)]
        rng = random.Random(f"{base.key}:{seed}:{step}")
        ctx = _Ctx(base.copy(), rng)
        detail = variant(ctx)
        if detail is not None:
            break
    else:  # pragma: no cover - identity always applies
        raise AssertionError("no variant applies")
    path = Path(out_dir) / f"{base.path.stem}-s{seed}.gguf"
    write_mutant(ctx.spec, path, sparse=sparse, relayout=ctx.relayout, post=ctx.post)
    if ctx.notes:
        detail += f" ({', '.join(ctx.notes[:4])})"
    return Mutant(seed, cls, detail, path)
