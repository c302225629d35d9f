"""PyTorch (and ONNX, as a PyTorch module) -> `.tflite` bytes with litert-torch, the
maintained PyTorch -> LiteRT converter.

  fp32          litert_torch.convert of the eval-mode module (once per run; other recipes reuse it)
  int8          PT2E static quantization (litert-torch's quantizer: symmetric, per-channel
                weights), calibrated on the run's calibration inputs, then converted
  fp16, int8-weights, int16x8
                ai-edge-quantizer applied to the fp32 .tflite (tflite_quantizer), the same
                route an existing float .tflite takes

--channels-last wraps the module with litert-torch's NHWC adapter so image I/O is NHWC
(what Android's image pipelines hand over); the network inside stays as trained.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from edgekit._deps import require
from edgekit.errors import ConversionError, first_line


def nhwc_io(job) -> bool:
    """Whether this run's TFLite artifacts take NHWC images from an NCHW source."""
    return job.opts.channels_last and job.source.layout == "NCHW"


def convert(job, recipe: str) -> bytes:
    if recipe == "fp32":
        return float_tflite(job)
    if recipe == "int8":
        return _pt2e_int8(job)
    from .tflite_quantizer import quantize

    return quantize(float_tflite(job), job, recipe)


def float_tflite(job) -> bytes:
    if "torch_fp32" not in job.memo:
        job.memo["torch_fp32"] = _convert(job, _module(job), quant_config=None)
    return job.memo["torch_fp32"]


def sample_args(job, arrays: list[np.ndarray] | None = None) -> tuple:
    torch = require("torch", "PyTorch conversion")
    arrays = arrays if arrays is not None else [a[:1] for a in job.validation.arrays]
    if nhwc_io(job):
        arrays = [np.ascontiguousarray(arrays[0].transpose(0, 2, 3, 1)), *arrays[1:]]
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _module(job):
    litert_torch = require("litert_torch", "PyTorch to TFLite conversion")
    module = job.source.torch_module
    return litert_torch.to_channel_last_io(module, args=[0]).eval() if nhwc_io(job) else module


def _convert(job, module, quant_config) -> bytes:
    litert_torch = require("litert_torch", "PyTorch to TFLite conversion")
    try:
        edge = litert_torch.convert(module, sample_args(job), quant_config=quant_config)
        with tempfile.TemporaryDirectory(prefix="edgekit-litert-torch-") as tmp:
            path = os.path.join(tmp, "model.tflite")
            edge.export(path)
            with open(path, "rb") as f:
                return f.read()
    except Exception as e:  # litert-torch raises torch.export/MLIR errors of many types
        raise explain_litert_torch_error(e) from e


def _pt2e_int8(job) -> bytes:
    torch = require("torch", "PyTorch int8 quantization")
    require("litert_torch", "PyTorch to TFLite conversion")
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    try:
        exported = torch.export.export(_module(job), sample_args(job)).module()
        prepared = quantize_pt2e.prepare_pt2e(exported, quantizer)
        with torch.no_grad():
            for sample in job.calibration.samples():
                prepared(*sample_args(job, sample))
        quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    except Exception as e:
        raise explain_litert_torch_error(e) from e
    return _convert(job, quantized, QuantConfig(pt2e_quantizer=quantizer))


def explain_litert_torch_error(error: Exception) -> ConversionError:
    text = str(error)
    if "Dynamic" in text or "data-dependent" in text or "GuardOnDataDependent" in text:
        return ConversionError(f"torch.export cannot capture this model with fixed shapes ({first_line(text, 200)}); "
                               "give a fixed --input-shape and avoid data-dependent control flow in forward()")
    return ConversionError(f"litert-torch could not convert the model ({type(error).__name__}: {first_line(text, 250)}); "
                           "set EDGEKIT_DEBUG=1 for the full message")
