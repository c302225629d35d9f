"""The measured cost model: an op's time is a linear function of its size, per op kind, fitted on probes.

    model time = invoke + per input/output value costs + sum over ops of  coef[kind] . features(op)

kind is the op type and precision, with CONV_2D split into 1x1 stride 1 (XNNPACK runs it as a plain
GEMM) and the rest (indirect GEMM: larger or strided kernels, and the 3-channel stem kernels). Features
are a constant (dispatch), the work (multiply-accumulates, or values for elementwise ops) and the
bytes moved (activations, weights), so both compute-bound and memory-bound shapes are covered by the
same line. Convolutions, depthwise convolutions and fully connected layers, when the profile has
kernel models for them (edgekit.profile.opmodel, fitted on the kernel grid), have one feature
instead: the kernel model's time for the op, and the fit gives each such kind one factor. The coefficients are
non-negative (a bigger op is never cheaper) and are fitted by least squares on relative error, because
a 20 us probe and a 2 ms probe should count alike. That is the one-thread model; more threads scale
its per-op times per thread family (fit_scaled, below). numpy only: this runs on the device.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from ..tflite.graph import COSTED_CUSTOM_OPS, Graph, Op, data_input
from . import opmodel
from .probes import GRID_ACTIVATION_BYTES, GRID_FC_WEIGHT_BYTES, GRID_WEIGHT_BYTES

# features per kind family; names are stored in the profile JSON next to their coefficients
# pixels (output positions): XNNPACK tiles channels to its register width, so a narrow layer at a
# large resolution costs per position more than its multiply-accumulates say (MediaPipe's 8-channel stems)
CONV_FEATURES = ("ops", "macs", "pixels", "act_bytes", "weight_bytes")
FC_FEATURES = ("ops", "macs", "weight_bytes")
# a depthwise kernel of more than 25 taps (MAX_UNIPASS_DEPTHWISE_TAPS): a flat cost per multiply-accumulate
# at every shape measured, so two probes per precision fix it; with the five convolution features,
# two probes left the fit free to pick a per-pixel cost (NASNet fp32 estimated -15 % in some runs, +200 % in others)
MULTIPASS_FEATURES = ("ops", "macs")
# A transposed convolution, once the device's convolution kernels are known (a profile with kernel
# models): multiply-accumulates in their tiles (transposed_work) and output pixels. XNNPACK runs it on
# the convolution GEMMs, so an output narrower than their NR columns costs a whole tile, and each output
# pixel costs much besides: 2x2 stride-2 fp32 deconvolutions of 64x64x16 take 694, 697, 760 and 1186 us
# to 1, 8, 16 and 32 channels here (NR 8; raw multiply-accumulates say 1:8:16:32). Priced by raw ones,
# the portrait selfie segmenter's 16 -> 1 channel mask layer was 0.59x its time alone (1.63 of 2.76 ms).
TRANSPOSED_FEATURES = ("ops", "tiled_macs", "pixels", "weight_bytes")
TILED_TRANSPOSED = "TRANSPOSE_CONV_tiled"
ELEMENTWISE_FEATURES = ("ops", "values")
# A per-channel vector times a feature map (a broadcast MUL: a squeeze-and-excitation gate, DenseNet's
# batch-norm scale) and PRELU (a per-channel slope) run XNNPACK's kernel once per pixel over that
# pixel's channels, so they pay per row of channels besides per value. Chained 16 deep here (Zen 1, one
# thread, benchmarks/profile_chains.py's scale block): an fp32 scale of 36,864 values takes
# 16.7 us as 48x48x16, 8.3 as 24x24x64, 6.1 as 6x6x1024 (int8 27.0 / 16.8 / 15.2), 96x96x8 twice
# 48x48x16's time per value; a same-shape MUL or ADD takes the same at every split. ~5-7 ns per row.
ROW_FEATURES = ("ops", "values", "rows")
ROW_KINDS = {"MUL_broadcast", "PRELU"}
# per-kind features added after profiles were written: a profile without one costs it at 0, as it then did
LATER_KIND_FEATURES = {"rows"}
# a kind the device's kernel grid models (edgekit.profile.opmodel): its op time as that model predicts
# it for the op in isolation, scaled by one fitted factor (what being inside a network changes). Such
# kinds are named with GRID_MARK ("CONV_2D_1x1@grid/int8"), so a profile's coefficients say which form they take
MODELLED_FEATURES = ("modelled",)
GRID_MARK = "@grid"
# cold_weight_bytes: when a model's weights exceed the core's cache, every inference streams them from
# memory again; a probe's few weights stay cached between invokes, so this is costed model-wide from
# probes whose weights alone overflow the cache. The bytes are weighted by the device's streaming
# curve (stream_factor): 100 MB of weights outgrow a server's share of L3 where 30 MB did not
# quantized_io: edgekit's runtime quantizes int8 inputs and dequantizes int8 outputs in numpy, a fixed
# cost per call on top of the per-value one; left out, it inflated every int8 op's constant
# partitions: the XNNPACK delegate takes runs of the ops it supports as one partition each; an op it
# leaves to TFLite's reference kernels (NOT_DELEGATED) ends one. Every partition is a separate delegate
# invoke, and with threads a separate wake-up of the thread pool: MobileNetV3 int8 (a HARD_SWISH after
# most convolutions) runs slower at 2 threads than at 1 here (1.67 ms vs 1.52 ms)
GLOBAL_FEATURES = ("invokes", "quantized_io", "input_values_float", "input_values_quantized",
                   "output_values_float", "output_values_quantized", "cold_weight_bytes", "swept_weight_bytes",
                   "spilled_activation_bytes", "partitions", "boundary_values")
# features added after profiles were first written: a profile without them costs them at 0
LATER_GLOBAL_FEATURES = {"partitions", "boundary_values"}
# int8 ops this runtime (ai-edge-litert 2.x) leaves to the reference kernels, as measured by the probes:
# 6-60x the per-value cost of their fp32 form and no speed-up at 2 threads (the delegated ones gain).
# SOFTMAX and a RELU of its own (not fused into a convolution: NASNet's 48 ReLUs before its separable
# convolutions, whose output scale differs from the input's) are left out too, as the interpreter's
# DELEGATE nodes show for the converted networks (benchmarks/.cache/profile)
NOT_DELEGATED_INT8 = {"HARD_SWISH", "PRELU", "AVERAGE_POOL_2D", "SOFTMAX", "RELU", "RELU6"}
# XNNPACK's concatenation takes at most this many inputs: NASNet's 6-way cell outputs are left out
MAX_DELEGATED_CONCAT_INPUTS = 5
# XNNPACK's GEMMs walk output rows in tiles of a few pixels (MR, 4-7 by kernel) as the outer loop and
# read the whole packed filter for each tile: a layer whose filter overflows the cache streams it once
# per tile. ResNet's late 3x3 convolutions (4x4 pixels, 9 MB of filter) are bound by exactly this.
GEMM_TILE_PIXELS = 4
# XNNPACK's depthwise microkernels take up to 25 taps (5x5) in one pass; a larger kernel (NASNet's
# 7x7 separable convolutions) runs another path, here 13x slower per multiply-accumulate in fp32
# (0.40 vs 0.03 ns) and 50x in int8 (3.0 vs 0.06 ns), the same at every shape, stride and channel
# count measured (6x6, 7x7 and 9x9 alike). Costed as a kind of its own, fitted on probes with 7x7 kernels
MAX_UNIPASS_DEPTHWISE_TAPS = 25
DEFAULT_CACHE_BYTES = 1 << 20
# Activations beyond the cache (spilled_bytes): an op whose input and output bytes together exceed a
# threshold reads and writes them from the next cache level. Where that threshold lies, and whether an
# op pays for all its bytes or for those beyond it, is the device's: on the host of runs 17-36 (2 MB
# L2) every op over half the cache, all its bytes (development networks within +-10 %, runs 26-33, one
# thread 91/94/85/79/64/79/61 % against 85/88/82/73/67/73/64 % for the bytes beyond the whole cache);
# on the Zen 1 of runs 37-41 (512 KB L2: a 1-pixel pad of 64x64x24 fp32, 0.8 MB moved, costs 0.91 ns per
# value, one of 14x14x256, 0.46 MB, 0.19) the bytes beyond it (one thread 97/97/94 -> 97/100/97 % at
# twice the cache, two threads 94/88/85 -> 94/88/82 %, medians 2.9/3.3/3.0 -> 2.7/2.8/3.2 %). So the
# one-thread fit tries each rule and keeps the one its probes miss least (edgekit.profile.run.fit_spill),
# which picks those two on those hosts; a profile written before keeps the first.
SPILL_RULES = ({"threshold": 0.5, "excess": False}, {"threshold": 1.0, "excess": True},
               {"threshold": 2.0, "excess": True})
FREE = {"RESHAPE", "SQUEEZE", "EXPAND_DIMS", "SHAPE"}  # views: no data moved (class "view" in graph.py)
# Float clamps. XNNPACK fuses a clamp into the op that produces its input when that op can clamp its own
# output and nothing else reads it: a RELU after a convolution, a pool or another clamp costs nothing
# (four chained fp32 RELUs at 64x64x24 take 8.5 us, one takes 8.5). A float ADD, SUB or MUL that clamps,
# fused or by its options, runs a slower kernel: ADD 56x56x32 10 us, with a RELU 30 us, 14x14x256
# 5.5 -> 9.5 us, 112x112x16 74 -> 132 us (int8: 18 -> 22 us, the requantization clamps anyway). Priced
# as kinds of their own ("ADD_clamped"): MediaPipe's residual ADD -> RELU and Keras ResNet's ADD+RELU
# were costed as plain ADDs and a near-free RELU.
CLAMPS = {"RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1"}
CLAMPING_PRODUCERS = {"ADD", "SUB", "MUL", "DIV", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                      "TRANSPOSE_CONV", "AVERAGE_POOL_2D", "MAX_POOL_2D"} | CLAMPS
CLAMPED_KINDS = {"ADD", "SUB", "MUL"}
CLAMPED_SUFFIX = "_clamped"


def _once_per_graph(fusion):
    """Compute fusion(graph) once and keep it on the graph object: kind() and free() ask for every op."""
    key = f"_{fusion.__name__}"

    @functools.wraps(fusion)
    def cached(graph: Graph):
        if key not in graph.__dict__:
            graph.__dict__[key] = fusion(graph)
        return graph.__dict__[key]
    return cached


def _readers(graph: Graph) -> dict[int, list[Op]]:
    """Tensor index -> the ops that read it (what a fusion asks: does one op alone read this?)."""
    readers: dict[int, list[Op]] = {}
    for op in graph.ops:
        for t in op.inputs:
            readers.setdefault(t, []).append(op)
    return readers


@_once_per_graph
def clamp_fusion(graph: Graph) -> tuple[frozenset, frozenset]:
    """(float clamp ops fused into their producer, float ops that clamp their output) by op index."""
    producer = {t: op for op in graph.ops for t in op.outputs}
    readers = _readers(graph)
    fused, clamping = set(), {op.index for op in graph.ops if op.activation and op.precision != "int8"}
    for op in graph.ops:
        if op.type not in CLAMPS or op.precision == "int8" or not op.inputs:
            continue
        source = producer.get(op.inputs[0])
        if (source is not None and COSTED_CUSTOM_OPS.get(source.type, source.type) in CLAMPING_PRODUCERS
                and source.precision != "int8" and len(readers.get(op.inputs[0], [])) == 1
                and op.inputs[0] not in graph.outputs):
            fused.add(op.index)
            clamping.add(source.index)
    return frozenset(fused), frozenset(clamping)


def cost_precision(op: Op) -> str:
    """The precision an op is priced at: int8, or fp32 for the rest (fp16 weights are dequantized to
    float at load; hybrid and int16 ops are costed as float)."""
    return "int8" if op.precision == "int8" else "fp32"


def kind(graph: Graph, op: Op, op_models: dict | None = None) -> str:
    """The op's cost kind, "BASE/precision"; with op_models (a profile's kernel models), a kind they
    cover is "BASE@grid/precision"."""
    base = COSTED_CUSTOM_OPS.get(op.type, op.type)
    if op.type == "CONV_2D" and len(op.inputs) > 1:
        shape = graph.tensors[op.inputs[1]].shape
        x = graph.tensors[op.inputs[0]].shape
        y = graph.tensors[op.outputs[0]].shape if op.outputs else ()
        strided = len(x) == 4 and len(y) == 4 and tuple(x[1:3]) != tuple(y[1:3])
        # a strided 1x1 convolution is not a plain GEMM: XNNPACK runs it as an indirect GEMM like a 3x3
        # (the grid here: 1x1 stride-2 fp32 layers 1.5-2x slower than the plain-GEMM fit said)
        if len(shape) == 4 and shape[1] == shape[2] == 1 and not strided:
            base = "CONV_2D_1x1"
    if op.type == "MUL" and len(op.inputs) == 2 and broadcast(graph, op):
        base = "MUL_broadcast"
    elif op.type in CLAMPED_KINDS and op.index in clamp_fusion(graph)[1]:
        base = op.type + CLAMPED_SUFFIX
    if op.type == "DEPTHWISE_CONV_2D" and len(op.inputs) > 1:
        shape = graph.tensors[op.inputs[1]].shape
        if len(shape) == 4 and shape[1] * shape[2] > MAX_UNIPASS_DEPTHWISE_TAPS:
            base = "DEPTHWISE_CONV_2D_multipass"
    precision = cost_precision(op)
    if op_models and f"{base}/{precision}" in op_models:
        return f"{base}{GRID_MARK}/{precision}"
    if base == "TRANSPOSE_CONV" and op_models and f"CONV_2D/{precision}" in op_models:
        return f"{TILED_TRANSPOSED}/{precision}"
    return f"{base}/{precision}"


def plain(kind_name: str) -> str:
    """The kind without the kernel-model mark."""
    return kind_name.replace(GRID_MARK, "")


def is_modelled(graph: Graph, op: Op, op_models: dict | None) -> bool:
    """Whether a kernel model prices this op: its kind is one the profile's op_models cover."""
    return bool(op_models) and GRID_MARK in kind(graph, op, op_models)


def modelled_seconds(graph: Graph, op: Op, op_models: dict) -> float:
    """The kernel model's time for this op in isolation (edgekit.profile.opmodel)."""
    name = plain(kind(graph, op, op_models))
    return opmodel.predict(op_models[name], op.type, name.split("/")[-1], opmodel.dims(graph, op))


def broadcast(graph: Graph, op: Op) -> bool:
    """A binary op whose smaller input is a vector, not a scalar: a per-channel vector times a feature
    map (DenseNet's batch-norm scale, a squeeze-and-excitation gate). XNNPACK's broadcasting path costs
    ~3x per value what a same-shape MUL does (int8 chained probes: 0.29 vs 0.1 ns); with one line for
    both, the fit gave each DenseNet121 int8 scale 1-2 us where prefix timing measured 7-27 us."""
    sizes = sorted(float(np.prod(graph.tensors[i].shape)) if graph.tensors[i].shape else 1.0 for i in op.inputs[:2])
    return 1 < sizes[0] < sizes[1]  # a scalar factor takes XNNPACK's fast constant path


def family(kind_name: str) -> tuple[str, ...]:
    base = kind_name.split("/")[0]
    if base.endswith(GRID_MARK):
        return MODELLED_FEATURES
    if base == "DEPTHWISE_CONV_2D_multipass":
        return MULTIPASS_FEATURES
    if base == TILED_TRANSPOSED:
        return TRANSPOSED_FEATURES
    if base.startswith("CONV_2D") or base.startswith("DEPTHWISE_CONV_2D") or base == "TRANSPOSE_CONV":
        return CONV_FEATURES
    if base in ("FULLY_CONNECTED", "BATCH_MATMUL"):
        return FC_FEATURES
    if base in ROW_KINDS:
        return ROW_FEATURES
    return ELEMENTWISE_FEATURES


def elementwise(kind_name: str) -> bool:
    """A kind priced per op and per value (a fallback's source): the plain elementwise ones and those
    that also pay per row."""
    return family(kind_name) in (ELEMENTWISE_FEATURES, ROW_FEATURES)


def _pixels(graph: Graph, op: Op) -> float:
    out = graph.tensors[op.outputs[0]].shape if op.outputs else ()
    return float(np.prod(out[:-1])) if len(out) > 1 else 1.0


def transposed_work(graph: Graph, op: Op, tiles: tuple[int, int, int]) -> tuple[float, float]:
    """(tiled multiply-accumulates, output pixels in rows of MR) of a transposed convolution as XNNPACK
    runs it: with a stride above 1 and no larger than the kernel, stride x stride sub-convolutions, each
    an indirect GEMM over its 1 / stride^2 of the output pixels (rows of out_w / stride in tiles of MR)
    with its share of the kernel's taps (all sub-kernels together: every tap once), output channels in
    tiles of NR and input channels padded to KR - the tiles of the device's CONV_2D kernel model, as
    the same GEMM kernels run it (XNNPACK src/operators/deconvolution-nhwc.c)."""
    mr, nr, kr = tiles
    out = graph.tensors[op.outputs[0]].shape
    x = graph.tensors[op.inputs[data_input(op.type)]].shape
    w = graph.tensors[op.inputs[1]].shape
    if len(out) != 4 or len(x) != 4 or len(w) != 4 or not x[1] or not x[2]:
        return op.macs, _pixels(graph, op)
    sh, sw = max(1, round(out[1] / x[1])), max(1, round(out[2] / x[2]))
    if sh > w[1] or sw > w[2]:  # a stride beyond the kernel: one indirect GEMM over every output pixel
        sh = sw = 1
    rows = math.ceil(out[1] / sh) * math.ceil(out[2] / sw / mr) * mr  # per sub-convolution
    columns = math.ceil(out[3] / nr) * nr
    depth = w[1] * w[2] * math.ceil(x[3] / kr) * kr  # summed over the sub-convolutions
    return float(rows * columns * depth), float(rows * sh * sw)


def op_features(graph: Graph, op: Op, names: tuple[str, ...], op_models: dict | None = None) -> np.ndarray:
    if names == MODELLED_FEATURES:
        return np.array([modelled_seconds(graph, op, op_models)])
    if names == TRANSPOSED_FEATURES:
        macs, outputs = transposed_work(graph, op, tuple(op_models[f"CONV_2D/{cost_precision(op)}"]["tiles"]))
        return np.array([1.0, macs, outputs, op.bytes_weights])
    elements = op.elements or (op.bytes_in + op.bytes_out)
    if op.window > 1:  # a pool reads its window per output value (edgekit.tflite.graph._pool_window)
        out = graph.tensors[op.outputs[0]].shape if op.outputs else ()
        elements = max(elements, float(np.prod(out)) * op.window if out else elements)
    pixels = _pixels(graph, op)  # a row of channels per output pixel, for the kinds that pay per row
    values = {"ops": 1.0, "macs": op.macs, "pixels": pixels, "act_bytes": op.bytes_in + op.bytes_out,
              "weight_bytes": op.bytes_weights, "values": elements, "rows": pixels}
    return np.array([values[n] for n in names], dtype=np.float64)


def stream_factor(footprint: float, curve: list | None) -> float:
    """How much slower per byte a model's weights stream at this footprint than at the smallest
    streaming probe's: interpolated in log footprint between the device's measured points, flat
    beyond them (edgekit.profile.run.stream_curve). 1 without a curve."""
    if not curve or footprint <= curve[0][0]:
        return 1.0
    sizes, factors = np.log([c[0] for c in curve]), [c[1] for c in curve]
    return float(np.interp(math.log(footprint), sizes, factors))


def grid_covers(graph: Graph, op: Op, op_models: dict | None) -> tuple[float, float]:
    """(filter bytes, activation bytes) up to which the kernel grid timed this op's kind: its kernel
    model's price already holds what such an op pays for a filter or activations beyond the cache.
    (0, 0) for ops the grid does not model."""
    if not is_modelled(graph, op, op_models):
        return 0.0, 0.0
    filters = GRID_FC_WEIGHT_BYTES if op.type == "FULLY_CONNECTED" else GRID_WEIGHT_BYTES
    return filters, GRID_ACTIVATION_BYTES


def spilled_bytes(graph: Graph, cache_bytes: int, covered: dict, spill: dict | None = None) -> float:
    """Activation bytes read and written beyond the cache under a spill rule (SPILL_RULES; None: the
    first). An op the kernel grid models counts only beyond the activations the grid timed (covered)."""
    rule = spill or SPILL_RULES[0]
    limit = rule["threshold"] * cache_bytes
    total = 0.0
    for op in graph.ops:
        moved = op.bytes_in + op.bytes_out
        if op.costed and op.op_class != "view" and moved > max(limit, covered[op.index][1]):
            total += moved - limit if rule["excess"] else moved
    return total


def global_features(graph: Graph, cache_bytes: int, curve: list | None = None,
                    op_models: dict | None = None, spill: dict | None = None) -> np.ndarray:
    """Whole-model features. With op_models, an op the kernel grid models counts as swept or spilled
    only beyond the filter and activation sizes the grid timed: its price holds the rest, and
    counting it again charged MobileNetV1 fp32's 1 MB 14x14 layers ~1 ms more at two threads.
    Development networks, timing runs 17-20 re-fitted (benchmarks/profile_refit.py): one thread,
    median error 4.6-5.7 % -> 3.4-4.9 % (within +-10 %: 83-86 % -> 79-90 %); two threads, 62-79 %
    -> 69-86 % within +-10 % (median 5.9-6.8 % -> 5.5-6.4 %)."""
    def count(indices, quantized=None):
        total = 0.0
        for i in indices:
            t = graph.tensors[i]
            is_q = t.dtype in ("int8", "uint8", "int16")
            if quantized is None or quantized == is_q:
                total += float(np.prod(t.shape)) if t.shape else 1.0
        return total
    gemm = [op for op in graph.ops if op.op_class in ("conv", "fc") and op.costed]
    weights = sum(op.bytes_weights for op in gemm)
    cold = weights * stream_factor(weights, curve) if weights > cache_bytes else 0.0
    covered = {op.index: grid_covers(graph, op, op_models) for op in graph.ops}
    swept = sum(op.bytes_weights * math.ceil(_pixels(graph, op) / GEMM_TILE_PIXELS)
                for op in gemm if op.bytes_weights > max(cache_bytes / 2, covered[op.index][0]))
    q_in, q_out = count(graph.inputs, True), count(graph.outputs, True)
    # an op whose input and output overflow the cache reads and writes them from the next level: big
    # fp32 activations of the expand layers in a network (SPILL_RULES)
    spilled = spilled_bytes(graph, cache_bytes, covered, spill)
    return np.array([1.0, 1.0 if q_in or q_out else 0.0, count(graph.inputs, False), q_in,
                     count(graph.outputs, False), q_out, cold, swept, spilled, partitions(graph),
                     boundary_values(graph)])


def shape_math(graph: Graph, op: Op) -> bool:
    """Integer ops on a tensor's shape (SHAPE -> STRIDED_SLICE -> PACK before a Keras reshape in every
    squeeze-and-excitation block): a few scalars, costed as free, but outside the delegate."""
    return bool(op.outputs) and all(graph.tensors[i].dtype in ("int32", "int64") for i in op.outputs)


# Zero border pads. XNNPACK folds a PAD of the height and width alone into the convolution or depthwise
# convolution that reads it (as that op's own padding): on a Zen 1, a 1-pixel pad of 112x112x32 fp32
# takes 262 us alone, and PAD -> VALID 3x3 depthwise 499 us against 502 for the SAME depthwise alone;
# int8 and CONV_2D alike. MediaPipe's detectors pad before every strided convolution (the sparse
# full-range face detector 43 times), Keras before its stems.
PADDED_BY = {"CONV_2D", "DEPTHWISE_CONV_2D"}


@_once_per_graph
def pad_fusion(graph: Graph) -> frozenset:
    """PAD ops XNNPACK folds into the convolution after them, by op index."""
    readers = _readers(graph)
    fused = set()
    for op in graph.ops:
        if op.type != "PAD" or not op.inputs or not op.outputs:
            continue
        x, y = graph.tensors[op.inputs[0]].shape, graph.tensors[op.outputs[0]].shape
        spatial = len(x) == len(y) == 4 and x[0] == y[0] and x[3] == y[3]  # height and width only
        after = readers.get(op.outputs[0], [])
        if (spatial and len(after) == 1 and after[0].type in PADDED_BY and after[0].inputs[0] == op.outputs[0]
                and op.outputs[0] not in graph.outputs):
            fused.add(op.index)
    return frozenset(fused)


def free(graph: Graph, op: Op) -> bool:
    """Ops the cost model charges nothing for: views, folded constants, shape arithmetic, float
    clamps fused into the op before them and border pads fused into the convolution after them."""
    return (not op.costed or op.op_class == "view" or op.type in FREE or shape_math(graph, op)
            or op.index in clamp_fusion(graph)[0] or op.index in pad_fusion(graph))


def delegated(graph: Graph, op: Op) -> bool:
    """Whether the XNNPACK delegate takes the op (ai-edge-litert 2.x), as the interpreter's DELEGATE
    nodes show for converted networks (edgekit.device_env.guest.delegated_nodes finds them):
    NASNetMobile fp32 runs as 16 partitions, EfficientNet-B0 as 17, and each one costs a delegate
    invoke (and at 2 threads a thread pool wake-up) that a one-partition count left out."""
    if op.precision == "int8" and op.type in NOT_DELEGATED_INT8:
        return False
    if op.type == "CONCATENATION" and len(op.inputs) > MAX_DELEGATED_CONCAT_INPUTS:
        return False
    if op.type in ("AVERAGE_POOL_2D", "MAX_POOL_2D") and op.window == 1:
        x, y = graph.tensors[op.inputs[0]].shape, graph.tensors[op.outputs[0]].shape
        if len(x) == 4 and len(y) == 4 and x[1] > y[1]:
            return False  # a 1x1 pool with a stride (NASNet's reduction-cell path): no XNNPACK operator
    if shape_math(graph, op):
        return False
    # a reshape to a computed shape is left out too: XNNPACK needs the shape when it plans
    return not (op.type == "RESHAPE" and len(op.inputs) > 1 and not graph.tensors[op.inputs[1]].constant)


def _delegate_sides(graph: Graph) -> dict[int, bool]:
    """Per op index: whether it runs inside an XNNPACK partition (views go with the delegated side)."""
    return {op.index: op.costed and delegated(graph, op) for op in graph.ops}


def boundary_values(graph: Graph) -> float:
    """Values of the tensors that cross between an XNNPACK partition and the reference kernels (produced
    on one side, read on the other). A crossing costs in proportion to its size, more at two threads,
    where the partition's output is split over both cores' caches and the one-thread reference op reads
    it all (and the next partition's worker reads back its half): [1x1 conv -> int8 HARD_SWISH] x 8
    against the same 8 convs then the 8 HARD_SWISHes (one crossing), 32 channels, here: ~0 per crossing
    up to 8x8, 4 us at 16x16, 16 us at 32x32, 31 us at 48x48 with two threads (0.4 ns per value), 15 us
    at 48x48 with one. A partition count alone priced MobileNetV3 int8 (22 partitions around its
    HARD_SWISHes) 12-15 % too fast at two threads. Development networks, the seven stored timing runs
    re-fitted (benchmarks/profile_refit.py): within +-10 % at one thread 76-90 % -> 79-90 %, at two
    59-86 % -> 66-90 %, better or equal in every run; fitted 0.04-0.10 ns per value at one thread,
    0.18-0.21 at two."""
    side = _delegate_sides(graph)
    readers: dict[int, set[bool]] = {}
    for op in graph.ops:
        for t in op.inputs:
            readers.setdefault(t, set()).add(side[op.index])
    return float(sum(np.prod(graph.tensors[t].shape) if graph.tensors[t].shape else 1.0
                     for op in graph.ops for t in op.outputs if (not side[op.index]) in readers.get(t, ())))


def partitions(graph: Graph) -> float:
    """How many XNNPACK partitions the interpreter makes. TFLite groups nodes in waves: every node of
    the current side (delegated or not) whose inputs are ready joins the wave, then the side flips, so
    ops the delegate leaves out on parallel branches (NASNet's cells) end one partition together, not
    one each: NASNet fp32 16 partitions where counting runs in file order says 21, int8 37 where it
    says 87. Views go with the delegated side (a reshape to a constant shape is delegated)."""
    ops = graph.ops
    side = _delegate_sides(graph)
    producer = {t: op.index for op in ops for t in op.outputs}
    needs = {op.index: {producer[t] for t in op.inputs if t in producer} for op in ops}
    done: set[int] = set()
    remaining = [op.index for op in ops]
    count, current = 0, side[remaining[0]] if remaining else True
    while remaining:
        wave = []
        grew = True
        while grew:
            ready = [i for i in remaining if side[i] == current and needs[i] <= done]
            grew = bool(ready)
            done.update(ready)
            wave += ready
            remaining = [i for i in remaining if i not in done]
        count += bool(wave) and current
        current = not current
    return float(count)


def shape_key(graph: Graph, op: Op) -> list[float]:
    """Where an op sits among shapes of its kind: log2 output pixels, input and output channels,
    kernel taps, stride. Ops of one kind and nearby keys run the same XNNPACK microkernel path with
    the same tiling remainders, so they miss the linear cost by about the same factor."""
    out = graph.tensors[op.outputs[0]].shape if op.outputs else ()
    data = data_input(op.type)
    x = graph.tensors[op.inputs[data]].shape if len(op.inputs) > data else ()
    cin = float(x[-1]) if len(x) else 1.0
    cout = float(out[-1]) if len(out) else 1.0
    taps, stride = 1.0, 1.0
    if op.op_class in ("conv", "dwconv") and len(op.inputs) > 1:
        w = graph.tensors[op.inputs[1]].shape
        taps = float(w[1] * w[2]) if len(w) == 4 else 1.0
        if len(x) == 4 and len(out) == 4 and out[1]:
            stride = max(1.0, round(x[1] / out[1]))
    return [math.log2(max(_pixels(graph, op), 1.0)), math.log2(max(cin, 1.0)), math.log2(max(cout, 1.0)),
            math.log2(taps), stride]


def correction(kind_name: str, key: list[float], residuals: list | None) -> float:
    """The measured/linear ratio of the nearest probe op of the same kind, shrunk towards 1 with
    distance (halfway at ~1.4 doublings away): the linear fit per kind, corrected locally where the
    probes say it misses (8-channel layers at 128x128 run ~2x slower per value than wide ones)."""
    best = None
    for k, probe_key, ratio in residuals or ():
        if k == kind_name:
            d = math.dist(key, probe_key)
            if best is None or d < best[0]:
                best = (d, ratio)
    if best is None:
        return 1.0
    return 1.0 + (best[1] - 1.0) * math.exp(-best[0] / 2)


def transferable(residuals: list | None) -> list | None:
    """The corrections an estimate of a network applies: those of single-tap probes (1x1 convolutions,
    fully connected, elementwise; kinds the kernel grid models have none here, their model corrects itself). A kxk convolution's or depthwise probe's miss comes from XNNPACK's
    indirect-GEMM and depthwise tiling at that exact shape and did not carry over to nearby layers:
    a strided depthwise probe's 2.5x leaked into stride-1 layers (MobileNetV2 int8 +18 %). Left out,
    the development networks at one thread went from 52-66 % to 62-72 % within +-10 % in five timing
    runs (median 6.1-9.0 % -> 6.4-7.6 %), at two threads 52-66 % -> 59-62 % (median 6.8-9.4 % -> 5.9-8.4 %;
    benchmarks/profile_refit.py). All corrections stay in the profile: the thread scaling is fitted
    on the probes' own one-thread times, which they make exact."""
    if not residuals:
        return residuals
    return [r for r in residuals if abs(r[1][3]) < 0.01]


def op_rows(graph: Graph, cache_bytes: int = DEFAULT_CACHE_BYTES, curve: list | None = None,
            op_models: dict | None = None, spill: dict | None = None):
    """The global features and, per costed op, (kind, features, shape key): what terms sum."""
    return global_features(graph, cache_bytes, curve, op_models, spill), costed_op_rows(graph, op_models)


def costed_op_rows(graph: Graph, op_models: dict | None = None) -> list:
    """Per costed op, (kind, features, shape key): the part of op_rows that no whole-model setting
    (cache, streaming curve, spill rule) changes."""
    ops = []
    for op in graph.ops:
        if not free(graph, op):
            k = kind(graph, op, op_models)
            ops.append((k, op_features(graph, op, family(k), op_models), shape_key(graph, op)))
    return ops


def terms_of(rows, residuals: list | None = None) -> dict[str, np.ndarray]:
    glob, ops = rows
    terms: dict[str, np.ndarray] = {"_global": glob}
    for k, feats, key in ops:
        terms[k] = terms.get(k, 0) + feats * (correction(k, key, residuals) if residuals else 1.0)
    return terms


def graph_terms(graph: Graph, cache_bytes: int = DEFAULT_CACHE_BYTES, curve: list | None = None,
                residuals: list | None = None, op_models: dict | None = None,
                spill: dict | None = None) -> dict[str, np.ndarray]:
    """Summed features per kind (and "_global"): the fit's design row and the estimate's input;
    with residuals, each op's features scaled by its local correction."""
    return terms_of(op_rows(graph, cache_bytes, curve, op_models, spill), residuals)


def probe_residuals(rows: list, seconds: list[float], coefs: dict) -> list:
    """[kind, shape key, measured/linear op time] for each probe whose costed ops are all of one kind
    and one shape (its op time is the measurement less the fitted invoke and I/O terms)."""
    out = []
    for (glob, ops), secs in zip(rows, seconds):
        if not ops or len({(k, tuple(key)) for k, _, key in ops}) != 1:
            continue
        k, key = ops[0][0], ops[0][2]
        if GRID_MARK in k:  # the kernel model has its own nearest-probe corrections
            continue
        terms = terms_of((glob, ops))
        by = seconds_by_term(terms, coefs)
        linear = by.get(k, 0.0)
        if linear <= 0:
            continue
        ratio = (secs - by["_global"]) / linear
        out.append([k, [round(v, 3) for v in key], round(float(min(3.0, max(1 / 3, ratio))), 4)])
    return out


def nnls(a: np.ndarray, b: np.ndarray, iterations: int = 500) -> np.ndarray:
    """Non-negative least squares (Lawson-Hanson active set): min |a x - b|, x >= 0."""
    n = a.shape[1]
    x, passive = np.zeros(n), np.zeros(n, dtype=bool)
    w = a.T @ (b - a @ x)
    for _ in range(iterations):
        if passive.all() or w[~passive].max(initial=0) <= 1e-12:
            break
        j = np.argmax(np.where(passive, -np.inf, w))
        passive[j] = True
        while True:
            z = np.zeros(n)
            z[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if (z[passive] > 0).all():
                x = z
                break
            mask = passive & (z <= 0)
            alpha = np.min(x[mask] / (x[mask] - z[mask]))
            x = x + alpha * (z - x)
            passive &= x > 1e-15
        w = a.T @ (b - a @ x)
    return x


def nnls_relative(a: np.ndarray, seconds, weights=None, known=None) -> np.ndarray:
    """Non-negative x minimising the relative error of a x (+ known) against seconds: every probe counts
    alike (times its weight), a 20 us one as a 2 ms one; columns are scaled to unit norm for the solver.
    known: seconds each row already holds from terms whose coefficients are not fitted here."""
    y = np.asarray(seconds, dtype=np.float64)
    w = np.ones(len(y)) if weights is None else np.sqrt(np.asarray(weights, dtype=np.float64))
    target = w if known is None else (1.0 - np.asarray(known, dtype=np.float64) / y) * w
    a = a / y[:, None] * w[:, None]
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    return nnls(a / scale, target) / scale


def fit(rows: list[dict[str, np.ndarray]], seconds: list[float], weights: list[float] | None = None) -> dict[str, dict[str, float]]:
    """Coefficients (seconds per feature unit) per kind, from probe terms and measured seconds;
    weights: how much each probe's relative error counts (1 each by default)."""
    columns = [("_global", n) for n in GLOBAL_FEATURES]
    for k in sorted({k for r in rows for k in r if k != "_global"}):
        columns += [(k, n) for n in family(k)]
    index = {c: i for i, c in enumerate(columns)}
    a = np.zeros((len(rows), len(columns)))
    for i, r in enumerate(rows):
        for k, feats in r.items():
            names = GLOBAL_FEATURES if k == "_global" else family(k)
            for n, v in zip(names, feats):
                a[i, index[(k, n)]] = v
    x = nnls_relative(a, seconds, weights)
    coefs: dict[str, dict[str, float]] = {}
    for (k, n), v in zip(columns, x):
        coefs.setdefault(k, {})[n] = float(v)
    return coefs


def fallback(coefs: dict, kind_name: str) -> dict[str, float]:
    """For an op kind no probe measured: the median elementwise kind of that precision, and for an
    int8 op the delegate leaves out (RELU6 of its own), the median of the measured ones it leaves out:
    a reference kernel costs 10-300x XNNPACK's per value, so the delegated kinds' median is far off."""
    base, precision = kind_name.split("/")[0], kind_name.split("/")[-1]
    if base.endswith(GRID_MARK):  # no suite probe of this kind: the kernel model's time as it is
        return {"modelled": 1.0}
    if base == TILED_TRANSPOSED and coefs.get(f"TRANSPOSE_CONV/{precision}"):
        # a profile written before the tiled form: its rates, each multiply-accumulate of a tile at the raw
        # per-MAC one (dearer than then for outputs narrower than NR; its activation-bytes term is left out)
        c = coefs[f"TRANSPOSE_CONV/{precision}"]
        return {"ops": c.get("ops", 0.0), "tiled_macs": c.get("macs", 0.0), "pixels": c.get("pixels", 0.0),
                "weight_bytes": c.get("weight_bytes", 0.0)}
    if base == "MUL_broadcast" and coefs.get(f"MUL/{precision}"):
        return coefs[f"MUL/{precision}"]  # a profile written before the split: as it then was
    if base.endswith(CLAMPED_SUFFIX) and coefs.get(f"{base.removesuffix(CLAMPED_SUFFIX)}/{precision}"):
        # a profile written before the clamped kinds: as the plain op (an underestimate: see CLAMPS)
        return coefs[f"{base.removesuffix(CLAMPED_SUFFIX)}/{precision}"]
    if base == "DEPTHWISE_CONV_2D_multipass" and coefs.get(f"DEPTHWISE_CONV_2D/{precision}"):
        # a profile written before the 7x7 probes: their multiply-accumulates at the other depthwise
        # layers' rate, as then costed (an underestimate: the rate is 13-50x that)
        c = coefs[f"DEPTHWISE_CONV_2D/{precision}"]
        return {"ops": c.get("ops", 0.0), "macs": c.get("macs", 0.0)}
    if precision == "int8" and base in NOT_DELEGATED_INT8:
        reference = [c for k, c in coefs.items() if k.split("/")[0] in NOT_DELEGATED_INT8 and k.endswith("/int8")
                     and elementwise(k)]
        if reference:
            return {n: float(np.median([c.get(n, 0.0) for c in reference])) for n in ELEMENTWISE_FEATURES}
    same = [c for k, c in coefs.items() if k.endswith("/" + precision) and elementwise(k)]
    same = same or [c for k, c in coefs.items() if k != "_global" and elementwise(k)]
    if not same:
        return {"ops": 0.0, "values": 0.0}
    return {n: float(np.median([c.get(n, 0.0) for c in same])) for n in ELEMENTWISE_FEATURES}


def seconds_by_term(terms: dict[str, np.ndarray], coefs: dict) -> dict[str, float]:
    out = {}
    for k, feats in terms.items():
        names = GLOBAL_FEATURES if k == "_global" else family(k)
        c = coefs.get(k) or fallback(coefs, k)
        out[k] = float(sum(c.get(n, 0.0) * v for n, v in zip(names, feats)))
    return out


def op_seconds(graph: Graph, op: Op, coefs: dict, residuals: list | None = None,
               op_models: dict | None = None) -> float:
    if free(graph, op):
        return 0.0
    k = kind(graph, op, op_models)
    c = coefs.get(k) or fallback(coefs, k)
    linear = float(sum(c.get(n, 0.0) * v for n, v in zip(family(k), op_features(graph, op, family(k), op_models))))
    return linear * (correction(k, shape_key(graph, op), residuals) if residuals else 1.0)


def predict_seconds_terms(terms: dict[str, np.ndarray], coefs: dict) -> float:
    return sum(seconds_by_term(terms, coefs).values())


# More threads as a scaling of the one-thread costs. XNNPACK splits an op's output tiles over the
# threads, so a big GEMM runs in about half the time at two threads while a small op cannot split and
# pays a barrier; ops left to the reference kernels run on one thread whatever the count. A per-kind
# linear fit at each thread count (as at one thread) had to learn this from isolated probes that are
# mostly small, and carried their barrier cost into the big layers of networks (MobileNetV1/V2 at 224
# estimated 20-40 % too slow at 2 threads). Here each op's one-thread time t (the one-thread fit,
# shape corrections included) becomes  a * t + b * min(t, SMALL_OP_SECONDS) + c  per thread family,
# and the invoke, I/O and cache terms are refitted (cold weights perhaps not: TIED_GLOBAL_FEATURES): 3
# numbers per family instead of ~5 per op kind.
SMALL_OP_SECONDS = 1e-4
THREAD_FAMILIES = ("gemm/fp32", "gemm/int8", "dw/fp32", "dw/int8", "elementwise/fp32", "elementwise/int8",
                   "reference", "transposed/fp32", "transposed/int8")
# transposed: XNNPACK's deconvolution splits over threads unlike a convolution: the suite's 2x2 fp32
# probes gain nothing at two threads, its 3x3 and 4x4 ones 1.6-1.9x, and MediaPipe's selfie
# segmenter's 2x2 one (128x128x16 -> 256x256x1) took 0.94 ms at one thread, 0.88 at two (prefix
# timing). Scaled with the GEMMs, those probes pulled the GEMM scaling: development networks at two
# threads 77/57/66 % within +-10 % in runs 26-28, 80/57/74 % with a family of their own.
# A profile written before a family has no scaling for it: such ops take the family they then had.
LATER_THREAD_FAMILIES = {"transposed/fp32": "gemm/fp32", "transposed/int8": "gemm/int8"}
THREAD_FEATURES = ("scaled", "small", "ops")
# Weights streamed from memory in a network (cold_weight_bytes) may cost it at two threads what they cost
# at one; then more threads should take the one-thread coefficient rather than refit it from probes
# that gain. On the Zen 1 host of runs 37-58, MobileNetV3Small 224 fp32 op by op
# (benchmarks/profile_isolate.py, run 51's profile): its ops alone 5.67 ms at one thread and 3.05 at
# two, the whole network 6.37 and 3.64 - 0.69 ms beyond its ops at one thread and 0.59 at two, with
# 9.9 MB of filters to stream; the streaming probes themselves take 0.48-0.65 of their one-thread time
# at two. Tied on every run there, the networks at two threads gain (below); on the Xeon of runs 26-36
# they lose badly, so each device's fit chooses (edgekit.profile.run.fit_tied).
TIED_GLOBAL_FEATURES = ("cold_weight_bytes",)


def thread_family(graph: Graph, op: Op) -> str:
    if not delegated(graph, op):
        return "reference"
    base, precision = kind(graph, op).split("/")
    if base.startswith("TRANSPOSE_CONV"):
        return f"transposed/{precision}"
    if base.startswith("CONV_2D") or base in ("FULLY_CONNECTED", "BATCH_MATMUL"):
        return f"gemm/{precision}"
    return f"{'dw' if base.startswith('DEPTHWISE_CONV_2D') else 'elementwise'}/{precision}"


def family_scaling(scaling: dict, family_name: str) -> dict:
    """A thread family's scaling, or for a profile written before the family, the one it then took."""
    return scaling.get(family_name) or scaling[LATER_THREAD_FAMILIES[family_name]]


def scaled_rows(graph: Graph, base: dict, cache_bytes: int, curve: list | None) -> tuple[np.ndarray, list]:
    """The global features at this thread count and, per costed op, (family, [t, min(t, small), 1])
    from the one-thread entry `base` (its coefficients and corrections)."""
    ops = []
    for op in graph.ops:
        t = op_seconds(graph, op, base["coefficients"], base.get("residuals"), base.get("op_models"))
        if t > 0:
            ops.append((thread_family(graph, op), np.array([t, min(t, SMALL_OP_SECONDS), 1.0])))
    return global_features(graph, cache_bytes, curve, base.get("op_models"), base.get("spill")), ops


def scaled_design(rows: list) -> np.ndarray:
    """One design row per graph: global features, then the summed op features of every family."""
    out = []
    for glob, ops in rows:
        fam = {f: np.zeros(len(THREAD_FEATURES)) for f in THREAD_FAMILIES}
        for f, feats in ops:
            fam[f] += feats
        out.append(np.concatenate([glob] + [fam[f] for f in THREAD_FAMILIES]))
    return np.array(out)


def tied_globals(base: dict) -> dict[str, float]:
    """The whole-model coefficients more threads take from the one-thread fit (TIED_GLOBAL_FEATURES)."""
    return {n: float(base["coefficients"]["_global"].get(n, 0.0)) for n in TIED_GLOBAL_FEATURES}


def fit_scaled(rows: list, seconds: list[float], weights: list[float] | None = None,
               tied: dict[str, float] | None = None) -> dict:
    """{"_global": {feature: s/unit}, family: {scaled, small, ops}} by non-negative least squares on
    relative error, as fit() does per kind; tied: whole-model coefficients kept as given, not refitted
    (tied_globals)."""
    design = scaled_design(rows)
    held = [GLOBAL_FEATURES.index(n) for n in (tied or {})]
    known = design[:, held] @ np.array([tied[GLOBAL_FEATURES[i]] for i in held]) if held else None
    free = design.copy()
    free[:, held] = 0.0  # a zero column: the solver leaves its coefficient at 0, set below
    x = nnls_relative(free, seconds, weights, known)
    for i in held:
        x[i] = tied[GLOBAL_FEATURES[i]]
    out = {"_global": dict(zip(GLOBAL_FEATURES, map(float, x[:len(GLOBAL_FEATURES)])))}
    rest, measured = x[len(GLOBAL_FEATURES):], design[:, len(GLOBAL_FEATURES):].any(axis=0)
    for i, f in enumerate(THREAD_FAMILIES):
        columns = slice(i * len(THREAD_FEATURES), (i + 1) * len(THREAD_FEATURES))
        if f in LATER_THREAD_FAMILIES and not measured[columns].any():
            continue  # no probe of this family (a --quick suite): its ops take the family they belong to
        out[f] = dict(zip(THREAD_FEATURES, map(float, rest[columns])))
    return out


def scaled_seconds(rows, scaling: dict) -> float:
    glob, ops = rows
    total = sum(scaling["_global"].get(n, 0.0) * v for n, v in zip(GLOBAL_FEATURES, glob))
    for f, feats in ops:
        total += sum(family_scaling(scaling, f).get(n, 0.0) * v for n, v in zip(THREAD_FEATURES, feats))
    return float(total)


def scaled_op_seconds(graph: Graph, op: Op, base: dict, scaling: dict) -> float:
    t = op_seconds(graph, op, base["coefficients"], base.get("residuals"), base.get("op_models"))
    if t <= 0:
        return 0.0
    c = family_scaling(scaling, thread_family(graph, op))
    return c["scaled"] * t + c["small"] * min(t, SMALL_OP_SECONDS) + c["ops"]
