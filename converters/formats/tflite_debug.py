"""Where does integer quantization lose accuracy, and how to keep those layers in float.

Uses TensorFlow's QuantizationDebugger: it runs the float and the quantized model side by
side on a few calibration samples and measures, per quantized tensor, the error the
quantized op adds. We rank by RMSE / scale — the error in units of the tensor's
quantization step. Uniform rounding alone gives 1/sqrt(12) ≈ 0.29; tensors far above
that lose information to clipping or a poorly fitting range and are the candidates for
`--keep-float`.
"""
from __future__ import annotations

import math
import re

import numpy as np

from edgekit.dataset import Dataset
from edgekit.errors import InputError

from ..sources.base import SourceModel

ROUNDING_ONLY_RMSE_OVER_SCALE = 1 / math.sqrt(12)
DEBUG_SAMPLES = 16
NUMERIC_VERIFY = "NumericVerify/"  # the debug model prefixes some tensor names with this
_NOT_USER_OPS = {"DELEGATE", "NumericVerify", "QUANTIZE", "DEQUANTIZE"}  # debug-model plumbing


def _debug_dataset(calibration: Dataset, samples: int):
    subset = calibration.take(range(min(samples, len(calibration))))

    def generate():
        yield from subset.samples()  # lists in input order: the debugger feeds by position

    return generate


def _debugger(tf, converter, calibration: Dataset, options=None):
    return tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=_debug_dataset(calibration, DEBUG_SAMPLES), debug_options=options)


def layers_of(tensor_name: str, layer_names: set[str]) -> list[str]:
    """'functional_1/pw_relu6_1/Relu6;functional_1/pw_bn_1/...' -> ['pw_relu6', 'pw_bn']: every
    Keras layer fused into the op that produced this tensor."""
    found = []
    for part in tensor_name.removeprefix(NUMERIC_VERIFY).split(";"):
        for seg in part.split("/"):
            for candidate in (seg, re.sub(r"_\d+$", "", seg)):
                if candidate in layer_names and candidate not in found:
                    found.append(candidate)
    return found


def layer_of(tensor_name: str, layer_names: set[str]) -> str:
    """The first Keras layer behind a tensor, else the tensor name without the debug prefix."""
    found = layers_of(tensor_name, layer_names)
    return found[0] if found else tensor_name.removeprefix(NUMERIC_VERIFY).split(";")[0]


def _layer_names(source: SourceModel) -> set[str]:
    model = source.keras_model
    return {layer.name for layer in model.layers} if model is not None else set()


def explain_quantization_error(tf, source: SourceModel, calibration: Dataset, top: int = 5) -> list[dict]:
    """The `top` tensors with the largest quantization error, worst first."""
    from .tflite_tensorflow import make_converter

    converter = make_converter(tf, source, "int8", calibration, io="float")
    debugger = _debugger(tf, converter, calibration)
    debugger.run()
    names = _layer_names(source)
    rows = []
    for tensor_name, stats in debugger.layer_statistics.items():
        scale = _scale_of(debugger, tensor_name)
        mse = float(stats.get("mean_squared_error", np.nan))
        if not scale or not np.isfinite(mse):
            continue
        keras_layers = layers_of(tensor_name, names)
        rows.append({"layer": layer_of(tensor_name, names), "tensor": tensor_name,
                     # what --keep-float accepts for it: a Keras layer name (tensor names of the debug
                     # model, like StatefulPartitionedCall:12:39, match nothing in the converted graph)
                     "keep_float": keras_layers[0] if keras_layers else None,
                     "rmse_over_scale": math.sqrt(mse) / scale,
                     "max_abs_err": float(stats.get("max_abs_error", np.nan))})
    rows.sort(key=lambda r: r["rmse_over_scale"], reverse=True)
    return rows[:top]


def _scale_of(debugger, tensor_name: str) -> float | None:
    for detail in debugger._quant_interpreter.get_tensor_details():  # the debugger exposes no public accessor
        if detail["name"] == tensor_name:
            scale = detail["quantization"][0]
            return float(scale) if scale else None
    return None


def convert_keeping_float(tf, converter, source: SourceModel, calibration: Dataset,
                          keep_float: tuple[str, ...]) -> bytes:
    """Full-integer conversion with the named layers (Keras layer names, tensor names) or op types
    (e.g. MEAN, SOFTMAX) left in float, the rest quantized, and the requested I/O types."""
    # Float kernels must be allowed for the kept layers.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    io_in, io_out = converter.inference_input_type, converter.inference_output_type
    converter.inference_input_type = converter.inference_output_type = tf.float32
    debugger = _debugger(tf, converter, calibration)
    debugger.run()  # calibrates the model the quantizer below works on
    calibrated = debugger.calibrated_model
    names = _layer_names(source)
    op_outputs, op_types = _op_outputs(tf, calibrated)
    nodes, ops, unknown = [], [], []
    for item in keep_float:
        if item in op_types:
            ops.append(item)
            continue
        # The quantizer's denylist matches an op by the name of its output tensor in the
        # calibrated model; the debugger's statistics name other (NumericVerify) tensors, which
        # matched nothing, so layer names used to change nothing at all.
        matched = [t for t in op_outputs if item == t or item in layers_of(t, names)]
        nodes.extend(matched) if matched else unknown.append(item)
    if unknown:
        layers = sorted({layer for t in op_outputs for layer in layers_of(t, names)} or
                        {layer_of(t, names) for t in op_outputs})
        raise InputError(f"--keep-float names {', '.join(unknown)}, which match no quantized layer or op; "
                         f"layers: {', '.join(layers)}; op types: {', '.join(sorted(op_types))}")
    from tensorflow.lite.python import convert as tf_convert
    from tensorflow.lite.python.util import modify_model_io_type

    # Quantize with float I/O, then set the requested I/O types the way TFLiteConverter does:
    # mlir_quantize itself turns a uint8 request into int8 (--io uint8 was silently ignored).
    # fully_quantize=True forces int8 I/O (a uint8 request came out int8); without it the model
    # keeps float I/O with QUANTIZE/DEQUANTIZE at the edges, which modify_model_io_type rewrites.
    model = tf_convert.mlir_quantize(calibrated, fully_quantize=False, input_data_type=tf.float32,
                                     output_data_type=tf.float32, denylisted_ops=ops or None,
                                     denylisted_nodes=nodes or None)
    try:
        model = modify_model_io_type(model, io_in, io_out)
    except ValueError as e:  # e.g. integer output requested for an op kept in float
        raise InputError(f"--keep-float {', '.join(keep_float)} leaves an input or output in float, so it cannot "
                         f"have integer I/O ({e}); add --io float or --io-out float") from e
    return _float_outputs_of_kept_ops(model) if io_out == tf.float32 else model


def _float_outputs_of_kept_ops(model: bytes) -> bytes:
    """An op kept in float at the end of the graph (SOFTMAX) is still followed by a QUANTIZE
    to int8, whatever float output type the quantizer was asked for: drop that last QUANTIZE so
    the float result is the model's output (its int8 step is what lost the small values)."""
    from tensorflow.lite.tools import flatbuffer_utils

    obj = flatbuffer_utils.convert_bytearray_to_object(model)
    graph = obj.subgraphs[0]
    quantize = [i for i, c in enumerate(obj.operatorCodes)
                if max(c.builtinCode, c.deprecatedBuiltinCode) == _QUANTIZE_OPCODE]
    replaced = {}
    graph.outputs = [int(i) for i in graph.outputs]  # parsed as a read-only numpy array
    for k, output in enumerate(list(graph.outputs)):
        op = next((o for o in graph.operators if o.opcodeIndex in quantize and list(o.outputs) == [output]), None)
        if op is not None and graph.tensors[op.inputs[0]].type == _FLOAT32:
            graph.outputs[k] = replaced[output] = op.inputs[0]
            graph.operators.remove(op)
    for signature in obj.signatureDefs or []:  # signatures name outputs by tensor index too
        for io in signature.outputs:
            io.tensorIndex = replaced.get(io.tensorIndex, io.tensorIndex)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))


_QUANTIZE_OPCODE = 114  # BuiltinOperator.QUANTIZE in the TFLite schema
_FLOAT32 = 0            # TensorType.FLOAT32


def _op_outputs(tf, model: bytes) -> tuple[list[str], set[str]]:
    """Names of every op's output tensors, and the op types, of a .tflite model."""
    interpreter = tf.lite.Interpreter(model_content=model)
    tensors = interpreter.get_tensor_details()
    ops = interpreter._get_ops_details()  # no public accessor for the op list
    outputs = [tensors[i]["name"] for op in ops for i in op["outputs"] if op["op_name"] not in _NOT_USER_OPS]
    return outputs, {op["op_name"] for op in ops} - _NOT_USER_OPS
