"""Files that ship inside the package: the model catalog and the hardware profiles.

Both live in localllm/data/ and are found with importlib.resources, so a checkout, an
editable install and a wheel all read the same files from the same place.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["catalog_path", "profiles_dir"]


def _data() -> Path:
    # localllm.data is a regular package on disk (localllm is never imported from a zip),
    # so its Traversable is a real folder; callers glob and open plain paths.
    return Path(str(files("localllm.data")))


def catalog_path() -> Path:
    """Path to the bundled models.toml."""
    return _data() / "models.toml"


def profiles_dir() -> Path:
    """Folder holding the bundled hardware profiles (*.toml)."""
    return _data() / "profiles"
