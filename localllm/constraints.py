"""Structured output: a token mask per step from llguidance, in the loop both runtimes share.

`make_constraint(json_schema=..., regex=..., choices=..., grammar=...)` checks what the caller
asked for and compiles it to an llguidance grammar once, when the options are made
(`SamplingOptions.constraint`). `Guide(engine, constraint)` is one sequence's matcher: before each
sample `apply(logits)` sets the logits of tokens the grammar does not allow to -inf, and after it
`consume(token)` advances the matcher. The sampler is unchanged (greedy, top-k/p, min-p and the
penalties all see the masked logits), so a constraint works the same on llama.cpp and ONNX
Runtime, in `run`, in batches and with speculative drafts (a draft token is only kept when the
masked sample equals it); where drafting runs, the tokens the grammar forces (`Guide.forced`) are
the first drafts.

Why llguidance (benchmarks/bench_constraints.py): it takes JSON schema, regex, Lark and GBNF
grammars with recursion, builds its token trie from the model's own vocabulary in ~0.1 s
(SmolLM2's 49k tokens) and computes a mask in ~0.1-0.3 ms a token; llama.cpp and
onnxruntime-genai use it. outlines-core compiles a schema to a DFA over the whole vocabulary
first (regular languages only: no recursive schemas or grammars); xgrammar needs torch.

The tokenizer llguidance needs is made from the engine (`Engine.vocab_bytes`: every token's
bytes, control tokens marked with a 0xFF byte as llguidance expects) and kept per engine.
llguidance is imported at the first constrained request, not with localllm.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localllm.errors import GenerationError, InvalidOptionError, InvalidOptionTypeError, RuntimeUnavailableError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from localllm.runtimes.base import Engine

__all__ = ["CONSTRAINT_OPTIONS", "Capture", "Constraint", "Guide", "capture_for", "closed_schema", "make_constraint"]

# the keyword options that ask for structured output; at most one per request
CONSTRAINT_OPTIONS = ("json_schema", "regex", "choices", "grammar")
_INSTALL = "pip install llguidance (a dependency of localllm; reinstall localllm to get it)"


@dataclass(frozen=True)
class Constraint:
    """What a generation must match, compiled for llguidance.

    `kind` is "json_schema", "regex", "choices", "grammar" or "tools" (a chat with tools: the
    grammar lets the model write text or calls, `tool_format` says how calls are written).
    `source` is what the caller gave, as text (the schema as JSON), for messages and hashing.
    """

    kind: str
    grammar: str  # llguidance's grammar text (what LLMatcher takes)
    source: str = ""
    model: type | None = None  # a Pydantic model class: `parsed` is an instance of it
    tool_format: Any = None  # kind "tools": the localllm.tools.ToolFormat calls are written in
    tools: tuple[str, ...] = ()  # kind "tools": the tool names

    def parse(self, text: str) -> Any:
        """The value a complete output stands for: the JSON value (or the Pydantic instance) for a
        schema, the choice for choices, None for a regex or grammar (the text is the value).

        Raises:
            GenerationError: the output does not parse or validate (a schema keyword the grammar
                could not enforce); the message has the text.
        """
        if self.kind == "choices":
            return text
        if self.kind != "json_schema":
            return None
        try:
            if self.model is not None:
                return self.model.model_validate_json(text)  # type: ignore[attr-defined]
            return json.loads(text)
        except Exception as exc:
            raise GenerationError(
                f"the output does not {'validate' if self.model is not None else 'parse'} against the JSON "
                f"schema ({type(exc).__name__}: {str(exc)[:300]}); output: {text[:200]!r}. The grammar could not "
                "enforce every keyword of the schema: simplify the schema, or check the text yourself"
            ) from exc


def make_constraint(
    *, json_schema: object = None, regex: object = None, choices: object = None, grammar: object = None
) -> Constraint | None:
    """The constraint the options ask for (None: none), compiled and checked by llguidance.

    `json_schema`: a dict (a JSON schema), a JSON string of one, or a Pydantic model class (its
    `model_json_schema()`). `regex`: a regular expression the whole output matches (Rust `regex`
    syntax). `choices`: a sequence of strings, the output is exactly one. `grammar`: a Lark grammar
    (llguidance's dialect, `start:` rule) or a llama.cpp GBNF grammar (`root ::= ...`).

    Raises:
        InvalidOptionError: more than one given, or the schema, regex or grammar is invalid (the
            library's message says where).
        InvalidOptionTypeError: a value of the wrong type.
        RuntimeUnavailableError: llguidance is not installed.
    """
    given = {
        k: v for k, v in zip(CONSTRAINT_OPTIONS, (json_schema, regex, choices, grammar), strict=True) if v is not None
    }
    if not given:
        return None
    if len(given) > 1:
        names = ", ".join(given)
        raise InvalidOptionError(
            f"{names} were all given; a generation takes one of {', '.join(CONSTRAINT_OPTIONS)}",
            option=next(iter(given)),
            value=names,
            allowed="one of " + ", ".join(CONSTRAINT_OPTIONS),
        )
    ((kind, value),) = given.items()
    llg = _llguidance()
    model: type | None = None
    if kind == "json_schema":
        schema, model = _schema_of(value)
        source = json.dumps(schema, sort_keys=True, ensure_ascii=False)
        try:
            text = llg.LLMatcher.grammar_from_json_schema(schema)
        except ValueError as exc:
            _invalid(kind, value, f"it is not a JSON object ({exc})", "a JSON schema (a dict)")
    elif kind == "regex":
        source = _nonempty_str(kind, value, "a regular expression (a non-empty str)")
        text = llg.LLMatcher.grammar_from_regex(source)
    elif kind == "choices":
        items = _choices(value)
        source = json.dumps(items, ensure_ascii=False)
        # JSON string literals are Lark string literals in llguidance's dialect
        text = llg.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(c) for c in items))
    else:
        source = _nonempty_str(kind, value, "a Lark or GBNF grammar (a non-empty str)")
        text = _grammar_text(llg, source)
    return checked(Constraint(kind, text, source, model))


def checked(constraint: Constraint) -> Constraint:
    """The constraint, once llguidance compiled its grammar (without a vocabulary: no model needed).

    Raises:
        InvalidOptionError: the grammar does not compile; the library's message says why.
    """
    error = _llguidance().LLMatcher.validate_grammar(constraint.grammar)
    if error and not error.startswith("WARNING"):
        _invalid(constraint.kind, constraint.source, error, _ALLOWED[constraint.kind])
    return constraint


_ALLOWED = {
    "json_schema": "a JSON schema llguidance supports (docs: llguidance json_schema.md)",
    "regex": "a regular expression in Rust regex syntax",
    "choices": "a non-empty sequence of non-empty strings",
    "grammar": "a Lark grammar with a start rule, or a GBNF grammar with a root rule",
}


def _invalid(option: str, value: object, why: str, allowed: str) -> Any:
    raise InvalidOptionError(
        f"invalid {option}: {why.strip()[:600]}; fix it, or generate without {option}",
        option=option,
        value=value,
        allowed=allowed,
    )


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as exc:
        raise RuntimeUnavailableError(
            f"structured output needs llguidance, which is not installed: {_INSTALL}"
        ) from exc
    return llguidance


def _schema_of(value: object) -> tuple[dict[str, Any], type | None]:
    if isinstance(value, type) and hasattr(value, "model_json_schema"):  # a Pydantic model class
        return closed_schema(value.model_json_schema()), value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            _invalid("json_schema", value, f"the string is not JSON ({exc})", "a JSON schema (a dict)")
    if isinstance(value, bool):  # true / false are schemas too: anything, nothing
        value = {} if value else {"not": {}}
    if not isinstance(value, Mapping):
        raise InvalidOptionTypeError(
            f"json_schema must be a dict, a JSON string or a Pydantic model class, got {value!r:.80} "
            f"({type(value).__name__})",
            option="json_schema",
            value=value,
            allowed="a dict, a JSON string or a Pydantic model class",
        )
    return closed_schema(dict(value)), None


def closed_schema(schema: Any) -> Any:
    """The schema with objects that list their properties closed (additionalProperties false) unless
    it says otherwise, as llama.cpp's json-schema-to-grammar does: a small model given an open
    object goes on writing keys of its own (SmolLM2 repeated an "address" until max_tokens)."""
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):  # name -> schema
            out[key] = {name: closed_schema(v) for name, v in value.items()}
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [closed_schema(v) for v in value]
        elif key in _SCHEMA_ONE:
            out[key] = closed_schema(value)
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in out and "patternProperties" not in out:
        out["additionalProperties"] = False
    return out


_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
_SCHEMA_LISTS = frozenset({"anyOf", "allOf", "oneOf", "prefixItems"})
_SCHEMA_ONE = frozenset({"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"})


def _nonempty_str(option: str, value: object, allowed: str) -> str:
    if not isinstance(value, str):
        raise InvalidOptionTypeError(
            f"{option} must be {allowed}, got {value!r:.80} ({type(value).__name__})",
            option=option,
            value=value,
            allowed=allowed,
        )
    if not value:
        _invalid(option, value, "it is empty", allowed)
    return value


def _choices(value: object) -> list[str]:
    allowed = _ALLOWED["choices"]
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidOptionTypeError(
            f"choices must be {allowed}, got {value!r:.80} ({type(value).__name__})",
            option="choices",
            value=value,
            allowed=allowed,
        )
    items = list(value)
    if not items:
        _invalid("choices", value, "the list is empty", allowed)
    for i, c in enumerate(items):
        if not isinstance(c, str) or not c:
            _invalid("choices", value, f"choice {i} is {c!r:.40}, not a non-empty string", allowed)
    return items


def _grammar_text(llg: Any, source: str) -> str:
    if "::=" in source:  # GBNF, as llama.cpp writes grammars
        from llguidance.gbnf_to_lark import any_to_lark

        try:
            source = any_to_lark(source)
        except Exception as exc:
            _invalid("grammar", source, f"the GBNF grammar does not convert ({exc})", _ALLOWED["grammar"])
    return llg.LLMatcher.grammar_from_lark(source)


# --- per engine: the vocabulary, as llguidance sees it ------------------------------------------
_TOKENIZERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_TOKENIZERS_LOCK = threading.Lock()


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads: each token's bytes, EOS, and a tokenizer.

    llguidance tokenizes the text a grammar forces and allows the tokens that spell it, so the
    tokenizer must give exactly the bytes it was given. A SentencePiece vocabulary (Llama-2,
    Mistral, Gemma) puts a space before the text: "{" came back as " {", which the JSON grammar
    then refused. As llguidance's own llama.cpp binding does, such a vocabulary tokenizes
    SENTINEL + text and drops the sentinel's tokens.
    """

    SENTINEL = "\x02"  # a byte token in SentencePiece vocabularies: it merges with nothing

    def __init__(self, engine: Engine) -> None:
        self.tokens: list[bytes] = engine.vocab_bytes()
        eog = [t for t in range(len(self.tokens)) if engine.is_eog(t)]
        self.eos_token_id = eog[0] if eog else len(self.tokens)  # a vocabulary without EOS: none allowed
        self.eog = eog
        self.bos_token_id = None
        self.special_token_ids = [t for t, b in enumerate(self.tokens) if b[:1] == b"\xff"]
        # weak: the tokenizer is the value of a WeakKeyDictionary keyed by the engine
        self._engine = weakref.ref(engine)
        self._prefix: list[int] | None = None
        if self._spell(self._tokenize(engine, "a")) != b"a":
            self._prefix = self._tokenize(engine, self.SENTINEL)

    @staticmethod
    def _tokenize(engine: Engine, text: str) -> list[int]:
        return engine.tokenize(text, add_bos=False, special=False)

    def _spell(self, ids: list[int]) -> bytes:
        return b"".join(self.tokens[t] for t in ids if 0 <= t < len(self.tokens))

    def __call__(self, data: bytes) -> list[int]:
        engine = self._engine()
        if engine is None:
            raise GenerationError("the model this tokenizer belonged to is gone; load it again")
        text = data.decode("utf-8", "replace")
        if self._prefix is None:
            return self._tokenize(engine, text)
        ids = self._tokenize(engine, self.SENTINEL + text)
        n = len(self._prefix)
        if ids[:n] == self._prefix:
            return ids[n:]
        ids = self._tokenize(engine, text)  # the sentinel merged: drop a leading space token if that spells it
        return ids[1:] if ids and self._spell(ids[1:]) == data else ids


def tokenizer_for(engine: Engine) -> Any:
    """llguidance's tokenizer for the engine's vocabulary, made once per engine (~0.1-0.3 s)."""
    with _TOKENIZERS_LOCK:
        tok = _TOKENIZERS.get(engine)
        if tok is None:
            llg = _llguidance()
            vocab = _Vocabulary(engine)
            try:
                tok = llg.LLTokenizer(
                    llg.TokenizerWrapper(vocab), n_vocab=engine.n_vocab, eos_token=vocab.eog or [vocab.eos_token_id]
                )
            except Exception as exc:  # the library's own check of the vocabulary (sizes, EOS)
                raise GenerationError(
                    f"llguidance cannot read this model's vocabulary ({type(exc).__name__}: {exc}); "
                    "generate without structured output or tools"
                ) from exc
            _TOKENIZERS[engine] = tok
        return tok


class Guide:
    """One sequence's matcher: masks logits before a sample, advances on the sampled token."""

    def __init__(self, engine: Engine, constraint: Constraint) -> None:
        import numpy as np

        llg = _llguidance()
        self.constraint = constraint
        self.n_vocab = engine.n_vocab
        self._matcher = llg.LLMatcher(tokenizer_for(engine), constraint.grammar, log_level=0)
        if self._matcher.is_error():
            raise GenerationError(
                f"the {constraint.kind} constraint cannot run on this model's vocabulary: "
                f"{self._matcher.get_error().strip()[:600]}; fix it (a special token it names may not exist here)"
            )
        self._mask = np.full((self.n_vocab + 31) // 32, -1, dtype=np.int32)
        self._neg = np.float32(-np.inf)

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """Logits with every token the grammar does not allow next at -inf (a new array).

        Raises:
            GenerationError: the grammar allows no token (it is in an error state).
        """
        import numpy as np

        self._matcher.unsafe_compute_mask_ptr(self._mask.ctypes.data, self._mask.nbytes)
        allowed = np.unpackbits(self._mask.view(np.uint8), bitorder="little", count=logits.shape[0]).view(np.bool_)
        if self._matcher.is_error() or not allowed.any():
            raise GenerationError(
                f"the {self.constraint.kind} constraint allows no next token "
                f"({self._matcher.get_error() or 'nothing in the vocabulary continues the output'})"
            )
        return np.where(allowed, logits, self._neg)

    def consume(self, token: int) -> None:
        """Advance past a sampled token (one `apply` allowed).

        Raises:
            GenerationError: the grammar refused it (a bug: the mask allowed it).
        """
        if not self._matcher.consume_token(token):
            raise GenerationError(
                f"the {self.constraint.kind} constraint refused token {token}: {self._matcher.get_error()}"
            )

    def forced(self, limit: int) -> list[int]:
        """Up to `limit` tokens the grammar forces next (JSON keys, punctuation): drafts every
        sample confirms, evaluated in one batch (`localllm.generation.run` with a drafter)."""
        return list(self._matcher.compute_ff_tokens()[: max(0, limit)]) if limit > 0 else []

    @property
    def stopped(self) -> bool:
        """The output is complete and nothing may follow: generation ends here ("stop")."""
        return bool(self._matcher.is_stopped())

    @property
    def accepting(self) -> bool:
        """The output so far is a complete match (it may still go on)."""
        return bool(self._matcher.is_accepting())


class Capture:
    """Holds a chat's tool calls out of the streamed text: from the format's trigger (e.g.
    "<tool_call>") on, text is kept for `calls` instead of passed on; text that may be the start
    of the trigger (and whitespace, which would only lay out a call) is held back until the next
    piece shows whether it is. A format whose call is
    the whole reply (llama3's JSON) captures only a reply that starts with its trigger. Markers that
    are control tokens have no text in the stream: `markers` maps their ids to the text to keep.
    """

    def __init__(self, tool_format: Any, markers: Mapping[int, str] | None = None) -> None:
        self.trigger: str = tool_format.trigger
        self.at_start = tool_format.shape == "json"
        self.markers = dict(markers or {})
        self.text = ""  # from the trigger on
        self._held = ""
        self._free = False  # at_start: the reply began with other text, so it holds no call

    def feed(self, piece: str, token: int = -1) -> str:
        """The part of piece to stream (`token`: the token it came from)."""
        if token in self.markers:
            piece = self.markers[token]
            if not self.text and not self._free and piece == self.trigger:
                self.text, held, self._held = piece, self._held, ""
                return held
        if self.text:
            self.text += piece
            return ""
        if self._free:
            return piece
        buf = self._held + piece
        if self.at_start:
            rest = buf.lstrip()
            if not rest:
                self._held = buf
                return ""
            if rest.startswith(self.trigger):
                self.text, self._held = rest, ""
                return ""
            self._free, self._held = True, ""
            return buf
        i = buf.find(self.trigger)
        if i != -1:  # whitespace before a call is layout, not content
            self.text, self._held = buf[i:], ""
            return buf[:i].rstrip()
        n = next((n for n in range(min(len(self.trigger) - 1, len(buf)), 0, -1) if buf.endswith(self.trigger[:n])), 0)
        out = buf[: len(buf) - n]
        keep = len(out) - len(out.rstrip())  # trailing whitespace waits: a call may follow it
        self._held = buf[len(out) - keep :]
        return out[: len(out) - keep]

    def flush(self) -> str:
        """Text held back as a possible trigger when the stream ended."""
        held, self._held = self._held, ""
        return held

    def calls(self, tool_format: Any) -> tuple[str, tuple[Any, ...]]:
        """(other text after the first call, the calls) of what was captured.

        Raises:
            GenerationError: a call does not parse.
        """
        if not self.text:
            return "", ()
        from localllm.tools import parse_tool_calls

        content, calls = parse_tool_calls(self.text, tool_format)
        return content, tuple(calls)


def capture_for(engine: Engine, constraint: Constraint) -> Capture | None:
    """The Capture a constrained sequence needs: one for a chat with tools, else None."""
    if constraint.kind != "tools":
        return None
    fmt = constraint.tool_format
    markers = {}
    for marker, _ in fmt.special:  # control tokens: their ids, to see them in a stream without their text
        ids = engine.tokenize(marker, add_bos=False, special=True)
        if len(ids) == 1:
            markers[ids[0]] = marker
    return Capture(fmt, markers)
