"""Reference statistics: what the data a model was built for looked like, stored in its manifest.

`edgekit convert` computes them once, from the validation inputs and the source model's outputs on
them (the data the user declared representative; synthetic inputs are no reference and get none),
and stores them under the manifest key `reference_stats`: a few KB of quantiles and histograms,
never the data. `extractor_for` rebuilds, from them, the exact per-sample measurement the runtime,
the server and `edgekit predict` apply online, so the two sides compare like with like.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError
from ..manifest import TensorInfo
from .features import FeatureExtractor, _short, histogram_rows, looks_like_probabilities

SCHEMA = "edgekit.reference_stats/1"
LEVELS = np.linspace(0.0, 1.0, 21)      # quantiles kept per statistic: KS resolution of 5 %
PSI_LEVELS = (0.2, 0.4, 0.6, 0.8)       # 5 bins per statistic: PSI noise stays low on small windows
HISTOGRAM_LEVELS = tuple(np.linspace(0.1, 0.9, 9))  # 10 bins for the pooled pixel values
MAX_CLASSES = 32                        # over this, the most frequent classes plus "other" are kept


def compute_reference(x: np.ndarray, scores: np.ndarray | None, input_info: TensorInfo,
                      preprocessing: dict | None, source: str, files: list[Path] | None = None) -> dict[str, Any]:
    """x: the validation inputs (N, ...) as fed to the model; scores: the source model's first
    output on them; input_info: the artifact's input (its int8 scale/zero-point bound the values the
    artifact can represent); preprocessing: ImageSpec.to_dict() for image models."""
    image = preprocessing is not None
    channels = int(preprocessing["channels"]) if image else 1
    mean, std = (preprocessing["mean"], preprocessing["std"]) if image else ([0.0], [1.0])
    classes = int(scores.shape[1]) if scores is not None and scores.ndim == 2 and scores.shape[1] > 1 else 0
    softmax = bool(classes) and not looks_like_probabilities(scores)
    probe = FeatureExtractor(channels, image, mean, std)
    values, raw = probe.pixels(x)
    pooled = values.reshape(-1)
    edges = _unique(np.quantile(pooled, HISTOGRAM_LEVELS))
    ref: dict[str, Any] = {
        "schema": SCHEMA, "source": source, "samples": int(x.shape[0]),
        "image": image, "channels": channels, "normalization": {"mean": list(mean), "std": list(std)},
        "input_channels": [{"mean": _short(values[..., c].mean()), "std": _short(values[..., c].std())}
                           for c in range(channels)],
        "histogram": {"edges": [_short(e, 9) for e in edges],
                      "fractions": [_short(f) for f in histogram_rows(pooled[None], edges)[0]]},
    }
    clip = clip_range(input_info)
    if clip is not None:
        lo, hi = clip
        ref["int8_input"] = {"scale": input_info.scale, "zero_point": input_info.zero_point, "min": _short(lo),
                             "max": _short(hi), "clipped_fraction": _short(((raw < lo) | (raw > hi)).mean())}
    extractor = FeatureExtractor(channels, image, mean, std, edges, None, classes, softmax)
    rows = extractor.rows(x, scores)
    lay = extractor.layout
    features = {name: summarize(rows[:, i]) for i, name in enumerate(lay.scalars)}
    if classes:
        features["confidence"], features["entropy"] = summarize(rows[:, -2]), summarize(rows[:, -1])
        ref["classes"] = _class_summary(rows[:, -3].astype(np.int64), classes)
        ref["softmax"] = softmax
    ref["features"] = features
    sizes = _original_sizes(files or [])
    if sizes:
        ref["original_size"] = sizes
    return ref


def summarize(v: np.ndarray) -> dict[str, Any]:
    """Mean/std, 21 quantiles (for KS) and 5 quantile bins with their reference fractions (for PSI;
    bins are recounted because ties, such as a point mass at 0, merge quantile edges)."""
    v = v[np.isfinite(v)].astype(np.float64)
    edges = _unique(np.quantile(v, PSI_LEVELS))
    return {"mean": _short(v.mean()), "std": _short(v.std()), "quantiles": [_short(q, 9) for q in np.quantile(v, LEVELS)],
            "edges": [_short(e, 9) for e in edges],
            "fractions": [_short(f) for f in histogram_rows(v[None], edges)[0]]}


def clip_range(info: TensorInfo | None) -> tuple[float, float] | None:
    """The real values an int8/uint8 input tensor can hold, widened by half a step (values that
    round onto the end codes are not clipped)."""
    if info is None or not info.quantized or np.dtype(info.dtype).kind not in "iu":
        return None
    limits = np.iinfo(np.dtype(info.dtype))
    half = info.scale / 2
    return (info.scale * (limits.min - info.zero_point) - half, info.scale * (limits.max - info.zero_point) + half)


def extractor_for(ref: dict[str, Any], input_info: TensorInfo | None = None) -> FeatureExtractor:
    """The per-sample measurement matching `ref`. input_info: the loaded model's input, whose int8
    range wins over the stored one (they agree for the artifact the reference came with)."""
    clip = clip_range(input_info)
    if clip is None and "int8_input" in ref:
        q = ref["int8_input"]
        clip = clip_range(TensorInfo("input", (), "int8", q["scale"], q["zero_point"]))
    norm = ref["normalization"]
    return FeatureExtractor(ref["channels"], ref["image"], norm["mean"], norm["std"], ref["histogram"]["edges"],
                            clip, ref.get("classes", {}).get("count", 0), ref.get("softmax", False))


def check_reference(d: Any) -> None:
    """Raise ArtifactError unless `d` has the shape compute_reference writes (manifest reading)."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ArtifactError(f"the edgekit manifest is malformed: 'reference_stats' {what} (got "
                                f"{str(d)[:80]!r}); re-convert the artifact with edgekit convert or re-copy it")

    def numbers(v: Any) -> bool:
        return isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)

    need(isinstance(d, dict), "is not an object")
    need(d.get("schema") == SCHEMA, f"has schema {d.get('schema')!r}, expected {SCHEMA!r}")
    need(type(d.get("channels")) is int and d["channels"] >= 1, "'channels' is not a positive integer")
    need(type(d.get("samples")) is int and d["samples"] >= 1, "'samples' is not a positive integer")
    need(isinstance(d.get("image"), bool), "'image' is not true/false")
    norm = d.get("normalization")
    need(isinstance(norm, dict) and numbers(norm.get("mean")) and numbers(norm.get("std")),
         "'normalization' lacks number lists 'mean' and 'std'")
    hist = d.get("histogram")
    need(isinstance(hist, dict) and numbers(hist.get("edges")) and numbers(hist.get("fractions"))
         and len(hist["fractions"]) == len(hist["edges"]) + 1, "'histogram' lacks matching 'edges'/'fractions'")
    feats = d.get("features")
    need(isinstance(feats, dict) and feats, "'features' is not a non-empty object")
    for name, f in feats.items():
        need(isinstance(f, dict) and isinstance(f.get("mean"), (int, float)) and isinstance(f.get("std"), (int, float))
             and numbers(f.get("quantiles")) and len(f["quantiles"]) == len(LEVELS) and numbers(f.get("edges"))
             and numbers(f.get("fractions")) and len(f["fractions"]) == len(f["edges"]) + 1,
             f"feature {name!r} lacks mean/std/quantiles/edges/fractions")
    if "classes" in d:
        c = d["classes"]
        need(isinstance(c, dict) and type(c.get("count")) is int and c["count"] > 1 and numbers(c.get("fractions")),
             "'classes' lacks 'count' and 'fractions'")
        kept = c.get("kept")
        need(kept is None or (isinstance(kept, list) and all(type(k) is int for k in kept)
                              and len(c["fractions"]) == len(kept) + 1), "'classes.kept' does not match 'fractions'")
        need(kept is not None or len(c["fractions"]) == c["count"], "'classes.fractions' is not one per class")
    if "int8_input" in d:
        q = d["int8_input"]
        need(isinstance(q, dict) and isinstance(q.get("scale"), (int, float)) and q["scale"] > 0
             and type(q.get("zero_point")) is int and isinstance(q.get("clipped_fraction"), (int, float)),
             "'int8_input' lacks scale/zero_point/clipped_fraction")


def class_bins(classes: dict[str, Any], predicted: np.ndarray) -> np.ndarray:
    """Counts of predicted classes in the reference's bins (every class, or the kept ones + other)."""
    predicted = predicted.astype(np.int64)
    kept = classes.get("kept")
    if kept is None:
        return np.bincount(np.clip(predicted, 0, classes["count"] - 1), minlength=classes["count"])
    lookup = np.full(classes["count"], len(kept), np.int64)
    lookup[np.asarray(kept, np.int64)] = np.arange(len(kept))
    return np.bincount(lookup[np.clip(predicted, 0, classes["count"] - 1)], minlength=len(kept) + 1)


def _class_summary(predicted: np.ndarray, count: int) -> dict[str, Any]:
    freq = np.bincount(predicted, minlength=count) / len(predicted)
    if count <= MAX_CLASSES:
        return {"count": count, "fractions": [_short(f) for f in freq]}
    kept = sorted(np.argsort(-freq, kind="stable")[:MAX_CLASSES - 1].tolist())
    other = 1.0 - freq[kept].sum()
    return {"count": count, "kept": kept, "fractions": [_short(f) for f in freq[kept]] + [_short(other)]}


def _original_sizes(files: list[Path]) -> dict[str, Any] | None:
    """Width, height and aspect quantiles of the original image files (headers only: cheap)."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a device dependency
        return None
    sizes = []
    for f in files:
        try:
            with Image.open(f) as im:
                sizes.append(im.size)
        except (OSError, ValueError):
            continue
    if not sizes:
        return None
    w, h = np.asarray(sizes, np.float64).T
    q = (0.0, 0.05, 0.5, 0.95, 1.0)
    return {"quantile_levels": list(q), "width": [_short(v) for v in np.quantile(w, q)],
            "height": [_short(v) for v in np.quantile(h, q)], "aspect": [_short(v) for v in np.quantile(w / h, q)]}


def _unique(edges: np.ndarray) -> np.ndarray:
    """Sorted distinct edges, rounded as stored: the reference fractions are counted with exactly the
    edges the online side reads back."""
    return np.unique(np.asarray([_short(e, 9) for e in edges], np.float32))
