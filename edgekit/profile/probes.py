"""The probe suite: tiny .tflite models that each isolate one op at one shape and precision.

Written straight as flatbuffers with the schema ai-edge-litert ships, so a Raspberry Pi builds them
itself: no TensorFlow, no files to ship or keep in sync. Weights are random (latency does not depend
on their values); int8 probes are quantized the way the TFLite converter quantizes (per-channel
symmetric filters, int32 bias at input_scale * filter_scale, fixed output scales for LOGISTIC and
SOFTMAX), so XNNPACK takes the same QS8 kernels it takes for a converted model.

A shape-preserving op is chained `repeat` times in one model, so its own cost dominates the invoke
overhead; other ops run once. The fit (edgekit.profile.costmodel) accounts for both.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import flatbuffers
import numpy as np

from ..tflite.reader import TFLITE_IDENTIFIER, schema as _schema

RELU, RELU6 = 1, 3
SAME, VALID = 0, 1


@dataclass(frozen=True)
class Probe:
    name: str
    op: str              # TFLite builtin name
    precision: str       # fp32 | int8
    shape: tuple         # NHWC input (or (1, features) for FULLY_CONNECTED)
    cout: int = 0        # output channels / features (conv, fc)
    kernel: int = 1
    stride: int = 1
    repeat: int = 1
    broadcast: bool = False  # MUL by a per-channel vector (squeeze-and-excitation), a second input;
                             # a NETWORK: squeeze-and-excitation blocks (_excite)
    activation: bool = False  # ADD, MUL: a fused RELU (edgekit.profile.costmodel.CLAMPED_KINDS)
    core: bool = False   # in the reduced suite (tests, --quick)
    grid: bool = False   # a kernel-model probe (edgekit.profile.opmodel): one thread, interpreter invoke alone


class _Builder:
    """Accumulates tensors, buffers and operators of a one-subgraph model."""

    def __init__(self, precision: str, seed: int):
        self.s = _schema()
        self.int8 = precision == "int8"
        self.rng = np.random.default_rng(seed)
        self.tensors, self.buffers, self.ops, self.codes = [], [self.s.BufferT()], [], {}
        self.extra_inputs: list[int] = []
        self.first: int | None = None  # the model's input, which chained concatenations join

    def tensor(self, shape, dtype: str, data: np.ndarray | None = None, scale=None, zero_point=None, qdim=0) -> int:
        s = self.s
        t = s.TensorT()
        t.shape = np.asarray(shape, dtype=np.int32)
        t.type = {"float32": s.TensorType.FLOAT32, "int8": s.TensorType.INT8, "int32": s.TensorType.INT32}[dtype]
        t.name = f"t{len(self.tensors)}".encode()
        t.buffer = 0
        if data is not None:
            buf = s.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = s.QuantizationParametersT()
            q.scale = np.atleast_1d(np.asarray(scale, dtype=np.float32))
            q.zeroPoint = np.atleast_1d(np.asarray(zero_point, dtype=np.int64))
            q.quantizedDimension = qdim
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def act(self, shape, scale=0.05, zero_point=0) -> int:
        return self.tensor(shape, "int8", scale=scale, zero_point=zero_point) if self.int8 else self.tensor(shape, "float32")

    def scale_of(self, index: int) -> float:
        q = self.tensors[index].quantization
        return float(q.scale[0]) if q is not None else 1.0

    def op(self, name: str, inputs, outputs, options_type: str | None = None, options=None, version: int = 1) -> None:
        s = self.s
        code = getattr(s.BuiltinOperator, name)
        if code not in self.codes:
            oc = s.OperatorCodeT()
            oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), version
            self.codes[code] = (len(self.codes), oc)
        o = s.OperatorT()
        o.opcodeIndex = self.codes[code][0]
        o.inputs, o.outputs = np.asarray(inputs, dtype=np.int32), np.asarray(outputs, dtype=np.int32)
        if options_type:
            o.builtinOptionsType = getattr(s.BuiltinOptions, options_type)
            o.builtinOptions = options
        self.ops.append(o)

    def weights(self, shape, qdim: int) -> tuple[int, np.ndarray]:
        """Filter tensor: float32, or int8 per-channel symmetric along qdim; returns (index, scales)."""
        w = self.rng.standard_normal(shape).astype(np.float32) * 0.1
        if not self.int8:
            return self.tensor(shape, "float32", w), np.ones(shape[qdim], np.float32)
        scales = np.full(shape[qdim], 0.1 * 3 / 127, np.float32)
        q = np.clip(np.round(w / 0.1 / 3 * 127), -127, 127).astype(np.int8)
        return self.tensor(shape, "int8", q, scales, np.zeros(shape[qdim], np.int64), qdim), scales

    def bias(self, n: int, input_index: int, filter_scales: np.ndarray) -> int:
        if not self.int8:
            return self.tensor([n], "float32", np.zeros(n, np.float32))
        scales = self.scale_of(input_index) * filter_scales
        return self.tensor([n], "int32", np.zeros(n, np.int32), scales, np.zeros(n, np.int64))

    def finish(self, inputs, outputs) -> bytes:
        s = self.s
        sg = s.SubGraphT()
        sg.tensors, sg.operators = self.tensors, self.ops
        sg.inputs, sg.outputs = np.asarray(inputs, np.int32), np.asarray(outputs, np.int32)
        sg.name = b"main"
        m = s.ModelT()
        m.version, m.description = 3, b"edgekit profile probe"
        m.operatorCodes = [oc for _, oc in sorted(self.codes.values(), key=lambda v: v[0])]
        m.subgraphs, m.buffers = [sg], self.buffers
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=TFLITE_IDENTIFIER)
        return bytes(builder.Output())


def _out_hw(h: int, stride: int) -> int:
    return -(-h // stride)  # SAME padding


def _layer(b: _Builder, p: Probe, x: int) -> int:
    """Append one probe op reading tensor x; returns its output tensor."""
    s = b.s
    n, h, w, c = b.tensors[x].shape if len(b.tensors[x].shape) == 4 else (1, 1, 1, b.tensors[x].shape[-1])
    ver = 3 if b.int8 else 1
    if p.op == "CONV_2D":
        oh, ow = _out_hw(h, p.stride), _out_hw(w, p.stride)
        f, fs = b.weights([p.cout, p.kernel, p.kernel, c], 0)
        bias = b.bias(p.cout, x, fs)
        y = b.act([n, oh, ow, p.cout], scale=0.05)
        opt = s.Conv2DOptionsT()
        opt.padding, opt.strideH, opt.strideW, opt.fusedActivationFunction = SAME, p.stride, p.stride, RELU6
        b.op("CONV_2D", [x, f, bias], [y], "Conv2DOptions", opt, ver)
    elif p.op == "DEPTHWISE_CONV_2D":
        oh, ow = _out_hw(h, p.stride), _out_hw(w, p.stride)
        f, fs = b.weights([1, p.kernel, p.kernel, c], 3)
        bias = b.bias(c, x, fs)
        y = b.act([n, oh, ow, c], scale=0.05)
        opt = s.DepthwiseConv2DOptionsT()
        opt.padding, opt.strideH, opt.strideW, opt.depthMultiplier = SAME, p.stride, p.stride, 1
        opt.fusedActivationFunction = RELU6
        b.op("DEPTHWISE_CONV_2D", [x, f, bias], [y], "DepthwiseConv2DOptions", opt, ver)
    elif p.op == "FULLY_CONNECTED":
        f, fs = b.weights([p.cout, c], 0)
        if b.int8:  # the converter quantizes FC filters per tensor
            b.tensors[f].quantization.scale = b.tensors[f].quantization.scale[:1]
            b.tensors[f].quantization.zeroPoint = b.tensors[f].quantization.zeroPoint[:1]
        bias = b.bias(p.cout, x, fs[:1] if b.int8 else fs)
        if b.int8:
            b.tensors[bias].quantization.scale = b.tensors[bias].quantization.scale[:1]
            b.tensors[bias].quantization.zeroPoint = b.tensors[bias].quantization.zeroPoint[:1]
        y = b.act([1, p.cout], scale=0.05)
        b.op("FULLY_CONNECTED", [x, f, bias], [y], "FullyConnectedOptions", s.FullyConnectedOptionsT(), 4 if b.int8 else 1)
    elif p.op == "MUL" and p.broadcast:
        y = b.act([n, h, w, c], scale=0.05)
        b.op("MUL", [x, b.extra_inputs[0]], [y], "MulOptions", s.MulOptionsT(), 2 if b.int8 else 1)
    elif p.op in ("ADD", "MUL"):
        y = b.act([n, h, w, c], scale=0.1 if p.op == "ADD" else 0.0025 * 10)
        opt = s.AddOptionsT() if p.op == "ADD" else s.MulOptionsT()
        opt.fusedActivationFunction = RELU if p.activation else 0
        b.op(p.op, [x, x], [y], "AddOptions" if p.op == "ADD" else "MulOptions", opt, 2 if b.int8 else 1)
    elif p.op == "LOGISTIC":
        y = b.act([n, h, w, c], scale=1 / 256, zero_point=-128)
        b.op("LOGISTIC", [x], [y], version=2 if b.int8 else 1)
    elif p.op == "HARD_SWISH":
        y = b.act([n, h, w, c], scale=0.05)
        b.op("HARD_SWISH", [x], [y])
    elif p.op == "RELU":
        # the converter gives a ReLU of its own an output scale for [0, max], not its input's: int8 it
        # runs on the reference kernels (~8 ns/value here, 300x its fp32 form; NASNet has 48 of them)
        y = b.act([n, h, w, c], scale=0.03, zero_point=-128)
        b.op("RELU", [x], [y])
    elif p.op == "PRELU":
        alpha = b.tensor([1, 1, c], "int8", np.full(c, 32, np.int8), 1 / 128, 0) if b.int8 else \
            b.tensor([1, 1, c], "float32", np.full(c, 0.25, np.float32))
        y = b.act([n, h, w, c], scale=0.05)
        b.op("PRELU", [x, alpha], [y])
    elif p.op in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        oh, ow = _out_hw(h, p.stride), _out_hw(w, p.stride)
        y = b.act([n, oh, ow, c], scale=0.05)
        opt = s.Pool2DOptionsT()
        opt.padding, opt.strideH, opt.strideW, opt.filterHeight, opt.filterWidth = SAME, p.stride, p.stride, p.kernel, p.kernel
        b.op(p.op, [x], [y], "Pool2DOptions", opt, 2 if b.int8 else 1)
    elif p.op == "MEAN":
        axes = b.tensor([2], "int32", np.array([1, 2], np.int32))
        y = b.act([n, 1, 1, c], scale=0.05)
        opt = s.ReducerOptionsT()
        opt.keepDims = True
        b.op("MEAN", [x, axes], [y], "ReducerOptions", opt, 2 if b.int8 else 1)
    elif p.op == "PAD":
        pads = b.tensor([4, 2], "int32", np.array([[0, 0], [1, 1], [1, 1], [0, 0]], np.int32))
        y = b.act([n, h + 2, w + 2, c], scale=0.05)
        b.op("PAD", [x, pads], [y], version=2 if b.int8 else 1)
    elif p.op == "CONCATENATION":
        # chained, each joins the model's input to what came before: channels grow as in a DenseNet block
        first = b.first if b.first is not None else x
        y = b.act([n, h, w, c + int(b.tensors[first].shape[-1])], scale=0.05)
        opt = s.ConcatenationOptionsT()
        opt.axis = 3
        b.op("CONCATENATION", [x, first], [y], "ConcatenationOptions", opt, 2 if b.int8 else 1)
    elif p.op == "RESIZE_BILINEAR":  # x2 upsampling, as decoders and feature pyramids do
        size = b.tensor([2], "int32", np.array([2 * h, 2 * w], np.int32))
        y = b.act([n, 2 * h, 2 * w, c], scale=b.scale_of(x) if b.int8 else None)
        b.op("RESIZE_BILINEAR", [x, size], [y], "ResizeBilinearOptions", s.ResizeBilinearOptionsT(), 2 if b.int8 else 1)
    elif p.op == "TRANSPOSE_CONV":  # SAME padding: stride x the input's size
        oh, ow = h * p.stride, w * p.stride
        shape = b.tensor([4], "int32", np.array([n, oh, ow, p.cout], np.int32))
        f, fs = b.weights([p.cout, p.kernel, p.kernel, c], 0)
        bias = b.bias(p.cout, x, fs)
        y = b.act([n, oh, ow, p.cout], scale=0.05)
        opt = s.TransposeConvOptionsT()
        opt.padding, opt.strideH, opt.strideW = SAME, p.stride, p.stride
        b.op("TRANSPOSE_CONV", [shape, f, x, bias], [y], "TransposeConvOptions", opt, 3)
    elif p.op == "SOFTMAX":
        y = b.act([1, c], scale=1 / 256, zero_point=-128)
        opt = s.SoftmaxOptionsT()
        opt.beta = 1.0
        b.op("SOFTMAX", [x], [y], "SoftmaxOptions", opt, 2 if b.int8 else 1)
    else:
        raise ValueError(f"no probe builder for {p.op}")
    return y


def _network(b: _Builder, x: int, width: int, activation: str | None, excite: bool = False) -> int:
    """A MobileNetV2-style body: stem, inverted residual blocks (expand 1x1, depthwise 3x3, project
    1x1, residual ADD), head 1x1, global MEAN, classifier. Ops in context: weights of earlier layers
    evicted from the cache, activations handed from op to op, as in a converted network. excite: a
    squeeze-and-excitation block after every depthwise convolution, as MobileNetV3, EfficientNet and
    MediaPipe's MobileNetV3-based models have them (_excite)."""
    def layer(op, cout=0, kernel=1, stride=1, y=None):
        return _layer(b, Probe("", op, "int8" if b.int8 else "fp32", (), cout=cout, kernel=kernel, stride=stride),
                      x if y is None else y)

    def act(y):
        return _layer(b, Probe("", activation, "", ()), y) if activation else y

    x = act(layer("CONV_2D", width, 3, 2))
    for mult, stride in ((1, 1), (1.5, 2), (1.5, 1), (2, 2), (2, 1), (4, 2), (4, 1), (6, 1)):
        cin, cout = int(b.tensors[x].shape[-1]), int(width * mult)
        y = act(layer("CONV_2D", cin * 6))
        y = act(layer("DEPTHWISE_CONV_2D", kernel=3, stride=stride, y=y))
        if excite:
            y = _excite(b, y)
        y = layer("CONV_2D", cout, y=y)
        if stride == 1 and cin == cout:
            out = b.act(list(b.tensors[y].shape), scale=0.1)
            b.op("ADD", [x, y], [out], "AddOptions", b.s.AddOptionsT(), 2 if b.int8 else 1)
            y = out
        x = y
    x = act(layer("CONV_2D", width * 16))
    x = _layer(b, Probe("", "MEAN", "", ()), x)
    n, _, _, c = b.tensors[x].shape
    flat = b.act([1, int(c)], scale=0.05)
    shape = b.tensor([2], "int32", np.array([1, c], np.int32))
    b.op("RESHAPE", [x, shape], [flat])
    x = _layer(b, Probe("", "FULLY_CONNECTED", "", (), cout=1000), flat)
    return _layer(b, Probe("", "SOFTMAX", "", ()), x)


def _excite(b: _Builder, y: int) -> int:
    """Squeeze-and-excitation of y: global MEAN, 1x1 convolutions to a quarter of the channels and
    back on the one pixel left, LOGISTIC, and y scaled by the result channel by channel (a broadcast
    MUL): five small ops per block."""
    channels = int(b.tensors[y].shape[-1])  # the builder's precision is the layers' (as in _network)
    s = _layer(b, Probe("", "MEAN", "", ()), y)
    s = _layer(b, Probe("", "CONV_2D", "", (), cout=max(8, channels // 4)), s)
    s = _layer(b, Probe("", "CONV_2D", "", (), cout=channels), s)
    s = _layer(b, Probe("", "LOGISTIC", "", ()), s)
    out = b.act(list(b.tensors[y].shape), scale=0.05)
    b.op("MUL", [y, s], [out], "MulOptions", b.s.MulOptionsT(), 2 if b.int8 else 1)
    return out


def build(p: Probe, seed: int = 0) -> bytes:
    """The probe as .tflite bytes."""
    b = _Builder(p.precision, seed)
    if p.op == "NETWORK":  # cout: width, kernel: 0 = ReLU6 fused only, 1 = + HARD_SWISH; broadcast: + SE
        x0 = b.act(list(p.shape), scale=0.05)
        return b.finish([x0], [_network(b, x0, p.cout, "HARD_SWISH" if p.kernel else None, p.broadcast)])
    x0 = b.act(list(p.shape), scale=0.05)
    if p.op == "RESHAPE":  # input and output handling alone: the reshape is a view, free in the cost model
        shape = b.tensor([len(p.shape)], "int32", np.array(p.shape, np.int32))
        y = b.act(list(p.shape), scale=0.05)
        b.op("RESHAPE", [x0, shape], [y])
        return b.finish([x0], [y])
    if p.broadcast:
        b.extra_inputs.append(b.act([1, 1, 1, p.shape[-1]], scale=1 / 128))
    b.first = x = x0
    for _ in range(p.repeat):
        x = _layer(b, p, x)
    return b.finish([x0, *b.extra_inputs], [x])


def _suite() -> list[Probe]:
    out = []

    def add(name, op, shape, core=False, **kw):
        for precision in ("fp32", "int8"):
            out.append(Probe(f"{name}_{precision}", op, precision, shape, core=core, **kw))

    # convolutions: 1x1 (GEMM), 3x3 (indirect GEMM), strided, the 3-channel stem, wide and narrow
    add("conv1x1_56x32", "CONV_2D", (1, 56, 56, 32), cout=32, repeat=4, core=True)
    add("conv1x1_28x96", "CONV_2D", (1, 28, 28, 96), cout=96, repeat=4)
    add("conv1x1_14x192", "CONV_2D", (1, 14, 14, 192), cout=192, repeat=4, core=True)
    add("conv1x1_7x384", "CONV_2D", (1, 7, 7, 384), cout=384, repeat=4)
    add("conv1x1_28x24to144", "CONV_2D", (1, 28, 28, 24), cout=144)
    add("conv1x1_14x576to96", "CONV_2D", (1, 14, 14, 576), cout=96)
    add("conv1x1_7x16to8", "CONV_2D", (1, 7, 7, 16), cout=8, repeat=1)
    add("conv3x3_28x32", "CONV_2D", (1, 28, 28, 32), cout=32, kernel=3, repeat=3, core=True)
    add("conv3x3_14x128", "CONV_2D", (1, 14, 14, 128), cout=128, kernel=3, repeat=2)
    add("conv3x3_56x16", "CONV_2D", (1, 56, 56, 16), cout=16, kernel=3, repeat=3)
    add("conv3x3s2_56x64to128", "CONV_2D", (1, 56, 56, 64), cout=128, kernel=3, stride=2)
    add("conv3x3s2_stem_128x3to32", "CONV_2D", (1, 128, 128, 3), cout=32, kernel=3, stride=2, core=True)
    add("conv7x7s2_stem_64x3to64", "CONV_2D", (1, 64, 64, 3), cout=64, kernel=7, stride=2)
    # weights far larger than a cache: late stages of ResNet-like networks stream them every inference
    add("conv1x1_2x1024_bigweights", "CONV_2D", (1, 2, 2, 1024), cout=1024, repeat=4)
    add("conv3x3_4x512_bigweights", "CONV_2D", (1, 4, 4, 512), cout=512, kernel=3, repeat=2)
    add("conv1x1_8x1024_bigweights", "CONV_2D", (1, 8, 8, 1024), cout=1024, repeat=2)
    # narrow layers at a high resolution (MediaPipe-style 8-16 channel stems) and the 1x1-spatial
    # squeeze-and-excitation convolutions of EfficientNet / MobileNetV3
    add("conv3x3s2_stem_256x3to8", "CONV_2D", (1, 256, 256, 3), cout=8, kernel=3, stride=2)
    add("conv2x2s2_128x8", "CONV_2D", (1, 128, 128, 8), cout=8, kernel=2, stride=2)
    add("conv1x1_64x8to16", "CONV_2D", (1, 64, 64, 8), cout=16)
    add("conv1x1_se_1x96to4", "CONV_2D", (1, 1, 1, 96), cout=4)
    add("conv1x1_se_1x4to96", "CONV_2D", (1, 1, 1, 4), cout=96)
    add("conv1x1_se_1x1152to48", "CONV_2D", (1, 1, 1, 1152), cout=48)
    add("dw3x3_128x8", "DEPTHWISE_CONV_2D", (1, 128, 128, 8), kernel=3, repeat=2)
    add("dw1x1_128x8", "DEPTHWISE_CONV_2D", (1, 128, 128, 8), kernel=1, repeat=2)
    add("prelu_128x8", "PRELU", (1, 128, 128, 8), repeat=2)
    add("mul_se_28x144_x4", "MUL", (1, 28, 28, 144), broadcast=True, repeat=4)
    add("mul_se_7x1152_x4", "MUL", (1, 7, 7, 1152), broadcast=True, repeat=4)
    # the same over narrow channels: a broadcast MUL pays per row of channels (costmodel.ROW_FEATURES),
    # which the two above (784 and 49 rows) leave to trade against their values
    add("mul_se_56x16_x4", "MUL", (1, 56, 56, 16), broadcast=True, repeat=4)
    add("mul_se_96x8_x4", "MUL", (1, 96, 96, 8), broadcast=True, repeat=4)
    # PRELU pays per row too: with three shapes the fit could trade its per-op, per-value and per-row
    # costs freely (one fit put all of a 32x32x64 layer's time on the op and its rows)
    add("prelu_8x128", "PRELU", (1, 8, 8, 128), repeat=4)
    add("prelu_32x64", "PRELU", (1, 32, 32, 64), repeat=4)
    # depthwise
    add("dw3x3_56x32", "DEPTHWISE_CONV_2D", (1, 56, 56, 32), kernel=3, repeat=4, core=True)
    add("dw3x3_14x192", "DEPTHWISE_CONV_2D", (1, 14, 14, 192), kernel=3, repeat=4)
    add("dw3x3_7x576", "DEPTHWISE_CONV_2D", (1, 7, 7, 576), kernel=3, repeat=4, core=True)
    add("dw5x5_28x120", "DEPTHWISE_CONV_2D", (1, 28, 28, 120), kernel=5, repeat=3)
    add("dw3x3s2_56x96", "DEPTHWISE_CONV_2D", (1, 56, 56, 96), kernel=3, stride=2)
    add("dw5x5s2_28x240", "DEPTHWISE_CONV_2D", (1, 28, 28, 240), kernel=5, stride=2)
    # kernels of more than 25 taps (NASNet's 7x7 separable convolutions) leave XNNPACK's one-pass
    # depthwise microkernels for a path 13-50x slower per multiply-accumulate (costmodel.kind)
    add("dw7x7_24x11", "DEPTHWISE_CONV_2D", (1, 24, 24, 11), kernel=7)
    add("dw7x7s2_48x32", "DEPTHWISE_CONV_2D", (1, 48, 48, 32), kernel=7, stride=2)
    # fully connected
    add("fc_1280to1000", "FULLY_CONNECTED", (1, 1280), cout=1000, core=True)
    add("fc_256to256", "FULLY_CONNECTED", (1, 256), cout=256, repeat=4)
    add("fc_2048to10", "FULLY_CONNECTED", (1, 2048), cout=10)
    add("fc_2048to4096_bigweights", "FULLY_CONNECTED", (1, 2048), cout=4096)
    # feeding inputs and reading outputs (the runtime quantizes int8 ones in numpy): without these the
    # fit cannot tell a large-input elementwise probe's op time from its I/O time
    add("io_56x32", "RESHAPE", (1, 56, 56, 32), core=True)
    add("io_128x8", "RESHAPE", (1, 128, 128, 8))
    add("io_14x256", "RESHAPE", (1, 14, 14, 256))
    add("io_1000", "RESHAPE", (1, 1000))
    # elementwise and data movement, two sizes each
    # PAD, CONCATENATION and the broadcast MULs are chained 4 times: timed once, their op time was a
    # few per cent of the probe's input and output handling (int8 quantized in numpy), and the fit
    # costed them at ~0.005-0.05 ns per value where inside DenseNet121 int8 (prefix timing) a MUL by a
    # per-channel constant took 0.3-0.5 ns and a 16x16x64 PAD 19 us, not 0.7
    for op, rep in (("ADD", 4), ("MUL", 4), ("LOGISTIC", 4), ("HARD_SWISH", 4), ("PRELU", 4), ("PAD", 4),
                    ("CONCATENATION", 4), ("MAX_POOL_2D", 1), ("AVERAGE_POOL_2D", 1), ("MEAN", 1)):
        kw = {"kernel": 3, "stride": 2} if "POOL" in op else {}
        chained = "_x4" if op in ("PAD", "CONCATENATION") else ""
        add(f"{op.lower()}{chained}_56x32", op, (1, 56, 56, 32), repeat=rep, core=op in ("ADD", "MEAN"), **kw)
        add(f"{op.lower()}{chained}_14x256", op, (1, 14, 14, 256), repeat=rep, **kw)
    add("mean_7x1280", "MEAN", (1, 7, 7, 1280))
    # a residual ADD at a segmenter's or detector's resolution (MediaPipe's 128x128x16): the two sizes
    # above (50 K and 100 K values) left an ADD's cost per value to trade against the I/O terms
    add("add_128x16", "ADD", (1, 128, 128, 16), repeat=4)
    # a float ADD with a fused RELU runs a slower kernel than a plain one (edgekit.profile.costmodel.CLAMPS):
    # residual blocks end in one (Keras ResNet's ADD+RELU, MediaPipe's ADD -> RELU)
    add("add_relu_56x32", "ADD", (1, 56, 56, 32), repeat=4, activation=True)
    add("add_relu_14x256", "ADD", (1, 14, 14, 256), repeat=4, activation=True)
    # a ReLU not fused into a convolution (NASNet's before each separable convolution) and a 3x3
    # stride-1 average pool with SAME padding (Inception's and NASNet's branches; XNNPACK averages
    # each border pixel over its own count): chained, so their time is not lost in the I/O terms
    add("relu_56x32", "RELU", (1, 56, 56, 32), repeat=4)
    add("relu_14x256", "RELU", (1, 14, 14, 256), repeat=4)
    add("average_pool_2d_s1_28x44", "AVERAGE_POOL_2D", (1, 28, 28, 44), kernel=3, stride=1, repeat=4)
    # whole synthetic networks: ops in context (see _network), several widths and resolutions
    add("net_96_w16", "NETWORK", (1, 96, 96, 3), cout=16, kernel=0)
    add("net_160_w8_hswish", "NETWORK", (1, 160, 160, 3), cout=8, kernel=1)
    add("net_64_w48", "NETWORK", (1, 64, 64, 3), cout=48, kernel=0)
    add("net_128_w24_hswish", "NETWORK", (1, 128, 128, 3), cout=24, kernel=1)
    # large layers (96x96 expansions) that two threads split well. Tried and dropped, as they made the
    # development networks worse (benchmarks/profile_refit.py): ResNet-style bottleneck networks with
    # 8 and 33 MB of fp32 filters (1-thread median error 8.5 % -> 12.9 %), deep 1x1 GEMMs of 128-512
    # channels at 56-14 px (2 threads: 69 % -> 55 % within +-10 %)
    add("net_192_w24", "NETWORK", (1, 192, 192, 3), cout=24, kernel=0)
    # Tried and left out: the same bodies with squeeze-and-excitation blocks (net_se_96_w16 and
    # net_se_64_w48, broadcast=True; timing run 44 holds them). The blocks gain less from a second
    # thread inside a network than the scaling prices (benchmarks/profile_context.py), but the fit
    # had no term to take it in: development networks at 2 threads 97 -> 94 % within +-10 %.
    add("softmax_1000", "SOFTMAX", (1, 1000))
    # upsampling in segmentation and detection heads (MediaPipe's selfie segmenter, palm and pose
    # detectors): bilinear x2 resizes, and transposed convolutions from a wide narrow-channel map to
    # a one-channel mask up to 256-channel 8x8 maps (their builtin form; MediaPipe's custom
    # Convolution2DTransposeBias is XNNPACK's same deconvolution and is costed as this kind)
    add("resize_bilinear_x2_16x128", "RESIZE_BILINEAR", (1, 16, 16, 128))
    add("resize_bilinear_x2_64x16", "RESIZE_BILINEAR", (1, 64, 64, 16), repeat=2)
    add("tconv2x2s2_64x16to1", "TRANSPOSE_CONV", (1, 64, 64, 16), cout=1, kernel=2, stride=2)
    add("tconv2x2s2_128x8to8", "TRANSPOSE_CONV", (1, 128, 128, 8), cout=8, kernel=2, stride=2)
    add("tconv2x2s2_32x64to32", "TRANSPOSE_CONV", (1, 32, 32, 64), cout=32, kernel=2, stride=2)
    add("tconv3x3s2_16x128to64", "TRANSPOSE_CONV", (1, 16, 16, 128), cout=64, kernel=3, stride=2)
    add("tconv4x4s2_8x256to128", "TRANSPOSE_CONV", (1, 8, 8, 256), cout=128, kernel=4, stride=2)
    add("tconv2x2s2_16x32to16", "TRANSPOSE_CONV", (1, 16, 16, 32), cout=16, kernel=2, stride=2)
    # weight streaming at growing footprints: 1x1 convolutions over 2x2 pixels whose 16.8 MB fp32
    # filters are read once per inference; how the time per byte grows once the footprint leaves each
    # cache level (a server's L3, a phone's system cache) is the device's streaming curve
    for r in STREAM_REPEATS:
        out.append(Probe(f"stream_{r}x16mb_fp32", "CONV_2D", "fp32", (1, 2, 2, STREAM_CHANNELS),
                         cout=STREAM_CHANNELS, repeat=r, core=r == STREAM_REPEATS[0]))
    return out


STREAM_CHANNELS = 2048
STREAM_REPEATS = (1, 2, 4, 8)

# The kernel grid: single convolutions, depthwise convolutions and fully connected layers at shapes
# drawn (seeded, so every device times the same ones) from what mobile CNNs use, per precision.
# Each probe is one op timed by its interpreter invoke alone; edgekit.profile.opmodel fits each
# kind's tile sizes and costs on them. A quarter of the 1x1 draws are strided, which XNNPACK runs as
# an indirect GEMM (costmodel.kind): per precision ~50 plain 1x1 GEMMs, ~65 indirect ones.
GRID_COUNTS = {"CONV_2D_1x1": 90, "CONV_2D": 55, "DEPTHWISE_CONV_2D": 45, "FULLY_CONNECTED": 20}
# --quick: the first draws of each; at least opmodel.MIN_PROBES of every kind, strided 1x1 draws aside
GRID_QUICK_COUNTS = {"CONV_2D_1x1": 12, "CONV_2D": 8, "DEPTHWISE_CONV_2D": 8, "FULLY_CONNECTED": 6}
GRID_RESOLUTIONS = (1, 2, 4, 7, 8, 14, 16, 28, 32, 56, 64, 112)
GRID_CHANNELS = (8, 12, 16, 24, 32, 40, 48, 64, 72, 80, 96, 120, 128, 144, 160, 192, 240, 256, 320, 384, 480,
                 512, 576, 672, 768, 960, 1024)
GRID_FEATURES = (64, 128, 256, 512, 1000, 1024, 1280, 2048, 4096)
# long enough to time, short enough for the 5-minute budget; up to MobileNetV1's 14x14x512x512 (51 M)
# and InceptionV3's 35x35x288x384 3x3 (111 M): with a cap at 60 M the fit priced big fp32 GEMMs 8-12 % high
GRID_MACS = (2e4, 1.2e8)
GRID_WEIGHT_BYTES = 1.5e6    # convolutions; larger filters are the streaming probes' business
# input + output of one probe: all probes stay loaded during the run (a 4 GB Pi must hold them), and
# without a cap the grid's activations alone came to 410 MB (peak RSS 3.4 GB here, 2.1 GB before the grid)
GRID_ACTIVATION_BYTES = 4e6
GRID_FC_WEIGHT_BYTES = 8e6   # classifiers (1280 x 1000 fp32 is 5 MB) stream their weights every call
# Image stems (3 input channels, stride 2) at the resolutions networks take them: the drawn grid has
# few stems, and none above 112 px, and the kernel model missed the ones networks have by 20-40 %
# (the suite's 3x3 256 px -> 8 probe 36 % under; MediaPipe's face detector 5x5 128 px -> 24 channels
# 0.135 ms estimated, 0.201 in the network - 0.156 with these stems: 24 channels take a slower path
# than 16 or 32 here, which tile counts cannot say). Drawn apart, so the main draws keep their shapes.
GRID_STEMS = 12
GRID_STEM_RESOLUTIONS = (96, 128, 160, 192, 224, 256)
GRID_STEM_CHANNELS = (8, 16, 24, 32, 48, 64)
# Depthwise convolutions whose channels are not whole vectors (NASNet's 11-, 22- and 44-channel
# layers, MediaPipe's 28-, 36- and 42-channel ones): the drawn grid's channels are all multiples of 8,
# and a fp32 depthwise kernel here runs the leftover channels through a pass dearer than a whole tile
# (opmodel.REMAINDER_WIDTHS). Drawn apart too.
GRID_ODD_DEPTHWISE = 10
GRID_ODD_CHANNELS = (4, 6, 11, 12, 20, 22, 28, 36, 44, 60, 92, 100, 132)
# 1x1 depthwise convolutions (a per-channel scale; a dozen in MediaPipe's hand models): the drawn grid's
# depthwise filters are 3x3 and 5x5, and XNNPACK runs a 1x1 one through a kernel of a few taps, not one
# (opmodel.TAP_FLOORS): without these the kernel model priced them at a quarter to a half of their time.
GRID_POINTWISE_DEPTHWISE = 8


def _grid_shape(op: str, precision: str, rng: np.random.Generator) -> Probe | None:
    """One drawn shape, or None when it falls outside the time and size limits."""
    if op == "FULLY_CONNECTED":
        value_bytes = 1 if precision == "int8" else 4
        cin, cout = int(rng.choice(GRID_FEATURES)), int(rng.choice(GRID_CHANNELS + GRID_FEATURES))
        if cin * cout * value_bytes > GRID_FC_WEIGHT_BYTES:
            return None
        return Probe("", op, precision, (1, cin), cout=cout, grid=True)
    h, cin, cout = int(rng.choice(GRID_RESOLUTIONS)), int(rng.choice(GRID_CHANNELS)), int(rng.choice(GRID_CHANNELS))
    stride = int(rng.choice((1, 1, 1, 2)))
    if op == "CONV_2D_1x1":
        kernel = 1
    elif op == "CONV_2D":
        kernel = int(rng.choice((3, 3, 3, 5, 7)))
        if rng.random() < 0.15:  # an image stem
            cin, stride = 3, 2
    else:
        kernel, cout = int(rng.choice((3, 3, 3, 5))), cin
    return _grid_probe(op, precision, h, cin, cout, kernel, stride)


def _grid_probe(op: str, precision: str, h: int, cin: int, cout: int, kernel: int, stride: int) -> Probe | None:
    """The grid probe of this shape, or None when it falls outside the time and size limits."""
    value_bytes = 1 if precision == "int8" else 4
    out = -(-h // stride)
    depth = 1 if op == "DEPTHWISE_CONV_2D" else cin
    macs, weights = out * out * cout * kernel * kernel * depth, cout * kernel * kernel * depth * value_bytes
    activations = (h * h * cin + out * out * cout) * value_bytes
    if not GRID_MACS[0] <= macs <= GRID_MACS[1] or weights > GRID_WEIGHT_BYTES or h < kernel \
            or activations > GRID_ACTIVATION_BYTES:
        return None
    return Probe("", op.replace("_1x1", ""), precision, (1, h, h, cin), cout=cout, kernel=kernel, stride=stride,
                 grid=True)


def _grid_stem(precision: str, rng: np.random.Generator) -> Probe | None:
    h, cout = int(rng.choice(GRID_STEM_RESOLUTIONS)), int(rng.choice(GRID_STEM_CHANNELS))
    return _grid_probe("CONV_2D", precision, h, 3, cout, int(rng.choice((3, 3, 5, 7))), 2)


def _grid_odd_depthwise(precision: str, rng: np.random.Generator) -> Probe | None:
    h, channels = int(rng.choice(GRID_RESOLUTIONS)), int(rng.choice(GRID_ODD_CHANNELS))
    return _grid_probe("DEPTHWISE_CONV_2D", precision, h, channels, channels, int(rng.choice((3, 3, 5))),
                       int(rng.choice((1, 1, 2))))


def _grid_pointwise_depthwise(precision: str, rng: np.random.Generator) -> Probe | None:
    h, channels = int(rng.choice(GRID_RESOLUTIONS)), int(rng.choice(GRID_CHANNELS))
    return _grid_probe("DEPTHWISE_CONV_2D", precision, h, channels, channels, 1, 1)


# Sets drawn apart from the main draws, each from a generator of its own (stream 1, 2, ...): adding a set
# leaves every other shape as it was. (draw, count, name prefix); the reduced grid leaves them out.
DRAWN_APART = ((_grid_stem, GRID_STEMS, "grid_stem"),
               (_grid_odd_depthwise, GRID_ODD_DEPTHWISE, "grid_dw_odd"),
               (_grid_pointwise_depthwise, GRID_POINTWISE_DEPTHWISE, "grid_dw_1x1"))


def grid(counts: dict[str, int] = GRID_COUNTS, seed: int = 0) -> list[Probe]:
    """The kernel grid (same shapes on every device), plus per precision a model with nothing to
    compute: what an invoke costs by itself, taken off every grid probe's time."""
    out = []
    for precision in ("fp32", "int8"):
        rng = np.random.default_rng([seed, precision == "int8"])
        out.append(Probe(f"grid_invoke_{precision}", "RESHAPE", precision, (1, 8), grid=True))
        for op, count in counts.items():
            drawn = 0
            while drawn < count:
                p = _grid_shape(op, precision, rng)
                if p is not None:
                    out.append(replace(p, name=f"grid_{op.lower()}_{drawn}_{precision}"))
                    drawn += 1
        for stream, (draw, count, prefix) in enumerate(DRAWN_APART, 1):
            out += _distinct(draw, precision, np.random.default_rng([seed, precision == "int8", stream]), count, prefix)
    return out


def _distinct(draw, precision: str, rng: np.random.Generator, count: int, prefix: str) -> list[Probe]:
    """`count` probes of distinct shapes from `draw`, named prefix_i_precision."""
    out, seen = [], set()
    while len(seen) < count:
        p = draw(precision, rng)
        if p is not None and (p.shape, p.cout, p.kernel, p.stride) not in seen:
            out.append(replace(p, name=f"{prefix}_{len(seen)}_{precision}"))
            seen.add((p.shape, p.cout, p.kernel, p.stride))
    return out


def is_grid_invoke(name: str) -> bool:
    """The grid's empty model (by probe name: measurements carry names)."""
    return name.startswith("grid_invoke_")


def is_stream(p: Probe) -> bool:
    return p.name.startswith("stream_")


def weight_bytes(p: Probe) -> int:
    """A streaming probe's filter bytes (fp32)."""
    return STREAM_CHANNELS * STREAM_CHANNELS * 4 * p.repeat


GRID = grid()
# the reduced suite's grid: the first few draws of each, so a name always means one shape
QUICK_GRID = [p for p in GRID if is_grid_invoke(p.name) or not p.name.startswith(tuple(prefix + "_" for _, _, prefix in DRAWN_APART)) and int(
    p.name.split("_")[-2]) < GRID_QUICK_COUNTS["CONV_2D_1x1" if p.op == "CONV_2D" and p.kernel == 1 else p.op]]
SUITE = _suite() + GRID


def suite(quick: bool = False, ram_bytes: float | None = None) -> list[Probe]:
    """The probes; streaming probes, smallest first, while their weights add up to at most 1/32 of
    the device's RAM: every probe stays loaded during the run, at each thread count, its weights both
    in the file and packed (a 4 GB Pi keeps three of four, 1.9 GB peak RSS here with all of them).
    The kernel grid's filters add ~60 MB (file and packed: ~120 MB), loaded at one thread only."""
    chosen = [p for p in SUITE if p.core and not p.grid] + QUICK_GRID if quick else list(SUITE)
    budget = ram_bytes / 32 if ram_bytes else float("inf")
    out, streamed = [], 0
    for p in chosen:
        if is_stream(p):
            if streamed + weight_bytes(p) > budget:
                continue
            streamed += weight_bytes(p)
        out.append(p)
    return out
