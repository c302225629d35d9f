"""One module per artifact format, each owning its artifact end to end:
`build(job, recipe, path) -> ArtifactResult` converts, verifies parity, embeds the manifest
and writes atomically. Framework imports happen inside, so importing this costs nothing."""
from __future__ import annotations

import importlib
from pathlib import Path

from edgekit.recipes import COREML, TFLITE

_MODULES = {TFLITE: "tflite", COREML: "coreml"}


def build(job, fmt: str, recipe: str, path: Path):
    return importlib.import_module(f"{__name__}.{_MODULES[fmt]}").build(job, recipe, path)
