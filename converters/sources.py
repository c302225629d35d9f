"""Load a trained model — Keras 3 `.keras`, legacy `.h5`, or a TF SavedModel directory —
into a `SourceModel`: its input/output specs, a reference `predict`, and a SavedModel
directory the TFLite converter can read.

Why everything goes through a SavedModel: with Keras 3 on TF 2.16+, converting a
`tf.function` concrete function leaves the weights as resource variables
(READ_VARIABLE ops) and integer calibration fails; exporting with Keras' own
`ExportArchive` freezes them correctly and lets us name the outputs after the Keras
outputs, so the artifact's signature matches the source model's vocabulary.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit._deps import require
from edgekit.errors import InputError
from edgekit.fileio import sha256_path
from edgekit.manifest import TensorInfo

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
PREDICT_BATCH = 64


@dataclass
class SourceModel:
    path: Path
    kind: str                              # "keras", "h5", "saved_model"
    inputs: list[TensorInfo]
    output_names: list[str]
    saved_model_dir: Path                  # what the TFLite converter reads
    _predict_batch: Callable[[list[np.ndarray]], list[np.ndarray]]
    keras_model: object = None             # kept for layer names and Core ML
    _tmp: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    def predict(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Reference outputs, one float32 array per output, in `output_names` order."""
        n = arrays[0].shape[0]
        chunks = [self._predict_batch([a[i:i + PREDICT_BATCH] for a in arrays]) for i in range(0, n, PREDICT_BATCH)]
        return [np.concatenate([c[k] for c in chunks]).astype(np.float32) for k in range(len(self.output_names))]

    def sha256(self) -> str:
        return sha256_path(self.path)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def source_kind(path: Path) -> str:
    """Validate the path cheaply (before any heavy import) and say what it is."""
    if not path.exists():
        raise InputError(f"expected a model file (.keras, .h5) or SavedModel folder, got {str(path)!r}, "
                         "which does not exist")
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise InputError(f"expected a SavedModel folder (with saved_model.pb), got folder {str(path)!r} "
                             "without one; export with model.export(dir) or tf.saved_model.save")
        return "saved_model"
    if path.suffix.lower() in KERAS_SUFFIXES:
        return "keras" if path.suffix.lower() == ".keras" else "h5"
    raise InputError(f"expected a Keras .keras/.h5 file or a SavedModel folder, got {path.name!r}; "
                     "save the model with model.save('model.keras')")


def load_source(path: str | Path) -> SourceModel:
    path = Path(path)
    kind = source_kind(path)
    return _load_saved_model(path) if kind == "saved_model" else _load_keras(path, kind)


def _load_keras(path: Path, kind: str) -> SourceModel:
    require("tensorflow", "converting Keras models")
    keras = require("keras", "loading Keras models")
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # Keras raises many types for a bad file; all mean "cannot read it"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"expected a loadable Keras model in {path.name!r}, but Keras could not read it "
                         f"({type(e).__name__}: {first[:200]}); check the file is complete and was saved by Keras")
    inputs = [TensorInfo(_clean(t.name), tuple(t.shape), _dtype_name(t.dtype)) for t in model.inputs]
    output_names = [_clean(n) for n in model.output_names]
    if len(set(output_names)) != len(output_names):
        output_names = [f"output_{i}" for i in range(len(output_names))]

    tmp = tempfile.TemporaryDirectory(prefix="edgekit-savedmodel-")
    saved = Path(tmp.name) / "saved_model"
    _export_keras(keras, model, inputs, output_names, saved)

    def predict_batch(arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = model(arrays[0] if len(arrays) == 1 else arrays, training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        if isinstance(out, dict):
            outs = list(out.values())
        return [np.asarray(o) for o in outs]

    return SourceModel(path, kind, inputs, output_names, saved, predict_batch, model, tmp)


def _export_keras(keras, model, inputs: list[TensorInfo], output_names: list[str], target: Path) -> None:
    def serve(*xs):
        out = model(xs[0] if len(xs) == 1 else list(xs), training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        return dict(zip(output_names, outs))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default", fn=serve,
        input_signature=[keras.InputSpec(shape=t.shape, dtype=t.dtype, name=t.name) for t in inputs])
    archive.write_out(str(target), verbose=False)


def _load_saved_model(path: Path) -> SourceModel:
    tf = require("tensorflow", "converting SavedModels")
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as e:
        raise InputError(f"expected a loadable SavedModel in {str(path)!r}, TensorFlow could not read it "
                         f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''})")
    signatures = dict(loaded.signatures)
    if not signatures:
        raise InputError(f"expected a SavedModel with a serving signature, {str(path)!r} has none; "
                         "save it with tf.saved_model.save(obj, dir, signatures=fn) or model.export(dir)")
    key = "serving_default" if "serving_default" in signatures else sorted(signatures)[0]
    fn = signatures[key]
    specs = fn.structured_input_signature[1]
    inputs = [TensorInfo(name, tuple(spec.shape.as_list()), spec.dtype.name) for name, spec in sorted(specs.items())]
    output_names = sorted(fn.structured_outputs)

    def predict_batch(arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = fn(**{t.name: tf.constant(a, dtype=t.dtype) for t, a in zip(inputs, arrays)})
        return [out[n].numpy() for n in output_names]

    return SourceModel(path, "saved_model", inputs, output_names, path, predict_batch)


def _clean(name: str) -> str:
    """Keras tensor names may carry ':0' or '/..' suffixes; signatures want plain identifiers."""
    return name.split(":")[0].replace("/", "_")


def _dtype_name(dtype) -> str:
    return np.dtype(getattr(dtype, "name", dtype)).name

