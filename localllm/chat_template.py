"""Chat templates: the model's own Jinja template, rendered safely, or a plain fallback.

Templates come from model files (strangers on the internet), so they run in Jinja's
`ImmutableSandboxedEnvironment`, set up the way Hugging Face transformers renders them
(`trim_blocks`, `lstrip_blocks`, `raise_exception`, `strftime_now`, a `tojson` that keeps
non-ASCII text), so a template behaves here as it does there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

from .errors import ChatTemplateError

__all__ = ["CHATML_FALLBACK", "PLAIN_FALLBACK", "ChatFormatter", "chat_formatter"]

log = logging.getLogger(__name__)

# Used when the model has no template but knows ChatML's tokens (Qwen, SmolLM, many fine-tunes).
CHATML_FALLBACK = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
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
# Stop strings each fallback needs: the model does not know these formats' end tokens.
_FALLBACK_STOPS = {"fallback-chatml": ("<|im_end|>",), "fallback-plain": ("\nUser:",)}


@dataclass(frozen=True)
class ChatFormatter:
    """Renders messages into a prompt. `source` is "gguf" (the model's template),
    "fallback-chatml" or "fallback-plain"; `reason` says why a fallback was chosen."""

    template: str
    source: str
    bos_token: str | None = None
    eos_token: str | None = None
    reason: str = ""

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings the format needs beyond the model's end-of-generation tokens."""
        return _FALLBACK_STOPS.get(self.source, ())

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for messages.

        Raises:
            ChatTemplateError: messages are malformed, or the template rejects them.
        """
        checked = _check_messages(messages)
        try:
            return _compile(self.template).render(
                messages=checked, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except ChatTemplateError:
            raise
        except Exception as exc:  # a template bug: say so, with the template's own message
            raise ChatTemplateError(
                f"the model's chat template ({self.source}) failed: {type(exc).__name__}: {exc}; "
                "use generate() with a prompt you format yourself") from exc


def chat_formatter(template: str | None, *, bos_token: str | None = None, eos_token: str | None = None,
                   has_token: Callable[[str], bool] = lambda _: False) -> ChatFormatter:
    """The model's template if it compiles and renders a test conversation; otherwise a fallback."""
    reason = "the model has no chat template"
    if template:
        try:
            _compile(template)
            formatter = ChatFormatter(template, "gguf", bos_token, eos_token)
            formatter.render([{"role": "user", "content": "hi"}])
            return formatter
        except Exception as exc:  # a broken template must not make the model unusable
            reason = f"the model's chat template is broken ({type(exc).__name__}: {exc})"
            log.warning("%s; using a fallback", reason)
    if has_token("<|im_start|>") and has_token("<|im_end|>"):
        return ChatFormatter(CHATML_FALLBACK, "fallback-chatml", bos_token, eos_token, reason)
    return ChatFormatter(PLAIN_FALLBACK, "fallback-plain", bos_token, eos_token, reason)


def _check_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ChatTemplateError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts, "
                                f"got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"message {i} must be a dict with string 'role' and 'content', got {m!r}")
        out.append(dict(m))
    return out


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(f"the model's chat template refused the messages: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)
