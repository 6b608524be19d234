"""Which weights ggml's CPU backend repacks on this machine, and the memory that costs.

On most CPUs ggml copies some quantized weights into interleaved "extra buffer" layouts
for its matrix kernels (llama.cpp `ggml/src/ggml-cpu/repack.cpp`,
`ggml_repack_get_optimal_repack_type`, and `amx/amx.cpp` where AMX is built in and
usable). The copy is anonymous memory. With mmap the file pages it was read from stay
mapped, and resident, inside the range of the file other tensors still use (the loader
unmaps only the ends), so a repacked weight costs its bytes twice in resident memory.

The rules, for the llama.cpp that llama-cpp-python 0.3.36 vendors:

* only 2-D weights used in a matrix product on the CPU (not the token embedding, which
  is a row lookup; a tied output is a second, repacked copy of it), rows a multiple of 8
  on x86 and of 4 on ARM (8 for the K-quants);
* x86 with AVX2: Q4_0, Q4_K, IQ4_NL, MXFP4; with AVX-512 also Q2_K;
* ARM with dot product (or int8 matmul): Q4_0, Q4_K, Q5_K, Q6_K, IQ4_NL, MXFP4, Q8_0;
* an AMX build on a CPU that grants AMX: Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K, IQ4_XS go to
  the AMX buffer first (also a repacked copy), the rest to the repack rules above.

"Features" are the names `llama_print_system_info()` prints for the CPU backend (AVX2,
AVX512, DOTPROD, MATMUL_INT8, NEON, AMX_INT8, REPACK), i.e. what the build was compiled
for. Without the installed build at hand (a profile of another machine), they are
inferred from the CPU's flags, as a native or all-variants build would pick them.
Pure functions; no llama_cpp import.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "AMX_TYPES",
    "EXTRA_BUFFERS_ENV",
    "features_from_cpu_flags",
    "features_from_system_info",
    "repack_rule",
    "repacked_bytes",
]

# "0" turns ggml's extra buffer types (repacking, AMX) off in the engine and the estimate;
# "1" forces them on, even on an AMX build whose trial failed.
EXTRA_BUFFERS_ENV = "LOCALLLM_LLAMA_EXTRA_BUFFERS"

_X86_AVX2 = frozenset({"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"})
_X86_AVX512 = frozenset({"Q2_K"})
_ARM_DOTPROD = frozenset({"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0"})
_K_QUANTS = frozenset({"Q2_K", "Q4_K", "Q5_K", "Q6_K"})  # interleaved by 8 rows on every CPU
AMX_TYPES = frozenset({"Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"})
# AMX kernels need rows of whole tiles: 32 weights for the 32-blocks, 256 for K-quants
_AMX_ROW_ALIGN = {"Q4_0": 32, "Q4_1": 32, "Q8_0": 32}


def features_from_system_info(info: str) -> frozenset[str]:
    """The CPU backend's features from `llama_print_system_info()` ("CPU : AVX2 = 1 | ... |")."""
    out = set()
    for part in info.replace("\n", "|").split("|"):
        if "=" not in part:
            continue
        key, _, value = part.rpartition("=")
        key = key.split(":")[-1].strip()
        if value.strip() not in ("", "0"):
            out.add(key.upper())
    return frozenset(out)


def features_from_cpu_flags(flags: Iterable[str], arch: str | None = None) -> frozenset[str]:
    """The features a native build on a CPU with these /proc/cpuinfo (or sysctl) flags has."""
    f = {x.lower() for x in flags}
    out = {"REPACK"}  # GGML_CPU_REPACK is on by default
    if "avx2" in f:
        out.add("AVX2")
    if "avx512f" in f:
        out.add("AVX512")
    if "amx_int8" in f and "avx512_vnni" in f:
        out.add("AMX_INT8")
    arm = (arch or "").lower() in ("arm64", "aarch64") or "asimd" in f or "neon" in f
    if arm:
        out.add("NEON")
        if "asimddp" in f or "dotprod" in f:
            out.add("DOTPROD")
        if "i8mm" in f:
            out.add("MATMUL_INT8")
    return frozenset(out)


def repack_rule(features: Iterable[str], *, amx_usable: bool = True) -> tuple[frozenset[str], int, frozenset[str]]:
    """(types the repack buffer takes, the row multiple it needs, types the AMX buffer takes)."""
    feats = frozenset(features)
    amx = AMX_TYPES if ("AMX_INT8" in feats and amx_usable) else frozenset()
    if "REPACK" not in feats:
        return frozenset(), 8, amx
    if "NEON" in feats:
        types = _ARM_DOTPROD if ({"DOTPROD", "MATMUL_INT8"} & feats) else frozenset()
        return types, 4, amx
    types = frozenset()
    if "AVX2" in feats:
        types |= _X86_AVX2
    if "AVX512" in feats:
        types |= _X86_AVX512
    return types, 8, amx


def repacked_bytes(
    weights: Iterable[tuple[Any, ...]],
    features: Iterable[str],
    *,
    cpu_blocks: Any,
    tied: bool = False,
    output_on_cpu: bool = True,
    amx_usable: bool = True,
) -> int:
    """Bytes ggml copies into repacked (extra buffer) layouts for the weights kept on the CPU.

    `weights`: (name, ggml type, row length, rows, bytes, block) per 2-D tensor (block: the
    layer index, -1 the token embedding, -2 the output; `localllm.quantmix.TensorInfo`).
    `cpu_blocks`: a container of the layer indices that stay on the CPU. `tied`: the
    output is the token embedding (llama.cpp loads it a second time for the output).
    """
    types, row_multiple, amx = repack_rule(features, amx_usable=amx_usable)
    if not types and not amx:
        return 0
    total = 0
    for _name, ggml_type, row_len, rows, nbytes, block in weights:
        if block == -1:  # a row lookup, never repacked; a tied output is a second copy, as an output
            if not (tied and output_on_cpu):
                continue
        elif block == -2:
            if not output_on_cpu:
                continue
        elif block not in cpu_blocks:
            continue
        t = ggml_type.upper()
        if (
            t in amx
            and row_len % _AMX_ROW_ALIGN.get(t, 256) == 0
            or t in types
            and rows % (8 if t in _K_QUANTS else row_multiple) == 0
        ):
            total += nbytes
    return total
