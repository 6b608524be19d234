"""Files that ship with the package: the model catalog and the hardware profiles.

They live at the repository root (models.toml, profiles/) and travel in the wheel as
package data under localllm/_root/ and localllm/profiles/ (see pyproject.toml). A
checkout or editable install finds them beside the package; a regular install finds
them inside it. Plain paths, no import machinery: both folders are data, not code.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["catalog_path", "profiles_dir"]

_PACKAGE = Path(__file__).resolve().parent


def catalog_path() -> Path:
    """Path to the bundled models.toml."""
    installed = _PACKAGE / "_root" / "models.toml"
    return installed if installed.is_file() else _PACKAGE.parent / "models.toml"


def profiles_dir() -> Path:
    """Folder holding the bundled hardware profiles (*.toml)."""
    installed = _PACKAGE / "profiles"
    return installed if installed.is_dir() else _PACKAGE.parent / "profiles"
