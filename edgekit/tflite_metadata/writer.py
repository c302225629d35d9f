"""Build TFLite Metadata from what the converter knows, and pack associated files (labels) the
standard way: as an uncompressed zip appended to the flatbuffer, so the .tflite is at once a
valid model and a valid zip archive (what the TFLite Support metadata populator produces)."""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import flatbuffers

from . import metadata_schema_generated as md

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


def build(info: ModelInfo, manifest) -> bytes:
    """The TFLITE_METADATA flatbuffer for an edgekit manifest (inputs, outputs, preprocessing, labels)."""
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


def _input_metadata(tensor, manifest) -> md.TensorMetadataT:
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


def _output_metadata(tensor, index: int, manifest) -> md.TensorMetadataT:
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


def read(model: bytes) -> md.ModelMetadataT | None:
    """Parse the TFLITE_METADATA buffer of a model (None when absent)."""
    from ..tflite_file import metadata_buffer

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


def associated_file_names(metadata: md.ModelMetadataT) -> set[str]:
    def names(files):
        return {f.name.decode() if isinstance(f.name, bytes) else f.name for f in files or []}

    found = names(metadata.associatedFiles)
    for subgraph in metadata.subgraphMetadata or []:
        found |= names(subgraph.associatedFiles)
        for tensor in (subgraph.inputTensorMetadata or []) + (subgraph.outputTensorMetadata or []):
            found |= names(tensor.associatedFiles)
    return found
