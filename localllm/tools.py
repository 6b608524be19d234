r"""OpenAI-style tool calling for local models: check the tools, render them, constrain and parse the reply.

How each model family writes calls (`ToolFormat`; `tool_format` picks one from the chat template):

    hermes   <tool_call>\n{"name": "f", "arguments": {...}}\n</tool_call>, a block per call (Qwen2.5/3, Hermes)
    llama3   {"name": "f", "parameters": {...}} as the whole reply, maybe after <|python_tag|> (Llama 3.1/3.2)
    mistral  [TOOL_CALLS][{"name": "f", "arguments": {...}}, ...] (Mistral 7B v0.3, Nemo)
    generic  hermes' markup, for a template that takes no tools or writes calls some other way

The generic format: the template gets no tools. `tool_messages` adds to the system message (or puts
one first) the JSON of each tool and how to call one: `<tool_call>`, newline, `{"name": ...,
"arguments": {...}}`, newline, `</tool_call>`, a block per call. Earlier calls go back the same way
into the assistant's content; each `role: "tool"` result becomes user text `<tool_response>\n...\n
</tool_response>` (the template may not know the "tool" role); results in a row, and a user message
right after them, share one user turn, as strict templates want the roles to alternate.

The flow: check_tools, check_tool_choice, tool_format; tool_messages gives the messages and the
`tools` for `ChatFormatter.render(..., tools=)`; generate under tool_grammar (an llguidance grammar,
None for "none"); parse_tool_calls splits the reply into its text and its ToolCalls.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

from localllm.errors import GenerationError, InvalidOptionError, InvalidOptionTypeError

__all__ = [
    "TOOL_FORMATS",
    "ToolCall",
    "ToolChoice",
    "ToolFormat",
    "check_tool_choice",
    "check_tools",
    "new_call_id",
    "parse_tool_calls",
    "tool_format",
    "tool_grammar",
    "tool_messages",
]

# OpenAI's rule for function names.
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TOOL_FORM = '{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}'
_CHOICES = "None, 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}"
# OpenAI's default for a function without parameters: it takes none.
_NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}
# How much of a reply an error quotes.
_QUOTE_CHARS = 200
_CALL_FORM = '{"id": ..., "type": "function", "function": {"name": ..., "arguments": ...}}'


def _bad(option: str, message: str, value: Any, allowed: str, kind: Any = InvalidOptionError) -> Exception:
    return kind(message, option=option, value=value, allowed=allowed)


def check_tools(tools: Sequence[Mapping[str, Any]] | None) -> tuple[dict[str, Any], ...]:
    """The tools in OpenAI's form, `{"type": "function", "function": {"name", "description", "parameters"}}`,
    checked and copied. A bare function (`{"name": ..., "parameters": ...}`) is taken too; None gives ().

    Raises:
        InvalidOptionTypeError: tools is not a list, or a tool is not a dict.
        InvalidOptionError: a tool's type, name, description or parameters is bad (the message
            names the tool's index and field), or two tools share a name.
    """
    if tools is None:
        return ()
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        message = f"tools must be a list of tools, got {type(tools).__name__}; pass [{_TOOL_FORM}, ...]"
        raise _bad("tools", message, tools, f"a list of {_TOOL_FORM}", InvalidOptionTypeError)
    seen: dict[str, int] = {}
    return tuple(_check_tool(i, tool, seen) for i, tool in enumerate(tools))


def _check_tool(i: int, tool: Any, seen: dict[str, int]) -> dict[str, Any]:
    where = f"tools[{i}]"

    def bad(what: str, value: Any, allowed: str) -> Exception:
        return _bad("tools", f"{where}{what}", value, allowed)

    if not isinstance(tool, Mapping):
        message = f"{where} must be a dict like {_TOOL_FORM}, got {type(tool).__name__}"
        raise _bad("tools", message, tool, _TOOL_FORM, InvalidOptionTypeError)
    fn: Any = tool
    if "type" in tool or "function" in tool:
        if tool.get("type") != "function":
            raise bad(f"['type'] is {tool.get('type')!r}: only 'function' tools exist", tool.get("type"), "'function'")
        fn, where = tool.get("function"), where + "['function']"
        if not isinstance(fn, Mapping):
            raise bad(f" must be a dict with the function's name and parameters, got {fn!r}", fn, _TOOL_FORM)
    name = fn.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise bad(f"['name'] is {name!r}: a name is 1 to 64 letters, digits, '_', '.' or '-'", name, _NAME.pattern)
    if name in seen:
        raise bad(f"['name'] {name!r} is tools[{seen[name]}]'s name too; give each tool its own", name, "unique names")
    seen[name] = i
    description = fn.get("description")
    if description is not None and not isinstance(description, str):
        raise bad(f"['description'] must be text, got {type(description).__name__}", description, "a string")
    parameters = fn.get("parameters")
    if parameters is None:
        parameters = _NO_PARAMETERS
    elif not isinstance(parameters, Mapping):
        raise bad(f"['parameters'] must be a JSON schema (a dict), got {parameters!r}", parameters, "a JSON schema")
    elif parameters.get("type", "object") != "object":
        what = f"['parameters'] has type {parameters.get('type')!r}: arguments are named, so it must be 'object'"
        raise bad(what, parameters, '{"type": "object", "properties": {...}}')
    try:  # a copy that is JSON, so templates and grammars see exactly what the caller meant
        parameters = json.loads(json.dumps(parameters, ensure_ascii=False))
    except (TypeError, ValueError) as exc:
        raise bad(f"['parameters'] is not JSON ({exc})", parameters, "a JSON schema") from None
    described = {} if description is None else {"description": description}
    return {"type": "function", "function": {"name": name, **described, "parameters": parameters}}


@dataclass(frozen=True)
class ToolChoice:
    """What the reply may do with the tools: "auto" (text, calls or both), "none" (text only),
    "required" (one call or more) or "function" (exactly one call, of the tool `name`)."""

    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


def check_tool_choice(tool_choice: Any, tools: Sequence[Mapping[str, Any]] | None) -> ToolChoice:
    """OpenAI's `tool_choice` as a ToolChoice: None is "auto" ("none" without tools), a
    `{"type": "function", "function": {"name": N}}` forces one call of N.

    Raises:
        InvalidOptionTypeError: tool_choice is neither text nor a dict.
        InvalidOptionError: an unknown mode, an unknown function name (the valid ones are listed),
            or "required" or a function without tools.
    """
    names = [t["function"]["name"] for t in check_tools(tools)]
    if tool_choice is None:
        return ToolChoice("auto" if names else "none")
    if isinstance(tool_choice, str):
        if tool_choice not in ("auto", "none", "required"):
            raise _bad("tool_choice", f"tool_choice is {tool_choice!r}; use {_CHOICES}", tool_choice, _CHOICES)
        if tool_choice == "required" and not names:
            message = "tool_choice 'required' needs tools to call, and none were given; pass tools=[...]"
            raise _bad("tool_choice", message, tool_choice, "'auto' or 'none' without tools")
        return ToolChoice("none" if not names else tool_choice)  # type: ignore[arg-type]
    if not isinstance(tool_choice, Mapping):
        message = f"tool_choice must be text or a dict, got {type(tool_choice).__name__}"
        raise _bad("tool_choice", message, tool_choice, _CHOICES, InvalidOptionTypeError)
    fn = tool_choice.get("function")
    # Chat Completions nests the name under "function"; the Responses API puts it at the top
    name = fn.get("name") if isinstance(fn, Mapping) else tool_choice.get("name")
    if tool_choice.get("type") != "function" or not isinstance(name, str):
        raise _bad(
            "tool_choice", f"tool_choice {dict(tool_choice)!r} names no function; use {_CHOICES}", tool_choice, _CHOICES
        )
    if name not in names:
        valid = ", ".join(repr(n) for n in names) or "none: no tools were given"
        message = f"tool_choice names the function {name!r}, which is not among the tools (valid: {valid})"
        raise _bad("tool_choice", message, name, valid)
    return ToolChoice("function", name)


def new_call_id() -> str:
    """A fresh tool call id in OpenAI's style: "call_" and 24 random hex digits."""
    return "call_" + secrets.token_hex(12)


@dataclass(frozen=True)
class ToolCall:
    """A call the model made: which tool, with which arguments."""

    id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        """The call as OpenAI writes it in a reply: the arguments are a JSON string."""
        arguments = json.dumps(self.arguments, ensure_ascii=False)
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


@dataclass(frozen=True)
class ToolFormat:
    """How a model family writes tool calls.

    `shape` is "tagged" (each call's JSON between `trigger` and `end`), "json" (the reply is one
    call's JSON object, maybe after `prefix`) or "list" (`trigger`, then a JSON list of calls).
    `trigger` is the text that starts a call; `arguments_key` the key that holds the arguments;
    `parallel` whether one reply may hold several calls. `special` pairs each marker that is a
    single special token of the grammar's tokenizer with how llguidance's Lark names it
    (`<tool_call>`, or `<[id]>` for a name not written `<...>`); other markers are matched as text.
    """

    name: str
    shape: Literal["tagged", "json", "list"]
    trigger: str
    end: str = ""
    arguments_key: str = "arguments"
    prefix: str = ""
    parallel: bool = True
    special: tuple[tuple[str, str], ...] = ()


TOOL_FORMATS: Mapping[str, ToolFormat] = MappingProxyType(
    {
        "hermes": ToolFormat("hermes", "tagged", "<tool_call>", "</tool_call>"),
        "llama3": ToolFormat("llama3", "json", "{", "", "parameters", "<|python_tag|>", parallel=False),
        "mistral": ToolFormat("mistral", "list", "[TOOL_CALLS]"),
        "generic": ToolFormat("generic", "tagged", "<tool_call>", "</tool_call>"),
    }
)


# What a template holds when its model writes calls in a format, in order: the first found wins.
# Meta's Llama 3.1-3.3 templates ask for `{"name": function name, "parameters": dictionary of ...}`.
_SIGNS = (
    ("mistral", ("[TOOL_CALLS]",)),
    ("hermes", ("<tool_call>",)),
    ("llama3", ("<|python_tag|>", '"parameters": dictionary')),
)


def tool_format(
    template: str | None,
    *,
    takes_tools: bool,
    has_token: Callable[[str], bool] = lambda _: False,
    token_id: Callable[[str], int | None] | None = None,
) -> ToolFormat:
    """The format the template's model writes calls in; "generic" when it takes no tools
    (`ChatFormatter.takes_tools`) or writes them in a format not known here.

    `has_token(marker)` says whether a marker ("<tool_call>", "[TOOL_CALLS]", "<|python_tag|>")
    is a single special token of the tokenizer the grammar will run with; those are written
    into the grammar as special tokens. `token_id` gives the id of one not written `<...>`
    (Mistral's "[TOOL_CALLS]"); without it such a marker is matched as text.
    """
    found = [name for name, signs in _SIGNS if takes_tools and any(s in (template or "") for s in signs)]
    fmt = TOOL_FORMATS[found[0] if found else "generic"]
    special = []
    for marker in (fmt.trigger, fmt.end, fmt.prefix):
        if len(marker) < 2 or not has_token(marker):  # "{" is JSON, not a marker
            continue
        if marker.startswith("<") and marker.endswith(">"):
            special.append((marker, marker))
        elif token_id is not None and (i := token_id(marker)) is not None:
            special.append((marker, f"<[{i}]>"))
    return replace(fmt, special=tuple(special))


def tool_messages(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None,
    fmt: ToolFormat,
    *,
    takes_tools: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(the messages to render, the `tools` to pass to ChatFormatter.render).

    A template that takes tools gets them, and the messages with each assistant's `tool_calls`
    in the form templates expect: arguments as a dict (OpenAI sends a JSON string; templates
    write `arguments | tojson`), content "" for None, Mistral's 9-character ids. Otherwise
    (the generic format) the tools go into a system message and the calls and results into
    the text, as the module docstring describes; the template gets no tools (None).

    Raises:
        InvalidOptionError: a tool call in the messages is malformed (which message, which call),
            or a tool is (see check_tools).
    """
    checked = check_tools(tools)
    if fmt.name == "generic" or not takes_tools:
        return _generic_messages(messages, checked), None
    out = [_native_message(i, m) for i, m in enumerate(messages)]
    if fmt.name == "mistral":
        _mistral_ids(out)
    return out, (list(checked) or None)


def _native_message(i: int, message: Any) -> Any:
    if not isinstance(message, Mapping):
        return message  # ChatFormatter.render says what is wrong with it
    m = dict(message)
    if m.get("role") == "assistant":
        if m.get("tool_calls"):
            m["tool_calls"] = _native_calls(i, m["tool_calls"])
        else:  # Llama's template tests `'tool_calls' in message`: an empty list would be a call
            m.pop("tool_calls", None)
        if m.get("content") is None:
            m["content"] = ""
    elif m.get("role") == "tool":
        m["content"] = _tool_content(m.get("content"))
    return m


def _native_calls(i: int, calls: Any) -> list[dict[str, Any]]:
    """An assistant message's calls in OpenAI's form, with the arguments as dicts."""
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        message = f"messages[{i}]['tool_calls'] must be a list of calls like {_CALL_FORM}, got {calls!r}"
        raise _bad("messages", message, calls, f"[{_CALL_FORM}, ...]")
    return [_native_call(f"messages[{i}]['tool_calls'][{j}]", call) for j, call in enumerate(calls)]


def _native_call(where: str, call: Any) -> dict[str, Any]:
    fn = call.get("function", call) if isinstance(call, Mapping) else None
    name = fn.get("name") if isinstance(fn, Mapping) else None
    if not isinstance(fn, Mapping) or not isinstance(name, str):
        raise _bad("messages", f"{where} must be a call like {_CALL_FORM}, got {call!r}", call, _CALL_FORM)
    arguments, where, allowed = fn.get("arguments"), where + "['function']['arguments']", "a JSON object or its text"
    if isinstance(arguments, str):
        text = arguments
        try:
            arguments = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise _bad("messages", f"{where} is not JSON ({exc}): {_quote(text)}", text, allowed) from None
    arguments = {} if arguments is None else arguments
    if not isinstance(arguments, Mapping):
        raise _bad("messages", f"{where} must be a JSON object, got {arguments!r}", arguments, allowed)
    ident = {"id": str(call["id"])} if call.get("id") else {}
    return {**ident, "type": "function", "function": {"name": name, "arguments": dict(arguments)}}


def _tool_content(content: Any) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, Sequence) and all(isinstance(p, Mapping) and "text" in p for p in content):
        return "".join(str(p["text"]) for p in content)  # OpenAI's content parts
    return json.dumps(content, ensure_ascii=False)


def _short_id(call_id: str) -> str:
    """Mistral's templates refuse ids that are not 9 letters and digits: map others to 9 hex digits."""
    short = re.fullmatch(r"[A-Za-z0-9]{9}", call_id)
    return call_id if short else hashlib.sha256(call_id.encode("utf-8", "replace")).hexdigest()[:9]


def _mistral_ids(messages: list[Any]) -> None:
    pending: list[str] = []  # ids of the last calls, for results that do not say which call they answer
    for i, m in enumerate(m for m in messages if isinstance(m, dict)):
        if m.get("role") == "assistant" and m.get("tool_calls"):
            for j, call in enumerate(m["tool_calls"]):
                call["id"] = _short_id(call.get("id") or f"{i}.{j}")
            pending = [c["id"] for c in m["tool_calls"]]
        elif m.get("role") == "tool":
            given = m.get("tool_call_id")
            m["tool_call_id"] = _short_id(str(given)) if given else pending[0] if pending else _short_id(str(i))
            pending = [c for c in pending if c != m["tool_call_id"]]


def _generic_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """What the generic format tells the model: the tools' JSON, then how to call one and how results come back."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou can call the functions below to help answer. Their signatures, in JSON Schema:\n"
        f"<tools>\n{listed}\n</tools>\n\n"
        "To call a function, write a JSON object with its name and arguments between <tool_call> and "
        '</tool_call>, like this:\n<tool_call>\n{"name": "function name", "arguments": {"argument name": value}}\n'
        "</tool_call>\nWrite one such block per call. Results come back between <tool_response> and "
        "</tool_response>. If no function helps, answer directly."
    )


def _generic_messages(messages: Sequence[Mapping[str, Any]], tools: tuple[dict[str, Any], ...]) -> list[Any]:
    out: list[Any] = []
    after_tool = False  # the last message out is a user turn made of tool results
    for i, m in enumerate(messages):
        role = m.get("role") if isinstance(m, Mapping) else None
        if role == "tool":
            block = f"<tool_response>\n{_tool_content(m.get('content'))}\n</tool_response>"
            if after_tool:
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
            after_tool = True
            continue
        if role == "user" and after_tool and isinstance(m.get("content"), str):
            out[-1]["content"] += "\n\n" + m["content"]
        elif role == "assistant":
            message = {k: v for k, v in m.items() if k != "tool_calls"}
            content = message.get("content") or ""
            if m.get("tool_calls"):
                calls = [json.dumps(c["function"], ensure_ascii=False) for c in _native_calls(i, m["tool_calls"])]
                text = "\n".join(f"<tool_call>\n{c}\n</tool_call>" for c in calls)
                content = f"{content}\n{text}" if content else text
            out.append({**message, "content": content})
        else:
            out.append(dict(m) if isinstance(m, Mapping) else m)
        after_tool = False
    if tools:
        prompt = _generic_system_prompt(tools)
        first = out[0] if out else None
        if isinstance(first, dict) and first.get("role") == "system" and isinstance(first.get("content"), str):
            out[0] = {**first, "content": f"{first['content']}\n\n{prompt}" if first["content"] else prompt}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


# JSON inside calls: the separators may have one space or a newline and an indent, as json.dumps
# writes them (bounded, so the model cannot pad forever); unknown schema keywords are ignored.
_JSON_OPTIONS = {"whitespace_pattern": r"( |\n{1,2}[ \t]{0,20})?", "lenient": True}
# Whitespace a required call may start with, and that may come between calls.
_WS = r"WS: /[ \t\r\n]{0,8}/"
_TEXT = r"TEXT: /(.|\n)*/"


def tool_grammar(tools: Sequence[Mapping[str, Any]], choice: ToolChoice | Any, fmt: ToolFormat) -> str | None:
    """An llguidance (Lark) grammar for the reply under `choice`, or None for "none" (or no tools).

    Each call's JSON is `{"name": <a tool's name>, <fmt.arguments_key>: <that tool's parameters>}`.
    "auto" allows text with any number of calls (the hermes and mistral triggers start one
    wherever they appear; llama3's call is a reply that starts with "{"); "required" starts the
    reply with one or more calls (optional leading whitespace) and ends it after them; "function"
    is exactly one call of that tool.

    Raises:
        InvalidOptionError: a tool's parameters are a schema llguidance cannot compile (which
            tool, and llguidance's reason), or choice is bad (see check_tool_choice).
    """
    checked = check_tools(tools)
    if not isinstance(choice, ToolChoice):
        choice = check_tool_choice(choice, checked)
    if choice.mode == "none" or not checked:
        return None
    chosen = [t for t in checked if choice.mode != "function" or t["function"]["name"] == choice.name]
    if not chosen:  # a ToolChoice made by hand: say which names there are
        check_tool_choice({"type": "function", "function": {"name": choice.name}}, checked)
    rules = _start_rules(fmt, choice.mode) + ["call: " + " | ".join(f"call_{k}" for k in range(len(chosen)))]
    rules += [f"call_{k}: %json {json.dumps(_call_schema(t, fmt), ensure_ascii=False)}" for k, t in enumerate(chosen)]
    grammar = "%llguidance {}\n" + "\n".join(rules) + "\n"
    _check_grammar(grammar, chosen, checked, fmt)
    return grammar


def _call_schema(tool: Mapping[str, Any], fmt: ToolFormat) -> dict[str, Any]:
    from localllm.constraints import closed_schema

    fn = tool["function"]
    arguments = closed_schema(dict(fn["parameters"]))  # a small model adds keys of its own to an open object
    arguments.pop("$schema", None)
    # "#/$defs/x" refers to the document's root: lift the definitions there
    defs = {k: arguments.pop(k) for k in ("$defs", "definitions") if k in arguments}
    properties: dict[str, Any] = {"name": {"const": fn["name"]}, fmt.arguments_key: arguments}
    if fmt.shape == "list":  # Mistral's history shows calls with their id: let the model write one
        properties["id"] = {"type": "string", "pattern": "^[A-Za-z0-9]{9}$"}
    schema = {"type": "object", "properties": properties, "required": ["name", fmt.arguments_key]}
    return {**schema, "additionalProperties": False, **defs, "x-guidance": _JSON_OPTIONS}


def _ref(fmt: ToolFormat, marker: str) -> str:
    """A marker in Lark: its special token where it is one, else the text."""
    return dict(fmt.special).get(marker) or json.dumps(marker)


def _start_rules(fmt: ToolFormat, mode: str) -> list[str]:
    trigger = _ref(fmt, fmt.trigger)
    # a special token cannot occur inside TEXT, so it ends the text by itself; a text trigger needs
    # a lazy lexeme: TEXT up to the first trigger, never past it (StructTag's construction)
    special = fmt.trigger in dict(fmt.special)
    head, lazy = (f"TEXT {trigger}", []) if special else ("tag_start", [f"tag_start[lazy]: TEXT {trigger}"])
    if fmt.shape == "tagged":
        body = f'"\\n"? call "\\n"? {_ref(fmt, fmt.end)}'
        if mode == "auto":  # one call ends the reply; parallel calls may have text between and after
            return ["start: tag* TEXT" if fmt.parallel else "start: tag | TEXT", f"tag: {head} {body}", _TEXT, *lazy]
        more = " (WS tag)*" if mode == "required" and fmt.parallel else ""
        return [f"start: WS tag{more}", f"tag: {trigger} {body}", _WS]
    if fmt.shape == "json":
        prefix = f"{_ref(fmt, fmt.prefix)}? " if fmt.prefix in dict(fmt.special) else ""
        if mode == "auto":  # plain text must then not start with "{": such a reply is the call
            return [f"start: TEXT | WS {prefix}call", r"TEXT: /[ \t\r\n]*([^{ \t\r\n](.|\n)*)?/", _WS]
        return [f"start: WS {prefix}call", _WS]
    calls = 'call ("," " "? call)*' if fmt.parallel and mode != "function" else "call"
    body = f'" "? "[" {calls} "]"'
    if mode == "auto":
        return [f"start: TEXT | {head} {body}", _TEXT, *lazy]
    return [f"start: WS {trigger} {body}", _WS]


def _check_grammar(grammar: str, chosen: list[Any], tools: tuple[Any, ...], fmt: ToolFormat) -> None:
    from llguidance import LLMatcher

    broken, errors = LLMatcher.validate_grammar_with_warnings(grammar)
    if not broken:
        return
    index = {t["function"]["name"]: i for i, t in enumerate(tools)}
    for tool in chosen:  # which tool's schema is it? (the rest of the grammar is this module's)
        bad, why = LLMatcher.validate_grammar_with_warnings(f"start: %json {json.dumps(_call_schema(tool, fmt))}")
        if bad:
            name, reason = tool["function"]["name"], (why or ["no reason given"])[0].strip().splitlines()[0]
            message = (
                f"tools[{index[name]}] ({name!r}): llguidance cannot use its parameters as a grammar "
                f"({reason}); simplify the schema, or pass tool_choice='none' to call no tools"
            )
            raise _bad("tools", message, tool["function"]["parameters"], "a JSON schema llguidance supports")
    raise GenerationError(f"the tool-call grammar ({fmt.name}) does not compile: {errors[0].strip()[:400]}")


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str, tuple[ToolCall, ...]]:
    """(the reply's text without the call markup, the calls it makes, in order), each call with a new id.

    A hermes call may lack its closing `</tool_call>` at the end of the reply. A llama3 reply
    that is JSON but not a call (no "name", or not valid JSON and not starting like a call) is text.

    Raises:
        GenerationError: a call is not valid JSON, or has no name or no object of arguments
            (the message quotes the call, up to 200 characters).
    """
    return {"tagged": _parse_tagged, "json": _parse_json, "list": _parse_list}[fmt.shape](text, fmt)


def _parse_tagged(text: str, fmt: ToolFormat) -> tuple[str, tuple[ToolCall, ...]]:
    pieces, calls, pos = [], list[ToolCall](), 0
    while (start := text.find(fmt.trigger, pos)) != -1:
        pieces.append(text[pos:start])
        body_at = start + len(fmt.trigger)
        stop = text.find(fmt.end, body_at) if fmt.end else -1
        body = text[body_at:] if stop == -1 else text[body_at:stop]
        pos = len(text) if stop == -1 else stop + len(fmt.end)
        calls.append(_call(_json(body, fmt), fmt, body))
    pieces.append(text[pos:])
    return "".join(pieces).strip(), tuple(calls)


# What a llama3 reply that is meant as a call starts with.
_LOOKS_LIKE_CALL = re.compile(r'\s*\{\s*"name"\s*:')


def _parse_json(text: str, fmt: ToolFormat) -> tuple[str, tuple[ToolCall, ...]]:
    rest = text.lstrip()
    tagged = bool(fmt.prefix) and rest.startswith(fmt.prefix)
    if tagged:
        rest = rest[len(fmt.prefix) :].lstrip()
    decoder, calls = json.JSONDecoder(), list[ToolCall]()
    while rest.startswith("{"):
        try:
            obj, end = decoder.raw_decode(rest)
        except json.JSONDecodeError as exc:
            if tagged or calls or _LOOKS_LIKE_CALL.match(rest):
                raise _not_json(rest, exc, fmt) from None
            break
        if not (
            calls or tagged or (isinstance(obj, dict) and "name" in obj and obj.keys() & {"parameters", "arguments"})
        ):
            break  # a JSON answer, not a call
        calls.append(_call(obj, fmt, rest[:end]))
        rest = rest[end:].lstrip().removeprefix(";").lstrip()  # Llama 3.1 separates calls with ";"
    if not calls:
        return text.strip(), ()
    return rest.strip(), tuple(calls)


def _parse_list(text: str, fmt: ToolFormat) -> tuple[str, tuple[ToolCall, ...]]:
    start = text.find(fmt.trigger)
    if start == -1:
        return text.strip(), ()
    rest = text[start + len(fmt.trigger) :].lstrip()
    try:
        obj, end = json.JSONDecoder().raw_decode(rest)
    except json.JSONDecodeError as exc:
        raise _not_json(rest, exc, fmt) from None
    items = obj if isinstance(obj, list) else [obj]  # some fine-tunes write a lone object
    calls = tuple(_call(item, fmt, rest[:end]) for item in items)
    return (text[:start] + rest[end:]).strip(), calls


def _json(text: str, fmt: ToolFormat, raw: str | None = None) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _not_json(text if raw is None else raw, exc, fmt) from None


def _not_json(body: str, exc: json.JSONDecodeError, fmt: ToolFormat) -> GenerationError:
    return GenerationError(
        f"the model wrote a {fmt.name} tool call that is not valid JSON ({exc.msg} at character {exc.pos}): "
        f"{_quote(body)}; generate again, or constrain the reply with tool_grammar()"
    )


def _call(obj: Any, fmt: ToolFormat, raw: str) -> ToolCall:
    name = obj.get("name") if isinstance(obj, dict) else None
    key = next((k for k in (fmt.arguments_key, "arguments", "parameters") if isinstance(obj, dict) and k in obj), None)
    arguments = obj.get(key) if key and isinstance(obj, dict) else {}
    if isinstance(arguments, str):  # some models write the arguments as a JSON string, as OpenAI sends them
        arguments = _json(arguments, fmt, raw)
    if not isinstance(name, str) or not isinstance(arguments, dict):
        raise GenerationError(
            f"the model wrote a {fmt.name} tool call without a function name and an object of "
            f"{fmt.arguments_key}: {_quote(raw)}; generate again, or constrain the reply with tool_grammar()"
        )
    return ToolCall(new_call_id(), name, arguments)


def _quote(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= _QUOTE_CHARS else text[:_QUOTE_CHARS] + "...")
