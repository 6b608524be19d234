"""The user's key remapping: keymap.toml's [keys] table, binding id -> keys. No Textual here."""

from __future__ import annotations

import sys
from pathlib import Path

from localllm.errors import LocalLLMError
from localllm.tui.store import data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["KEYMAP_NAME", "keymap_path", "load_keymap"]

KEYMAP_NAME = "keymap.toml"


def keymap_path() -> Path:
    return data_dir() / KEYMAP_NAME


def load_keymap(path: Path | None = None) -> dict[str, str]:
    """Binding id -> keys from keymap.toml's [keys] table; {} when there is none."""
    path = path or keymap_path()
    if not path.exists():
        return {}
    with path.open("rb") as f:
        data = tomllib.load(f)
    keys = data.get("keys", {})
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise LocalLLMError(f'{path}: [keys] must map binding ids to key strings, e.g. "localllm.new_chat" = "f9"')
    return dict(keys)
