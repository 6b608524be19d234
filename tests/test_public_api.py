"""The public face agrees with itself: `__all__`, the lazy map, the type-checking imports, and
every type a public call returns or a public value holds is exported."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
from pathlib import Path

import localllm

INIT = Path(localllm.__file__)
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _type_checking_imports() -> dict[str, str]:
    """name -> module for the imports under `if TYPE_CHECKING:` in localllm/__init__.py."""
    tree = ast.parse(INIT.read_text(encoding="utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    out = {}
    for node in block.body:
        assert isinstance(node, ast.ImportFrom) and node.module, ast.dump(node)
        for alias in node.names:
            assert alias.asname == alias.name, f"{alias.name}: re-export as `X as X` so type checkers see it"
            out[alias.name] = node.module
    return out


def test_all_the_lazy_map_and_the_type_checking_imports_agree():
    exports = localllm._EXPORTS
    assert localllm.__all__ == sorted(localllm.__all__)
    assert set(localllm.__all__) == set(exports) | {"__version__"}
    assert _type_checking_imports() == exports


def test_every_name_comes_from_the_module_the_map_names():
    for name, module in localllm._EXPORTS.items():
        obj = getattr(importlib.import_module(module), name)
        assert getattr(localllm, name) is obj, name
        home = getattr(obj, "__module__", module)
        assert home == module or home.startswith(module + "."), (name, home, module)


def _annotations(obj) -> list[tuple[str, str, dict]]:
    """(where, annotation text, namespace) for what an exported name returns or holds."""
    out = []
    if inspect.isclass(obj):
        ns = vars(importlib.import_module(obj.__module__))
        if dataclasses.is_dataclass(obj):
            out += [(f"{obj.__name__}.{f.name}", str(f.type), ns) for f in dataclasses.fields(obj)]
        else:  # attributes a class declares (Model.info, Model.plan)
            hints = vars(obj).get("__annotations__", {})
            out += [(f"{obj.__name__}.{k}", str(v), ns) for k, v in hints.items() if not k.startswith("_")]
        for attr, member in vars(obj).items():
            if attr.startswith("_"):
                continue
            fn = member.fget if isinstance(member, property) else member
            if inspect.isfunction(fn) and "return" in fn.__annotations__:
                out.append((f"{obj.__name__}.{attr}", str(fn.__annotations__["return"]), ns))
    elif inspect.isfunction(obj) and "return" in obj.__annotations__:
        ns = vars(importlib.import_module(obj.__module__))
        out.append((obj.__name__, str(obj.__annotations__["return"]), ns))
    return out


def _imported_names(module_name: str) -> dict[str, str]:
    """name -> module for every `from localllm... import name` in a module, TYPE_CHECKING blocks included."""
    source = Path(importlib.import_module(module_name).__file__ or "").read_text(encoding="utf-8")
    out = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("localllm"):
            for alias in node.names:
                out[alias.asname or alias.name] = node.module
    return out


def _localllm_class(name: str, ns: dict):
    value = ns.get(name)
    if value is None and name in _imported_names(ns["__name__"]):  # imported for type checkers only
        value = getattr(importlib.import_module(_imported_names(ns["__name__"])[name]), name, None)
    if inspect.isclass(value) and value.__module__.startswith("localllm"):
        return value
    return None


def test_every_type_a_public_call_returns_is_exported():
    exported = {getattr(localllm, n) for n in localllm._EXPORTS}
    missing, seen = set(), set()
    for name in localllm._EXPORTS:
        for where, text, ns in _annotations(getattr(localllm, name)):
            for ident in IDENT.findall(text):
                cls = _localllm_class(ident, ns)
                if cls is None:
                    continue
                seen.add(cls)
                if cls not in exported and not issubclass(cls, Exception):
                    missing.add(f"{cls.__module__}.{cls.__name__} (in {where})")
    assert {localllm.Plan, localllm.Completion, localllm.ModelInfo, localllm.MemoryEstimate} <= seen
    assert not missing, "public calls return types that `localllm` does not export:\n" + "\n".join(sorted(missing))
