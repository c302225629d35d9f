"""The pipeline's side of compression: a loaded Keras or PyTorch/ONNX source and a composed recipe
name in, the compressed model as a source of its own out, ready for any format builder.

    with compressed_source(source, "prune-channels-30+distill+int8", calibration.arrays) as (src, rows, rest):
        ...  # build `rest` ("int8") from `src`; record `rows` (provenance) in the manifest

The compressed model is saved as .keras in a temporary folder and loaded back through the Keras
source loader, so it is converted exactly like a model the user saved (same SavedModel export, same
output names); the folder and the new source are removed when the block ends. A PyTorch source
(.pt2, TorchScript, nn.Module from code, ONNX through onnx2torch) is compressed on its torch.export
graph, saved with torch.export.save as a .pt2 and loaded back through the PyTorch source loader:
it converts exactly like a user's .pt2 (litert-torch, coremltools), under the original's input and
output names.
"""
from __future__ import annotations

import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.errors import InputError

from . import compress
from .steps import split_recipe


@contextmanager
def compressed_source(source, recipe: str, calibration_arrays: list[np.ndarray] | None, labels=None, seed: int = 0,
                      progress: Callable[[str], None] = lambda msg: None):
    """Yields (source to convert, provenance rows, the quantization recipe left or None). Without
    compression steps in `recipe` it yields the source itself and no rows."""
    steps, rest = split_recipe(recipe)
    if not steps:
        yield source, [], rest
        return
    if getattr(source, "keras_model", None) is None and getattr(source, "torch_module", None) is None:
        raise InputError(f"{recipe!r}: compression steps rebuild Keras or PyTorch models; {Path(source.path).name} "
                         f"is a {source.kind} source. Convert it without them, or give the .keras, .pt2 or .onnx model")
    torch_source = source.keras_model is None
    if torch_source:
        from ..sources.torch import example_array

        model, provenance = compress(source.torch_module, steps, calibration_arrays, labels, seed, progress,
                                     inputs=[example_array(t) for t in source.inputs])
    else:
        model, provenance = compress(source.keras_model, steps, calibration_arrays, labels, seed, progress)
    folder = tempfile.TemporaryDirectory(prefix="edgekit-compressed-")
    compressed = None
    try:
        stem = Path(source.path).name.split('.')[0] or 'model'
        if torch_source:
            compressed = _saved_torch(model, source, Path(folder.name) / f"{stem}.pt2")
        else:
            from ..sources.keras import load as load_keras

            path = Path(folder.name) / f"{stem}.keras"
            model.save(path)
            compressed = load_keras(path, "keras")
        yield compressed, provenance, rest
    finally:
        if compressed is not None:
            compressed.close()
        folder.cleanup()


def _saved_torch(graph_module, source, path: Path):
    """The compressed graph saved as a .pt2 and loaded as a torch_export source, with the original's
    tensor names (an ONNX model's output is 'probs', not the exported program's 'output')."""
    import dataclasses

    from ..sources.torch import example_array, import_torch
    from ..sources.torch import load as load_torch
    from .pytorch import exported

    torch = import_torch()
    torch.export.save(exported(graph_module, [example_array(t) for t in source.inputs]), str(path))
    loaded = load_torch(path, "torch_export")
    inputs = [dataclasses.replace(t, name=o.name) for t, o in zip(loaded.inputs, source.inputs)]
    return dataclasses.replace(loaded, inputs=inputs if len(inputs) == len(source.inputs) else loaded.inputs,
                               output_names=list(source.output_names)
                               if len(source.output_names) == len(loaded.output_names) else loaded.output_names)
