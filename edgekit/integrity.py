"""Check a .tflite's structure before the native interpreter sees it.

LiteRT runs the flatbuffer verifier itself, which rejects truncation and broken offsets, but
a verifier only checks that tables are well-formed, not that indices point at things that
exist or that a weight buffer holds as many bytes as its tensor needs. A native kernel
reading past a short buffer is a segfault, not an exception, so we check those here.
"""
from __future__ import annotations

import numpy as np

from .errors import ArtifactError
from .tflite_file import _model, _schema

_ITEMSIZE = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
             "INT8": 1, "FLOAT64": 8, "UINT64": 8, "UINT32": 4, "UINT16": 2}


def verify_tflite(data: bytes, origin: str) -> None:
    schema = _schema()
    model = _model(data, origin)
    try:
        _verify(schema, model, data, origin)
        _verify_associated_files(data, origin)
    except ArtifactError:
        raise
    except Exception as e:  # out-of-bounds reads raise struct.error / IndexError
        raise ArtifactError(f"{origin} is corrupt: its flatbuffer cannot be walked ({type(e).__name__}: {e}); "
                            "re-copy or re-convert the model") from e


def _verify_associated_files(data: bytes, origin: str) -> None:
    """Files the TFLite Metadata names (labels...) travel as a zip appended to the flatbuffer;
    a copy cut short loses that zip first, with the model itself still intact."""
    import zipfile

    from .tflite_metadata.writer import associated_file_names, packed_files, read

    metadata = read(data)
    names = associated_file_names(metadata) if metadata is not None else set()
    if not names:
        return
    try:
        packed = packed_files(data, verify=True)
    except zipfile.BadZipFile as e:
        raise ArtifactError(f"{origin} is corrupt or truncated: its packed associated files fail their checks "
                            f"({e}); re-copy the file") from e
    missing = sorted(names - set(packed))
    if missing:
        raise ArtifactError(f"{origin} is truncated or stripped: its metadata names associated file(s) "
                            f"{', '.join(missing)} that are not packed in it; re-copy the file")


def _verify(schema, model, data: bytes, origin: str) -> None:
    type_names = {v: k for k, v in vars(schema.TensorType).items() if isinstance(v, int)}
    n_buffers, n_codes = model.BuffersLength(), model.OperatorCodesLength()
    if model.SubgraphsLength() < 1:
        raise ArtifactError(f"{origin} is corrupt: it has no subgraph")
    buffer_sizes = []
    for b in range(n_buffers):
        buf = model.Buffers(b)
        if buf.Offset() > 1:
            if buf.Offset() + buf.Size() > len(data):
                raise ArtifactError(f"{origin} is truncated: buffer {b} ends at byte {buf.Offset() + buf.Size()}, "
                                    f"the file has {len(data)}")
            buffer_sizes.append(buf.Size())
        else:
            buffer_sizes.append(0 if buf.DataIsNone() else buf.DataLength())
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        n_tensors = sg.TensorsLength()
        for t in range(n_tensors):
            tensor = sg.Tensors(t)
            b = tensor.Buffer()
            if b >= n_buffers:
                raise ArtifactError(f"{origin} is corrupt: tensor {t} points at buffer {b} of {n_buffers}")
            size = buffer_sizes[b]
            itemsize = _ITEMSIZE.get(type_names.get(tensor.Type(), ""), 0)
            # sparse tensors hold compressed values; sub-byte types are not in _ITEMSIZE
            if size and itemsize and tensor.ShapeLength() and tensor.Sparsity() is None:
                shape = tensor.ShapeAsNumpy()
                if np.all(shape >= 0):
                    needed = int(np.prod(shape.astype(np.int64))) * itemsize
                    if size < needed:
                        raise ArtifactError(f"{origin} is corrupt: tensor {t} needs {needed} bytes of weights, "
                                            f"its buffer has {size}")
        for kind, length, getter in (("input", sg.InputsLength(), sg.Inputs), ("output", sg.OutputsLength(), sg.Outputs)):
            for i in range(length):
                if not 0 <= getter(i) < n_tensors:
                    raise ArtifactError(f"{origin} is corrupt: subgraph {s} {kind} {i} names tensor {getter(i)} "
                                        f"of {n_tensors}")
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            if op.OpcodeIndex() >= n_codes:
                raise ArtifactError(f"{origin} is corrupt: operator {o} uses opcode {op.OpcodeIndex()} of {n_codes}")
            for i in range(op.InputsLength()):
                if not -1 <= op.Inputs(i) < n_tensors:
                    raise ArtifactError(f"{origin} is corrupt: operator {o} input {i} is tensor {op.Inputs(i)} "
                                        f"of {n_tensors}")
            for i in range(op.OutputsLength()):
                if not 0 <= op.Outputs(i) < n_tensors:
                    raise ArtifactError(f"{origin} is corrupt: operator {o} output {i} is tensor {op.Outputs(i)} "
                                        f"of {n_tensors}")
