"""PyTorch (and ONNX, as a PyTorch module) -> `.tflite` bytes with litert-torch, the
maintained PyTorch -> LiteRT converter.

  fp32          litert_torch.convert of the eval-mode module, once per run
  every other   ai-edge-quantizer applied to that fp32 .tflite (tflite_quantizer): the route an
                existing float .tflite takes too. Measured against litert-torch's own PT2E int8 on
                MobileNetV3-Large: 6 s instead of 200-290 s, every op int8 (PT2E left 17 QUANTIZE
                / 20 DEQUANTIZE pairs and the hard-sigmoids in float), cosine 0.9998 vs 0.988.

TorchScript has no nn.Module for litert-torch (it refuses ScriptModules): it is first turned
into an ExportedProgram by torch's TorchScript->export converter. --channels-last wraps the
module with litert-torch's NHWC adapter so image I/O is NHWC (what Android pipelines hand
over); the network inside stays as trained.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from edgekit._deps import require
from edgekit.errors import ConversionError, first_line


def convert(job, recipe: str) -> bytes:
    from .tflite_quantizer import quantize

    return quantize(float_tflite(job), job, recipe)


def float_tflite(job) -> bytes:
    if "torch_fp32" not in job.memo:
        job.memo["torch_fp32"] = _convert(job)
    return job.memo["torch_fp32"]


def sample_args(job) -> tuple:
    torch = require("torch", "PyTorch conversion")
    arrays = job.tflite_layout([a[:1] for a in job.validation.arrays])
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _module(job, torch, litert_torch):
    module = job.source.torch_module
    if isinstance(module, torch.jit.ScriptModule):
        module = _script_to_exported(job, torch, module)
    if not job.nhwc_tflite:
        return module
    wrapper = litert_torch.to_channel_last_io(module, args=[0])
    wrapper.training = False  # not .eval(): it recurses into an exported program's module, which refuses it
    return wrapper


def _script_to_exported(job, torch, script):
    from torch._export.converter import (
        TS2EPConverter,  # torch's own; private, hence torch is pinned <2.15
    )

    args = tuple(torch.from_numpy(np.ascontiguousarray(a[:1])) for a in job.validation.arrays)
    try:
        return TS2EPConverter(script, args).convert().module()
    except Exception as e:
        raise ConversionError(f"this TorchScript model cannot be turned into an exported program for litert-torch "
                              f"({type(e).__name__}: {first_line(str(e), 200)}); save the nn.Module with "
                              "torch.export.save(torch.export.export(model, args), 'model.pt2') instead") from e


def _convert(job) -> bytes:
    torch = require("torch", "PyTorch conversion")
    litert_torch = require("litert_torch", "PyTorch to TFLite conversion")
    try:
        edge = litert_torch.convert(_module(job, torch, litert_torch), sample_args(job))
        with tempfile.TemporaryDirectory(prefix="edgekit-litert-torch-") as tmp:
            path = os.path.join(tmp, "model.tflite")
            edge.export(path)
            with open(path, "rb") as f:
                return f.read()
    except ConversionError:
        raise
    except Exception as e:  # litert-torch raises torch.export/MLIR errors of many types
        raise explain_litert_torch_error(e) from e


def explain_litert_torch_error(error: Exception) -> ConversionError:
    text = str(error)
    if "data-dependent" in text or "GuardOnDataDependent" in text or "Dynamic" in text:
        return ConversionError(f"torch.export cannot capture this model with fixed shapes ({first_line(text, 200)}); "
                               "give a fixed --input-shape and avoid data-dependent control flow in forward()")
    return ConversionError(f"litert-torch could not convert the model ({type(error).__name__}: "
                           f"{first_line(text, 250)}); set EDGEKIT_DEBUG=1 for the full message")
