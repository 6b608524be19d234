"""Chat templates: the model's own Jinja template, rendered safely, or a fallback.

A model without a (working) template gets the format its vocabulary was trained for
when the vocabulary has that format's control tokens: ChatML (Qwen, SmolLM), Gemma's
turns, Llama-3's headers. A plain `User:`/`Assistant:` transcript is the last resort.

Templates come from model files (strangers on the internet), so they run in Jinja's
`ImmutableSandboxedEnvironment`, set up the way Hugging Face transformers renders them
(`trim_blocks`, `lstrip_blocks`, `raise_exception`, `strftime_now`, a `tojson` that keeps
non-ASCII text), so a template behaves here as it does there. Every render (the test
render at load and each chat) is bounded in time, loop iterations, calls and output size
(`localllm.template_sandbox`); a template over a limit raises ChatTemplateError naming it,
and at load the model falls back to its vocabulary's format.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from localllm.errors import ChatTemplateError
from localllm.generation import check_text, first_surrogate

if TYPE_CHECKING:  # pragma: no cover
    from jinja2 import Template

__all__ = [
    "CHATML_FALLBACK",
    "GEMMA_FALLBACK",
    "LLAMA3_FALLBACK",
    "PLAIN_FALLBACK",
    "ChatFormatter",
    "chat_formatter",
    "split_turns",
]

# Passed to every template as `enable_thinking`, as transformers' apply_chat_template passes
# extra keywords: the hybrid reasoning models of the catalog (Qwen3, SmolLM3) then answer at
# once instead of writing a long <think> section first, which on a laptop CPU costs minutes
# before the first word of the answer. Templates that do not know the name ignore it.
ENABLE_THINKING = False

# Used when the model has no template but knows ChatML's tokens (Qwen, SmolLM, many fine-tunes).
CHATML_FALLBACK = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Gemma's turns, as google/gemma-3-*-it's template writes them: the system message is
# folded into the first user turn, the assistant is "model". Unlike Google's template it
# does not refuse roles that do not alternate (a fallback should not be stricter).
GEMMA_FALLBACK = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '')"
    " + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# Llama-3's header tokens, as meta-llama/Meta-Llama-3-8B-Instruct's template writes them
# (3.1+ add a knowledge-date preamble that is no part of the format).
LLAMA3_FALLBACK = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# Used otherwise: a plain transcript any base model can continue.
PLAIN_FALLBACK = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + '\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)
# Stop strings each fallback needs: the model may not mark these formats' end tokens as
# end-of-generation (Model maps those that are single control tokens to stop tokens).
_FALLBACK_STOPS = {
    "fallback-chatml": ("<|im_end|>",),
    "fallback-gemma": ("<end_of_turn>",),
    "fallback-llama3": ("<|eot_id|>",),
    "fallback-plain": ("\nUser:",),
}


@dataclass(frozen=True)
class _Family:
    source: str
    template: str
    name: str
    tokens: tuple[str, ...]  # control tokens the vocabulary must have
    architectures: tuple[str, ...]  # GGUF general.architecture prefixes that prefer it


# In order of preference when only the vocabulary decides: a vocabulary with ChatML's
# tokens added (many fine-tunes of Llama and Mistral) was trained on ChatML.
_FAMILIES = (
    _Family("fallback-chatml", CHATML_FALLBACK, "ChatML", ("<|im_start|>", "<|im_end|>"), ("qwen",)),
    _Family("fallback-gemma", GEMMA_FALLBACK, "Gemma", ("<start_of_turn>", "<end_of_turn>"), ("gemma",)),
    _Family(
        "fallback-llama3",
        LLAMA3_FALLBACK,
        "Llama-3",
        ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        ("llama",),
    ),
)


@dataclass(frozen=True)
class ChatFormatter:
    """Renders messages into a prompt. `source` is "gguf" (the model's template),
    "fallback-chatml", "fallback-gemma", "fallback-llama3" or "fallback-plain"; `reason`
    says why a fallback was chosen, and which."""

    template: str
    source: str
    bos_token: str | None = None
    eos_token: str | None = None
    reason: str = ""

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings the format needs beyond the model's end-of-generation tokens."""
        return _FALLBACK_STOPS.get(self.source, ())

    @property
    def takes_tools(self) -> bool:
        """True if the template writes tools into the prompt: a test conversation renders
        differently with a tool than without (what `{% if tools %}` alone cannot show)."""
        return _takes_tools(self)

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """The prompt text for messages, rendered under the sandbox's limits.

        `tools` (OpenAI's form, see `localllm.tools`) is passed to the template as `tools` when
        given; without it the template sees no `tools` variable at all.

        Raises:
            ChatTemplateError: messages are malformed, the template rejects them, fails, goes over
                a render limit (`limit` and `maximum` say which) or renders an empty prompt.
            InvalidOptionError: a lone surrogate in a message (which one, and where).
        """
        try:
            return self._render(_check_messages(messages), add_generation_prompt, tools)
        except _Unusable as exc:
            raise ChatTemplateError(
                f"the model's chat template ({self.source}) {exc}; use generate() with a prompt you format yourself",
                limit=exc.limit,
                maximum=exc.maximum,
            ) from None

    def _render(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        # template_sandbox imports jinja2 at its top: it loads at the first render, not with localllm
        from localllm.template_sandbox import RenderLimits, TemplateLimitError, render_bounded

        bos, eos = self.bos_token or "", self.eos_token or ""
        limits = RenderLimits.for_input(_text_size(messages) + _text_size(tools) + len(bos) + len(eos))
        # only when given: templates tell "no tools" by `tools is defined` as well as by `if tools`
        extra = {} if tools is None else {"tools": [dict(t) for t in tools]}
        try:
            text = render_bounded(
                _compile(self.template),
                limits,
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=bos,
                eos_token=eos,
                enable_thinking=ENABLE_THINKING,
                **extra,
            )
        except ChatTemplateError:  # raise_exception(): the template refused the messages
            raise
        except TemplateLimitError as exc:
            raise _Unusable(f"went over its {exc.limit} limit: {exc}", exc.limit, exc.maximum, str(exc)) from None
        except Exception as exc:  # a template bug: say so, with the template's own message
            raise _Unusable(f"failed: {type(exc).__name__}: {exc}") from exc
        if not text.strip():
            what = "an empty prompt" if not text else f"a prompt of only whitespace ({len(text)} characters)"
            raise _Unusable(f"rendered {what} for {len(messages)} message(s)")
        i = first_surrogate(text)
        if i is not None:  # a template's string literal can spell one ('\ud800'); no tokenizer takes it
            raise _Unusable(
                f"rendered a prompt with a lone surrogate (U+{ord(text[i]):04X}) at character {i}, "
                "from the template or a message's other fields; a prompt must be valid Unicode text"
            )
        return text


class _Unusable(Exception):
    """Why a template cannot render these messages: failed, over a limit, empty."""

    def __init__(self, problem: str, limit: str | None = None, maximum: float | None = None, detail: str = "") -> None:
        super().__init__(problem)
        self.limit = limit
        self.maximum = maximum
        self.detail = detail  # for a limit: what went over it


# What the template renders at load: it must work on a conversation this short.
_TEST_CONVERSATION = ({"role": "user", "content": "hi"},)
# What takes_tools renders the test conversation with.
_TEST_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The current time in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@lru_cache(maxsize=16)
def _takes_tools(formatter: ChatFormatter) -> bool:
    try:
        plain = formatter._render([dict(m) for m in _TEST_CONVERSATION], True)
        with_tool = formatter._render([dict(m) for m in _TEST_CONVERSATION], True, [_TEST_TOOL])
    except Exception:  # a template that fails on tools does not take them
        return False
    return with_tool != plain


def chat_formatter(
    template: str | None,
    *,
    bos_token: str | None = None,
    eos_token: str | None = None,
    has_token: Callable[[str], bool] = lambda _: False,
    architecture: str | None = None,
) -> ChatFormatter:
    """The model's template if it compiles and renders a test conversation within the render
    limits; otherwise a fallback chosen from the control tokens the vocabulary has (`has_token`)
    and the GGUF architecture, with `reason` saying why."""
    reason = "the model has no chat template"
    if template:
        formatter = ChatFormatter(template, "gguf", bos_token, eos_token)
        try:
            formatter._render([dict(m) for m in _TEST_CONVERSATION], True)
            return formatter
        except _Unusable as exc:
            reason = (
                f"the model's chat template went over its {exc.limit} render limit ({exc.detail})"
                if exc.limit
                else f"the model's chat template is broken (it {exc})"
            )
        except Exception as exc:  # a broken template must not make the model unusable
            reason = f"the model's chat template is broken ({type(exc).__name__}: {exc})"
    fits = [f for f in _FAMILIES if all(has_token(t) for t in f.tokens)]
    arch = (architecture or "").lower()
    family = next((f for f in fits if arch.startswith(f.architectures)), fits[0] if fits else None)
    if family is not None:
        return ChatFormatter(
            family.template,
            family.source,
            bos_token,
            eos_token,
            f"{reason}; its vocabulary has {family.name}'s tokens "
            f"({', '.join(family.tokens)}), so {family.name}'s chat format is used",
        )
    return ChatFormatter(
        PLAIN_FALLBACK,
        "fallback-plain",
        bos_token,
        eos_token,
        f"{reason} and its vocabulary has no known chat tokens (ChatML, Gemma, Llama-3), so a "
        "plain User:/Assistant: transcript is used; replies may be poor (generate() takes a "
        "prompt you format yourself)",
    )


def split_turns(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """(leading system messages, whole turns oldest first, the last user message and what follows it).

    A turn is a user message and the replies after it; messages before the first user
    message (after the system ones) make a turn of their own. Dropping whole turns from
    the front keeps the roles alternating as templates expect.

    Raises:
        ChatTemplateError: messages are malformed.
    """
    checked = _check_messages(messages)
    n_head = 0
    while n_head < len(checked) and checked[n_head]["role"] == "system":
        n_head += 1
    head, rest = checked[:n_head], checked[n_head:]
    users = [i for i, m in enumerate(rest) if m["role"] == "user"]
    last = users[-1] if users else max(len(rest) - 1, 0)
    turns: list[list[dict[str, Any]]] = []
    for m in rest[:last]:
        if m["role"] == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return head, turns, rest[last:]


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ChatTemplateError(
            f"messages must be a non-empty list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}"
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"message {i} must be a dict with string 'role' and 'content', got {m!r}")
        for key in ("role", "content"):  # a lone surrogate is the caller's: say which message, and where
            check_text(m[key], "messages", f"[{i}][{key!r}]")
        out.append(dict(m))
    return out


def _raise_exception(message: str) -> None:
    from localllm.template_sandbox import stringify  # loaded already: called from a render

    raise ChatTemplateError(f"the model's chat template refused the messages: {stringify(message, 'a message')}")


# Real templates indent tojson by 2 or 4, if at all.
_TOJSON_MAX_WIDTH = 16


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    from localllm.template_sandbox import TemplateLimitError, check_printable  # as in _raise_exception

    check_printable([value], "tojson's value")  # JSON is about as long as the repr
    # a wide indent or separator multiplies it by the number of items
    widths = [indent if isinstance(indent, int) else len(indent) if isinstance(indent, str) else 0]
    widths += [len(x) for x in (separators or ()) if isinstance(x, str)]
    if any(w > _TOJSON_MAX_WIDTH for w in widths):
        raise TemplateLimitError(
            "value size",
            _TOJSON_MAX_WIDTH,
            f"tojson was given an indent or separator of {max(widths):,} characters, more than {_TOJSON_MAX_WIDTH}",
        )
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _text_size(value: Any) -> int:
    """Characters of text in messages (contents, roles, tool calls): what the output limit scales with."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_text_size(k) + _text_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_text_size(v) for v in value)
    return 0


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)  # the sandbox's call() checks the result's size


@lru_cache(maxsize=16)
def _compile(template: str) -> Template:
    from jinja2.ext import loopcontrols

    from localllm.template_sandbox import BoundedEnvironment  # imports jinja2: see _render

    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.add_filter("tojson", _tojson)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)
