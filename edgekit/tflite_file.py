"""Read and annotate `.tflite` flatbuffers without running them.

Uses the TFLite schema that ships inside `ai_edge_litert` (generated Python), so it works
on any third-party model — including ones whose custom ops no runtime here has — and
never needs TensorFlow.
"""
from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArtifactError, MissingDependencyError
from .manifest import TFLITE_METADATA_NAME, Manifest, TensorInfo
from ._deps import import_failure

TFLITE_IDENTIFIER = b"TFL3"


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise MissingDependencyError("reading .tflite files needs ai-edge-litert: pip install ai-edge-litert") from e
    return schema


def _names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


# Custom ops the stock LiteRT runtime runs without the app registering anything. Checked on
# ai-edge-litert 2.3: the MediaPipe ops are claimed by the XNNPACK delegate (on by default), which
# is why a model using Convolution2DTransposeBias runs although it is a "custom" op; the others
# are registered by LiteRT's builtin op resolver.
RUNTIME_CUSTOM_OPS = {
    "Convolution2DTransposeBias": "XNNPACK delegate", "MaxPoolingWithArgmax2D": "XNNPACK delegate",
    "MaxUnpooling2D": "XNNPACK delegate", "TFLite_Detection_PostProcess": "LiteRT builtin resolver",
    "Mfcc": "LiteRT builtin resolver", "AudioSpectrogram": "LiteRT builtin resolver",
}


@dataclass
class TfliteInfo:
    size_bytes: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    op_counts: Counter
    custom_ops: list[str]
    flex_ops: list[str]
    signatures: list[str]
    metadata_names: list[str]
    subgraphs: int
    manifest: dict[str, Any] | None = None
    schema_version: int = 0
    description: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def unresolved_custom_ops(self) -> list[str]:
        """Custom ops the device app must register a kernel for."""
        return [c for c in self.custom_ops if c not in RUNTIME_CUSTOM_OPS]


def check_identifier(data: bytes, origin: str) -> None:
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ArtifactError(f"expected a .tflite flatbuffer (identifier TFL3 at byte 4), got {origin} "
                            f"({len(data)} bytes, starts {data[:8]!r}); re-export the model or check the path")


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"expected a .tflite file, got {str(path)!r}, which is not a file")
    return path.read_bytes()


def _model(data: bytes, origin: str):
    check_identifier(data, origin)
    schema = _schema()
    try:
        return schema.Model.GetRootAs(data, 0)
    except Exception as e:  # flatbuffers raises struct/index errors on garbage
        raise ArtifactError(f"{origin} is not a readable .tflite flatbuffer: {e}") from e


def _buffer_bytes(model, data: bytes, index: int) -> bytes:
    try:
        buf = model.Buffers(index)
        if buf.Offset() > 1:  # large models keep buffer data after the flatbuffer
            return bytes(data[buf.Offset(): buf.Offset() + buf.Size()])
        return b"" if buf.DataIsNone() else buf.DataAsNumpy().tobytes()
    except (ValueError, IndexError, TypeError, struct.error) as e:  # a length or offset pointing past the end
        raise ArtifactError(f"buffer {index} of the model is corrupt ({e}); re-copy or re-convert the model") from e


def metadata_buffer(data: bytes, name: str, origin: str = "model") -> bytes | None:
    """The bytes of the model's metadata entry `name` (None when absent)."""
    model = _model(data, origin)
    try:
        for i in range(model.MetadataLength()):
            meta = model.Metadata(i)
            if (meta.Name() or b"").decode(errors="replace") == name:
                return _buffer_bytes(model, data, meta.Buffer())
    except ArtifactError:
        raise
    except (ValueError, IndexError, TypeError, struct.error) as e:
        raise ArtifactError(f"{origin} is corrupt: its metadata table cannot be read ({type(e).__name__}: {e}); "
                            "re-copy or re-convert the model") from e
    return None


def read_manifest(data: bytes, origin: str = "model") -> dict[str, Any] | None:
    """The edgekit manifest embedded in a .tflite, or None when the file has none."""
    raw = metadata_buffer(data, TFLITE_METADATA_NAME, origin)
    if raw is None:
        return None
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{origin}: the embedded edgekit manifest is not valid JSON ({e})") from e
    try:
        Manifest.from_dict(manifest)  # every reader (runtime, inspect, bundle) gets a well-typed manifest
    except ArtifactError as e:
        raise ArtifactError(f"{origin}: {e}") from e
    return manifest


def _tensor_info(schema, subgraph, index: int, dtype_names: dict[int, str]) -> TensorInfo:
    t = subgraph.Tensors(index)
    shape = [int(d) for d in t.ShapeAsNumpy()] if t.ShapeLength() else []
    if t.ShapeSignatureLength():
        shape = [None if int(d) < 0 else int(d) for d in t.ShapeSignatureAsNumpy()]
    dtype = dtype_names.get(t.Type(), f"type{t.Type()}").lower()
    scale = zero_point = None
    q = t.Quantization()
    if q is not None and q.ScaleLength() == 1:
        scale, zero_point = float(q.Scale(0)), int(q.ZeroPoint(0)) if q.ZeroPointLength() else 0
    return TensorInfo((t.Name() or b"").decode(), tuple(shape), dtype, scale, zero_point)


def inspect_bytes(data: bytes, origin: str = "model") -> TfliteInfo:
    schema = _schema()
    model = _model(data, origin)
    try:
        op_names = _names(schema.BuiltinOperator)
        dtype_names = _names(schema.TensorType)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            if code == schema.BuiltinOperator.CUSTOM:
                codes.append("CUSTOM:" + (oc.CustomCode() or b"?").decode())
            else:
                codes.append(op_names.get(code, f"BUILTIN_{code}"))
        counts: Counter = Counter()
        for s in range(model.SubgraphsLength()):
            sg = model.Subgraphs(s)
            for o in range(sg.OperatorsLength()):
                counts[codes[sg.Operators(o).OpcodeIndex()]] += 1
        sg0 = model.Subgraphs(0)
        inputs = [_tensor_info(schema, sg0, int(i), dtype_names) for i in sg0.InputsAsNumpy()] if sg0.InputsLength() else []
        outputs = [_tensor_info(schema, sg0, int(i), dtype_names) for i in sg0.OutputsAsNumpy()] if sg0.OutputsLength() else []
        signatures = [(model.SignatureDefs(i).SignatureKey() or b"").decode() for i in range(model.SignatureDefsLength())]
        metadata_names = [(model.Metadata(i).Name() or b"").decode() for i in range(model.MetadataLength())]
        custom = sorted({c.split(":", 1)[1] for c in codes if c.startswith("CUSTOM:")})
        info = TfliteInfo(
            size_bytes=len(data), inputs=inputs, outputs=outputs, op_counts=counts,
            custom_ops=[c for c in custom if not c.startswith("Flex")],
            flex_ops=[c for c in custom if c.startswith("Flex")],
            signatures=signatures, metadata_names=metadata_names, subgraphs=model.SubgraphsLength(),
            schema_version=model.Version(), description=(model.Description() or b"").decode(errors="replace"),
        )
    except ArtifactError:
        raise
    except ImportError as e:  # a broken install, not a corrupt model
        raise import_failure(e) from e
    except Exception as e:  # a structurally broken flatbuffer
        raise ArtifactError(f"{origin} is not a readable .tflite flatbuffer ({type(e).__name__}: {e}); "
                            "the file may be truncated or corrupt") from e
    info.manifest = read_manifest(data, origin)
    return info


def embed_metadata(data: bytes, entries: dict[str, bytes]) -> bytes:
    """Return the model with each entry as a named metadata buffer (replacing same-named ones);
    the graph and weights are unchanged."""
    from ai_edge_litert.tools import flatbuffer_utils

    schema = _schema()
    check_identifier(data, "converter output")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    model.metadata = [m for m in (model.metadata or []) if _decode(m.name) not in entries]
    for name, payload in entries.items():
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(payload, dtype=np.uint8)
        model.buffers.append(buffer)
        meta = schema.MetadataT()
        meta.name = name
        meta.buffer = len(model.buffers) - 1
        model.metadata.append(meta)
    for buffer in model.buffers:
        buffer.__class__ = _aligned_buffer_class(schema)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


BUFFER_ALIGNMENT = 16  # the schema's `data:[ubyte] (force_align: 16)`


def _aligned_buffer_class(schema):
    """BufferT whose data vector honours force_align: 16. The generated Python packs byte vectors
    with alignment 1, which would leave weights unaligned (the converter writes them aligned, and
    mmap-based weight caches expect that)."""

    class AlignedBufferT(schema.BufferT):
        def Pack(self, builder):
            data = None
            if self.data is not None:
                raw = np.ascontiguousarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), BUFFER_ALIGNMENT)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                builder.vectorNumElems = len(raw)
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    return AlignedBufferT


def _decode(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name or "")
