"""Random-weight ONNX decoder folders for tests and benchmarks, built with `onnx.helper`.

The folder has the layout of a published ONNX LLM export (onnx-community / optimum):

    config.json  generation_config.json  tokenizer.json  tokenizer_config.json
    genai_config.json (optional, the onnxruntime-genai description)
    onnx/model.onnx + onnx/model.onnx_data (external weights)

The decoder is Qwen2/Llama-shaped: token embedding, `n_layer` blocks of RMSNorm ->
grouped-query attention with rotary positions and a real KV cache
(`past_key_values.{i}.key/value` in, `present.{i}.key/value` out) -> RMSNorm -> SwiGLU
MLP, a final RMSNorm and an output projection. Inputs: `input_ids`, `attention_mask`,
`position_ids`. `ReferenceDecoder` runs the same weights in numpy (one sequence, or several
with `forward_batch`, each its own cache), so tests can hold
ONNX Runtime's logits against it.

The tokenizer is a byte-level BPE (the GPT-2 byte-to-unicode alphabet, like Qwen2.5
and Llama 3) trained with `tokenizers` on a small word list, with ChatML specials.

Shapes are localllm.synthetic's `Shape` / `SHAPES`, the same the GGUF builder takes.
`write_onnx_folder` writes a folder, `reference_decoder` gives its numpy twin;
`build_tokenizer`, `make_weights` and `build_decoder_graph` are its parts (tools/train_starter.py
exports trained weights through `build_decoder_graph`).

Imports numpy, onnx and tokenizers only when called.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from localllm.chat_template import CHATML_FALLBACK
from localllm.synthetic import SHAPES, WORDS, Shape

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from onnx import ModelProto
    from tokenizers import Tokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "ReferenceDecoder",
    "build_decoder_graph",
    "build_tokenizer",
    "make_weights",
    "reference_decoder",
    "write_onnx_folder",
]

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
_OPSET = 17  # ReduceMean still takes `axes` as an attribute; LayerNormalization exists
_ALIGN = 4096  # external-data offsets on page boundaries, so ONNX Runtime can map them
_NEG = -1e9  # additive mask value; finite so a fully masked row cannot give NaN


def build_tokenizer(vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE `tokenizers.Tokenizer` with ChatML specials, trained on a word list."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))]
    corpus += ["Hello, world! How are you?", "The answer is 42.", "User: hi\nAssistant: hello"]
    tok.train_from_iterator(corpus, trainer)
    return tok


def make_weights(
    shape: Shape, *, seed: int = 0, scale: float = 0.5, silent: Sequence[int] = ()
) -> dict[str, np.ndarray]:
    """Random float32 weights, named as the ONNX initializers are.

    `scale` sets the spread (larger: greedy output depends more on the prompt). Rows of
    the output projection for `silent` token ids are zero, so their logit is exactly 0
    and random weights rarely choose them (used for end-of-turn tokens).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    d, hd, nv = shape.n_embd, shape.dim_head, shape.n_vocab
    assert nv is not None

    def w(*dims: int, std: float | None = None) -> np.ndarray:
        std = std if std is not None else scale / np.sqrt(dims[0])
        out = rng.standard_normal(dims, dtype=np.float32)
        out *= np.float32(std)
        return out

    weights = {"embed": w(nv, d, std=scale)}
    for i in range(shape.n_layer):
        p = f"l{i}."
        weights[p + "attn_norm"] = np.ones(d, np.float32)
        weights[p + "wq"] = w(d, shape.n_head * hd)
        weights[p + "wk"] = w(d, shape.n_head_kv * hd)
        weights[p + "wv"] = w(d, shape.n_head_kv * hd)
        if shape.qkv_bias:
            weights[p + "bq"] = w(shape.n_head * hd, std=0.1)
            weights[p + "bk"] = w(shape.n_head_kv * hd, std=0.1)
            weights[p + "bv"] = w(shape.n_head_kv * hd, std=0.1)
        weights[p + "wo"] = w(shape.n_head * hd, d)
        weights[p + "ffn_norm"] = np.ones(d, np.float32)
        weights[p + "wg"] = w(d, shape.n_ff)
        weights[p + "wu"] = w(d, shape.n_ff)
        weights[p + "wd"] = w(shape.n_ff, d)
    weights["out_norm"] = np.ones(d, np.float32)
    head = w(d, nv)
    head[:, list(silent)] = 0.0
    weights["lm_head"] = head
    return weights


def _rope_tables(shape: Shape, n_pos: int):
    import numpy as np

    half = shape.dim_head // 2
    inv = 1.0 / (shape.rope_theta ** (np.arange(half, dtype=np.float64) * 2 / shape.dim_head))
    ang = np.arange(n_pos, dtype=np.float64)[:, None] * inv[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


class ReferenceDecoder:
    """The same decoder in numpy (float64 math), with its own KV cache."""

    def __init__(self, shape: Shape, weights: dict[str, np.ndarray]):
        self.shape = shape
        self.w = weights
        self.cos, self.sin = _rope_tables(shape, shape.n_ctx_train)
        self.past: list[tuple[np.ndarray, np.ndarray]] = []
        self.seqs: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # forward_batch's caches

    def reset(self) -> None:
        self.past = []
        self.seqs = {}

    def forward_batch(self, items: Sequence[tuple[int, Sequence[int]]]) -> list[np.ndarray]:
        """Last-token logits per (seq, tokens) item, each sequence with its own cache (BatchEngine's eval_batch)."""
        out, own = [], self.past
        for seq, tokens in items:
            self.past = self.seqs.get(seq, [])
            out.append(self.forward(tokens)[-1])
            self.seqs[seq] = self.past
        self.past = own
        return out

    def seq_keep(self, seq: int, n_keep: int) -> None:
        """Drop positions >= n_keep of a forward_batch sequence; seq_copy gives dst src's first n."""
        self.seqs[seq] = [(k[:, :n_keep], v[:, :n_keep]) for k, v in self.seqs.get(seq, [])] if n_keep else []

    def seq_copy(self, src: int, dst: int, n: int) -> None:
        self.seqs[dst] = [(k[:, :n].copy(), v[:, :n].copy()) for k, v in self.seqs[src]] if n else []

    def forward(self, tokens: Sequence[int], *, use_cache: bool = True) -> np.ndarray:
        """Logits [len(tokens), n_vocab] for tokens appended after the cached ones."""
        import numpy as np

        s, w = self.shape, self.w
        hd, nh, nkv = s.dim_head, s.n_head, s.n_head_kv
        if not use_cache:
            self.past = []
        n_past = self.past[0][0].shape[1] if self.past else 0
        n = len(tokens)
        pos = np.arange(n_past, n_past + n)
        cos, sin = self.cos[pos][None].astype(np.float64), self.sin[pos][None].astype(np.float64)

        def rms(x, g):
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + s.rms_eps) * g

        def rope(x):  # x [heads, n, hd]
            x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
            return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

        x = w["embed"][list(tokens)].astype(np.float64)
        total = n_past + n
        causal = np.arange(total)[None, :] > (n_past + np.arange(n))[:, None]
        new_past = []
        for i in range(s.n_layer):
            p = f"l{i}."
            h = rms(x, w[p + "attn_norm"])
            q, k, v = h @ w[p + "wq"], h @ w[p + "wk"], h @ w[p + "wv"]
            if s.qkv_bias:
                q, k, v = q + w[p + "bq"], k + w[p + "bk"], v + w[p + "bv"]
            q = rope(q.reshape(n, nh, hd).transpose(1, 0, 2))
            k = rope(k.reshape(n, nkv, hd).transpose(1, 0, 2))
            v = v.reshape(n, nkv, hd).transpose(1, 0, 2)
            if self.past:
                k = np.concatenate([self.past[i][0], k], axis=1)
                v = np.concatenate([self.past[i][1], v], axis=1)
            new_past.append((k, v))
            rep = nh // nkv
            kk, vv = np.repeat(k, rep, axis=0), np.repeat(v, rep, axis=0)
            scores = q @ kk.transpose(0, 2, 1) / np.sqrt(hd)
            scores = np.where(causal[None], -np.inf, scores)
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            att = (scores @ vv).transpose(1, 0, 2).reshape(n, nh * hd)
            x = x + att @ w[p + "wo"]
            h = rms(x, w[p + "ffn_norm"])
            g = h @ w[p + "wg"]
            x = x + (g / (1 + np.exp(-g)) * (h @ w[p + "wu"])) @ w[p + "wd"]
        self.past = new_past
        return (rms(x, w["out_norm"]) @ w["lm_head"]).astype(np.float32)


# -- the ONNX graph ------------------------------------------------------------------


def build_decoder_graph(
    shape: Shape, weights: dict[str, np.ndarray], data_file: Path, kv_dtype: str, attention: str = "standard"
) -> ModelProto:
    """ModelProto whose initializers point into `data_file` (written here, aligned)."""
    import numpy as np
    from onnx import TensorProto, helper

    hd, nh, nkv = shape.dim_head, shape.n_head, shape.n_head_kv
    rep = nh // nkv
    nodes, inits = [], []
    kv_onnx = TensorProto.FLOAT16 if kv_dtype == "float16" else TensorProto.FLOAT
    counter = iter(range(1_000_000))

    def node(op, inputs, n_out=1, **attrs):
        k = next(counter)
        outs = [f"{op.lower()}_{k}_{j}" for j in range(n_out)]
        nodes.append(helper.make_node(op, list(inputs), outs, name=f"{op}_{k}", **attrs))
        return outs[0] if n_out == 1 else outs

    with open(data_file, "wb") as fh:

        def init(name: str, array: np.ndarray) -> str:
            array = np.ascontiguousarray(array)
            offset = fh.tell()
            pad = (-offset) % _ALIGN
            fh.write(b"\0" * pad)
            offset += pad
            fh.write(array.tobytes())
            t = TensorProto(name=name, dims=list(array.shape), data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_file.name), ("offset", str(offset)), ("length", str(array.nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            inits.append(t)
            return name

        def const(name: str, values, dtype=np.int64) -> str:
            inits.append(
                helper.make_tensor(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), [len(values)], list(values))
            )
            return name

        for name, array in weights.items():
            init(name, array)
        cos, sin = _rope_tables(shape, shape.n_ctx_train)
        init("rope_cos", cos)
        init("rope_sin", sin)
        c_q = const("shape_q", [0, 0, nh, hd])
        c_kv = const("shape_kv", [0, 0, nkv, hd])
        c_q5 = const("shape_q5", [0, nkv, rep, -1, hd])
        c_back = const("shape_back", [0, nh, -1, hd])
        c_flat = const("shape_flat", [0, 0, nh * hd])
        c_halves = const("halves", [hd // 2, hd // 2])
        c_ax1 = const("axis1", [1])
        c_ax0 = const("axis0", [0])
        c_ax10 = const("axes01", [0, 1])
        c_zero = helper.make_tensor("zero", TensorProto.INT64, [], [0])
        c_one = helper.make_tensor("one", TensorProto.INT64, [], [1])
        c_eps = helper.make_tensor("eps", TensorProto.FLOAT, [], [shape.rms_eps])
        c_scale = helper.make_tensor("att_scale", TensorProto.FLOAT, [], [1.0 / np.sqrt(hd)])
        c_neg = helper.make_tensor("neg", TensorProto.FLOAT, [], [_NEG])
        c_fzero = helper.make_tensor("fzero", TensorProto.FLOAT, [], [0.0])
        inits += [c_zero, c_one, c_eps, c_scale, c_neg, c_fzero]

        # causal + padding mask [B, 1, 1, S, T], additive, shared by all layers
        s_len = node("Gather", [node("Shape", ["input_ids"]), "one"], axis=0)
        t_len = node("Gather", [node("Shape", ["attention_mask"]), "one"], axis=0)
        kpos = node("Range", ["zero", t_len, "one"])
        qpos = node("Range", [node("Sub", [t_len, s_len]), t_len, "one"])
        future = node("Less", [node("Unsqueeze", [qpos, c_ax1]), node("Unsqueeze", [kpos, c_ax0])])
        pad = node("Equal", ["attention_mask", "zero"])  # [B, T]
        pad = node("Unsqueeze", [pad, const("axes123", [1, 2, 3])])  # [B,1,1,1,T]
        blocked = node("Or", [node("Unsqueeze", [future, c_ax10]), pad])  # [B,1,1,S,T]
        mask = node("Where", [blocked, "neg", "fzero"])

        c_ax2 = const("axis2", [2])
        gqa = attention == "gqa"
        if gqa:
            # what onnxruntime-genai's builder feeds GroupQueryAttention: per-sequence length - 1
            # and the total length, both int32, derived from the attention mask
            seqlens_k = node(
                "Cast",
                [node("Sub", [node("ReduceSum", ["attention_mask", c_ax1], keepdims=0), c_ax1])],
                to=TensorProto.INT32,
            )
            total_len = node("Cast", [t_len], to=TensorProto.INT32)
        else:
            # cos/sin [B, S, 1, hd/2], broadcast over the heads of q/k [B, S, heads, hd/2]
            cos_g = node("Unsqueeze", [node("Gather", ["rope_cos", "position_ids"], axis=0), c_ax2])
            sin_g = node("Unsqueeze", [node("Gather", ["rope_sin", "position_ids"], axis=0), c_ax2])

        def rms(x, g):
            var = node("ReduceMean", [node("Mul", [x, x])], axes=[-1], keepdims=1)
            return node("Mul", [node("Div", [x, node("Sqrt", [node("Add", [var, "eps"])])]), g])

        def rope(x):  # x [B, S, heads, hd]
            x1, x2 = node("Split", [x, c_halves], n_out=2, axis=-1)
            a = node("Sub", [node("Mul", [x1, cos_g]), node("Mul", [x2, sin_g])])
            b = node("Add", [node("Mul", [x2, cos_g]), node("Mul", [x1, sin_g])])
            return node("Concat", [a, b], axis=-1)

        x = node("Gather", ["embed", "input_ids"], axis=0)
        for i in range(shape.n_layer):
            p = f"l{i}."
            h = rms(x, p + "attn_norm")
            q, k, v = (node("MatMul", [h, p + n]) for n in ("wq", "wk", "wv"))
            if shape.qkv_bias:
                q, k, v = (node("Add", [t, p + n]) for t, n in ((q, "bq"), (k, "bk"), (v, "bv")))
            if gqa:  # the fused contrib op: rotary, cache append, grouped attention in one kernel
                nodes.append(
                    helper.make_node(
                        "GroupQueryAttention",
                        [
                            q,
                            k,
                            v,
                            f"past_key_values.{i}.key",
                            f"past_key_values.{i}.value",
                            seqlens_k,
                            total_len,
                            "rope_cos",
                            "rope_sin",
                        ],
                        [f"gqa_out{i}", f"present.{i}.key", f"present.{i}.value"],
                        name=f"gqa{i}",
                        domain="com.microsoft",
                        num_heads=nh,
                        kv_num_heads=nkv,
                        scale=float(1.0 / np.sqrt(hd)),
                        do_rotary=1,
                        rotary_interleaved=0,
                    )
                )
                x = node("Add", [x, node("MatMul", [f"gqa_out{i}", p + "wo"])])
                h = rms(x, p + "ffn_norm")
                g = node("MatMul", [h, p + "wg"])
                act = node("Mul", [node("Mul", [g, node("Sigmoid", [g])]), node("MatMul", [h, p + "wu"])])
                x = node("Add", [x, node("MatMul", [act, p + "wd"])])
                continue
            q = node("Transpose", [rope(node("Reshape", [q, c_q]))], perm=[0, 2, 1, 3])
            k = node("Transpose", [rope(node("Reshape", [k, c_kv]))], perm=[0, 2, 1, 3])
            v = node("Transpose", [node("Reshape", [v, c_kv])], perm=[0, 2, 1, 3])
            if kv_dtype == "float16":
                k, v = node("Cast", [k], to=kv_onnx), node("Cast", [v], to=kv_onnx)
            nodes.append(
                helper.make_node(
                    "Concat", [f"past_key_values.{i}.key", k], [f"present.{i}.key"], axis=2, name=f"cat_k{i}"
                )
            )
            nodes.append(
                helper.make_node(
                    "Concat", [f"past_key_values.{i}.value", v], [f"present.{i}.value"], axis=2, name=f"cat_v{i}"
                )
            )
            k_all, v_all = f"present.{i}.key", f"present.{i}.value"
            if kv_dtype == "float16":
                k_all = node("Cast", [k_all], to=TensorProto.FLOAT)
                v_all = node("Cast", [v_all], to=TensorProto.FLOAT)
            # grouped-query attention by broadcasting: q [B,kv,rep,S,hd] x k [B,kv,1,hd,T]
            q5 = node("Reshape", [q, c_q5])
            k5 = node("Unsqueeze", [node("Transpose", [k_all], perm=[0, 1, 3, 2]), c_ax2])
            v5 = node("Unsqueeze", [v_all, c_ax2])
            scores = node("Add", [node("Mul", [node("MatMul", [q5, k5]), "att_scale"]), mask])
            att = node("MatMul", [node("Softmax", [scores], axis=-1), v5])
            att = node("Reshape", [node("Transpose", [node("Reshape", [att, c_back])], perm=[0, 2, 1, 3]), c_flat])
            x = node("Add", [x, node("MatMul", [att, p + "wo"])])
            h = rms(x, p + "ffn_norm")
            g = node("MatMul", [h, p + "wg"])
            act = node("Mul", [node("Mul", [g, node("Sigmoid", [g])]), node("MatMul", [h, p + "wu"])])
            x = node("Add", [x, node("MatMul", [act, p + "wd"])])
        nodes.append(helper.make_node("MatMul", [rms(x, "out_norm"), "lm_head"], ["logits"], name="lm_head"))

    f = TensorProto.FLOAT
    past_dims: list[str | int | None] = ["batch_size", nkv, "past_sequence_length", hd]
    pres_dims: list[str | int | None] = ["batch_size", nkv, "total_sequence_length", hd]
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
    ]
    if attention == "gqa":
        inputs.pop()  # positions come from the attention mask, as in onnxruntime-genai's exports
    outputs = [helper.make_tensor_value_info("logits", f, ["batch_size", "sequence_length", shape.n_vocab])]
    for i in range(shape.n_layer):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_key_values.{i}.{kind}", kv_onnx, past_dims))
            outputs.append(helper.make_tensor_value_info(f"present.{i}.{kind}", kv_onnx, pres_dims))
    graph = helper.make_graph(nodes, "tiny-decoder", inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", _OPSET)] + (
        [helper.make_opsetid("com.microsoft", 1)] if attention == "gqa" else []
    )
    model = helper.make_model(graph, opset_imports=opsets, producer_name="localllm.testing.onnx")
    model.ir_version = 8  # readable by every onnxruntime >= 1.14
    return model


def write_onnx_folder(
    folder: str | Path,
    shape: Shape | str = "tiny",
    *,
    seed: int = 0,
    scale: float = 0.5,
    kv_dtype: str = "float32",
    genai_config: bool = True,
    context_length: int | None = None,
    attention: str = "standard",
) -> Path:
    """Write a random-weight ONNX LLM folder (see module docstring); returns the folder.

    `kv_dtype` "float16" stores the KV cache in half precision (math stays float32).
    `attention` "gqa" uses ONNX Runtime's fused GroupQueryAttention contrib op (the layout
    onnxruntime-genai's model builder writes, without a position_ids input) instead of
    standard ONNX ops; float32 cache only.
    """
    import onnx

    if isinstance(shape, str):
        shape = SHAPES[shape]
    folder = Path(folder)
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    n_tok = tok.get_vocab_size()
    if shape.n_vocab is None:
        shape = replace(shape, n_vocab=n_tok)
    elif shape.n_vocab < n_tok:
        raise ValueError(f"n_vocab {shape.n_vocab} is smaller than the tokenizer ({n_tok} tokens)")
    ids = _special_ids(tok)
    weights = make_weights(shape, seed=seed, scale=scale, silent=list(ids.values()))
    tok.save(str(folder / "tokenizer.json"))
    if attention not in ("standard", "gqa") or (attention == "gqa" and kv_dtype != "float32"):
        raise ValueError(
            f"attention {attention!r} with kv_dtype {kv_dtype!r}: expected 'standard', or 'gqa' with a float32 cache"
        )
    model = build_decoder_graph(shape, weights, folder / "onnx" / "model.onnx_data", kv_dtype, attention)
    del weights
    onnx.save_model(model, str(folder / "onnx" / "model.onnx"))

    eos = [ids["<|im_end|>"], ids["<|endoftext|>"]]
    ctx = context_length or shape.n_ctx_train
    config = {
        "architectures": ["Qwen2ForCausalLM" if shape.model_type == "qwen2" else "LlamaForCausalLM"],
        "model_type": shape.model_type,
        "hidden_size": shape.n_embd,
        "intermediate_size": shape.n_ff,
        "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head,
        "num_key_value_heads": shape.n_head_kv,
        "head_dim": shape.dim_head,
        "max_position_embeddings": shape.n_ctx_train,
        "vocab_size": shape.n_vocab,
        "rms_norm_eps": shape.rms_eps,
        "rope_theta": shape.rope_theta,
        "tie_word_embeddings": False,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "torch_dtype": "float32",
    }
    tok_config = {
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "chat_template": CHATML_FALLBACK,
        "model_max_length": ctx,
        "add_bos_token": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "added_tokens_decoder": {
            str(i): {
                "content": t,
                "special": True,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            }
            for t, i in ids.items()
        },
    }
    gen_config = {
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": eos,
        "pad_token_id": ids["<|endoftext|>"],
        "do_sample": False,
    }
    _write_json(folder / "config.json", config)
    _write_json(folder / "tokenizer_config.json", tok_config)
    _write_json(folder / "generation_config.json", gen_config)
    if genai_config:
        genai = _genai_config(shape, ids, eos, ctx)
        if attention == "gqa":
            del genai["model"]["decoder"]["inputs"]["position_ids"]
        _write_json(folder / "genai_config.json", genai)
    return folder


def _genai_config(shape: Shape, ids: dict[str, int], eos: list[int], ctx: int) -> dict:
    """The onnxruntime-genai description of the decoder (names, dims, search defaults)."""
    return {
        "model": {
            "bos_token_id": ids["<|endoftext|>"],
            "context_length": ctx,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": "onnx/model.onnx",
                "head_size": shape.dim_head,
                "hidden_size": shape.n_embd,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "position_ids": "position_ids",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": shape.n_head,
                "num_hidden_layers": shape.n_layer,
                "num_key_value_heads": shape.n_head_kv,
            },
            "eos_token_id": eos,
            "pad_token_id": ids["<|endoftext|>"],
            "type": shape.model_type,
            "vocab_size": shape.n_vocab,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": ctx,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": False,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


def reference_decoder(
    folder: str | Path, shape: Shape | str = "tiny", *, seed: int = 0, scale: float = 0.5
) -> ReferenceDecoder:
    """The numpy twin of a folder written by `write_onnx_folder` with the same shape, seed and scale."""
    from tokenizers import Tokenizer

    if isinstance(shape, str):
        shape = SHAPES[shape]
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    shape = replace(shape, n_vocab=config["vocab_size"])
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    silent = list(_special_ids(tok).values())
    return ReferenceDecoder(shape, make_weights(shape, seed=seed, scale=scale, silent=silent))


def _special_ids(tok: Tokenizer) -> dict[str, int]:
    """Ids of SPECIAL_TOKENS, which build_tokenizer always adds."""
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"the tokenizer has no {missing}: not one from build_tokenizer")
    return {t: i for t, i in ids.items() if i is not None}


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
