"""Find a LiteRT interpreter: ai_edge_litert (maintained), tflite_runtime (legacy Pi OS
images), tensorflow.lite (only when TensorFlow is already installed; never required)."""
from __future__ import annotations

import importlib
import importlib.util

from .errors import InputError, MissingDependencyError

# (backend name, module holding Interpreter), in order of preference
BACKENDS = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


def interpreter_class(backend: str = "auto"):
    """Return (backend name, Interpreter class)."""
    if backend != "auto" and backend not in {name for name, _ in BACKENDS}:
        raise InputError(f"backend expects auto or one of {', '.join(n for n, _ in BACKENDS)}, got {backend!r}")
    errors = []
    for name, module in BACKENDS:
        if backend not in ("auto", name):
            continue
        if backend == "auto" and name == "tensorflow" and importlib.util.find_spec("tensorflow") is None:
            continue
        try:
            return name, importlib.import_module(module).Interpreter
        except (ImportError, AttributeError) as e:  # tflite_runtime 2.14 fails on numpy 2 at import
            errors.append(f"{name}: {e}")
    raise MissingDependencyError("running .tflite needs a LiteRT runtime: pip install ai-edge-litert "
                                 f"(tried {'; '.join(errors) or backend})")
