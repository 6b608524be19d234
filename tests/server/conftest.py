"""The module-wide server of the real SmolLM2 (serverhelp.py starts and stops it)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from serverhelp import Server, isolate, running_server


@pytest.fixture(scope="module")
def served_smollm2(smollm2_gguf, tmp_path_factory) -> Iterator[Server]:
    """One server for the module with the real SmolLM2 preloaded as 'smollm2' (4 sequences)."""
    tmp = tmp_path_factory.mktemp("serve")
    home = tmp / "home"
    with contextlib.ExitStack() as stack:
        mp = pytest.MonkeyPatch()
        stack.callback(mp.undo)
        isolate(mp, tmp)
        mp.setenv("LOCALLLM_HOME", str(home))
        link = tmp / "smollm2.gguf"
        link.symlink_to(smollm2_gguf)
        server = stack.enter_context(running_server(tmp, str(link), "--parallel", "4", "--ctx", "1024"))
        server.model = str(link)  # type: ignore[attr-defined]
        yield server
