"""Weights that load but are wrong: a digest recorded at conversion, and non-finite values.

A flipped byte in a weight blob passes every structural check (the file is well-formed, the
runtime runs it) and predicts wrong numbers; issue #15 found 7 of 59 Core ML corruptions that
loaded silently. The converter records a sha256 of the weights in the manifest
(`weights_sha256`); loading an edgekit artifact recomputes it. Files from elsewhere have no
digest, so NaN (and Inf in convolution/matmul weights, where it is never meaningful) is refused
by name instead.

What the digest covers, per format, so it survives the metadata being rewritten:
- .tflite: the bytes of every buffer a tensor uses, in buffer order (metadata buffers, where the
  manifest itself lives, are not tensor buffers).
- .mlpackage: every `*.bin` under `Data/` (the weight blob files), by relative path.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .errors import ArtifactError

WEIGHT_INPUTS = {"CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2), "TRANSPOSE_CONV": (1, 3),
                 "CONV_3D": (1, 2)}
_PASS_THROUGH = ("DEQUANTIZE", "DENSIFY")  # fp16 and sparse weights reach the kernel through these
_FLOATS = {"FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64}


def tflite_weights_sha256(data: bytes) -> str:
    from .tflite_file import _buffer_bytes, _model

    model = _model(data, "model")
    used = sorted({model.Subgraphs(s).Tensors(t).Buffer() for s in range(model.SubgraphsLength())
                   for t in range(model.Subgraphs(s).TensorsLength())})
    h = hashlib.sha256()
    for b in used:
        if 0 < b < model.BuffersLength():  # buffer 0 is the schema's empty sentinel
            h.update(_buffer_bytes(model, data, b))
    return h.hexdigest()


def coreml_weights_sha256(package: Path) -> str:
    h = hashlib.sha256()
    data = package / "Data"
    for f in sorted(p for p in data.rglob("*.bin") if p.is_file()):
        h.update(str(f.relative_to(data)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_digest(recorded: str | None, actual: str, origin: str) -> None:
    if recorded and recorded != actual:
        raise ArtifactError(f"{origin}: its weights do not match the sha256 recorded at conversion "
                            f"({recorded[:12]}..., got {actual[:12]}...): the file was damaged or altered after "
                            "edgekit wrote it; re-copy or re-convert it")


def check_tflite_finite(data: bytes, origin: str) -> None:
    """NaN in any float constant; Inf in convolution / fully-connected weights and biases."""
    from ai_edge_litert import schema_py_generated as schema

    from .tflite_file import _buffer_bytes, _model

    model = _model(data, origin)
    type_names = {v: k for k, v in vars(schema.TensorType).items() if isinstance(v, int)}
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int)}
    codes = [op_names.get(max(model.OperatorCodes(i).BuiltinCode(), model.OperatorCodes(i).DeprecatedBuiltinCode()), "")
             for i in range(model.OperatorCodesLength())]
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        weights = _weight_tensors(sg, codes)
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            dtype = _FLOATS.get(type_names.get(tensor.Type(), ""))
            if dtype is None or tensor.Sparsity() is not None or tensor.Buffer() == 0:
                continue
            raw = _buffer_bytes(model, data, tensor.Buffer())
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


def check_constants_finite(constants: dict, origin: str) -> None:
    """Core ML program constants (after decompression): NaN anywhere, Inf in multi-dimensional
    ones (weights; a scalar -inf can be a legitimate clamp bound)."""
    for name, value in constants.items():
        array = np.asarray(value) if isinstance(value, np.ndarray) else None
        if array is None or array.dtype.kind != "f":
            continue
        bad = np.isnan(array) | (np.isinf(array) if array.ndim >= 2 else False)
        if np.any(bad):
            raise ArtifactError(f"{origin}: constant {name!r} holds {int(np.sum(bad))} NaN/infinite value(s) of "
                                f"{array.size}; the package is damaged, re-copy or re-convert it")
