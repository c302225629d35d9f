"""numpy implementations of the Core ML ML-program (MIL) operations edgekit's artifacts use.

Each op takes its named inputs (numpy arrays or Python values, already resolved) and returns
its outputs. Tensors are NCHW as in MIL. Arithmetic runs in float32; the executor then rounds
each result to the op's declared dtype, so an fp16 program carries fp16 values between ops as
a device does (fp16 storage, wider accumulation). Semantics follow the MIL op definitions in
coremltools (coremltools.converters.mil.mil.ops.defs), written here independently.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

OPS: dict[str, Callable[..., Any]] = {}


def op(*names: str):
    def register(fn):
        for name in names:
            OPS[name] = fn
        return fn
    return register


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


# -- elementwise ---------------------------------------------------------------------------------
@op("add")
def add(x, y):
    return f32(x) + f32(y)


@op("sub")
def sub(x, y):
    return f32(x) - f32(y)


@op("mul")
def mul(x, y):
    return f32(x) * f32(y)


@op("real_div")
def real_div(x, y):
    return f32(x) / f32(y)


@op("maximum")
def maximum(x, y):
    return np.maximum(f32(x), f32(y))


@op("minimum")
def minimum(x, y):
    return np.minimum(f32(x), f32(y))


@op("pow")
def power(x, y):
    return np.power(f32(x), f32(y))


@op("square")
def square(x):
    x = f32(x)
    return x * x


@op("less")
def less(x, y):
    return np.asarray(x) < np.asarray(y)


@op("less_equal")
def less_equal(x, y):
    return np.asarray(x) <= np.asarray(y)


@op("greater")
def greater(x, y):
    return np.asarray(x) > np.asarray(y)


@op("equal")
def equal(x, y):
    return np.asarray(x) == np.asarray(y)


@op("select")
def select(cond, a, b):
    return np.where(np.asarray(cond, dtype=bool), a, b)


@op("sqrt")
def sqrt(x):
    return np.sqrt(f32(x))


@op("rsqrt")
def rsqrt(x, epsilon=1e-12):
    return 1.0 / np.sqrt(f32(x) + np.float32(epsilon))


@op("exp")
def exp(x):
    return np.exp(f32(x))


@op("relu")
def relu(x):
    return np.maximum(f32(x), 0)


@op("relu6")
def relu6(x):
    return np.clip(f32(x), 0, 6)


@op("clip")
def clip(x, alpha, beta):
    return np.clip(f32(x), alpha, beta)


@op("leaky_relu")
def leaky_relu(x, alpha=0.01):
    x = f32(x)
    return np.where(x >= 0, x, x * np.float32(alpha))


@op("thresholded_relu")
def thresholded_relu(x, alpha=1.0):
    """x where x > alpha, else 0 (PyTorch's hardswish/hardsigmoid decompositions produce it)."""
    x = f32(x)
    return np.where(x > np.float32(alpha), x, np.float32(0))


@op("sigmoid")
def sigmoid(x):
    x = f32(x)
    return 1.0 / (1.0 + np.exp(-x))


@op("sigmoid_hard")
def sigmoid_hard(x, alpha=0.2, beta=0.5):
    return np.clip(f32(x) * np.float32(alpha) + np.float32(beta), 0, 1)


@op("silu")
def silu(x):
    x = f32(x)
    return x / (1.0 + np.exp(-x))


@op("tanh")
def tanh(x):
    return np.tanh(f32(x))


@op("erf")
def erf(x):
    from math import erf as scalar_erf

    return np.vectorize(scalar_erf, otypes=[np.float32])(f32(x))


@op("gelu")
def gelu(x, mode="EXACT"):
    x = f32(x)
    if mode == "EXACT":
        from math import erf
        return 0.5 * x * (1.0 + np.vectorize(erf, otypes=[np.float32])(x / math.sqrt(2)))
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


@op("identity")
def identity(x):
    return x


@op("cast")
def cast(x, dtype):
    return np.asarray(x).astype({"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "int16": np.int16,
                                 "bool": np.bool_, "int8": np.int8, "uint8": np.uint8}[dtype])


@op("softmax")
def softmax(x, axis=-1):
    x = f32(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# -- reductions and shape ops ----------------------------------------------------------------------
def _axes(axes, rank):
    return None if axes is None else tuple(int(a) % rank for a in np.atleast_1d(axes))


@op("reduce_mean")
def reduce_mean(x, axes=None, keep_dims=False):
    x = f32(x)
    return np.mean(x, axis=_axes(axes, x.ndim), keepdims=bool(keep_dims))


@op("reduce_sum")
def reduce_sum(x, axes=None, keep_dims=False):
    x = f32(x)
    return np.sum(x, axis=_axes(axes, x.ndim), keepdims=bool(keep_dims))


@op("reduce_max")
def reduce_max(x, axes=None, keep_dims=False):
    x = f32(x)
    return np.max(x, axis=_axes(axes, x.ndim), keepdims=bool(keep_dims))


@op("reshape")
def reshape(x, shape):
    return np.reshape(x, [int(s) for s in np.atleast_1d(shape)])


@op("transpose")
def transpose(x, perm):
    return np.transpose(x, [int(p) for p in perm])


@op("squeeze")
def squeeze(x, axes=None):
    return np.squeeze(x, axis=_axes(axes, np.ndim(x)))


@op("expand_dims")
def expand_dims(x, axes):
    out = np.asarray(x)
    rank = out.ndim + len(np.atleast_1d(axes))
    for a in sorted(int(a) % rank for a in np.atleast_1d(axes)):
        out = np.expand_dims(out, a)
    return out


@op("concat")
def concat(values, axis, interleave=False):
    if interleave:
        raise NotImplementedError("concat with interleave=True")
    return np.concatenate([np.asarray(v) for v in values], axis=int(axis))


@op("pad")
def pad(x, pad, mode="constant", constant_val=0.0):
    x = np.asarray(x)
    p = [int(v) for v in np.atleast_1d(pad)]
    n = len(p) // 2  # the last n dimensions are padded
    widths = [(0, 0)] * (x.ndim - n) + [(p[2 * i], p[2 * i + 1]) for i in range(n)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=constant_val)
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge"}[mode])


@op("slice_by_index")
def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    x = np.asarray(x)
    slices = []
    for i in range(x.ndim):
        b = None if begin_mask is not None and begin_mask[i] else int(begin[i])
        e = None if end_mask is not None and end_mask[i] else int(end[i])
        s = 1 if stride is None else int(stride[i])
        if squeeze_mask is not None and squeeze_mask[i]:
            slices.append(b if b is not None else 0)
            continue
        slices.append(slice(b, e, s))
    return x[tuple(slices)]


@op("split")
def split(x, num_splits=None, split_sizes=None, axis=0):
    x = np.asarray(x)
    if split_sizes is not None:
        return tuple(np.split(x, np.cumsum([int(s) for s in split_sizes])[:-1], axis=int(axis)))
    return tuple(np.split(x, int(num_splits), axis=int(axis)))


@op("gather")
def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    """Embedding lookups and index selection: np.take along `axis` (batch_dims 0 is what converters emit)."""
    if int(batch_dims) != 0:
        raise NotImplementedError("gather with batch_dims > 0")
    x, idx = np.asarray(x), np.asarray(indices).astype(np.int64)
    if bool(validate_indices) and (idx.min(initial=0) < -x.shape[int(axis)] or idx.max(initial=0) >= x.shape[int(axis)]):
        raise ValueError("gather index out of range")
    return np.take(x, idx, axis=int(axis))


# -- linear algebra ----------------------------------------------------------------------------------
@op("matmul")
def matmul(x, y, transpose_x=False, transpose_y=False):
    x, y = f32(x), f32(y)
    if transpose_x:
        x = np.swapaxes(x, -1, -2)
    if transpose_y:
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x, y)


@op("linear")
def linear(x, weight, bias=None):
    out = np.matmul(f32(x), f32(weight).T)
    return out if bias is None else out + f32(bias)


@op("layer_norm")
def layer_norm(x, axes=None, gamma=None, beta=None, epsilon=1e-5):
    x = f32(x)
    axes = _axes(axes, x.ndim) if axes is not None else tuple(range(x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + np.float32(epsilon))
    if gamma is not None:
        y = y * f32(gamma)
    if beta is not None:
        y = y + f32(beta)
    return y


_ACTIVATIONS = {"sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)), "tanh": np.tanh, "relu": lambda v: np.maximum(v, 0),
                "linear": lambda v: v}


@op("lstm")
def lstm(x, initial_h, initial_c, weight_ih, weight_hh, bias=None, peephole=None, direction="forward",
         output_sequence=False, recurrent_activation="sigmoid", cell_activation="tanh", activation="tanh",
         clip=None, **backward):
    """One-direction LSTM over x (seq, batch, input); gates stacked in MIL's order [input, forget,
    output, cell]. Returns (outputs, last h, last c)."""
    if direction != "forward" or peephole is not None or any(v is not None for v in backward.values()):
        raise NotImplementedError(f"lstm direction={direction} / peepholes")
    x, h, c = f32(x), f32(initial_h).reshape(x.shape[1], -1), f32(initial_c).reshape(x.shape[1], -1)
    w_ih, w_hh = f32(weight_ih), f32(weight_hh)
    b = f32(bias) if bias is not None else np.zeros(w_ih.shape[0], np.float32)
    gate, cell, out = (_ACTIVATIONS[recurrent_activation], _ACTIVATIONS[cell_activation], _ACTIVATIONS[activation])
    hidden = h.shape[1]
    steps = []
    for t in range(x.shape[0]):
        z = x[t] @ w_ih.T + h @ w_hh.T + b
        if clip is not None:
            z = np.clip(z, -float(clip), float(clip))
        i, f, o, g = (z[:, k * hidden:(k + 1) * hidden] for k in range(4))
        c = gate(f) * c + gate(i) * cell(g)
        h = gate(o) * out(c)
        steps.append(h)
    sequence = np.stack(steps) if bool(output_sequence) else h[None]
    return sequence, h, c


@op("batch_norm")
def batch_norm(x, mean, variance, gamma=None, beta=None, epsilon=1e-5):
    x = f32(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    out = (x - f32(mean).reshape(shape)) / np.sqrt(f32(variance).reshape(shape) + np.float32(epsilon))
    if gamma is not None:
        out = out * f32(gamma).reshape(shape)
    if beta is not None:
        out = out + f32(beta).reshape(shape)
    return out


# -- convolution and pooling ---------------------------------------------------------------------------
def _padding(in_hw, kernel, strides, dilations, pad_type, pad, ceil_mode=False):
    """[(before, after)] per spatial dim, following MIL's pad_type rules."""
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if pad_type == "valid":
        return [(0, 0)] * len(in_hw)
    if pad_type == "custom":
        p = [int(v) for v in pad]
        return [(p[2 * i], p[2 * i + 1]) for i in range(len(in_hw))]
    out = []
    for size, k, s in zip(in_hw, eff, strides):
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        before = total // 2 if pad_type == "same" else (total + 1) // 2  # same_lower puts the odd pixel first
        out.append((before, total - before))
    return out


def _windows(x, kernel, strides, dilations, pads, fill):
    """Strided view (N, C, OH, OW, kh, kw) of the padded input: no copy until used."""
    x = np.pad(x, [(0, 0), (0, 0)] + pads, mode="constant", constant_values=fill) if any(sum(p) for p in pads) else x
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    view = sliding_window_view(x, eff, axis=(2, 3))
    return view[:, :, ::strides[0], ::strides[1], ::dilations[0], ::dilations[1]]


@op("conv")
def conv(x, weight, bias=None, strides=(1, 1), pad_type="valid", pad=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    x, w = f32(x), f32(weight)
    if x.ndim == 3:  # 1-D convolution (N, C, L): a 2-D one over a height of 1
        pad = (0, 0, *[int(v) for v in np.atleast_1d(pad)][:2]) if pad is not None else (0, 0, 0, 0)
        out = conv(x[:, :, None, :], w[:, :, None, :], bias, (1, *np.atleast_1d(strides)), pad_type, pad,
                   (1, *np.atleast_1d(dilations)), groups)
        return np.ascontiguousarray(out[:, :, 0, :])
    groups = int(groups)
    cout, cin_g, kh, kw = w.shape
    strides, dilations = [int(s) for s in strides], [int(d) for d in dilations]
    pads = _padding(x.shape[2:], (kh, kw), strides, dilations, pad_type, pad)
    if groups == x.shape[1] and cin_g == 1 and cout == groups:
        out = _depthwise(x, w, strides, dilations, pads)
    elif kh == kw == 1 and strides == [1, 1] and not any(sum(p) for p in pads) and groups == 1:
        out = np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0], optimize=True)
    else:
        patches = _windows(x, (kh, kw), strides, dilations, pads, 0.0)  # N, C, OH, OW, kh, kw
        cg = x.shape[1] // groups
        og = cout // groups
        parts = []
        for g in range(groups):
            p = patches[:, g * cg:(g + 1) * cg]
            parts.append(np.tensordot(p, w[g * og:(g + 1) * og], axes=([1, 4, 5], [1, 2, 3])))  # N, OH, OW, og
        out = np.concatenate(parts, axis=-1).transpose(0, 3, 1, 2)
    if bias is not None:
        out = out + f32(bias).reshape(1, -1, 1, 1)
    return np.ascontiguousarray(out)


def _depthwise(x, w, strides, dilations, pads):
    """One multiply-add per kernel tap over the whole tensor: 9 vectorized passes for 3x3."""
    if any(sum(p) for p in pads):
        x = np.pad(x, [(0, 0), (0, 0)] + pads)
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    oh = (h - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (wd - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    out = np.zeros((n, c, oh, ow), np.float32)
    for a in range(kh):
        for b in range(kw):
            i, j = a * dilations[0], b * dilations[1]
            tap = x[:, :, i:i + strides[0] * (oh - 1) + 1:strides[0], j:j + strides[1] * (ow - 1) + 1:strides[1]]
            out += tap * w[:, 0, a, b].reshape(1, c, 1, 1)
    return out


def _pool_padding(x, kernel, strides, pad_type, pad, ceil_mode):
    pads = _padding(x.shape[2:], kernel, strides, (1, 1), pad_type, pad)
    if ceil_mode:  # extra trailing padding so partial windows at the end count
        pads = [(b, a + (s - 1 - ((size + b + a - k) % s)) % s) for (b, a), size, k, s
                in zip(pads, x.shape[2:], kernel, strides)]
    return pads


@op("max_pool")
def max_pool(x, kernel_sizes, strides, pad_type="valid", pad=(0, 0, 0, 0), ceil_mode=False):
    x = f32(x)
    k, s = [int(v) for v in kernel_sizes], [int(v) for v in strides]
    pads = _pool_padding(x, k, s, pad_type, pad, ceil_mode)
    return _windows(x, k, s, (1, 1), pads, -np.inf).max(axis=(-2, -1))


@op("avg_pool")
def avg_pool(x, kernel_sizes, strides, pad_type="valid", pad=(0, 0, 0, 0), exclude_padding_from_average=False,
             ceil_mode=False):
    x = f32(x)
    k, s = [int(v) for v in kernel_sizes], [int(v) for v in strides]
    pads = _pool_padding(x, k, s, pad_type, pad, ceil_mode)
    sums = _windows(x, k, s, (1, 1), pads, 0.0).sum(axis=(-2, -1))
    if exclude_padding_from_average:
        ones = np.ones((1, 1) + x.shape[2:], np.float32)
        counts = _windows(ones, k, s, (1, 1), pads, 0.0).sum(axis=(-2, -1))
        return sums / counts
    return sums / float(k[0] * k[1])


# -- classifier head ---------------------------------------------------------------------------------
@op("classify")
def classify(probabilities, classes):
    probs = f32(probabilities).reshape(-1)
    labels = [c.decode() if isinstance(c, bytes) else str(c) for c in np.atleast_1d(classes)]
    return labels[int(np.argmax(probs))], dict(zip(labels, probs.tolist()))


# -- compressed constants (evaluated once, at load, as the device does) ---------------------------------
def unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """Little-endian bit fields: element 0 in the least significant bits of byte 0."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")[:count * nbits]
    weights = (1 << np.arange(nbits, dtype=np.uint32))
    return (bits.reshape(count, nbits).astype(np.uint32) * weights).sum(axis=1)


@op("constexpr_affine_dequantize")
def constexpr_affine_dequantize(quantized_data, zero_point, scale, axis):
    q = np.asarray(quantized_data).astype(np.float32)
    shape = [1] * q.ndim
    axis = int(axis) % q.ndim
    zp, sc = np.asarray(zero_point, np.float32), np.asarray(scale, np.float32)
    if zp.ndim:
        shape[axis] = -1
        zp = zp.reshape(shape)
    if sc.ndim:
        shape[axis] = -1
        sc = sc.reshape(shape)
    return ((q - zp) * sc).astype(np.asarray(scale).dtype)


@op("constexpr_blockwise_shift_scale")
def constexpr_blockwise_shift_scale(data, scale, offset=None):
    d = np.asarray(data).astype(np.float32)
    sc = np.asarray(scale)
    repeat = [ds // ss for ds, ss in zip(d.shape, sc.shape)]
    def expand(a):
        for axis, r in enumerate(repeat):
            a = np.repeat(a, r, axis=axis)
        return a
    if offset is not None:
        d = d - expand(np.asarray(offset).astype(np.float32))
    return (d * expand(sc.astype(np.float32))).astype(sc.dtype)


@op("constexpr_lut_to_dense")
def constexpr_lut_to_dense(indices, lut, shape=None, vector_axis=None):
    lut = np.asarray(lut)
    if shape is not None:  # iOS16: flat LUT, bit-packed uint8 indices
        count = int(np.prod(shape))
        nbits = int(round(math.log2(lut.size)))
        return lut[unpack_bits(indices, nbits, count)].reshape([int(s) for s in shape])
    # iOS18: indices already an integer tensor; lut has shape [*blocks, NUM_PALETTES, VECTOR_SIZE]
    idx = np.asarray(indices).astype(np.int64)
    if lut.shape[-1] != 1:
        raise NotImplementedError("vector palettization (VECTOR_SIZE > 1)")
    table = lut[..., 0]
    block = [i // b for i, b in zip(idx.shape, table.shape[:-1])]
    grid = np.indices(idx.shape)
    keys = tuple(g // bs for g, bs in zip(grid, block))
    return table[keys + (idx,)]


@op("constexpr_sparse_to_dense")
def constexpr_sparse_to_dense(nonzero_data, mask, shape=None):
    values = np.asarray(nonzero_data)
    if shape is not None:  # iOS16: bit-packed uint8 mask
        count = int(np.prod(shape))
        flat_mask = np.unpackbits(np.asarray(mask, np.uint8), bitorder="little")[:count].astype(bool)
        out = np.zeros(count, values.dtype)
        out[flat_mask] = values
        return out.reshape([int(s) for s in shape])
    m = np.asarray(mask).astype(bool)  # iOS18: mask is a uint1 tensor of the output shape
    out = np.zeros(m.shape, values.dtype)
    out[m] = values
    return out


@op("constexpr_cast")
def constexpr_cast(source_val, output_dtype):
    return cast(source_val, output_dtype)
