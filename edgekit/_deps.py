"""Heavy or optional imports go through `require`, so a missing package becomes one
clear line with the install command instead of an ImportError deep in a stack."""
from __future__ import annotations

import importlib
from types import ModuleType

from .errors import MissingDependencyError

# module -> the pip command that provides it
_INSTALL_HINTS = {
    "tensorflow": "pip install 'edgekit[convert]'",
    "keras": "pip install 'edgekit[convert]'",
    "coremltools": "pip install 'edgekit[convert]'",
    "uvicorn": "pip install 'edgekit[serve]'",
    "starlette": "pip install 'edgekit[serve]'",
}


def require(module: str, purpose: str) -> ModuleType:
    """Import `module` or raise MissingDependencyError saying why it is needed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        root = module.split(".")[0]
        hint = _INSTALL_HINTS.get(root, f"pip install {root}")
        raise MissingDependencyError(f"{purpose} needs {root}, which is not importable ({e}); install it: {hint}") from e
