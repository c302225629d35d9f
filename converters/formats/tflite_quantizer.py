"""Recipes on a float `.tflite` with ai-edge-quantizer, the maintained LiteRT quantizer: used
for an existing float .tflite given as the source, and for PyTorch/ONNX models after litert-torch.

  fp16          weight-only float16 (FLOAT_CASTING, 16 bits), dequantized at load on CPU
  int8-weights  dynamic range: int8 per-channel weights, activations quantized at run time
  int8          static: int8 weights and activations, calibrated; int8 input and output
  int16x8       static: int8 weights, int16 activations, calibrated
"""
from __future__ import annotations

import numpy as np

from edgekit._deps import require
from edgekit.errors import ConversionError, InputError, first_line
from edgekit.native_output import captured_native_output

CALIBRATION_THREADS = 2  # the quantizer defaults to 16 workers; this machine class has 2 cores


def quantize(float_model: bytes, job, recipe: str) -> bytes:
    if recipe == "fp32":
        return float_model
    require("ai_edge_quantizer", "quantizing a .tflite")
    from ai_edge_quantizer import quantizer as aeq
    from ai_edge_quantizer import recipe as recipes
    from ai_edge_quantizer import recipe_manager

    if recipe == "fp16":
        manager = recipe_manager.RecipeManager()
        manager.add_weight_only_config(regex=".*", operation_name=aeq.qtyping.TFLOperationName.ALL_SUPPORTED,
                                       num_bits=16, algorithm_key=aeq.AlgorithmName.FLOAT_CASTING)
        chosen = manager.get_quantization_recipe()
    else:
        chosen = {"int8-weights": recipes.dynamic_wi8_afp32, "int8": recipes.static_wi8_ai8,
                  "int16x8": recipes.static_wi8_ai16}[recipe]()
    if recipe in ("int8", "int16x8") and job.calibration is None:
        raise InputError(f"recipe {recipe!r} needs calibration data: pass --calibration DIR_OR_NPZ")
    try:
        with captured_native_output():
            q = aeq.Quantizer(bytearray(float_model), chosen)
            calibration = None
            if q.need_calibration:
                calibration = q.calibrate(_calibration_data(float_model, job), num_threads=CALIBRATION_THREADS)
            result = q.quantize(calibration, enable_progress_report=False)
    except (InputError, ConversionError):
        raise
    except Exception as e:  # the quantizer raises ValueError/RuntimeError/KeyError for unsupported graphs
        raise ConversionError(f"ai-edge-quantizer could not apply recipe {recipe} ({type(e).__name__}: "
                              f"{first_line(str(e), 250)}); try another recipe or set EDGEKIT_DEBUG=1") from e
    return bytes(result.quantized_model)


def _calibration_data(float_model: bytes, job) -> dict[str, list[dict[str, np.ndarray]]]:
    """{signature: [{input name: one sample}, ...]} in the float model's own input names, in the
    layout the float model takes (NHWC under --channels-last)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(float_model))
    signatures = interpreter.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
    names = list(signatures[key]["inputs"])
    samples = [dict(zip(names, (np.ascontiguousarray(s) for s in job.tflite_layout(sample))))
               for sample in job.calibration.samples()]
    return {key: samples}
