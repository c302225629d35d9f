"""Structured pruning: remove whole Conv2D filters / Dense units, so MACs and latency fall, not
only the file size.

Channels are pruned per *group*: the set of tensors whose channel axis must stay aligned.
A Conv2D/Dense output starts a group; layers that keep channels one-to-one (BatchNormalization,
activations, pooling, dropout, padding, a DepthwiseConv2D with depth multiplier 1) extend it, and
Add/Subtract/Multiply/Maximum/Minimum/Average merge their inputs' groups into one (a residual
block's shortcut and branch must drop the same channels). A group is left alone when any of its
tensors is a model input or output (the output units are the task), or meets a layer whose
channel semantics we do not know (Flatten, Reshape, Concatenate, LayerNormalization, custom
layers...): leaving a channel in is always safe, a wrong slice is not.

Every producer of a pruned group loses the same output channels; every layer reading the group
(the next Conv2D/Dense input axis, depthwise kernels, BatchNormalization statistics) is sliced
along. Importance of a channel: the L1 (or L2) norm of its filters scaled by the following
BatchNormalization's gamma/sqrt(var) where there is one, each producer's scores divided by their
mean so layers of different scale count alike; or the mean |activation| of the group's tensors on
calibration inputs.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from edgekit.errors import InputError

from .keras_graph import FunctionalGraph, layer_configs, read_graph, rebuild

PRODUCERS = {"Conv2D": "filters", "Dense": "units"}
PASS_THROUGH = {"BatchNormalization", "ReLU", "Activation", "LeakyReLU", "ELU", "MaxPooling2D", "AveragePooling2D",
                "GlobalAveragePooling2D", "GlobalMaxPooling2D", "Dropout", "SpatialDropout2D", "ZeroPadding2D",
                "Cropping2D", "UpSampling2D", "Identity", "DepthwiseConv2D", "GaussianNoise", "ActivityRegularization"}
MERGES = {"Add", "Subtract", "Multiply", "Maximum", "Minimum", "Average"}
ACTIVATION_SAMPLES = 64


class _Groups:
    """Union-find over tensor keys."""

    def __init__(self):
        self.parent = {}

    def find(self, k):
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def union(self, a, b):
        self.parent[self.find(a)] = self.find(b)


def _passes_channels(layer) -> bool:
    kind = type(layer).__name__
    if kind == "DepthwiseConv2D":
        return layer.depth_multiplier == 1
    if kind == "BatchNormalization":
        return layer.axis in (-1, [-1], len(layer.input.shape) - 1, [len(layer.input.shape) - 1])
    if kind == "Activation":
        return getattr(layer.activation, "__name__", "") not in ("softmax", "log_softmax")
    return kind in PASS_THROUGH


def _is_producer(layer) -> bool:
    kind = type(layer).__name__
    return kind in PRODUCERS and (kind != "Conv2D" or (layer.groups == 1 and layer.data_format == "channels_last"))


def prunable_groups(graph: FunctionalGraph) -> dict:
    """group root -> {"producers": [layer names], "tensors": [keys], "channels": n} for every group
    that may lose channels."""
    groups, blocked, producers = _Groups(), set(), {}
    for key in graph.model_inputs + graph.model_outputs:
        groups.find(key)
        blocked.add(key)
    for node in graph.nodes:
        layer = node.layer
        for k in node.inputs + node.outputs:
            groups.find(k)
        if layer.name in graph.shared:
            blocked.update(node.inputs + node.outputs)
        elif _is_producer(layer):
            producers[node.outputs[0]] = layer.name
        elif type(layer).__name__ in MERGES or _passes_channels(layer):
            for k in node.inputs:
                groups.union(k, node.outputs[0])
            if type(layer).__name__ in MERGES and len({graph.tensors[k].shape[-1] for k in node.inputs}) != 1:
                blocked.update(node.inputs + node.outputs)  # broadcast over channels: not one-to-one
        else:
            blocked.update(node.inputs + node.outputs)
    found = {}
    for key in groups.parent:
        root = groups.find(key)
        entry = found.setdefault(root, {"producers": [], "tensors": [], "blocked": False})
        entry["tensors"].append(key)
        entry["blocked"] |= key in blocked
        if key in producers:
            entry["producers"].append(producers[key])
    result = {}
    for root, entry in found.items():
        if entry["blocked"] or not entry["producers"]:
            continue
        entry["channels"] = int(graph.tensors[entry["tensors"][0]].shape[-1])
        result[root] = entry
    return result


def _filter_norms(layer, order: int, norm_after=None) -> np.ndarray:
    """Per output channel: the filter's norm, times the scale gamma / sqrt(var + eps) of the
    BatchNormalization right after it, if any (that scale, not the raw kernel, sets how much the
    channel contributes; convolutions before BN often have small kernels and large gammas)."""
    kernel = np.asarray(layer.get_weights()[0], dtype=np.float64)
    flat = kernel.reshape(-1, kernel.shape[-1])
    norms = np.abs(flat).sum(axis=0) if order == 1 else np.sqrt((flat ** 2).sum(axis=0))
    if norm_after is not None:
        gamma = np.asarray(norm_after.gamma.numpy() if norm_after.scale else np.ones(norms.shape), np.float64)
        var = np.asarray(norm_after.moving_variance.numpy(), np.float64)
        norms = norms * np.abs(gamma) / np.sqrt(var + norm_after.epsilon)
    return norms / (norms.mean() or 1.0)


def _batchnorm_after(graph: FunctionalGraph) -> dict:
    """producer layer name -> the BatchNormalization that reads its output directly (if any)."""
    producer_of = {n.outputs[0]: n.layer for n in graph.nodes if _is_producer(n.layer)}
    return {producer_of[n.inputs[0]].name: n.layer for n in graph.nodes
            if type(n.layer).__name__ == "BatchNormalization" and n.inputs and n.inputs[0] in producer_of}


def _activation_importance(model, graph: FunctionalGraph, groups: dict, calibration: list[np.ndarray]) -> dict:
    import keras

    keys = [(root, k) for root, g in groups.items() for k in g["tensors"]]
    probe = keras.Model(model.inputs, [graph.tensors[k] for _, k in keys])
    sample = [a[:ACTIVATION_SAMPLES] for a in calibration]
    outs = probe.predict(sample if len(sample) > 1 else sample[0], verbose=0, batch_size=32)
    outs = outs if isinstance(outs, list) else [outs]
    scores = {}
    for (root, _), out in zip(keys, outs):
        per_channel = np.abs(np.asarray(out, np.float64)).reshape(-1, out.shape[-1]).mean(axis=0)
        scores[root] = scores.get(root, 0) + per_channel / (per_channel.mean() or 1.0)
    return scores


def kept_channels(channels: int, percent: float, multiple: int = 1) -> int:
    """How many of a group's `channels` survive pruning `percent` %: the rest rounded half up, at least one.

    With multiple M > 1 the count is rounded to the nearest multiple of M, never below M nor above
    `channels`: int8 kernels compute output channels in tiles (XNNPACK: 16 with AVX-512 VNNI or
    NEON dot products, 64 with AMX on x86), so 22 channels cost what 32 do and pruning 32 -> 22 buys
    MACs on paper only. A group of at most M channels already fits one tile: left whole, since
    removing channels from it costs accuracy and saves no time on that kernel."""
    kept = max(1, channels - int(math.floor(channels * percent / 100 + 0.5)))
    if multiple <= 1:
        return kept
    if channels <= multiple:
        return channels
    return int(min(channels, max(multiple, multiple * math.floor(kept / multiple + 0.5))))


def require_activation_calibration(calibration) -> None:
    """The -act criterion's one refusal, for Keras and PyTorch models alike."""
    if not calibration:
        raise InputError("prune-channels-N-act ranks channels by activation on calibration inputs; "
                         "pass --calibration, or use the weight criterion (prune-channels-N)")


def prune_channels(model, percent: float, criterion: str = "l1", calibration: list[np.ndarray] | None = None,
                   multiple: int = 1):
    """(smaller model, details): `percent` % of each prunable group's channels removed, the least
    important first (kept counts rounded to a multiple of `multiple`, see kept_channels). details
    lists each group's producers and channels before/after."""
    model_graph = read_graph(model)
    groups = prunable_groups(model_graph)
    if not groups:
        raise InputError("prune-channels found no prunable channel group in this model (every Conv2D/Dense "
                         "output feeds the model output or a layer whose channels cannot be sliced); "
                         "use lowrank-N or a quantization recipe instead")
    layers = {n.layer.name: n.layer for n in model_graph.nodes}
    if criterion == "act":
        require_activation_calibration(calibration)
        scores = _activation_importance(model, model_graph, groups, calibration)
    else:
        order = 2 if criterion == "l2" else 1
        after = _batchnorm_after(model_graph)
        scores = {root: sum(_filter_norms(layers[p], order, after.get(p)) for p in g["producers"])
                  for root, g in groups.items()}
    keep_of_tensor, details = {}, []
    for root, g in groups.items():
        n = g["channels"]
        kept = kept_channels(n, percent, multiple)
        keep = np.sort(np.argsort(-scores[root], kind="stable")[:kept])
        for k in g["tensors"]:
            keep_of_tensor[k] = keep
        details.append({"producers": sorted(g["producers"]), "channels_before": n, "channels_after": int(kept)})
    out_keep = {}   # producer layer name -> kept output channels
    in_keep = {}    # layer name -> kept channels of its (first) input
    for node in model_graph.nodes:
        if node.layer.name in {p for g in groups.values() for p in g["producers"]}:
            out_keep[node.layer.name] = keep_of_tensor[node.outputs[0]]
        if node.inputs and node.inputs[0] in keep_of_tensor:
            in_keep[node.layer.name] = keep_of_tensor[node.inputs[0]]

    def edit(config):
        config = copy.deepcopy(config)
        entries = layer_configs(config)
        for name, keep in out_keep.items():
            entries[name]["config"][PRODUCERS[type(layers[name]).__name__]] = int(len(keep))
        return config

    def weights_for(new_layer):
        name = new_layer.name
        if name not in out_keep and name not in in_keep:
            return None
        return _sliced(layers[name], in_keep.get(name), out_keep.get(name))

    return rebuild(model, edit, weights_for), details


def _sliced(layer, keep_in, keep_out) -> list[np.ndarray]:
    kind = type(layer).__name__
    weights = layer.get_weights()
    if kind in PRODUCERS:
        kernel, rest = weights[0], weights[1:]
        if keep_in is not None:
            kernel = np.take(kernel, keep_in, axis=-2)
        if keep_out is not None:
            kernel = np.take(kernel, keep_out, axis=-1)
            rest = [np.take(b, keep_out, axis=0) for b in rest]
        return [kernel, *rest]
    if kind == "DepthwiseConv2D":  # kernel (kh, kw, channels, 1), bias (channels,)
        return [np.take(weights[0], keep_in, axis=2), *[np.take(b, keep_in, axis=0) for b in weights[1:]]]
    # BatchNormalization and any other per-channel parameters: every vector is per channel
    return [np.take(w, keep_in, axis=-1) for w in weights]
