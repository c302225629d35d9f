"""The manifest: the contract between the converter and the device.

Everything the converter knew about the model travels with the artifact — embedded in
the file (a `.tflite` metadata buffer named `edgekit_manifest`) and beside it as
`<artifact>.json` — so the runtime and app builds configure themselves without guessing.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import ArtifactError, EdgekitError

SCHEMA_VERSION = 1                                # bump when a reader of the old version would misread
_SCHEMA_PREFIX = "edgekit.manifest/"
MANIFEST_SCHEMA = f"{_SCHEMA_PREFIX}{SCHEMA_VERSION}"



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
        _expect(isinstance(d, dict), "a tensor entry is not an object", d)
        _expect(isinstance(d.get("name"), str), "a tensor has no string 'name'", d)
        shape = d.get("shape")
        _expect(isinstance(shape, list) and all(v is None or (type(v) is int and v >= 0) for v in shape),
                f"tensor {d['name']!r} 'shape' is not a list of non-negative integers or nulls", shape)
        _expect(isinstance(d.get("dtype"), str) and d["dtype"] in _DTYPES, f"tensor {d['name']!r} 'dtype' is not "
                f"one of {', '.join(sorted(_DTYPES))}", d.get("dtype"))
        scale, zero_point = d.get("scale"), d.get("zero_point")
        _expect(scale is None or (isinstance(scale, (int, float)) and not isinstance(scale, bool) and scale == scale),
                f"tensor {d['name']!r} 'scale' is not a number", scale)
        _expect(zero_point is None or type(zero_point) is int, f"tensor {d['name']!r} 'zero_point' is not an integer",
                zero_point)
        return cls(d["name"], tuple(shape), d["dtype"], scale, zero_point)


_DTYPES = {"float32", "float16", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
           "bool"}


def _check_schema(schema: Any) -> None:
    """`edgekit.manifest/N`: a newer N may mean fields this edgekit would misread, so it says which
    edgekit to get instead of guessing; an older or equal N is read as is."""
    _expect(isinstance(schema, str) and schema.startswith(_SCHEMA_PREFIX) and schema[len(_SCHEMA_PREFIX):].isdigit(),
            f"'schema' is not {_SCHEMA_PREFIX}N", schema)
    version = int(schema[len(_SCHEMA_PREFIX):])
    if version > SCHEMA_VERSION:
        raise ArtifactError(f"the artifact's manifest was written by a newer edgekit (manifest schema {version}; this "
                            f"edgekit {__import__('edgekit').__version__} reads up to {SCHEMA_VERSION}); upgrade: "
                            "pip install -U edgekit")


def _expect(ok: bool, what: str, got: Any) -> None:
    """A manifest read from an artifact is untrusted input: a wrong type is a corrupt artifact,
    not a TypeError deep in the runtime."""
    if not ok:
        raise ArtifactError(f"the edgekit manifest is malformed: {what} (got {str(got)[:80]!r}); "
                            "re-convert the artifact with edgekit convert or re-copy it")


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
    weights_sha256: str | None = None  # edgekit.weights: checked at load, so damaged weights never run
    reference_stats: dict[str, Any] | None = None  # edgekit.monitor.reference: what drift is measured against
    # keys this edgekit does not know, from a newer edgekit of the same schema version: kept, so a
    # manifest read and written again (bundle, re-embedding) loses nothing
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = [t.to_dict() for t in self.inputs]
        d["outputs"] = [t.to_dict() for t in self.outputs]
        extra = d.pop("extra")
        return {**d, **{k: v for k, v in extra.items() if k not in d}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        """Raises ArtifactError (never TypeError/KeyError) when `d` does not have the manifest's shape."""
        _expect(isinstance(d, dict), "it is not a JSON object", d)
        _check_schema(d.get("schema", MANIFEST_SCHEMA))
        for key in ("format", "recipe"):
            _expect(isinstance(d.get(key), str), f"{key!r} is missing or not a string", d.get(key))
        for key in ("inputs", "outputs"):
            _expect(isinstance(d.get(key, []), list), f"{key!r} is not a list", d.get(key))
        for key in ("preprocessing", "parity", "calibration"):
            _expect(d.get(key) is None or isinstance(d[key], dict), f"{key!r} is not an object", d.get(key))
        for key in ("model", "source", "versions"):
            _expect(isinstance(d.get(key, {}), dict), f"{key!r} is not an object", d.get(key))
        _expect(d.get("weights_sha256") is None or isinstance(d["weights_sha256"], str), "'weights_sha256' is not a "
                "string", d.get("weights_sha256"))
        if d.get("reference_stats") is not None:  # optional: artifacts converted before monitoring load as before
            from .monitor.reference import check_reference

            check_reference(d["reference_stats"])
        labels = d.get("labels")
        _expect(labels is None or (isinstance(labels, list) and all(isinstance(v, str) for v in labels)),
                "'labels' is not a list of strings", labels)
        if d.get("preprocessing") is not None:
            from .preprocess import ImageSpec  # checks the spec's keys and values now, not at first predict

            try:
                ImageSpec.from_dict(d["preprocessing"])
            except EdgekitError:
                raise
            except (KeyError, TypeError, ValueError) as e:
                _expect(False, f"'preprocessing' lacks or mistypes {e}", d["preprocessing"])
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "extra"}
        known["extra"] = {k: v for k, v in d.items() if k not in cls.__dataclass_fields__ or k == "extra"}
        known["inputs"] = [TensorInfo.from_dict(t) for t in d.get("inputs", [])]
        known["outputs"] = [TensorInfo.from_dict(t) for t in d.get("outputs", [])]
        return cls(**known)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Manifest":
        try:
            data = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ArtifactError(f"the edgekit manifest is not valid JSON ({e}); re-convert or re-copy the artifact") from e
        return cls.from_dict(data)
