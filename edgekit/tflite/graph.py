"""The work in a .tflite graph, op by op: multiply-accumulates, bytes moved, precision.

This is what the emulator costs on a target CPU and the arena planner lays out. It reads the
flatbuffer only (no interpreter), so it works for any model, including ones this machine
cannot run. Batch dimensions that are dynamic (-1) are taken as 1.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import ArtifactError, EdgekitError
from .reader import ITEMSIZE, dtype_names, is_constant, opcode_names, root, schema

# op type -> class the cost model knows; anything else is "elementwise" (one pass over data)
OP_CLASS = {
    "CONV_2D": "conv", "TRANSPOSE_CONV": "conv", "CONV_3D": "conv",
    "DEPTHWISE_CONV_2D": "dwconv",
    "FULLY_CONNECTED": "fc", "BATCH_MATMUL": "fc",
    # views and metadata: no arithmetic, at most a copy
    "RESHAPE": "view", "SQUEEZE": "view", "EXPAND_DIMS": "view", "SHAPE": "view",
}
# ops the cost model has no sensible estimate for; listed as not costed
UNCOSTED = {"CUSTOM", "WHILE", "IF", "CALL_ONCE", "DELEGATE", "CALL"}
# custom ops the stock runtime runs as a builtin's kernel (edgekit.tflite.info.RUNTIME_CUSTOM_OPS):
# named by their custom code and costed as that builtin. MediaPipe's transposed convolution (inputs:
# data, filter, bias) is XNNPACK's deconvolution, as TRANSPOSE_CONV is; left uncosted, the one that
# upsamples the selfie segmenter's 128x128x16 map to its 256x256 mask (0.9 ms of 3 here) cost nothing
COSTED_CUSTOM_OPS = {"Convolution2DTransposeBias": "TRANSPOSE_CONV"}


def data_input(op_type: str) -> int:
    """Which input holds the data an op reads: TRANSPOSE_CONV takes (output shape, filter, data);
    every other op here, MediaPipe's transposed convolution included, takes the data first."""
    return 2 if op_type == "TRANSPOSE_CONV" else 0


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    constant: bool        # has data in the file (weights, biases, constants)
    nbytes: int


@dataclass
class Op:
    index: int
    type: str
    op_class: str
    inputs: list[int]
    outputs: list[int]
    macs: float = 0.0
    elements: float = 0.0       # for elementwise ops: values processed
    bytes_in: float = 0.0       # activations read
    bytes_out: float = 0.0      # activations written
    bytes_weights: float = 0.0  # constants read
    window: int = 1             # pooling ops: input values read per output value (filter height x width)
    precision: str = "fp32"     # fp32 | int8 | hybrid (int8 weights, float math) | int16 | fp16
    costed: bool = True
    activation: bool = False    # ADD, SUB, MUL: a fused activation (RELU, RELU6, ...) clamps the output


@dataclass
class Graph:
    tensors: list[Tensor]
    ops: list[Op]
    inputs: list[int]
    outputs: list[int]
    size_bytes: int
    weight_bytes: int = 0
    uncosted: list[str] = field(default_factory=list)

    @property
    def total_macs(self) -> float:
        return sum(op.macs for op in self.ops)


def read_graph(data: bytes, origin: str = "model") -> Graph:
    """The costing view of a .tflite; a file whose flatbuffer cannot be walked is an ArtifactError."""
    try:
        return _read_graph(data, origin)
    except EdgekitError:
        raise
    except (struct.error, IndexError, KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{origin} is corrupt: its graph cannot be read ({type(e).__name__}: {e}); "
                            "re-copy or re-convert the model") from e


def _read_graph(data: bytes, origin: str) -> Graph:
    model = root(data, origin)
    codes = opcode_names(model, unknown="UNKNOWN")
    for i, name in enumerate(codes):
        if name == "CUSTOM":
            custom = (model.OperatorCodes(i).CustomCode() or b"").decode(errors="replace")
            codes[i] = custom if custom in COSTED_CUSTOM_OPS else name
    dtypes = dtype_names()
    sg = model.Subgraphs(0)
    tensors = []
    for t in range(sg.TensorsLength()):
        tt = sg.Tensors(t)
        shape = tuple(max(1, int(d)) for d in tt.ShapeAsNumpy()) if tt.ShapeLength() else ()
        if tt.ShapeSignatureLength():  # dynamic dims (-1) count as 1
            shape = tuple(1 if int(s) < 0 else int(d) for s, d in zip(tt.ShapeSignatureAsNumpy(), shape))
        dtype = dtypes.get(tt.Type(), "float32")
        constant = is_constant(model, tt.Buffer())
        nbytes = int(np.prod(shape, dtype=np.int64) * ITEMSIZE.get(dtype, 4)) if shape else ITEMSIZE.get(dtype, 4)
        tensors.append(Tensor(t, (tt.Name() or b"").decode(), shape, dtype, constant, nbytes))
    raw_ops = []
    for o in range(sg.OperatorsLength()):
        op = sg.Operators(o)
        inputs = [int(i) for i in op.InputsAsNumpy()] if op.InputsLength() else []
        outputs = [int(i) for i in op.OutputsAsNumpy()] if op.OutputsLength() else []
        raw_ops.append((o, codes[op.OpcodeIndex()], [i for i in inputs if i >= 0], outputs))
    folded = _fold_constant_dequantize(raw_ops, tensors)
    ops = [_folded_op(*raw) if raw[0] in folded else _cost_op(*raw, tensors) for raw in raw_ops]
    for op in ops:
        if op.type in _POOLS:
            op.window = _pool_window(sg.Operators(op.index))
        if op.type in _ACTIVATION_OPTIONS:
            op.activation = _fused_activation(sg.Operators(op.index), _ACTIVATION_OPTIONS[op.type])
    graph = Graph(tensors, ops, [int(i) for i in sg.InputsAsNumpy()], [int(i) for i in sg.OutputsAsNumpy()], len(data))
    graph.weight_bytes = sum(t.nbytes for t in tensors if t.constant)
    graph.uncosted = sorted({op.type for op in ops if not op.costed})
    return graph


_POOLS = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}


def _builtin_options(op, table: str):
    """The op's builtin options read as schema table `table` (Pool2DOptions, AddOptions, ...), or
    None when the op has none."""
    data = op.BuiltinOptions()
    if data is None:
        return None
    opts = getattr(schema(), table)()
    opts.Init(data.Bytes, data.Pos)
    return opts


def _pool_window(op) -> int:
    """Filter height x width of a pooling op (its Pool2DOptions), 1 when the options are missing.
    A 3x3 stride-1 pool reads 9 values per output where a 3x3 stride-2 one reads 9 per 4 inputs:
    costed by values alone, Inception's and NASNet's stride-1 pools came out ~4x too cheap."""
    opts = _builtin_options(op, "Pool2DOptions")
    return 1 if opts is None else max(1, int(opts.FilterHeight()) * int(opts.FilterWidth()))


# binary elementwise ops whose options carry a fused activation, and those options' table name
_ACTIVATION_OPTIONS = {"ADD": "AddOptions", "SUB": "SubOptions", "MUL": "MulOptions"}


def _fused_activation(op, options: str) -> bool:
    """Whether the op's options fuse an activation (any but NONE) into its output."""
    opts = _builtin_options(op, options)
    return opts is not None and int(opts.FusedActivationFunction()) != 0


def _fold_constant_dequantize(raw_ops: list[tuple], tensors: list[Tensor]) -> set[int]:
    """fp16 models store weights as float16 constants feeding DEQUANTIZE, whose float32 output
    feeds the convolution; sparse models store them compressed, feeding DENSIFY (then DEQUANTIZE when
    they are fp16 too). The runtime evaluates both once, when the model is prepared (TFLite's DENSIFY
    keeps its dense copy; XNNPACK takes such weights as static), so for costing their outputs are
    constants: without this an fp16 model's convolutions had no weights and cost 0 multiply-accumulates
    (12 of 14 MediaPipe models, ResNet50 fp16 "4.9x faster"), and a sparse one's still did (MediaPipe's
    pose_detection and sparse face detector: 38 and 46 DENSIFY -> DEQUANTIZE chains; the sparse test
    CNN estimated 34 % too fast). Ops come in execution order, so a chain folds link by link."""
    folded = set()
    for index, op_type, inputs, outputs in raw_ops:
        if (op_type in ("DEQUANTIZE", "DENSIFY") and len(inputs) == 1 and tensors[inputs[0]].constant
                and len(outputs) == 1):
            tensors[outputs[0]].constant = True
            folded.add(index)
    return folded


def _folded_op(index: int, op_type: str, inputs: list[int], outputs: list[int]) -> Op:
    """An op the runtime evaluates once at load (see _fold_constant_dequantize): free per inference."""
    return Op(index, op_type, "view", inputs, outputs)


def _cost_op(index: int, op_type: str, inputs: list[int], outputs: list[int], tensors: list[Tensor]) -> Op:
    op = Op(index, op_type, OP_CLASS.get(COSTED_CUSTOM_OPS.get(op_type, op_type), "elementwise"), inputs, outputs)
    ins = [tensors[i] for i in inputs]
    outs = [tensors[i] for i in outputs]
    op.bytes_in = sum(t.nbytes for t in ins if not t.constant)
    op.bytes_weights = sum(t.nbytes for t in ins if t.constant)
    op.bytes_out = sum(t.nbytes for t in outs)
    out_elems = float(np.prod(outs[0].shape)) if outs and outs[0].shape else 1.0
    if op_type in UNCOSTED or op_type == "UNKNOWN":
        op.costed = False
        return op
    weights = next((t for t in ins[1:2] if t.constant), None) if len(ins) > 1 else None
    if op_type in ("CONV_2D",) and weights is not None and len(weights.shape) == 4:
        _, kh, kw, cin = weights.shape
        op.macs = out_elems * kh * kw * cin
    elif op_type in ("TRANSPOSE_CONV", "Convolution2DTransposeBias") and len(ins) > 2:
        filt, data = ins[1], ins[data_input(op_type)]
        if len(filt.shape) == 4:
            cout, kh, kw, _ = filt.shape
            op.macs = float(np.prod(data.shape)) * kh * kw * cout
    elif op_type == "DEPTHWISE_CONV_2D" and weights is not None and len(weights.shape) == 4:
        _, kh, kw, _ = weights.shape
        op.macs = out_elems * kh * kw
    elif op_type == "FULLY_CONNECTED" and len(ins) > 1 and ins[1].shape:
        op.macs = out_elems * ins[1].shape[-1]
    elif op_type == "BATCH_MATMUL" and len(ins) > 1 and ins[0].shape:
        op.macs = out_elems * ins[0].shape[-1]
    elif op.op_class == "elementwise":
        op.elements = max(out_elems, float(sum(np.prod(t.shape) for t in ins if not t.constant and t.shape)))
    op.precision = _precision(ins, outs, weights)
    return op


def _precision(ins: list[Tensor], outs: list[Tensor], weights: Tensor | None) -> str:
    act = next((t.dtype for t in ins if not t.constant), outs[0].dtype if outs else "float32")
    if act == "int16":
        return "int16"
    if act in ("int8", "uint8"):
        return "int8"
    if weights is not None and weights.dtype in ("int8", "uint8", "int4"):
        return "hybrid"
    return "fp32"  # fp16 weights are dequantized to float32 when the model is prepared on CPU


# ops whose first input is a table indexed by the second (or the reverse for EMBEDDING_LOOKUP)
_LOOKUPS = {"GATHER": (0, 1), "EMBEDDING_LOOKUP": (1, 0)}


def vocabulary_sizes(data: bytes, origin: str = "model") -> dict[int, int]:
    """For integer model inputs that index an embedding table (GATHER / EMBEDDING_LOOKUP of a
    constant), the table's row count: the valid id range [0, n). Keyed by input tensor index."""
    graph = read_graph(data, origin)
    # Which integer model inputs each integer tensor derives from: Keras' Embedding first maps
    # negative ids (SELECT_V2(LESS(ids, 0), ids + n, ids)), so the ids reach GATHER indirectly.
    origins: dict[int, set[int]] = {i: {i} for i in graph.inputs if graph.tensors[i].dtype.startswith(("int", "uint"))}
    sizes: dict[int, int] = {}
    for op in graph.ops:
        if op.type in _LOOKUPS and len(op.inputs) >= 2:
            table_at, ids_at = _LOOKUPS[op.type]
            table = graph.tensors[op.inputs[table_at]]
            if table.constant and table.shape:
                for model_input in origins.get(op.inputs[ids_at], ()):
                    sizes[model_input] = min(sizes.get(model_input, table.shape[0]), table.shape[0])
            continue
        derived = set().union(*(origins.get(i, set()) for i in op.inputs))
        for out in op.outputs:
            if derived and graph.tensors[out].dtype.startswith(("int", "uint")):
                origins[out] = derived
    return sizes
