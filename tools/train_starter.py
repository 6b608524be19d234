"""Train localllm's starter model on the CPU and export it to GGUF.

    pip install -e '.[train]'
    nice -n 10 python tools/train_starter.py --out localllm/starter

A Llama-architecture model (RMSNorm, rotary embeddings as Hugging Face computes them,
SwiGLU, no biases) with a one-character-per-token vocabulary, trained from a corpus
that tools/starter_corpus.py generates (arithmetic, small talk, questions about
localllm). Everything is seeded: the same command gives the same weights on the same
torch build. Sequences are packed into rows with attention kept inside each
conversation and positions restarting at each one, so training sees exactly what
inference sees. Loss is on the assistant's replies only.

Writes <out>/starter.gguf (and <out>/starter.pt, the torch state dict, when --keep-torch).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import starter_corpus as corpus  # noqa: E402

SEED = 1234  # training data and init; the evaluation set uses starter_corpus's held-out split + its own seed
RMS_EPS = 1e-5  # as Llama; written to the GGUF so llama.cpp uses the same
ROPE_BASE = 10000.0


@dataclass(frozen=True)
class Config:
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_head_kv: int = 4
    n_ff: int = 384
    n_ctx: int = 384  # training row length; the GGUF's context_length
    vocab: int = corpus.VOCAB_SIZE

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


# ---------------------------------------------------------------- model


class RMSNorm(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS) * self.weight


def rope_tables(positions: torch.Tensor, head_dim: int):
    """cos/sin of shape (..., T, head_dim), Hugging Face's rotate-half layout."""
    inv = 1.0 / (ROPE_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class Block(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        hd = c.head_dim
        self.attn_norm = RMSNorm(c.n_embd)
        self.q = nn.Linear(c.n_embd, c.n_head * hd, bias=False)
        self.k = nn.Linear(c.n_embd, c.n_head_kv * hd, bias=False)
        self.v = nn.Linear(c.n_embd, c.n_head_kv * hd, bias=False)
        self.o = nn.Linear(c.n_head * hd, c.n_embd, bias=False)
        self.ffn_norm = RMSNorm(c.n_embd)
        self.gate = nn.Linear(c.n_embd, c.n_ff, bias=False)
        self.up = nn.Linear(c.n_embd, c.n_ff, bias=False)
        self.down = nn.Linear(c.n_ff, c.n_embd, bias=False)

    def forward(self, x, cos, sin, mask):
        c, (B, T, _) = self.c, x.shape
        h = self.attn_norm(x)
        q = self.q(h).view(B, T, c.n_head, c.head_dim).transpose(1, 2)
        k = self.k(h).view(B, T, c.n_head_kv, c.head_dim).transpose(1, 2)
        v = self.v(h).view(B, T, c.n_head_kv, c.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if c.n_head_kv != c.n_head:
            rep = c.n_head // c.n_head_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.o(a.transpose(1, 2).reshape(B, T, -1))
        h = self.ffn_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class StarterLM(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c.vocab, c.n_embd)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * c.n_layer) if name.endswith(("o.weight", "down.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, ids, positions=None, doc=None):
        """Logits (B, T, vocab). `positions` restart per packed conversation; `doc` ids keep attention inside one."""
        B, T = ids.shape
        if positions is None:
            positions = torch.arange(T).expand(B, T)
        cos, sin = rope_tables(positions, self.c.head_dim)
        cos, sin = cos[:, None], sin[:, None]
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        mask = causal[None, None] if doc is None else (causal & (doc[:, :, None] == doc[:, None, :]))[:, None]
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x, cos, sin, mask)
        return self.head(self.norm(x))


# ---------------------------------------------------------------- data


def pack_batch(rng: random.Random, c: Config, batch: int, pending: list, mix: dict[str, float] | None = None):
    """A batch of rows filled with whole conversations; returns (ids, targets, positions, doc) tensors."""
    ids = np.zeros((batch, c.n_ctx), dtype=np.int64)
    tgt = np.full((batch, c.n_ctx), -100, dtype=np.int64)
    pos = np.zeros((batch, c.n_ctx), dtype=np.int64)
    doc = np.full((batch, c.n_ctx), -1, dtype=np.int64)  # padding attends to itself only
    doc[:] = np.arange(c.n_ctx) + 10_000
    for r in range(batch):
        used, d = 0, 0
        while True:
            if not pending:
                seq, mask = corpus.encode_chat(corpus.conversation(rng, mix=mix), bos=rng.random() < 0.85)
                pending.append((seq[: c.n_ctx + 1], mask[: c.n_ctx + 1]))
            seq, mask = pending[-1]
            n = len(seq)
            if used + n > c.n_ctx:
                if used == 0:  # longer than a row: keep its head
                    seq, mask, n = seq[: c.n_ctx], mask[: c.n_ctx], c.n_ctx
                else:
                    break
            pending.pop()
            ids[r, used : used + n] = seq
            # target at t is token t+1 of the same conversation, where that token is learned
            nxt = np.array(seq[1:] + [0]), np.array(mask[1:] + [0])
            tgt[r, used : used + n] = np.where(nxt[1] == 1, nxt[0], -100)
            pos[r, used : used + n] = np.arange(n)
            doc[r, used : used + n] = d
            used, d = used + n, d + 1
            if used >= c.n_ctx:
                break
    return (torch.from_numpy(ids), torch.from_numpy(tgt), torch.from_numpy(pos), torch.from_numpy(doc))


# ---------------------------------------------------------------- greedy decoding (torch, for checks)


@torch.no_grad()
def greedy(model: StarterLM, prompts: list[list[int]], max_new: int = 80) -> list[list[int]]:
    """Greedy continuations of prompts until <|im_end|>, recomputing the whole sequence (no cache)."""
    model.eval()
    out = []
    for p in prompts:
        seq = list(p)
        gen = []
        for _ in range(max_new):
            logits = model(torch.tensor([seq]))[0, -1]
            t = int(logits.argmax())
            if t == corpus.IM_END:
                break
            gen.append(t)
            seq.append(t)
        out.append(gen)
    model.train()
    return out


def quick_eval(model: StarterLM, n: int = 40, seed: int = 99, tasks=corpus.TASKS) -> dict[str, float]:
    """Exact-match accuracy on a few held-out items per task (torch only, used while training)."""
    rng = random.Random(seed)
    scores = {}
    for task in tasks:
        items = []
        for _ in range(n):
            if task in ("addition", "subtraction"):
                q, a = corpus.arithmetic(rng, "+" if task == "addition" else "-", "eval", two_digit=True)
            else:
                q, a, _ = corpus.intent_turn(rng, task, "eval")
            items.append((q, a))
        prompts = [
            corpus.encode_chat([{"role": "user", "content": q}], add_generation_prompt=True)[0] for q, _ in items
        ]
        outs = greedy(model, prompts, max_new=200 if task == "localllm" else 100)
        scores[task] = sum(corpus.decode(o) == a for o, (_, a) in zip(outs, items, strict=True)) / n
    return scores


# ---------------------------------------------------------------- export


def hf_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder Q/K rows from HF's rotate-half rope to llama.cpp's adjacent-pair rope (as convert_hf_to_gguf.py)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def export_gguf(model: StarterLM, path: Path, *, f16: bool, description: str) -> Path:
    from localllm.chat_template import CHATML_FALLBACK
    from localllm.testing import Shape, spm_vocab, write_llama_weights

    c = model.c
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    dt = np.float16 if f16 else np.float32

    def mat(a):
        return np.ascontiguousarray(a.astype(dt))

    def vec(a):
        return np.ascontiguousarray(a.astype(np.float32))  # norms stay f32, as llama.cpp's converter keeps them

    tensors = {"token_embd.weight": mat(sd["embed.weight"])}
    for i in range(c.n_layer):
        p = f"blocks.{i}."
        tensors.update(
            {
                f"blk.{i}.attn_norm.weight": vec(sd[p + "attn_norm.weight"]),
                f"blk.{i}.attn_q.weight": mat(hf_permute(sd[p + "q.weight"], c.n_head)),
                f"blk.{i}.attn_k.weight": mat(hf_permute(sd[p + "k.weight"], c.n_head_kv)),
                f"blk.{i}.attn_v.weight": mat(sd[p + "v.weight"]),
                f"blk.{i}.attn_output.weight": mat(sd[p + "o.weight"]),
                f"blk.{i}.ffn_norm.weight": vec(sd[p + "ffn_norm.weight"]),
                f"blk.{i}.ffn_gate.weight": mat(sd[p + "gate.weight"]),
                f"blk.{i}.ffn_up.weight": mat(sd[p + "up.weight"]),
                f"blk.{i}.ffn_down.weight": mat(sd[p + "down.weight"]),
            }
        )
    tensors["output_norm.weight"] = vec(sd["norm.weight"])
    tensors["output.weight"] = mat(sd["head.weight"])
    shape = Shape(
        n_layer=c.n_layer, n_embd=c.n_embd, n_head=c.n_head, n_head_kv=c.n_head_kv, n_ff=c.n_ff, n_ctx_train=c.n_ctx
    )
    vocab = spm_vocab(corpus.PIECES)
    assert len(vocab[0]) == c.vocab, (len(vocab[0]), c.vocab)
    return write_llama_weights(
        path,
        shape,
        tensors,
        vocab=vocab,
        chat_template=CHATML_FALLBACK,
        name="localllm-starter",
        file_type=1 if f16 else 0,
        rms_eps=RMS_EPS,
        rope_freq_base=ROPE_BASE,
        add_bos=True,
        add_space_prefix=False,
        extra_kv={"general.license": "MIT", "general.description": description},
    )


def build_tokenizer_json() -> dict:
    """tokenizer.json (Hugging Face `tokenizers`) that tokenizes as the GGUF's vocabulary does in llama.cpp."""
    from localllm.testing import spm_vocab

    tokens = spm_vocab(corpus.PIECES)[0]
    added = [
        {
            "id": i,
            "content": t,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, t in enumerate(corpus.SPECIALS)
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": corpus.SPACE},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": "<s>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [corpus.BOS], "tokens": ["<s>"]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": corpus.SPACE}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<unk>",
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": [],
        },
    }


def export_onnx(model: StarterLM, folder: Path) -> Path:
    """An ONNX decoder folder (the layout localllm.runtimes.onnx reads), built with localllm.testing's graph writer."""
    import onnx

    from localllm.chat_template import CHATML_FALLBACK
    from localllm.testing import Shape, build_decoder_graph  # the same graph the ONNX engine is tested on

    c = model.c
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w = {"embed": sd["embed.weight"]}
    for i in range(c.n_layer):
        p, q = f"blocks.{i}.", f"l{i}."
        w.update(
            {
                q + "attn_norm": sd[p + "attn_norm.weight"],
                q + "wq": sd[p + "q.weight"].T,
                q + "wk": sd[p + "k.weight"].T,
                q + "wv": sd[p + "v.weight"].T,
                q + "wo": sd[p + "o.weight"].T,
                q + "ffn_norm": sd[p + "ffn_norm.weight"],
                q + "wg": sd[p + "gate.weight"].T,
                q + "wu": sd[p + "up.weight"].T,
                q + "wd": sd[p + "down.weight"].T,
            }
        )
    w["out_norm"] = sd["norm.weight"]
    w["lm_head"] = sd["head.weight"].T
    w = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in w.items()}
    shape = Shape(
        n_layer=c.n_layer,
        n_embd=c.n_embd,
        n_head=c.n_head,
        n_head_kv=c.n_head_kv,
        n_ff=c.n_ff,
        n_ctx_train=c.n_ctx,
        n_vocab=c.vocab,
        qkv_bias=False,
        rope_theta=ROPE_BASE,
        rms_eps=RMS_EPS,
        model_type="llama",
    )
    (folder / "onnx").mkdir(parents=True, exist_ok=True)
    graph = build_decoder_graph(shape, w, folder / "onnx" / "model.onnx_data", "float32", "standard")
    onnx.save_model(graph, str(folder / "onnx" / "model.onnx"))

    def dump(name, data):
        (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    dump("tokenizer.json", build_tokenizer_json())
    dump(
        "config.json",
        {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": c.n_embd,
            "intermediate_size": c.n_ff,
            "num_hidden_layers": c.n_layer,
            "num_attention_heads": c.n_head,
            "num_key_value_heads": c.n_head_kv,
            "head_dim": c.head_dim,
            "max_position_embeddings": c.n_ctx,
            "vocab_size": c.vocab,
            "rms_norm_eps": RMS_EPS,
            "rope_theta": ROPE_BASE,
            "tie_word_embeddings": False,
            "hidden_act": "silu",
            "bos_token_id": corpus.BOS,
            "eos_token_id": corpus.IM_END,
            "torch_dtype": "float32",
        },
    )
    dump(
        "tokenizer_config.json",
        {
            "bos_token": "<s>",
            "eos_token": "<|im_end|>",
            "unk_token": "<unk>",
            "pad_token": "</s>",
            "chat_template": CHATML_FALLBACK,
            "model_max_length": c.n_ctx,
            "add_bos_token": True,
            "add_eos_token": False,
            "tokenizer_class": "LlamaTokenizerFast",
            "legacy": False,
            "added_tokens_decoder": {
                str(i): {
                    "content": t,
                    "special": True,
                    "lstrip": False,
                    "rstrip": False,
                    "normalized": False,
                    "single_word": False,
                }
                for i, t in enumerate(corpus.SPECIALS)
            },
        },
    )
    dump(
        "generation_config.json",
        {
            "bos_token_id": corpus.BOS,
            "eos_token_id": [corpus.IM_END, corpus.EOS],
            "pad_token_id": corpus.EOS,
            "do_sample": False,
        },
    )
    return folder


def reference_outputs(model: StarterLM, n: int = 8, seed: int = 4242) -> list[dict]:
    """Torch's greedy replies (token ids) to held-out prompts: tests hold each runtime to them."""
    rng = random.Random(seed)
    items = [corpus.arithmetic(rng, "+", "eval", two_digit=True) for _ in range(n)]
    items += [corpus.arithmetic(rng, "-", "eval", two_digit=True) for _ in range(n // 2)]
    items += [corpus.intent_turn(rng, t, "eval")[:2] for t in ("smalltalk", "localllm") for _ in range(n // 2)]
    prompts = [corpus.encode_chat([{"role": "user", "content": q}], add_generation_prompt=True)[0] for q, _ in items]
    outs = greedy(model, prompts, max_new=200)
    return [
        {"user": q, "expected": a, "torch_tokens": o, "torch_text": corpus.decode(o)}
        for (q, a), o in zip(items, outs, strict=True)
    ]


def load_checkpoint(path: Path) -> StarterLM:
    ck = torch.load(path, map_location="cpu")
    model = StarterLM(Config(**ck["config"]))
    model.load_state_dict(ck["state_dict"])
    return model.eval()


def export_all(model: StarterLM, out: Path, *, f16: bool, description: str) -> Path:
    """GGUF, ONNX folder and the torch reference replies, all under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    path = export_gguf(model, out / "starter.gguf", f16=f16, description=description)
    export_onnx(model, out / "starter-onnx")
    ref = {
        "description": "greedy replies of the torch model before export (tools/train_starter.py)",
        "items": reference_outputs(model),
    }
    (out / "reference.json").write_text(json.dumps(ref, indent=1) + "\n")
    return path


# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("localllm/starter"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--f16", action="store_true", help="export F16 weights (default F32: exact, and small anyway)")
    ap.add_argument("--keep-torch", action="store_true", help="also save the torch state dict")
    ap.add_argument(
        "--export-only", type=Path, metavar="CKPT", help="skip training: export a checkpoint saved with --keep-torch"
    )
    ap.add_argument(
        "--init",
        type=Path,
        metavar="CKPT",
        help="start from a checkpoint saved with --keep-torch (a second training phase)",
    )
    ap.add_argument(
        "--mix",
        default=None,
        metavar="TASK=W,...",
        help="task weights (default starter_corpus.TRAIN_MIX), e.g. addition=0.7,subtraction=0.15,...",
    )
    ap.add_argument("--seed", type=int, default=SEED, help="seed of the training data and init")
    ap.add_argument("--layers", type=int, default=Config.n_layer)
    ap.add_argument("--embd", type=int, default=Config.n_embd)
    ap.add_argument("--ff", type=int, default=Config.n_ff)
    ap.add_argument("--heads", type=int, default=Config.n_head)
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.export_only:
        model = load_checkpoint(args.export_only)
        info = json.loads((args.export_only.parent / "train_info.json").read_text())
        desc = info.get("description") or (
            f"localllm starter model: {info['params']:,} parameters, trained {info['steps']} steps in "
            f"{info['train_seconds']} s by tools/train_starter.py (seed {info['seed']})"
        )
        path = export_all(model, args.out, f16=args.f16, description=desc)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)", flush=True)
        return 0
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    if args.init:
        model = load_checkpoint(args.init).train()
        c = model.c
    else:
        c = Config(n_layer=args.layers, n_embd=args.embd, n_ff=args.ff, n_head=args.heads, n_head_kv=args.heads)
        model = StarterLM(c)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"config {asdict(c)} params {n_params:,}", flush=True)

    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-9,
    )
    warmup = max(1, args.steps // 30)

    def lr_at(step):
        if step < warmup:
            return args.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, args.steps - warmup)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    pending: list = []
    mix = {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))} if args.mix else None
    t0 = time.time()
    loss_avg = None
    for step in range(args.steps):
        ids, tgt, pos, doc = pack_batch(rng, c, args.batch, pending, mix)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        logits = model(ids, pos, doc)
        loss = F.cross_entropy(logits.view(-1, c.vocab), tgt.view(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 20 == 0 or step == args.steps - 1:
            el = time.time() - t0
            print(
                f"step {step} loss {loss_avg:.4f} lr {lr_at(step):.2e} elapsed {el:.0f}s ({el / (step + 1):.2f}s/step)",
                flush=True,
            )
        if args.eval_every and step and step % args.eval_every == 0:
            print(f"eval@{step} {quick_eval(model, n=30, tasks=('addition', 'subtraction'))}", flush=True)

    train_s = time.time() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    if args.keep_torch:
        torch.save({"config": asdict(c), "state_dict": model.state_dict()}, args.out / "starter.pt")
    desc = (
        f"localllm starter model: {n_params:,} parameters, trained {args.steps} steps in {train_s:.0f} s "
        f"by tools/train_starter.py (seed {args.seed}{', from ' + args.init.name if args.init else ''})"
    )
    info = {
        "description": desc,
        "params": n_params,
        "steps": args.steps,
        "batch": args.batch,
        "train_seconds": round(train_s),
        "config": asdict(c),
        "seed": args.seed,
        "init": str(args.init) if args.init else None,
        "mix": mix or corpus.TRAIN_MIX,
        "torch": torch.__version__,
    }
    (args.out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    info["torch_eval"] = quick_eval(model, n=30)
    print(f"final torch eval {info['torch_eval']}", flush=True)
    (args.out / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    path = export_all(model, args.out, f16=args.f16, description=desc)
    print(f"wrote {path} ({path.stat().st_size:,} bytes) in {time.time() - t0:.0f}s total", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
