"""llama.cpp against ONNX Runtime on the same model shape, on this CPU: what decides the faster runtime.

Builds (once, cached under benchmarks/.bench/runtimes/) a random-weight model of a real shape
in both formats:

- GGUF: F16 written by localllm.synthetic, quantized by llama.cpp to each --gguf quant
  (Q4_K_M: the K-quant kernels; Q4_0: the 32-blocks, repacked to Q4_0x8 on x86);
- ONNX: the fp32 decoder of localllm.testing (with --attention gqa, the fused
  GroupQueryAttention that onnxruntime-genai's builder writes), its MatMul weights then
  converted here to 4-bit MatMulNBits (block 32, symmetric, no zero points; the embedding
  stays fp32, the output projection is quantized as the builder does) at each
  --accuracy level: 0 computes in fp32 (weights dequantized), 4 in int8 (the builder's
  CPU default, where ONNX Runtime's AVX2-VNNI / AVX-512-VNNI kernels apply).

The weights of the two formats are drawn separately (same shape, not the same numbers):
decode speed depends on the shapes and types, not the values. Then each ONNX variant is
compared with each GGUF one by `localllm.bench_runtimes.compare_runtimes` (what
`localllm bench --runtimes` runs): fresh processes, alternating, same threads and context.
Nothing is kept in the calibration file.

    python benchmarks/bench_runtimes.py --quick            # SmolLM2-135M shape, 2 runs each
    python benchmarks/bench_runtimes.py --shape qwen2.5-0.5b --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".bench" / "runtimes"
BLOCK = 32  # MatMulNBits block size: what onnxruntime-genai's builder uses for int4
_ALIGN = 4096


def build_gguf(shape: str, quant: str) -> Path:
    from localllm.runtimes.llamacpp import install_log_handler
    from localllm.synthetic import synthetic_gguf

    install_log_handler()
    return synthetic_gguf(CACHE, shape, quant, keep_f16=True, say=lambda s: print(s, file=sys.stderr))


def build_onnx_fp32(shape: str, attention: str) -> Path:
    from localllm.testing import write_onnx_folder

    folder = CACHE / f"{shape}-onnx-fp32-{attention}"
    if not (folder / "onnx" / "model.onnx").is_file():
        print(f"writing a random-weight {shape} ONNX decoder (fp32) to {folder} ...", file=sys.stderr)
        write_onnx_folder(folder, shape, seed=0, context_length=4096, attention=attention)
    return folder


def quantize_int4(src: Path, accuracy_level: int) -> Path:
    """A copy of the fp32 folder whose MatMul weights are 4-bit MatMulNBits nodes."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dst = _int4_folder(src, accuracy_level)
    if (dst / "onnx" / "model.onnx").is_file():
        return dst
    print(f"quantizing {src.name} to 4-bit MatMulNBits (accuracy_level {accuracy_level}) ...", file=sys.stderr)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.onnx", "*.onnx_data"))
    model = onnx.load(str(src / "onnx" / "model.onnx"), load_external_data=False)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    data_in = src / "onnx" / "model.onnx_data"
    out_name = "model.onnx_data"
    matmul_b = {n.input[1] for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits}

    def array(t: TensorProto) -> np.ndarray:
        if t.data_location != TensorProto.EXTERNAL:
            return numpy_helper.to_array(t)
        meta = {e.key: e.value for e in t.external_data}
        dtype = helper.tensor_dtype_to_np_dtype(t.data_type)
        return np.memmap(data_in, dtype=dtype, mode="r", offset=int(meta["offset"]), shape=tuple(t.dims))

    new_inits: list[TensorProto] = []
    with open(tmp / "onnx" / out_name, "wb") as fh:

        def external(name: str, a: np.ndarray) -> None:
            a = np.ascontiguousarray(a)
            fh.write(b"\0" * ((-fh.tell()) % _ALIGN))
            offset = fh.tell()
            fh.write(a.tobytes())
            t = TensorProto(name=name, dims=list(a.shape), data_type=helper.np_dtype_to_tensor_dtype(a.dtype))
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", out_name), ("offset", str(offset)), ("length", str(a.nbytes))):
                e = t.external_data.add()
                e.key, e.value = key, value
            new_inits.append(t)

        for t in graph.initializer:
            if t.name in matmul_b:
                packed, scales = _int4_blocks(np.asarray(array(t), dtype=np.float32))
                external(t.name + "_q4", packed)
                external(t.name + "_scales", scales)
            elif t.data_location == TensorProto.EXTERNAL:
                external(t.name, np.asarray(array(t)))
            else:
                new_inits.append(t)
    nodes = []
    for n in graph.node:
        if n.op_type == "MatMul" and n.input[1] in matmul_b:
            k, nn = inits[n.input[1]].dims
            nodes.append(
                helper.make_node(
                    "MatMulNBits",
                    [n.input[0], n.input[1] + "_q4", n.input[1] + "_scales"],
                    list(n.output),
                    name=n.name,
                    domain="com.microsoft",
                    K=int(k),
                    N=int(nn),
                    bits=4,
                    block_size=BLOCK,
                    accuracy_level=accuracy_level,
                )
            )
        else:
            nodes.append(n)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(new_inits)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.save_model(model, str(tmp / "onnx" / "model.onnx"))
    os.replace(tmp, dst)
    return dst


def _int4_folder(fp32: Path, accuracy_level: int) -> Path:
    return fp32.with_name(fp32.name.replace("-fp32-", f"-int4-acc{accuracy_level}-"))


def _int4_blocks(w):
    """(packed uint8 [N, K/32, 16], scales float32 [N * K/32]) of a MatMul weight w [K, N]:
    symmetric 4-bit per block of 32 along K, stored with the default zero point 8, two values
    per byte (the even one in the low nibble)."""
    import numpy as np

    k, n = w.shape
    if k % BLOCK:
        raise ValueError(f"K={k} is not a multiple of {BLOCK}")
    blocks = np.ascontiguousarray(w.T).reshape(n, k // BLOCK, BLOCK)
    scale = np.abs(blocks).max(axis=-1) / 7.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(blocks / scale[..., None]) + 8, 0, 15).astype(np.uint8)
    packed = q[..., 0::2] | (q[..., 1::2] << 4)
    return packed, scale.astype(np.float32).reshape(-1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="smollm2-135m", help="a localllm.testing.SHAPES name")
    ap.add_argument("--gguf", default="Q4_K_M,Q4_0", help="GGUF quants to compare (comma-separated)")
    ap.add_argument("--accuracy", default="4,0", help="MatMulNBits accuracy levels to compare (comma-separated)")
    ap.add_argument("--attention", default="gqa", choices=("gqa", "standard"))
    ap.add_argument("--threads", type=int, default=None, help="default: the plan's (physical cores)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--runs", type=int, default=3, help="runs of each runtime per pair (alternating)")
    ap.add_argument("--quick", action="store_true", help="SmolLM2-135M shape, Q4_K_M vs int4 acc 4, 2 runs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.shape, args.gguf, args.accuracy, args.runs = "smollm2-135m", "Q4_K_M", "4", 2

    from localllm.bench_runtimes import compare_runtimes
    from localllm.hardware.detect import probe
    from localllm.resolve import resolve

    hw = probe()
    ggufs = {q: build_gguf(args.shape, q) for q in args.gguf.split(",")}
    levels = [int(a) for a in args.accuracy.split(",")]
    fp32 = CACHE / f"{args.shape}-onnx-fp32-{args.attention}"
    if not all(_int4_folder(fp32, a).joinpath("onnx", "model.onnx").is_file() for a in levels):
        fp32 = build_onnx_fp32(args.shape, args.attention)  # only while a quantized folder is missing
    onnxs = {a: quantize_int4(fp32, a) for a in levels}
    rows = []
    for acc, folder in onnxs.items():
        for quant, gguf in ggufs.items():
            g, o = resolve(gguf, context=args.ctx), resolve(folder, context=args.ctx)
            assert g.plan is not None and o.plan is not None
            t0 = time.perf_counter()
            c = compare_runtimes(
                (gguf, g.plan.variant),
                (folder, o.plan.variant),
                n_prompt=args.prompt,
                n_gen=args.gen,
                context=args.ctx,
                threads=args.threads,
                rounds=args.runs,
                hardware=hw,
            )
            rows.append(
                {
                    "gguf": quant,
                    "onnx": f"int4 acc{acc}",
                    "llama_decode": [round(r.decode_tps, 1) for r in c.llama.result.runs],
                    "onnx_decode": [round(r.decode_tps, 1) for r in c.onnx.result.runs],
                    "llama_prompt": round(c.llama.result.median("prompt_tps") or 0, 1),
                    "onnx_prompt": round(c.onnx.result.median("prompt_tps") or 0, 1),
                    "llama_rss_mib": round(c.llama.result.peak_rss / 2**20),
                    "onnx_rss_mib": round(c.onnx.result.peak_rss / 2**20),
                    "llama_weights_mib": round(c.llama.weight_bytes / 2**20),
                    "onnx_weights_mib": round(c.onnx.weight_bytes / 2**20),
                    "ratio": round(c.ratio or 0, 3),
                    "threads": c.llama.result.placement["n_threads"],
                    "load_average": c.load_average,
                    "seconds": round(time.perf_counter() - t0),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"shape": args.shape, "cpu_flags": list(hw.cpu.flags), "rows": rows}, indent=2))
        return 0
    print(f"{args.shape}, {rows[0]['threads']} threads, n_ctx {args.ctx}, {args.runs} runs each (alternating)")
    print(f"CPU flags: {' '.join(hw.cpu.flags)}")
    print(f"{'llama.cpp':10s} {'ONNX':12s} {'llama tok/s':>22s} {'ONNX tok/s':>22s} {'ONNX/llama':>10s} {'load':>6s}")
    for r in rows:
        ld = "/".join(f"{x:.1f}" for x in r["llama_decode"])
        od = "/".join(f"{x:.1f}" for x in r["onnx_decode"])
        print(f"{r['gguf']:10s} {r['onnx']:12s} {ld:>22s} {od:>22s} {r['ratio']:>10.2f} {r['load_average']!s:>6s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
