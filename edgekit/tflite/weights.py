"""The .tflite half of edgekit.weights: the weights digest (every buffer a tensor uses, in buffer
order) and the non-finite check (NaN in any float constant, Inf in convolution/matmul weights)."""
from __future__ import annotations

import hashlib

import numpy as np

from ..errors import ArtifactError
from .reader import buffer_bytes, enum_names, opcode_names, root, schema

WEIGHT_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "TRANSPOSE_CONV": (1, 3),
                 "CONV_3D": (1, 2)}
_PASS_THROUGH = ("DEQUANTIZE", "DENSIFY")  # fp16 and sparse weights reach the kernel through these
_FLOATS = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64}


def tflite_weights_sha256(data: bytes) -> str:
    model = root(data, "model")
    used = sorted({model.Subgraphs(s).Tensors(t).Buffer() for s in range(model.SubgraphsLength())
                   for t in range(model.Subgraphs(s).TensorsLength())})
    h = hashlib.sha256()
    for b in used:
        if 0 < b < model.BuffersLength():  # buffer 0 is the schema's empty sentinel
            h.update(buffer_bytes(model, data, b))
    return h.hexdigest()


def check_tflite_finite(data: bytes, origin: str) -> None:
    """NaN in any float constant; Inf in convolution / fully-connected weights and biases."""
    model = root(data, origin)
    type_names = enum_names(schema().TensorType)
    codes = opcode_names(model)
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        weights = _weight_tensors(sg, codes)
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            dtype = _FLOATS.get(type_names.get(tensor.Type(), ""))
            if dtype is None or tensor.Sparsity() is not None or tensor.Buffer() == 0:
                continue
            raw = buffer_bytes(model, data, tensor.Buffer())
            if not raw or len(raw) % np.dtype(dtype).itemsize:
                continue
            values = np.frombuffer(raw, dtype)
            bad = np.isnan(values) if t not in weights else ~np.isfinite(values)
            if bad.any():
                name = (tensor.Name() or b"").decode(errors="replace")
                raise ArtifactError(f"{origin}: weight tensor {t} ({name}) holds {int(bad.sum())} "
                                    f"{'NaN' if np.isnan(values).any() else 'infinite'} value(s) of {values.size}; "
                                    "the file is damaged or the model diverged in training; re-copy or re-convert it")


def _weight_tensors(sg, codes: list[str]) -> set[int]:
    """Tensors that are (or, through DEQUANTIZE/DENSIFY, become) conv/FC weights or biases."""
    producers = {}
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        name = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else ""
        if name in _PASS_THROUGH and op.InputsLength() and op.OutputsLength():
            producers[op.Outputs(0)] = op.Inputs(0)
    weights = set()
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        name = codes[op.OpcodeIndex()] if op.OpcodeIndex() < len(codes) else ""
        for i in WEIGHT_INPUTS.get(name, ()):
            t = op.Inputs(i) if i < op.InputsLength() else -1
            for _ in range(3):  # DENSIFY -> DEQUANTIZE -> weights at most
                if t < 0:
                    break
                weights.add(t)
                t = producers.get(t, -1)
    return weights
