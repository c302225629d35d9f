"""The functional graph of a Keras model as plain data, and rebuilding a model from an edited config.

Both compression transforms work the same way: read which layer feeds which (tensors keyed by
their Keras history), decide new layer sizes, edit the model's config, build a fresh model from
it and copy the (sliced or factorized) weights in by layer name. Editing the config instead of
re-calling layers keeps every layer option (padding, activation, epsilon...) exactly as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import InputError

TensorKey = tuple  # (producing layer name, node index, tensor index)


@dataclass
class LayerNode:
    layer: object
    inputs: list[TensorKey]
    outputs: list[TensorKey]


@dataclass
class FunctionalGraph:
    nodes: list[LayerNode]                  # topological order, InputLayers excluded
    model_inputs: list[TensorKey]
    model_outputs: list[TensorKey]
    tensors: dict                           # key -> KerasTensor (to build probe models)
    shared: set[str]                        # layers called more than once (never transformed)


def _key(tensor) -> TensorKey:
    h = tensor._keras_history
    return (h.operation.name, h.node_index, h.tensor_index)


def as_functional(model):
    """Sequential models become the equivalent functional model (same layers, same weights)."""
    keras = _keras()
    if isinstance(model, keras.Sequential):
        if not model.built or not model.inputs:
            raise InputError("expected a built Keras model; got an unbuilt Sequential: call it once or give "
                             "keras.Input as its first layer")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not hasattr(model, "get_config") or type(model).__name__ not in ("Functional", "Model"):
        raise InputError(f"compression rebuilds functional or Sequential Keras models; got a subclassed "
                         f"{type(model).__name__}: rebuild it with the functional API to compress it")
    return model


def read_graph(model) -> FunctionalGraph:
    model = as_functional(model)
    nodes, tensors, shared = [], {}, set()
    for t in model.inputs:
        tensors[_key(t)] = t
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        calls = [n for n in layer._inbound_nodes if all(_key(o)[0] == layer.name for o in n.output_tensors)]
        if len(calls) != 1:
            shared.add(layer.name)
        for node in calls:
            for t in list(node.input_tensors) + list(node.output_tensors):
                tensors[_key(t)] = t
            nodes.append(LayerNode(layer, [_key(t) for t in node.input_tensors],
                                   [_key(t) for t in node.output_tensors]))
    return FunctionalGraph(nodes, [_key(t) for t in model.inputs], [_key(t) for t in model.outputs], tensors, shared)


def rebuild(model, edit_config, weights_for):
    """A new model from `edit_config(config) -> config`, with each layer's weights from
    `weights_for(new_layer) -> list[np.ndarray] | None` (None: the old layer's own weights)."""
    keras = _keras()
    model = as_functional(model)
    config = edit_config(model.get_config())
    for entry in config["layers"]:
        entry.pop("build_config", None)  # recorded input shapes are the old ones; calling the layer builds it
    try:
        new = keras.Model.from_config(config)
    except Exception as e:  # custom layers without registration, or a layer that cannot take the new sizes
        raise InputError(f"cannot rebuild {model.name} with the compressed sizes ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}); custom layers must be "
                         "registered (keras.saving.register_keras_serializable) to be rebuilt") from e
    old_layers = {layer.name: layer for layer in model.layers}
    for layer in new.layers:
        weights = weights_for(layer)
        if weights is None and layer.name in old_layers:
            weights = old_layers[layer.name].get_weights()
        if weights:
            layer.set_weights([np.asarray(w, dtype=np.float32) for w in weights])
    return new


def layer_configs(config: dict) -> dict[str, dict]:
    return {entry["config"]["name"]: entry for entry in config["layers"]}


def keras_macs(model) -> int:
    """Multiply-accumulates of one inference (batch 1), counted as edgekit.tflite.graph counts the
    converted graph: Conv2D out_pixels*kh*kw*cin per output channel, DepthwiseConv2D kh*kw per
    output value, Dense cin per output value. The converted artifact is the authority (tests check
    the two agree); this count is for provenance without a conversion per step."""
    total = 0
    for node in read_graph(model).nodes:
        layer = node.layer
        kind = type(layer).__name__
        if kind not in ("Conv2D", "DepthwiseConv2D", "Dense"):
            continue
        out = [d or 1 for d in layer.output.shape[1:]]
        kernel = layer.kernel.shape
        if kind == "Conv2D":
            total += int(np.prod(out)) * kernel[0] * kernel[1] * kernel[2]
        elif kind == "DepthwiseConv2D":
            total += int(np.prod(out)) * kernel[0] * kernel[1]
        else:
            total += int(np.prod(out)) * kernel[0]
    return total


def _keras():
    from edgekit._deps import require

    require("tensorflow", "compressing Keras models")
    return require("keras", "compressing Keras models")
