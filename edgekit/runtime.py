"""Where `load`, `Model`, `quantize` and `dequantize` lived before edgekit.tflite: kept as thin
re-exports so `from edgekit.runtime import load` in users' code keeps working."""
from __future__ import annotations

from .artifact import load
from .tflite.model import TFLiteModel, dequantize, quantize

Model = TFLiteModel  # the pre-0.2 name of the LiteRT-backed model

__all__ = ["load", "Model", "TFLiteModel", "quantize", "dequantize"]
