"""Sampling options: how to pick tokens, checked once when a request is made.

`SamplingOptions` is re-exported by `localllm.generation` (its historical home) and `localllm`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, NoReturn

from localllm.constraints import CONSTRAINT_OPTIONS, Constraint, make_constraint
from localllm.errors import InvalidOptionError, InvalidOptionTypeError
from localllm.speculative import DEFAULT_SPECULATIVE, check_speculative

__all__ = ["SamplingOptions"]

# Sampling defaults: llama.cpp's `common_params_sampling` (common/common.h), which the
# llama.cpp CLI and server use, so a model behaves here as it does there.
DEFAULT_TEMPERATURE = 0.8  # llama.cpp temp
DEFAULT_TOP_K = 40  # llama.cpp top_k
DEFAULT_TOP_P = 0.95  # llama.cpp top_p
DEFAULT_MIN_P = 0.05  # llama.cpp min_p
DEFAULT_REPEAT_PENALTY = 1.0  # llama.cpp penalty_repeat (1.0 = off)
DEFAULT_REPEAT_LAST_N = 64  # llama.cpp penalty_last_n
# llama.cpp's n_predict is -1 (unbounded); a library call needs a bound. mlx-lm uses
# 256, Ollama's API effectively runs to the context; 512 covers a typical reply.
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick tokens. temperature 0 is greedy; top_k 0, top_p 1, min_p 0 disable those filters.

    `seed` None draws a fresh seed per request; an int in [0, 2**32-1] makes sampling reproducible.
    `max_tokens` None generates until an end-of-generation token or a full context.
    `stop` is one string, a sequence of strings, or None (no stop strings).
    `speculative` "prompt-lookup" drafts tokens from n-gram matches in the context and verifies
    them in one batched evaluation (`localllm.speculative`): faster when the reply repeats the
    prompt, each token still sampled from its own logits; "off" or None disables it; "auto" (the
    default) is prompt-lookup on the runtimes the benchmark found faster with it (llama.cpp), where
    a batch's logits are bit-identical to one-token ones (a q8_0 KV cache, or one thread), so
    greedy output never changes.
    `localllm.batching.run_batch` ignores it (its steps already batch several sequences).
    `constraint` (structured output): `from_kwargs` builds it from one of `json_schema` (a dict, a
    JSON string or a Pydantic model class), `regex`, `choices` (a list of strings) or `grammar`
    (Lark or GBNF); each token is sampled from the tokens the grammar allows next
    (`localllm.constraints`), and the finishing chunk carries `parsed`.

    Raises:
        InvalidOptionError: a value out of its range (a ValueError too).
        InvalidOptionTypeError: a value of the wrong type (a TypeError too).
    """

    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    min_p: float = DEFAULT_MIN_P
    repeat_penalty: float = DEFAULT_REPEAT_PENALTY
    repeat_last_n: int = DEFAULT_REPEAT_LAST_N
    seed: int | None = None
    max_tokens: int | None = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = ()
    speculative: str | None = DEFAULT_SPECULATIVE
    # structured output (localllm.constraints): from_kwargs makes it of json_schema=, regex=,
    # choices= or grammar= (one of them), checked and compiled once
    constraint: Constraint | None = None

    def __post_init__(self) -> None:
        # the first bad option raises: its error carries that option's name, value and range
        for name, kind, ok, allowed in _OPTION_RULES:
            value = getattr(self, name)
            if value is None and name in _MAY_BE_NONE:
                continue
            if kind is int:
                if not _is_int(value):
                    _bad_type(name, value, allowed)
                value = int(value)  # a numpy integer becomes a plain one
            elif not _is_number(value):
                _bad_type(name, value, allowed)
            if not ok(value):
                raise InvalidOptionError(
                    f"invalid sampling option: {name} must be {allowed}, got {value!r}",
                    option=name,
                    value=value,
                    allowed=allowed,
                )
            object.__setattr__(self, name, value)
        object.__setattr__(self, "stop", _check_stop(self.stop))
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            _bad_type("constraint", self.constraint, "a localllm.constraints.Constraint or None")
        object.__setattr__(self, "speculative", check_speculative(self.speculative))

    @classmethod
    def from_kwargs(cls, base: SamplingOptions | None = None, **options: Any) -> SamplingOptions:
        """Options from keyword arguments; an unknown name raises InvalidOptionTypeError (a TypeError)
        listing the valid ones."""
        # Any, not object: callers pass whatever they were given; __post_init__ checks each value's type
        asked = {k: options.pop(k) for k in CONSTRAINT_OPTIONS if k in options}
        if any(v is not None for v in asked.values()):
            options["constraint"] = make_constraint(**asked)
        known = {f.name for f in fields(cls)} | set(CONSTRAINT_OPTIONS)
        unknown = sorted(set(options) - known)
        if unknown:
            valid = ", ".join(sorted(known - {"constraint"}))  # made of the four above
            raise InvalidOptionTypeError(
                f"unknown sampling option(s) {', '.join(unknown)}; valid options are: {valid}",
                option=", ".join(unknown),
                value=options[unknown[0]] if len(unknown) == 1 else {k: options[k] for k in unknown},
                allowed=valid,
            )
        return replace(base or cls(), **options)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


# The top of llama.cpp's seed range (uint32; its LLAMA_DEFAULT_SEED is 0xFFFFFFFF).
MAX_SEED = 2**32 - 1
# llama.cpp sets no top; past 2 a reply soon runs out of words it may use again (the common
# ones are in every window of repeat_last_n), so a larger value is taken for a slip of the keyboard.
MAX_REPEAT_PENALTY = 2.0


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite(value: float) -> bool:
    return math.isfinite(value)


# (option, int or float, the check, what is allowed), in field order
_OPTION_RULES: tuple[tuple[str, type, Callable[[float], bool], str], ...] = (
    ("temperature", float, lambda v: _finite(v) and v >= 0, "a number >= 0 and finite (0 is greedy)"),
    ("top_k", int, lambda v: v >= 0, "an integer >= 0 (0 disables it)"),
    ("top_p", float, lambda v: 0 < v <= 1, "a number in (0, 1] (1 disables it)"),
    ("min_p", float, lambda v: 0 <= v < 1, "a number in [0, 1) (0 disables it)"),
    ("repeat_penalty", float, lambda v: 0 < v <= MAX_REPEAT_PENALTY, "a number in (0, 2] (1 disables it)"),
    ("repeat_last_n", int, lambda v: v >= 0, "an integer >= 0 (0 disables the penalty)"),
    ("seed", int, lambda v: 0 <= v <= MAX_SEED, f"an integer in [0, {MAX_SEED}] or None (a fresh seed)"),
    ("max_tokens", int, lambda v: v >= 1, "an integer >= 1 or None (until end of text or a full context)"),
)
_MAY_BE_NONE = frozenset({"seed", "max_tokens"})
_STOP_ALLOWED = "a non-empty string, a sequence of non-empty strings, or None"


def _bad_type(name: str, value: object, allowed: str) -> NoReturn:
    raise InvalidOptionTypeError(
        f"invalid sampling option: {name} must be {allowed}, got {value!r} ({type(value).__name__})",
        option=name,
        value=value,
        allowed=allowed,
    )


def _check_stop(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):  # a lone string is one stop string, not its characters
        return (stop,) if stop else _empty_stop(stop)
    if isinstance(stop, (bytes, bytearray, Mapping)) or not isinstance(stop, Iterable):
        _bad_type("stop", stop, _STOP_ALLOWED)
    out = tuple(stop)
    for s in out:
        if not isinstance(s, str):
            raise InvalidOptionTypeError(
                f"invalid sampling option: stop must be {_STOP_ALLOWED}, got {stop!r} "
                f"(its item {s!r} is of type {type(s).__name__})",
                option="stop",
                value=stop,
                allowed=_STOP_ALLOWED,
            )
        if not s:
            _empty_stop(stop)
    return out


def _empty_stop(stop: object) -> NoReturn:
    raise InvalidOptionError(
        f"invalid sampling option: stop must be {_STOP_ALLOWED}, got {stop!r} (an empty string would stop at once)",
        option="stop",
        value=stop,
        allowed=_STOP_ALLOWED,
    )
