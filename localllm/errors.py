"""Every error localllm raises, under one root.

    LocalLLMError
    ├── CatalogError            (ValueError)        models.toml is malformed
    ├── ModelNotFoundError      (LookupError)       unknown model name or quant
    ├── ProfileNotFoundError    (LookupError)       unknown hardware profile
    ├── InvalidModelError       (ValueError)        a model file or folder is bad or refused
    ├── InsufficientMemoryError (MemoryError)       a plan does not fit
    │   └── NoFittingVariantError                   nothing in the catalog fits
    ├── ContextOverflowError    (ValueError)        a prompt longer than the context window
    ├── ChatTemplateError       (ValueError)        messages rejected by (or breaking) a chat template
    ├── InvalidOptionError      (ValueError)        a bad option value, an empty prompt, a lone surrogate
    ├── InvalidOptionTypeError  (TypeError)         an option or prompt of the wrong type, an unknown option
    ├── RuntimeUnavailableError (ImportError)       a backend is not installed or cannot run here
    ├── GenerationError         (RuntimeError)      the engine failed mid-generation
    ├── HistoryVersionError                         the chat history was written by a newer localllm
    └── DownloadError           (OSError)           a file could not be fetched
        ├── ChecksumMismatchError                   size or sha256 differs from the catalog
        ├── InsufficientDiskError                   not enough free disk for the download
        │   └── DiskFullError                       the disk filled during the download
        └── ModelUnavailableError                   offline / unreachable and not cached

Messages say what happened, with the numbers, and what to do next; the numbers are
also attributes so programs need not parse text.
"""

from __future__ import annotations

import os

__all__ = [
    "CatalogError",
    "ChatTemplateError",
    "ChecksumMismatchError",
    "ContextOverflowError",
    "DiskFullError",
    "DownloadError",
    "GenerationError",
    "HistoryVersionError",
    "InsufficientDiskError",
    "InsufficientMemoryError",
    "InvalidModelError",
    "InvalidOptionError",
    "InvalidOptionTypeError",
    "LocalLLMError",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "NoFittingVariantError",
    "ProfileNotFoundError",
    "RuntimeUnavailableError",
]


class LocalLLMError(Exception):
    """Root of every error localllm raises."""


class CatalogError(LocalLLMError, ValueError):
    """The model catalog (models.toml) is malformed."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class ModelNotFoundError(LocalLLMError, LookupError):
    """A model name or quant is not in the catalog."""

    def __init__(self, message: str, *, name: str | None = None, suggestions: tuple[str, ...] = ()):
        super().__init__(message)
        self.name = name
        self.suggestions = tuple(suggestions)


class ProfileNotFoundError(LocalLLMError, LookupError):
    """A hardware profile name or file does not exist."""


class InvalidModelError(LocalLLMError, ValueError):
    """A model file or folder is malformed, truncated, unsupported or refused."""

    def __init__(self, message: str, *, path: str | None = None):
        super().__init__(message)
        self.path = path


class InsufficientMemoryError(LocalLLMError, MemoryError):
    """A plan needs more memory than the machine can give."""

    def __init__(
        self, message: str, *, needed: int | None = None, available: int | None = None, plan: object | None = None
    ):
        super().__init__(message)
        self.needed = needed
        self.available = available
        self.plan = plan


class NoFittingVariantError(InsufficientMemoryError):
    """No variant of the requested model (or of the catalog) fits this machine."""


class ContextOverflowError(LocalLLMError, ValueError):
    """A prompt (plus requested output) is longer than the context window."""

    def __init__(
        self, message: str, *, n_prompt: int | None = None, n_ctx: int | None = None, max_tokens: int | None = None
    ):
        super().__init__(message)
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx
        self.max_tokens = max_tokens


class ChatTemplateError(LocalLLMError, ValueError):
    """Chat messages are malformed, or the model's chat template rejected or failed on them.

    When a render limit stopped the template, `limit` names it ("time", "output", "loop
    iterations", ...) and `maximum` is the limit's value.
    """

    def __init__(self, message: str, *, limit: str | None = None, maximum: float | None = None):
        super().__init__(message)
        self.limit = limit
        self.maximum = maximum


class InvalidOptionError(LocalLLMError, ValueError):
    """An option (or the prompt) has a value outside what is allowed.

    `option` names it, `value` is what was given and `allowed` says what would do.
    """

    def __init__(self, message: str, *, option: str, value: object = None, allowed: str = ""):
        super().__init__(message)
        self.option = option
        self.value = value
        self.allowed = allowed


class InvalidOptionTypeError(LocalLLMError, TypeError):
    """An option (or the prompt) has the wrong type, or an option name is unknown.

    The attributes are InvalidOptionError's: `option`, `value`, `allowed`.
    """

    def __init__(self, message: str, *, option: str, value: object = None, allowed: str = ""):
        super().__init__(message)
        self.option = option
        self.value = value
        self.allowed = allowed


class RuntimeUnavailableError(LocalLLMError, ImportError):
    """A runtime backend is not installed or cannot be used here."""


class GenerationError(LocalLLMError, RuntimeError):
    """The engine failed while generating."""


class DownloadError(LocalLLMError, OSError):
    """A model file could not be fetched."""


class ChecksumMismatchError(DownloadError):
    """A downloaded file's size or sha256 differs from what the catalog says."""


class InsufficientDiskError(DownloadError):
    """Not enough free disk space for a download."""

    def __init__(self, message: str, *, needed: int | None = None, available: int | None = None):
        super().__init__(message)
        self.needed = needed
        self.available = available


class DiskFullError(InsufficientDiskError):
    """The disk filled (or fell under the free-disk floor) while a download was being written."""

    def __init__(
        self,
        message: str,
        *,
        needed: int | None = None,
        available: int | None = None,
        written: int | None = None,
        path: str | None = None,
    ):
        super().__init__(message, needed=needed, available=available)
        self.written = written  # bytes of the file written before the disk filled
        self.path = path  # the file that was being written (deleted)


class ModelUnavailableError(DownloadError):
    """A file is neither cached nor downloadable (offline or unreachable)."""

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        url: str | None = None,
        size: int | None = None,
        tried: tuple[str, ...] = (),
    ):
        super().__init__(message)
        self.path = path  # where the file would go (put it there by hand to install it)
        self.url = url  # where it would come from
        self.size = size  # its size in bytes, when known
        # each source tried and why it failed ("the Hub: ...", "the package index: ..."), in order
        self.tried = tuple(tried)


class HistoryVersionError(LocalLLMError):
    """The chat database was written by a newer localllm, with a schema this one does not know."""

    def __init__(self, path: os.PathLike[str] | str, found: int, known: int) -> None:
        newer = found > known
        super().__init__(
            f"{path} has chat history schema version {found}, but this localllm knows versions 0 to {known}"
            + (": it was written by a newer localllm. Upgrade localllm to open it, or" if newer else ". Instead,")
            + " set LOCALLLM_DATA to another folder to start a separate history; the file was left unchanged."
        )
        self.path = path
        self.found = found
        self.known = known
