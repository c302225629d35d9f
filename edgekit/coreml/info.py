"""What an .mlpackage holds, read without running it: `edgekit inspect` and `edgekit.artifact.inspect`."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artifact import COREML_MANIFEST_KEY, manifest_from_json
from ..fileio import path_size
from .executor import ProgramExecutor


@dataclass
class CoreMLInput:
    name: str
    kind: str            # the spec's feature type: imageType, multiArrayType...
    detail: str          # " 32x32 GRAYSCALE" for an image input, else ""
    program_shape: list  # what the ML program takes (NCHW for images)
    dtype: str | None


@dataclass
class CoreMLInfo:
    path: Path
    size_bytes: int
    spec_version: int
    inputs: list[CoreMLInput]
    outputs: list[str]
    op_counts: Counter
    compressed_weights: Counter
    author: str = ""
    license: str = ""
    version: str = ""
    description: str = ""
    manifest: dict[str, Any] | None = None
    kind: str = field(default="coreml", init=False)


def inspect_package(path: Path) -> CoreMLInfo:
    executor = ProgramExecutor(path)  # validates the package (paths, blob offsets, program)
    spec = executor.spec
    meta = spec.description.metadata
    manifest = (manifest_from_json(meta.userDefined[COREML_MANIFEST_KEY], path.name)
                if COREML_MANIFEST_KEY in meta.userDefined else None)
    inputs = []
    for item in spec.description.input:
        kind = item.type.WhichOneof("Type")
        detail = ""
        if kind == "imageType":
            image = item.type.imageType
            detail = f" {image.width}x{image.height} {'GRAYSCALE' if image.colorSpace == image.GRAYSCALE else 'RGB'}"
        inputs.append(CoreMLInput(item.name, kind, detail, list(executor.input_shapes[item.name]),
                                  executor.input_dtypes.get(item.name)))
    return CoreMLInfo(path, path_size(path), spec.specificationVersion, inputs, list(executor.output_names),
                      Counter(step.op_type for step in executor.steps), Counter(executor.compile_time_ops),
                      meta.author, meta.license, meta.versionString, meta.shortDescription, manifest)
