"""Per-kernel latency models for convolutions, depthwise convolutions and fully connected layers,
fitted on a grid of single-op probes timed on the device.

A per-kind linear cost in multiply-accumulates misses XNNPACK's kernels by 1.3-3.5x on layers the
probes did not have (this host, int8: a 16x16x64 3x3 convolution costed 22 us, isolated 12 us).
The kernels compute output tiles: MR output pixels by NR output channels, over the reduction
dimension in steps of KR values per tap, and a partial tile costs a full one. Here (Xeon, AMX)
the int8 convolution tiles are 16 x 64 with K padded to 64 per tap: a 3-channel stem costs what a
32-channel layer does, and 8..64 output channels cost alike; fp32 3x3 convolutions run 7 x 32.
So each kind's cost is linear in tile counts, not raw sizes; for a convolution

    t = c0 + c1 * tiles(M)*MR * tiles(N)*NR * K_padded  +  c2 * input bytes  +  c3 * output bytes
          + c4 * tiles(M) * weight bytes   (the packed filter is read once per row of tiles)

(a depthwise convolution: channels in tiles of NR at every pixel, its filter read once; a fully
connected layer: one row of tiles, K not padded)
and the tile sizes are found on the device: every (MR, NR, KR) candidate is fitted and the one
whose fit misses the grid least is kept, so a Raspberry Pi's NEON kernels get their own. What the
linear form still misses, the nearest grid probes say: their measured/fitted ratio in log shape
space, shrunk with distance (k nearest, each weighted by exp(-distance / HALF_DISTANCE)).

numpy only: the fit runs where `edgekit profile run` runs.
"""
from __future__ import annotations

import math

import numpy as np

from ..tflite.graph import Graph, Op

MODELLED = ("CONV_2D", "CONV_2D_1x1", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
ROW_TILES = (1, 2, 4, 6, 7, 8, 12, 16)
COLUMN_TILES = (1, 4, 8, 16, 32, 64)
DEPTH_TILES = (1, 4, 8, 16, 32, 64)
NEIGHBOURS = 3
HALF_DISTANCE = 1.0  # in doublings of a dimension: a probe twice as wide counts exp(-1) as much
MAX_LOG_RATIO = math.log(3.0)  # a probe corrects its neighbours by at most 3x either way (as suite residuals)
MAX_TILE = 4096
MIN_PROBES = 6       # fewer grid probes of a kind: no model, the kind keeps the linear suite fit
N_FEATURES = 5       # what features() returns per op: a profile's kernel model has one coefficient each
# A wider microkernel for wide layers: XNNPACK picks its GEMM kernel by the layer's width. Here fp32
# convolutions (3x3 28x28x32, invoke alone) cost 75 us at 8 or 16 output channels, 151 at 24, 97 at 32,
# ~198 at 40-64, ~300 at 80-96, 409 at 128: a 16-wide kernel below 32 channels (24 = two of its tiles),
# a 32-wide one from 32 on, whose tile costs 1.3x a 16-wide one (0.65x per column). With one NR of 16
# the model priced 32 channels as 24 and 64 as 48. Found after the tiles: a width above NR and what
# its columns cost against NR's, kept where it fits the grid clearly better.
# On a Zen 1 (AVX2) it is an 8-wide kernel up to 8 channels and a 16-wide one above, whose columns cost
# more: 3x3 28x28x32 convolutions take 123 us to 8 channels, 250 to 16, 503 to 24 or 32, 748 to 40 or 48,
# 996 to 64, and 5x5 stride-2 stems of 128x128x3 221 us to 8 channels, 826 to 16, 1659 to 24 or 32
# (MediaPipe's short-range face detector's stem, 24 channels: 1.67 ms alone, priced as three 8-wide
# tiles 1.13). Hence 16 among the widths and weights above 1: that grid fits (16, 1.25) at a mean
# |log error| of 0.068 against 0.083 without.
WIDE_TILES = (16, 32, 64)
WIDE_WEIGHTS = (0.5, 0.6, 0.65, 0.7, 0.8, 0.9, 1.0, 1.25, 1.5, 2.0)
WIDE_SEARCH = 12  # tile sizes (the best fitting without a wide kernel) tried with one
# Depthwise channels left over past the last full vector. XNNPACK's fp32 depthwise kernels here (Zen 1,
# AVX2) take channels 16 then 8 at a time and the rest through a masked pass that costs more than a
# whole tile: 5x5 convolutions of 24x24 px (invoke alone) take 36 us at 8 channels, 39 at 16, 60 at 24
# and 62 at 32, but 87 at 11 or 12, 89-91 at 20 or 22 and 114 at 28 - the leftover 3-6 channels ~51 us,
# 2.3 16-wide tiles. The tile counts price 11 channels as 16 (NASNet's 11-, 22- and 44-channel depthwise
# layers: 1.94 ms alone against 1.06 priced at one thread). int8 ones here go 8 at a time with no such
# step (32, 55, 75, 98 us at 8, 16, 24, 32; 11 and 12 like 16: the fit may say that as 4-wide tiles and an
# 8-wide pass). So the fit tries a leftover pass of each vector width, costing a weight in NR-wide tiles,
# with every tile width, and keeps it where it fits the grid clearly better (its odd-channel probes,
# probes.GRID_ODD_DEPTHWISE, are what can show it; without them it finds ~nothing to gain).
REMAINDER_WIDTHS = (4, 8)
REMAINDER_WEIGHTS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0)
# The fewest taps a depthwise kernel computes. XNNPACK runs a depthwise convolution through the
# smallest unipass kernel whose tap count (its "primary tile") holds the filter, so a 1x1 depthwise
# layer (a per-channel scale: MediaPipe's hand models have a dozen) pays for a few taps, not one.
# Zen 4 (session 19, invoke alone): 1x1 depthwise fp32 layers take 0.29-0.40 of a 3x3 one of the same
# shape (128x128x8: 58 us against 192; 32x32x128: 20.5 against 51.6), int8 ones 0.48-0.51; counted as
# one tap they were priced at 0.23-0.5 of their time, the 3x3 ones at 0.93-1.08 (bar two narrow fp32). The grid's
# 1x1 depthwise probes (probes.GRID_POINTWISE_DEPTHWISE) show the floor; the fit keeps one where it
# fits the grid clearly better, so a device whose kernels have a 1-tap path keeps counting taps.
TAP_FLOORS = (2, 3, 4, 6, 8, 9)
# A depthwise filter too large for the kernel to keep in L1. XNNPACK's depthwise kernels read the whole
# packed filter at every output pixel; while it stays in the 32 KB L1 with the inputs it meets, that is
# free, past it each pixel refetches it from L2. Zen 4 (session 19, fp32, invoke alone): 3x3 layers take
# 0.044-0.048 ns per multiply-accumulate up to 384 channels (a 13.8 KB filter) and 0.054-0.078 from 480
# (17.3 KB); 5x5 ones 0.046-0.049 up to 160 channels (16 KB), 0.051-0.068 from 192 (19.2 KB). One cost
# per MAC fitted all of them at a mean |log error| of 0.14, pricing MobileNet/EfficientNet's wide fp32
# layers 20-40 % low. A Zen 1 at 2.0 GHz computes 3x slower and barely shows it (5x5 wide ones ~1.1x).
# Which size and what it costs are fitted, and kept where the grid shows them.
FILTER_SPILL_BYTES = (8192, 12288, 16384, 24576, 32768, 49152)
FILTER_SPILL_WEIGHTS = (1.15, 1.3, 1.5, 1.75, 2.0)


def dims(graph: Graph, op: Op) -> tuple[float, float, float, float, float]:
    """(M output pixels, N output channels, K reduction values, taps, stride) of a GEMM-shaped op."""
    out = graph.tensors[op.outputs[0]].shape
    x = graph.tensors[op.inputs[0]].shape
    n = float(out[-1]) if len(out) else 1.0
    m = float(np.prod(out[:-1])) if len(out) > 1 else 1.0
    taps, stride = 1.0, 1.0
    if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1:
        w = graph.tensors[op.inputs[1]].shape
        taps = float(w[1] * w[2]) if len(w) == 4 else 1.0
        if len(x) == 4 and len(out) == 4 and out[1]:
            stride = float(max(1, round(x[1] / out[1])))
    k = op.macs / max(m * n, 1.0)  # per output value: cin * taps (conv), taps (depthwise), cin (fc)
    return m, n, max(k, 1.0), taps, stride


def features(op_type: str, precision: str, d: tuple, tiles: tuple[int, int, int],
             wide: tuple[int, float] | None = None, remainder: tuple[int, float] | None = None,
             tap_floor: int | None = None, filter_spill: tuple[int, float] | None = None) -> np.ndarray:
    """[1, tiled multiply-accumulates, input reads, output bytes, filter reads]; wide: (width, cost
    per column against an NR-wide one) of the kernel a convolution at least that wide takes;
    remainder: (vector width, cost in NR-wide tiles) of a depthwise convolution's leftover channels;
    tap_floor: the fewest taps a depthwise kernel computes (TAP_FLOORS); filter_spill: (filter bytes,
    cost per multiply-accumulate against a smaller filter's) of a depthwise filter too large for the
    kernel to keep close (FILTER_SPILL_BYTES)."""
    m, n, k, taps, stride = d
    mr, nr, kr = tiles
    value_bytes = 1.0 if precision == "int8" else 4.0
    row_tiles, col_tiles = math.ceil(m / mr), math.ceil(n / nr)
    if op_type == "DEPTHWISE_CONV_2D":  # channels in tiles of NR, every pixel; filter bytes once
        channels = col_tiles * nr
        if remainder and n % remainder[0]:  # whole vectors in tiles, the rest in a pass of its own
            channels = math.ceil(n // remainder[0] * remainder[0] / nr) * nr + remainder[1] * nr
        taps = max(taps, float(tap_floor or 1))
        filter_bytes = n * taps * value_bytes
        spill = filter_spill[1] if filter_spill and filter_bytes > filter_spill[0] else 1.0
        return np.array([1.0, m * channels * taps * spill, m * stride * stride * n * value_bytes,
                         m * n * value_bytes, filter_bytes])
    if op_type == "FULLY_CONNECTED":
        return np.array([1.0, col_tiles * nr * k, k * value_bytes, n * value_bytes, n * k * value_bytes])
    k = taps * math.ceil(k / taps / kr) * kr  # each tap's input channels padded to KR
    columns = math.ceil(n / wide[0]) * wide[0] * wide[1] if wide and n >= wide[0] else col_tiles * nr
    return np.array([1.0, row_tiles * mr * columns * k, m * k * value_bytes, m * n * value_bytes,
                     row_tiles * n * k * value_bytes])


TRAITS = ("wide", "remainder", "tap_floor", "filter_spill")  # a kernel model's optional entries


def key(d: tuple) -> np.ndarray:
    """Where a shape sits among the grid's: log2 of M, N, K and taps, and the stride."""
    m, n, k, taps, stride = d
    return np.array([math.log2(max(m, 1.0)), math.log2(max(n, 1.0)), math.log2(max(k, 1.0)),
                     math.log2(max(taps, 1.0)), stride])


def fit_kind(op_type: str, precision: str, shapes: list[tuple], seconds: list[float]) -> dict:
    """{"tiles", "coefficients", "points"} for one kind from its grid probes (dims, seconds):
    the tile sizes whose linear fit has the smallest mean |log error|, and each probe's log
    measured/fitted ratio at its shape key (the nearest-probe corrections)."""
    from .costmodel import nnls_relative  # costmodel imports this module

    y = np.asarray(seconds, dtype=np.float64)
    depthwise, fc = op_type == "DEPTHWISE_CONV_2D", op_type == "FULLY_CONNECTED"
    candidates = [(mr, nr, kr) for mr in ((1,) if depthwise or fc else ROW_TILES) for nr in COLUMN_TILES
                  for kr in ((1,) if depthwise or fc else DEPTH_TILES)]
    def trial(tiles, **traits):
        a = np.array([features(op_type, precision, d, tiles, **traits) for d in shapes])
        coefs = nnls_relative(a, y)
        fitted = np.maximum(a @ coefs, 1e-12)
        return float(np.mean(np.abs(np.log(fitted / y)))), tiles, traits, coefs, fitted

    def clearly_better(best, results):
        """The best of `results` where it misses the grid clearly less (2 %) than `best`, else `best`:
        an extra kernel trait is kept only where the grid shows it."""
        bar = best[0] * 0.98
        for result in results:
            if result[0] < min(best[0], bar):
                best = result
        return best

    plain = [trial(tiles) for tiles in candidates]
    best = min(plain, key=lambda r: r[0])  # ties keep the smaller tiles (listed first)
    if op_type == "CONV_2D":  # a wide kernel on the best few tile sizes
        best = clearly_better(best, (trial(tiles, wide=(width, weight))
                                     for tiles in [r[1] for r in sorted(plain, key=lambda r: r[0])[:WIDE_SEARCH]]
                                     for width in WIDE_TILES if width > tiles[1] for weight in WIDE_WEIGHTS))
    if depthwise:  # a leftover-channel pass with each tile width
        best = clearly_better(best, (trial(tiles, remainder=(width, weight)) for tiles in candidates
                                     for width in REMAINDER_WIDTHS for weight in REMAINDER_WEIGHTS))
        # then, with the tiles and leftover pass found, a tap floor (only 1x1 or 2x2 grid probes can show
        # one) and a filter too large to keep close, together: either alone takes up some of the other's
        # miss (a device with a floor of 4 and no spill was fitted a floor of 2 and a spill)
        floors = (None,) + (TAP_FLOORS if any(d[3] < max(TAP_FLOORS) for d in shapes) else ())
        spills = (None,) + tuple((size, weight) for size in FILTER_SPILL_BYTES for weight in FILTER_SPILL_WEIGHTS)
        best = clearly_better(best, (trial(best[1], **best[2], tap_floor=f, filter_spill=sp)
                                     for f in floors for sp in spills if f or sp))
    miss, tiles, traits, coefs, fitted = best
    points = [[*map(lambda v: round(float(v), 3), key(d)),
               round(float(np.clip(math.log(s / f), -MAX_LOG_RATIO, MAX_LOG_RATIO)), 4)]
              for d, s, f in zip(shapes, y, fitted)]
    entry = {"tiles": list(tiles), "coefficients": [float(c) for c in coefs], "points": points,
             "fit_mean_abs_log_error": round(miss, 4)}
    return {**entry, **{name: list(v) if isinstance(v, tuple) else v for name, v in traits.items() if v}}


def predict(entry: dict, op_type: str, precision: str, d: tuple) -> float:
    """Seconds for one op of this kind: the tiled linear cost times the nearest probes' correction."""
    traits = {name: tuple(v) if isinstance(v, list) else v for name in TRAITS if (v := entry.get(name))}
    base = float(np.dot(entry["coefficients"], features(op_type, precision, d, tuple(entry["tiles"]), **traits)))
    points = entry.get("points") or []
    if not points or base <= 0:
        return max(base, 0.0)
    at = np.asarray(points, dtype=np.float64)
    distance = np.linalg.norm(at[:, :-1] - key(d), axis=1)
    nearest = np.argsort(distance)[:NEIGHBOURS]
    weight = np.exp(-distance[nearest] / HALF_DISTANCE)
    if not weight.sum() > 0:  # every probe far away (or a key that is not a number): the linear cost
        return base
    # a weighted mean of the neighbours' log ratios, shrunk by how close the nearest one is
    correction = float(np.sum(weight * np.clip(at[nearest, -1], -MAX_LOG_RATIO, MAX_LOG_RATIO)) / np.sum(weight))
    return base * math.exp(correction * float(weight.max()))
