"""The public Model object and `load()`: a model name or file in, text out.

    import localllm
    with localllm.load("model.gguf") as llm:
        print(llm.generate("Hello", max_tokens=32))
        for chunk in llm.chat_stream([{"role": "user", "content": "Hi"}]):
            print(chunk.text, end="")

One generation runs at a time per model: concurrent callers wait their turn on a lock.
A stream holds the lock from its first chunk until it finishes, is closed, or is
garbage-collected.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .chat_template import chat_formatter
from .errors import ContextOverflowError, GenerationError, InsufficientMemoryError, ModelUnavailableError
from .generation import Chunk, Completion, SamplingOptions, join, run
from .placement import Placement

if TYPE_CHECKING:  # pragma: no cover
    from .hardware import Hardware
    from .runtimes.base import Engine

__all__ = ["Model", "ModelInfo", "load"]

log = logging.getLogger(__name__)

Message = Mapping[str, Any]
# close() cancels the running generation, which then ends within a token; a stream that
# is held but not iterated (same thread, or abandoned) would block forever without a bound.
_CLOSE_WAIT_S = 30.0


@dataclass(frozen=True)
class ModelInfo:
    """What was loaded, where, and how."""

    name: str
    path: str
    runtime: str
    placement: Placement
    n_ctx: int
    template_source: str  # "gguf" (the model's own) | "fallback-chatml" | "fallback-plain"
    template_note: str = ""  # why a fallback was used
    note: str = ""  # set when load("auto") fell back to the built-in starter model: why, and what to get
    load_seconds: float = 0.0
    metadata: Mapping[str, object] = field(default_factory=dict, compare=False)


class _AnyEvent:
    """Set when any of the given events is set (the model's cancel() or a caller's stop_event)."""

    def __init__(self, *events: Any) -> None:
        self._events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self._events)


class Model:
    """A loaded model. Build it with `localllm.load()`."""

    def __init__(self, engine: "Engine", *, name: str, path: str | os.PathLike[str],
                 placement: Placement, plan: object | None = None) -> None:
        self._engine = engine
        self._lock = threading.Lock()  # a Lock, not an RLock: a generator may be closed from another thread
        self._cancel = threading.Event()
        self._closed = False
        self._formatter = chat_formatter(engine.chat_template, bos_token=engine.bos_token,
                                         eos_token=engine.eos_token, has_token=engine.has_token)
        # a fallback format's end-of-turn strings that are single control tokens (ChatML's
        # <|im_end|> in a model without a template): control tokens have no text, so a stop
        # string would never see them
        self._turn_end_tokens = frozenset(
            engine.tokenize(s, add_bos=False, special=True)[0] for s in self._formatter.stop if engine.has_token(s))
        self.plan = plan
        self.info = ModelInfo(
            name=name, path=os.fspath(path), runtime=engine.runtime, placement=placement,
            n_ctx=engine.n_ctx, template_source=self._formatter.source,
            template_note=self._formatter.reason, load_seconds=engine.load_seconds,
            metadata=engine.metadata())

    # --- text in, text out -----------------------------------------------------------
    def generate(self, prompt: str, *, stop_event: threading.Event | None = None, **options: Any) -> Completion:
        """Complete `prompt`; the join of `stream`.

        Args:
            prompt: raw text (no chat template applied).
            stop_event: set it (from any thread) to stop early; finish_reason is then "cancelled".
            **options: SamplingOptions fields: temperature, top_k, top_p, min_p, repeat_penalty,
                repeat_last_n, seed, max_tokens, stop.

        Raises:
            TypeError: an unknown option. ValueError: a bad option value.
            ContextOverflowError: the prompt does not fit the context window.
        """
        return join(self.stream(prompt, stop_event=stop_event, **options))

    def stream(self, prompt: str, *, stop_event: threading.Event | None = None,
               **options: Any) -> Iterator[Chunk]:
        """Complete `prompt`, yielding Chunks as they come; the last has finish_reason and timings.

        Options are checked and the prompt measured now; generation starts (and waits for
        the model) at the first `next()`.
        """
        opts = SamplingOptions.from_kwargs(**options)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}; use chat() for messages")
        tokens = self._tokenize_prompt(prompt)
        return self._run(tokens, opts, stop_event)

    def chat(self, messages: Sequence[Message], *, stop_event: threading.Event | None = None,
             **options: Any) -> Completion:
        """Reply to a conversation (list of {"role", "content"} dicts) with the model's chat template."""
        return join(self.chat_stream(messages, stop_event=stop_event, **options))

    def chat_stream(self, messages: Sequence[Message], *, stop_event: threading.Event | None = None,
                    **options: Any) -> Iterator[Chunk]:
        """Like `chat`, yielding Chunks.

        Raises:
            ChatTemplateError: malformed messages, or the template rejects them.
        """
        opts = SamplingOptions.from_kwargs(**options)
        if self._formatter.stop:  # a fallback format needs its own stop strings
            opts = SamplingOptions.from_kwargs(opts, stop=tuple(dict.fromkeys((*opts.stop, *self._formatter.stop))))
        tokens = self._tokenize_prompt(self.render_chat(messages))
        return self._run(tokens, opts, stop_event, self._turn_end_tokens)

    def render_chat(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text the chat template makes of messages."""
        return self._formatter.render(messages, add_generation_prompt=add_generation_prompt)

    # --- tokens ----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Token ids of text (no BOS unless asked)."""
        self._require_open()
        return self._engine.tokenize(text, add_bos=add_bos, special=special)

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        """Tokens a prompt (str) or a conversation (messages) takes in the context, BOS included."""
        self._require_open()
        prompt = text if isinstance(text, str) else self.render_chat(text)
        return len(self._tokenize_prompt(prompt))

    # --- control ---------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the generation running now (if any); it ends with finish_reason "cancelled"."""
        self._cancel.set()

    def close(self) -> None:
        """Free the model's memory; waits for a running generation. Idempotent."""
        self._cancel.set()
        if not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            raise GenerationError(
                f"model {self.info.name!r} could not close: a stream still holds it after "
                f"{_CLOSE_WAIT_S:.0f} s; close or finish that stream first")
        try:
            if not self._closed:
                self._closed = True
                self._engine.close()
        finally:
            self._lock.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return f"<Model {i.name!r} {i.runtime} n_ctx={i.n_ctx}{' closed' if self._closed else ''}>"

    # --- internals -------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._closed:
            raise GenerationError(f"model {self.info.name!r} is closed; load it again")

    def _tokenize_prompt(self, prompt: str) -> list[int]:
        self._require_open()
        bos = self._engine.bos_token
        # a template that writes the BOS text itself must not get a second BOS
        add_bos = not (bos and prompt.startswith(bos))
        return self._engine.tokenize(prompt, add_bos=add_bos, special=True)

    def _run(self, tokens: list[int], opts: SamplingOptions, stop_event: Any,
             stop_tokens: frozenset[int] = frozenset()) -> Iterator[Chunk]:
        n_ctx = self._engine.n_ctx
        if len(tokens) >= n_ctx:
            raise ContextOverflowError(
                f"the prompt is {len(tokens)} tokens but the context window of {self.info.name} is "
                f"{n_ctx} tokens (max_tokens {opts.max_tokens}); shorten the prompt or load with "
                f"a larger context (load(..., context=N))",
                n_prompt=len(tokens), n_ctx=n_ctx, max_tokens=opts.max_tokens)
        return self._locked(tokens, opts, stop_event, stop_tokens)

    def _locked(self, tokens: list[int], opts: SamplingOptions, stop_event: Any,
                stop_tokens: frozenset[int]) -> Iterator[Chunk]:
        with self._lock:  # held until the stream ends, is closed, or is collected
            self._require_open()
            self._cancel.clear()
            yield from run(self._engine, tokens, opts, _AnyEvent(self._cancel, stop_event), stop_tokens=stop_tokens)


# --- load ----------------------------------------------------------------------------
# Context for a local file when no plan says otherwise: llama.cpp's server default
# (n_ctx 4096), capped at what the model was trained for.
DEFAULT_LOCAL_CONTEXT = 4096
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def load(model: str | os.PathLike[str] = "auto", *, context: int | None = None, runtime: str | None = None,
         offline: bool | None = None, progress: Callable[..., Any] | None = None,
         force: bool = False, hardware: "Hardware | None" = None) -> Model:
    """Load a model: "auto", a catalog name (optionally "name:quant"), a .gguf file or an ONNX folder.

    Args:
        model: what to load. "auto" picks the best catalog model that fits this machine.
        context: context window in tokens (default: the plan's choice).
        runtime: "llama.cpp" or "onnxruntime" (default: the plan's choice).
        offline: never touch the network (default: LOCALLLM_OFFLINE / HF_HUB_OFFLINE).
        progress: download progress callback, passed to the store.
        force: load even when the plan predicts it will not fit in memory.
        hardware: plan for these facts instead of probing this machine (a caller that
            already probed, or a profile in tests).

    Raises:
        InsufficientMemoryError: the plan does not fit (and not force).
        InvalidModelError: the file is malformed or refused.
        ModelNotFoundError, DownloadError, RuntimeUnavailableError.
    """
    from .runtimes import load_engine

    path = _as_local_path(model)
    if path is not None:
        info = _validate(path)
        plan, placement = _plan_local(path, info, context=context, runtime=runtime, hardware=hardware)
        if plan is not None:
            _refuse_unfit(plan, force)
        name = path.stem if path.is_file() else path.name
    else:
        from . import planner, store

        plan = planner.plan(str(model), context=context, runtime=runtime, hardware=hardware)
        _refuse_unfit(plan, force)
        try:
            path = Path(store.fetch(plan.variant, progress=progress, offline=offline))
        except ModelUnavailableError as exc:
            if str(model) != "auto":
                raise
            return _load_starter(plan, exc, context=context, hardware=hardware)
        _validate(path)
        placement = plan.placement
        name = plan.variant.name
    engine = load_engine(path, placement)
    try:
        return Model(engine, name=name, path=path, placement=placement, plan=plan)
    except BaseException:
        engine.close()
        raise


# --- starter fallback: "auto" with nothing to run offline --------------------------------
def _load_starter(wanted: Any, exc: Exception, *, context: int | None, hardware: "Hardware | None") -> Model:
    """The starter model shipped in the package, when the model "auto" chose is not on disk and
    cannot be downloaded; `info.note` (also logged) says so and names the model to get."""
    from .starter import starter_gguf

    name = wanted.variant.name
    note = (f"{name} is the model for this machine, but it is not on disk and cannot be downloaded now "
            f"({str(exc).rstrip('.')}). Using the built-in starter model instead: it knows small sums, a little small talk "
            f"and localllm itself. With network access, get the real one: localllm pull {name}")
    log.warning("%s", note)
    del context  # the caller's context was meant for the other model; the starter uses its own
    model = load(starter_gguf(), hardware=hardware)
    model.info = replace(model.info, note=note)
    return model


def _refuse_unfit(plan: Any, force: bool) -> None:
    if plan.fits or force:
        return
    raise InsufficientMemoryError(
        f"{plan.variant.name} is predicted not to fit in this machine's memory "
        f"(needs {plan.needed / 2**30:.2f} GiB, {_gib(plan.available)} available); pass force=True "
        f"to try anyway, or choose a smaller model or context.\n{plan.explain()}",
        needed=plan.needed, available=plan.available, plan=plan)


def _gib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.2f} GiB"


def _as_local_path(model: str | os.PathLike[str]) -> Path | None:
    """A Path when `model` names something on disk (or clearly a file), else None (a catalog name)."""
    if isinstance(model, os.PathLike):
        return Path(model)
    text = str(model)
    if text == "auto":
        return None
    p = Path(text).expanduser()
    if p.exists() or text.lower().endswith((".gguf", ".onnx", *_PICKLE_SUFFIXES)) or os.sep in text:
        return p
    return None


def _validate(path: Path) -> Any:
    from . import validate

    return validate.validate_model_path(path)


def _plan_local(path: Path, info: Any, *, context: int | None, runtime: str | None,
                hardware: "Hardware | None") -> tuple[object | None, Placement]:
    """A plan and placement for a local file: the planner's, sized from the GGUF header."""
    from .errors import CatalogError

    if path.is_file() and hasattr(info, "tensors"):
        from .catalog import family_from_gguf_metadata
        from .planner import plan_local

        try:
            tied = not any(t.name == "output.weight" for t in info.tensors)
            family = family_from_gguf_metadata(info.metadata, name=path.stem, tied_embeddings=tied)
        except CatalogError as exc:  # an architecture the planner cannot size: llama.cpp may still run it
            log.warning("cannot plan %s (%s); using a CPU placement", path, exc)
        else:
            plan = plan_local(family, weight_bytes=info.tensor_bytes, path=str(path), context=context,
                              runtime=runtime, hardware=hardware)
            return plan, plan.placement
    if hasattr(info, "kv_bytes_per_token"):  # an ONNX folder or .onnx file (OnnxFolderInfo)
        from .planner import plan_local_onnx

        if runtime not in (None, "onnxruntime", "onnx"):
            from .errors import InvalidModelError

            raise InvalidModelError(f"{path} is an ONNX model; runtime {runtime!r} cannot run it "
                                    "(use runtime='onnxruntime')", path=str(path))
        plan = plan_local_onnx(info, path=str(path), context=context, hardware=hardware)
        return plan, plan.placement
    # an architecture the planner cannot size: a CPU placement from probe() facts
    from .hwprobe import probe

    hw = hardware if hardware is not None else probe()
    cores = hw.cpu.physical_cores or int(hw.cpu.effective_cores or 1)
    meta = getattr(info, "metadata", None) or {}
    trained = meta.get(f"{meta.get('general.architecture')}.context_length")
    n_ctx = context or min(DEFAULT_LOCAL_CONTEXT, int(trained) if trained else DEFAULT_LOCAL_CONTEXT)
    rt = runtime or ("onnxruntime" if path.is_dir() else "llama.cpp")
    return None, Placement(runtime=rt, n_ctx=n_ctx, n_threads=max(1, int(cores)))
