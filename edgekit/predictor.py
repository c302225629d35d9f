"""What every loaded artifact offers, whatever runs it (LiteRT for .tflite, the Core ML runtime
or edgekit's executor for .mlpackage): inputs in any convenient form, real values out,
top-k labels, batches.

Subclasses provide `inputs`, `outputs`, `run(arrays, signature)` and `resizable_batch`;
`preprocessing` and `labels` come from the manifest.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .errors import InputError
from .manifest import Manifest, TensorInfo
from .preprocess import ImageSpec


class Predictor:
    origin: str = "model"
    manifest: Manifest | None = None
    labels: list[str] | None = None
    preprocessing: ImageSpec | None = None
    backend: str = ""
    format: str = ""  # the artifact kind: "tflite" or "coreml" (edgekit.artifact)

    # -- provided by subclasses -------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorInfo]:
        raise NotImplementedError

    @property
    def outputs(self) -> list[TensorInfo]:
        raise NotImplementedError

    @property
    def resizable_batch(self) -> bool:
        raise NotImplementedError

    def run(self, arrays: Sequence[np.ndarray], signature: str | None = None) -> list[np.ndarray]:
        raise NotImplementedError

    def signature_inputs(self, signature: str | None) -> list[TensorInfo]:
        return self.inputs

    def signature_outputs(self, signature: str | None) -> list[TensorInfo]:
        return self.outputs

    # -- shared ---------------------------------------------------------------------------------------
    def predict(self, x: Any, signature: str | None = None) -> np.ndarray | dict[str, np.ndarray]:
        """x: an array (one sample or a batch), a PIL image, an image path or bytes, a list of
        those in input order, or a dict by input name. Returns the output (batch first), or a
        dict by output name for multi-output models."""
        outs = self.run(self.to_arrays(x, signature), signature)
        names = [t.name for t in self.signature_outputs(signature)]
        return outs[0] if len(outs) == 1 else dict(zip(names, outs))

    def classify(self, x: Any, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k (label, score) per sample from the first output; labels from the manifest."""
        scores = self.run(self.to_arrays(x))[0]
        if scores.ndim != 2:
            raise InputError(f"classify expects a (batch, classes) output, {self.origin} gives {scores.shape}")
        return [self.top_k(row, top_k) for row in scores]

    def top_k(self, row: np.ndarray, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-row, kind="stable")[:k]
        labels = self.labels if self.labels and len(self.labels) == row.shape[0] else None
        return [(labels[i] if labels else str(int(i)), float(row[i])) for i in order]

    def predict_batch(self, items: Iterable[Any], batch_size: int = 32) -> list:
        """Per-sample results (batch dimension removed) for an iterable of samples. Uses a real
        batch dimension when the model allows resizing it, a loop otherwise."""
        if batch_size < 1:
            raise InputError(f"batch_size expects a positive number, got {batch_size}")
        results: list = []
        chunk: list = []
        for item in items:
            chunk.append(self.to_arrays(item))
            if len(chunk) == batch_size:
                results.extend(self._run_chunk(chunk))
                chunk = []
        if chunk:
            results.extend(self._run_chunk(chunk))
        return results

    def _run_chunk(self, samples: list[list[np.ndarray]]) -> list:
        names = [t.name for t in self.outputs]
        if self.resizable_batch:
            stacked = [np.concatenate([s[k] for s in samples]) for k in range(len(self.inputs))]
            outs = self.run(stacked)
            per_sample = [[o[i] for o in outs] for i in range(len(samples))]
        else:
            per_sample = [[o[0] for o in self.run(s)] for s in samples]
        return [p[0] if len(p) == 1 else dict(zip(names, p)) for p in per_sample]

    # -- input coercion ----------------------------------------------------------------------------------
    def to_arrays(self, x: Any, signature: str | None = None) -> list[np.ndarray]:
        """Any accepted input form -> one real-valued, batch-first array per input."""
        inputs = self.signature_inputs(signature)
        if isinstance(x, dict):
            missing = [t.name for t in inputs if t.name not in x]
            if missing:
                raise InputError(f"expected inputs named {[t.name for t in inputs]}, missing {missing}")
            return [self._one(x[t.name], t) for t in inputs]
        if isinstance(x, (list, tuple)):
            if len(x) != len(inputs):
                raise InputError(f"a list is one value per input: {self.origin} has {len(inputs)} inputs "
                                 f"({', '.join(t.name for t in inputs)}), got {len(x)} values; "
                                 "for many samples use predict_batch")
            return [self._one(v, t) for v, t in zip(x, inputs)]
        if len(inputs) != 1:
            raise InputError(f"{self.origin} has {len(inputs)} inputs; pass a list or a dict by input name")
        return [self._one(x, inputs[0])]

    def _one(self, value: Any, info: TensorInfo) -> np.ndarray:
        if not isinstance(value, np.ndarray) and is_image(value):
            return self._image(value, info)[None]
        array = np.asarray(value)
        if array.ndim == len(info.shape) - 1:  # one sample without its batch dimension
            array = array[None]
        return array

    def _image(self, value: Any, info: TensorInfo) -> np.ndarray:
        if self.preprocessing is not None:
            return self.preprocessing.load(value)
        if info.dtype == "uint8" and len(info.shape) == 4 and info.shape[-1] in (1, 3):
            # TFLite convention for uint8 image models: raw pixels are the input codes.
            raw = ImageSpec(info.shape[1], info.shape[2], info.shape[-1]).load(value)
            if info.quantized:
                return ((raw - info.zero_point) * info.scale).astype(np.float32)
            return raw
        raise InputError(f"{self.origin} has no preprocessing in its manifest, so edgekit cannot turn an image "
                         f"into input {info.name!r}; pass preprocessing=ImageSpec(...) to edgekit.load or give arrays")


def is_image(value: Any) -> bool:
    if isinstance(value, (bytes, bytearray, str, Path, io.IOBase)):
        return True
    return type(value).__module__.startswith("PIL.")
