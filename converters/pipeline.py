"""The `edgekit convert` job: source model -> one verified artifact per (format, recipe).

This module only orchestrates. It checks everything that can be checked cheaply first
(outputs writable, labels readable, the source recognised, the requested recipes possible
for this source per the capability table), then loads the source once, builds the data
sets and reference outputs (converters.data, converters.job), and hands each (format,
recipe) to its format module (converters.formats), which owns the artifact end to end.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable

from edgekit._deps import import_failure
from edgekit.errors import ArtifactError, ConversionError, InputError, first_line
from edgekit.fileio import check_writable
from edgekit.native_output import captured_native_output
from edgekit.recipes import COREML, TENSORFLOW, TORCH, base_recipe, check_capabilities, unsupported

from . import formats
from .accuracy import dataset_labels, top1
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
    if family != TENSORFLOW and (opts.io != "int8" or opts.io_out or opts.keep_float):
        raise InputError("--io, --io-out and --keep-float steer TensorFlow's converter; for a "
                         f"{SOURCES[kind].describes} ai-edge-quantizer makes int8 artifacts with int8 input and "
                         "output: drop those options")
    for recipe in opts.recipes:
        if _steps_of(recipe.name):
            from .compress.steps import split_recipe

            split_recipe(recipe.name)  # step parameters checked before any work (prune-channels-99: refused)
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
        job = Job(source, opts, spec, labels, calibration, validation, reference, notes, progress,
                  task_labels=task_labels(validation, labels))
        results = []
        with contextlib.ExitStack() as compressed_sources:  # temporary .keras copies, removed at the end
            variants: dict[str, Job] = {}
            for i, (fmt, recipe, path) in enumerate(targets, 1):
                progress(f"[{i}/{len(targets)}] {fmt} {recipe}: converting")
                results.append(_one_artifact(job, fmt, recipe, path, variants, compressed_sources))
        source_top1 = top1(reference[0], job.task_labels) if job.task_labels is not None else None
        cal_info = dataset_info(calibration) if calibration is not None else None
        return ConvertResult(str(opts.model), results, cal_info,
                             {**dataset_info(validation), "note": notes, "source_task_top1": source_top1},
                             (calibration.skipped if calibration is not None else []) + validation.skipped)
    finally:
        source.close()


def _one_artifact(job: Job, fmt: str, recipe: str, path, variants: dict, stack) -> ArtifactResult:
    """Build, verify and gate one artifact; a failure is recorded, not raised, so the other recipes
    still run. A composed recipe converts the compressed copy of the source (made once per steps)."""
    try:
        base, steps = base_recipe(recipe), _steps_of(recipe)
        target_job = job
        if steps:
            if steps not in variants:
                variants[steps] = _compress(job, recipe, steps, stack)
            target_job = variants[steps]
        result = formats.build(target_job, fmt, base, path)
        result.recipe = recipe
        return gated(job, result)
    except (ConversionError, ArtifactError, ImportError) as e:
        # One recipe failing must not cost the user the others: record it, carry on,
        # and let the caller turn it into a non-zero exit. A missing package (palettize-N
        # needs scikit-learn) is its own kind of failure, with the pip command.
        failure = import_failure(e) if isinstance(e, ImportError) else e
        job.progress(f"    failed: {first_line(str(failure))}")
        return ArtifactResult(path, fmt, recipe, 0, 0.0, {}, None, error=str(failure),
                              error_kind=error_kind(failure))


def _steps_of(recipe: str) -> str:
    """'prune-channels-30+distill+int8' -> 'prune-channels-30+distill+'; a plain recipe -> ''."""
    base = base_recipe(recipe)
    if base == recipe:
        return ""
    return recipe[:len(recipe) - len(base)] if recipe.endswith("+" + base) else recipe + "+"


def _compress(job: Job, recipe: str, steps: str, stack) -> Job:
    """The job for the compressed copy of the source that `recipe`'s steps make (Keras and
    PyTorch/ONNX sources)."""
    from .compress.source import compressed_source

    calibration = job.calibration
    labelled = dataset_labels(calibration, job.labels, role="calibration") if calibration is not None else None
    with captured_native_output() as native:  # distillation's epoch lines still reach the user
        source, provenance, _ = stack.enter_context(compressed_source(
            job.source, recipe, calibration.arrays if calibration is not None else None,
            labels=labelled[0] if labelled else None, progress=native.passing_through(job.progress)))
    return job.compressed(source, steps, provenance)


def task_labels(validation, labels: list[str] | None):
    """The true class of each validation input when the data says (class sub-folders or labels.csv)."""
    labelled = dataset_labels(validation, labels) if validation.source != "synthetic" else None
    return labelled[0] if labelled else None


