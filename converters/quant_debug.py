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

from .sources import SourceModel

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
    from .tflite import make_converter

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
        rows.append({"layer": layer_of(tensor_name, names), "tensor": tensor_name,
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
    """Full-integer conversion with the named layers (Keras layer or tensor names) or op types
    (e.g. MEAN) left in float, the rest quantized, and the requested integer I/O."""
    # Float kernels must be allowed for the kept layers.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    io_dtype = converter.inference_input_type
    converter.inference_input_type = converter.inference_output_type = tf.float32
    debugger = _debugger(tf, converter, calibration)
    debugger.run()  # calibrates, and lists the quantized tensors --keep-float may name
    names = _layer_names(source)
    tensors = list(debugger.layer_statistics)
    op_types = {d["op_name"] for d in debugger._quant_interpreter._get_ops_details()} - _NOT_USER_OPS
    nodes, ops, unknown = [], [], []
    for item in keep_float:
        if item in op_types:
            ops.append(item)
            continue
        matched = [t.removeprefix(NUMERIC_VERIFY) for t in tensors
                   if item in (t, t.removeprefix(NUMERIC_VERIFY)) or item in layers_of(t, names)]
        nodes.extend(matched) if matched else unknown.append(item)
    if unknown:
        layers = sorted({layer for t in tensors for layer in layers_of(t, names)} or
                        {layer_of(t, names) for t in tensors})
        raise InputError(f"--keep-float names {', '.join(unknown)}, which match no quantized layer or op; "
                         f"layers: {', '.join(layers)}; op types: {', '.join(sorted(op_types))}")
    # The public debugger re-quantizes with float I/O only; the same private call with the
    # requested I/O type keeps --io honoured.
    from tensorflow.lite.python import convert as tf_convert

    return tf_convert.mlir_quantize(
        debugger.calibrated_model, fully_quantize=True, input_data_type=io_dtype, output_data_type=io_dtype,
        denylisted_ops=ops or None, denylisted_nodes=nodes or None)
