"""localllm: run a language model on the machine in front of you.

    import localllm
    llm = localllm.load("auto")
    print(llm.generate("Hello"))

Public names are resolved lazily so that `import localllm` stays cheap: no C
extension, NVML, ONNX Runtime or Textual is loaded until it is used. Three lists must
agree, and tests/test_public_api.py checks that they do: `__all__`, the lazy map
`_EXPORTS` and the imports under TYPE_CHECKING (what type checkers and IDEs read).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    # hardware facts and the probe
    "Accelerator": "localllm.hardware",
    "CPUInfo": "localllm.hardware",
    "GPUInfo": "localllm.hardware",
    "Hardware": "localllm.hardware",
    "list_profiles": "localllm.hardware",
    "load_profile": "localllm.hardware",
    "MemoryInfo": "localllm.hardware",
    "probe": "localllm.hardware",
    "RuntimeInfo": "localllm.hardware",
    # catalog and planning
    "Catalog": "localllm.catalog",
    "Family": "localllm.catalog",
    "family_from_gguf_metadata": "localllm.catalog",
    "load_catalog": "localllm.catalog",
    "Variant": "localllm.catalog",
    "Placement": "localllm.placement",
    "DeviceMemory": "localllm.estimator",
    "MemoryEstimate": "localllm.estimator",
    "DeviceBudget": "localllm.planner",
    "fit_table": "localllm.planner",
    "Plan": "localllm.planner",
    "plan": "localllm.planner",
    "plan_local": "localllm.planner",
    "Rejected": "localllm.planner",
    "VariantFit": "localllm.planner",
    "local_model_path": "localllm.resolve",
    "plan_for": "localllm.resolve",
    # running
    "Chunk": "localllm.generation",
    "Completion": "localllm.generation",
    "SamplingOptions": "localllm.options",
    "Timings": "localllm.generation",
    "Constraint": "localllm.constraints",
    "ToolCall": "localllm.tools",
    "load": "localllm.model",
    "Model": "localllm.model",
    "ModelInfo": "localllm.model",
    # errors
    "CatalogError": "localllm.errors",
    "ChatTemplateError": "localllm.errors",
    "ChecksumMismatchError": "localllm.errors",
    "ContextOverflowError": "localllm.errors",
    "DiskFullError": "localllm.errors",
    "DownloadError": "localllm.errors",
    "GenerationError": "localllm.errors",
    "HistoryVersionError": "localllm.errors",
    "InsufficientDiskError": "localllm.errors",
    "InsufficientMemoryError": "localllm.errors",
    "InvalidModelError": "localllm.errors",
    "InvalidOptionError": "localllm.errors",
    "InvalidOptionTypeError": "localllm.errors",
    "LocalLLMError": "localllm.errors",
    "ModelNotFoundError": "localllm.errors",
    "ModelUnavailableError": "localllm.errors",
    "NoFittingVariantError": "localllm.errors",
    "ProfileNotFoundError": "localllm.errors",
    "RuntimeUnavailableError": "localllm.errors",
}

__all__ = [
    "Accelerator",
    "CPUInfo",
    "Catalog",
    "CatalogError",
    "ChatTemplateError",
    "ChecksumMismatchError",
    "Chunk",
    "Completion",
    "Constraint",
    "ContextOverflowError",
    "DeviceBudget",
    "DeviceMemory",
    "DiskFullError",
    "DownloadError",
    "Family",
    "GPUInfo",
    "GenerationError",
    "Hardware",
    "HistoryVersionError",
    "InsufficientDiskError",
    "InsufficientMemoryError",
    "InvalidModelError",
    "InvalidOptionError",
    "InvalidOptionTypeError",
    "LocalLLMError",
    "MemoryEstimate",
    "MemoryInfo",
    "Model",
    "ModelInfo",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "NoFittingVariantError",
    "Placement",
    "Plan",
    "ProfileNotFoundError",
    "Rejected",
    "RuntimeInfo",
    "RuntimeUnavailableError",
    "SamplingOptions",
    "Timings",
    "ToolCall",
    "Variant",
    "VariantFit",
    "__version__",
    "family_from_gguf_metadata",
    "fit_table",
    "list_profiles",
    "load",
    "load_catalog",
    "load_profile",
    "local_model_path",
    "plan",
    "plan_for",
    "plan_local",
    "probe",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'localllm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs; `X as X` marks a re-export
    from localllm.catalog import (
        Catalog as Catalog,
        Family as Family,
        Variant as Variant,
        family_from_gguf_metadata as family_from_gguf_metadata,
        load_catalog as load_catalog,
    )
    from localllm.constraints import Constraint as Constraint
    from localllm.errors import (
        CatalogError as CatalogError,
        ChatTemplateError as ChatTemplateError,
        ChecksumMismatchError as ChecksumMismatchError,
        ContextOverflowError as ContextOverflowError,
        DiskFullError as DiskFullError,
        DownloadError as DownloadError,
        GenerationError as GenerationError,
        HistoryVersionError as HistoryVersionError,
        InsufficientDiskError as InsufficientDiskError,
        InsufficientMemoryError as InsufficientMemoryError,
        InvalidModelError as InvalidModelError,
        InvalidOptionError as InvalidOptionError,
        InvalidOptionTypeError as InvalidOptionTypeError,
        LocalLLMError as LocalLLMError,
        ModelNotFoundError as ModelNotFoundError,
        ModelUnavailableError as ModelUnavailableError,
        NoFittingVariantError as NoFittingVariantError,
        ProfileNotFoundError as ProfileNotFoundError,
        RuntimeUnavailableError as RuntimeUnavailableError,
    )
    from localllm.estimator import (
        DeviceMemory as DeviceMemory,
        MemoryEstimate as MemoryEstimate,
    )
    from localllm.generation import (
        Chunk as Chunk,
        Completion as Completion,
        Timings as Timings,
    )
    from localllm.hardware import (
        Accelerator as Accelerator,
        CPUInfo as CPUInfo,
        GPUInfo as GPUInfo,
        Hardware as Hardware,
        MemoryInfo as MemoryInfo,
        RuntimeInfo as RuntimeInfo,
        list_profiles as list_profiles,
        load_profile as load_profile,
        probe as probe,
    )
    from localllm.model import (
        Model as Model,
        ModelInfo as ModelInfo,
        load as load,
    )
    from localllm.options import SamplingOptions as SamplingOptions
    from localllm.placement import (
        Placement as Placement,
    )
    from localllm.planner import (
        DeviceBudget as DeviceBudget,
        Plan as Plan,
        Rejected as Rejected,
        VariantFit as VariantFit,
        fit_table as fit_table,
        plan as plan,
        plan_local as plan_local,
    )
    from localllm.resolve import (
        local_model_path as local_model_path,
        plan_for as plan_for,
    )
    from localllm.tools import ToolCall as ToolCall
