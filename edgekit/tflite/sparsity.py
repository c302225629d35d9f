"""Check a sparse tensor's metadata (TFLite `SparsityParameters`) before LiteRT densifies it.

LiteRT trusts this metadata: `FormatConverter::Populate` (the DENSIFY op, at `allocate_tensors`)
and the sparse FULLY_CONNECTED kernel index the dense output and the values buffer with the
traversal order, block map, segments and indices as stored, without bounds checks. The Python
interpreter does not run TFLite's full model verifier, so a corrupted field is a segfault or a
silent out-of-bounds write. These checks follow `tflite/core/tools/verifier.cc`
(`VerifyAndCountSparseElements`) and are stricter where its reading is ambiguous.

Layout, for a tensor of rank n with k block dimensions: levels 0..n+k-1 are stored in
`traversal_order`; the first n are a permutation of the tensor's dimensions, the last k are the
block dimensions n..n+k-1, and `block_map[j]` names the tensor dimension block j splits. A DENSE
level stores all `dense_size` positions; a SPARSE_CSR level stores, for each position of the levels
above it, a segment `[segments[i], segments[i+1])` of `indices`. The values buffer holds one entry
per position of the last level.
"""
from __future__ import annotations

import numpy as np

from ..errors import ArtifactError

DENSE, SPARSE_CSR = 0, 1
SPARSE_OPS = {"DENSIFY": 0, "FULLY_CONNECTED": 1}  # op -> the input that may be sparse
SPARSE_TYPES = {"FLOAT32": 4, "FLOAT16": 2, "INT8": 1}  # what LiteRT can densify
MAX_ELEMENTS = 2**31 - 1  # LiteRT indexes dense tensors with int


def _vector(schema, dm, kind: int, table) -> np.ndarray | None:
    """The values of an array_segments / array_indices union (Int32/Uint16/Uint8Vector)."""
    if table is None:
        return None
    cls = {1: schema.Int32Vector, 2: schema.Uint16Vector, 3: schema.Uint8Vector}.get(kind)
    if cls is None:
        return None
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    if vec.ValuesLength() == 0:
        return np.zeros(0, np.int64)
    return vec.ValuesAsNumpy().astype(np.int64)


def verify_sparse_tensor(schema, tensor, type_name: str, buffer_size: int, where: str) -> None:
    """Raise ArtifactError unless `tensor`'s sparsity metadata is consistent with its shape and
    its values buffer (`buffer_size` bytes). `where` names the tensor in messages."""
    sp = tensor.Sparsity()

    def bad(what: str) -> ArtifactError:
        return ArtifactError(f"{where} has corrupt sparsity metadata: {what}; re-copy or re-convert the model")

    itemsize = SPARSE_TYPES.get(type_name)
    if itemsize is None:
        raise bad(f"values of type {type_name}, LiteRT densifies {', '.join(SPARSE_TYPES)} only")
    shape = [int(d) for d in tensor.ShapeAsNumpy()] if tensor.ShapeLength() else []
    n = len(shape)
    if n == 0 or any(d <= 0 for d in shape):
        raise bad(f"shape {shape}, expected a positive static shape")
    order = [int(v) for v in sp.TraversalOrderAsNumpy()] if sp.TraversalOrderLength() else []
    total = len(order)
    if total < n or sp.DimMetadataLength() != total:
        raise bad(f"traversal order of {total} levels and {sp.DimMetadataLength()} dimension entries "
                  f"for a rank-{n} tensor, expected equal counts of at least {n}")
    if sorted(order[:n]) != list(range(n)):
        raise bad(f"traversal order {order[:n]} is not a permutation of the tensor's {n} dimensions")
    # verifier.cc reads block sizes by dimension, FormatConverter by level; only this order
    # makes both readings agree (and it is the one converters write).
    if order[n:] != list(range(n, total)):
        raise bad(f"block levels in traversal order {order[n:]}, expected {list(range(n, total))}")
    block_map = [int(v) for v in sp.BlockMapAsNumpy()] if sp.BlockMapLength() else []
    k = total - n
    if len(block_map) != k or any(not 0 <= m < n for m in block_map) or len(set(block_map)) != k:
        raise bad(f"block map {block_map} for {k} block dimension(s), expected distinct dimensions below {n}")
    sizes = shape + [0] * k  # the size of each (expanded) dimension, in dimension order
    for j, m in enumerate(block_map):
        dm = sp.DimMetadata(n + j)
        block = dm.DenseSize()
        if dm.Format() != DENSE or block <= 0 or shape[m] % block:
            raise bad(f"block {j} of size {block} on dimension {m} of size {shape[m]}, expected a dense block "
                      "that divides it")
        sizes[n + j] = block
        sizes[m] = shape[m] // block
    count = 1  # positions stored so far (the product of the levels above)
    for level in range(total):
        dm = sp.DimMetadata(level)
        size = sizes[order[level]]
        if dm.Format() == DENSE:
            if dm.DenseSize() != size:
                raise bad(f"level {level} is dense with size {dm.DenseSize()}, its dimension has {size}")
            count *= size
        elif dm.Format() == SPARSE_CSR:
            segments = _vector(schema, dm, dm.ArraySegmentsType(), dm.ArraySegments())
            indices = _vector(schema, dm, dm.ArrayIndicesType(), dm.ArrayIndices())
            if segments is None or indices is None:
                raise bad(f"level {level} is sparse without array segments and indices")
            if len(segments) != count + 1 or segments[0] != 0:
                raise bad(f"level {level} has {len(segments)} array segments starting at "
                          f"{segments[0] if len(segments) else '-'}, expected {count + 1} starting at 0")
            if np.any(np.diff(segments) < 0):
                raise bad(f"level {level} array segments decrease")
            if segments[-1] != len(indices):
                raise bad(f"level {level} segments end at {segments[-1]}, its array indices have {len(indices)}")
            if len(indices) and (indices.min() < 0 or indices.max() >= size):
                raise bad(f"level {level} array indices span {indices.min()}..{indices.max()}, expected 0..{size - 1}")
            count = len(indices)
        else:
            raise bad(f"level {level} has format {dm.Format()}, expected DENSE (0) or SPARSE_CSR (1)")
        if count > MAX_ELEMENTS:
            raise bad(f"{count} stored positions, more than LiteRT can index")
    if buffer_size != count * itemsize:
        raise bad(f"{count} stored values of {itemsize} bytes need {count * itemsize} bytes, "
                  f"its buffer has {buffer_size}")
