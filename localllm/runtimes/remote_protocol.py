"""OpenAI's wire format for `localllm.runtimes.remote`: a call's options and messages as a
request body, and a stream's events as localllm Chunks (text, finish reason, tool calls,
structured output, timings)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from localllm.errors import GenerationError, InvalidOptionError, InvalidOptionTypeError
from localllm.generation import Chunk, Timings, check_text
from localllm.options import SamplingOptions
from localllm.runtimes.remote_http import RemoteError, RemoteUnsupportedError, error_message
from localllm.sampling import StopMatcher

__all__ = ["Reader", "Request", "openai_messages"]

_GRAMMARS = ("regex", "choices", "grammar")  # localllm's own grammar options: OpenAI's API has no field for them


def openai_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation as OpenAI's JSON: checked as a local chat checks it, calls written as OpenAI does."""
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise InvalidOptionTypeError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}",
            option="messages",
            value=messages,
            allowed="a list of dicts",
        )
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise InvalidOptionTypeError(
                f"messages[{i}] must be a dict with a 'role' and a 'content', got {m!r:.60}",
                option="messages",
                value=m,
                allowed="{'role': ..., 'content': ...}",
            )
        msg = dict(m)
        if isinstance(msg.get("content"), str):
            check_text(msg["content"], "messages", where=f"[{i}]['content']")
        calls = msg.get("tool_calls")
        if calls:
            msg["tool_calls"] = [_openai_call(c) for c in calls]
        out.append(msg)
    return out


def _openai_call(call: Any) -> Any:
    if hasattr(call, "to_openai"):  # a localllm ToolCall from an earlier Completion
        return call.to_openai()
    fn = call.get("function") if isinstance(call, Mapping) else None
    if isinstance(fn, Mapping) and not isinstance(fn.get("arguments"), str):  # OpenAI sends them as JSON text
        return {**call, "function": {**fn, "arguments": json.dumps(fn.get("arguments") or {}, ensure_ascii=False)}}
    return call


class Request:
    """A request's options: the OpenAI fields, the stop strings applied here, and the schema."""

    def __init__(self, fields: dict[str, Any], stop: tuple[str, ...], schema: Any, model: type | None) -> None:
        self.fields, self.stop, self.schema, self.model = fields, stop, schema, model

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> Request:
        options = dict(options)
        for name in _GRAMMARS:
            if options.pop(name, None) is not None:
                raise RemoteUnsupportedError(
                    f"{name}= is held token by token with the model's vocabulary, which a remote model does not "
                    "have here, and OpenAI's API has no field for it; use json_schema= (sent as response_format)"
                )
        schema, model = _schema(options.pop("json_schema", None))
        opts = SamplingOptions.from_kwargs(**options)  # the names, ranges and errors of a local model
        fields: dict[str, Any] = {"temperature": opts.temperature, "top_p": opts.top_p}
        if opts.max_tokens is not None:  # None: to the end of the context, the server's default
            fields["max_tokens"] = opts.max_tokens
        if opts.seed is not None:
            fields["seed"] = opts.seed
        if opts.stop:
            fields["stop"] = list(opts.stop)
        # not in OpenAI's API: sent only when asked, under the names vLLM and llama-server read
        if "top_k" in options:
            fields["top_k"] = opts.top_k
        if "min_p" in options:
            fields["min_p"] = opts.min_p
        if "repeat_penalty" in options:
            fields["repeat_penalty"] = fields["repetition_penalty"] = opts.repeat_penalty  # llama-server, vLLM
        if "repeat_last_n" in options:
            fields["repeat_last_n"] = opts.repeat_last_n
        return cls(fields, opts.stop, schema, model)

    def response_format(self) -> dict[str, Any]:
        title = self.schema.get("title") if isinstance(self.schema, dict) else None
        name = re.sub(r"[^A-Za-z0-9_-]", "_", title)[:64] if isinstance(title, str) and title else "output"
        return {"type": "json_schema", "json_schema": {"name": name, "schema": self.schema}}

    def parse(self, text: str) -> Any:
        try:
            return self.model.model_validate_json(text) if self.model is not None else json.loads(text)  # type: ignore[attr-defined]
        except Exception as exc:
            raise GenerationError(
                f"the server's reply does not parse against the schema ({type(exc).__name__}: {exc}); "
                f"the server may not enforce response_format. Reply: {text[:200]!r}"
            ) from exc


def _schema(value: Any) -> tuple[Any, type | None]:
    """(JSON schema, Pydantic model class or None) from json_schema= as a local model takes it."""
    if value is None:
        return None, None
    if isinstance(value, type) and hasattr(value, "model_json_schema"):
        return value.model_json_schema(), value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidOptionError(
                f"json_schema is not valid JSON ({exc})", option="json_schema", value=value, allowed="a JSON schema"
            ) from None
    if not isinstance(value, (dict, bool)):
        raise InvalidOptionTypeError(
            f"json_schema must be a dict, JSON text or a Pydantic model class, got {type(value).__name__}",
            option="json_schema",
            value=value,
            allowed="a dict, JSON text or a Pydantic model class",
        )
    return value, None


class Reader:
    """One stream's events turned into text, a finish reason, tool calls and timings."""

    def __init__(self, req: Request, chat: bool, t_start: float, load_s: float) -> None:
        self.req, self.chat, self.t_start, self.load_s = req, chat, t_start, load_s
        self.stopper = StopMatcher(req.stop)
        self.finish: str | None = None
        self.done = False
        self.n_events = self.n_pieces = 0
        self.t_first: float | None = None
        self.usage: dict[str, Any] = {}
        self.server_timings: dict[str, Any] = {}
        self.calls: dict[int, dict[str, str]] = {}  # index -> id, name, arguments (streamed in parts)
        self.sent: list[str] = []
        self.stopped_here = False  # a stop string the server let through ended it here

    def feed(self, event: dict[str, Any], url: str) -> tuple[str, bool]:
        """(text to send, whether a stop string ended it) of one event."""
        self.n_events += 1
        if "error" in event:  # an error after the answer began (localllm serve, vLLM)
            message = error_message(event)[0]
            raise RemoteError(f"POST {url}: the server failed mid-stream: {message}", url=url)
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        if isinstance(event.get("timings"), dict):  # llama-server's own
            self.server_timings = event["timings"]
        choices = event.get("choices") or []
        if not isinstance(choices, list):
            raise RemoteError(f"POST {url}: event {self.n_events} has 'choices' that is not a list", url=url)
        piece = ""
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            if self.chat:
                delta = choice.get("delta") or {}
                piece += delta.get("content") or ""
                for call in delta.get("tool_calls") or []:
                    self._call_part(call)
            else:
                piece += choice.get("text") or ""
            if choice.get("finish_reason"):
                self.finish = self._finish(choice)
        if piece or self.calls:
            self.n_pieces += bool(piece)
            if self.t_first is None:
                self.t_first = time.perf_counter()
        text, stopped = self.stopper.feed(piece)
        self.sent.append(text)
        self.stopped_here = stopped
        return text, stopped

    def _call_part(self, call: dict[str, Any]) -> None:
        slot = self.calls.setdefault(int(call.get("index", len(self.calls))), {"id": "", "name": "", "arguments": ""})
        slot["id"] = call.get("id") or slot["id"]
        fn = call.get("function") or {}
        slot["name"] += fn.get("name") or ""
        slot["arguments"] += fn.get("arguments") or ""

    def _finish(self, choice: dict[str, Any]) -> str:
        """localllm's finish reason for OpenAI's: "stop" is an end-of-text token ("eos") unless stop
        strings were asked and the server says one was met (vLLM's stop_reason, llama-server's
        stop_type) or cannot say."""
        reason = str(choice["finish_reason"])
        if reason != "stop":
            return reason if reason in ("length", "tool_calls") else "stop"
        if not self.req.stop:
            return "eos"
        if "stop_reason" in choice:
            return "eos" if choice["stop_reason"] is None else "stop"
        return "eos" if choice.get("stop_type") == "eos" else "stop"

    def timings(self) -> Timings:
        t_end = time.perf_counter()
        first = self.t_first if self.t_first is not None else t_end
        n_gen = self.usage.get("completion_tokens")
        n_gen = n_gen if isinstance(n_gen, int) else self.n_pieces  # no usage: each event is about a token
        prompt = self.usage.get("prompt_tokens")
        cached = (self.usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        prompt_tps = self.server_timings.get("prompt_per_second")
        return Timings(
            load_s=self.load_s,
            ttft_s=first - self.t_start,
            prompt_tokens=prompt if isinstance(prompt, int) else 0,
            cached_tokens=cached if isinstance(cached, int) else 0,
            prompt_tps=float(prompt_tps) if isinstance(prompt_tps, (int, float)) else 0.0,
            decode_tokens=n_gen,
            decode_tps=(n_gen - 1) / (t_end - first) if n_gen > 1 and t_end > first else 0.0,
            total_s=t_end - self.t_start,
        )

    def last(self, text: str, finish: str) -> Chunk:
        """The finishing chunk: timings, the parsed output of a schema, the calls of a chat with tools."""
        self.sent.append(text)
        timings = self.timings()
        if self.calls:
            from localllm.tools import ToolCall

            calls = []
            for i, slot in sorted(self.calls.items()):
                try:
                    arguments = json.loads(slot["arguments"] or "{}")
                except json.JSONDecodeError as exc:
                    err = GenerationError(
                        f"the server's tool call {slot['name']!r} has arguments that are not JSON ({exc}): "
                        f"{slot['arguments'][:200]!r}"
                    )
                    return Chunk(text, (), "error", timings, error=err)
                calls.append(ToolCall(slot["id"] or f"call_{i}", slot["name"], arguments))
            return Chunk(text, (), "tool_calls", timings, tool_calls=tuple(calls))
        if self.req.schema is None:
            return Chunk(text, (), finish, timings)
        if finish in ("length", "cancelled") or self.stopped_here:  # cut before the output was whole
            return Chunk(text, (), finish, timings, incomplete=True)
        try:
            parsed = self.req.parse("".join(self.sent))
        except GenerationError as exc:
            if finish == "stop":  # the server met a stop string inside the structure
                return Chunk(text, (), finish, timings, incomplete=True)
            return Chunk(text, (), "error", timings, error=exc)
        return Chunk(text, (), finish, timings, parsed=parsed)
