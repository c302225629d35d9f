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

from .sources import SourceModel

IO_TYPES = ("float", "int8", "uint8")


def convert(source: SourceModel, recipe: str, calibration: Dataset | None = None, io: str = "int8",
            keep_float: tuple[str, ...] = ()) -> bytes:
    tf = require("tensorflow", "TFLite conversion")
    if recipe in ("int8", "int16x8") and calibration is None:
        raise InputError(f"recipe {recipe!r} needs calibration data: pass --calibration DIR_OR_NPZ "
                         "(a folder of representative images or a .npz of input tensors)")
    converter = make_converter(tf, source, recipe, calibration, io)
    try:
        if keep_float:
            from .quant_debug import convert_keeping_float
            return convert_keeping_float(tf, converter, source, calibration, keep_float)
        return converter.convert()
    except (ConversionError, InputError):
        raise
    except Exception as e:
        raise explain_converter_error(e, recipe) from e


def make_converter(tf, source: SourceModel, recipe: str, calibration: Dataset | None, io: str):
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
        converter.inference_input_type = converter.inference_output_type = _io_dtype(tf, io)
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
    first = next((ln.strip() for ln in text.splitlines() if "error" in ln.lower()), text.strip().splitlines()[0]
                 if text.strip() else type(error).__name__)
    return ConversionError(f"the TFLite converter rejected the model for recipe {recipe}: {first[:300]}; "
                           "set EDGEKIT_DEBUG=1 for the converter's full message")
