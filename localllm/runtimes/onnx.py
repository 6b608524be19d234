"""ONNX Runtime engine: a published ONNX decoder folder driven by the shared token loop.

The KV cache stays in ONNX Runtime's own memory: each step binds the previous step's
`present.*` OrtValues as the next `past_key_values.*` inputs through an IOBinding (no
copy into numpy and back), and the logits come back as a view of the last row of the
output tensor. Tokenizing and per-token bytes use `tokenizers` with the folder's
tokenizer.json.

The execution provider is the plan's, or else `localllm.providers.choose_provider` over the
hardware the caller passes (the planner chooses through the same function); the engine
never probes the machine itself. The graph-optimized model is cached on disk (keyed by
the source files' size and mtime, the onnxruntime version and the provider), so later
loads skip the optimization passes.

onnxruntime, numpy and tokenizers are imported when an engine is created, never at
`import localllm`.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm.errors import GenerationError, InvalidModelError, RuntimeUnavailableError
from localllm.formats.onnx_folder import OnnxFolderInfo, validate_onnx_folder
from localllm.hardware.cpu_load import CpuMeter, busy_at_load
from localllm.paths import home
from localllm.placement import Placement
from localllm.providers import CPU, CUDA, DML, INSTALL_HINTS, MIGRAPHX, ROCM, TENSORRT, choose_provider
from localllm.runtimes.base import PROMPT_CHUNK, CachedTokens
from localllm.runtimes.onnx_batch import OnnxBatch, batch_refusal

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from localllm.hardware import Hardware

__all__ = ["OnnxEngine", "TokenBytes", "provider_chain"]

log = logging.getLogger(__name__)

# Providers whose optimized graph can be saved and loaded again: the others compile
# nodes into their own format, which ONNX Runtime cannot serialize.
_CACHEABLE = (CPU, CUDA)
_DEVICE = {CUDA: "cuda", TENSORRT: "cuda", DML: "dml", ROCM: "cuda", MIGRAPHX: "cuda"}  # KV-cache device
_CACHE_DIR = "onnx-optimized"  # under localllm.paths.home()
_EOG_NAMES = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|endoftext|>",
    "<end_of_turn>",
    "<|end_of_text|>",
    "<|eom_id|>",
    "</s>",
)  # end-of-turn tokens llama.cpp also treats as end of generation
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>$")


# -- execution providers ---------------------------------------------------------------


def provider_chain(provider: str, *, device_id: int = 0, cache_dir: Path | None = None) -> list:
    """The `providers` list for an InferenceSession: the choice with its options, then fallbacks, then CPU."""
    chain: list = []
    if provider == TENSORRT:
        opts: dict[str, Any] = {"device_id": device_id}
        if cache_dir is not None:  # TensorRT builds engines for minutes: keep them
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir / "tensorrt"))
        chain += [(TENSORRT, opts), (CUDA, {"device_id": device_id})]
    elif provider in (CUDA, DML, ROCM, MIGRAPHX):
        chain.append((provider, {"device_id": device_id}))
    elif provider != CPU:
        chain.append(provider)
    chain.append(CPU)
    return chain


# -- per-token bytes ---------------------------------------------------------------------


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-to-unicode table, inverted: printable stand-in character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _components(node: Any) -> list[dict]:
    """A tokenizer.json decoder/pre_tokenizer node flattened (Sequence nodes opened)."""
    if not isinstance(node, dict):
        return []
    if node.get("type") == "Sequence":
        out = []
        for key in ("decoders", "pretokenizers", "normalizers"):
            for child in node.get(key, []) or []:
                out += _components(child)
        return out
    return [node]


class TokenBytes:
    """Raw bytes of each token of a `tokenizers` vocabulary, for byte-exact streaming.

    Byte-level BPE (GPT-2, Llama 3, Qwen) maps every byte to a printable character;
    SentencePiece-style vocabularies (Llama 2, Mistral, Phi-3) use `▁` for a space and
    `<0xNN>` tokens for bytes; anything else is the token's text. Special added tokens
    give b"".
    """

    def __init__(self, tokenizer: Any, spec: dict[str, Any]) -> None:
        self._tok = tokenizer
        model = spec.get("model", {}) or {}
        kinds = {c.get("type") for part in ("decoder", "pre_tokenizer") for c in _components(spec.get(part))}
        self.kind = (
            "byte_level"
            if "ByteLevel" in kinds
            else "sentencepiece"
            if (
                model.get("byte_fallback")
                or "Metaspace" in kinds
                or "ByteFallback" in kinds
                or any(c.get("type") == "Replace" for c in _components(spec.get("decoder")))
            )
            else "wordpiece"
            if model.get("type") == "WordPiece"
            else "text"
        )
        self._table = _byte_decoder() if self.kind == "byte_level" else None
        self._prefix = model.get("continuing_subword_prefix") or "##"
        self._added = {t["id"]: t for t in spec.get("added_tokens", []) or []}
        self._cache: dict[int, bytes] = {}

    def __call__(self, token: int) -> bytes:
        out = self._cache.get(token)
        if out is None:
            out = self._cache[token] = self._compute(token)
        return out

    def _compute(self, token: int) -> bytes:
        added = self._added.get(token)
        if added is not None:
            return b"" if added.get("special") else added["content"].encode("utf-8")
        text = self._tok.id_to_token(token)
        if text is None:  # ids past the tokenizer (models pad their output layer)
            return b""
        if self._table is not None:
            try:
                return bytes(self._table[c] for c in text)
            except KeyError:
                return text.encode("utf-8")
        if self.kind == "sentencepiece":
            m = _BYTE_TOKEN.match(text)
            return bytes([int(m.group(1), 16)]) if m else text.replace("\u2581", " ").encode("utf-8")
        if self.kind == "wordpiece":
            return (text[len(self._prefix) :] if text.startswith(self._prefix) else " " + text).encode("utf-8")
        return text.encode("utf-8")


# -- the engine ----------------------------------------------------------------------------


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"ONNX Runtime is not installed ({exc}); install it with: pip install onnxruntime"
        ) from exc
    return onnxruntime


class OnnxEngine(OnnxBatch, CachedTokens):
    """One ONNX decoder and its KV cache, per the `Engine` protocol; `placement.n_seq` > 1 adds
    sequences as rows of the batch dimension (the `BatchEngine` methods, runtimes.onnx_batch)."""

    runtime = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        placement: Placement,
        *,
        variant: str | None = None,
        cache_optimized: bool = True,
        hardware: Hardware | None = None,
    ) -> None:
        """Load a folder (or one .onnx file in it).

        Args:
            path: model folder or .onnx file.
            placement: n_ctx, n_threads, n_batch and provider (None: `choose_provider` on `hardware`).
            variant: which .onnx in a folder ("q4", "model_fp16.onnx"...), when path is a folder.
            cache_optimized: keep the graph-optimized model on disk for the next load.
            hardware: the machine, for the provider choice when placement.provider is None
                (`runtimes.load_engine` passes a probe); required then.

        Raises:
            InvalidModelError: the folder or model is bad (see `validate_onnx_folder`).
            RuntimeUnavailableError: onnxruntime or the requested provider is missing.
            ValueError: neither placement.provider nor hardware is given.
        """
        if not placement.provider and hardware is None:
            raise ValueError(
                "OnnxEngine needs placement.provider or hardware= to choose an execution provider "
                "(runtimes.load_engine passes a probe of this machine)"
            )
        t0 = time.perf_counter()
        meter = CpuMeter()  # other programs' CPU use from here to the session's creation
        ort = _import_ort()
        import numpy as np
        from tokenizers import Tokenizer

        self._np = np
        self._ort = ort
        self.info: OnnxFolderInfo = validate_onnx_folder(Path(path), variant=variant)
        self.path = str(self.info.model_file)
        info, io = self.info, self.info.io

        try:
            self._tokenizer = Tokenizer.from_file(str(info.tokenizer_file))
            spec = json.loads(info.tokenizer_file.read_text(encoding="utf-8"))
        except Exception as exc:  # tokenizers raises a bare Exception on unknown formats
            raise InvalidModelError(
                f"{info.tokenizer_file} could not be read by `tokenizers`: {exc}", path=str(info.tokenizer_file)
            ) from exc
        self._token_bytes = TokenBytes(self._tokenizer, spec)
        self._added = {t["content"]: t for t in spec.get("added_tokens", []) or []}

        available = ort.get_available_providers()
        if placement.provider:
            provider, reason = placement.provider, "from the plan"
            if provider not in available:
                raise RuntimeUnavailableError(
                    f"the plan asks for ONNX Runtime provider {provider}, but this onnxruntime offers "
                    f"{', '.join(available)}; install it with: {INSTALL_HINTS.get(provider, 'a matching onnxruntime')} "
                    "or plan again"
                )
        else:
            assert hardware is not None  # checked on entry, before the slow imports
            provider, reason = choose_provider(hardware, available)
        self.provider_reason = reason
        self._device = _DEVICE.get(provider, "cpu")
        self._device_id = placement.main_gpu

        self._cache_enabled = cache_optimized
        load = meter.read()
        self.spinning = not busy_at_load(placement.n_threads, load)
        if not self.spinning:
            log.info(
                "ONNX Runtime's threads wait without spinning: other programs used %.2f CPUs at load (%s)",
                load.others_busy or 0.0,
                load.basis,
            )
        self._session, self.optimized_path = self._create_session(placement, provider)
        self.providers = tuple(self._session.get_providers())
        self.provider = self.providers[0]
        if self.provider != provider:
            self.provider_reason += f"; {provider} could not start, ONNX Runtime fell back to {self.provider}"
            self._device = _DEVICE.get(self.provider, "cpu")

        self._io = io
        self._kv_np = {"float32": np.float32, "float16": np.float16}.get(info.kv_dtype)
        if self._kv_np is None:
            raise InvalidModelError(
                f"{info.model_file}: {info.kv_dtype} KV cache is not supported by localllm's "
                "ONNX engine (float32 and float16 are)",
                path=self.path,
            )
        self.n_vocab = int(info.n_vocab or self._session.get_outputs()[0].shape[-1])
        limit = info.context_length
        self.n_ctx = int(min(placement.n_ctx, limit)) if limit else int(placement.n_ctx)
        if limit and placement.n_ctx > limit:
            log.info("n_ctx %d exceeds the model's context length %d; using %d", placement.n_ctx, limit, limit)
        self.n_batch = max(1, int(placement.n_batch))
        # on the CPU the shared loop looks at the stop flag every PROMPT_CHUNK prompt tokens (see
        # runtimes.base); a GPU provider evaluates a whole n_batch well within a second
        self.prompt_chunk = min(self.n_batch, PROMPT_CHUNK) if self.provider == CPU else self.n_batch
        if placement.kv_type not in ("f16", "f32") or (placement.kv_type == "f32") != (info.kv_dtype == "float32"):
            log.debug(
                "KV-cache type comes from the ONNX graph (%s), not the placement (%s)", info.kv_dtype, placement.kv_type
            )
        self._eog = self._eog_ids()
        self._binding = self._session.io_binding()
        self.batch_refusal = batch_refusal(io, self._session) if placement.n_seq > 1 else None
        if self.batch_refusal:
            log.warning("%s: one sequence at a time, not %d: %s", self.path, placement.n_seq, self.batch_refusal)
        self.n_seq_max = 1 if self.batch_refusal else max(1, int(placement.n_seq))
        # attention mask and positions are views of these (contiguous: leading dim 1)
        self._ones = np.ones((1, self.n_ctx), dtype=np.int64)
        self._positions = np.arange(self.n_ctx, dtype=np.int64)[None]
        self._tokens: list[int] = []
        self._past: list[Any] = []  # OrtValues: k0, v0, k1, v1, ...
        self._logits_value = None  # keeps the OrtValue behind the returned logits view alive
        self._closed = False
        self._reset_cache()
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "loaded %s with %s in %.2fs (n_ctx %d, threads %d): %s",
            self.path,
            self.provider,
            self.load_seconds,
            self.n_ctx,
            placement.n_threads,
            self.provider_reason,
        )

    # --- session ---------------------------------------------------------------------
    def _session_options(self, placement: Placement, level):
        so = self._ort.SessionOptions()
        # fatal only: ONNX Runtime logs to stderr, and its errors reach us as exceptions anyway
        so.log_severity_level = 4
        if placement.n_threads and placement.n_threads > 0:
            so.intra_op_num_threads = int(placement.n_threads)
        so.inter_op_num_threads = 1
        if not getattr(self, "spinning", True):
            # ORT's threads are fixed per session; spinning ones that lose their cores to other
            # programs stall each other: off, 2 threads decoded 1.5-2.2x faster with 0-2 hogs
            # on a busy 2-core machine (benchmarks/bench_busy.py --onnx)
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = level
        return so

    def _cache_key(self, provider: str) -> str:
        stats = []
        for f in (self.info.model_file, *self.info.data_files):
            st = f.stat()
            stats.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
        blob = json.dumps([stats, self._ort.__version__, provider, "all"]).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def _create_session(self, placement: Placement, provider: str):
        ort = self._ort
        cache_root = home() / _CACHE_DIR
        chain = provider_chain(provider, device_id=placement.main_gpu, cache_dir=cache_root)
        level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        cacheable = provider in _CACHEABLE and self._cache_enabled
        if cacheable:
            final = cache_root / self._cache_key(provider)
            cached = final / "model.onnx"
            if cached.is_file():
                try:
                    so = self._session_options(placement, level)
                    return ort.InferenceSession(str(cached), sess_options=so, providers=chain), cached
                except Exception as exc:  # a damaged cache entry: drop it, optimize again
                    log.warning("optimized model cache %s unusable (%s); rebuilding it", final, exc)
                    shutil.rmtree(final, ignore_errors=True)
            tmp = cache_root / f"{final.name}.tmp-{os.getpid()}"
            so = self._session_options(placement, level)
            try:
                tmp.mkdir(parents=True, exist_ok=True)
                so.optimized_model_filepath = str(tmp / "model.onnx")
                # weights go to a side file: the protobuf itself cannot exceed 2 GB
                so.add_session_config_entry(
                    "session.optimized_model_external_initializers_file_name", "model.onnx.data"
                )
                so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
            except OSError as exc:
                log.warning("cannot cache the optimized model under %s: %s", cache_root, exc)
                so = self._session_options(placement, level)
                cacheable = False
        else:
            so = self._session_options(placement, level)
        try:
            session = ort.InferenceSession(self.path, sess_options=so, providers=chain)
        except Exception as exc:
            if cacheable:
                shutil.rmtree(tmp, ignore_errors=True)
            raise InvalidModelError(f"ONNX Runtime could not load {self.path}: {exc}", path=self.path) from exc
        if not cacheable:
            return session, None
        try:
            os.replace(tmp, final)  # whole entries only: a crash mid-write leaves just a .tmp folder
            return session, final / "model.onnx"
        except OSError as exc:
            log.debug("optimized model not cached (%s)", exc)
            shutil.rmtree(tmp, ignore_errors=True)
            return session, None

    def _ortvalue(self, array: np.ndarray):
        return self._ort.OrtValue.ortvalue_from_numpy(array, self._device, self._device_id)

    def _reset_cache(self) -> None:
        self._reset_rows()

    # --- tokens ----------------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        tok = self._require_tok()
        tok.encode_special_tokens = not special  # special=False: "<|im_end|>" in text is plain text
        try:
            return list(tok.encode(text, add_special_tokens=add_bos).ids)
        finally:
            tok.encode_special_tokens = False

    def token_bytes(self, token: int) -> bytes:
        return self._token_bytes(token)

    def vocab_bytes(self) -> list[bytes]:
        special = {t["id"]: t["content"] for t in self._added.values() if t.get("special")}
        return [
            b"\xff" + special[t].encode("utf-8") if t in special else self._token_bytes(t) for t in range(self.n_vocab)
        ]

    def is_eog(self, token: int) -> bool:
        return token in self._eog

    def has_token(self, text: str) -> bool:
        return text in self._added

    def _eog_ids(self) -> frozenset[int]:
        ids = set(self.info.eos_token_ids)
        for name in (self.info.eos_token, *_EOG_NAMES):
            if name and name in self._added:
                ids.add(self._added[name]["id"])
        return frozenset(ids)

    @property
    def bos_token(self) -> str | None:
        return self.info.bos_token

    @property
    def eos_token(self) -> str | None:
        return self.info.eos_token

    @property
    def add_bos(self) -> bool:
        return bool(self.info.tokenizer_config.get("add_bos_token", False))

    @property
    def chat_template(self) -> str | None:
        return self.info.chat_template

    # --- evaluation --------------------------------------------------------------------------
    def eval(self, tokens: Sequence[int]) -> np.ndarray:
        self._require_tok()
        if self.n_seq_max > 1:  # sequence 0, a row among others
            return self.eval_batch([(0, tokens)])[0]
        tokens = self._room_for(tokens)
        if min(tokens) < 0 or max(tokens) >= self.n_vocab:
            bad = [t for t in tokens if not 0 <= t < self.n_vocab]
            raise GenerationError(f"token id(s) {bad[:5]} outside the vocabulary of {self.n_vocab}")
        starts = range(0, len(tokens), self.n_batch)  # at least one: _room_for refuses no tokens
        for start in starts[:-1]:
            self._step(tokens[start : start + self.n_batch])
        return self._step(tokens[starts[-1] :])

    def eval_all(self, tokens: Sequence[int]) -> np.ndarray:
        """Append tokens; float32 logits [len(tokens), n_vocab] of every one (a copy). An engine of
        several sequences takes them one at a time: its batch rows keep only their last logits."""
        self._require_tok()
        tokens = self._room_for(tokens)
        if self.n_seq_max > 1:
            return self._np.stack([self.eval([t]) for t in tokens])
        if min(tokens) < 0 or max(tokens) >= self.n_vocab:
            raise GenerationError(
                f"token id(s) {[t for t in tokens if not 0 <= t < self.n_vocab][:5]} outside the vocabulary"
            )
        rows = [self._step(tokens[lo : lo + self.n_batch], every=True) for lo in range(0, len(tokens), self.n_batch)]
        return rows[0] if len(rows) == 1 else self._np.concatenate(rows)

    def _bind_outputs(self) -> None:
        """Outputs bound to a device, not to buffers: ONNX Runtime allocates them (their length grows)."""
        io, b = self._io, self._binding
        b.clear_binding_outputs()  # a finished run leaves its outputs bound as fixed-shape buffers
        b.bind_output(io.logits, "cpu")
        for name in (*io.present_keys, *io.present_values):
            b.bind_output(name, self._device, self._device_id)

    def _step(self, part: list[int], every: bool = False) -> np.ndarray:
        np, io, b = self._np, self._io, self._binding
        n_past, n = len(self._tokens), len(part)
        b.bind_cpu_input(io.input_ids, np.array([part], dtype=np.int64))
        if io.attention_mask:
            b.bind_cpu_input(io.attention_mask, self._ones[:, : n_past + n])
        if io.position_ids:
            b.bind_cpu_input(io.position_ids, self._positions[:, n_past : n_past + n])
        if io.use_cache_branch:
            b.bind_cpu_input(io.use_cache_branch, np.array([n_past > 0]))
        if io.logits_to_keep:
            b.bind_cpu_input(io.logits_to_keep, np.array(n if every else 1, dtype=np.int64))
        self._bind_outputs()
        past = self._past
        for i in range(self.info.n_layer):
            b.bind_ortvalue_input(io.past_keys[i], past[2 * i])
            b.bind_ortvalue_input(io.past_values[i], past[2 * i + 1])
        try:
            self._session.run_with_iobinding(b)
        except Exception as exc:
            raise GenerationError(
                f"ONNX Runtime failed at position {n_past} ({n} tokens, n_ctx {self.n_ctx}) with {self.provider}: {exc}"
            ) from exc
        outs = b.get_outputs()
        # outputs come in the order bound: logits, present keys, present values
        n_layer = self.info.n_layer
        keys, values = outs[1 : 1 + n_layer], outs[1 + n_layer :]
        self._past = [v for pair in zip(keys, values, strict=True) for v in pair]
        self._tokens.extend(part)
        if every:  # the last n rows: an export without logits_to_keep gives every position's
            return np.array(outs[0].numpy().reshape(-1, outs[0].shape()[-1])[-n:, : self.n_vocab], dtype=np.float32)
        return self._last_logits(outs[0])

    def _last_logits(self, value) -> np.ndarray:
        np = self._np
        shape = value.shape()
        elem = value.data_type()
        if elem == "tensor(float)":
            # a view of the last row, no copy; `_logits_value` keeps the buffer alive
            self._logits_value = value
            start = value.data_ptr() + 4 * (math.prod(shape) - self.n_vocab)
            buf = (ctypes.c_float * self.n_vocab).from_address(start)
            return np.ctypeslib.as_array(buf)
        row = value.numpy().reshape(-1, shape[-1])[-1]
        return row.astype(np.float32)

    def rewind(self, n_keep: int) -> None:
        self._require_tok()
        if self.n_seq_max > 1:
            self.seq_keep(0, n_keep)
            return
        n_keep = max(0, min(n_keep, len(self._tokens)))
        if n_keep == len(self._tokens):
            return
        if n_keep == 0:
            self._reset_cache()
            return
        # cut each cache along the sequence axis (a copy, but only on prefix reuse)
        self._past = [self._ortvalue(np_.numpy()[:, :, :n_keep, :].copy()) for np_ in self._past]
        del self._tokens[n_keep:]

    # --- facts -------------------------------------------------------------------------------
    def metadata(self) -> dict[str, object]:
        info = self.info
        return {
            "architecture": info.architecture,
            "name": info.config.get("_name_or_path") or info.folder.name,
            "path": self.path,
            "folder": str(info.folder),
            "variants": [str(p.relative_to(info.folder)) for p in info.variants],
            "size_bytes": info.weights_bytes,
            "n_layer": info.n_layer,
            "n_head_kv": info.n_head_kv,
            "head_dim": info.head_dim,
            "kv_dtype": info.kv_dtype,
            "n_ctx_train": info.context_length,
            "n_vocab": self.n_vocab,
            "provider": self.provider,
            "providers": list(self.providers),
            "provider_reason": self.provider_reason,
            "optimized_model": str(self.optimized_path) if self.optimized_path else None,
            "tokenizer": self._token_bytes.kind,
        }

    # --- lifetime ----------------------------------------------------------------------------
    def _require_tok(self):
        if self._closed:
            raise GenerationError("this model has been closed; load it again")
        return self._tokenizer

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._past = []
        self._tokens = []
        self._rows = [self._tokens]
        self._logits_value = None
        self._binding = None
        self._session = None
