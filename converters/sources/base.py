"""What every source model offers the converter core, whatever framework it came from.

A source is loaded once per `edgekit convert` run. The pipeline only needs its tensor
specs and a reference `predict`; each format module reads the handle of the family it
converts from (`family` says which one is set): a SavedModel directory and the Keras
model for TensorFlow, an `nn.Module` for PyTorch (ONNX arrives as one too), the float
`.tflite` bytes for an existing LiteRT model.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.fileio import sha256_path
from edgekit.manifest import TensorInfo

PREDICT_BATCH = 64

from edgekit.recipes import FAMILIES, TENSORFLOW, TFLITE_FLOAT, TORCH  # noqa: F401  (the capability table's rows)


@dataclass
class SourceModel:
    path: Path
    kind: str                              # a key of converters.sources.SOURCES (keras, onnx, tflite...)
    family: str                            # which converters can read it: one of FAMILIES
    inputs: list[TensorInfo]
    output_names: list[str]
    _predict_batch: Callable[[list[np.ndarray]], list[np.ndarray]]
    layout: str | None = None              # "NHWC" or "NCHW" for a single image input, else None
    saved_model_dir: Path | None = None    # TensorFlow: what TFLiteConverter reads
    keras_model: object = None             # TensorFlow: layer names, Core ML, compression
    saved_model: object = None             # a SavedModel folder given as the source, loaded (Core ML)
    torch_module: object = None            # PyTorch/ONNX: what litert-torch and coremltools trace
    tflite_bytes: bytes | None = None      # float .tflite: what the quantizer rewrites
    max_batch: int = PREDICT_BATCH         # 1 for a source fixed to batch 1 (exported programs guard it)
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def predict(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Reference outputs, one float32 array per output, in `output_names` order."""
        n, step = arrays[0].shape[0], self.max_batch
        chunks = [self._predict_batch([a[i:i + step] for a in arrays]) for i in range(0, n, step)]
        return [np.concatenate([c[k] for c in chunks]).astype(np.float32) for k in range(len(self.output_names))]

    def sha256(self) -> str:
        return sha256_path(self.path)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def clean_name(name: str) -> str:
    """Framework tensor names may carry ':0' or '/..' suffixes; signatures want plain identifiers."""
    return name.split(":")[0].replace("/", "_")


def fixed_batch(inputs: list[TensorInfo]) -> int:
    """1 when every input is declared with batch 1 (exported programs guard their batch size), else
    the usual chunk size."""
    return 1 if all(t.shape[0] == 1 for t in inputs) else PREDICT_BATCH


def image_layout(shape: tuple) -> str | None:
    """NHWC or NCHW for a 4-D input with 1 or 3 channels at one end; None when it is not an image."""
    if len(shape) != 4:
        return None
    if shape[-1] in (1, 3):
        return "NHWC"
    if shape[1] in (1, 3):
        return "NCHW"
    return None
