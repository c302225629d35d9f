"""The one walker of `.tflite` flatbuffers: schema access, the root table, enum and opcode names,
item sizes, buffer bytes and metadata buffers. Everything else in edgekit.tflite (integrity, graph,
weights, metadata, info) reads the file through these functions, so a bounds check or a quirk of
the schema (buffers stored after the flatbuffer, deprecated opcode fields) is handled once.

Uses the TFLite schema that ships inside `ai_edge_litert` (generated Python), so it works
on any third-party model — including ones whose custom ops no runtime here has — and
never needs TensorFlow.
"""
from __future__ import annotations

import struct
from pathlib import Path

from ..errors import ArtifactError, MissingDependencyError

TFLITE_IDENTIFIER = b"TFL3"  # the flatbuffer file identifier, bytes 4-8 of every .tflite

# Bytes per element by dtype name (numpy spelling). int4 packs two per byte: the graph's costing
# uses 0.5; checks that need whole bytes use `whole_itemsize`, which leaves sub-byte types out.
ITEMSIZE = {"float32": 4, "float16": 2, "int32": 4, "uint8": 1, "int64": 8, "bool": 1, "int16": 2, "int8": 1,
            "float64": 8, "uint32": 4, "uint16": 2, "uint64": 8, "int4": 0.5}


def whole_itemsize(dtype: str) -> int:
    """Bytes per element for byte-sized types, 0 for sub-byte or unknown ones."""
    size = ITEMSIZE.get(dtype, 0)
    return size if isinstance(size, int) else 0


def schema():
    try:
        from ai_edge_litert import schema_py_generated
    except ImportError as e:
        raise MissingDependencyError("reading .tflite files needs ai-edge-litert: pip install ai-edge-litert") from e
    return schema_py_generated


def enum_names(enum_cls) -> dict[int, str]:
    """value -> name of a generated schema enum (BuiltinOperator, TensorType...)."""
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def dtype_names() -> dict[int, str]:
    """TensorType value -> numpy-style dtype name (float32, int8...)."""
    return {v: k.lower() for v, k in enum_names(schema().TensorType).items()}


def opcode_names(model, unknown: str = "") -> list[str]:
    """The builtin op name of each opcode index. Both code fields are read: schema v3a moved
    builtin codes above 127 out of the deprecated int8 field."""
    names = enum_names(schema().BuiltinOperator)
    return [names.get(max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode()),
                      unknown) for i in range(model.OperatorCodesLength())]


def check_identifier(data: bytes, origin: str) -> None:
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ArtifactError(f"expected a .tflite flatbuffer (identifier TFL3 at byte 4), got {origin} "
                            f"({len(data)} bytes, starts {data[:8]!r}); re-export the model or check the path")


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"expected a .tflite file, got {str(path)!r}, which is not a file")
    return path.read_bytes()


def root(data: bytes, origin: str):
    """The flatbuffer's Model table, after the identifier check."""
    check_identifier(data, origin)
    generated = schema()
    try:
        return generated.Model.GetRootAs(data, 0)
    except Exception as e:  # flatbuffers raises struct/index errors on garbage
        raise ArtifactError(f"{origin} is not a readable .tflite flatbuffer: {e}") from e


def buffer_bytes(model, data: bytes, index: int) -> bytes:
    try:
        buf = model.Buffers(index)
        if buf.Offset() > 1:  # large models keep buffer data after the flatbuffer
            return bytes(data[buf.Offset(): buf.Offset() + buf.Size()])
        return b"" if buf.DataIsNone() else buf.DataAsNumpy().tobytes()
    except (ValueError, IndexError, TypeError, struct.error) as e:  # a length or offset pointing past the end
        raise ArtifactError(f"buffer {index} of the model is corrupt ({e}); re-copy or re-convert the model") from e


def is_constant(model, buffer_index: int) -> bool:
    """Whether a tensor's buffer holds data (weights, biases, constants) rather than nothing."""
    buf = model.Buffers(buffer_index)
    return buf.Offset() > 1 or (not buf.DataIsNone() and buf.DataLength() > 0)


def metadata_buffer(data: bytes, name: str, origin: str = "model") -> bytes | None:
    """The bytes of the model's metadata entry `name` (None when absent)."""
    model = root(data, origin)
    try:
        for i in range(model.MetadataLength()):
            meta = model.Metadata(i)
            if (meta.Name() or b"").decode(errors="replace") == name:
                return buffer_bytes(model, data, meta.Buffer())
    except ArtifactError:
        raise
    except (ValueError, IndexError, TypeError, struct.error) as e:
        raise ArtifactError(f"{origin} is corrupt: its metadata table cannot be read ({type(e).__name__}: {e}); "
                            "re-copy or re-convert the model") from e
    return None
