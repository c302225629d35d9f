"""Load a TensorFlow-family model — Keras 3 `.keras`, legacy `.h5`, or a SavedModel
directory — into a `SourceModel`: its input/output specs, a reference `predict`, the Keras
model, and a SavedModel directory the TFLite converter can read.

Why everything goes through a SavedModel: with Keras 3 on TF 2.16+, converting a
`tf.function` concrete function leaves the weights as resource variables
(READ_VARIABLE ops) and integer calibration fails; exporting with Keras' own
`ExportArchive` freezes them correctly and lets us name the outputs after the Keras
outputs, so the artifact's signature matches the source model's vocabulary.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from edgekit._deps import require
from edgekit.errors import InputError
from edgekit.manifest import TensorInfo

from .base import TENSORFLOW, SourceModel, clean_name, image_layout


def load(path: Path, kind: str, options=None) -> SourceModel:
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
    inputs = [TensorInfo(clean_name(t.name), tuple(t.shape), _dtype_name(t.dtype)) for t in model.inputs]
    output_names = [clean_name(n) for n in model.output_names]
    if len(set(output_names)) != len(output_names):
        output_names = [f"output_{i}" for i in range(len(output_names))]

    tmp = tempfile.TemporaryDirectory(prefix="edgekit-savedmodel-")
    saved = Path(tmp.name) / "saved_model"
    converted = _unrolled(keras, model)
    _export_keras(keras, converted, inputs, output_names, saved)

    def predict_batch(arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = model(arrays[0] if len(arrays) == 1 else arrays, training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        if isinstance(out, dict):
            outs = list(out.values())
        return [np.asarray(o) for o in outs]

    return SourceModel(path, kind, TENSORFLOW, inputs, output_names, predict_batch, layout=_nhwc(inputs),
                       saved_model_dir=saved, keras_model=converted, _tmp=tmp)


RECURRENT = ("LSTM", "GRU", "SimpleRNN")


def _unrolled(keras, model):
    """The model with its LSTM/GRU/SimpleRNN layers unrolled, when every one runs over a fixed
    number of steps; else the model itself. Keras 3 exports a recurrent layer as a while loop over
    TensorLists even at a fixed length, which neither LiteRT's builtin ops nor coremltools' TF
    frontend take (TFLite: tf.TensorListReserve; Core ML: `list index out of range`); unrolled, it
    is plain matmuls and activations. Same weights; the parity check compares the artifact with
    the original model, so the rewrite itself is verified on every run."""
    layers = [layer for layer in model._flatten_layers() if type(layer).__name__ in RECURRENT]
    if not layers or any(getattr(layer, "unroll", True) for layer in layers):
        return model
    if any(_steps(layer) is None for layer in layers):
        return model  # variable length: the converter's error says to fix the length

    def clone(layer):
        config = layer.get_config()
        if type(layer).__name__ in RECURRENT:
            config["unroll"] = True
        return type(layer).from_config(config)

    try:
        unrolled = keras.models.clone_model(model, clone_function=clone)
        unrolled.set_weights(model.get_weights())
    except Exception:  # a model clone_model cannot rebuild (subclassed): convert it as it is
        return model
    return unrolled


def _steps(layer):
    try:
        shape = layer.input.shape if not isinstance(layer.input, (list, tuple)) else layer.input[0].shape
    except (AttributeError, ValueError):
        return None
    return shape[1] if len(shape) >= 2 else None


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
    if not loaded.signatures:
        raise InputError(f"expected a SavedModel with a serving signature, {str(path)!r} has none; "
                         "save it with tf.saved_model.save(obj, dir, signatures=fn) or model.export(dir)")
    fn = serving_signature(loaded)
    specs = fn.structured_input_signature[1]
    inputs = [TensorInfo(name, tuple(spec.shape.as_list()), spec.dtype.name) for name, spec in sorted(specs.items())]
    output_names = sorted(fn.structured_outputs)

    def predict_batch(arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = fn(**{t.name: tf.constant(a, dtype=t.dtype) for t, a in zip(inputs, arrays)})
        return [out[n].numpy() for n in output_names]

    return SourceModel(path, "saved_model", TENSORFLOW, inputs, output_names, predict_batch,
                       layout=_nhwc(inputs), saved_model_dir=path, saved_model=loaded)


def serving_signature(loaded):
    """The signature a SavedModel serves with: serving_default, else the first by name."""
    signatures = dict(loaded.signatures)
    return signatures["serving_default" if "serving_default" in signatures else min(signatures)]


def _nhwc(inputs: list[TensorInfo]) -> str | None:
    """TensorFlow models take images channels-last; a (N, 3, H, W) input is a tensor, not an image."""
    return "NHWC" if image_layout(inputs[0].shape) == "NHWC" else None


def _dtype_name(dtype) -> str:
    return np.dtype(getattr(dtype, "name", dtype)).name

