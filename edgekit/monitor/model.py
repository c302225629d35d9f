"""`edgekit.load(path, monitor=True)`: a loaded model that measures what it is fed.

A thin Predictor around the loaded one: every call of `run` (and so predict, classify,
predict_batch) feeds the first input and first output to a DriftMonitor; everything else is the
wrapped model's. Only the default signature is watched: the reference describes that one.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InputError
from ..predictor import Predictor
from .window import DriftMonitor


def watch(model: Predictor, name: str | None = None, every: int = 100) -> Predictor:
    """`model` monitored when its manifest has reference_stats, else `model` itself. every=0: rows
    only, no online evaluation (edgekit predict: `edgekit monitor` judges the stored rows later)."""
    has = model.manifest is not None and model.manifest.reference_stats
    return MonitoredModel(model, name, every=every or 2**62) if has else model


class MonitoredModel(Predictor):
    def __init__(self, model: Predictor, name: str | None = None, window: int = 200, every: int = 100):
        reference = model.manifest.reference_stats if model.manifest is not None else None
        if not reference:
            raise InputError(f"monitoring expects an artifact whose manifest has reference_stats, {model.origin} has "
                             "none; re-convert it with edgekit convert --validate DATA, or load it without monitor")
        self.model = model
        self.monitor = DriftMonitor(reference, model.inputs[0], name or model.origin, window, every)

    def __getattr__(self, item: str) -> Any:  # size_bytes, signatures, input_tensor_indices...
        return getattr(self.__dict__["model"], item)

    # Predictor declares these as class attributes, which __getattr__ never sees: forward them.
    origin = property(lambda self: self.model.origin)
    manifest = property(lambda self: self.model.manifest)
    labels = property(lambda self: self.model.labels)
    preprocessing = property(lambda self: self.model.preprocessing)
    backend = property(lambda self: self.model.backend)
    format = property(lambda self: self.model.format)

    @property
    def inputs(self):
        return self.model.inputs

    @property
    def outputs(self):
        return self.model.outputs

    @property
    def resizable_batch(self) -> bool:
        return self.model.resizable_batch

    def signature_inputs(self, signature: str | None):
        return self.model.signature_inputs(signature)

    def signature_outputs(self, signature: str | None):
        return self.model.signature_outputs(signature)

    def run(self, arrays: Sequence[np.ndarray], signature: str | None = None) -> list[np.ndarray]:
        outputs = self.model.run(arrays, signature)
        if signature is None:
            self.last_rows = self.monitor.observe(np.asarray(arrays[0]), outputs[0])
        return outputs

    def last_stats(self) -> str | None:
        """The statistics of the last single-sample run as compact JSON (the `stats` column of
        edgekit predict's stores, read back by `edgekit monitor`); None after a batch."""
        rows = getattr(self, "last_rows", None)
        if rows is None or rows.shape[0] != 1:
            return None
        return json.dumps(self.monitor.extractor.to_dict(rows[0]), separators=(",", ":"))

    def drift(self) -> dict[str, Any]:
        """The current window's statistics (evaluated now) and alert counts."""
        self.monitor.evaluate()
        return self.monitor.report()
