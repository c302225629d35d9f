"""edgekit: trained models to phones and small boards.

The device side (this package's top level) needs numpy and a LiteRT runtime only;
conversion lives in `edgekit.converters` and imports TensorFlow lazily.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import (ArtifactError, ConversionError, EdgekitError, InputError,  # noqa: E402
                     MissingDependencyError, OutputExistsError)
from .artifact import load  # noqa: E402


def __getattr__(name: str):
    """`edgekit.Model` (the LiteRT-backed model) imports the TFLite runtime only when asked for."""
    if name == "Model":
        from .tflite.model import TFLiteModel

        return TFLiteModel
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


__all__ = ["__version__", "load", "Model", "EdgekitError", "InputError", "ArtifactError", "ConversionError",
           "MissingDependencyError", "OutputExistsError"]
