"""Compare a window of per-sample statistics with the reference: PSI and KS in plain numpy.

Each statistic fires only when it is both large (PSI over 0.2, KS over 0.15, confidence down 0.05:
the conventional "significant shift" sizes) and unlikely under no drift at ALPHA for the window and
reference sizes at hand. The second condition is what keeps a 150-sample reference usable: with
100 samples against 150, pure sampling noise gives a 10-bin PSI around 0.15, so a bare 0.2 cut-off
alarms on a good fraction of unshifted windows.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .features import Layout
from .reference import LEVELS, class_bins

ALPHA = 0.001          # per statistic and window; ~12 statistics -> at most ~1 % of clean windows alarm
Z = 3.0902             # one-sided normal quantile at 1 - ALPHA
KS_C = 1.9495          # two-sample KS coefficient c(ALPHA) = sqrt(-ln(ALPHA / 2) / 2)
PSI_MIN, KS_MIN, DROP_MIN, CLIP_MIN = 0.2, 0.15, 0.05, 0.01
MIN_SAMPLES = 30       # below this a window is "warming up": no statistic is reported


@dataclass
class Statistic:
    name: str          # e.g. brightness_psi, class_frequency_psi, int8_clipped_fraction
    value: float
    threshold: float
    alert: bool

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def evaluate(rows: np.ndarray, ref: dict[str, Any], layout: Layout) -> list[Statistic]:
    """Every drift statistic for one window of extractor rows (an empty list under MIN_SAMPLES)."""
    if rows.shape[0] < MIN_SAMPLES:
        return []
    m = ref["samples"]
    stats: list[Statistic] = []
    features = ref["features"]
    columns = {name: rows[:, i] for i, name in enumerate(layout.scalars)}
    if layout.classes:
        columns["confidence"], columns["entropy"] = rows[:, -2], rows[:, -1]
    for name, col in columns.items():
        if name == "int8_clipped" or name not in features:
            continue
        col = col[np.isfinite(col)]
        if col.size < MIN_SAMPLES:
            continue
        f = features[name]
        stats.append(_psi_stat(f"{name}_psi", _bin_counts(col, f["edges"]), f["fractions"], col.size, m))
        d = ks_against_quantiles(col, f["quantiles"])
        stats.append(Statistic(f"{name}_ks", d, *_limit(KS_MIN, KS_C * math.sqrt((col.size + m) / (col.size * m)), d)))
    if layout.bins:
        hist = rows[:, len(layout.scalars):len(layout.scalars) + layout.bins]
        hist = hist[np.isfinite(hist).all(axis=1)]
        if hist.shape[0] >= MIN_SAMPLES:
            # pooled pixel fractions; each sample counts once (its pixels are not independent draws)
            stats.append(_psi_stat("pixel_histogram_psi", hist.mean(axis=0) * hist.shape[0],
                                   ref["histogram"]["fractions"], hist.shape[0], m))
    if layout.classes and "classes" in ref:
        predicted = rows[:, -3]
        predicted = predicted[np.isfinite(predicted)]
        if predicted.size >= MIN_SAMPLES:
            stats.append(_psi_stat("class_frequency_psi", class_bins(ref["classes"], predicted),
                                   ref["classes"]["fractions"], predicted.size, m))
            conf = rows[:, -2][np.isfinite(rows[:, -2])]
            f = features["confidence"]
            drop = f["mean"] - float(conf.mean())
            noise = Z * math.sqrt(f["std"] ** 2 / m + float(conf.var()) / conf.size)
            stats.append(Statistic("confidence_drop", drop, *_limit(DROP_MIN, noise, drop)))
    if "int8_clipped" in columns:
        clipped = columns["int8_clipped"][np.isfinite(columns["int8_clipped"])]
        if clipped.size:
            base = ref.get("int8_input", {}).get("clipped_fraction", 0.0)
            value = float(clipped.mean())
            stats.append(Statistic("int8_clipped_fraction", value, *_limit(base + CLIP_MIN, 0.0, value)))
    return stats


def psi(counts: np.ndarray, ref_fractions, n: int, m: int) -> float:
    """Population stability index of window counts against reference fractions. Both sides get half
    a count per bin (Jeffreys smoothing) so an empty bin is a finite, size-aware penalty, not log(0)."""
    counts = np.asarray(counts, np.float64)
    b = counts.size
    w = (counts + 0.5) / (n + 0.5 * b)
    r = (np.asarray(ref_fractions, np.float64) * m + 0.5) / (m + 0.5 * b)
    return float(np.sum((w - r) * np.log(w / r)))


def ks_against_quantiles(sample: np.ndarray, quantiles) -> float:
    """Two-sample KS distance with the reference CDF rebuilt from its stored quantiles: linear between
    distinct quantiles, and a jump where several are equal (a point mass, e.g. an int8 output's top
    code: confidence 0.996 for most digits). Compared at every point from both sides."""
    q = np.asarray(quantiles, np.float32).astype(np.float64)  # rows are float32: compare at that precision
    xp, first = np.unique(q, return_index=True)            # lowest level reaching each value
    last = LEVELS[len(q) - 1 - np.unique(q[::-1], return_index=True)[1]]  # highest level at it
    first = LEVELS[first]
    s = np.sort(sample.astype(np.float32).astype(np.float64))
    points = np.concatenate([xp, s])
    i = np.searchsorted(xp, points, side="right") - 1
    lo, hi = np.clip(i, 0, len(xp) - 1), np.clip(i + 1, 0, len(xp) - 1)
    span = xp[hi] - xp[lo]
    t = np.divide(points - xp[lo], span, out=np.zeros_like(span), where=span > 0)
    between = last[lo] + t * (first[hi] - last[lo])
    exact = points == xp[lo]
    ref_right = np.where(i < 0, 0.0, np.where(points > xp[-1], 1.0, np.where(exact, last[lo], between)))
    ref_left = np.where(i < 0, 0.0, np.where(points > xp[-1], 1.0, np.where(exact, first[lo], between)))
    win_right = np.searchsorted(s, points, side="right") / s.size
    win_left = np.searchsorted(s, points, side="left") / s.size
    return float(max(np.abs(win_right - ref_right).max(), np.abs(win_left - ref_left).max()))


def chi2_quantile(dof: int, z: float = Z) -> float:
    """Wilson-Hilferty: the chi-square quantile at the normal quantile z, within ~1 % for dof >= 3."""
    k = max(dof, 1)
    return k * (1 - 2 / (9 * k) + z * math.sqrt(2 / (9 * k))) ** 3


def _psi_stat(name: str, counts, ref_fractions, n: int, m: int) -> Statistic:
    value = psi(counts, ref_fractions, n, m)
    # Under no drift PSI * nm/(n+m) is ~chi-square with bins-1 degrees of freedom.
    noise = (1 / n + 1 / m) * chi2_quantile(len(ref_fractions) - 1)
    return Statistic(name, value, *_limit(PSI_MIN, noise, value))


def _limit(floor: float, noise: float, value: float) -> tuple[float, bool]:
    threshold = max(floor, noise)
    return float(threshold), bool(value > threshold)


def _bin_counts(values: np.ndarray, edges) -> np.ndarray:
    e = np.asarray(edges, np.float32)
    return np.bincount(np.searchsorted(e, values.astype(np.float32), side="right"), minlength=len(e) + 1)
