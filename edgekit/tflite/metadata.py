"""What a .tflite carries besides its graph, read and written in one place:

- the edgekit manifest, a metadata buffer named `artifact.TFLITE_MANIFEST_BUFFER`;
- the standard TFLite Metadata (`TFLITE_METADATA`, what Android Studio's ML model binding and the
  TFLite Support task library read), built from what the converter knows with the published schema
  (its flatc-generated code lives in edgekit/tflite_metadata/, imported only when needed);
- associated files (labels), packed the standard way: an uncompressed zip appended to the
  flatbuffer, so the .tflite is at once a valid model and a valid zip archive (what the TFLite
  Support metadata populator produces).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..artifact import TFLITE_MANIFEST_BUFFER, manifest_from_json
from .reader import check_identifier, metadata_buffer, schema

METADATA_BUFFER_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # every field written here exists since schema 1.0.0
LABELS_FILE = "labels.txt"


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    version: str
    author: str = ""
    license: str = ""


def _md():
    """The flatc-generated metadata schema; only building or reading TFLITE_METADATA needs it."""
    from ..tflite_metadata import metadata_schema_generated

    return metadata_schema_generated


def read_manifest(data: bytes, origin: str = "model") -> dict[str, Any] | None:
    """The edgekit manifest embedded in a .tflite (checked), or None when the file has none."""
    raw = metadata_buffer(data, TFLITE_MANIFEST_BUFFER, origin)
    return None if raw is None else manifest_from_json(raw, origin)


def build(info: ModelInfo, manifest) -> bytes:
    """The TFLITE_METADATA flatbuffer for an edgekit manifest (inputs, outputs, preprocessing, labels)."""
    import flatbuffers

    md = _md()
    model = md.ModelMetadataT()
    model.name, model.description, model.version = info.name, info.description, info.version
    model.author, model.license = info.author, info.license
    model.minParserVersion = MIN_PARSER_VERSION
    subgraph = md.SubGraphMetadataT()
    subgraph.name = "main"
    subgraph.inputTensorMetadata = [_input_metadata(t, manifest) for t in manifest.inputs]
    subgraph.outputTensorMetadata = [_output_metadata(t, i, manifest) for i, t in enumerate(manifest.outputs)]
    model.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), FILE_IDENTIFIER)
    return bytes(builder.Output())


def _input_metadata(tensor, manifest):
    md = _md()
    meta = md.TensorMetadataT()
    meta.name = tensor.name
    spec = manifest.preprocessing
    if spec is None:
        meta.description = f"Input tensor {tensor.name}, shape {list(tensor.shape)}."
        content = md.ContentT()
        content.contentPropertiesType = md.ContentProperties.FeatureProperties
        content.contentProperties = md.FeaturePropertiesT()
        meta.content = content
        return meta
    color = "RGB" if spec["channels"] == 3 else "grayscale"
    meta.description = (f"Input image: {spec['width']}x{spec['height']} {color}, each pixel normalized as "
                        f"(pixel - mean) / std with mean {spec['mean']} and std {spec['std']}.")
    image = md.ImagePropertiesT()
    image.colorSpace = md.ColorSpaceType.RGB if spec["channels"] == 3 else md.ColorSpaceType.GRAYSCALE
    image.defaultSize = md.ImageSizeT()
    image.defaultSize.width, image.defaultSize.height = spec["width"], spec["height"]
    content = md.ContentT()
    content.contentPropertiesType = md.ContentProperties.ImageProperties
    content.contentProperties = image
    meta.content = content
    normalization = md.NormalizationOptionsT()
    normalization.mean, normalization.std = list(map(float, spec["mean"])), list(map(float, spec["std"]))
    unit = md.ProcessUnitT()
    unit.optionsType = md.ProcessUnitOptions.NormalizationOptions
    unit.options = normalization
    meta.processUnits = [unit]
    stats = md.StatsT()  # the range normalized pixels take, per channel
    channels = spec["channels"]
    means = spec["mean"] * channels if len(spec["mean"]) == 1 else spec["mean"]
    stds = spec["std"] * channels if len(spec["std"]) == 1 else spec["std"]
    stats.min = [float((0.0 - m) / s) for m, s in zip(means, stds)]
    stats.max = [float((255.0 - m) / s) for m, s in zip(means, stds)]
    meta.stats = stats
    return meta


def _output_metadata(tensor, index: int, manifest):
    md = _md()
    meta = md.TensorMetadataT()
    meta.name = tensor.name
    content = md.ContentT()
    content.contentPropertiesType = md.ContentProperties.FeatureProperties
    content.contentProperties = md.FeaturePropertiesT()
    meta.content = content
    if manifest.labels and index == 0:
        meta.description = f"Scores of the {len(manifest.labels)} labels in {LABELS_FILE}, in that order."
        labels = md.AssociatedFileT()
        labels.name = LABELS_FILE
        labels.description = "Labels for the classes the model recognizes, one per line, in score order."
        labels.type = md.AssociatedFileType.TENSOR_AXIS_LABELS
        meta.associatedFiles = [labels]
        if manifest.parity and manifest.parity.get("top1_agreement") is not None:
            stats = md.StatsT()
            stats.min, stats.max = [0.0], [1.0]
            meta.stats = stats
    else:
        meta.description = f"Output tensor {tensor.name}, shape {list(tensor.shape)}."
    return meta


def associated_files(manifest) -> dict[str, bytes]:
    return {LABELS_FILE: "".join(f"{label}\n" for label in manifest.labels).encode()} if manifest.labels else {}


def append_files(model: bytes, files: dict[str, bytes]) -> bytes:
    """model bytes + a zip of `files` (stored, not deflated: readers map them in place)."""
    if not files:
        return model
    buffer = io.BytesIO(model)
    buffer.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def read(model: bytes):
    """Parse the TFLITE_METADATA buffer of a model into a ModelMetadataT (None when absent)."""
    md = _md()
    data = metadata_buffer(model, METADATA_BUFFER_NAME)
    if data is None:
        return None
    return md.ModelMetadataT.InitFromObj(md.ModelMetadata.GetRootAs(data, 0))


def packed_files(model: bytes, verify: bool = False) -> dict[str, bytes]:
    """The associated files appended to a model ({} when there are none). Reading checks each
    file's CRC; with verify=True a damaged archive raises zipfile.BadZipFile instead of {}."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        if verify:
            raise
        return {}


def associated_file_names(metadata) -> set[str]:
    def names(files):
        return {f.name.decode() if isinstance(f.name, bytes) else f.name for f in files or []}

    found = names(metadata.associatedFiles)
    for subgraph in metadata.subgraphMetadata or []:
        found |= names(subgraph.associatedFiles)
        for tensor in (subgraph.inputTensorMetadata or []) + (subgraph.outputTensorMetadata or []):
            found |= names(tensor.associatedFiles)
    return found


def embed_metadata(data: bytes, entries: dict[str, bytes]) -> bytes:
    """Return the model with each entry as a named metadata buffer (replacing same-named ones);
    the graph and weights are unchanged."""
    from ai_edge_litert.tools import flatbuffer_utils

    generated = schema()
    check_identifier(data, "converter output")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.metadata = [m for m in (model.metadata or []) if _decode(m.name) not in entries]
    for name, payload in entries.items():
        buffer = generated.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buffer)
        meta = generated.MetadataT()
        meta.name = name
        meta.buffer = len(model.buffers) - 1
        model.metadata.append(meta)
    for buffer in model.buffers:
        buffer.__class__ = _aligned_buffer_class(generated)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def strip_metadata(data: bytes, names: tuple[str, ...]) -> bytes:
    """The model without the named metadata entries (their buffers emptied) and without appended
    associated files, and with a `serving_default` signature if it had none: what a tool that
    rewrites the flatbuffer (a quantizer) should start from. It would keep metadata that points at
    files it drops, and ai-edge-quantizer calibrates through a signature (older converters and
    MediaPipe's models have none)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    if not model.signatureDefs:
        model.signatureDefs = [_default_signature(model)]
    dropped = [m for m in (model.metadata or []) if _decode(m.name) in names]
    model.metadata = [m for m in (model.metadata or []) if _decode(m.name) not in names]
    for meta in dropped:
        model.buffers[meta.buffer].data = None
    generated = schema()
    for buffer in model.buffers:
        buffer.__class__ = _aligned_buffer_class(generated)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _default_signature(model):
    """A signature over the main subgraph's inputs and outputs, keyed by tensor name."""
    generated = schema()
    graph = model.subgraphs[0]

    def tensor_map(index: int):
        entry = generated.TensorMapT()
        entry.name, entry.tensorIndex = _decode(graph.tensors[index].name), int(index)
        return entry

    signature = generated.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = "serving_default", 0
    signature.inputs = [tensor_map(i) for i in graph.inputs]
    signature.outputs = [tensor_map(i) for i in graph.outputs]
    return signature


BUFFER_ALIGNMENT = 16  # the schema's `data:[ubyte] (force_align: 16)`


def _aligned_buffer_class(generated):
    """BufferT whose data vector honours force_align: 16. The generated Python packs byte vectors
    with alignment 1, which would leave weights unaligned (the converter writes them aligned, and
    mmap-based weight caches expect that)."""

    class AlignedBufferT(generated.BufferT):
        def Pack(self, builder):
            data = None
            if self.data is not None:
                raw = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                builder.vectorNumElems = len(raw)
                data = builder.EndVector()
            generated.BufferStart(builder)
            if data is not None:
                generated.BufferAddData(builder, data)
            generated.BufferAddOffset(builder, self.offset)
            generated.BufferAddSize(builder, self.size)
            return generated.BufferEnd(builder)

    return AlignedBufferT


def _decode(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name or "")
