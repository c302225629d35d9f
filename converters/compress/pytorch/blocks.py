"""Depth pruning on the ATen graph: the rules of ../blocks.py (Keras) for PyTorch.

A removable block is `add(x, f(x))` (either order, in-place add_ too) where the branch f is a chain
of ops each reading one data tensor, starting at x, and none of its intermediate tensors is used
outside it or is a model output; the add's output has x's shape (a strided block with a projection
shortcut is not removable). Removing it makes the add's users read x: a relu after the add stays
(x usually comes from one, so it is then exact) unless x is itself a relu output: relu(relu(x)) is
relu(x), and litert-torch would leave a standalone RELU op where the add had fused it. Which blocks go: greedily, the one whose removal
changes the model's output on the calibration inputs least (relative L2 change against the original
output), re-measured after each removal, with ../blocks.py's count rule and refusal texts.
"""
from __future__ import annotations

import copy

import numpy as np

from edgekit.errors import InputError

from ..blocks import IMPORTANCE_SAMPLES, blocks_to_remove
from .graph import drop_unused, graph_macs, op_name, output_nodes, propagate_shapes, run, shape, tensor_inputs

ADDS = {"add", "add_"}
RELUS = {"relu", "relu_"}


def removable_blocks(gm) -> list[dict]:
    """Each identity residual block: {"add": node name, "branch": [node names], "input": x's node name},
    in graph order."""
    outputs = set(output_nodes(gm))
    blocks = []
    for node in gm.graph.nodes:
        if op_name(node) not in ADDS or len(node.args) < 2 or node.kwargs.get("alpha", 1) != 1:
            continue
        x_y = [a for a in node.args[:2] if hasattr(a, "op")]
        if len(x_y) != 2:
            continue
        for x, y in (x_y, x_y[::-1]):
            branch = _chain_from(x, y)
            if branch is None or shape(x) != shape(node):
                continue
            inner = set(branch)
            if all(u in inner or u is node for n in branch for u in n.users) and not inner & outputs:
                blocks.append({"add": node.name, "branch": [n.name for n in branch], "input": x.name})
                break
    return blocks


def _chain_from(x, y):
    """The nodes from x to y, when y is computed from x alone through single-input ops; else None."""
    chain, node = [], y
    while node is not x:
        data = tensor_inputs(node) if node.op == "call_function" else None
        if not data or len(data) != 1:
            return None
        chain.append(node)
        node = data[0]
    return chain[::-1] or None


def without_blocks(gm, inputs: list[np.ndarray], blocks: list[dict]):
    """A copy of `gm` in which each block's add is replaced by its input (branch and add gone)."""
    new = copy.deepcopy(gm)
    nodes = {n.name: n for n in new.graph.nodes}
    for b in blocks:
        add = nodes[b["add"]]
        # x as the graph has it now: an earlier removal may have rewired the branch to that block's input
        x = tensor_inputs(nodes[b["branch"][0]])[0]
        users = list(add.users)
        add.replace_all_uses_with(x)
        new.graph.erase_node(add)
        for name in reversed(b["branch"]):
            new.graph.erase_node(nodes[name])
        if op_name(x) in RELUS:  # relu(relu(x)) is relu(x): no standalone RELU op left in the artifact
            for user in users:
                if op_name(user) in RELUS and len(user.args) == 1:
                    user.replace_all_uses_with(x)
                    new.graph.erase_node(user)
    drop_unused(new)
    propagate_shapes(new, inputs)
    return new


def _relative_change(gm, reference: np.ndarray, x: np.ndarray) -> float:
    out = run(gm, [x]).astype(np.float64)
    return float(np.linalg.norm(out - reference) / (np.linalg.norm(reference) or 1.0))


def prune_blocks(gm, inputs: list[np.ndarray], percent: float, calibration: list[np.ndarray] | None):
    """(shallower graph, details): `percent` % of the removable residual blocks removed, the one that
    changes the model's output least on the calibration inputs first."""
    blocks = removable_blocks(gm)
    if not blocks:
        raise InputError("prune-blocks expected residual blocks with an identity shortcut (Add(x, f(x)) where f "
                         "reads only x); got none in this model: use prune-channels-N or lowrank-N instead")
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if not calibration or len(calibration) != 1 or len(placeholders) != 1:
        raise InputError("prune-blocks-N ranks blocks by their effect on the model's output for the calibration "
                         "inputs; pass --calibration (single-input models)")
    x = np.asarray(calibration[0][:IMPORTANCE_SAMPLES], np.float32)
    reference = run(gm, [x]).astype(np.float64)
    macs = graph_macs(gm)
    count = blocks_to_remove(len(blocks), percent)
    removed, rows, current, left = [], [], gm, list(blocks)
    for _ in range(count):
        score, i = min((_relative_change(without_blocks(gm, inputs, removed + [b]), reference, x), i)
                       for i, b in enumerate(left))
        block = left.pop(i)
        removed.append(block)
        current = without_blocks(gm, inputs, removed)
        after = graph_macs(current)
        rows.append({"add": block["add"], "branch": block["branch"], "macs": int(macs - after),
                     "output_change": round(score, 6)})
        macs = after
    return current, {"removable": [b["add"] for b in blocks], "removed": rows, "kept": [b["add"] for b in left]}
