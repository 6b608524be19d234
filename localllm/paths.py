"""Where localllm keeps its files. The environment is read at call time, never at import."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["HOME_ENV", "home"]

HOME_ENV = "LOCALLLM_HOME"  # overrides the cache folder (tests point it at a temp dir)


def home() -> Path:
    """The model cache folder: $LOCALLLM_HOME, else the platform's user cache dir for localllm.

    The folder is not created here; callers that write into it create it.
    """
    value = os.environ.get(HOME_ENV)
    if value:
        return Path(value).expanduser()
    if sys.platform.startswith("linux"):  # platformdirs' rule, without its ~4 ms import
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        return Path(xdg or os.path.expanduser("~/.cache")) / "localllm"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("localllm", appauthor=False))
