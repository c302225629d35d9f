"""The one representation PyTorch compression works on: the ATen-level `torch.fx.GraphModule` that
`torch.export.export(module, args).module()` returns, whatever the source was (.pt2, TorchScript via
torch's TS2EP converter, an nn.Module from code, ONNX rebuilt by onnx2torch).

In that graph every layer is a call of an ATen op on tensors read by `get_attr` nodes (dotted
targets such as `stem.0.weight`), so one set of rules covers every source: `aten.conv2d`,
`aten.linear`, `aten.batch_norm`, element-wise ops, pooling, `aten.add`... The transforms edit the
graph and the tensors behind its get_attr targets, then `exported()` traces the result again at the
source's fixed input shape so it converts exactly like a user's .pt2.

Working copies are exported with a dynamic batch dimension where the model allows it (distillation
trains on batches of 32; a .pt2 is usually saved for batch 1), and `_guards_fn` (the input-shape
check torch.export inserts) is dropped from them for the same reason.
"""
from __future__ import annotations

import numpy as np

from edgekit.errors import ConversionError, InputError, first_line

# ops that keep every channel where it was (one input tensor, the others scalars)
UNARY = {"relu", "relu_", "relu6", "hardtanh", "hardtanh_", "sigmoid", "sigmoid_", "hardsigmoid", "hardsigmoid_",
         "hardswish", "hardswish_", "silu", "silu_", "gelu", "tanh", "tanh_", "leaky_relu", "leaky_relu_", "elu",
         "elu_", "clamp", "clamp_", "clamp_min", "clamp_max", "dropout", "dropout_", "clone", "contiguous",
         "alias", "detach", "mish", "softplus", "abs", "neg", "exp", "sqrt", "rsqrt", "square", "pow",
         "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "_to_copy", "to"}
POOLS = {"max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "max_pool2d_with_indices"}
BINARY = {"add", "add_", "sub", "sub_", "mul", "mul_", "maximum", "minimum", "div", "div_"}
WEIGHTED = {"conv2d", "linear"}


def import_torch():
    from ...sources.torch import import_torch as _import

    return _import()


def op_name(node) -> str:
    """'conv2d' for torch.ops.aten.conv2d.default, 'mean' for aten.mean.dim, 'getitem' for operator.getitem,
    '' for non-calls."""
    if node.op != "call_function":
        return ""
    target = node.target
    if hasattr(target, "name") and callable(target.name):
        return target.name().split("::")[-1].split(".")[0]
    return getattr(target, "__name__", str(target))


def tensor_inputs(node) -> list:
    """The data tensors a call reads (parameters, read by get_attr, are not data)."""
    return [a for a in node.all_input_nodes if a.op != "get_attr"]


def shape(node) -> tuple | None:
    meta = node.meta.get("tensor_meta")
    return tuple(int(d) for d in meta.shape) if meta is not None and hasattr(meta, "shape") else None


def get_tensor(gm, target: str):
    owner = gm
    for part in target.split("."):
        owner = getattr(owner, part)
    return owner


def set_tensor(gm, target: str, value, parameter: bool) -> None:
    """Store `value` at `target` (creating holder modules along the dotted path), as a trainable
    nn.Parameter or a buffer."""
    torch = import_torch()
    *path, name = target.split(".")
    owner = gm
    for part in path:
        if not hasattr(owner, part):
            owner.add_module(part, torch.nn.Module())
        owner = getattr(owner, part)
    for store in (owner._parameters, owner._buffers):
        store.pop(name, None)
    if name in owner.__dict__:
        delattr(owner, name)
    value = value.detach().clone().contiguous()
    if parameter:
        owner.register_parameter(name, torch.nn.Parameter(value, requires_grad=value.is_floating_point()))
    else:
        owner.register_buffer(name, value)


def is_parameter(gm, target: str) -> bool:
    *path, name = target.split(".")
    owner = gm
    for part in path:
        owner = getattr(owner, part)
    return name in owner._parameters


def attribute_uses(gm) -> dict:
    """{get_attr target: how many calls read it}: a weight read by two layers cannot be sliced or
    factorized for one of them."""
    uses: dict = {}
    for node in gm.graph.nodes:
        for a in node.all_input_nodes:
            if a.op == "get_attr":
                uses[a.target] = uses.get(a.target, 0) + 1
    return uses


def conv_args(node) -> dict:
    """aten.conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1) with defaults filled."""
    args = list(node.args) + [None, [1, 1], [0, 0], [1, 1], 1][len(node.args) - 2:]
    keys = ("x", "weight", "bias", "stride", "padding", "dilation", "groups")
    out = dict(zip(keys, args[:7]))
    out.update(node.kwargs)
    return out


def weight_node(node):
    """The get_attr node of a conv2d / linear / batch_norm weight."""
    w = node.args[1] if len(node.args) > 1 else None
    return w if w is not None and getattr(w, "op", None) == "get_attr" else None


def working_graph(module, inputs: list[np.ndarray]):
    """The canonical GraphModule of `module` (an exported program's module, a TorchScript module, an
    nn.Module), parameters registered as trainable nn.Parameters, shapes propagated for batch 1."""
    torch = import_torch()
    examples = tuple(torch.from_numpy(np.ascontiguousarray(a[:1])) for a in inputs)
    if isinstance(module, torch.jit.ScriptModule):
        from torch._export.converter import TS2EPConverter  # the converter tflite_torch uses too

        try:
            module = TS2EPConverter(module, examples).convert().module()
        except Exception as e:
            raise InputError(f"compression needs the TorchScript model as an exported program, and torch's "
                             f"TorchScript converter failed ({type(e).__name__}: {first_line(str(e), 200)}); save "
                             "the nn.Module with torch.export.save instead") from e
    _drop_guards(module)
    gm = None
    try:  # a dynamic batch when the model allows it: training runs on batches, the source is saved for one
        twice = tuple(torch.cat([e, e]) for e in examples)
        dims = tuple({0: torch.export.Dim.AUTO} for _ in examples)
        gm = torch.export.export(module, twice, dynamic_shapes=dims).module()
        _drop_guards(gm)
        gm(*twice)
    except Exception:
        gm = None
    if gm is None:
        try:
            gm = torch.export.export(module, examples).module()
        except Exception as e:
            raise InputError(f"compression edits the model's torch.export graph, and torch.export cannot capture "
                             f"this one ({type(e).__name__}: {first_line(str(e), 200)}); give a model that "
                             "torch.export.export accepts at a fixed input shape") from e
        _drop_guards(gm)
    _functional_convolutions(torch, gm)
    _register_parameters(gm)
    inference_mode(gm)
    gm.recompile()
    propagate_shapes(gm, inputs)
    return gm


def inference_mode(gm) -> None:
    """Mark every submodule as in eval mode. Not .eval(): an exported program's module refuses it; the
    graph's batch_norm / dropout arguments say the mode anyway, the flag is for litert-torch, which
    warns about modules in training mode."""
    for m in gm.modules():
        m.training = False


def _drop_guards(module) -> None:
    graph = getattr(module, "graph", None)
    if graph is None:
        return
    for node in list(graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            graph.erase_node(node)
    module.recompile()


def _functional_convolutions(torch, gm) -> None:
    """aten.convolution (TorchScript's form) -> aten.conv2d for 2-D non-transposed convolutions, so
    the transforms see one op."""
    for node in list(gm.graph.nodes):
        if op_name(node) != "convolution" or len(node.args) < 9 or node.args[6]:
            continue
        x, w, b, stride, padding, dilation, _, _, groups = node.args[:9]
        if len(stride) != 2:
            continue
        with gm.graph.inserting_after(node):
            conv = gm.graph.call_function(torch.ops.aten.conv2d.default,
                                          (x, w, b, list(stride), list(padding), list(dilation), groups))
        conv.meta = dict(node.meta)
        node.replace_all_uses_with(conv)
        gm.graph.erase_node(node)


def _register_parameters(gm) -> None:
    """Weights and biases of conv2d / linear / batch_norm become trainable nn.Parameters (TorchScript's
    converter stores them as plain attributes); running statistics stay buffers."""
    for node in gm.graph.nodes:
        if op_name(node) not in ("conv2d", "linear", "batch_norm"):
            continue
        for arg in node.args[1:3]:
            if getattr(arg, "op", None) == "get_attr" and not is_parameter(gm, arg.target):
                set_tensor(gm, arg.target, get_tensor(gm, arg.target), parameter=True)


def propagate_shapes(gm, inputs: list[np.ndarray]) -> None:
    """node.meta['tensor_meta'] for one input (batch 1): what MACs and channel counts are read from."""
    torch = import_torch()
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(gm).propagate(*[torch.from_numpy(np.ascontiguousarray(a[:1])) for a in inputs])


def output_nodes(gm) -> list:
    out = next(n for n in gm.graph.nodes if n.op == "output")
    found = []

    def walk(value):
        if isinstance(value, (list, tuple)):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif hasattr(value, "op"):
            found.append(value)
    walk(out.args)
    return found


def graph_macs(gm) -> int:
    """Multiply-accumulates of one inference (batch 1), counted as edgekit.tflite.graph counts the
    converted graph: a convolution out_elements * kh * kw * (cin / groups) (a depthwise one: kh * kw
    per output value, which is the same formula), a linear layer out_elements * in_features. Shapes
    come from the last propagate_shapes."""
    total = 0
    for node in gm.graph.nodes:
        name = op_name(node)
        if name not in WEIGHTED and name not in ("mm", "addmm", "bmm", "matmul"):
            continue
        out = shape(node)
        if out is None:
            continue
        if name == "conv2d":
            w = tuple(get_tensor(gm, weight_node(node).target).shape)
            total += int(np.prod(out)) * int(np.prod(w[1:]))
        elif name == "linear":
            total += int(np.prod(out)) * int(get_tensor(gm, weight_node(node).target).shape[1])
        else:
            a = node.args[1] if name == "addmm" else node.args[0]
            total += int(np.prod(out)) * int(shape(a)[-1])
    return total


def count_params(gm) -> int:
    """Elements of every tensor the graph reads (weights, biases, BatchNorm statistics), as Keras'
    count_params counts non-trainable weights too."""
    seen, total = set(), 0
    for node in gm.graph.nodes:
        if node.op == "get_attr" and node.users and node.target not in seen:
            seen.add(node.target)
            value = get_tensor(gm, node.target)
            if hasattr(value, "numel") and value.is_floating_point():
                total += int(value.numel())
    return total


def drop_unused(gm) -> None:
    """Remove get_attr nodes nothing reads and the tensors behind them (a removed block's weights)."""
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            target = node.target
            gm.graph.erase_node(node)
            if not any(n.op == "get_attr" and n.target == target for n in gm.graph.nodes):
                *path, name = target.split(".")
                owner = gm
                for part in path:
                    owner = getattr(owner, part)
                for store in (owner._parameters, owner._buffers):
                    store.pop(name, None)
    gm.recompile()


def run(gm, arrays: list[np.ndarray], batch: int = 64) -> np.ndarray:
    """The first output for `arrays`, in batches, without gradients."""
    torch = import_torch()
    outs = []
    with torch.no_grad():
        for i in range(0, len(arrays[0]), batch):
            out = gm(*[torch.from_numpy(np.ascontiguousarray(a[i:i + batch])) for a in arrays])
            outs.append(_first(out).detach().numpy())
    return np.concatenate(outs)


def _first(out):
    while isinstance(out, (list, tuple)):
        out = out[0]
    if isinstance(out, dict):
        return _first(next(iter(out.values())))
    return out


def exported(gm, inputs: list[np.ndarray]):
    """The compressed graph as an ExportedProgram at the source's input shape (batch 1), which is what
    a user's .pt2 is."""
    torch = import_torch()
    examples = tuple(torch.from_numpy(np.ascontiguousarray(a[:1])) for a in inputs)
    inference_mode(gm)
    try:
        return torch.export.export(gm, examples)
    except Exception as e:
        raise ConversionError(f"the compressed model cannot be exported again ({type(e).__name__}: "
                         f"{first_line(str(e), 200)}); convert it without compression steps") from e
