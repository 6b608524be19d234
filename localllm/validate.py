"""Check a model file before any native loader sees it.

GGUF files come from strangers on the internet, and crafted headers (huge string or
array lengths, wrong array element types, dimension products that overflow, tensor data
outside the file, malformed byte tokens) have caused heap overflows and unbounded
allocations in llama.cpp's loader (CVE-2025-49847 and several fixes since). So the
header is parsed here, in pure Python, with every length checked against the bytes
that are actually left in the file before anything is read or allocated. A well-formed
file then meets the rules llama.cpp's own loader asserts on (localllm.formats.gguf_rules:
hyperparameters, tensor types and shapes; gguf_tokenizer: the tokenizer against its
vocabulary), with every token text checked unique and byte tokens in the exact form
llama.cpp looks up. Only a file that passes is handed to llama.cpp. The parser and the
values it returns are in localllm.formats.gguf; this module decides what is refused.

    validate_model_path(path)   dispatch: .gguf file, ONNX folder, refused formats
    validate_gguf(path)         -> GGUFInfo, or InvalidModelError saying what and where
    validate_gguf_header(buf, file_size, label)
                                the same checks on a header prefix (fetched with range requests);
                                NeedMore when the prefix ends before the tensor table does
    validate_gguf_parts(parts)  a split model's parts (buffers or maps) checked as one model
    validate_gguf_split(path)   a split model on disk from its first part, checked as one model
    refuse_pickle(path)         pickle-based checkpoints are refused, never unpickled
    is_supported_architecture   whether the installed llama.cpp knows an architecture

Nothing here imports llama_cpp; the installed library is consulted (as a file, not
loaded) only for an architecture missing from the static list.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import mmap
import os
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from localllm.errors import InvalidModelError
from localllm.formats import gguf, gguf_memo, gguf_rules, gguf_tokenizer
from localllm.formats.gguf import ADVICE, GGML_TYPES, GGUF_MAGIC, HEADER_BYTES, GGUFArray, GGUFInfo, TensorInfo
from localllm.formats.gguf_reader import NeedMore, map_file

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
    "validate_gguf_header",
    "validate_gguf_parts",
    "validate_gguf_split",
    "validate_model_path",
    "validate_onnx_folder",
]

log = logging.getLogger(__name__)

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

# PyTorch/pickle checkpoint formats: refused by extension, never unpickled
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
_ZIP_MAGIC = b"PK\x03\x04"


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
        return validate_gguf_split(p) if gguf.SPLIT_NAME.match(p.name) else validate_gguf(p)
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
    with ExitStack() as stack:
        try:
            f = stack.enter_context(open(p, "rb"))
            st = os.fstat(f.fileno())  # the file opened, whatever the path points at later
        except OSError as exc:
            raise InvalidModelError(f"{p}: cannot read the file ({exc.strerror or exc}).", path=str(p)) from exc
        known = gguf_memo.recall(p, st)
        if known is not None:  # this very file passed these rules before
            return known
        size = st.st_size
        if size < HEADER_BYTES:
            head = f.read(4)
            if not head:
                raise InvalidModelError(f"{p} is empty (0 bytes). {ADVICE}", path=str(p))
            if head != GGUF_MAGIC[: len(head)]:
                _check_magic(head, p)
            raise InvalidModelError(
                f"{p} is truncated: {size} bytes, shorter than the {HEADER_BYTES}-byte GGUF header. {ADVICE}",
                path=str(p),
            )
        mm = stack.enter_context(map_file(f, size))
        _check_magic(bytes(mm[:4]), p)
        info, layout = gguf.parse(mm, size, p)
        _check_architecture(info, p)
        _check_rules(p, info, layout)
        gguf_memo.remember(info, st)
        return info


def validate_gguf_header(buf: bytes, file_size: int, label: str, *, part: bool = False) -> GGUFInfo:
    """validate_gguf's checks on the first `len(buf)` bytes of a GGUF file of `file_size` bytes.

    `label` (a URL, or repo/file) names the file in messages. `part`: a later part of a split
    model (its tensors are checked with the whole model's, by validate_gguf_parts).

    Raises:
        InvalidModelError: as validate_gguf.
        NeedMore: `buf` ends before the tensor-info section does; fetch up to its offset.
    """
    info, layout = _parse_prefix(buf, file_size, label, part=part)
    if not part:
        _check_architecture(info, Path(label))
        _check_rules(Path(label), info, layout)
    return info


def _parse_prefix(buf: bytes, file_size: int, label: str, *, part: bool) -> tuple[GGUFInfo, gguf.Layout]:
    p = Path(label)
    if file_size == 0:
        raise InvalidModelError(f"{label} is empty (0 bytes). {ADVICE}", path=label)
    head = bytes(buf[:4])
    if len(head) < 4 and file_size >= 4:
        raise NeedMore(4)
    if head != GGUF_MAGIC[: len(head)] or len(head) == 4:
        _check_magic(head, p)
    if file_size < HEADER_BYTES:
        raise InvalidModelError(
            f"{label} is truncated: {file_size} bytes, shorter than the {HEADER_BYTES}-byte GGUF header. {ADVICE}",
            path=label,
        )
    return gguf.parse(buf, file_size, p, avail=len(buf), part=part)


def validate_gguf_parts(parts: Sequence[tuple[bytes | mmap.mmap, int, str]]) -> GGUFInfo:
    """A split model's parts, each (its header bytes or map, its file size, its label), checked as
    one model: every part's structure, split.no/split.count/split.tensors.count as llama.cpp's
    loader wants them, then the first part's hyperparameters and tokenizer against all tensors.
    Returns the first part's GGUFInfo with every part's tensors and the summed sizes.

    Raises:
        InvalidModelError: what is wrong and in which part.
        NeedMore: a part's bytes end before its tensor table does (a prefix).
    """
    parsed = []
    for i, (buf, size, label) in enumerate(parts):
        if isinstance(buf, bytes):
            parsed.append(_parse_prefix(buf, size, label, part=i > 0))
        else:
            _check_magic(bytes(buf[:4]), Path(label))
            parsed.append(gguf.parse(buf, size, Path(label), part=i > 0))
    first, layout = parsed[0]
    label = parts[0][2]
    p = Path(label)
    _check_architecture(first, p)
    n = len(parts)
    total = sum(info.n_tensors for info, _ in parsed)
    for i, (info, _) in enumerate(parsed):
        where = parts[i][2]
        no, count = info.metadata.get(gguf.SPLIT_NO), info.metadata.get(gguf.SPLIT_COUNT)
        if n > 1 and (no != i or count != n):
            raise gguf.malformed(
                Path(where),
                f"it says it is part {no} of {count} ({gguf.SPLIT_NO}, {gguf.SPLIT_COUNT}); expected "
                f"part {i} of {n}: llama.cpp refuses a split whose parts disagree",
            )
    want = first.metadata.get(gguf.SPLIT_TENSORS_COUNT, total if n == 1 else None)
    if want != total:
        raise gguf.malformed(
            p,
            f"{gguf.SPLIT_TENSORS_COUNT} is {want} but the {n} parts hold {total} tensors; llama.cpp would look "
            "for tensors that are not there",
        )
    tensors = tuple(t for info, _ in parsed for t in info.tensors)
    seen: set[str] = set()
    for t in tensors:
        if t.name in seen:
            raise gguf.malformed(p, f"the tensor {t.name!r} is in more than one part of the split")
        seen.add(t.name)
    merged = dataclasses.replace(
        first,
        tensors=tensors,
        tensor_bytes=sum(info.tensor_bytes for info, _ in parsed),
        file_size=sum(info.file_size for info, _ in parsed),
    )
    _check_rules(p, merged, layout)
    return merged


def validate_gguf_split(path: str | os.PathLike) -> GGUFInfo:
    """A GGUF model on disk that may be split (NAME-00001-of-0000N.gguf): its parts side by side,
    checked as one model (validate_gguf_parts). A file whose header does not say it is split is
    checked by validate_gguf; a part other than the first is refused, naming the first.

    Raises:
        InvalidModelError: a part is missing or bad, or the parts disagree.
    """
    p = Path(path)
    m = gguf.SPLIT_NAME.match(p.name)
    if m is None or int(m["count"]) <= 1:
        return validate_gguf(p)
    no, count = int(m["no"]), int(m["count"])
    first = p.with_name(gguf.split_name(m["prefix"], 1, count))
    if no != 1:
        raise InvalidModelError(
            f"{p} is part {no} of {count} of a split model; load its first part, {first.name}, which finds "
            "the others next to it.",
            path=str(p),
        )
    names = [p.with_name(gguf.split_name(m["prefix"], i, count)) for i in range(1, count + 1)]
    missing = [q.name for q in names if not q.is_file()]
    if missing:
        raise InvalidModelError(
            f"{p} is part 1 of a model split in {count} parts, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} missing from {p.parent}; llama.cpp needs every part side by "
            "side. Download the missing parts.",
            path=str(p),
        )
    with ExitStack() as stack:
        parts = []
        for q in names:
            size = q.stat().st_size
            if size < HEADER_BYTES:
                return validate_gguf(q)  # its message says what is wrong with that part
            f = stack.enter_context(open(q, "rb"))
            parts.append((stack.enter_context(map_file(f, size)), size, str(q)))
        return dataclasses.replace(validate_gguf_parts(parts), path=p)


def _check_architecture(info: GGUFInfo, p: Path) -> None:
    if not is_supported_architecture(info.architecture):
        raise InvalidModelError(
            f"{p}: architecture {info.architecture!r} is not supported by the installed llama.cpp "
            f"(llama-cpp-python {_llama_cpp_version() or 'unknown version'}). Use a model of a supported "
            f"architecture (llama, qwen2, gemma2, phi3...) or upgrade llama-cpp-python.",
            path=str(p),
        )


def _check_magic(head: bytes, p: Path) -> None:
    """Refuse what the first bytes show is not a GGUF file: a pickle, an older format, anything else."""
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
        f"{p} is not a GGUF file: it starts with {head!r} at byte offset 0, not {GGUF_MAGIC!r}. {ADVICE}", path=str(p)
    )


def _check_rules(p: Path, info: GGUFInfo, layout: gguf.Layout) -> None:
    """What llama.cpp's loader asserts on (localllm.formats.gguf_rules), once the structure is sound."""
    arch, metadata, vocab = info.architecture, info.metadata, layout.vocab
    try:
        gguf_rules.check_hparams(arch, metadata, layout.types, layout.elems)
        gguf_rules.check_tensors(arch, metadata, info.tensors, vocab.n_tokens if vocab else None)
        gguf_tokenizer.check_tokenizer(arch, metadata, vocab)
    except gguf_rules.RuleError as bad:
        raise gguf.malformed(p, str(bad), layout.offsets.get(bad.key) if bad.key else None) from None


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
        with open(lib, "rb") as f, map_file(f, lib.stat().st_size) as mm:
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
