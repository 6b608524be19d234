"""Files that ship with the package: the model catalog and the hardware profiles.

They live at the repository root (models.toml, profiles/) and travel in the wheel as
package data (see pyproject.toml), so the same lookup works from a checkout, an
editable install and a regular install.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["catalog_path", "profiles_dir"]


def catalog_path() -> Path:
    """Path to the bundled models.toml."""
    return Path(str(resources.files("localllm._root").joinpath("models.toml")))


def profiles_dir() -> Path:
    """Folder holding the bundled hardware profiles (*.toml)."""
    return Path(str(resources.files("localllm.profiles")))
