"""One parity report for every artifact: does it still compute what the source computed?

Per output: max and mean absolute error, cosine similarity and SNR (dB) over all
validation samples; for classifier outputs (labels were given, or the source's output rows
are probabilities), top-1 agreement. The
artifact-level figures are the worst over outputs, so one bad head cannot hide.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

# SNR reported when the error is exactly zero (identical outputs): a finite, JSON-safe cap
SNR_CAP_DB = 200.0


def looks_like_probabilities(output: np.ndarray) -> bool:
    """(N, K>1), non-negative rows summing to 1: a softmax classifier head."""
    out = np.asarray(output, dtype=np.float64)
    return out.ndim == 2 and out.shape[1] > 1 and bool(np.all(out >= 0)) and bool(
        np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def output_parity(name: str, reference: np.ndarray, candidate: np.ndarray, classifier: bool = True) -> dict[str, Any]:
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(candidate, dtype=np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"output {name!r}: reference shape {ref.shape} != candidate shape {got.shape}")
    err = got - ref
    signal, noise = float(np.sum(ref * ref)), float(np.sum(err * err))
    if noise == 0.0:
        snr = SNR_CAP_DB
    elif signal == 0.0:
        snr = -SNR_CAP_DB
    else:
        snr = min(SNR_CAP_DB, 10.0 * math.log10(signal / noise))
    a, b = ref.ravel(), got.ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(np.dot(a, b) / norm) if norm > 0 else (1.0 if noise == 0.0 else 0.0)
    top1 = None
    if classifier and ref.ndim == 2 and ref.shape[1] > 1:
        top1 = float(np.mean(np.argmax(ref, axis=1) == np.argmax(got, axis=1)))
    return {"name": name, "max_abs_err": float(np.max(np.abs(err))) if err.size else 0.0,
            "mean_abs_err": float(np.mean(np.abs(err))) if err.size else 0.0,
            "cosine": cosine, "snr_db": snr, "top1_agreement": top1}


def parity_report(names: Sequence[str], references: Sequence[np.ndarray], candidates: Sequence[np.ndarray],
                  samples: int, inputs_note: str, classifier_outputs: Sequence[str] = ()) -> dict[str, Any]:
    """classifier_outputs: the outputs whose top-1 agreement is meaningful (class scores)."""
    outputs = [output_parity(n, r, c, n in classifier_outputs) for n, r, c in zip(names, references, candidates)]
    top1 = [o["top1_agreement"] for o in outputs if o["top1_agreement"] is not None]
    return {
        "cosine": min(o["cosine"] for o in outputs),
        "snr_db": min(o["snr_db"] for o in outputs),
        "max_abs_err": max(o["max_abs_err"] for o in outputs),
        "mean_abs_err": max(o["mean_abs_err"] for o in outputs),
        "top1_agreement": min(top1) if top1 else None,
        "samples": samples,
        "inputs": inputs_note,
        "outputs": outputs,
    }
