"""Compression of PyTorch sources (.pt2, TorchScript, nn.Module from code, ONNX through onnx2torch):
the steps of the Keras package (prune-channels, prune-blocks, lowrank, distill) on the ATen-level
GraphModule that torch.export makes of any of them (see graph.py), with the same provenance rows.

    gm, provenance = compress_torch(module, steps, calibration_arrays, inputs=[example_array])
    program = exported(gm, [example_array])    # an ExportedProgram, saved as .pt2 by source.py

MACs in the rows are counted on the ATen graph as edgekit.tflite.graph counts the converted one
(tests check the two agree).
"""
from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np

from edgekit.errors import ConversionError, InputError, first_line

from ..steps import Step
from .graph import count_params, exported, graph_macs, working_graph

__all__ = ["compress_torch", "exported", "working_graph"]


def compress_torch(module, steps: list[Step], calibration_arrays: list[np.ndarray] | None, inputs: list[np.ndarray],
                   labels=None, seed: int = 0, progress: Callable[[str], None] = lambda msg: None):
    """(compressed GraphModule, provenance). `inputs`: one example array per model input (batch 1,
    the source's layout and dtype). The module given is not modified; distillation's teacher is its
    graph before any step."""
    import_torch_seed(seed)
    teacher = working_graph(module, inputs)
    model, provenance = copy.deepcopy(teacher), []
    compressed = False
    for step in steps:
        start = time.perf_counter()
        macs_before, params_before = graph_macs(model), count_params(model)
        progress(f"  {step.name}")
        try:
            model, details = _apply(step, model, teacher, compressed, calibration_arrays, inputs, labels, seed,
                                    progress)
        except (InputError, ConversionError):
            raise
        except Exception as e:  # an op or graph shape the transform did not foresee: one line, not a traceback
            raise ConversionError(f"{step.name} could not transform this PyTorch model's graph ({type(e).__name__}: "
                                  f"{first_line(str(e), 200)}); convert it without that step, or set "
                                  "EDGEKIT_DEBUG=1 and report the model") from e
        compressed = True
        provenance.append({"step": step.name, "params": dict(step.params), "details": details,
                           "macs_before": macs_before, "macs_after": graph_macs(model),
                           "params_before": params_before, "params_after": count_params(model),
                           "seconds": round(time.perf_counter() - start, 2)})
    return model, provenance


def _apply(step: Step, model, teacher, compressed: bool, calibration_arrays, inputs, labels, seed, progress):
    """(model, details) after one step; prune-blocks returns a new graph, the others edit `model`."""
    from .blocks import prune_blocks
    from .channels import prune_channels
    from ..distill import check_can_distill
    from .distill import distill
    from .lowrank import factorize

    if step.kind == "prune-channels":
        details = prune_channels(model, inputs, step.params["percent"], step.params["criterion"],
                                 calibration_arrays, multiple=step.params.get("multiple", 1))
    elif step.kind == "prune-blocks":
        model, details = prune_blocks(model, inputs, step.params["percent"], calibration_arrays)
    elif step.kind == "lowrank":
        details = factorize(model, inputs, percent=step.params.get("percent"), energy=step.params.get("energy"))
    else:
        check_can_distill(compressed, calibration_arrays)
        details = distill(model, teacher, calibration_arrays, labels, step.params["epochs"], seed, progress)
    return model, details


def import_torch_seed(seed: int) -> None:
    from .graph import import_torch

    import_torch().manual_seed(seed)
