"""Low-rank factorization: a Dense or 1x1 Conv2D kernel W (cin x cout) becomes two thinner layers,
cin -> r -> cout, from its truncated SVD  W ~ (U_r sqrt(S_r)) (sqrt(S_r) V_r^T).

The MACs per output position go from cin*cout to r*(cin+cout): only ranks below
cin*cout/(cin+cout) save anything, and a layer whose chosen rank would not is left as it was
(a factorization that costs more is never applied), and so is the layer that produces a model
output (its MACs are few, and a rank below its class count would merge classes). The first layer carries the stride and
padding and no bias; the second keeps the original layer's name, bias and activation, so the
model's output names and everything that reads the layer stay the same.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from edgekit.errors import InputError

from .keras_graph import read_graph, rebuild

SUFFIX = "_lowrank"


def _factorizable(layer) -> bool:
    kind = type(layer).__name__
    if kind == "Dense":
        return True
    return (kind == "Conv2D" and tuple(layer.kernel_size) == (1, 1) and layer.groups == 1
            and layer.data_format == "channels_last")


def break_even_rank(cin: int, cout: int) -> float:
    """Ranks strictly below this cost fewer MACs than the original layer."""
    return cin * cout / (cin + cout)


def choose_rank(singular: np.ndarray, cin: int, cout: int, percent: float | None, energy: float | None) -> int:
    if energy is not None:
        kept = np.cumsum(singular.astype(np.float64) ** 2)
        total = kept[-1] if kept[-1] > 0 else 1.0
        return int(min(len(singular), np.searchsorted(kept / total, energy - 1e-12) + 1))
    return max(1, int(math.floor((1 - percent / 100) * break_even_rank(cin, cout))))


def factorize(model, percent: float | None = None, energy: float | None = None, only_if_cheaper: bool = True):
    """(model, details). With only_if_cheaper=False a layer is factorized even at a rank that saves
    nothing (tests use it: at full rank the factorized model computes the same function)."""
    if (percent is None) == (energy is None):
        raise InputError("lowrank expects either a MACs cut (lowrank-N) or an energy to keep (lowrank-eNN)")
    graph = read_graph(model)
    plans, details = {}, []
    for node in graph.nodes:
        layer = node.layer
        if not _factorizable(layer) or layer.name in graph.shared or set(node.outputs) & set(graph.model_outputs):
            continue  # the output layer stays whole: a rank below the class count caps what it can tell apart
        kernel = np.asarray(layer.get_weights()[0], dtype=np.float64)
        cin, cout = kernel.shape[-2], kernel.shape[-1]
        u, s, vt = np.linalg.svd(kernel.reshape(cin, cout), full_matrices=False)
        rank = min(choose_rank(s, cin, cout, percent, energy), len(s))
        if only_if_cheaper and rank >= break_even_rank(cin, cout):
            continue
        root = np.sqrt(s[:rank])
        first, second = u[:, :rank] * root, root[:, None] * vt[:rank]
        energy_kept = float((s[:rank] ** 2).sum() / max((s ** 2).sum(), 1e-30))
        plans[layer.name] = (layer, rank, first, second)
        details.append({"layer": layer.name, "cin": int(cin), "cout": int(cout), "rank": int(rank),
                        "energy_kept": round(energy_kept, 6)})
    if not plans:
        raise InputError("lowrank found no Dense or 1x1 Conv2D layer whose MACs a factorization would cut "
                         f"({'energy' if energy else 'ratio'} {energy or percent}); try a lower energy "
                         "(lowrank-e90) or prune-channels-N")

    def edit(config):
        config = copy.deepcopy(config)
        out = []
        for entry in config["layers"]:
            name = entry["config"]["name"]
            if name in plans:
                layer, rank = plans[name][:2]
                thin = copy.deepcopy(entry)
                thin["name"] = thin["config"]["name"] = name + SUFFIX
                cfg = thin["config"]
                cfg.update({"activation": "linear", "use_bias": False})
                cfg["units" if "units" in cfg else "filters"] = int(rank)
                out.append(thin)
                entry = copy.deepcopy(entry)
                entry["inbound_nodes"] = [{"args": [_tensor_ref(name + SUFFIX, entry, rank)], "kwargs": {}}]
                if "strides" in entry["config"]:  # the first layer already applied stride and padding
                    entry["config"].update({"strides": [1, 1], "padding": "valid"})
                entry.pop("build_config", None)
            out.append(entry)
        config["layers"] = out
        return config

    def weights_for(new_layer):
        name = new_layer.name
        if name.endswith(SUFFIX) and name[:-len(SUFFIX)] in plans:
            layer, _, first, _ = plans[name[:-len(SUFFIX)]]
            return [first.reshape(new_layer.get_weights()[0].shape)]
        if name in plans:
            layer, _, _, second = plans[name]
            return [second.reshape(new_layer.get_weights()[0].shape), *layer.get_weights()[1:]]
        return None

    return rebuild(model, edit, weights_for), details


def _tensor_ref(producer: str, entry: dict, rank: int) -> dict:
    """An inbound-node reference to the first layer's output, in the functional config's format."""
    original = entry["inbound_nodes"][0]["args"][0]
    ref = copy.deepcopy(original) if isinstance(original, dict) else {"class_name": "__keras_tensor__", "config": {}}
    cfg = ref.setdefault("config", {})
    if cfg.get("shape"):
        cfg["shape"] = list(cfg["shape"][:-1]) + [int(rank)]
    cfg["keras_history"] = [producer, 0, 0]
    return ref
