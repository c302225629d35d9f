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
# a source top-1 ahead of its runner-up by less than this many mean absolute errors is a tie
DECISIVE_ERRORS = 2.0


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
    top1 = decisive = None
    if classifier and ref.ndim == 2 and ref.shape[1] > 1:
        agree = np.argmax(ref, axis=1) == np.argmax(got, axis=1)
        top1 = float(np.mean(agree))
        # The gate judges top-1 on samples the source itself decides: a runner-up closer than twice
        # the artifact's mean error is a tie any rounding may flip (an untrained model's
        # near-uniform softmax gave 85 % agreement at cosine 0.99999). A broken artifact's large
        # error leaves few decisive samples, but its cosine fails the gate instead.
        top2 = np.sort(ref, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > DECISIVE_ERRORS * float(np.mean(np.abs(err)))
        decisive = float(np.mean(agree[clear])) if clear.any() else None
    return {"name": name, "max_abs_err": float(np.max(np.abs(err))) if err.size else 0.0,
            "mean_abs_err": float(np.mean(np.abs(err))) if err.size else 0.0,
            "cosine": cosine, "snr_db": snr, "top1_agreement": top1, "top1_agreement_decisive": decisive}


def parity_report(names: Sequence[str], references: Sequence[np.ndarray], candidates: Sequence[np.ndarray],
                  samples: int, inputs_note: str, classifier_outputs: Sequence[str] = ()) -> dict[str, Any]:
    """classifier_outputs: the outputs whose top-1 agreement is meaningful (class scores)."""
    outputs = [output_parity(n, r, c, n in classifier_outputs) for n, r, c in zip(names, references, candidates)]
    top1 = [o["top1_agreement"] for o in outputs if o["top1_agreement"] is not None]
    decisive = [o["top1_agreement_decisive"] for o in outputs if o["top1_agreement_decisive"] is not None]
    return {
        "cosine": min(o["cosine"] for o in outputs),
        "snr_db": min(o["snr_db"] for o in outputs),
        "max_abs_err": max(o["max_abs_err"] for o in outputs),
        "mean_abs_err": max(o["mean_abs_err"] for o in outputs),
        "top1_agreement": min(top1) if top1 else None,
        "top1_agreement_decisive": min(decisive) if decisive else None,
        "samples": samples,
        "inputs": inputs_note,
        "outputs": outputs,
    }


def gate_failure(parity: dict[str, Any], min_cosine: float, min_top1: float) -> str | None:
    """Why an artifact fails its parity gate (one line), or None when it passes."""
    reasons = []
    if not parity["cosine"] >= min_cosine:  # `not >=` also catches NaN
        reasons.append(f"cosine {parity['cosine']:.6f} < {min_cosine}")
    top1 = parity.get("top1_agreement_decisive")
    if top1 is not None and not top1 >= min_top1:
        reasons.append(f"top-1 agreement {100 * top1:.1f}% < {100 * min_top1:.0f}% (on inputs whose top class "
                       "leads by more than twice the mean error)")
    return "parity gate: " + ", ".join(reasons) if reasons else None


def output_saturation(name: str, candidate: np.ndarray, scale: float, reference: np.ndarray) -> str | None:
    """An integer output that cannot represent what the source computes: most values stuck at
    one code (e.g. 1000 softmax probabilities of ~0.001, all below the int8 step of 1/256, all 0).
    `candidate` is the artifact's dequantized output. Says what fixes it, or None when healthy."""
    values = np.asarray(candidate).ravel()
    if values.size == 0 or not scale:
        return None
    _, counts = np.unique(values, return_counts=True)
    stuck = float(counts.max()) / values.size
    below_step = float(np.mean(np.abs(np.asarray(reference, dtype=np.float64)) < scale / 2))
    if stuck < 0.9 or below_step < 0.5:
        return None
    return (f"output {name!r} underflows its integer type: {100 * stuck:.0f}% of its values are one code and "
            f"{100 * below_step:.0f}% of the source's values are below half a quantization step ({scale:.3g}); "
            "keep the last op and the output in float: --keep-float SOFTMAX --io-out float "
            "(or end the model at the logits)")
