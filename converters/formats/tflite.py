"""The TFLite (LiteRT) format, end to end: convert the source for a recipe, run the bytes
with the device runtime for parity, diagnose integer outputs, rank quantization error,
embed the manifest and the standard metadata, write atomically.

How the bytes are made depends on the source family (edgekit.recipes.TFLITE_ROUTE):
TensorFlow sources go through TFLiteConverter (tflite_tensorflow), PyTorch and ONNX through
litert-torch (tflite_torch) and an existing float .tflite through ai-edge-quantizer
(tflite_quantizer); everything after the bytes is the same for all of them.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from edgekit._deps import require
from edgekit.artifact import TFLITE_MANIFEST_BUFFER
from edgekit.errors import ArtifactError, ConversionError
from edgekit.fileio import atomic_write_bytes, atomic_write_text
from edgekit.native_output import captured_native_output
from edgekit.parity import output_saturation
from edgekit.recipes import TENSORFLOW, TFLITE, TFLITE_FLOAT, TORCH
from edgekit.tflite import metadata as tflite_metadata
from edgekit.tflite.metadata import embed_metadata
from edgekit.tflite.model import TFLiteModel as Model
from edgekit.tflite.weights import tflite_weights_sha256

from ..job import Job, run_batched
from ..options import ArtifactResult, manifest_path_for


def _convert(job: Job, recipe: str) -> bytes:
    """The artifact's bytes for `recipe`, before metadata, by the route of the source's family."""
    opts, source = job.opts, job.source
    if source.family == TENSORFLOW:
        from . import tflite_tensorflow

        return tflite_tensorflow.convert(source, recipe, job.calibration,
                                         io=opts.io if recipe == "int8" else "float",
                                         io_out=opts.io_out if recipe == "int8" else None,
                                         keep_float=opts.keep_float if recipe == "int8" else ())
    if source.family == TORCH:
        from . import tflite_torch

        return tflite_torch.convert(job, recipe)
    if source.family == TFLITE_FLOAT:
        from . import tflite_quantizer

        return tflite_quantizer.quantize(source.tflite_bytes, job, recipe)
    raise ConversionError(f"no TFLite route for a {source.family} source")


def build(job: Job, recipe: str, path: Path) -> ArtifactResult:
    opts = job.opts
    start = time.perf_counter()
    with captured_native_output():
        model_bytes = _convert(job, recipe)
    seconds = time.perf_counter() - start
    job.progress(f"    converted in {seconds:.1f}s; checking parity on {len(job.validation)} inputs")
    try:
        with captured_native_output():
            artifact = Model(model_bytes, origin=path.name)
    except ArtifactError as e:
        raise ConversionError(f"the {recipe} artifact was produced but LiteRT refuses to run it ({e}); "
                              "try another recipe (int8 or int8-weights)") from e
    outputs = run_batched(artifact, job.tflite_layout(job.validation.arrays), job.source)
    parity = job.parity(outputs)
    diagnosis = _output_diagnosis(artifact, outputs, job)  # output name -> what it shows
    error_layers = []
    if recipe == "int8" and opts.explain_errors and job.calibration is not None and job.source.family == TENSORFLOW:
        job.progress("    ranking layers by quantization error")
        tf = require("tensorflow", "quantization error analysis")
        with captured_native_output():
            error_layers = _explain(tf, job.source, job.calibration)
        if error_layers:
            error_layers = _with_output_quantization(error_layers, artifact, outputs, job, saturated=set(diagnosis))
    manifest = job.manifest(TFLITE, recipe, artifact.inputs, artifact.outputs, parity)
    if job.spec is not None and job.nhwc_tflite:
        manifest.preprocessing = dataclasses.replace(job.spec, layout="NHWC").to_dict()
    manifest.reference_stats = job.reference_stats(artifact.inputs[0], outputs)
    manifest.weights_sha256 = tflite_weights_sha256(model_bytes)  # embedding metadata leaves tensor buffers as they are
    # Two metadata buffers: the standard TFLITE_METADATA (Android Studio, Task library) and
    # edgekit's manifest; then the labels as the standard appended zip of associated files.
    standard = tflite_metadata.build(tflite_metadata.ModelInfo(**manifest.model), manifest)
    final_bytes = embed_metadata(model_bytes, {TFLITE_MANIFEST_BUFFER: manifest.to_json().encode(),
                                               tflite_metadata.METADATA_BUFFER_NAME: standard})
    final_bytes = tflite_metadata.append_files(final_bytes, tflite_metadata.associated_files(manifest))
    atomic_write_bytes(path, final_bytes)
    manifest_path = manifest_path_for(path)
    atomic_write_text(manifest_path, manifest.to_json())
    return ArtifactResult(path, TFLITE, recipe, len(final_bytes), seconds, parity, manifest_path, error_layers,
                          diagnosis=list(diagnosis.values()))


def _quantized_outputs(artifact: Model, outputs: list[np.ndarray], job: Job):
    """(name, info, artifact output, reference) for each integer output, in the source's order."""
    infos = {t.name: t for t in artifact.outputs}
    for name, got, ref in zip(job.source.output_names, outputs, job.reference):
        info = infos.get(name, artifact.outputs[0] if len(artifact.outputs) == 1 else None)
        if info is not None and info.quantized:
            yield name, info, got, ref


def _output_diagnosis(artifact: Model, outputs: list[np.ndarray], job: Job) -> dict[str, str]:
    """Integer outputs that cannot represent what the source computes, by name, with the fix."""
    return {name: d for name, info, got, ref in _quantized_outputs(artifact, outputs, job)
            if (d := output_saturation(name, got, info.scale, ref))}


def _with_output_quantization(rows: list[dict], artifact: Model, outputs: list[np.ndarray], job: Job,
                              saturated: set[str]) -> list[dict]:
    """The debugger ranks the model's inner tensors; the int8 output step is a loss of its own
    (an underflowing softmax lost everything while the ranking blamed squeeze-excite layers).
    Rank it too, in the debugger's unit: the error this tensor's quantization alone adds (the
    source's output rounded to the output grid), in quantization steps."""
    from edgekit.tflite.model import dequantize, quantize

    if any("rmse_over_scale" not in r for r in rows):  # the analysis itself failed: keep its reason
        return rows
    extra = []
    for name, info, got, ref in _quantized_outputs(artifact, outputs, job):
        alone = dequantize(quantize(ref, info), info).astype(np.float64) - ref
        signal = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2)))
        extra.append({"layer": f"output {name} (int8 output step)", "tensor": name,
                      "rmse_over_scale": float(np.sqrt(np.mean(alone ** 2))) / info.scale,
                      "signal_over_scale": signal / info.scale,
                      "max_abs_err": float(np.max(np.abs(got - ref))),
                      # an underflowing output loses everything while its error stays under one step: first
                      "saturated": name in saturated})
    return sorted(rows + extra, key=lambda r: (r.get("saturated", False), r["rmse_over_scale"]), reverse=True)


def _explain(tf, source, calibration) -> list[dict]:
    from .tflite_debug import explain_quantization_error

    try:
        return explain_quantization_error(tf, source, calibration)
    except Exception as e:  # analysis is advisory: report why it is missing, keep the artifact
        return [{"layer": None, "error": f"quantization debugger failed: {type(e).__name__}: {str(e)[:200]}"}]


