"""Compression: transforms of the source model before conversion (a stage between source and
format), for Keras models here and for PyTorch sources (.pt2, TorchScript, nn.Module, ONNX) in
`pytorch/`, which applies the same steps to the model's torch.export graph. Structured channel pruning (`channels`), depth pruning of residual blocks (`blocks`),
low-rank factorization (`lowrank`) and knowledge distillation (`distill`), composed by `steps` from
names like `prune-channels-30+distill+int8`.

    model, provenance, recipe = apply_recipe(keras_model, "prune-channels-30+distill+int8", calibration)
    # -> compressed model, one provenance row per step, and "int8" for the converter

Provenance rows: {"step", "params", "details", "macs_before", "macs_after", "params_before",
"params_after", "seconds"}; MACs as edgekit.tflite.graph counts them in the converted graph.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from edgekit.errors import InputError

from .steps import Step, parse_step, parse_steps, split_recipe

__all__ = ["Step", "apply_recipe", "compress", "parse_step", "parse_steps", "split_recipe"]


def compress(keras_model, steps: list[Step] | str, calibration_arrays: list[np.ndarray] | None, labels=None,
             seed: int = 0, progress: Callable[[str], None] = lambda msg: None,
             inputs: list[np.ndarray] | None = None):
    """(compressed model, provenance). The input model is not modified; distillation's teacher is
    the model as given (before any step). A PyTorch module (nn.Module, exported program's module,
    TorchScript) is compressed by pytorch.compress_torch, which needs `inputs` (one example array
    per model input) and returns the compressed torch.fx GraphModule."""
    if _is_torch(keras_model):
        from .pytorch import compress_torch

        if inputs is None:
            raise InputError("compressing a PyTorch model needs example inputs (one array per model input) to "
                             "capture its graph; pass inputs=[array]")
        return compress_torch(keras_model, parse_steps(steps) if isinstance(steps, str) else list(steps),
                              calibration_arrays, inputs, labels, seed, progress)
    from .blocks import prune_blocks
    from .channels import prune_channels
    from .distill import check_can_distill, distill
    from .keras_graph import as_functional, keras_macs
    from .lowrank import factorize

    steps = parse_steps(steps) if isinstance(steps, str) else list(steps)
    import keras

    # before any model is rebuilt: layers draw their dropout seed generators when they are built
    keras.utils.set_random_seed(seed)
    teacher = as_functional(keras_model)
    model, provenance = teacher, []
    for step in steps:
        start = time.perf_counter()
        macs_before, params_before = keras_macs(model), int(model.count_params())
        progress(f"  {step.name}")
        if step.kind == "prune-channels":
            model, details = prune_channels(model, step.params["percent"], step.params["criterion"], calibration_arrays,
                                            multiple=step.params.get("multiple", 1))
        elif step.kind == "prune-blocks":
            model, details = prune_blocks(model, step.params["percent"], calibration_arrays)
        elif step.kind == "lowrank":
            model, details = factorize(model, percent=step.params.get("percent"), energy=step.params.get("energy"))
        else:
            check_can_distill(model is not teacher, calibration_arrays)
            details = distill(model, teacher, calibration_arrays, labels, step.params["epochs"], seed, progress)
        provenance.append({"step": step.name, "params": dict(step.params), "details": details,
                           "macs_before": macs_before, "macs_after": keras_macs(model),
                           "params_before": params_before, "params_after": int(model.count_params()),
                           "seconds": round(time.perf_counter() - start, 2)})
    return model, provenance


def _is_torch(model) -> bool:
    """Without importing torch: a model can only be a torch module if torch is already loaded."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, (torch.nn.Module, torch.jit.ScriptModule))


def apply_recipe(keras_model, recipe: str, calibration_arrays: list[np.ndarray] | None, labels=None, seed: int = 0,
                 progress: Callable[[str], None] = lambda msg: None):
    """For a composed recipe name: (compressed model, provenance, the quantization recipe left, or None).
    A recipe without compression steps returns the model unchanged and an empty provenance."""
    steps, rest = split_recipe(recipe)
    if not steps:
        return keras_model, [], rest
    model, provenance = compress(keras_model, steps, calibration_arrays, labels, seed, progress)
    return model, provenance, rest
