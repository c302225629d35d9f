"""Open Inference Protocol (KServe v2) tensors <-> numpy arrays.

Tensors cross the wire as real values, exactly as `Model.predict` takes them: an int8-quantized
model still advertises FP32 inputs, and the server quantizes. Shapes use -1 for dimensions the
model lets vary (the batch, usually).
"""
from __future__ import annotations

import math
import reprlib
from typing import Any

import numpy as np

from ..manifest import TensorInfo

DATATYPES = {"FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8, "UINT8": np.uint8,
             "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_}
DATATYPE_OF = {np.dtype(v).name: k for k, v in DATATYPES.items()}


class ProtocolError(ValueError):
    """A request that does not fit the protocol or the model: a 400 with this message."""


_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlevel = 60, 60, 3


def show(value: Any) -> str:
    """A client's value in an error message: short and shallow, whatever was sent."""
    return _short.repr(value)


def check_request(body: Any) -> None:
    """The request's structure, before anything is looked up or converted: every value a later
    step hashes, indexes or reads a key of has the type the protocol gives it (v2 inference
    request: id string, parameters objects, inputs/outputs lists of objects with string names)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise ProtocolError('expected a JSON object with an "inputs" list')
    _check_type(body, "id", str, "request")
    _check_type(body, "parameters", dict, "request")
    for i, tensor in enumerate(body["inputs"]):
        if not isinstance(tensor, dict):
            raise ProtocolError(f"inputs[{i}]: expected an object, got {show(tensor)}")
        for key, kind in (("name", str), ("datatype", str), ("shape", list), ("parameters", dict)):
            _check_type(tensor, key, kind, f"inputs[{i}]")
    outputs = body.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise ProtocolError(f'"outputs" must be a list of {{"name": ...}}, got {show(outputs)}')
        for i, output in enumerate(outputs):
            _check_type(output, "name", str, f"outputs[{i}]")
            _check_type(output, "parameters", dict, f"outputs[{i}]")


def _check_type(obj: dict, key: str, kind: type, where: str) -> None:
    if key in obj and not isinstance(obj[key], kind):
        expected = {str: "a string", dict: "an object", list: "a list"}[kind]
        raise ProtocolError(f'{where} "{key}": expected {expected}, got {show(obj[key])}')


def wire_datatype(info: TensorInfo) -> str:
    """What clients send/receive for a tensor: real values (FP32) for quantized tensors."""
    if info.quantized:
        return "FP32"
    return DATATYPE_OF.get(info.dtype, "FP32")


def tensor_metadata(info: TensorInfo) -> dict:
    return {"name": info.name, "datatype": wire_datatype(info), "shape": [-1 if d is None else d for d in info.shape]}


def decode_inputs(body: Any, inputs: list[TensorInfo]) -> list[np.ndarray]:
    check_request(body)
    given = {}
    for i, tensor in enumerate(body["inputs"]):
        if not isinstance(tensor, dict) or not all(k in tensor for k in ("name", "shape", "datatype", "data")):
            raise ProtocolError(f'inputs[{i}] needs "name", "shape", "datatype" and "data"')
        given[tensor["name"]] = tensor
    missing = [t.name for t in inputs if t.name not in given]
    if missing:
        raise ProtocolError(f"missing input(s) {missing}; the model takes {[t.name for t in inputs]}, "
                            f"got {show(list(given))}")
    return [_decode_one(given[t.name], t) for t in inputs]


def _decode_one(tensor: dict, info: TensorInfo) -> np.ndarray:
    expected_type = wire_datatype(info)
    if tensor["datatype"] != expected_type:
        raise ProtocolError(f"input {info.name!r}: expected datatype {expected_type}, got {show(tensor['datatype'])}")
    shape = tensor["shape"]
    # bool is an int to Python: [true] would pass as a dimension of 1
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"input {info.name!r}: shape must be a list of non-negative integers, got {show(shape)}")
    want = [-1 if d is None else d for d in info.shape]
    if len(shape) != len(want) or any(w != -1 and w != g for w, g in zip(want, shape)):
        raise ProtocolError(f"input {info.name!r}: expected shape {want}, got {show(shape)}")
    count = math.prod(shape)  # exact: np.prod overflows int64 silently on hostile shapes
    data = tensor["data"]
    if isinstance(data, list) and data and not isinstance(data[0], list) and len(data) != count:
        # a flat list of the wrong length is refused before numpy builds an array of it
        raise ProtocolError(f"input {info.name!r}: shape {shape} needs {count} values, got {len(data)}")
    try:
        data = np.asarray(data, dtype=DATATYPES[expected_type])
    except (TypeError, ValueError, OverflowError) as e:
        raise ProtocolError(f"input {info.name!r}: data must be {expected_type} numbers ({show(str(e))})") from None
    if data.size != count:
        raise ProtocolError(f"input {info.name!r}: shape {shape} needs {count} values, got {data.size}")
    return data.reshape(shape)


def requested_outputs(body: dict, names: list[str]) -> list[str] | None:
    outputs = body.get("outputs")
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise ProtocolError('"outputs" must be a list of {"name": ...}')
    unknown = [o["name"] for o in outputs if o["name"] not in names]
    if unknown:
        raise ProtocolError(f"unknown output(s) {show(unknown)}; the model has {names}")
    return [o["name"] for o in outputs]


def binary_outputs(body: dict, names: list[str]) -> set[str]:
    """Outputs to answer in the binary extension: an output's own `binary_data` parameter, else the
    request's `binary_data_output` (default false). tritonclient asks per output, and for all of
    them with `binary_data_output` when it names none."""
    default = body.get("parameters", {}).get("binary_data_output", False)
    if not isinstance(default, bool):
        raise ProtocolError(f'"binary_data_output" must be true or false, got {show(default)}')
    chosen = {n for n in names if default}
    for output in body.get("outputs") or []:
        params = output.get("parameters", {})
        if "classification" in params:  # Triton's top-k as strings: not offered; /classify does top-k
            raise ProtocolError(f"output {show(output['name'])}: the classification extension is not supported; "
                                "use POST /v2/models/{name}/classify for top-k labels")
        flag = params.get("binary_data", default)
        if not isinstance(flag, bool):
            raise ProtocolError(f"output {show(output['name'])}: binary_data must be true or false, got {show(flag)}")
        (chosen.add if flag else chosen.discard)(output["name"])
    return chosen


def model_config(name: str, inputs: list[TensorInfo], outputs: list[TensorInfo], platform: str) -> dict:
    """Triton's model configuration (GET /v2/models/{name}/config), which tritonclient reads.
    max_batch_size 0 means the dims are the full shapes, batch dimension (-1) included."""
    def tensors(infos):
        return [{"name": t.name, "data_type": "TYPE_" + wire_datatype(t),
                 "dims": [-1 if d is None else d for d in t.shape]} for t in infos]
    return {"name": name, "platform": platform, "backend": "edgekit", "max_batch_size": 0,
            "input": tensors(inputs), "output": tensors(outputs)}
