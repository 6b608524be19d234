"""What names a model on the Hugging Face Hub, and the quant a GGUF file's name carries.

parse_ref(text)        -> HubRef | None: hf.co/OWNER/REPO[:QUANT][@REV], OWNER/REPO/FILE.gguf, URLs
FILE_REF               the OWNER/REPO/FILE.gguf pattern (the caller checks it is not a local path)
quant_of(filename)     the quant label in a file name ("Q4_K_M", "IQ2_XXS", "BF16"), or None
check_repo_id(repo)    ModelNotFoundError unless it is a valid Hub repository id
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from localllm.errors import ModelNotFoundError

__all__ = ["FILE_REF", "HubRef", "QUANT_NAME", "check_repo_id", "normalize_quant", "parse_ref", "quant_of"]

_HOSTS = ("hf.co/", "huggingface.co/", "www.huggingface.co/")
# huggingface_hub.utils._validators.REPO_ID_REGEX, with the owner required (models live under one)
_REPO_PART = re.compile(r"^[\w\-.]+$")
MAX_REPO_ID = 96  # huggingface_hub validate_repo_id
# OWNER/REPO/[folders/]FILE.gguf[@REV]: three or more parts ending .gguf
FILE_REF = re.compile(r"^(?P<repo>[\w\-.]+/[\w\-.]+)/(?P<file>[^@:]+\.gguf)(?:@(?P<rev>[^\s:@]+))?$", re.IGNORECASE)
# llama.cpp's quant names (tools/quantize/quantize.cpp QUANT_OPTIONS, ggml type names) as files carry them:
# Q4_K_M, Q5_K_S, Q3_K_XL, IQ2_XXS, IQ4_NL, Q4_0_4_4, TQ1_0, MXFP4, F16, BF16, F32, and unsloth's UD- prefix
QUANT_NAME = re.compile(
    r"(?<![A-Za-z0-9])((?:UD-)?(?:I?Q[1-8]_(?:K(?:_(?:XXS|XS|S|M|L|XL))?|[01](?:_[48]_[48])?|XXS|XS|S|M|NL)"
    r"|TQ[12]_0|MXFP4(?:_MOE)?|BF16|F16|F32))(?![A-Za-z0-9])",
    re.IGNORECASE,
)
_QUANT_ONLY = re.compile(f"^{QUANT_NAME.pattern}$", re.IGNORECASE)


@dataclass(frozen=True)
class HubRef:
    """A model named on the Hub: a repository, and optionally a quant or one file, at a revision."""

    repo: str
    quant: str | None = None  # upper-case, as QUANT_NAME spells it ("Q4_K_M")
    filename: str | None = None
    revision: str = "main"

    def __str__(self) -> str:
        tail = f":{self.quant}" if self.quant else f"/{self.filename}" if self.filename else ""
        rev = f"@{self.revision}" if self.revision != "main" else ""
        return f"hf.co/{self.repo}{tail}{rev}"


def normalize_quant(text: str) -> str:
    return text.strip().upper()


def quant_of(filename: str) -> str | None:
    """The last quant name in a file's name, upper-case; None when it names none."""
    found = QUANT_NAME.findall(filename.rsplit("/", 1)[-1])
    return normalize_quant(found[-1]) if found else None


def check_repo_id(repo: str) -> str:
    """`repo` if it is a valid OWNER/NAME repository id; else ModelNotFoundError with the rule."""
    parts = repo.split("/")
    ok = (
        len(parts) == 2
        and len(repo) <= MAX_REPO_ID
        and all(_REPO_PART.match(p) and not p.startswith(("-", ".")) and not p.endswith(("-", ".")) for p in parts)
        and "--" not in repo
        and ".." not in repo
    )
    if not ok:
        raise ModelNotFoundError(
            f"{repo!r} is not a Hugging Face repository id: it must be OWNER/NAME, each of letters, digits, "
            f"'-', '_' and '.', not starting or ending with '-' or '.', without '--' or '..', at most "
            f"{MAX_REPO_ID} characters (e.g. hf.co/bartowski/Qwen2.5-1.5B-Instruct-GGUF)",
            name=repo,
        )
    return repo


def parse_ref(text: str) -> HubRef | None:
    """A Hub reference, or None for anything else (catalog names, "auto", paths).

    Forms: hf.co/OWNER/REPO, huggingface.co/OWNER/REPO, https://huggingface.co/OWNER/REPO
    (also .../blob/REV/FILE, .../resolve/REV/FILE, .../tree/REV), hf.co/OWNER/REPO:QUANT,
    hf.co/OWNER/REPO/FILE.gguf, OWNER/REPO/FILE.gguf; each with an optional @REVISION.

    Raises:
        ModelNotFoundError: it is a Hub reference but the repository id or quant is malformed.
    """
    s = text.strip()
    low = s.lower()
    for scheme in ("https://", "http://"):
        if low.startswith(scheme):
            s, low = s[len(scheme) :], low[len(scheme) :]
            break
    else:
        scheme = ""
    host = next((h for h in _HOSTS if low.startswith(h)), None)
    if host is None:
        if scheme or s.startswith(("/", ".", "~")) or "\\" in s:
            return None
        m = FILE_REF.match(s)
        if m is None:
            return None
        return HubRef(repo=check_repo_id(m["repo"]), filename=m["file"], revision=m["rev"] or "main")
    rest = s[len(host) :].strip("/")
    revision = "main"
    parts = rest.split("/")
    if len(parts) >= 4 and parts[2] in ("blob", "resolve", "tree"):  # a web URL
        repo, revision = "/".join(parts[:2]), parts[3]
        filename = "/".join(parts[4:]) or None
        filename = filename.split("?", 1)[0] if filename else None
        return HubRef(repo=check_repo_id(repo), filename=filename, revision=revision)
    if "@" in rest:
        rest, _, tail = rest.partition("@")
        revision, _, after = tail.partition(":")
        if after:  # hf.co/OWNER/REPO@REV:QUANT
            rest = f"{rest}:{after}"
    if not revision:
        raise ModelNotFoundError(f"{text!r}: the revision after '@' is empty", name=text)
    quant = None
    if ":" in rest:
        rest, _, quant = rest.partition(":")
        if not _QUANT_ONLY.match(quant):
            raise ModelNotFoundError(
                f"{text!r}: {quant!r} is not a GGUF quant name (e.g. Q4_K_M, Q8_0, IQ4_XS, F16, BF16)", name=text
            )
        quant = normalize_quant(quant)
    parts = rest.split("/")
    filename = "/".join(parts[2:]) or None
    if filename is not None and not filename.lower().endswith(".gguf"):
        raise ModelNotFoundError(
            f"{text!r}: {filename!r} is not a .gguf file; name a repository (hf.co/OWNER/REPO), a quant "
            "(hf.co/OWNER/REPO:Q4_K_M) or a GGUF file in it (hf.co/OWNER/REPO/FILE.gguf)",
            name=text,
        )
    return HubRef(repo=check_repo_id("/".join(parts[:2])), quant=quant, filename=filename, revision=revision)
