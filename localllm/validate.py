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
    refuse_pickle(path)         pickle-based checkpoints are refused, never unpickled
    is_supported_architecture   whether the installed llama.cpp knows an architecture

Nothing here imports llama_cpp; the installed library is consulted (as a file, not
loaded) only for an architecture missing from the static list.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from contextlib import ExitStack
from pathlib import Path

from localllm.errors import InvalidModelError
from localllm.formats import gguf, gguf_rules, gguf_tokenizer
from localllm.formats.gguf import ADVICE, GGML_TYPES, GGUF_MAGIC, HEADER_BYTES, GGUFArray, GGUFInfo, TensorInfo
from localllm.formats.gguf_reader import map_file

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
    with ExitStack() as stack:
        try:
            size = p.stat().st_size
            f = stack.enter_context(open(p, "rb"))
        except OSError as exc:
            raise InvalidModelError(f"{p}: cannot read the file ({exc.strerror or exc}).", path=str(p)) from exc
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
        if not is_supported_architecture(info.architecture):
            raise InvalidModelError(
                f"{p}: architecture {info.architecture!r} is not supported by the installed llama.cpp "
                f"(llama-cpp-python {_llama_cpp_version() or 'unknown version'}). Use a model of a supported "
                f"architecture (llama, qwen2, gemma2, phi3...) or upgrade llama-cpp-python.",
                path=str(p),
            )
        _check_rules(p, info, layout)
        return info


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
