"""Heavy or optional imports go through `require`, so a missing package becomes one
clear line with the install command instead of an ImportError deep in a stack."""
from __future__ import annotations

import importlib
import sys
from types import ModuleType

from .errors import IncompleteInstallError, MissingDependencyError

# module -> the pip command that provides it
_INSTALL_HINTS = {
    "tensorflow": "pip install 'edgekit[convert]'",
    "keras": "pip install 'edgekit[convert]'",
    "coremltools": "pip install 'edgekit[convert]'",
    "sklearn": "pip install 'edgekit[convert]'",
    "scikit-learn": "pip install 'edgekit[convert]'",
    "uvicorn": "pip install 'edgekit[serve]'",
    "starlette": "pip install 'edgekit[serve]'",
    "grpc": "pip install 'edgekit[serve]'",
    "matplotlib": "pip install 'edgekit[charts]'",
    "ray": "pip install 'edgekit[ray]'",
    "pyarrow": "pip install 'edgekit[ray]'",
    "fsspec": "pip install 'edgekit[ray]'",
    "psycopg": "pip install 'edgekit[sql]'",
    "torch": "pip install 'edgekit[torch]'",
    "litert_torch": "pip install 'edgekit[torch]'",
    "ai_edge_quantizer": "pip install 'edgekit[torch]'",
    "onnx": "pip install 'edgekit[onnx]'",
    "onnxruntime": "pip install 'edgekit[onnx]'",
    "onnx2torch": "pip install 'edgekit[onnx]'",
}


# Frameworks that load TensorFlow's or torch's native libraries (coremltools imports both when present).
_NATIVE_FRAMEWORKS = {"tensorflow", "keras", "coremltools", "torch", "litert_torch", "onnx2torch", "ai_edge_quantizer"}


def keep_triton_out() -> None:
    """torch's CUDA wheels bring triton, which torch imports lazily; triton's native module loading
    after TensorFlow's segfaults the process (torch 2.14.1 + tensorflow-cpu 2.21.0 here; even
    `import tensorflow, coremltools` does, as coremltools imports torch). Conversion runs on the CPU
    and never needs triton: a None entry makes `import triton` fail cleanly and torch treat it as
    absent. Done before edgekit imports any of these frameworks."""
    if "triton" not in sys.modules:
        sys.modules["triton"] = None


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise MissingDependencyError saying why it is needed."""
    if module.split(".")[0] in _NATIVE_FRAMEWORKS:
        keep_triton_out()
    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        hint = _INSTALL_HINTS.get(root, f"pip install {root}")
        raise MissingDependencyError(f"{purpose} needs {root}, which is not importable ({e}); install it: {hint}") from e


def import_failure(error: ImportError) -> MissingDependencyError:
    """Name the real cause of an ImportError raised while edgekit was working.

    A missing `edgekit.*` module means the installation is incomplete (round 1's wheel lacked three
    subpackages and every load said "your model is corrupt"); anything else is a missing optional
    dependency, named with the pip command that provides it. Some libraries raise ImportError with
    only a sentence (coremltools: "scikit-learn is required for k-means quantization"), so the known
    package names are also looked for in the message.
    """
    name = error.name or ""
    if name == "edgekit" or name.startswith("edgekit."):
        return IncompleteInstallError(f"edgekit is installed incompletely: its module {name} is missing; "
                                      "reinstall it: pip install --force-reinstall edgekit")
    root = name.split(".")[0]
    if not root:
        message = str(error)
        root = next((m for m in _INSTALL_HINTS if m in message), "")
    hint = _INSTALL_HINTS.get(root, f"pip install {root}" if root else "reinstall edgekit with the extra you use")
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return MissingDependencyError(f"a required package is not importable ({first}); install it: {hint}")
