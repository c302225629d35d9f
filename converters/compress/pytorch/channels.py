"""Structured channel pruning on the ATen graph: the rules of ../channels.py (Keras) for PyTorch.

A group is the set of tensors whose channel axis must stay aligned. A conv2d (groups=1) or linear
output starts one; ops that keep channels one-to-one extend it: batch_norm, element-wise unary ops
(relu, hardtanh, sigmoid...) and arithmetic with a scalar, pooling, a mean over spatial dims,
dropout, a depthwise conv2d (groups == in == out channels: its filters are pruned with the group),
a flatten/view of an N x C x 1 x 1 tensor into N x C. Two tensors meeting in add/sub/mul/maximum/
minimum with the same channel count are one group (a residual block's shortcut and branch must drop
the same channels). The next conv2d / linear reads the group on its input axis and is sliced along.

Everything else (concat, reshapes of spatial dims into features, slicing, softmax over channels,
model inputs and outputs, weights shared by two layers, an op this module does not know) blocks
the groups it touches: leaving a channel in is always safe, a wrong slice is not.

Importance: L1 (or L2) norm of each producer's filters times the gamma / sqrt(var + eps) of the
batch_norm reading it, each producer's scores divided by their mean, summed over the group's
producers; or (-act) the mean |activation| of the group's tensors on calibration inputs.
"""
from __future__ import annotations

import numpy as np

from edgekit.errors import InputError

from ..channels import (
    ACTIVATION_SAMPLES,
    _Groups,
    kept_channels,
    require_activation_calibration,
)
from .graph import (
    BINARY,
    POOLS,
    UNARY,
    attribute_uses,
    conv_args,
    get_tensor,
    import_torch,
    is_parameter,
    op_name,
    output_nodes,
    propagate_shapes,
    set_tensor,
    shape,
    tensor_inputs,
    weight_node,
)

RESHAPES = {"flatten", "view", "reshape", "_unsafe_view", "squeeze"}


def layer_name(node) -> str:
    """A conv/linear node's name as the source spells it: its weight's module path (`stem.0`)."""
    w = weight_node(node)
    return w.target.rsplit(".", 1)[0] if w is not None else node.name


class _Plan:
    """What reading the graph found: groups (union-find over nodes), blocked nodes, and per node
    the parameters to slice when its group loses channels."""

    def __init__(self):
        self.groups, self.blocked = _Groups(), set()
        self.axis = {}            # node -> its channel axis
        self.producers = {}       # node -> conv/linear node producing it
        self.slices = []          # (group member node, get_attr target, axis): sliced with that member's group
        self.depthwise = []       # depthwise conv2d nodes (their groups argument follows the channel count)
        self.reshapes = []        # view/reshape nodes N x C x 1 x 1 -> N x C (shape argument rewritten)

    def join(self, a, b):
        self.groups.union(a, b)

    def block(self, *nodes):
        self.blocked.update(nodes)


def _scalar_args(node, data) -> bool:
    return all(not hasattr(a, "op") or a in data for a in node.args)


def read_groups(gm) -> tuple[_Plan, dict]:
    """(plan, {group root: {"producers", "members", "channels"}}) for every group that may lose channels."""
    plan = _Plan()
    target_uses = attribute_uses(gm)
    for node in gm.graph.nodes:
        plan.groups.find(node)
        if node.op == "placeholder":
            plan.block(node)
            continue
        if node.op in ("get_attr", "output"):
            continue
        data = tensor_inputs(node)
        for d in data:
            plan.groups.find(d)
        name = op_name(node)
        shared = any(a.op == "get_attr" and target_uses[a.target] > 1 for a in node.all_input_nodes)
        out_shape = shape(node)
        if node.op != "call_function" or out_shape is None or shared:
            plan.block(node, *data)
        elif name == "conv2d":
            _conv(plan, gm, node)
        elif name == "linear":
            x = node.args[0]
            plan.producers[node] = node
            plan.axis[node] = len(out_shape) - 1
            for t in _params(node, (1, 2)):
                plan.slices.append((node, t, 0))
            _consumer(plan, x, node, len(shape(x)) - 1, 1)
        elif name == "batch_norm":
            _pass(plan, data[0], node, required=1)
            for t in _params(node, (1, 2, 3, 4)):
                plan.slices.append((node, t, 0))
        elif name in BINARY and len(data) == 2:
            a, b = data
            sa, sb = shape(a), shape(b)
            axis = plan.axis.get(a, plan.axis.get(b))
            if (sa is None or sb is None or len(sa) != len(sb) or axis is None or sa[axis] != sb[axis]
                    or plan.axis.get(a, axis) != plan.axis.get(b, axis) or out_shape[axis] != sa[axis]):
                plan.block(node, a, b)
            else:
                plan.join(a, node)
                plan.join(b, node)
                plan.axis[node] = axis
        elif (name in UNARY or name in POOLS) and len(data) == 1 and _scalar_args(node, data):
            _pass(plan, data[0], node, required=1 if name in POOLS else None)
        elif name == "mean" and len(data) == 1:
            _mean(plan, node, data[0])
        elif name in RESHAPES and len(data) == 1:
            _flatten(plan, node, data[0])
        else:
            plan.block(node, *data)
    for node in output_nodes(gm):
        plan.block(node)
    return plan, _prunable(plan, gm)


def _params(node, positions) -> list[str]:
    return [node.args[i].target for i in positions
            if i < len(node.args) and getattr(node.args[i], "op", None) == "get_attr"]


def _conv(plan: _Plan, gm, node) -> None:
    args = conv_args(node)
    x, groups = args["x"], args["groups"]
    weight = get_tensor(gm, args["weight"].target)
    cin = shape(x)[1] if shape(x) else None
    if groups == 1:
        plan.producers[node] = node
        plan.axis[node] = 1
        for t in _params(node, (1, 2)):
            plan.slices.append((node, t, 0))
        _consumer(plan, x, node, 1, 1)
    elif groups == cin == weight.shape[0] and weight.shape[1] == 1:
        _pass(plan, x, node, required=1)   # depthwise: channel c reads channel c only
        for t in _params(node, (1, 2)):
            plan.slices.append((node, t, 0))
        plan.depthwise.append(node)
    else:
        plan.block(node, x)


def _consumer(plan: _Plan, x, node, required_axis: int, weight_axis: int) -> None:
    """`node` reads x's channels on its weight's `weight_axis`: sliced along with x's group."""
    if plan.axis.get(x) != required_axis:
        plan.block(x)
        return
    plan.slices.append((x, node.args[1].target, weight_axis))


def _pass(plan: _Plan, x, node, required: int | None) -> None:
    axis = plan.axis.get(x)
    if axis is None or (required is not None and axis != required) or shape(node)[axis] != shape(x)[axis]:
        plan.block(node, x)
        return
    plan.join(x, node)
    plan.axis[node] = axis


def _mean(plan: _Plan, node, x) -> None:
    """A mean over dims after the channel axis keeps channels at that axis (global average pooling)."""
    axis, rank = plan.axis.get(x), len(shape(x))
    dims = node.args[1] if len(node.args) > 1 else None
    dims = [d % rank for d in (dims if isinstance(dims, (list, tuple)) else [dims])] if dims is not None else None
    if axis is None or not dims or any(d <= axis for d in dims):
        plan.block(node, x)
        return
    plan.join(x, node)
    plan.axis[node] = axis


def _flatten(plan: _Plan, node, x) -> None:
    """N x C x 1 x 1 -> N x C (flatten before a classifier): channels stay at axis 1."""
    sx, sn = shape(x), shape(node)
    if plan.axis.get(x) != 1 or len(sn) != 2 or len(sx) < 2 or any(d != 1 for d in sx[2:]) or sn[1] != sx[1]:
        plan.block(node, x)
        return
    plan.join(x, node)
    plan.axis[node] = 1
    if op_name(node) in ("view", "reshape", "_unsafe_view"):
        plan.reshapes.append(node)


def _prunable(plan: _Plan, gm) -> dict:
    found = {}
    for node in list(plan.groups.parent):
        root = plan.groups.find(node)
        entry = found.setdefault(root, {"producers": [], "members": [], "blocked": False})
        entry["members"].append(node)
        entry["blocked"] |= node in plan.blocked
        if node in plan.producers:
            entry["producers"].append(node)
    result = {}
    for root, entry in found.items():
        if entry["blocked"] or not entry["producers"]:
            continue
        counts = {shape(p)[plan.axis[p]] for p in entry["producers"]}
        if len(counts) != 1:
            continue
        entry["channels"] = counts.pop()
        result[root] = entry
    return result


def _filter_norms(gm, producer, order: int, norm_after) -> np.ndarray:
    w = get_tensor(gm, producer.args[1].target).detach().double().numpy()
    flat = w.reshape(w.shape[0], -1)
    norms = np.abs(flat).sum(axis=1) if order == 1 else np.sqrt((flat ** 2).sum(axis=1))
    if norm_after is not None:
        gamma_node, var_node = norm_after.args[1], norm_after.args[4]
        gamma = (get_tensor(gm, gamma_node.target).detach().double().numpy() if gamma_node is not None
                 else np.ones_like(norms))
        var = get_tensor(gm, var_node.target).detach().double().numpy()
        norms = norms * np.abs(gamma) / np.sqrt(var + float(norm_after.args[7]))
    return norms / (norms.mean() or 1.0)


def _batchnorm_after(producer):
    return next((u for u in producer.users if op_name(u) == "batch_norm" and u.args[0] is producer), None)


def _activation_importance(gm, plan: _Plan, groups: dict, calibration: list[np.ndarray]) -> dict:
    torch = import_torch()
    wanted = {m: root for root, g in groups.items() for m in g["members"]}
    scores: dict = {}

    class Probe(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n in wanted:
                a = plan.axis[n]
                per = out.detach().abs().double().movedim(a, -1).reshape(-1, out.shape[a]).mean(0).numpy()
                root = wanted[n]
                scores[root] = scores.get(root, 0) + per / (per.mean() or 1.0)
            return out

    with torch.no_grad():
        Probe(gm).run(*[torch.from_numpy(np.ascontiguousarray(a[:ACTIVATION_SAMPLES])) for a in calibration])
    return scores


def prune_channels(gm, inputs: list[np.ndarray], percent: float, criterion: str = "l1",
                   calibration: list[np.ndarray] | None = None, multiple: int = 1):
    """Prunes `gm` in place; returns details (one row per group: producers, channels before/after)."""
    plan, groups = read_groups(gm)
    if not groups:
        raise InputError("prune-channels found no prunable channel group in this model (every conv2d/linear "
                         "output feeds the model output or an op whose channels cannot be sliced); "
                         "use lowrank-N or a quantization recipe instead")
    if criterion == "act":
        require_activation_calibration(calibration)
        scores = _activation_importance(gm, plan, groups, calibration)
    else:
        order = 2 if criterion == "l2" else 1
        scores = {root: sum(_filter_norms(gm, p, order, _batchnorm_after(p)) for p in g["producers"])
                  for root, g in groups.items()}
    torch = import_torch()
    keep_of, details = {}, []
    for root, g in groups.items():
        n = g["channels"]
        kept = kept_channels(n, percent, multiple)
        keep = np.sort(np.argsort(-scores[root], kind="stable")[:kept])
        for m in g["members"]:
            keep_of[m] = torch.from_numpy(keep)
        details.append({"producers": sorted(layer_name(p) for p in g["producers"]), "channels_before": int(n),
                        "channels_after": int(kept)})
    for member, target, axis in plan.slices:
        if member in keep_of:
            value = get_tensor(gm, target)
            set_tensor(gm, target, value.index_select(axis, keep_of[member]), is_parameter(gm, target))
    for node in plan.depthwise:
        if node in keep_of:
            args = list(node.args) + [None, [1, 1], [0, 0], [1, 1], 1][len(node.args) - 2:]
            args[6] = int(len(keep_of[node]))
            node.args = tuple(args)
    for node in plan.reshapes:
        if node in keep_of:  # N x C: the channel count is the old one; -1 lets it follow the pruning
            node.args = (node.args[0], [node.args[1][0], -1])
    gm.recompile()
    propagate_shapes(gm, inputs)
    return details
