"""localllm: run a language model on the machine in front of you.

    import localllm
    llm = localllm.load("auto")
    print(llm.generate("Hello"))

Public names are resolved lazily so that `import localllm` stays cheap: no C
extension, NVML, ONNX Runtime or Textual is loaded until it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # hardware facts
    "Accelerator": "hardware",
    "CPUInfo": "hardware",
    "GPUInfo": "hardware",
    "Hardware": "hardware",
    "MemoryInfo": "hardware",
    "RuntimeInfo": "hardware",
    "probe": "hardware",
    "load_profile": "hardware",
    "list_profiles": "hardware",
    # catalog and planning
    "Catalog": "catalog",
    "Family": "catalog",
    "Variant": "catalog",
    "load_catalog": "catalog",
    "Placement": "placement",
    "Plan": "planner",
    "plan": "planner",
    "plan_local": "planner",
    "fit_table": "planner",
    "plan_for": "resolve",
    "local_model_path": "resolve",
    "family_from_gguf_metadata": "catalog",
    # running
    "Chunk": "generation",
    "Completion": "generation",
    "SamplingOptions": "generation",
    "Timings": "generation",
    "Model": "model",
    "load": "model",
    # errors
    "CatalogError": "errors",
    "ChatTemplateError": "errors",
    "ChecksumMismatchError": "errors",
    "ContextOverflowError": "errors",
    "DownloadError": "errors",
    "GenerationError": "errors",
    "InsufficientDiskError": "errors",
    "DiskFullError": "errors",
    "InsufficientMemoryError": "errors",
    "InvalidModelError": "errors",
    "InvalidOptionError": "errors",
    "InvalidOptionTypeError": "errors",
    "LocalLLMError": "errors",
    "ModelNotFoundError": "errors",
    "ModelUnavailableError": "errors",
    "NoFittingVariantError": "errors",
    "ProfileNotFoundError": "errors",
    "RuntimeUnavailableError": "errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'localllm' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from localllm.catalog import Catalog, Family, Variant, family_from_gguf_metadata, load_catalog
    from localllm.errors import *  # noqa: F403
    from localllm.generation import Chunk, Completion, SamplingOptions, Timings
    from localllm.hardware import Accelerator, CPUInfo, GPUInfo, Hardware, MemoryInfo, RuntimeInfo
    from localllm.hardware.detect import list_profiles, load_profile, probe
    from localllm.model import Model, load
    from localllm.placement import Placement
    from localllm.planner import Plan, fit_table, plan, plan_local
    from localllm.resolve import local_model_path, plan_for
