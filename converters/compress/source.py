"""The pipeline's side of compression: a loaded Keras source and a composed recipe name in, the
compressed model as a source of its own out, ready for any format builder.

    with compressed_source(source, "prune-channels-30+distill+int8", calibration.arrays) as (src, rows, rest):
        ...  # build `rest` ("int8") from `src`; record `rows` (provenance) in the manifest

The compressed model is saved as .keras in a temporary folder and loaded back through the Keras
source loader, so it is converted exactly like a model the user saved (same SavedModel export, same
output names); the folder and the new source are removed when the block ends.
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
    if getattr(source, "keras_model", None) is None:
        raise InputError(f"{recipe!r}: compression steps rebuild Keras models; {Path(source.path).name} is a "
                         f"{source.kind} source. Convert it without them, or give the .keras model")
    from ..sources.keras import load as load_keras

    model, provenance = compress(source.keras_model, steps, calibration_arrays, labels, seed, progress)
    folder = tempfile.TemporaryDirectory(prefix="edgekit-compressed-")
    compressed = None
    try:
        path = Path(folder.name) / f"{Path(source.path).name.split('.')[0] or 'model'}.keras"
        model.save(path)
        compressed = load_keras(path, "keras")
        yield compressed, provenance, rest
    finally:
        if compressed is not None:
            compressed.close()
        folder.cleanup()
