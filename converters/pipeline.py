"""The `edgekit convert` job: source model -> one verified artifact per (format, recipe).

This module only orchestrates. It checks everything that can be checked cheaply first
(outputs writable, labels readable, the source recognised, the requested recipes possible
for this source per the capability table), then loads the source once, builds the data
sets and reference outputs (converters.data, converters.job), and hands each (format,
recipe) to its format module (converters.formats), which owns the artifact end to end.
"""
from __future__ import annotations

import os
from typing import Callable

from edgekit._deps import import_failure
from edgekit.errors import ArtifactError, ConversionError, InputError, first_line
from edgekit.fileio import check_writable
from edgekit.native_output import captured_native_output
from edgekit.recipes import COREML, TORCH, check_capabilities, unsupported

from . import formats
from .data import check_labels, dataset_info, datasets, image_spec, read_labels
from .job import Job, gated
from .options import (  # noqa: F401
    ArtifactResult,
    ConvertOptions,
    ConvertResult,
    artifact_path,
    error_kind,
    manifest_path_for,
    rejected_path,
)
from .sources import SOURCES, detect, load


def convert(opts: ConvertOptions, progress: Callable[[str], None] = lambda msg: None) -> ConvertResult:
    if COREML in opts.formats and opts.ios < 18 and any(r.name == "int4-weights" for r in opts.recipes):
        raise InputError(f"recipe 'int4-weights' needs Core ML's iOS 18 ops; pass --ios 18 (got --ios {opts.ios})")
    if opts.calibration_samples < 1:
        raise InputError(f"--calibration-samples expects a positive number, got {opts.calibration_samples}")
    kind = "torch_module" if opts.factory else detect(opts.model)
    family = SOURCES[kind].family
    check_capabilities(list(opts.recipes), list(opts.formats), family, SOURCES[kind].describes)
    targets = [(fmt, r.name, artifact_path(opts, fmt, r.name)) for fmt in opts.formats for r in opts.recipes
               if unsupported(r.name, fmt, family) is None]
    check_writable([p for _, _, p in targets] + [manifest_path_for(p) for _, _, p in targets]
                   + [rejected_path(p) for _, _, p in targets], opts.force)
    labels = read_labels(opts.labels)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO chatter is not ours to print
    progress(f"loading {opts.factory or opts.model}")
    with captured_native_output():
        source = load(opts.model, kind, opts)
    try:
        if opts.channels_last and (source.family != TORCH or source.layout != "NCHW"):
            raise InputError(f"--channels-last turns NCHW (PyTorch/ONNX) image inputs into NHWC; this model's input "
                             f"{source.inputs[0].name!r} has shape {source.inputs[0].shape}: drop --channels-last")
        spec = image_spec(source, opts)
        calibration, validation, notes = datasets(source, spec, opts, progress)
        progress(f"source model on {len(validation)} validation inputs")
        with captured_native_output():
            reference = source.predict(validation.arrays)
        check_labels(labels, reference)
        job = Job(source, opts, spec, labels, calibration, validation, reference, notes, progress)
        results = []
        for i, (fmt, recipe, path) in enumerate(targets, 1):
            progress(f"[{i}/{len(targets)}] {fmt} {recipe}: converting")
            try:
                results.append(gated(job, formats.build(job, fmt, recipe, path)))
            except (ConversionError, ArtifactError, ImportError) as e:
                # One recipe failing must not cost the user the others: record it, carry on,
                # and let the caller turn it into a non-zero exit. A missing package (palettize-N
                # needs scikit-learn) is its own kind of failure, with the pip command.
                failure = import_failure(e) if isinstance(e, ImportError) else e
                progress(f"    failed: {first_line(str(failure))}")
                results.append(ArtifactResult(path, fmt, recipe, 0, 0.0, {}, None, error=str(failure),
                                              error_kind=error_kind(failure)))
        cal_info = dataset_info(calibration) if calibration is not None else None
        return ConvertResult(str(opts.model), results, cal_info, {**dataset_info(validation), "note": notes},
                             (calibration.skipped if calibration is not None else []) + validation.skipped)
    finally:
        source.close()


