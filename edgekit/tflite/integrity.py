"""Check a .tflite's structure before the native interpreter sees it.

LiteRT runs the flatbuffer verifier itself, which rejects truncation and broken offsets, but
a verifier only checks that tables are well-formed, not that indices point at things that
exist or that a weight buffer holds as many bytes as its tensor needs. A native kernel
reading past a short buffer is a segfault, not an exception, so we check those here.
"""
from __future__ import annotations

import numpy as np

from .._deps import import_failure
from ..errors import ArtifactError
from .reader import enum_names, opcode_names, root, schema, whole_itemsize
from .sparsity import MAX_ELEMENTS, SPARSE_OPS, verify_sparse_tensor


# Inputs that may be absent (-1) per builtin op. Kernels dereference the others unchecked, so a -1
# there is a segfault. Ops not listed here (LSTMs, custom ops...) keep the runtime's own checks.
_OPTIONAL_INPUTS: dict[str, set[int]] = {
    **{op: {2} for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "CONV_3D")},
    **{op: {3} for op in ("TRANSPOSE_CONV", "CONV_3D_TRANSPOSE")},
    "RESHAPE": {1},
    **{op: set() for op in (
        "ADD", "SUB", "MUL", "DIV", "AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION", "SOFTMAX", "LOGISTIC",
        "TANH", "RELU", "RELU6", "RELU_N1_TO_1", "HARD_SWISH", "LEAKY_RELU", "PRELU", "DEQUANTIZE", "QUANTIZE",
        "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "PAD", "PADV2", "TRANSPOSE", "STRIDED_SLICE", "SLICE",
        "SQUEEZE", "EXPAND_DIMS", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "DENSIFY", "GATHER", "SPLIT",
        "SPLIT_V", "PACK", "UNPACK", "MAXIMUM", "MINIMUM", "BATCH_MATMUL", "L2_NORMALIZATION", "EXP", "LOG",
        "SQRT", "RSQRT", "SQUARE", "ABS", "NEG", "CAST", "ARG_MAX", "ARG_MIN", "TILE", "BROADCAST_TO", "SHAPE",
        "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "GELU", "POW", "SQUARED_DIFFERENCE", "EQUAL", "LESS", "GREATER",
        "SELECT", "SELECT_V2", "MIRROR_PAD", "ELU", "LOG_SOFTMAX", "FLOOR", "CEIL", "ROUND")},
}


# (min, max) input count per builtin op, as the converter writes them. The XNNPACK delegate reads
# node inputs by position before any kernel checks their number, so a short list is a segfault.
_ARITY: dict[str, tuple[int, int]] = {
    **{op: (3, 3) for op in ("CONV_2D", "DEPTHWISE_CONV_2D")},  # bias slot present (-1 when none)
    "FULLY_CONNECTED": (2, 3), "TRANSPOSE_CONV": (3, 4), "STRIDED_SLICE": (4, 4), "SLICE": (3, 3), "PADV2": (3, 3),
    **{op: (2, 2) for op in ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "MEAN", "SUM", "REDUCE_MAX",
                             "REDUCE_MIN", "PAD", "TRANSPOSE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "GATHER",
                             "PRELU", "SQUARED_DIFFERENCE", "BATCH_MATMUL", "MIRROR_PAD")},
    **{op: (1, 1) for op in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX", "LOGISTIC", "TANH", "RELU", "RELU6",
                             "HARD_SWISH", "DEQUANTIZE", "QUANTIZE", "DENSIFY", "L2_NORMALIZATION", "LOG_SOFTMAX")},
    "RESHAPE": (1, 2),
}


def verify_tflite(data: bytes, origin: str) -> None:
    model = root(data, origin)
    try:
        _verify(schema(), model, data, origin)
        _verify_associated_files(data, origin)
    except ArtifactError:
        raise
    except ImportError as e:  # a broken install, not a corrupt model
        raise import_failure(e) from e
    except Exception as e:  # out-of-bounds reads raise struct.error / IndexError
        raise ArtifactError(f"{origin} is corrupt: its flatbuffer cannot be walked ({type(e).__name__}: {e}); "
                            "re-copy or re-convert the model") from e


def _verify_associated_files(data: bytes, origin: str) -> None:
    """Files the TFLite Metadata names (labels...) travel as a zip appended to the flatbuffer;
    a copy cut short loses that zip first, with the model itself still intact."""
    import zipfile

    from .metadata import associated_file_names, packed_files, read

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


def _verify(generated, model, data: bytes, origin: str) -> None:
    type_names = enum_names(generated.TensorType)
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
            size = 0 if buf.DataIsNone() else buf.DataLength()
            # the vector's length prefix is a field like any other: a corrupt one claims bytes past the end
            if size and buf._tab.Vector(buf._tab.Offset(4)) + size > len(data):
                raise ArtifactError(f"{origin} is corrupt: buffer {b} claims {size} bytes past the end of the file; "
                                    "re-copy or re-convert the model")
            buffer_sizes.append(size)
    codes = opcode_names(model)
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        n_tensors = sg.TensorsLength()
        sparse = set()
        for t in range(n_tensors):
            tensor = sg.Tensors(t)
            b = tensor.Buffer()
            if b >= n_buffers:
                raise ArtifactError(f"{origin} is corrupt: tensor {t} points at buffer {b} of {n_buffers}")
            _check_shape(tensor, t, origin)
            size = buffer_sizes[b]
            itemsize = whole_itemsize(type_names.get(tensor.Type(), "").lower())
            if tensor.Sparsity() is not None:
                verify_sparse_tensor(generated, tensor, type_names.get(tensor.Type(), str(tensor.Type())), size,
                                     f"{origin}: tensor {t} ({(tensor.Name() or b'').decode(errors='replace')})")
                sparse.add(t)
            # sub-byte types have no whole itemsize
            elif size and itemsize and tensor.ShapeLength():
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
        produced: set[int] = set()
        graph_inputs = {sg.Inputs(i) for i in range(sg.InputsLength())}
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            if op.OpcodeIndex() >= n_codes:
                raise ArtifactError(f"{origin} is corrupt: operator {o} uses opcode {op.OpcodeIndex()} of {n_codes}")
            name = codes[op.OpcodeIndex()]
            low, high = _ARITY.get(name, (0, 1 << 30))
            if not low <= op.InputsLength() <= high:
                raise ArtifactError(f"{origin} is corrupt: operator {o} ({name}) has {op.InputsLength()} inputs, "
                                    f"expected {low}{'' if low == high else f' to {high}'}; re-copy or re-convert the model")
            for i in range(op.InputsLength()):
                if not -1 <= op.Inputs(i) < n_tensors:
                    raise ArtifactError(f"{origin} is corrupt: operator {o} input {i} is tensor {op.Inputs(i)} "
                                        f"of {n_tensors}")
                if op.Inputs(i) == -1 and name in _OPTIONAL_INPUTS and i not in _OPTIONAL_INPUTS[name]:
                    raise ArtifactError(f"{origin} is corrupt: operator {o} ({name}) has no tensor for its required "
                                        f"input {i}; re-copy or re-convert the model")
            for i in range(op.OutputsLength()):
                t = op.Outputs(i)
                if not 0 <= t < n_tensors:
                    raise ArtifactError(f"{origin} is corrupt: operator {o} output {i} is tensor {t} of {n_tensors}")
                # a kernel writes its outputs: into a constant, that is the read-only mapped file
                # (a segfault); into another op's output or a graph input, past a buffer sized for
                # a different shape
                if buffer_sizes[sg.Tensors(t).Buffer()] or t in produced or t in graph_inputs:
                    raise ArtifactError(f"{origin} is corrupt: operator {o} ({name}) writes tensor {t}, which is "
                                        f"{'a constant' if buffer_sizes[sg.Tensors(t).Buffer()] else 'written elsewhere'}; "
                                        "re-copy or re-convert the model")
                produced.add(t)
            _check_sparse_use(sg, op, o, name, sparse, origin)
            if name in ("DEQUANTIZE", "QUANTIZE") and op.InputsLength() == 1 and op.OutputsLength() >= 1:
                # XNNPACK unpacks constant weights through these at load, sized by the output's
                # shape and reading the input's buffer: the two must agree
                src, dst = sg.Tensors(op.Inputs(0)), sg.Tensors(op.Outputs(0))
                if list(src.ShapeAsNumpy() if src.ShapeLength() else []) != list(
                        dst.ShapeAsNumpy() if dst.ShapeLength() else []):
                    raise ArtifactError(f"{origin} is corrupt: {name} operator {o} changes shape from tensor "
                                        f"{op.Inputs(0)} to tensor {op.Outputs(0)}; re-copy or re-convert the model")


def _check_shape(tensor, index: int, origin: str) -> None:
    """Negative or absurd dimensions make LiteRT allocate gigabytes or index with overflowed ints."""
    shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    elements = 1
    for d in shape:
        elements *= d
    if any(d < 0 for d in shape) or elements > MAX_ELEMENTS:
        raise ArtifactError(f"{origin} is corrupt: tensor {index} has shape {shape}, expected non-negative "
                            f"dimensions and at most {MAX_ELEMENTS} elements; re-copy or re-convert the model")
    if tensor.ShapeSignatureLength():
        signature = [int(d) for d in tensor.ShapeSignatureAsNumpy()]
        if len(signature) != len(shape) or any(d < -1 or (d != -1 and d != s) for d, s in zip(signature, shape)):
            raise ArtifactError(f"{origin} is corrupt: tensor {index} has shape signature {signature} for shape "
                                f"{shape}, expected the same dimensions with -1 where dynamic; re-copy or re-convert "
                                "the model")


def _check_sparse_use(sg, op, index: int, name: str, sparse: set, origin: str) -> None:
    """Only DENSIFY and the sparse FULLY_CONNECTED kernel read compressed values; any other op would
    read them as a dense tensor, past the end of the buffer. DENSIFY writes a dense output of the
    sparse input's shape, so that output must have exactly that shape and type."""
    for i in range(op.InputsLength()):
        t = op.Inputs(i)
        if t in sparse and SPARSE_OPS.get(name) != i:
            raise ArtifactError(f"{origin} is corrupt: operator {index} ({name or 'unknown'}) takes sparse tensor {t} "
                                f"as input {i}; only DENSIFY and FULLY_CONNECTED weights may be sparse")
    if name == "DENSIFY" and op.InputsLength() >= 1 and op.OutputsLength() >= 1 and op.Inputs(0) >= 0:
        src, dst = sg.Tensors(op.Inputs(0)), sg.Tensors(op.Outputs(0))
        src_shape = list(src.ShapeAsNumpy()) if src.ShapeLength() else []
        dst_shape = list(dst.ShapeAsNumpy()) if dst.ShapeLength() else []
        if src.Sparsity() is None or src_shape != dst_shape or src.Type() != dst.Type():
            raise ArtifactError(f"{origin} is corrupt: DENSIFY operator {index} maps tensor {op.Inputs(0)} "
                                f"(shape {src_shape}) to tensor {op.Outputs(0)} (shape {dst_shape}); expected a sparse "
                                "input and an output of the same shape and type")
