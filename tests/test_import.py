"""`import localllm` stays light and changes nothing; every public name resolves."""

from __future__ import annotations

import json
import subprocess
import sys

import localllm

HEAVY = (
    "llama_cpp",
    "onnxruntime",
    "textual",
    "pynvml",
    "numpy",
    "cpuinfo",
    "psutil",
    "huggingface_hub",
    "tokenizers",
    "jinja2",
    "gguf",
    "llguidance",
    "pydantic",
)


def run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_loads_no_backend_and_changes_no_global_state():
    out = run(
        "import json, logging, os, sys\n"
        "env = dict(os.environ); handlers = list(logging.root.handlers)\n"
        "import localllm\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'env_same': env == dict(os.environ),\n"
        "                  'handlers_same': handlers == logging.root.handlers}))\n"
    )
    assert out == {"heavy": [], "env_same": True, "handlers_same": True}


def test_probe_loads_no_backend():
    out = run(
        "import json, sys, localllm\n"
        "localllm.probe()\n"
        "print(json.dumps([m for m in ('llama_cpp', 'onnxruntime', 'textual', 'pynvml', 'numpy',\n"
        "                              'cpuinfo') if m in sys.modules]))\n"
    )
    assert out == []  # pynvml only where an NVIDIA driver is present


def test_localllm_probe_is_callable_however_it_was_imported():
    out = run(
        "import json, localllm\n"
        "from localllm.hardware.detect import probe as f\n"  # importing the module must not rebind localllm.probe
        "import localllm.planner\n"
        "hw = localllm.probe()\n"
        "from localllm import probe\n"
        "print(json.dumps([type(hw).__name__, probe() is hw, f() is hw]))\n"
    )
    assert out == ["Hardware", True, True]


def test_all_is_sorted_and_every_name_resolves():
    assert localllm.__all__ == sorted(localllm.__all__)
    missing = [name for name in localllm.__all__ if getattr(localllm, name, None) is None]
    assert missing == []
    assert set(dir(localllm)) == set(localllm.__all__)


def test_unknown_attribute_is_an_attribute_error():
    try:
        localllm.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("expected AttributeError")
