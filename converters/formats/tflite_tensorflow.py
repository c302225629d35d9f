"""Source model -> `.tflite` bytes for one recipe, with TensorFlow's TFLiteConverter.

Recipes (names shared with Core ML, see edgekit.recipes):
  fp32          no optimization
  fp16          float16 weights (Optimize.DEFAULT + supported_types float16)
  int8-weights  dynamic range: int8 weights, float activations, no calibration
  int8          full integer: int8 weights and activations from a representative dataset;
                builtins restricted to TFLITE_BUILTINS_INT8 so a silently-float op is an error,
                unless --keep-float names the layers/ops to leave in float
  int16x8       16-bit activations, 8-bit weights (better accuracy than int8, fewer fast kernels)
"""
from __future__ import annotations

import re
from typing import Iterator

import numpy as np

from edgekit._deps import require
from edgekit.dataset import Dataset
from edgekit.errors import ConversionError, InputError

from ..sources.base import SourceModel

IO_TYPES = ("float", "int8", "uint8")


def convert(source: SourceModel, recipe: str, calibration: Dataset | None = None, io: str = "int8",
            io_out: str | None = None,
            keep_float: tuple[str, ...] = ()) -> bytes:
    tf = require("tensorflow", "TFLite conversion")
    if recipe in ("int8", "int16x8") and calibration is None:
        raise InputError(f"recipe {recipe!r} needs calibration data: pass --calibration DIR_OR_NPZ "
                         "(a folder of representative images or a .npz of input tensors)")
    converter = make_converter(tf, source, recipe, calibration, io, io_out)
    try:
        if keep_float:
            from .tflite_debug import convert_keeping_float
            return convert_keeping_float(tf, converter, source, calibration, keep_float)
        return converter.convert()
    except (ConversionError, InputError):
        raise
    except Exception as e:
        raise explain_converter_error(e, recipe) from e


def make_converter(tf, source: SourceModel, recipe: str, calibration: Dataset | None, io: str,
                   io_out: str | None = None):
    """io: the input type of an int8 artifact; io_out its output type (default: the same). A float
    output keeps what an int8 output step cannot represent (1000 softmax probabilities of ~0.001)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(str(source.saved_model_dir))
    if recipe == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if recipe == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif recipe == "int8-weights":
        pass  # Optimize.DEFAULT without a dataset = dynamic-range quantization
    elif recipe == "int8":
        converter.representative_dataset = representative_dataset(source, calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = _io_dtype(tf, io)
        converter.inference_output_type = _io_dtype(tf, io_out or io)
    elif recipe == "int16x8":
        converter.representative_dataset = representative_dataset(source, calibration)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if io != "float":
            raise InputError(f"recipe 'int16x8' keeps float inputs/outputs here; --io {io} applies to 'int8' only")
    else:
        raise InputError(f"recipe {recipe!r} is not a TFLite recipe")
    return converter


def _io_dtype(tf, io: str):
    if io not in IO_TYPES:
        raise InputError(f"--io expects one of {', '.join(IO_TYPES)}, got {io!r}")
    return {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io]


def representative_dataset(source: SourceModel, calibration: Dataset):
    """The converter calls this to calibrate: one sample at a time, keyed by signature input name."""
    names = [t.name for t in source.inputs]

    def generate() -> Iterator[dict[str, np.ndarray]]:
        for sample in calibration.samples():
            yield dict(zip(names, sample))

    return generate


_UNSUPPORTED_OP = re.compile(r"'(tf\.[A-Za-z0-9_]+)' op is neither a custom op nor a flex op")
_NOT_QUANTIZABLE = re.compile(r"[Qq]uantization not yet supported for op: '?([A-Za-z0-9_.]+)'?")


def explain_converter_error(error: Exception, recipe: str) -> ConversionError:
    """Turn TFLiteConverter's multi-page errors into one line: the op, the likely fix."""
    text = str(error)
    ops = sorted(set(_UNSUPPORTED_OP.findall(text)))
    if ops:
        return ConversionError(
            f"TFLite has no builtin kernel for {', '.join(ops)} (recipe {recipe}); replace the op in the model "
            "with supported ones (see the LiteRT op compatibility list) or register a custom op on the device")
    ops = sorted(set(_NOT_QUANTIZABLE.findall(text)))
    if ops:
        return ConversionError(
            f"recipe {recipe} cannot quantize op {', '.join(ops)}; keep it in float with --keep-float "
            f"{ops[0].upper()} or use recipe int8-weights")
    messages = _mlir_errors(text)
    if any("tensorlist" in m.lower().replace(" ", "") for m in messages):
        # A Keras LSTM/GRU over a sequence of unknown length becomes a TensorList loop, which
        # builtin TFLite ops cannot express.
        op = next((m.split("'")[1] for m in messages if m.startswith("'tf.")), "a TensorList op")
        return ConversionError(
            f"a recurrent layer (LSTM/GRU) over a sequence of unknown length needs {op}, which LiteRT's builtin "
            "ops cannot run; give the model a fixed sequence length, keras.Input(shape=(T, ...)), so the "
            "converter emits its fused sequence op")
    first = messages[0] if messages else (text.strip().splitlines()[0] if text.strip() else type(error).__name__)
    return ConversionError(f"the TFLite converter rejected the model for recipe {recipe}: {first[:300]}; "
                           "set EDGEKIT_DEBUG=1 for the converter's full message")


def _mlir_errors(text: str) -> list[str]:
    """The converter's error lines without their MLIR location dumps: `<unknown>:0: error:
    loc(callsite(fused[...] at ...)): error: 'tf.X' op requires ...` -> `'tf.X' op requires ...`."""
    found = []
    for line in text.replace("\\n", "\n").splitlines():
        if "error:" not in line:
            continue
        message = _without_location(line.rsplit("error:", 1)[1].strip())
        if message and message not in found:
            found.append(message)
    return found


def _without_location(message: str) -> str:
    """Drop a leading `loc(...)` (nested parentheses) and the `: ` after it."""
    if not message.startswith("loc("):
        return message
    depth = 0
    for i, ch in enumerate(message):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and ch == ")":
            return message[i + 1:].lstrip(": ").strip()
    return ""
