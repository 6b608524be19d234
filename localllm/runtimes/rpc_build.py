"""llama.cpp's RPC worker and backend, built from the llama.cpp that llama-cpp-python ships (issue 19).

llama-cpp-python's wheels carry no RPC backend, and the RPC protocol changes between llama.cpp
versions, so both ends must come from the very source the installed llama-cpp-python was built
from: its sdist on the package index, whose vendor/llama.cpp is that source. `build_rpc()`
downloads it (`pip download --no-binary`), builds three targets with CMake and keeps them in a
folder named by the llama-cpp-python version:

  ggml-rpc-server    the worker (`localllm worker` runs it)
  libggml-rpc.so     the RPC backend as a loadable module (GGML_BACKEND_DL): the main process
                     loads it into llama-cpp-python's own ggml (localllm.runtimes.rpc)
  libggml-cpu.so     the worker's CPU device (with GGML_BACKEND_DL the worker loads it too)

The CPU code is built for the instruction sets the installed llama-cpp-python has (GGML_NATIVE
is not allowed with dynamic backends): a worker then runs the kernels llama-cpp-python runs on
its machine, and a split model writes what it writes in one process. The stamp records them;
a build for other ones (a folder shared by machines of different CPUs) is made again.

Building takes about two minutes on 2 cores, after a 75 MB download; a finished build is found
again by its stamp file.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from localllm.errors import RuntimeUnavailableError

__all__ = ["RpcBuild", "build_rpc", "find_rpc_build", "rpc_build_dir"]

log = logging.getLogger(__name__)

STAMP = "localllm-rpc.json"
# the worker's memory cap (bytes), read by the patched server from its environment (see MEM_PATCH)
MEM_ENV = "LOCALLLM_RPC_MEM"
# What ggml-rpc-server reports as a device's memory is what the device says, and llama.cpp's CPU
# device says all of the machine's physical RAM is free (ggml-cpu.cpp: '"free" system memory is
# ill-defined'), whatever else runs there or a cgroup allows; rpc-server has no --mem option any
# more. So the build adds one line to the server's GET_DEVICE_MEMORY answer: free and total are
# capped at LOCALLLM_RPC_MEM bytes when it is set (`localllm worker` sets it from --mem, or from
# the memory localllm's probe finds usable there). Applied to the source before CMake; a source
# where the anchor line is missing is refused rather than built without the cap.
MEM_PATCH_FILE = "ggml/src/ggml-rpc/ggml-rpc.cpp"
MEM_PATCH_ANCHOR = "    ggml_backend_dev_memory(dev, &free, &total);\n    response.free_mem = free;"
MEM_PATCH = (
    "    ggml_backend_dev_memory(dev, &free, &total);\n"
    '    if (const char * cap_text = std::getenv("' + MEM_ENV + "\")) {  // localllm: the worker's --mem\n"
    "        const size_t cap = (size_t) std::strtoull(cap_text, nullptr, 10);\n"
    "        if (cap > 0) { free = std::min(free, cap); total = std::min(total, cap); }\n"
    "    }\n"
    "    response.free_mem = free;"
)
PATCH_LEVEL = 1  # in the stamp: a build made before the patch is built again
BUILD_ENV = "LOCALLLM_RPC_DIR"  # a folder holding a build (or where to make one)
TARGETS = ("ggml-rpc-server", "ggml-rpc", "ggml-cpu")
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DGGML_BACKEND_DL=ON",
    "-DGGML_RPC=ON",
    "-DGGML_NATIVE=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
)
# The worker's CPU code uses the instruction sets the installed llama-cpp-python was built with
# (its llama_print_system_info), each ON or OFF: its kernels are this process's kernels, so a
# model split across workers computes what it computes here (llama-cpp-python is built from
# source on the machine it runs on, so that is this CPU's). AMX is left out: ggml uses it only
# through an extra buffer type, which an RPC server never allocates from.
X86_ISA = ("AVX", "AVX_VNNI", "AVX2", "BMI2", "FMA", "F16C", "AVX512", "AVX512_VBMI", "AVX512_VNNI", "AVX512_BF16")
GENERIC_X86 = frozenset({"AVX", "AVX2", "BMI2", "FMA", "F16C"})  # when the features cannot be read
BUILD_TIMEOUT_S = 1800


@dataclass(frozen=True)
class RpcBuild:
    """A finished build: where its files are, and what it speaks."""

    folder: Path
    llama_cpp_version: str  # of the llama-cpp-python whose source it was built from
    protocol: tuple[int, int, int]  # RPC_PROTO_{MAJOR,MINOR,PATCH}_VERSION of that source

    @property
    def server(self) -> Path:
        return self.folder / "ggml-rpc-server"

    @property
    def backend(self) -> Path:
        return self.folder / "libggml-rpc.so"


def cpu_flags(features: frozenset[str] | None = None) -> tuple[str, ...]:
    """CMake options for the worker's CPU code: the installed llama.cpp's features (`features`,
    default read from it), as ON/OFF switches on x86; none elsewhere (ggml's defaults)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return ()
    if features is None:
        features = installed_features()
    flags = [f"-DGGML_{name}={'ON' if name in features else 'OFF'}" for name in X86_ISA]
    flags.append(f"-DGGML_SSE42={'ON' if 'AVX' in features else 'OFF'}")
    flags.append(f"-DGGML_LLAMAFILE={'ON' if 'LLAMAFILE' in features else 'OFF'}")
    return tuple(flags)


def installed_features() -> frozenset[str]:
    """The CPU features the installed llama.cpp was built with (GENERIC_X86 when unreadable)."""
    from localllm.repack import features_from_system_info

    try:
        import llama_cpp.llama_cpp as lib

        found = frozenset(features_from_system_info(lib.llama_print_system_info().decode()))
    except Exception:  # noqa: BLE001 - a broken install: build for the common x86-64-v3
        found = frozenset()
    return found or GENERIC_X86


def installed_llama_cpp_version() -> str:
    try:
        return metadata.version("llama_cpp_python")
    except metadata.PackageNotFoundError:
        raise RuntimeUnavailableError(
            "llama-cpp-python is not installed, and the RPC worker is built from its source: "
            "pip install llama-cpp-python"
        ) from None


def rpc_build_dir(version: str | None = None) -> Path:
    """Where the build for `version` (default: the installed llama-cpp-python's) lives."""
    if os.environ.get(BUILD_ENV):
        return Path(os.environ[BUILD_ENV]).expanduser()
    from localllm.paths import home

    return home() / "rpc" / f"llama-cpp-python-{version or installed_llama_cpp_version()}"


def find_rpc_build(folder: Path | None = None) -> RpcBuild | None:
    """The build in `folder` (default rpc_build_dir()) if it is whole and for the installed llama-cpp-python."""
    version = installed_llama_cpp_version()
    folder = folder or rpc_build_dir(version)
    try:
        stamp = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return None
    try:
        major, minor, patch = (int(part) for part in stamp.get("protocol", ()))
    except (TypeError, ValueError):
        return None
    build = RpcBuild(folder, str(stamp.get("llama_cpp_version")), (major, minor, patch))
    if build.llama_cpp_version != version or not build.server.is_file() or not build.backend.is_file():
        return None
    if stamp.get("patch") != PATCH_LEVEL or stamp.get("cpu") != list(cpu_flags()):
        return None  # made before the memory patch, or for a llama.cpp built for another CPU
    return build


def protocol_version(header: str) -> tuple[int, int, int]:
    """RPC_PROTO_{MAJOR,MINOR,PATCH}_VERSION from ggml-rpc.h's text."""
    parts = []
    for name in ("MAJOR", "MINOR", "PATCH"):
        m = re.search(rf"#define\s+RPC_PROTO_{name}_VERSION\s+(\d+)", header)
        if m is None:
            raise RuntimeUnavailableError(f"ggml-rpc.h has no RPC_PROTO_{name}_VERSION: not a llama.cpp this knows")
        parts.append(int(m.group(1)))
    return (parts[0], parts[1], parts[2])


def build_rpc(folder: Path | None = None, *, progress: Callable[[str], object] | None = None) -> RpcBuild:
    """The RPC worker and backend for the installed llama-cpp-python: found, or built (about a minute)."""
    found = find_rpc_build(folder)
    if found is not None:
        return found
    version = installed_llama_cpp_version()
    folder = folder or rpc_build_dir(version)
    say = progress or (lambda text: None)
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise RuntimeUnavailableError(f"building llama.cpp's RPC worker needs {tool}, which is not on PATH")
    with tempfile.TemporaryDirectory(prefix="localllm-rpc-") as tmp:
        work = Path(tmp)
        say(f"downloading the source of llama-cpp-python {version}")
        _run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet"]
            + ["-d", str(work), f"llama-cpp-python=={version}"],
            "downloading llama-cpp-python's source",
        )
        sdist = next(work.glob("llama_cpp_python-*.tar.gz"), None)
        if sdist is None:
            raise RuntimeUnavailableError(f"pip found no source archive of llama-cpp-python {version}")
        with tarfile.open(sdist) as archive:
            if hasattr(tarfile, "data_filter"):  # Python 3.10.12+ / 3.11.4+: no links or paths out of `work`
                archive.extractall(work, filter="data")
            else:  # pragma: no cover - older patch releases
                archive.extractall(work)
        source = next(work.glob("llama_cpp_python-*/vendor/llama.cpp"), None)
        if source is None:
            raise RuntimeUnavailableError(f"{sdist.name} has no vendor/llama.cpp")
        protocol = protocol_version((source / "ggml/include/ggml-rpc.h").read_text())
        patch_memory_cap(source / MEM_PATCH_FILE)
        build = work / "build"
        say("configuring llama.cpp with the RPC backend")
        cpu = cpu_flags()
        _run(["cmake", "-S", str(source), "-B", str(build), *CMAKE_FLAGS, *cpu], "configuring llama.cpp")
        say("building llama.cpp's RPC worker and backend (about a minute)")
        jobs = str(max(1, os.cpu_count() or 1))
        _run(["cmake", "--build", str(build), "-j", jobs, "--target", *TARGETS], "building llama.cpp")
        staging = folder.with_name(folder.name + ".part")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for item in (build / "bin").iterdir():  # the worker, the modules and the base libraries they need
            if item.name == "ggml-rpc-server" or ".so" in item.name:
                shutil.copy2(item, staging / item.name, follow_symlinks=True)
        stamp = {
            "llama_cpp_version": version,
            "protocol": list(protocol),
            "patch": PATCH_LEVEL,
            "cmake": list(CMAKE_FLAGS),
            "cpu": list(cpu),
        }
        (staging / STAMP).write_text(json.dumps(stamp, indent=1))
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    result = find_rpc_build(folder)
    if result is None:  # pragma: no cover - the files were just written
        raise RuntimeUnavailableError(f"the RPC build in {folder} is incomplete")
    return result


def patch_memory_cap(path: Path) -> None:
    """Add the LOCALLLM_RPC_MEM cap to the server's memory answer (see MEM_PATCH)."""
    text = path.read_text()
    if text.count(MEM_PATCH_ANCHOR) != 1:
        raise RuntimeUnavailableError(
            f"{path.name} of this llama.cpp has no single place to add the worker's memory cap; "
            "this localllm does not know how to build its worker: upgrade localllm"
        )
    text = text.replace(MEM_PATCH_ANCHOR, MEM_PATCH)
    text = "#include <algorithm>\n#include <cstdlib>\n" + text  # std::min, std::getenv
    path.write_text(text)


def _run(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeUnavailableError(f"{what} took longer than {BUILD_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeUnavailableError(f"{what} failed (exit {proc.returncode}): " + " | ".join(tail))
