"""llama.cpp engine on llama-cpp-python's low-level C bindings.

We drive llama.cpp through its C API (`llama_cpp.llama_cpp`), not the high-level
`Llama` class: the class prints to stderr when verbose and swaps file descriptors 1
and 2 for /dev/null when not (which blanks a running TUI), and its `create_completion`
has failed with "failed to find a memory slot" on small models. Our own loop
(`localllm.generation.run`) decodes one sequence with explicit positions.

Native logging goes through `llama_log_set` into the `localllm.runtimes.llamacpp.native`
logger; nothing is written to the terminal.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from localllm.calibration import ExtraBuffersVerdict, load_calibration, save_extra_buffers
from localllm.errors import GenerationError, InvalidModelError, RuntimeUnavailableError
from localllm.hardware.cpu_load import AdaptiveThreads
from localllm.hardware.detect import probe
from localllm.placement import KVType, Placement
from localllm.repack import EXTRA_BUFFERS_ENV
from localllm.runtimes.base import PROMPT_CHUNK, CachedTokens
from localllm.runtimes.llamacpp_batch import LlamaCppBatch

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["GGML_TYPE_OF_KV", "LlamaCppEngine", "install_log_handler"]

log = logging.getLogger(__name__)
native_log = logging.getLogger(__name__ + ".native")
# Without this, Python's last-resort handler would print native warnings to stderr when
# the application configured no logging; records still propagate to configured handlers.
native_log.addHandler(logging.NullHandler())

INSTALL_HINT = 'pip install "llama-cpp-python==0.3.36"'
# The ggml_type id of each KV cache type (ggml.h: GGML_TYPE_F32=0, F16=1, Q4_0=2, Q8_0=8, BF16=30)
GGML_TYPE_OF_KV: dict[KVType, int] = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}
# enum ggml_log_level (ggml.h, this version): NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4,
# CONT=5 (llama_cpp/_logger.py's comment shows an older order). llama.cpp logs every
# load detail at INFO: that is chatter for us, so it becomes DEBUG.
_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING, 4: logging.ERROR}
_GGML_LOG_LEVEL_CONT = 5
_LLAMA_SPLIT_MODE_LAYER = 1  # llama.h
_LLAMA_MAX_DEVICES = 16  # llama_cpp.LLAMA_MAX_DEVICES upper bound we accept in tensor_split

# ggml's CPU "extra buffer types" repack weights for AMX / interleaved SIMD kernels. The
# AMX path faulted with an invalid opcode (SIGILL, `tilezero`) on one of this project's
# machines (a VM whose CPU reports AMX) and killed the process, so an AMX build is tried
# once per machine first (use_extra_buffers). EXTRA_BUFFERS_ENV: "1" forces on, "0" off.
# (the variable's name lives in localllm.repack: the planner's estimate reads it too)

_lib = None  # the llama_cpp.llama_cpp module once imported
_lib_lock = threading.Lock()
_log_state: dict[str, Any] = {"level": logging.DEBUG, "buf": "", "errors": []}
_MAX_KEPT_ERRORS = 4  # error lines kept for the next exception message
_log_lock = threading.Lock()


def _log_callback(level: int, text: bytes, _user_data: Any) -> None:
    # Runs inside C: an exception here would be printed to stderr by ctypes, so none escapes.
    try:
        with _log_lock:
            if level != _GGML_LOG_LEVEL_CONT:
                _log_state["level"] = _LEVELS.get(level, logging.DEBUG)
            _log_state["buf"] += (text or b"").decode("utf-8", errors="replace")
            if "\n" in _log_state["buf"]:  # messages arrive in pieces; log whole lines
                *lines, _log_state["buf"] = _log_state["buf"].split("\n")
                for line in lines:
                    if line.strip():
                        native_log.log(_log_state["level"], "%s", line)
                        if _log_state["level"] >= logging.ERROR:
                            _log_state["errors"] = [*_log_state["errors"], line.strip()][-_MAX_KEPT_ERRORS:]
    except BaseException:  # noqa: BLE001 - never let anything reach the C caller or stderr
        pass


_c_log_callback = None  # the ctypes function object: must stay alive as long as llama.cpp may call it


def _import_llama_cpp():
    """Import llama_cpp once, route its logging into Python, init the backend."""
    global _lib, _c_log_callback
    with _lib_lock:
        if _lib is not None:
            return _lib
        try:
            import llama_cpp.llama_cpp as lib
        except ImportError as exc:
            raise RuntimeUnavailableError(
                f"llama.cpp runtime is not installed ({exc}); install it with: {INSTALL_HINT}"
            ) from exc
        except OSError as exc:  # the shared library is there but cannot be loaded
            raise RuntimeUnavailableError(
                f"llama.cpp's shared library could not be loaded ({exc}); reinstall with: {INSTALL_HINT}"
            ) from exc
        # llama_cpp's import installs its own callback that prints to stderr: replace it.
        _c_log_callback = lib.llama_log_callback(_log_callback)
        lib.llama_log_set(_c_log_callback, ctypes.c_void_p(0))
        lib.llama_backend_init()
        _lib = lib
        return lib


def _take_native_error() -> str:
    """The error lines llama.cpp logged since the last call (then forgotten), for exception messages."""
    with _log_lock:
        lines, _log_state["errors"] = _log_state["errors"], []
    return f" (llama.cpp: {'; '.join(lines)})" if lines else ""


def use_extra_buffers() -> bool:
    """Whether to let ggml repack weights into extra buffer types (see EXTRA_BUFFERS_ENV).

    On by default, as in llama.cpp. A build with AMX kernels gets a one-off trial on this
    machine first (`extra_buffers_verdict`): some VMs report AMX and grant it to the process,
    yet the kernels fault with SIGILL, which would kill the process at the first token.
    """
    value = os.environ.get(EXTRA_BUFFERS_ENV, "").strip()
    if value in ("0", "1"):
        return value == "1"
    info = _import_llama_cpp().llama_print_system_info().decode("utf-8", errors="replace")
    if "AMX_INT8 = 1" not in info:
        return True
    verdict = extra_buffers_verdict(info)
    if not verdict.ok:
        log.warning(
            "llama.cpp's AMX kernels failed their trial on this machine (%s): weight repacking "
            "(extra buffers) is off; set %s=1 to force it on",
            verdict.detail,
            EXTRA_BUFFERS_ENV,
        )
    return verdict.ok


# The trial: a tiny Q4_0 model (a type both the AMX and the repack buffers take, rows of whole
# tiles) loaded with extra buffers on and asked for a few tokens, in a child process so that a
# SIGILL kills the child, not us.
_TRIAL_CODE = """
import sys, tempfile, pathlib
from localllm.placement import Placement
from localllm.runtimes.llamacpp import LlamaCppEngine
from localllm.synthetic import Shape, quantize_gguf, write_llama_gguf
d = pathlib.Path(tempfile.mkdtemp(prefix="localllm-trial-"))
try:
    f16 = write_llama_gguf(d / "t.gguf", Shape(n_layer=1, n_embd=256, n_head=4, n_head_kv=4, n_ff=512), seed=0)
    q = quantize_gguf(f16, d / "t-q4_0.gguf", "Q4_0", threads=1)
    e = LlamaCppEngine(q, Placement(runtime="llama.cpp", n_ctx=64, n_threads=1, n_batch=8, n_ubatch=8))
    for _ in range(3):
        e.eval(e.tokenize("hello", add_bos=True)[:4] if not e._tokens else [1])
    e.close()
    print("decoded 3 steps with extra buffers (AMX, repacked weights) on")
finally:
    import shutil
    shutil.rmtree(d, ignore_errors=True)
"""
TRIAL_TIMEOUT_S = 120.0


def trial_extra_buffers(*, timeout: float = TRIAL_TIMEOUT_S) -> tuple[bool, str]:
    """Run the extra-buffers trial in a child process: (it worked, what happened)."""
    import subprocess
    import sys

    env = {**os.environ, EXTRA_BUFFERS_ENV: "1"}
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _TRIAL_CODE], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return False, f"the trial did not finish in {timeout:.0f} s"
    except OSError as exc:
        return False, f"the trial could not start ({exc})"
    return trial_outcome(proc.returncode, proc.stdout, proc.stderr)


def trial_outcome(returncode: int, stdout: str, stderr: str) -> tuple[bool, str]:
    """The verdict on a finished trial child."""
    import signal

    if returncode == 0:
        return True, (stdout.strip().splitlines() or ["ok"])[-1]
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return False, f"the trial was killed by {name}"
    last = (stderr.strip().splitlines() or ["no message"])[-1]
    return False, f"the trial exited with status {returncode}: {last[:200]}"


def _build_id(info: str) -> str:
    import zlib
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("llama_cpp_python")
    except PackageNotFoundError:
        v = "unknown"
    return f"llama-cpp-python {v} {zlib.crc32(info.encode()):08x}"


def extra_buffers_verdict(info: str | None = None) -> ExtraBuffersVerdict:
    """This machine's kept verdict on the installed build's extra buffers, trying once when
    none is kept (about a second; the verdict lives in the machine's calibration file)."""
    from datetime import date

    if info is None:
        info = _import_llama_cpp().llama_print_system_info().decode("utf-8", errors="replace")
    build = _build_id(info)
    hw = probe()
    kept = load_calibration(hw).extra_buffers
    if kept is not None and kept.build == build:
        return kept
    ok, detail = trial_extra_buffers()
    verdict = ExtraBuffersVerdict(build=build, ok=ok, detail=detail, date=date.today().isoformat())
    try:
        save_extra_buffers(hw, verdict)
    except OSError as exc:
        log.warning("could not keep the extra-buffers verdict (%s); the trial runs again next time", exc)
    log.info("extra-buffers trial: %s (%s)", "passed" if ok else "failed", detail)
    return verdict


def _resident_bytes() -> int | None:
    """This process's resident set now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def install_log_handler() -> None:
    """Route llama.cpp's native logging into Python `logging` (done on first load anyway)."""
    _import_llama_cpp()


class LlamaCppEngine(LlamaCppBatch, CachedTokens):
    """One llama.cpp model and context, per the `Engine` protocol; with `placement.n_seq` N > 1 also
    a `BatchEngine` of N sequences (sequence 0 is the one `eval`/`rewind` work on)."""

    runtime = "llama.cpp"

    def __init__(self, path: str | os.PathLike[str], placement: Placement) -> None:
        import numpy as np

        lib = _import_llama_cpp()
        self._lib = lib
        self._np = np
        self.path = os.fspath(path)
        self.placement = placement
        self._model = None
        self._ctx = None
        self._batch = None
        n_seq = max(1, placement.n_seq)
        self._seqs: list[list[int]] = [[] for _ in range(n_seq)]  # tokens in each sequence's cells
        self._tokens = self._seqs[0]  # the same list: eval/rewind/cached_tokens work on sequence 0
        if placement.kv_type not in GGML_TYPE_OF_KV:
            raise ValueError(f"unknown KV cache type {placement.kv_type!r}; use one of {sorted(GGML_TYPE_OF_KV)}")
        if len(placement.tensor_split) > _LLAMA_MAX_DEVICES:
            raise ValueError(f"tensor_split has {len(placement.tensor_split)} entries; at most {_LLAMA_MAX_DEVICES}")
        if not os.path.isfile(self.path):
            raise InvalidModelError(f"model file not found: {self.path}", path=self.path)

        t0 = time.perf_counter()
        # the thread count is re-chosen before each generation (Model); the load is the first
        # window over which other programs' CPU use is measured. Fixed threads (or one): None.
        batch_threads = placement.n_threads_batch or placement.n_threads
        adapts = placement.adapt_threads and max(placement.n_threads, batch_threads) > 1
        self.adaptive_threads = AdaptiveThreads(placement.n_threads, batch_threads) if adapts else None
        _take_native_error()
        self._rss_before = _resident_bytes()
        self.resident_growth: int | None = None  # set after the first evaluation (all weights touched)
        mparams = lib.llama_model_default_params()
        # -1 means all layers; llama.cpp takes any number above n_layer as "all"
        mparams.n_gpu_layers = 0x7FFFFFFF if placement.n_gpu_layers < 0 else placement.n_gpu_layers
        mparams.split_mode = _LLAMA_SPLIT_MODE_LAYER
        mparams.main_gpu = placement.main_gpu
        if placement.tensor_split:
            # kept on self: llama.cpp reads the pointer during load
            self._c_split = (ctypes.c_float * lib.LLAMA_MAX_DEVICES)(*placement.tensor_split)
            mparams.tensor_split = self._c_split
        mparams.load_mode = lib.LLAMA_LOAD_MODE_MMAP if placement.use_mmap else lib.LLAMA_LOAD_MODE_NONE
        self.extra_buffers = use_extra_buffers()
        mparams.use_extra_bufts = self.extra_buffers
        self._model = lib.llama_model_load_from_file(self.path.encode("utf-8"), mparams)
        if not self._model:
            self._model = None
            raise InvalidModelError(
                f"llama.cpp could not load {self.path}{_take_native_error()}; "
                "check the file is a complete GGUF of an architecture this llama.cpp supports",
                path=self.path,
            )
        self._vocab = lib.llama_model_get_vocab(self._model)

        cparams = lib.llama_context_default_params()
        n_batch = max(1, min(placement.n_batch, placement.n_ctx))
        cparams.n_ctx = placement.n_ctx * n_seq  # each sequence gets n_ctx cells
        cparams.n_batch = n_batch
        cparams.n_ubatch = max(1, min(placement.n_ubatch, n_batch))
        cparams.n_seq_max = n_seq
        # One KV stream per sequence (not unified): each sequence's cells then start at 0 and lie
        # in position order, as a lone sequence's do, so its attention sums run in the same order
        # and greedy outputs match single-sequence ones; each gets exactly n_ctx cells. The cost:
        # a shared prefix is copied as a whole stream (seq_copy), not shared in place.
        cparams.kv_unified = False
        cparams.n_threads = placement.n_threads
        cparams.n_threads_batch = placement.n_threads_batch or placement.n_threads
        cparams.flash_attn_type = (
            lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if placement.flash_attn else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        cparams.type_k = GGML_TYPE_OF_KV[placement.kv_type]
        cparams.type_v = GGML_TYPE_OF_KV[placement.kv_type]
        cparams.no_perf = True  # we time ourselves
        self._ctx = lib.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            self._ctx = None
            self.close()
            raise GenerationError(
                f"llama.cpp could not create a context of {placement.n_ctx} tokens for {self.path} "
                f"(KV cache {placement.kv_type}, flash_attn={placement.flash_attn}){_take_native_error()}; "
                "try a smaller context or the f16 KV cache"
            )
        self._mem = lib.llama_get_memory(self._ctx)
        self.n_seq_max = n_seq
        # the per-sequence context (llama.cpp splits its n_ctx evenly over the streams)
        self.n_ctx = int(lib.llama_n_ctx(self._ctx) if n_seq == 1 else lib.llama_n_ctx_seq(self._ctx))
        self.n_batch = n_batch
        # every layer on a GPU: prompt batches go at thousands of tokens/s, so a whole n_batch is
        # seen well within a second and smaller ones waste the GPU (not measured here: no GPU);
        # a layer on the CPU paces it like the CPU, hence PROMPT_CHUNK
        self.prompt_chunk = n_batch if placement.n_gpu_layers < 0 else min(n_batch, PROMPT_CHUNK)
        self.n_vocab = int(lib.llama_vocab_n_tokens(self._vocab))
        self._batch = lib.llama_batch_init(n_batch, 0, 1)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._piece_cache: dict[int, bytes] = {}
        self._logits_at: int | None = None  # the address self._logits_view looks at
        self._logits_view: np.ndarray | None = None
        self._eog_cache: dict[int, bool] = {}
        self._meta = self._read_metadata()
        self.load_seconds = time.perf_counter() - t0
        log.debug(
            "loaded %s in %.2fs (n_ctx %d, n_gpu_layers %d, threads %d)",
            self.path,
            self.load_seconds,
            self.n_ctx,
            placement.n_gpu_layers,
            placement.n_threads,
        )

    # --- tokens ----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        lib = self._require()
        data = text.encode("utf-8")
        n_max = len(data) + 8
        buf = (lib.llama_token * n_max)()
        n = lib.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_bos, special)
        if n < 0:  # buffer too small: -n is the size needed
            n_max = -n
            buf = (lib.llama_token * n_max)()
            n = lib.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_bos, special)
            if n < 0:
                raise GenerationError(f"llama.cpp failed to tokenize {len(data)} bytes of text (code {n})")
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        piece = self._piece_cache.get(token)
        if piece is None:
            lib = self._require()
            n = lib.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
                piece = buf.raw[:n]
            else:
                piece = self._piece_buf.raw[:n]
            self._piece_cache[token] = piece
        return piece

    def vocab_bytes(self) -> list[bytes]:
        lib = self._require()
        control = lib.LLAMA_TOKEN_ATTR_CONTROL
        # control tokens have no text in token_bytes (special=False); llguidance wants them marked
        return [
            b"\xff" + (self._token_text(t) or "").encode("utf-8")
            if lib.llama_vocab_get_attr(self._vocab, t) & control
            else self.token_bytes(t)
            for t in range(self.n_vocab)
        ]

    def is_eog(self, token: int) -> bool:
        eog = self._eog_cache.get(token)
        if eog is None:
            eog = self._eog_cache[token] = bool(self._lib.llama_vocab_is_eog(self._vocab, token))
        return eog

    def has_token(self, text: str) -> bool:
        try:
            ids = self.tokenize(text, add_bos=False, special=True)
        except GenerationError:
            return False
        return len(ids) == 1 and bool(
            self._lib.llama_vocab_get_attr(self._vocab, ids[0])
            & (self._lib.LLAMA_TOKEN_ATTR_CONTROL | self._lib.LLAMA_TOKEN_ATTR_USER_DEFINED)
        )

    def _token_text(self, token: int) -> str | None:
        if token < 0:
            return None
        text = self._lib.llama_vocab_get_text(self._vocab, token)
        return text.decode("utf-8", errors="replace") if text is not None else None

    @property
    def bos_token(self) -> str | None:
        return self._token_text(self._lib.llama_vocab_bos(self._vocab))

    @property
    def eos_token(self) -> str | None:
        return self._token_text(self._lib.llama_vocab_eos(self._vocab))

    @property
    def add_bos(self) -> bool:
        return bool(self._lib.llama_vocab_get_add_bos(self._vocab))

    @property
    def chat_template(self) -> str | None:
        raw = self._lib.llama_model_chat_template(self._model, None)
        return raw.decode("utf-8", errors="replace") if raw else None

    # --- evaluation ------------------------------------------------------------------
    def eval(self, tokens: Sequence[int]) -> np.ndarray:
        lib = self._require()
        tokens = self._room_for(tokens)
        batch = self._batch
        assert batch is not None  # made with the context; _require refused a closed engine
        for start in range(0, len(tokens), self.n_batch):
            part = tokens[start : start + self.n_batch]
            pos0 = len(self._tokens)
            n = len(part)
            for i, tok in enumerate(part):
                batch.token[i] = tok
                batch.pos[i] = pos0 + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = 0
            batch.logits[n - 1] = 1
            batch.n_tokens = n
            rc = lib.llama_decode(self._ctx, batch)
            if rc != 0:
                # the failed batch may have left part of its cells: drop them so state stays exact
                lib.llama_memory_seq_rm(self._mem, 0, pos0, -1)
                raise GenerationError(
                    f"llama_decode returned {rc} at position {pos0} ({n} tokens, n_ctx {self.n_ctx})"
                    + ("; the KV cache has no free slot" if rc == 1 else "")
                    + _take_native_error()
                )
            self._tokens.extend(part)
        if self.resident_growth is None and self._rss_before is not None:
            now = _resident_bytes()
            self.resident_growth = None if now is None else now - self._rss_before
        ptr = lib.llama_get_logits_ith(self._ctx, -1)
        if not ptr:
            raise GenerationError("llama.cpp returned no logits for the last token")
        # zero-copy view into llama.cpp's buffer; valid until the next decode. The buffer stays put
        # from one decode to the next, so its view is made once (as_array costs ~20 us a token)
        address = ctypes.cast(ptr, ctypes.c_void_p).value
        if address != self._logits_at:
            self._logits_view = self._np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
            self._logits_at = address
        assert self._logits_view is not None
        return self._logits_view

    def rewind(self, n_keep: int) -> None:
        lib = self._require()
        n_keep = max(0, min(n_keep, len(self._tokens)))
        if n_keep == len(self._tokens):
            return
        if not lib.llama_memory_seq_rm(self._mem, 0, n_keep, -1):
            lib.llama_memory_seq_rm(self._mem, 0, -1, -1)  # partial removal unsupported (recurrent models)
            n_keep = 0
        del self._tokens[n_keep:]

    # --- threads ---------------------------------------------------------------------
    def set_threads(self, n: int, n_batch: int | None = None) -> None:
        """Threads for the next decode calls (n) and prompt batches (n_batch; None: n). Cheap:
        llama.cpp reads the count at each call (in this OpenMP build, the team size per graph)."""
        lib = self._require()
        n = max(1, int(n))
        lib.llama_set_n_threads(self._ctx, n, max(1, int(n_batch)) if n_batch else n)

    @property
    def n_threads(self) -> int:
        """Threads decoding now (llama.cpp's own count)."""
        return int(self._require().llama_n_threads(self._ctx))

    @property
    def n_threads_batch(self) -> int:
        """Threads reading prompt batches now."""
        return int(self._require().llama_n_threads_batch(self._ctx))

    @property
    def batch_logits_exact(self) -> bool:
        """Whether a batch's logits are bit-identical to one-token evaluations, so a verified draft
        never changes greedy output (localllm.speculative's "auto" drafts only then). Measured on
        SmolLM2 (benchmarks/bench_speculative.py): a q8_0 KV cache at 2 threads and an f16 one at
        1 thread were identical over 400 tokens; f16 at 2 threads first differed at token 82 (its
        batched attention sums in another order past 256 cells)."""
        return self.placement.kv_type == "q8_0" or self.n_threads == 1

    # --- facts -----------------------------------------------------------------------
    def _read_metadata(self) -> dict[str, str]:
        lib = self._lib
        out: dict[str, str] = {}
        size = 256
        buf = ctypes.create_string_buffer(size)
        for i in range(lib.llama_model_meta_count(self._model)):
            values = []
            for getter in (lib.llama_model_meta_key_by_index, lib.llama_model_meta_val_str_by_index):
                n = getter(self._model, i, buf, len(buf))
                if n >= len(buf):
                    buf = ctypes.create_string_buffer(n + 1)
                    n = getter(self._model, i, buf, len(buf))
                values.append(buf.value.decode("utf-8", errors="replace"))
            out[values[0]] = values[1]
        return out

    def metadata(self) -> dict[str, object]:
        lib = self._require()
        desc = ctypes.create_string_buffer(256)
        lib.llama_model_desc(self._model, desc, len(desc))
        return {
            "architecture": self._meta.get("general.architecture"),
            "name": self._meta.get("general.name"),
            "description": desc.value.decode("utf-8", errors="replace"),
            "parameters": int(lib.llama_model_n_params(self._model)),
            "size_bytes": int(lib.llama_model_size(self._model)),
            "n_layer": int(lib.llama_model_n_layer(self._model)),
            "n_ctx_train": int(lib.llama_model_n_ctx_train(self._model)),
            "n_vocab": self.n_vocab,
            "file_type": self._meta.get("general.file_type"),
            "path": self.path,
            "gguf": {k: v for k, v in self._meta.items() if not k.startswith("tokenizer.chat_template")},
        }

    # --- lifetime --------------------------------------------------------------------
    def _require(self):
        if self._ctx is None and self._model is None:
            raise GenerationError("this model has been closed; load it again")
        return self._lib

    def close(self) -> None:
        lib = self._lib
        if self._batch is not None:
            lib.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx is not None:
            lib.llama_free(self._ctx)
            self._ctx = None
        if self._model is not None:
            lib.llama_model_free(self._model)
            self._model = None
        for tokens in self._seqs:
            tokens.clear()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()
