"""The house rules that no linter checks: modules stay short, test builders live in localllm.testing."""

from __future__ import annotations

import ast
from pathlib import Path

import localllm

PACKAGE = Path(localllm.__file__).resolve().parent
MAX_LINES = 600  # past this a module holds more than one job (CONTRIBUTING.md: the map)


def test_no_module_is_over_600_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these by responsibility: {long}"


def test_tests_import_builders_from_localllm_testing():
    """Test, benchmark and tool code reaches the tiny-model builders through the public module,
    not through the modules that implement them."""
    root = PACKAGE.parent
    offenders = []
    for folder in ("tests", "benchmarks", "tools"):
        for p in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module in ("localllm.testing.onnx", "localllm.tinymodels"):
                    offenders.append(f"{p.relative_to(root)}:{node.lineno} {node.module}")
                elif isinstance(node, ast.ImportFrom) and node.module == "localllm.synthetic":
                    builders = {a.name for a in node.names} - SYNTHETIC_ONLY
                    if builders:
                        offenders.append(f"{p.relative_to(root)}:{node.lineno} localllm.synthetic {sorted(builders)}")
    assert offenders == []


# what `localllm bench --synthetic` itself uses; importing these from localllm.synthetic is fine
SYNTHETIC_ONLY = {"SHAPES", "synthetic_gguf"}
