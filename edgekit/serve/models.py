"""The models `edgekit serve` is given: `[name=]path` specs, loaded once each."""
from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..predictor import Predictor


def parse_model_specs(specs: list[str]) -> dict[str, Path]:
    """'digits=m.tflite' -> {'digits': m.tflite}; without a name, the file name up to its first dot
    (digits_cnn_int8.tflite -> digits_cnn_int8)."""
    paths: dict[str, Path] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        name = name or Path(path).name.split(".")[0]
        if name in paths:
            raise InputError(f"two artifacts are named {name!r}; give distinct names as name=path")
        paths[name] = Path(path)
    return paths


def load_models(specs: list[str], threads: int | None = None) -> dict[str, Predictor]:
    from ..artifact import load
    from ..native_output import quiet_native

    models = {}
    for name, path in parse_model_specs(specs).items():
        with quiet_native():
            models[name] = load(path, threads=threads)
    return models
