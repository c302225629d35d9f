"""An existing float `.tflite` (a third-party MediaPipe model, a colleague's export) as a
source: the quantization recipes rewrite it with ai-edge-quantizer, and its own float
outputs, run by the device runtime, are the parity reference."""
from __future__ import annotations

from pathlib import Path

from edgekit.artifact import TFLITE_MANIFEST_BUFFER
from edgekit.errors import ArtifactError, InputError
from edgekit.tflite.metadata import METADATA_BUFFER_NAME, strip_metadata
from edgekit.tflite.model import TFLiteModel

from .base import PREDICT_BATCH, TFLITE_FLOAT, SourceModel, image_layout


def load(path: Path, kind: str, options=None) -> SourceModel:
    data = path.read_bytes()
    try:
        model = TFLiteModel(data, origin=path.name)
    except ArtifactError as e:
        raise InputError(f"expected a runnable float .tflite in {path.name!r}, but LiteRT refuses it ({e})") from e
    quantized = [t.name for t in model.inputs + model.outputs if t.quantized or t.dtype in ("int8", "uint8")]
    if quantized:
        raise InputError(f"{path.name!r} is already quantized (integer tensors: {', '.join(quantized[:3])}); "
                         "edgekit quantizes float models: pass the float .tflite or the original model")
    inputs, output_names = list(model.inputs), [t.name for t in model.outputs]

    # A model edgekit (or Android Studio) wrote carries metadata and a zip of label files after the
    # flatbuffer; the quantizer rewrites the flatbuffer and would keep metadata pointing at files it
    # drops. Each artifact gets fresh metadata anyway.
    graph_only = strip_metadata(data, (METADATA_BUFFER_NAME, TFLITE_MANIFEST_BUFFER))
    return SourceModel(path, kind, TFLITE_FLOAT, inputs, output_names, model.run,
                       layout=image_layout(inputs[0].shape), tflite_bytes=graph_only,
                       max_batch=PREDICT_BATCH if model.resizable_batch else 1)
