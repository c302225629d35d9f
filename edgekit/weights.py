"""Weights that load but are wrong: a digest recorded at conversion, and non-finite values.

A flipped byte in a weight blob passes every structural check (the file is well-formed, the
runtime runs it) and predicts wrong numbers; issue #15 found 7 of 59 Core ML corruptions that
loaded silently. The converter records a sha256 of the weights in the manifest
(`weights_sha256`); loading an edgekit artifact recomputes it. Files from elsewhere have no
digest, so NaN (and Inf in convolution/matmul weights, where it is never meaningful) is refused
by name instead.

What the digest covers, per format, so it survives the metadata being rewritten:
- .tflite: the bytes of every buffer a tensor uses, in buffer order (metadata buffers, where the
  manifest itself lives, are not tensor buffers); computed in edgekit.tflite.weights.
- .mlpackage: every `*.bin` under `Data/` (the weight blob files), by relative path.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from .errors import ArtifactError

def coreml_weights_sha256(package: Path) -> str:
    h = hashlib.sha256()
    data = package / "Data"
    for f in sorted(p for p in data.rglob("*.bin") if p.is_file()):
        h.update(str(f.relative_to(data)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_digest(recorded: str | None, actual: str, origin: str) -> None:
    if recorded and recorded != actual:
        raise ArtifactError(f"{origin}: its weights do not match the sha256 recorded at conversion "
                            f"({recorded[:12]}..., got {actual[:12]}...): the file was damaged or altered after "
                            "edgekit wrote it; re-copy or re-convert it")


def check_constants_finite(constants: dict, origin: str) -> None:
    """Core ML program constants (after decompression): NaN anywhere, Inf in multi-dimensional
    ones (weights; a scalar -inf can be a legitimate clamp bound)."""
    for name, value in constants.items():
        array = np.asarray(value) if isinstance(value, np.ndarray) else None
        if array is None or array.dtype.kind != "f":
            continue
        bad = np.isnan(array) | (np.isinf(array) if array.ndim >= 2 else False)
        if np.any(bad):
            raise ArtifactError(f"{origin}: constant {name!r} holds {int(np.sum(bad))} NaN/infinite value(s) of "
                                f"{array.size}; the package is damaged, re-copy or re-convert it")
