"""The chat half of `localllm.Model`: the chat template, tools, and fitting a conversation to the
context window.

Tools (OpenAI's form) go through the model's own template when it takes them, else through the
generic format of `localllm.tools`; the reply runs under a grammar that lets the model write text
or calls (`tool_choice`), each call's arguments held to its tool's parameter schema, and the calls
come back parsed in `Completion.tool_calls`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from localllm.chat_template import split_turns
from localllm.errors import ContextOverflowError, InvalidOptionError
from localllm.generation import Chunk, Completion, PromptProgress, join
from localllm.options import SamplingOptions

if TYPE_CHECKING:  # pragma: no cover
    from localllm.chat_template import ChatFormatter
    from localllm.constraints import Constraint
    from localllm.model import ModelInfo
    from localllm.runtimes.base import Engine
    from localllm.tools import ToolFormat

__all__ = ["OVERFLOW_MODES", "ChatMixin"]

Message = Mapping[str, Any]
# What chat() does with a conversation longer than the context window.
OVERFLOW_MODES = ("error", "truncate")
# chat(overflow="truncate") keeps room for a reply of max_tokens, but never more than this
# share of the window, so a huge (or unbounded) max_tokens cannot crowd out the whole
# conversation: 1/4 is 512 tokens at n_ctx 2048 (the default max_tokens), 1024 at 4096.
_REPLY_ROOM_SHARE = 4
# (tools, tool_choice, parallel_tool_calls) of a chat
ToolRequest = tuple[Any, Any, bool]
NO_TOOLS: ToolRequest = (None, None, False)
# Advice every context error ends with: usable from Python and from the command line.
_LARGER_CONTEXT = "load with a larger context (context=N in load(), --ctx N on the command line)"


class ChatMixin:
    """chat, chat_stream, render_chat and fit_chat of `localllm.Model`."""

    if TYPE_CHECKING:  # what Model gives this mixin
        _engine: Engine
        _formatter: ChatFormatter
        _turn_end_tokens: frozenset[int]
        info: ModelInfo

        def _require_open(self) -> None: ...
        def _tokenize_prompt(self, prompt: str) -> list[int]: ...
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
        ) -> Iterator[Chunk]: ...

    def chat(
        self,
        messages: Sequence[Message],
        *,
        overflow: str = "error",
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = False,
        stop_event: threading.Event | None = None,
        on_prompt_progress: PromptProgress | None = None,
        **options: Any,
    ) -> Completion:
        """Reply to a conversation (list of {"role", "content"} dicts) with the model's chat template.

        Args:
            messages: the conversation, oldest first.
            overflow: "error" raises ContextOverflowError when the conversation does not fit the
                context window; "truncate" drops whole turns (a user message and the replies
                after it) from the oldest until it fits with room for the reply (max_tokens, at
                most a quarter of the window), keeping the leading system message(s) and the
                last user message. `Completion.dropped_messages` says how many were dropped.
            tools: OpenAI's tools (`{"type": "function", "function": {"name", "description",
                "parameters"}}`, or the bare function dicts). The model's template writes them into
                the prompt when it takes tools (Qwen2.5, Llama-3.1+, Mistral), else the generic format
                of `localllm.tools` does; calls come back in `Completion.tool_calls` (finish_reason
                "tool_calls"), each call's arguments held to its tool's parameters by the grammar.
                Earlier calls (`tool_calls` on assistant messages) and results (`role: "tool"`)
                round-trip.
            tool_choice: "auto" (the default with tools: text, calls or both), "none" (text only:
                the tools are not shown), "required" (at least one call), or
                {"type": "function", "function": {"name": N}} (exactly one call of N).
            parallel_tool_calls: let one reply make several calls (the format's own way). Off by
                default, as in llama.cpp's server: small models given the choice repeat a call
                until max_tokens (SmolLM2-135M did), while one call ends the reply.
            stop_event, on_prompt_progress, **options: as for `generate` (json_schema, regex,
                choices and grammar too, but not together with tools).

        Raises:
            ChatTemplateError: malformed messages, or the template rejects them, fails on them or
                goes over a render limit (time, output size; see localllm.template_sandbox).
            InvalidOptionError: a bad option or overflow value, a lone surrogate in a message (the
                message says which message and where).
            ContextOverflowError: the conversation does not fit ("error"), or even the system
                message(s) and the last user message do not ("truncate").
        """
        return join(
            self.chat_stream(
                messages,
                overflow=overflow,
                tools=tools,
                tool_choice=tool_choice,
                parallel_tool_calls=parallel_tool_calls,
                stop_event=stop_event,
                on_prompt_progress=on_prompt_progress,
                **options,
            )
        )

    def chat_stream(
        self,
        messages: Sequence[Message],
        *,
        overflow: str = "error",
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = False,
        stop_event: threading.Event | None = None,
        on_prompt_progress: PromptProgress | None = None,
        **options: Any,
    ) -> Iterator[Chunk]:
        """Like `chat`, yielding Chunks; the last carries `dropped_messages` and `tool_calls`
        (a call's text is never streamed: it comes parsed in the last chunk)."""
        if overflow not in OVERFLOW_MODES:
            allowed = "one of " + ", ".join(map(repr, OVERFLOW_MODES))
            raise InvalidOptionError(
                f"overflow must be {allowed}, got {overflow!r}", option="overflow", value=overflow, allowed=allowed
            )
        opts = SamplingOptions.from_kwargs(**options)
        tokens, opts, dropped = self._chat_prompt(
            messages, opts, truncate=overflow == "truncate", tools=(tools, tool_choice, parallel_tool_calls)
        )
        return self._run(
            tokens, opts, stop_event, self._turn_end_tokens, chat=True, dropped=dropped, progress=on_prompt_progress
        )

    def render_chat(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
    ) -> str:
        """The prompt text the chat template makes of messages (and tools, as `chat` renders them).

        Raises:
            ChatTemplateError: as for `chat`. InvalidOptionError: a lone surrogate in a message,
                a malformed tool or tool call.
        """
        msgs, template_tools, _ = self._tool_request(messages, tools, tool_choice)
        return self._formatter.render(msgs, add_generation_prompt=add_generation_prompt, tools=template_tools)

    def _chat_prompt(
        self, messages: Sequence[Message], opts: SamplingOptions, *, truncate: bool, tools: ToolRequest = NO_TOOLS
    ) -> tuple[list[int], SamplingOptions, int]:
        """(prompt tokens, the options to generate with, messages dropped) for a chat: the fallback
        format's stop strings and the tools' grammar join the options. `tools`: (tools,
        tool_choice, parallel_tool_calls) as `chat` takes them."""
        if self._formatter.stop:  # a fallback format needs its own stop strings
            opts = SamplingOptions.from_kwargs(opts, stop=tuple(dict.fromkeys((*opts.stop, *self._formatter.stop))))
        msgs, template_tools, constraint = self._tool_request(messages, *tools)
        if constraint is not None:
            if opts.constraint is not None:
                raise InvalidOptionError(
                    f"tools and {opts.constraint.kind} were both given; a reply takes one grammar: "
                    "use tools, or ask for structured output without them",
                    option="tools",
                    value=constraint.tools,
                    allowed=f"tools or {opts.constraint.kind}, not both",
                )
            opts = replace(opts, constraint=constraint)
        tokens, dropped = self._fit_chat(msgs, opts, truncate=truncate, tools=template_tools)
        return tokens, opts, dropped

    def _tool_request(
        self, messages: Sequence[Message], tools: Any, tool_choice: Any, parallel: bool = False
    ) -> tuple[Sequence[Message], Any, Constraint | None]:
        """(messages to render, the template's `tools`, the reply's grammar) for a chat with tools."""
        if tools is None and tool_choice is None and not _has_tool_turns(messages):
            return messages, None, None
        from localllm.constraints import Constraint
        from localllm.tools import check_tool_choice, check_tools, tool_grammar, tool_messages

        checked_tools = check_tools(tools)
        choice = check_tool_choice(tool_choice, checked_tools)
        fmt = self._tool_format()
        if not parallel:
            fmt = replace(fmt, parallel=False)
        shown = checked_tools if choice.mode != "none" else ()  # "none": the model is not told of them
        msgs, template_tools = tool_messages(messages, shown, fmt, takes_tools=self._formatter.takes_tools)
        grammar = tool_grammar(checked_tools, choice, fmt) if shown else None
        if grammar is None:
            return msgs, template_tools, None
        names = tuple(t["function"]["name"] for t in checked_tools)
        source = json.dumps({"tools": names, "tool_choice": choice.mode, "name": choice.name})
        # tool_grammar compiled the grammar already
        return msgs, template_tools, Constraint("tools", grammar, source, tool_format=fmt, tools=names)

    def _tool_format(self) -> ToolFormat:
        """How this model writes calls (its template's format, or the generic one); made once."""
        fmt = getattr(self, "_tool_format_cache", None)
        if fmt is None:
            from localllm.constraints import tokenizer_for
            from localllm.tools import tool_format

            engine, tok = self._engine, tokenizer_for(self._engine)

            def special_id(marker: str) -> int | None:  # a marker that is one special token of the grammar's vocabulary
                ids = engine.tokenize(marker, add_bos=False, special=True)
                return ids[0] if len(ids) == 1 and tok.is_special_token(ids[0]) else None

            fmt = tool_format(
                self._formatter.template,
                takes_tools=self._formatter.takes_tools,
                has_token=lambda m: special_id(m) is not None,
                token_id=special_id,
            )
            self._tool_format_cache = fmt
        return fmt

    def fit_chat(
        self, messages: Sequence[Message], *, tools: Any = None, tool_choice: Any = None, **options: Any
    ) -> tuple[int, int]:
        """(prompt tokens, messages dropped): what `chat(messages, overflow="truncate", **options)`
        would send, without generating (a UI's context figure before the next reply).

        Raises:
            as for `chat` with overflow="truncate".
        """
        self._require_open()
        opts = SamplingOptions.from_kwargs(**options)
        tokens, _, dropped = self._chat_prompt(messages, opts, truncate=True, tools=(tools, tool_choice, False))
        return len(tokens), dropped

    def _fit_chat(
        self, messages: Sequence[Message], opts: SamplingOptions, *, truncate: bool, tools: Any = None
    ) -> tuple[list[int], int]:
        """The prompt tokens of messages and how many messages were dropped to fit the window.
        `tools`: what the template gets as `tools` (from `_tool_request`), or None."""
        tokens = self._tokenize_prompt(self._formatter.render(messages, tools=tools))
        n_ctx = self._engine.n_ctx
        room = n_ctx // _REPLY_ROOM_SHARE
        if opts.max_tokens is not None:
            room = min(room, opts.max_tokens)
        if not truncate or len(tokens) + room <= n_ctx:
            return tokens, 0
        head, turns, tail = split_turns(messages)
        tried: dict[int, list[int]] = {0: tokens}

        def without(n_turns: int) -> list[int]:  # the prompt with the oldest n_turns dropped
            if n_turns not in tried:
                kept = [m for turn in turns[n_turns:] for m in turn]
                tried[n_turns] = self._tokenize_prompt(self._formatter.render([*head, *kept, *tail], tools=tools))
            return tried[n_turns]

        # fewest turns to drop so the reply has its room (dropping more never lengthens the prompt)
        lo, hi = 1, len(turns)
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if len(without(mid)) + room <= n_ctx else (mid + 1, hi)
        n_drop = min(lo, len(turns))
        tokens = without(n_drop)
        if len(tokens) >= n_ctx:  # even the kept messages alone leave no room for a token
            kept = "the last user message"
            if head:
                kept = f"the system message{'s' if len(head) > 1 else ''} and {kept}"
            raise ContextOverflowError(
                f"{kept} alone {'are' if head else 'is'} {len(tokens)} tokens, but the context window of "
                f"{self.info.name} is {n_ctx} tokens (max_tokens {opts.max_tokens}); shorten "
                f"{'them' if head else 'it'}, or {_LARGER_CONTEXT}",
                n_prompt=len(tokens),
                n_ctx=n_ctx,
                max_tokens=opts.max_tokens,
            )
        # too little room for a whole reply, but room: it runs until the window is full
        return tokens, sum(len(turn) for turn in turns[:n_drop])


def _has_tool_turns(messages: Sequence[Message]) -> bool:
    """Whether a conversation holds earlier tool calls or results (they render through tools)."""
    return (
        any(isinstance(m, Mapping) and (m.get("role") == "tool" or m.get("tool_calls")) for m in messages)
        if isinstance(messages, Sequence)
        else False
    )
