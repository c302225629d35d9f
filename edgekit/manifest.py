"""The manifest: the contract between the converter and the device.

Everything the converter knew about the model travels with the artifact — embedded in
the file (a `.tflite` metadata buffer named `edgekit_manifest`) and beside it as
`<artifact>.json` — so the runtime and app builds configure themselves without guessing.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

MANIFEST_SCHEMA = "edgekit.manifest/1"
TFLITE_METADATA_NAME = "edgekit_manifest"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # None for a dynamic dimension
    dtype: str    # numpy dtype name: float32, int8, uint8, int16...
    scale: float | None = None       # per-tensor quantization (real = scale * (q - zero_point))
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.scale is not None and self.scale != 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorInfo":
        return cls(d["name"], tuple(d["shape"]), d["dtype"], d.get("scale"), d.get("zero_point"))


@dataclass
class Manifest:
    format: str
    recipe: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    preprocessing: dict[str, Any] | None = None   # ImageSpec.to_dict() for image models
    labels: list[str] | None = None
    parity: dict[str, Any] | None = None
    model: dict[str, str] = field(default_factory=dict)         # name, description, version, author, license
    source: dict[str, Any] = field(default_factory=dict)        # file name, kind, sha256
    calibration: dict[str, Any] | None = None                   # source, samples, sha256
    versions: dict[str, str] = field(default_factory=dict)      # edgekit, tensorflow, ...
    created_utc: str = ""
    schema: str = MANIFEST_SCHEMA

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["inputs"] = [TensorInfo.from_dict(t) for t in d.get("inputs", [])]
        known["outputs"] = [TensorInfo.from_dict(t) for t in d.get("outputs", [])]
        return cls(**known)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        return cls.from_dict(json.loads(text))
