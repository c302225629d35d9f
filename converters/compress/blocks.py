"""Depth pruning: remove whole residual blocks, so a network runs fewer layers at each resolution.

Channel pruning makes layers thinner, which int8 kernels that compute output channels in wide
tiles do not reward (XNNPACK's AMX kernels: 64 channels per tile; a 32-channel stage costs what a
64-channel one does). Fewer layers always cost less. A ResNet tolerates losing a block well because
each block only adds a correction to its input (Veit et al. 2016, "Residual networks behave like
ensembles of relatively shallow networks"), and distillation recovers most of what is lost.

A block is removable when its shortcut is the identity: Add(x, f(x)) where the branch f starts at
x, reads nothing else, and none of its intermediate tensors is used outside it (a strided block
with a projection shortcut changes shape and is not removable). Removing it makes the Add's
consumers read x instead; a ReLU after the Add is kept (x usually comes from a ReLU, so it is
then exact, and the rest of the graph keeps its layer names).

Which blocks go: greedily, the one whose removal changes the model's output on the calibration
inputs the least (relative L2 change against the original model's output), re-measured after
each removal because removals interact.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from edgekit.errors import InputError

from .keras_graph import FunctionalGraph, keras_macs, layer_configs, read_graph, rebuild

IMPORTANCE_SAMPLES = 128
MERGE = "Add"


def removable_blocks(graph: FunctionalGraph) -> list[dict]:
    """Each identity residual block: {"add": layer name, "branch": [layer names], "input": x's key},
    in graph order."""
    producer = {k: node for node in graph.nodes for k in node.outputs}
    consumers: dict = {}
    for node in graph.nodes:
        for k in node.inputs:
            consumers.setdefault(k, []).append(node)
    outputs = set(graph.model_outputs)
    blocks = []
    for node in graph.nodes:
        if type(node.layer).__name__ != MERGE or len(node.inputs) != 2 or node.layer.name in graph.shared:
            continue
        for x, y in (node.inputs, node.inputs[::-1]):
            branch = _chain_from(x, y, producer, graph)
            if branch is None or tuple(graph.tensors[x].shape) != tuple(graph.tensors[node.outputs[0]].shape):
                continue
            inner = {k for n in branch for k in n.outputs}
            # the branch's tensors feed only the branch and this Add: nothing else loses an input
            if all(c in branch or c is node for k in inner for c in consumers.get(k, [])) and not inner & outputs:
                blocks.append({"add": node.layer.name, "branch": [n.layer.name for n in branch], "input": x})
                break
    return blocks


def _chain_from(x, y, producer, graph: FunctionalGraph):
    """The nodes from x to y, when y is computed from x alone through single-input layers; else None."""
    chain, key = [], y
    while key != x:
        node = producer.get(key)
        if node is None or len(node.inputs) != 1 or node.layer.name in graph.shared:
            return None
        chain.append(node)
        key = node.inputs[0]
    return chain[::-1] or None


def blocks_to_remove(count_of: int, percent: float) -> int:
    """N % of the removable blocks, rounded half up, at least one when N > 0."""
    return min(count_of, max(1, math.floor(count_of * percent / 100 + 0.5)))


def without_blocks(model, blocks: list[dict]):
    """A new model in which each block's Add output is replaced by its input (branch and Add gone)."""
    drop = {name for b in blocks for name in [b["add"], *b["branch"]]}

    def edit(config):
        config = copy.deepcopy(config)
        entries = layer_configs(config)
        replace = {}
        for b in blocks:  # the Add's own reference to x, as the config spells it (name, node, index)
            history = [a["config"]["keras_history"] for a in _tensor_refs(entries[b["add"]]["inbound_nodes"])]
            replace[b["add"]] = next(h for h in history if h[0] == b["input"][0])
        for name in list(replace):  # a removed block whose input is itself a removed block's output
            while replace[name][0] in replace:
                replace[name] = replace[replace[name][0]]
        config["layers"] = [e for e in config["layers"] if e["config"]["name"] not in drop]
        for entry in config["layers"]:
            for ref in _tensor_refs(entry["inbound_nodes"]):
                h = ref["config"]["keras_history"]
                if h[0] in replace:
                    ref["config"]["keras_history"] = list(replace[h[0]])
        config["output_layers"] = _replace_outputs(config["output_layers"], replace)
        return config

    return rebuild(model, edit, lambda layer: None)


def _tensor_refs(value):
    """Every serialized KerasTensor reference inside a layer's inbound_nodes."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            yield value
        else:
            for v in value.values():
                yield from _tensor_refs(v)
    elif isinstance(value, (list, tuple)):  # get_config() keeps call args as tuples
        for v in value:
            yield from _tensor_refs(v)


def _replace_outputs(outputs, replace):
    if outputs and isinstance(outputs[0], str):  # one output: [name, node, index]
        return list(replace.get(outputs[0], outputs))
    return [list(replace.get(o[0], o)) for o in outputs]


def _relative_change(model, reference: np.ndarray, x: np.ndarray) -> float:
    out = np.asarray(model.predict(x, verbose=0, batch_size=64), np.float64)
    return float(np.linalg.norm(out - reference) / (np.linalg.norm(reference) or 1.0))


def prune_blocks(model, percent: float, calibration: list[np.ndarray] | None):
    """(shallower model, details): `percent` % of the removable residual blocks removed, the one that
    changes the model's output least on the calibration inputs first. details: one row per removed
    block (Add, branch layers, MACs, importance) and the blocks that stayed."""
    blocks = removable_blocks(read_graph(model))
    if not blocks:
        raise InputError("prune-blocks expected residual blocks with an identity shortcut (Add(x, f(x)) where f "
                         "reads only x); got none in this model: use prune-channels-N or lowrank-N instead")
    if not calibration or len(calibration) != 1 or len(model.inputs) != 1:
        raise InputError("prune-blocks-N ranks blocks by their effect on the model's output for the calibration "
                         "inputs; pass --calibration (single-input models)")
    x = np.asarray(calibration[0][:IMPORTANCE_SAMPLES], np.float32)
    reference = np.asarray(model.predict(x, verbose=0, batch_size=64), np.float64)
    macs = keras_macs(model)
    count = blocks_to_remove(len(blocks), percent)
    removed, rows, current, left = [], [], model, list(blocks)
    for _ in range(count):
        # output_change: of the model without this block and those removed before it, against the original
        score, i = min((_relative_change(without_blocks(model, removed + [b]), reference, x), i)
                       for i, b in enumerate(left))
        block = left.pop(i)
        removed.append(block)
        current = without_blocks(model, removed)
        after = keras_macs(current)
        rows.append({"add": block["add"], "branch": block["branch"], "macs": int(macs - after),
                     "output_change": round(score, 6)})
        macs = after
    return current, {"removable": [b["add"] for b in blocks], "removed": rows, "kept": [b["add"] for b in left]}
