"""How much memory a variant needs at a context, where it sits, and how fast it may decode.

Pure arithmetic on catalog values. The numbers follow llama.cpp's allocations:

* weights: the file's tensor bytes; the token embedding stays on the host, repeating
  layers are offloaded from the last one backwards, the output layer goes to the GPU
  last (n_gpu_layers = n_layer + 1); tied embeddings are duplicated for the GPU output.
* KV cache: 2 · n_layer · n_ctx · n_head_kv · head_dim · bytes(type), with sliding-window
  layers holding only their window when the runtime asks for it (swa_full = False).
* compute buffers: ggml's graph allocator reuses memory, so the peak is near the
  largest intermediate (logits, attention scores or the feed-forward activation) plus
  the residual stream. A GPU buffer is allocated whole up front, so its worst case
  counts; host buffers are plain memory whose pages become resident only when written,
  and localllm's runtime asks llama.cpp for the last token's logits only, so on the host
  the n_vocab x n_ubatch logits reservation never becomes resident (one row does).
* runtime overhead: named constants below, with their source.
* n_seq sequences decoded together (batch work): llama.cpp (n_seq_max = n_seq, a KV cache
  of n_ctx * n_seq cells, one stream per sequence) holds exactly n_seq times one sequence's
  KV cache and one f32 logits row per sequence in its output buffer; its compute buffer is
  reserved for the n_ubatch-token prompt graph and does not grow with n_seq (measured with
  llama-cpp-python 0.3.36: SmolLM2 at 2048 tokens per sequence, CPU compute buffer
  102.51 MiB at n_seq 1, 4 and 16; KV 45, 180, 720 MiB; output buffer 0.19 MiB x n_seq).

Calibrated against measured peak RSS (VmHWM, memory-mapped weights included) by
benchmarks/estimator_accuracy.py: every case within 10 % or 100 MiB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from localllm.catalog import Family, Variant
from localllm.placement import KVType
from localllm.quantmix import FTYPE_DEFAULT, facts, quantized_tensors
from localllm.repack import repacked_bytes
from localllm.units import MIB

__all__ = [
    "BANDWIDTH_EFFICIENCY",
    "CPU_THREAD_BANDWIDTH_GBS",
    "DeviceMemory",
    "HOST_RUNTIME_OVERHEAD",
    "KV_BYTES_PER_ELEMENT",
    "MemoryEstimate",
    "ONNX_HOST_OVERHEAD",
    "ONNX_KV_COPIES",
    "THREAD_DECODE_FRACTION",
    "compute_buffer_bytes",
    "decode_tokens_per_second",
    "estimate",
    "estimate_onnx",
    "kv_cache_bytes",
    "onnx_kv_type",
    "repacked_host_bytes",
    "weight_split",
]


# Bytes per cached element: f16 = 2; q8_0 and q4_0 store 32 values in 34 and 18 bytes
# (ggml-common.h block_q8_0 / block_q4_0). f32 for ONNX exports that keep float caches.
KV_BYTES_PER_ELEMENT: dict[KVType, float] = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "f32": 4.0}

# llama.cpp pads the KV cache length to a multiple of 256 (flash attention's padding; the
# smaller non-FA padding is covered by it).
KV_PAD = 256

# llama_context_default_params() has swa_full = true, and llama-cpp-python 0.3.36 keeps it
# unless told otherwise (checked: llama_cpp.llama_context_default_params().swa_full).
SWA_FULL_DEFAULT = True

# Host memory the process holds besides weights, KV, compute buffers and vocabulary: the
# Python interpreter with localllm, numpy and the llama.cpp/ggml libraries, thread
# stacks, allocator slack. Measured peak RSS minus weights and KV was 64-72 MiB for the
# SmolLM2/Qwen2.5/Llama-3.2 shapes here (benchmarks/estimator_accuracy.py); the rest
# is a margin for the application's own objects, so the estimate errs high.
HOST_RUNTIME_OVERHEAD = 96 * MIB

# llama.cpp's vocabulary tables (token text, scores, attributes, the text-to-id map) and
# our per-token caches: the measured base grew ~16 MiB from a 49k to a 152k vocabulary.
VOCAB_BYTES_PER_TOKEN = 160

# Device memory a CUDA/ROCm process takes before any tensor: the context and the cuBLAS
# workspace, 250-400 MiB on recent drivers as nvidia-smi shows for a llama.cpp process.
GPU_RUNTIME_OVERHEAD = {
    "cuda": 320 * MIB,
    "rocm": 320 * MIB,
    "vulkan": 160 * MIB,
    "sycl": 320 * MIB,
    "metal": 0,
    "rpc": 0,  # a llama.cpp RPC worker: its own process (planner.workers keeps a margin there)
}  # Metal shares the process's own memory: counted on the host

# Fraction of peak memory bandwidth llama.cpp's decode loop reaches; Apple Silicon and
# CUDA token-generation benchmarks in llama.cpp discussion #4167 and its CUDA counterpart
# land at 60-80 %. Issue 7 replaces this with measured numbers.
BANDWIDTH_EFFICIENCY = 0.7

# Weight bytes one CPU thread streams through llama.cpp's quantized dot products per second
# of its CPU time: 5.4-6.6 GB/s for Q4_K_M and Q8_0 Llama/Qwen shapes on this project's
# Xeon (AVX-512, weight repacking off), i.e. compute-bound well below the memory bus.
# CPU decode speed is the smaller of this times the threads and the bus's share above.
CPU_THREAD_BANDWIDTH_GBS = 6.0
# ...and as a share of what one thread reads with numpy (localllm.hardware.bandwidth's per-thread
# figure, 14.8 GB/s on that machine): used when this machine's bandwidth was measured, so
# a faster or slower core scales the figure.
THREAD_DECODE_FRACTION = 0.4
# Unquantized weights need no dequantizing: one thread streamed F16 30 % faster than the
# quantized types on that machine (7.6 vs 5.4-6.6 GB/s; benchmarks/estimator_accuracy.py).
UNQUANTIZED_THREAD_SPEEDUP = 1.3
_UNQUANTIZED = ("F16", "BF16", "F32")

# bits per weight of ggml types (block bytes * 8 / block size), for splitting a file
_BPW = {
    "F32": 32.0,
    "F16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.5625,
    "Q5_1": 6.0,
    "Q5_K": 5.5,
    "Q5_0": 5.5,
    "Q4_K": 4.5,
    "Q4_0": 4.5,
    "IQ4_NL": 4.5,
    "Q3_K": 3.4375,
    "Q2_K": 2.625,
}
_DEFAULT_TYPE = {
    "Q2_K": "Q2_K",
    "Q3_K_M": "Q3_K",
    "Q4_0": "Q4_0",
    "Q4_K_M": "Q4_K",
    "Q5_K_M": "Q5_K",
    "Q6_K": "Q6_K",
    "Q8_0": "Q8_0",
    "F16": "F16",
}
_FALLBACK = {"Q2_K": "IQ4_NL", "Q3_K": "IQ4_NL", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


@dataclass(frozen=True)
class DeviceMemory:
    """Bytes one device holds for a model."""

    device: str  # "cpu" or "gpu0", "gpu1", ...
    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    overhead: int = 0
    n_layers: int = 0  # repeating layers placed here
    # weights ggml's CPU backend copies into repacked layouts, resident on top of the mapped
    # file pages they were read from (localllm.repack); 0 where nothing is repacked
    repacked: int = 0
    # what a measured load of this very file added to (or took from) the estimate (the planner
    # sets it from calibration.LoadRecord); 0 for a pure estimate
    measured: int = 0

    @property
    def total(self) -> int:
        return self.weights + self.repacked + self.kv_cache + self.compute + self.overhead + self.measured


@dataclass(frozen=True)
class MemoryEstimate:
    n_ctx: int  # per sequence
    n_gpu_layers: int  # 0..n_layer+1 (n_layer + 1: the output layer too)
    kv_type: KVType
    flash_attn: bool
    devices: tuple[DeviceMemory, ...]  # "cpu" first
    n_seq: int = 1  # sequences decoded together, each with n_ctx tokens of cache

    @property
    def total(self) -> int:
        return sum(d.total for d in self.devices)

    def device(self, name: str) -> DeviceMemory:
        return next((d for d in self.devices if d.device == name), DeviceMemory(name))

    @property
    def host(self) -> DeviceMemory:
        return self.device("cpu")


# -- pieces ---------------------------------------------------------------------------------


def padded_ctx(n_ctx: int) -> int:
    return -(-n_ctx // KV_PAD) * KV_PAD


def kv_cache_bytes(
    family: Family,
    n_ctx: int,
    kv_type: KVType = "f16",
    *,
    layers: range | None = None,
    swa_full: bool = SWA_FULL_DEFAULT,
    n_ubatch: int = 512,
) -> int:
    """K and V cache bytes for `layers` (all by default) at a context of `n_ctx` tokens."""
    try:
        per = KV_BYTES_PER_ELEMENT[kv_type]
    except KeyError:
        raise ValueError(f"unknown KV cache type {kv_type!r}; use one of {', '.join(KV_BYTES_PER_ELEMENT)}") from None
    ctx = padded_ctx(n_ctx)
    layers = layers if layers is not None else range(max(0, family.n_layer))
    n_sliding = 0 if swa_full else _sliding_in(family, layers)
    swa_cells = min(ctx, padded_ctx((family.sliding_window or 0) + n_ubatch))  # llama.cpp iswa cache size
    per_cell = 2 * family.n_head_kv * family.head_dim * per
    # summed per layer kind, not per layer: a header's block_count can be anything
    total = (len(layers) - n_sliding) * (ctx * per_cell) + n_sliding * (swa_cells * per_cell)
    return int(total)


def _sliding_in(family: Family, layers: range) -> int:
    """How many of `layers` are sliding-window layers (Family.is_sliding_layer), in O(1)."""
    if not family.sliding_window or not layers:
        return 0
    p = family.sliding_window_pattern or 1
    if p == 1:  # every layer slides
        return len(layers)
    if layers.step < 0:
        layers = layers[::-1]
    first, step, n = layers.start, layers.step, len(layers)
    # layer i is global when i % p == p - 1, i.e. when p divides i + 1
    if step == 1 and first >= 0:
        return n - ((first + n) // p - first // p)
    # another stride (no caller uses one): one period of residues, at most p steps
    period = p // math.gcd(step, p)
    global_per_period = sum(1 for k in range(period) if (first + k * step) % p == p - 1)
    full, rest = divmod(n, period)
    n_global = full * global_per_period + sum(1 for k in range(rest) if (first + k * step) % p == p - 1)
    return n - n_global


def compute_buffer_bytes(
    family: Family,
    *,
    n_ctx: int,
    n_ubatch: int = 512,
    flash_attn: bool = False,
    logits: bool = True,
    layers: bool = True,
    resident: bool = False,
    n_seq: int = 1,
) -> int:
    """Peak scratch memory of the compute graph on one device (f32 activations).

    `logits`: the output layer runs here (n_vocab x n_ubatch scores for the worst-case
    batch llama.cpp reserves); `layers`: some repeating layers run here. `resident`: count
    what becomes resident on the host (one row of logits: localllm asks for the last
    token's only) rather than what llama.cpp reserves (a GPU allocates all of it). `n_seq`:
    sequences decoded together, one resident logits row each (the reserve does not grow:
    llama.cpp sizes it for the n_ubatch-token prompt graph).
    """
    f32 = 4
    parts = [0]
    if logits:
        parts.append(family.n_vocab * (min(max(1, n_seq), n_ubatch) if resident else n_ubatch) * f32)
    if layers:
        if not flash_attn:  # the scores, softmaxed in place: n_head x n_kv x n_ubatch (llama.cpp's
            # reserve for SmolLM2's shape at n_ctx 8192 was 166 MiB: one copy, not two)
            parts.append(family.n_head * padded_ctx(n_ctx) * n_ubatch * f32)
        ff = family.n_ff or 4 * family.n_embd
        parts.append((2 if family.ffn_gated else 1) * ff * n_ubatch * f32)
    residual = 3 * family.n_embd * n_ubatch * f32  # input, residual and normed copies
    return max(parts) + residual


def weight_split(variant: Variant) -> tuple[int, int, int]:
    """(token embedding, one repeating layer, output layer) bytes of a variant's file.

    From the quant's tensor types when the quant is a known llama.cpp mix (output in
    Q6_K/Q8_0, embedding in the base type with K-quant fallbacks); otherwise by
    parameter share. Tied embeddings report the output as the duplicate llama.cpp makes
    for the GPU (0 while the output stays on the host).
    """
    f = variant.family
    size = variant.size
    embd_params = f.embedding_params
    base = _DEFAULT_TYPE.get(variant.quant.upper())
    if base is None:  # unknown mix (a local file): split by parameter share
        share = size / max(1, f.n_params)
        embd = int(embd_params * share)
        out = embd
    else:
        if base == "F16":
            out_type = embd_type = "F16"
        else:
            out_type = "Q8_0" if f.arch == "falcon" or f.n_embd % 256 else ("Q8_0" if base == "Q8_0" else "Q6_K")
            embd_type = base
            if f.n_embd % 256 and embd_type in _FALLBACK:
                embd_type = _FALLBACK[embd_type]
            if f.tied_embeddings:
                embd_type = out_type
        embd = int(embd_params * _BPW[embd_type] / 8)
        out = int(embd_params * _BPW[out_type] / 8) if not f.tied_embeddings else embd
    in_file = embd + (0 if f.tied_embeddings else out)
    # metadata (a few MB) is spread over the layers; a family without layers has none to spread over
    layer = max(0, size - in_file) // f.n_layer if f.n_layer > 0 else 0
    return embd, layer, out


# -- the estimate ---------------------------------------------------------------------------


def estimate(
    variant: Variant,
    *,
    n_ctx: int,
    n_gpu_layers: int = 0,
    kv_type: KVType = "f16",
    flash_attn: bool = False,
    n_ubatch: int = 512,
    gpu_shares: tuple[float, ...] = (1.0,),
    gpu_api: str | None = None,
    swa_full: bool = SWA_FULL_DEFAULT,
    repack_features: frozenset[str] = frozenset(),
    amx_usable: bool = True,
    n_seq: int = 1,
) -> MemoryEstimate:
    """Bytes per device for `variant` at `n_ctx` (per sequence) with `n_gpu_layers` offloaded.

    `gpu_shares`: one weight per GPU (llama.cpp's tensor_split); layers are given to the
    GPUs in order, in proportion. n_gpu_layers = n_layer + 1 puts the output layer on the
    last GPU too. `repack_features`: the llama.cpp CPU backend's features where it may
    repack weights (localllm.repack; empty: repacking off); `amx_usable`: an AMX build's
    AMX buffer works here. `gpu_api`: the GPUs' compute API (cuda, rocm, metal...), for the
    runtime's own device memory. `n_seq`: sequences decoded together (batch work), each
    with `n_ctx` tokens of KV cache and a row of logits.
    """
    f = variant.family
    L = f.n_layer
    n_seq = max(1, int(n_seq))
    ngl = max(0, min(n_gpu_layers, L + 1))
    n_gpu_repeating = min(ngl, L)
    output_on_gpu = ngl > L
    embd, layer_bytes, out_bytes = weight_split(variant)

    first_gpu_layer = L - n_gpu_repeating
    cpu_layers = range(0, first_gpu_layer)
    # share the offloaded layers out by tensor_split, in order
    gpus: list[DeviceMemory] = []
    assigned = _apportion(n_gpu_repeating, gpu_shares) if n_gpu_repeating or output_on_gpu else []
    start = first_gpu_layer
    overhead = GPU_RUNTIME_OVERHEAD.get(gpu_api or "cuda", GPU_RUNTIME_OVERHEAD["cuda"])
    last_with_layers = max((i for i, n in enumerate(assigned) if n), default=len(assigned) - 1)
    for i, n in enumerate(assigned):
        layers = range(start, start + n)
        start += n
        has_out = output_on_gpu and i == last_with_layers
        if not n and not has_out:
            continue
        gpus.append(
            DeviceMemory(
                device=f"gpu{i}",
                weights=n * layer_bytes + (out_bytes if has_out else 0),
                kv_cache=n_seq * kv_cache_bytes(f, n_ctx, kv_type, layers=layers, swa_full=swa_full, n_ubatch=n_ubatch),
                compute=compute_buffer_bytes(
                    f, n_ctx=n_ctx, n_ubatch=n_ubatch, flash_attn=flash_attn, logits=has_out, layers=n > 0
                ),
                overhead=overhead,
                n_layers=n,
            )
        )
    host_out = 0 if output_on_gpu or f.tied_embeddings else out_bytes
    cpu = DeviceMemory(
        device="cpu",
        weights=embd + len(cpu_layers) * layer_bytes + host_out,
        kv_cache=n_seq * kv_cache_bytes(f, n_ctx, kv_type, layers=cpu_layers, swa_full=swa_full, n_ubatch=n_ubatch),
        compute=compute_buffer_bytes(
            f,
            n_ctx=n_ctx,
            n_ubatch=n_ubatch,
            flash_attn=flash_attn,
            logits=not output_on_gpu,
            layers=len(cpu_layers) > 0,
            resident=True,
            n_seq=n_seq,
        ),
        # output buffer: one row of f32 logits per sequence (llama.cpp "CPU output buffer")
        overhead=HOST_RUNTIME_OVERHEAD + f.n_vocab * (4 * n_seq + VOCAB_BYTES_PER_TOKEN),
        n_layers=len(cpu_layers),
        repacked=repacked_host_bytes(
            variant, cpu_layers, output_on_cpu=not output_on_gpu, features=repack_features, amx_usable=amx_usable
        ),
    )
    return MemoryEstimate(
        n_ctx=n_ctx, n_gpu_layers=ngl, kv_type=kv_type, flash_attn=flash_attn, devices=(cpu, *gpus), n_seq=n_seq
    )


def repacked_host_bytes(
    variant: Variant, cpu_layers: range, *, output_on_cpu: bool, features: frozenset[str], amx_usable: bool = True
) -> int:
    """Bytes of `variant`'s CPU-side weights that ggml repacks (localllm.repack), from the
    file's own tensor table when known, else from its quant's llama.cpp mix."""
    if not features:
        return 0
    weights = variant.weights or _mix_weights(variant.family, variant.quant.upper())
    return repacked_bytes(
        weights,
        features,
        cpu_blocks=cpu_layers,
        tied=variant.family.tied_embeddings,
        output_on_cpu=output_on_cpu,
        amx_usable=amx_usable,
    )


@lru_cache(maxsize=256)
def _mix_weights(family: Family, quant: str) -> tuple:
    if quant not in FTYPE_DEFAULT:  # a local file of unknown mix whose tensors were not read
        return ()
    return tuple(quantized_tensors(facts(family), quant))


def _apportion(n: int, shares: tuple[float, ...]) -> list[int]:
    """Split n layers by weights, largest remainders first (llama.cpp rounds similarly)."""
    total = sum(shares) or 1.0
    raw = [n * s / total for s in shares]
    out = [int(r) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: raw[i] - out[i], reverse=True)[: n - sum(out)]:
        out[i] += 1
    return out


def decode_tokens_per_second(
    variant: Variant,
    est: MemoryEstimate,
    *,
    cpu_bandwidth_gbs: float | None,
    gpu_bandwidth_gbs: tuple[float | None, ...] = (),
    cpu_threads: int | None = None,
    cpu_thread_bandwidth_gbs: float | None = None,
) -> tuple[float | None, str]:
    """Predicted decode speed: bandwidth / bytes read per token, per device, summed in time.

    Each token reads every weight but the embedding (one row) and, on average, half of a
    full KV cache. Returns (tokens/s or None, the basis in words).
    """
    f = variant.family
    embd, layer_bytes, out_bytes = weight_split(variant)
    seconds = 0.0
    parts = []
    for dev in est.devices:
        label = dev.device
        if dev.device == "cpu":
            bw = cpu_bandwidth_gbs
            if cpu_threads:  # few threads cannot pull the whole bus
                per_thread = (
                    cpu_thread_bandwidth_gbs * THREAD_DECODE_FRACTION
                    if cpu_thread_bandwidth_gbs
                    else CPU_THREAD_BANDWIDTH_GBS
                )
                if variant.quant.upper() in _UNQUANTIZED:
                    per_thread *= UNQUANTIZED_THREAD_SPEEDUP
                cap = cpu_threads * per_thread / BANDWIDTH_EFFICIENCY  # already a decode rate: undo the share
                if not bw or cap < bw:
                    bw = cap
                    label = f"{cpu_threads} thread(s) x {per_thread:.1f} GB/s decode each (cpu)"
            out = out_bytes if (est.n_gpu_layers <= f.n_layer) else 0
            read = dev.n_layers * layer_bytes + out + dev.kv_cache // 2
        else:
            idx = int(dev.device[3:])
            bw = gpu_bandwidth_gbs[idx] if idx < len(gpu_bandwidth_gbs) else None
            read = dev.weights + dev.kv_cache // 2
        if read <= 0:
            continue
        if not bw:
            return None, f"memory bandwidth of {dev.device} unknown"
        seconds += read / (bw * 1e9 * BANDWIDTH_EFFICIENCY)
        parts.append(f"{read / 1e9:.2f} GB at " + (label if label != dev.device else f"{bw:.4g} GB/s ({label})"))
    if seconds <= 0:
        return None, "nothing to read"
    tps = 1.0 / seconds
    basis = f"{BANDWIDTH_EFFICIENCY:.0%} of memory bandwidth / bytes read per token: " + " + ".join(parts)
    return tps, basis


# -- ONNX Runtime --------------------------------------------------------------------------

# localllm's ONNX engine binds each step's `present.*` outputs as the next step's
# `past_key_values.*` inputs (runtimes/onnx.py): during a step the old cache (n tokens) and
# the new one (n + chunk) are both alive, so the peak is two caches, not one.
ONNX_KV_COPIES = 2

# Host memory of a process running ONNX Runtime besides weights, KV and activations: the
# llama.cpp figure (Python, localllm, numpy) plus onnxruntime's shared library, its arena
# bookkeeping and the `tokenizers` vocabulary. onnxruntime's CPU wheel maps about 20-30 MB
# of code; 64 MiB more errs high until benchmarks/estimator_accuracy.py measures it.
ONNX_HOST_OVERHEAD = HOST_RUNTIME_OVERHEAD + 64 * MIB


def onnx_kv_type(variant: Variant) -> KVType:
    """KV-cache type of a published ONNX export: "f16" for fp16 graphs (onnx-community's
    model_fp16 / model_q4f16), "f32" otherwise (model.onnx, int8, q4 and the genai CPU int4
    exports keep float32 caches)."""
    q = variant.quant.upper()
    return "f16" if ("F16" in q or "FP16" in q) else "f32"


def estimate_onnx(
    variant: Variant,
    *,
    n_ctx: int,
    on_gpu: bool = False,
    kv_type: KVType | None = None,
    n_batch: int = 512,
    gpu_api: str | None = "cuda",
    kv_bytes_per_token: int | None = None,
    n_seq: int = 1,
) -> MemoryEstimate:
    """Bytes per device for an ONNX export run by ONNX Runtime: all on one GPU or all on the CPU.

    ONNX Runtime has no partial offload: with a GPU provider every initializer and the KV
    cache live on the GPU; with the CPU provider in RAM. Weights are the files' bytes
    (`variant.size`: the .onnx plus its external data); the KV cache is
    2 · n_layer · n_ctx · n_head_kv · head_dim · bytes(kv_type), ONNX_KV_COPIES times, or
    `kv_bytes_per_token` · n_ctx when the folder's graph was read (OnnxFolderInfo). Activations:
    the prompt is fed n_batch tokens at a time and the exports return logits for each
    (n_vocab x n_batch f32, on the host where the engine binds them), plus the attention
    scores and feed-forward activations of one layer. `n_seq`: rows of the batch dimension
    (batch work), each with `n_ctx` tokens of cache: KV caches of shape [n_seq, ...], and
    at least one row of logits per sequence.
    """
    f = variant.family
    n_seq = max(1, int(n_seq))
    kv_type = kv_type or onnx_kv_type(variant)
    if kv_type not in ("f16", "f32"):
        raise ValueError(f"ONNX KV caches are f16 or f32 as exported, got {kv_type!r}")
    per_token = kv_bytes_per_token or int(2 * f.n_layer * f.n_head_kv * f.head_dim * KV_BYTES_PER_ELEMENT[kv_type])
    kv = ONNX_KV_COPIES * per_token * n_ctx * n_seq
    logits = f.n_vocab * max(n_batch, n_seq) * 4
    layer_compute = compute_buffer_bytes(f, n_ctx=n_ctx, n_ubatch=n_batch, flash_attn=False, logits=False)
    host_overhead = ONNX_HOST_OVERHEAD + f.n_vocab * VOCAB_BYTES_PER_TOKEN
    if on_gpu:
        gpu = DeviceMemory(
            device="gpu0",
            weights=variant.size,
            kv_cache=kv,
            compute=layer_compute + logits,
            overhead=GPU_RUNTIME_OVERHEAD.get(gpu_api or "cuda", GPU_RUNTIME_OVERHEAD["cuda"]),
            n_layers=f.n_layer,
        )
        cpu = DeviceMemory(device="cpu", compute=logits, overhead=host_overhead)
        return MemoryEstimate(
            n_ctx=n_ctx, n_gpu_layers=f.n_layer + 1, kv_type=kv_type, flash_attn=False, devices=(cpu, gpu), n_seq=n_seq
        )
    cpu = DeviceMemory(
        device="cpu",
        weights=variant.size,
        kv_cache=kv,
        compute=layer_compute + logits,
        overhead=host_overhead,
        n_layers=f.n_layer,
    )
    return MemoryEstimate(n_ctx=n_ctx, n_gpu_layers=0, kv_type=kv_type, flash_attn=False, devices=(cpu,), n_seq=n_seq)
