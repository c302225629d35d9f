"""ONNX sources (.onnx). The reference outputs come from onnxruntime, the runtime the model
was published for; conversion goes through onnx2torch into the PyTorch path, so an ONNX
model gets every recipe and both formats the PyTorch route has.

Why not onnx2tf: it pins tensorflow 2.19, numpy 1.26, protobuf 4 and ai-edge-litert 2.1, none of
which can share an environment with edgekit[convert]. onnx2torch needs three preparations,
each for a reason measured on real files (see `_prepare`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit._deps import require
from edgekit.errors import InputError, first_line
from edgekit.manifest import TensorInfo

from .base import TORCH, SourceModel, fixed_batch, image_layout

# onnx TensorProto element types edgekit feeds
_ELEM_TYPES = {1: "float32", 6: "int32", 7: "int64"}


def load(path: Path, kind: str, options=None) -> SourceModel:
    onnx = require("onnx", "converting ONNX models")
    ort = require("onnxruntime", "ONNX reference outputs")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:
        raise InputError(f"expected a valid ONNX model in {path.name!r}, onnx could not read it "
                         f"({type(e).__name__}: {first_line(str(e), 200)}); re-export it with torch.onnx.export") from e
    inputs = _inputs(model, getattr(options, "input_shapes", None), path)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:
        raise InputError(f"onnxruntime cannot run {path.name!r} ({type(e).__name__}: {first_line(str(e), 200)})") from e
    output_names = [o.name for o in session.get_outputs()]
    feed_names = [i.name for i in session.get_inputs()]
    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(o, np.float32) for o in session.run(output_names, dict(zip(feed_names, arrays)))]

    module = _to_torch(_prepare(model, inputs), inputs, path)
    safe_outputs = [n if n.isidentifier() else f"output_{i}" for i, n in enumerate(output_names)]
    return SourceModel(path, kind, TORCH, inputs, safe_outputs, run, layout=image_layout(inputs[0].shape),
                       torch_module=module, max_batch=fixed_batch(inputs))


def _inputs(model, declared, path: Path) -> list[TensorInfo]:
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if declared and len(declared) != len(graph_inputs):
        raise InputError(f"--input-shape gives {len(declared)} inputs, {path.name!r} has {len(graph_inputs)} "
                         f"({', '.join(i.name for i in graph_inputs)})")
    inputs = []
    for k, value in enumerate(graph_inputs):
        tensor = value.type.tensor_type
        dtype = _ELEM_TYPES.get(tensor.elem_type)
        if dtype is None:
            raise InputError(f"ONNX input {value.name!r} has element type {tensor.elem_type}, edgekit feeds float32, "
                             "int32 or int64 inputs")
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
        if declared:
            dims, dtype = declared[k]
        elif None in dims[1:]:
            raise InputError(f"ONNX input {value.name!r} has dynamic dimensions {dims}; pass --input-shape with fixed "
                             "sizes, e.g. --input-shape 1,3,224,224")
        dims = (1, *dims[1:]) if dims and dims[0] is None else dims  # converters need a fixed batch: 1
        inputs.append(TensorInfo(value.name, tuple(dims), dtype))
    return inputs


def _prepare(model, inputs: list[TensorInfo]):
    """The graph as onnx2torch can rebuild it and torch.export can trace it:
    1. weights stored as Constant nodes (Paddle2ONNX) or as Identity(initializer) (PyTorch's
       TorchScript exporter) become initializers: onnx2torch looks weights up there only;
    2. onnxslim folds Shape/Gather/Concat sub-graphs at the fixed input shape: traced, they call
       .numpy() on tensors, which torch.export refuses."""
    from onnx import TensorProto

    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            value = node.attribute[0].t
        elif node.op_type == "Identity" and node.input[0] in initializers:
            value = initializers[node.input[0]]
        else:
            kept.append(node)
            continue
        tensor = TensorProto()
        tensor.CopyFrom(value)
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        initializers[tensor.name] = tensor
    del graph.node[:]
    graph.node.extend(kept)
    onnxslim = require("onnxslim", "converting ONNX models")
    shapes = [f"{t.name}:{','.join(str(d) for d in t.shape)}" for t in inputs]
    return onnxslim.slim(model, input_shapes=shapes)


def _to_torch(model, inputs: list[TensorInfo], path: Path):
    from .torch import example_array, import_torch

    torch = import_torch()
    onnx2torch = require("onnx2torch", "converting ONNX models")
    try:
        module = onnx2torch.convert(model).eval()
    except Exception as e:
        raise InputError(f"{path.name!r}: onnx2torch cannot rebuild this ONNX graph as a PyTorch module "
                         f"({type(e).__name__}: {first_line(str(e), 200)}); convert the original PyTorch model "
                         "instead, or export with opset <= 17") from e
    return _static_reshapes(torch, module, [torch.from_numpy(example_array(t)) for t in inputs])


def _static_reshapes(torch, module, examples):
    """onnx2torch's Reshape checks `shape == 0` on a tensor at run time, a data-dependent branch
    torch.export refuses; where the target shape is a constant, resolve it now (0 = keep that
    input dimension, as ONNX defines) and call torch.reshape with plain ints."""
    from torch.fx.passes.shape_prop import ShapeProp

    ShapeProp(module).propagate(*examples)
    graph = module.graph
    for node in list(graph.nodes):
        if node.op != "call_module" or type(module.get_submodule(node.target)).__name__ != "OnnxReshape":
            continue
        source, shape_node = node.args[0], node.args[1]
        if getattr(shape_node, "op", None) != "get_attr":
            continue
        target = _attribute(module, shape_node.target).tolist()
        in_shape = source.meta["tensor_meta"].shape
        static = tuple(int(in_shape[i]) if d == 0 else int(d) for i, d in enumerate(target))
        with graph.inserting_after(node):
            replacement = graph.call_function(torch.reshape, (source, static))
        node.replace_all_uses_with(replacement)
        graph.erase_node(node)
    graph.eliminate_dead_code()
    module.recompile()
    return module


def _attribute(module, dotted: str):
    for part in dotted.split("."):
        module = getattr(module, part)
    return module
