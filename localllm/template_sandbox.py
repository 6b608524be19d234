"""Jinja's sandbox with limits on work: the environment chat templates render in.

Templates come from model files, so a render may run neither for long nor build big
values. `ImmutableSandboxedEnvironment` keeps a template away from Python's internals but
bounds no work; `BoundedEnvironment` adds, for each render (`render_bounded`):

- a deadline, checked at every loop iteration, call, filter and piece of output;
- a cap on loop iterations (every `{% for %}` is wrapped when the template is parsed) and
  on calls (every call goes through the sandbox's `call`);
- a cap on the rendered prompt, and one on all text written on the way (into `{% set %}`
  blocks, macros and filter blocks, which buffer without yielding);
- a cap on any value built by `*`, `+`, `~`, `%`, `str.format`, `join`, `replace`,
  padding and the filters that make strings, checked *before* the value is built (a
  single `'a' * 10**9` would otherwise take the memory at once); `range()` capped;
  integers capped in bits (`9 ** (9 ** 9)`).

Outside a render (Jinja folding constants while compiling) only the size caps apply.
A template over a limit raises `TemplateLimitError`, which names the limit and its value.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import math
import re
import string
import time
import types
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.exceptions import SecurityError
from jinja2.runtime import LoopContext
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum
from jinja2.visitor import NodeTransformer

__all__ = [
    "MAX_CALLS",
    "MAX_INT_BITS",
    "MAX_ITEMS",
    "MAX_LOOP_ITERATIONS",
    "MAX_TEMPLATE_CHARS",
    "MIN_OUTPUT_CHARS",
    "OUTPUT_PER_INPUT_CHAR",
    "RENDER_TIME_LIMIT_S",
    "BoundedEnvironment",
    "RenderLimits",
    "TemplateLimitError",
    "check_printable",
    "render_bounded",
    "stringify",
    "weight",
]

# Real templates render in milliseconds (SmolLM2's; GLM-4.6's, Mistral-Small-3.1's and
# Nemotron-Nano-2's tool templates take under 40 ms here, compiling included); 2 s is far
# beyond any of them and short enough that a hostile one costs little at load.
RENDER_TIME_LIMIT_S = 2.0
# The prompt may be 8 characters per character of input (messages, BOS/EOS text): a
# template writes each message once or twice plus its markup. Never under 1 MiB, which
# no template needs for a short conversation.
MIN_OUTPUT_CHARS = 1 << 20
OUTPUT_PER_INPUT_CHAR = 8
# Text written into blocks and macros is written again by whoever outputs it.
WRITTEN_PER_OUTPUT_CHAR = 4
# A template loops over messages and their tool calls: thousands of iterations for a long
# chat. A million is about 0.5 s of Jinja and no real template's need.
MAX_LOOP_ITERATIONS = 1_000_000
MAX_CALLS = 1_000_000
# Integers in chat templates are counts and indexes; 4096 bits is a 1233-digit number.
MAX_INT_BITS = 4096
# The largest real templates (tool-calling ones) are tens of KB; the cap keeps compiling fast.
MAX_TEMPLATE_CHARS = 256 * 1024
# MAX_RANGE is Jinja's own sandbox cap on range() (100,000); lists and tuples built with '*'
# and '+' get the same cap: sorting 100,000 items takes a tenth of a second, a million a second.
MAX_ITEMS = MAX_RANGE


class TemplateLimitError(Exception):
    """A template went over a render limit. Not a ValueError/TypeError on purpose: Jinja's
    filters (`int`, `float`) swallow those, which would let a template carry on."""

    def __init__(self, limit: str, maximum: float, detail: str) -> None:
        super().__init__(detail)
        self.limit = limit
        self.maximum = maximum


@dataclass
class RenderLimits:
    """The budget of one render; counters count down."""

    value_chars: int = MIN_OUTPUT_CHARS  # biggest string (or sequence length) a step may build
    output_chars: float = math.inf
    written_chars: float = math.inf
    time_s: float = math.inf
    deadline: float = math.inf
    loops_left: float = math.inf
    calls_left: float = math.inf
    written: int = 0

    @classmethod
    def for_input(cls, input_chars: int, *, time_s: float = RENDER_TIME_LIMIT_S) -> RenderLimits:
        out = max(MIN_OUTPUT_CHARS, OUTPUT_PER_INPUT_CHAR * input_chars)
        return cls(
            value_chars=out,
            output_chars=out,
            written_chars=WRITTEN_PER_OUTPUT_CHAR * out,
            time_s=time_s,
            deadline=time.monotonic() + time_s,
            loops_left=MAX_LOOP_ITERATIONS,
            calls_left=MAX_CALLS,
        )


_COMPILE_TIME = RenderLimits()  # outside a render: size caps only
_current = contextvars.ContextVar[RenderLimits]("localllm_template_limits", default=_COMPILE_TIME)


def render_bounded(template: Any, limits: RenderLimits, **variables: Any) -> str:
    """template.render(**variables) under limits, streaming so the output is counted as it grows.

    Raises:
        TemplateLimitError: a limit was passed; anything the template itself raises.
    """
    token = _current.set(limits)
    try:
        parts: list[str] = []
        n = 0
        for piece in template.generate(**variables):
            n += len(piece)
            if n > limits.output_chars:
                raise TemplateLimitError(
                    "output", limits.output_chars, f"the prompt grew past {limits.output_chars:,} characters"
                )
            _check_time(limits)
            parts.append(piece)
        return "".join(parts)
    finally:
        _current.reset(token)


# --- counting -----------------------------------------------------------------------
def _check_time(lim: RenderLimits) -> None:
    if time.monotonic() > lim.deadline:
        raise TemplateLimitError("time", lim.time_s, f"rendering took longer than {lim.time_s:g} s")


def _tick_call(lim: RenderLimits) -> None:
    lim.calls_left -= 1
    if lim.calls_left < 0:
        raise TemplateLimitError("calls", MAX_CALLS, f"it made more than {MAX_CALLS:,} calls")
    _check_time(lim)


class _Guarded:
    """A loop's iterable: each item taken counts against the render's loop budget."""

    __slots__ = ("_iterable",)

    def __init__(self, iterable: Any) -> None:
        self._iterable = iterable

    def __len__(self) -> int:  # LoopContext's loop.length/loop.last use it when there is one
        return len(self._iterable)

    def __iter__(self) -> Iterator[Any]:
        lim = _current.get()
        for item in self._iterable:
            lim.loops_left -= 1
            if lim.loops_left < 0:
                raise TemplateLimitError(
                    "loop iterations", MAX_LOOP_ITERATIONS, f"it ran more than {MAX_LOOP_ITERATIONS:,} loop iterations"
                )
            _check_time(lim)
            yield item


# --- sizes --------------------------------------------------------------------------
_DICT_VIEWS: tuple[type[Collection[Any]], ...] = (type({}.keys()), type({}.values()), type({}.items()))
_SEQUENCES: tuple[type[Collection[Any]], ...] = (list, tuple, set, frozenset, *_DICT_VIEWS)


def weight(value: Any, limit: float) -> float:
    """An upper bound on len(str(value)), computed in O(limit) steps: it stops once past limit.

    Containers are walked without building their text (a list holding a list a thousand
    times, each holding it again, would print to terabytes)."""
    if isinstance(value, str):
        return len(value)
    total = 0
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            total += 6 * len(v) + 2  # quoted and escaped inside a container (\x00, \u2028 in JSON)
        elif isinstance(v, bytes):  # printed as its repr: b'\x00' is four characters a byte
            total += 4 * len(v) + 3
        elif v is None or isinstance(v, (bool, float)):
            total += 24
        elif isinstance(v, int):
            total += 2 + v.bit_length() // 3
        elif isinstance(v, (dict, Namespace)):
            if isinstance(v, Namespace):
                v = object.__getattribute__(v, "_Namespace__attrs")
            total += 16 + 4 * len(v)
            if total > limit:
                return total
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, _SEQUENCES):
            total += 16 + 2 * len(v)
            if total > limit:
                return total
            stack.extend(v)
        else:  # Undefined, macros, loop objects, a caller's own objects: short reprs
            total += 64
        if total > limit:
            return total
    return total


def _too_big(what: str, size: float, lim: RenderLimits) -> None:
    if size > lim.value_chars:
        raise TemplateLimitError(
            "value size",
            lim.value_chars,
            f"{what} would make a value of {size:,.0f} characters or items, more than {lim.value_chars:,}",
        )


def check_printable(value: Any, what: str = "a value") -> None:
    """Raise TemplateLimitError if str(value) would pass the render's value limit."""
    lim = _current.get()
    _too_big(f"printing {what}", weight(value, lim.value_chars), lim)


def _too_many(what: str, n: int) -> None:
    if n > MAX_ITEMS:
        raise TemplateLimitError(
            "list size", MAX_ITEMS, f"{what} would make a list of {n:,} items, more than {MAX_ITEMS:,}"
        )


def stringify(value: Any, what: str = "a value") -> str:
    """str(value), once sure the text is within the render's value limit."""
    if isinstance(value, str):
        return value
    check_printable(value, what)
    return str(value)


def _check_int(what: str, n: Any, lim: RenderLimits) -> None:
    if isinstance(n, int) and abs(n) > lim.value_chars:
        raise TemplateLimitError(
            "value size", lim.value_chars, f"{what} was given {n:,}, more than {lim.value_chars:,}"
        )


def _check_bits(what: str, bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(
            "integer size",
            MAX_INT_BITS,
            f"{what} would make an integer of about {bits:,} bits, more than {MAX_INT_BITS:,}",
        )


_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)")


def _digits(what: str, text: str, lim: RenderLimits) -> int:
    """The sum of the numbers written in a format spec (widths, precisions)."""
    total = 0
    for d in re.findall(r"\d+", text):
        if len(d) > 9:
            raise TemplateLimitError("value size", lim.value_chars, f"{what} has a width of {len(d)} digits")
        total += int(d)
    return total


def _check_printf(fmt: str, args: Any, lim: RenderLimits) -> None:
    """'%' formatting: widths, '*' widths and the values' printed size, before formatting."""
    specs = [m for m in _PRINTF.finditer(fmt) if m.group(3) != "%"]
    widths = sum(_digits("a '%' format", (m.group(1) or "") + " " + (m.group(2) or ""), lim) for m in specs)
    values = args if isinstance(args, tuple) else (args,)
    if any("*" in m.group(0) for m in specs):  # widths taken from the values
        for v in values:
            _check_int("a '%' format's '*' width", v, lim)
    printed = sum(weight(v, lim.value_chars) for v in values)
    if not isinstance(args, tuple):
        printed *= max(len(specs), 1)  # a mapping's values may be used by several %(name)s
    _too_big("a '%' format", len(fmt) + widths + printed, lim)


def _check_format(fmt: str, args: tuple, kwargs: Mapping[str, Any], lim: RenderLimits) -> None:
    """str.format / format_map: widths in the specs and the biggest value times the fields."""
    fields = 0
    widths = 0
    nested = False
    for _literal, field, spec, _conv in string.Formatter().parse(fmt):
        if field is not None:
            fields += 1
        if spec:
            widths += _digits("a format spec", spec, lim)
            nested = nested or "{" in spec
    values = [*args, *kwargs.values()]
    if nested:
        for v in values:
            _check_int("a format spec's nested width", v, lim)
    biggest = max((weight(v, lim.value_chars) for v in values), default=0)
    _too_big("str.format", len(fmt) + widths + fields * biggest, lim)


def _check_str_method(s: str | bytes, name: str, args: tuple, kwargs: dict, lim: RenderLimits) -> tuple:
    """Checks before a str (or bytes) method that can grow text; returns the args (join's materialised)."""
    what = f"{type(s).__name__}.{name}"
    if name in ("center", "ljust", "rjust", "zfill"):
        _check_int(what, args[0] if args else kwargs.get("width"), lim)
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(size, int):
            tabs = s.count("\t") if isinstance(s, str) else s.count(b"\t")
            _too_big(what, len(s) + tabs * max(size, 0), lim)
    elif name == "replace" and len(args) >= 2 and all(isinstance(a, type(s)) for a in args[:2]):
        count = args[2] if len(args) > 2 else kwargs.get("count", -1)
        _too_big(what, _replaced_size(s, args[0], args[1], count), lim)
    elif name == "join" and args:
        items = list(args[0])
        joined = sum(len(x) if isinstance(x, (str, bytes)) else 0 for x in items) + len(s) * max(len(items) - 1, 0)
        _too_big(what, joined, lim)
        args = (items, *args[1:])
    elif name == "format" and isinstance(s, str):
        _check_format(s, args, kwargs, lim)
    elif name == "format_map" and isinstance(s, str) and args and isinstance(args[0], Mapping):
        _check_format(s, (), args[0], lim)
    elif name == "translate" and args and isinstance(args[0], Mapping):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        _too_big(what, len(s) * max(longest, 1), lim)
    return args


def _replaced_size(s: Any, old: Any, new: Any, count: Any) -> int:
    n = len(s) + 1 if not old else s.count(old)
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * (len(new) - len(old))


def _check_result(result: Any, what: str, lim: RenderLimits) -> None:
    if isinstance(result, (str, bytes, list, tuple, dict, set)):
        _too_big(what, len(result), lim)


# --- filters ------------------------------------------------------------------------
# Filters that print their value, with how much longer the text can get (escape: '<' is '&lt;').
_PRINTING = {
    **dict.fromkeys(("string", "pprint", "trim", "striptags", "wordcount", "truncate", "safe"), 1),
    **dict.fromkeys(("center", "indent", "wordwrap", "replace", "format"), 1),
    **dict.fromkeys(("upper", "lower", "title", "capitalize", "urlize"), 3),  # case maps: 'ß' -> 'SS'
    **dict.fromkeys(("escape", "e", "forceescape", "xmlattr"), 6),
    "urlencode": 12,
}


def _filter_checks(name: str, a: dict[str, Any], value: Any, lim: RenderLimits) -> None:
    """Size checks before filter `name` runs; `a` holds its arguments by name (defaults filled)."""
    what = f"the {name} filter"
    if name in _PRINTING:
        _too_big(what, _PRINTING[name] * weight(value, lim.value_chars), lim)
    text = value if isinstance(value, str) else None
    size = len(text) if text is not None else weight(value, lim.value_chars)
    if name == "center":
        _check_int(what, a.get("width"), lim)
    elif name == "indent":
        width = a.get("width")
        lines = text.count("\n") + 1 if text is not None else size
        _check_int(what, width, lim)
        _too_big(what, size + lines * (len(width) if isinstance(width, str) else max(int(width or 0), 0)), lim)
    elif name == "wordwrap":
        _check_int(what, a.get("width"), lim)
        wrap = a.get("wrapstring")
        _too_big(what, size + (size + 1) * (len(wrap) if isinstance(wrap, str) else 1), lim)
    elif name == "urlize":
        extra = sum(len(x) for x in (a.get("target"), a.get("rel")) if isinstance(x, str)) + 64
        _too_big(what, 3 * size + (size // 4 + 1) * extra, lim)
    elif name == "replace":
        old, new = a.get("old"), a.get("new")
        if isinstance(old, str) and isinstance(new, str):
            grown = _replaced_size(text, old, new, a.get("count")) if text is not None else (size + 1) * (len(new) + 1)
            _too_big(what, grown, lim)
    elif name == "format":
        if isinstance(value, str):
            fmt_args = a.get("kwargs") or a.get("args") or ()
            _check_printf(value, tuple(fmt_args) if not isinstance(fmt_args, Mapping) else fmt_args, lim)
    elif name in ("batch", "slice"):
        _check_int(what, a.get("linecount", a.get("slices")), lim)
    elif name == "sum" and not isinstance(a.get("start", 0), (int, float)):
        raise SecurityError("the sum filter takes only a number as its start in a chat template")


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Jinja passes a context/environment first to some filters; its async variants wrap a
    # sync function that may not take it (the wrapper drops it): bind against the sync one.
    skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    inner = inspect.unwrap(func)
    inner_skip = 1 if getattr(inner, "jinja_pass_arg", None) is not None else 0
    try:
        sig: inspect.Signature | None = inspect.signature(inner)
    except (TypeError, ValueError):  # markupsafe.escape is a C function
        sig = None

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        lim = _current.get()
        _tick_call(lim)
        if len(args) > skip:
            value = args[skip]
            if name == "join":  # its items are materialised once, checked, then joined
                items = list(value)
                sep = args[skip + 1] if len(args) > skip + 1 else kwargs.get("d", "")
                printed = sum(weight(x, lim.value_chars) for x in items)
                _too_big("the join filter", printed + weight(sep, lim.value_chars) * max(len(items) - 1, 0), lim)
                args = (*args[:skip], items, *args[skip + 1 :])
            else:
                bound: dict[str, Any] = {}
                if sig is not None:
                    try:
                        b = sig.bind(*args[skip - inner_skip :], **kwargs)
                    except TypeError:
                        pass  # the filter itself reports bad arguments
                    else:
                        b.apply_defaults()
                        bound = dict(b.arguments)
                _filter_checks(name, bound, value, lim)
        result = func(*args, **kwargs)
        _check_result(result, f"the {name} filter", lim)
        return result

    return bounded


# --- the environment ----------------------------------------------------------------
# Hooks are filters, called directly by the compiled template (a call would go through the
# sandbox's call(), twice as slow); taking the context keeps Jinja from running them at
# compile time on constants, where no render's budget applies.
_EMIT, _CONCAT, _LOOP = "localllm_emit", "localllm_concat", "localllm_loop"


def _hook(name: str, arg: nodes.Node, lineno: int) -> nodes.Filter:
    return nodes.Filter(arg, name, [], [], None, None, lineno=lineno)


class _InsertHooks(NodeTransformer):
    """Loops iterate through a counter; output and `~` go through size checks."""

    # generic_visit transforms the children in place and returns the node it was given
    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = _hook(_LOOP, node.iter, node.lineno)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        node.nodes = [
            _hook(_EMIT, nodes.Const(c.data, lineno=c.lineno) if isinstance(c, nodes.TemplateData) else c, c.lineno)
            for c in node.nodes
        ]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _hook(_CONCAT, nodes.Tuple(list(node.nodes), "load", lineno=node.lineno), node.lineno)


@pass_context
def _emit(_context: Any, value: Any) -> str:
    """One piece of output, wherever it goes (the prompt, a block, a macro's text)."""
    text = stringify(value, "an expression")
    lim = _current.get()
    lim.written += len(text)
    if lim.written > lim.written_chars:
        raise TemplateLimitError(
            "written",
            lim.written_chars,
            f"it wrote more than {lim.written_chars:,.0f} characters (blocks and macros included)",
        )
    _check_time(lim)
    return text


@pass_context
def _concat(_context: Any, values: tuple) -> str:
    lim = _current.get()
    parts = [v if isinstance(v, str) else stringify(v, "a '~' operand") for v in values]
    _too_big("'~'", sum(map(len, parts)), lim)
    return "".join(parts)


@pass_context
def _loop(_context: Any, iterable: Any) -> _Guarded:
    return _Guarded(iterable)


def _range(*args: Any) -> range:
    rng = range(*args)
    try:
        n: float = len(rng)
    except OverflowError:
        n = math.inf
    if n > MAX_RANGE:
        raise TemplateLimitError(
            "range", MAX_RANGE, f"range({', '.join(map(str, args))}) has {n:,} items, more than {MAX_RANGE:,}"
        )
    return rng


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002
    if not all(isinstance(x, int) and 0 <= x <= 1000 for x in (n, min, max)):
        raise TemplateLimitError("value size", 1000, "lipsum() takes counts of at most 1,000")
    return generate_lorem_ipsum(n, html, min, max)


_BUILTINS = (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodWrapperType)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with every render's work bounded (see the module docstring)."""

    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _range
        self.globals["lipsum"] = _lipsum
        for name, func in list(self.filters.items()):
            self.filters[name] = _bounded_filter(name, func)
        self.filters.update({_EMIT: _emit, _CONCAT: _concat, _LOOP: _loop})

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        self.filters[name] = _bounded_filter(name, func)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateLimitError(
                "template size",
                MAX_TEMPLATE_CHARS,
                f"the template is {len(source):,} characters, more than {MAX_TEMPLATE_CHARS:,}",
            )
        tree = _InsertHooks().visit(super()._parse(source, name, filename))
        tree.set_environment(self)
        return tree

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        lim = _current.get()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(n, int):
                    if not isinstance(seq, (str, bytes)):
                        _too_many("'*'", len(seq) * n)
                    _too_big("'*'", len(seq) * n, lim)
                    break
            else:
                if isinstance(left, int) and isinstance(right, int):
                    _check_bits("'*'", left.bit_length() + right.bit_length())
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                if not isinstance(left, (str, bytes)):
                    _too_many("'+'", len(left) + len(right))
                _too_big("'+'", len(left) + len(right), lim)
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                _check_bits("'**'", left.bit_length() * right)
        elif operator == "%" and isinstance(left, (str, bytes)):
            _check_printf(left if isinstance(left, str) else left.decode("latin-1"), right, lim)
        return self.binop_table[operator](left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        lim = _current.get()
        _tick_call(lim)
        if isinstance(__obj, LoopContext) and args:  # loop(children) in a recursive loop
            args = (_Guarded(args[0]), *args[1:])
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(target, _BUILTINS) and isinstance(owner, (str, bytes, int)):
            name = getattr(target, "__name__", "")
            if name not in ("format", "format_map"):  # sizes from arguments: ' '.zfill(10**9), (1).to_bytes(10**9)
                for v in (*args, *kwargs.values()):
                    _check_int(f"{type(owner).__name__}.{name}()", v, lim)
            if not isinstance(owner, int):
                args = _check_str_method(owner, name, args, kwargs, lim)
        result = super().call(__context, __obj, *args, **kwargs)
        _check_result(result, "a call", lim)
        return result
