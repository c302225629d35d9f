"""Per-sample statistics: the few numbers monitoring keeps for each prediction.

One extractor serves the converter (reference statistics over the validation set), the runtime and
the server (online windows) and `edgekit predict` (per-row stats in the store), so a drift figure
always compares like with like. It runs on every prediction, so it is built for cost: everything
per call is a handful of numpy passes over at most MAX_PIXELS pixels per sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Pixels read per sample. A 224x224x3 input is 150k values: a few passes over all of them cost
# ~50 us, the whole budget (3 % of MobileNetV2 int8's 1.8 ms). A fixed grid of 1024 pixels is read
# instead; the converter measures the reference on the same grid, so both sides describe the same
# statistic (the mean of these pixels, not of the whole image) and subsampling adds no bias to drift.
MAX_PIXELS = 1024


@dataclass(frozen=True)
class Layout:
    """What the extractor measures for one model: the names of its scalar columns, then the
    pixel-histogram bins, then (classifiers) class, confidence, entropy."""
    scalars: tuple[str, ...]
    bins: int
    classes: int  # 0: the first output is not a (batch, classes) score vector

    @property
    def width(self) -> int:
        return len(self.scalars) + self.bins + (3 if self.classes else 0)


class FeatureExtractor:
    """Turns (input batch, first output batch) into one float32 row per sample.

    image: the input is NHWC pixels normalized with `mean`/`std` (statistics are reported in
    pixel units, 0..255, so a brightness of 140 reads as one); otherwise the input is any tensor and
    `input_mean`/`input_std` are in its own units. `edges`: inner bin edges of the value histogram
    (from the reference). `clip`: the real (lo, hi) an int8 input tensor can represent, or None.
    `softmax`: the model outputs logits, so scores are turned into probabilities first.
    """

    def __init__(self, channels: int, image: bool, mean=(0.0,), std=(1.0,), edges=(), clip=None,
                 classes: int = 0, softmax: bool = False):
        self.channels = max(1, int(channels))
        self.image = image
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.edges = np.asarray(edges, np.float32)
        self.clip = clip
        self.softmax = softmax
        self._rescale = image and (bool(np.any(self.std != 1)) or bool(np.any(self.mean != 0)))
        self._ones: dict[int, np.ndarray] = {}  # 1/m vectors by length: averages as dot products
        names = ["brightness", "contrast"] if image else ["input_mean", "input_std"]
        if self.channels > 1:
            names += [f"channel_mean_{c}" for c in range(self.channels)]
        if clip is not None:
            names.append("int8_clipped")
        self.layout = Layout(tuple(names), len(self.edges) + 1 if len(self.edges) else 0, int(classes))

    def pixels(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(subsampled values as (n, pixels, channels) in reporting units, the same in input units)."""
        x = np.asarray(x)
        n = x.shape[0]
        if self.image and x.ndim == 4 and x.shape[1] == self.channels != x.shape[-1]:
            x = x.transpose(0, 2, 3, 1)  # NCHW (PyTorch/ONNX models): channels last for per-channel stats
        flat = x.reshape(n, -1, self.channels) if self.image else x.reshape(n, -1, 1)
        stride = max(1, math.ceil(flat.shape[1] / MAX_PIXELS))
        raw = np.ascontiguousarray(flat[:, ::stride], dtype=np.float32)
        if self._rescale:
            return raw * self.std + self.mean, raw  # back to 0..255 pixels: (x - mean) / std inverted
        return raw, raw

    def inputs(self, x: np.ndarray) -> np.ndarray:
        values, raw = self.pixels(x)
        n = values.shape[0]
        flat = values.reshape(n, -1)
        out = np.empty((n, len(self.layout.scalars) + self.layout.bins), np.float32)
        m = flat.shape[1]
        # numpy's axis reductions cost ~25 us here; a dot product with ones or itself costs ~1 us
        mean = flat @ self._average(m)
        centered = flat - mean[:, None]
        out[:, 0] = mean
        out[:, 1] = np.sqrt(np.einsum("ij,ij->i", centered, centered) / m)
        j = 2
        if self.channels > 1:
            out[:, j:j + self.channels] = self._average(values.shape[1]) @ values
            j += self.channels
        if self.clip is not None:
            lo, hi = self.clip
            rf = raw.reshape(n, -1)
            out[:, j] = 0.0
            # two reductions settle the usual case (nothing out of range); count only when needed
            out_of_range = (rf.min(axis=1) < lo) | (rf.max(axis=1) > hi)
            if out_of_range.any():
                bad = rf[out_of_range]
                out[out_of_range, j] = ((bad < lo) | (bad > hi)).mean(axis=1)
            j += 1
        if self.layout.bins:
            # bin k holds edges[k-1] <= v < edges[k], as histogram_rows; sorting 3k values and looking
            # the edges up in them is ~10x cheaper than looking each value up among the edges
            ordered = np.sort(flat, axis=1)
            at_least = m - (np.searchsorted(ordered[0], self.edges)[None] if n == 1 else
                            np.stack([np.searchsorted(row, self.edges) for row in ordered]))
            counts = np.empty((n, self.layout.bins), np.float32)
            counts[:, 0] = m - at_least[:, 0]
            counts[:, 1:-1] = at_least[:, :-1] - at_least[:, 1:]
            counts[:, -1] = at_least[:, -1]
            out[:, j:] = counts / np.float32(m)
        return out

    def _average(self, m: int) -> np.ndarray:
        if m not in self._ones:
            self._ones[m] = np.full(m, 1 / m, np.float32)
        return self._ones[m]

    def outputs(self, scores: np.ndarray) -> np.ndarray:
        """(n, 3): predicted class, confidence (top probability), entropy in nats."""
        p = probabilities(scores, self.softmax)
        out = np.empty((p.shape[0], 3), np.float32)
        out[:, 0] = p.argmax(axis=1)
        out[:, 1] = p.max(axis=1)
        out[:, 2] = -np.einsum("ij,ij->i", p, np.log(np.maximum(p, np.float32(1e-12))))
        return out

    def rows(self, x: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        ins = self.inputs(x)
        if not self.layout.classes:
            return ins
        if scores is None or scores.ndim != 2 or scores.shape[1] != self.layout.classes:
            tail = np.full((ins.shape[0], 3), np.nan, np.float32)  # shape changed: inputs still count
        else:
            tail = self.outputs(scores)
        return np.concatenate([ins, tail], axis=1)

    # -- a row as a small dict (predict stores) and back --------------------------------------------
    def to_dict(self, row: np.ndarray) -> dict:
        lay = self.layout
        d = {name: _short(v, 6) for name, v in zip(lay.scalars, row)}
        if lay.bins:
            d["hist"] = [_short(v) for v in row[len(lay.scalars):len(lay.scalars) + lay.bins]]
        if lay.classes and not np.isnan(row[-3]):
            # 9 digits: confidences sit on an int8 output's codes, compared exactly with the reference's
            d["class"], d["confidence"], d["entropy"] = int(row[-3]), _short(row[-2], 9), _short(row[-1], 9)
        return d

    def from_dicts(self, dicts: list[dict]) -> np.ndarray:
        """Rows back from stored dicts; a value missing in a row (an older layout) is NaN."""
        lay = self.layout
        out = np.full((len(dicts), lay.width), np.nan, np.float32)
        for i, d in enumerate(dicts):
            for j, name in enumerate(lay.scalars):
                v = d.get(name)
                if isinstance(v, (int, float)):
                    out[i, j] = v
            hist = d.get("hist")
            if lay.bins and isinstance(hist, list) and len(hist) == lay.bins:
                out[i, len(lay.scalars):len(lay.scalars) + lay.bins] = hist
            if lay.classes and all(isinstance(d.get(k), (int, float)) for k in ("class", "confidence", "entropy")):
                out[i, -3:] = (d["class"], d["confidence"], d["entropy"])
        return out


def histogram_rows(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Per-row fraction of values in each bin: (-inf, e0), [e0, e1), ..., [ek, inf)."""
    n, m = values.shape
    bins = len(edges) + 1
    idx = np.searchsorted(edges, values, side="right")
    idx += (np.arange(n) * bins)[:, None]
    return np.bincount(idx.ravel(), minlength=n * bins).reshape(n, bins) / np.float32(m)


def probabilities(scores: np.ndarray, softmax: bool) -> np.ndarray:
    p = np.asarray(scores, np.float32)
    if softmax:
        p = np.exp(p - p.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
    return p


def looks_like_probabilities(scores: np.ndarray) -> bool:
    s = np.asarray(scores, np.float64)
    return bool(s.ndim == 2 and s.min() >= -1e-3 and np.allclose(s.sum(axis=1), 1.0, atol=0.02))


def _short(v, digits: int = 5) -> float:
    """Five significant digits: per-row stats and the manifest stay small, drift needs no more.
    Bin edges and quantiles take 9 (digits=9: a float32 round-trips exactly): an int8 output's top code
    0.99609375 cut to 0.99609 (or 0.9960938, the next float32) would put every top-confidence sample above the reference maximum."""
    v = float(v)
    return float(f"{v:.{digits}g}") if math.isfinite(v) else v
