"""Low-rank factorization on the ATen graph: the rules of ../lowrank.py (Keras) for PyTorch.

An aten.linear or a 1x1 groups=1 aten.conv2d with weight W (cout x cin) becomes two thinner ones,
cin -> r -> cout, from the truncated SVD of W^T (the Keras kernel layout, so ranks and energies are
the same numbers): the first carries stride and padding and no bias, the second keeps the original
node, its weight target and bias, so everything that reads it is unchanged. Rank from the MAC cut
(lowrank-N) or the energy kept (lowrank-eNN) by ../lowrank.choose_rank; a layer is left alone
where the rank would not cut MACs, and so is the layer that produces a model output (reached
through ops without weights, e.g. linear -> softmax -> output).
"""
from __future__ import annotations

import numpy as np

from edgekit.errors import InputError

from ..lowrank import break_even_rank, choose_rank
from .channels import layer_name
from .graph import (
    attribute_uses,
    conv_args,
    get_tensor,
    import_torch,
    op_name,
    propagate_shapes,
    set_tensor,
    weight_node,
)

SUFFIX = "_lowrank"


def _factorizable(gm, node) -> bool:
    name = op_name(node)
    if weight_node(node) is None:
        return False
    if name == "linear":
        return True
    if name != "conv2d":
        return False
    w = get_tensor(gm, weight_node(node).target)
    return conv_args(node)["groups"] == 1 and tuple(w.shape[2:]) == (1, 1)


def feeds_output(node) -> bool:
    """True when `node`'s value reaches a model output through ops without weights only."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        for user in n.users:
            if user.op == "output":
                return True
            if user in seen or op_name(user) in ("conv2d", "linear", "mm", "addmm", "matmul", "bmm"):
                continue
            seen.add(user)
            todo.append(user)
    return False


def factorize(gm, inputs: list[np.ndarray], percent: float | None = None, energy: float | None = None,
              only_if_cheaper: bool = True) -> list[dict]:
    """Factorizes `gm` in place; returns details (layer, cin, cout, rank, energy kept). With
    only_if_cheaper=False a layer is factorized even at a rank that saves nothing (tests: at full
    rank the factorized graph computes the same function)."""
    if (percent is None) == (energy is None):
        raise InputError("lowrank expects either a MACs cut (lowrank-N) or an energy to keep (lowrank-eNN)")
    torch = import_torch()
    uses = attribute_uses(gm)
    plans, details = [], []
    for node in gm.graph.nodes:
        if not _factorizable(gm, node) or uses[weight_node(node).target] > 1 or feeds_output(node):
            continue
        w = get_tensor(gm, weight_node(node).target).detach().double().numpy()
        cout, cin = w.shape[:2]
        u, s, vt = np.linalg.svd(w.reshape(cout, cin).T, full_matrices=False)   # kernel cin x cout
        rank = min(choose_rank(s, cin, cout, percent, energy), len(s))
        if only_if_cheaper and rank >= break_even_rank(cin, cout):
            continue
        root = np.sqrt(s[:rank])
        first, second = u[:, :rank] * root, root[:, None] * vt[:rank]            # cin x r, r x cout
        plans.append((node, rank, first, second))
        details.append({"layer": layer_name(node), "cin": int(cin), "cout": int(cout), "rank": int(rank),
                        "energy_kept": round(float((s[:rank] ** 2).sum() / max((s ** 2).sum(), 1e-30)), 6)})
    if not plans:
        raise InputError("lowrank found no linear or 1x1 conv2d layer whose MACs a factorization would cut "
                         f"({'energy' if energy else 'ratio'} {energy or percent}); try a lower energy "
                         "(lowrank-e90) or prune-channels-N")
    for node, rank, first, second in plans:
        _split(torch, gm, node, rank, first, second)
    gm.recompile()
    propagate_shapes(gm, inputs)
    return details


def _split(torch, gm, node, rank, first, second) -> None:
    w_node = weight_node(node)
    target = w_node.target
    base, _, leaf = target.rpartition(".")
    thin_target = f"{base}{SUFFIX}.{leaf}" if base else f"{leaf}{SUFFIX}"
    conv = op_name(node) == "conv2d"
    thin = torch.from_numpy(first.T.astype(np.float32))             # r x cin
    wide = torch.from_numpy(second.T.astype(np.float32))            # cout x r
    if conv:
        thin, wide = thin[:, :, None, None], wide[:, :, None, None]
    set_tensor(gm, thin_target, thin, parameter=True)
    set_tensor(gm, target, wide, parameter=True)
    graph = gm.graph
    with graph.inserting_before(node):
        thin_node = graph.get_attr(thin_target)
        if conv:
            a = conv_args(node)
            first_call = graph.call_function(torch.ops.aten.conv2d.default,
                                             (a["x"], thin_node, None, a["stride"], a["padding"], a["dilation"], 1))
        else:
            first_call = graph.call_function(torch.ops.aten.linear.default, (node.args[0], thin_node, None))
    if conv:  # the first one already applied stride and padding
        a = conv_args(node)
        node.args = (first_call, w_node, a["bias"], [1, 1], [0, 0], [1, 1], 1)
    else:
        node.args = (first_call, *node.args[1:])
