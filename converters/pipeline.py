"""The `edgekit convert` job: source model -> one verified artifact per (format, recipe).

For every artifact: convert, run it with the device runtime on validation inputs, compare
with the source model (parity), embed the manifest, and write it atomically next to its
JSON manifest. Outputs are checked for collisions before any slow work starts.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

import edgekit
from edgekit._deps import import_failure, require
from edgekit.dataset import Dataset, load_dataset
from edgekit.errors import ArtifactError, ConversionError, InputError, MissingDependencyError, first_line
from edgekit.fileio import atomic_write_bytes, atomic_write_text, check_writable, path_size, replace_dir, replace_path
from edgekit.manifest import Manifest, TensorInfo
from edgekit.parity import gate_failure, looks_like_probabilities, output_saturation, parity_report
from edgekit.preprocess import ImageSpec
from edgekit.recipes import COREML, TFLITE, Recipe
from edgekit.artifact import COREML_MANIFEST_KEY, TFLITE_MANIFEST_BUFFER
from edgekit.tflite import metadata as tflite_metadata
from edgekit.tflite.metadata import embed_metadata
from edgekit.tflite.model import TFLiteModel as Model
from edgekit.tflite.weights import tflite_weights_sha256
from edgekit.weights import coreml_weights_sha256

from . import tflite as tflite_converter
from edgekit.native_output import captured_native_output
from .sources import SourceModel, load_source, source_kind

SUFFIX = {TFLITE: ".tflite", COREML: ".mlpackage"}
VALIDATION_CAP = 500       # more validation samples add time, not information, for parity
SYNTHETIC_SAMPLES = 32
RUN_BATCH = 32


@dataclass(frozen=True)
class ConvertOptions:
    model: Path
    formats: tuple[str, ...]
    recipes: tuple[Recipe, ...]
    out_dir: Path
    calibration: Path | None = None
    validate: Path | None = None
    calibration_samples: int = 200
    labels: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    io: str = "int8"
    io_out: str | None = None          # output type of int8 artifacts (default: same as io)
    ios: int = 16
    keep_float: tuple[str, ...] = ()
    name: str | None = None            # model name shown in Android Studio / Xcode (default: file stem)
    description: str | None = None
    model_version: str = "1"
    author: str = ""
    license: str = ""
    explain_errors: bool = True
    force: bool = False
    gate: bool = True                  # reject artifacts below their recipe's parity gate
    min_cosine: float | None = None    # override every recipe's gate
    min_top1: float | None = None

    def gate_for(self, recipe: Recipe) -> tuple[float, float]:
        return (recipe.gate.min_cosine if self.min_cosine is None else self.min_cosine,
                recipe.gate.min_top1 if self.min_top1 is None else self.min_top1)


@dataclass
class ArtifactResult:
    path: Path
    format: str
    recipe: str
    size_bytes: int
    seconds: float
    parity: dict
    manifest_path: Path | None
    error_layers: list[dict] = field(default_factory=list)
    error: str | None = None  # set when this recipe failed; nothing was written for it
    error_kind: str | None = None  # "conversion", "dependency", "artifact", "parity" (see _error_kind)
    diagnosis: list[str] = field(default_factory=list)  # what the artifact's outputs show (saturation...)
    gate: tuple[float, float] | None = None  # (min cosine, min top-1) it was held to; None: not gated

    def to_dict(self) -> dict:
        d = {"path": str(self.path), "format": self.format, "quantize": self.recipe,
             "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3), "parity": self.parity,
             "manifest": str(self.manifest_path) if self.manifest_path else None,
             "largest_quantization_error": self.error_layers, "diagnosis": self.diagnosis,
             "gate": ({"min_cosine": self.gate[0], "min_top1": self.gate[1],
                       "passed": self.error_kind != "parity"} if self.gate else None)}
        if self.error:
            d["error"], d["error_kind"] = self.error, self.error_kind
        return d


@dataclass
class ConvertResult:
    source: str
    artifacts: list[ArtifactResult]
    calibration: dict | None
    validation: dict
    skipped_files: list[tuple[str, str]]

    @property
    def failed(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.error]

    def to_dict(self) -> dict:
        return {"source": self.source, "calibration": self.calibration, "validation": self.validation,
                "skipped_files": [{"file": f, "reason": r} for f, r in self.skipped_files],
                "artifacts": [a.to_dict() for a in self.artifacts]}


def _error_kind(error: Exception) -> str:
    """How a failed recipe is classed in the report and in the exit code."""
    kinds = ((MissingDependencyError, "dependency"), (ArtifactError, "artifact"))
    return next((kind for cls, kind in kinds if isinstance(error, cls)), "conversion")


def rejected_path(artifact: Path) -> Path:
    """Where an artifact that fails its parity gate is kept for inspection (never loaded by name)."""
    return artifact.with_name(artifact.name + ".rejected")


def _gated(job: "_Job", result: "ArtifactResult") -> "ArtifactResult":
    """Hold a written artifact to its recipe's parity gate. A failing one is renamed to
    `*.rejected` (with its manifest) so nothing downstream picks it up by its normal name, and
    the run exits non-zero; the table still shows its figures."""
    if not job.opts.gate:
        return result
    recipe = next(r for r in job.opts.recipes if r.name == result.recipe)
    result.gate = job.opts.gate_for(recipe)
    failure = gate_failure(result.parity, *result.gate)
    if failure is None:
        return result
    rejected = rejected_path(result.path)
    replace_path(result.path, rejected)
    if result.manifest_path is not None and result.manifest_path.exists():
        result.manifest_path.unlink()
    job.progress(f"    rejected: {failure}")
    result.path, result.manifest_path = rejected, None
    result.error = "; ".join([failure, *result.diagnosis])
    result.error_kind = "parity"
    return result


def manifest_path_for(artifact: Path) -> Path:
    """The manifest beside an artifact: digits_int8.tflite -> digits_int8.tflite.json (distinct for
    the .tflite and .mlpackage of the same recipe)."""
    return artifact.with_name(artifact.name + ".json")


def artifact_path(opts: ConvertOptions, fmt: str, recipe: str) -> Path:
    return opts.out_dir / f"{opts.model.name.split('.')[0] or 'model'}_{recipe}{SUFFIX[fmt]}"


def convert(opts: ConvertOptions, progress: Callable[[str], None] = lambda msg: None) -> ConvertResult:
    if COREML in opts.formats and opts.ios < 18 and any(r.name == "int4-weights" for r in opts.recipes):
        raise InputError(f"recipe 'int4-weights' needs Core ML's iOS 18 ops; pass --ios 18 (got --ios {opts.ios})")
    if opts.calibration_samples < 1:
        raise InputError(f"--calibration-samples expects a positive number, got {opts.calibration_samples}")
    targets = [(fmt, r.name, artifact_path(opts, fmt, r.name)) for fmt in opts.formats for r in opts.recipes
               if r.supports(fmt)]
    check_writable([p for _, _, p in targets] + [manifest_path_for(p) for _, _, p in targets]
                   + [rejected_path(p) for _, _, p in targets], opts.force)
    labels = _read_labels(opts.labels)
    source_kind(opts.model)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO chatter is not ours to print
    progress(f"loading {opts.model}")
    with captured_native_output():
        source = load_source(opts.model)
    try:
        spec = _image_spec(source, opts)
        calibration, validation, notes = _datasets(source, spec, opts, progress)
        progress(f"source model on {len(validation)} validation inputs")
        with captured_native_output():
            reference = source.predict(validation.arrays)
        _check_labels(labels, reference)
        job = _Job(source, opts, spec, labels, calibration, validation, reference, notes, progress)
        results = []
        for i, (fmt, recipe, path) in enumerate(targets, 1):
            progress(f"[{i}/{len(targets)}] {fmt} {recipe}: converting")
            try:
                results.append(_gated(job, _build_one(job, fmt, recipe, path)))
            except (ConversionError, ArtifactError, ImportError) as e:
                # One recipe failing must not cost the user the others: record it, carry on,
                # and let the caller turn it into a non-zero exit. A missing package (palettize-N
                # needs scikit-learn) is its own kind of failure, with the pip command.
                failure = import_failure(e) if isinstance(e, ImportError) else e
                progress(f"    failed: {first_line(str(failure))}")
                results.append(ArtifactResult(path, fmt, recipe, 0, 0.0, {}, None, error=str(failure),
                                              error_kind=_error_kind(failure)))
        cal_info = _dataset_info(calibration) if calibration is not None else None
        return ConvertResult(str(opts.model), results, cal_info, {**_dataset_info(validation), "note": notes},
                             (calibration.skipped if calibration is not None else []) + validation.skipped)
    finally:
        source.close()


@dataclass
class _Job:
    """What every artifact of one convert run shares."""
    source: SourceModel
    opts: ConvertOptions
    spec: ImageSpec | None
    labels: list[str] | None
    calibration: Dataset | None
    validation: Dataset
    reference: list[np.ndarray]
    notes: str
    progress: Callable[[str], None]

    def parity(self, outputs: list[np.ndarray]) -> dict:
        names = self.source.output_names
        return parity_report(names, self.reference, outputs, len(self.validation), self.notes,
                             _classifier_outputs(names, self.reference, self.labels))

    def reference_stats(self, input_info: TensorInfo, outputs: list[np.ndarray]) -> dict | None:
        """What drift monitoring compares against (edgekit.monitor.reference). From the validation inputs
        and this artifact's own outputs on them, not the source's: an int8 artifact's confidences sit on
        its output codes (top 0.996), the float source's do not (0.9999), and KS would flag every window.
        Synthetic inputs describe no real data, so they give no reference."""
        if self.validation.source == "synthetic":
            return None
        from edgekit.monitor.reference import compute_reference

        folder = Path(self.validation.source)
        files = [folder / item for item in self.validation.items] if folder.is_dir() else None
        return compute_reference(self.validation.arrays[0], outputs[0], input_info,
                                 self.spec.to_dict() if self.spec else None, self.notes, files)

    def model_info(self, recipe: str) -> dict[str, str]:
        opts = self.opts
        name = opts.name or opts.model.name.split(".")[0]
        description = opts.description or (f"{name}, recipe {recipe}, converted by edgekit {edgekit.__version__} "
                                           f"from {opts.model.name}")
        return {"name": name, "description": description, "version": opts.model_version, "author": opts.author,
                "license": opts.license}

    def manifest(self, fmt: str, recipe: str, inputs, outputs, parity: dict) -> Manifest:
        manifest = Manifest(
            format=fmt, recipe=recipe, inputs=inputs, outputs=outputs, model=self.model_info(recipe),
            preprocessing=self.spec.to_dict() if self.spec else None, labels=self.labels, parity=parity,
            source={"file": self.opts.model.name, "kind": self.source.kind, "sha256": self.source.sha256()},
            calibration=(_dataset_info(self.calibration)
                         if self.calibration is not None and recipe in ("int8", "int16x8") else None),
            versions=_versions(), created_utc=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat())
        if self.opts.keep_float and recipe == "int8":
            manifest.source["keep_float"] = list(self.opts.keep_float)
        if fmt == COREML:
            manifest.source["ios"] = self.opts.ios
        return manifest


def _build_one(job: _Job, fmt: str, recipe: str, path: Path) -> ArtifactResult:
    return (_build_tflite if fmt == TFLITE else _build_coreml)(job, recipe, path)


def _build_tflite(job: _Job, recipe: str, path: Path) -> ArtifactResult:
    opts = job.opts
    start = time.perf_counter()
    with captured_native_output():
        model_bytes = tflite_converter.convert(job.source, recipe, job.calibration,
                                               io=opts.io if recipe == "int8" else "float",
                                               io_out=opts.io_out if recipe == "int8" else None,
                                               keep_float=opts.keep_float if recipe == "int8" else ())
    seconds = time.perf_counter() - start
    job.progress(f"    converted in {seconds:.1f}s; checking parity on {len(job.validation)} inputs")
    try:
        with captured_native_output():
            artifact = Model(model_bytes, origin=path.name)
    except ArtifactError as e:
        raise ConversionError(f"the {recipe} artifact was produced but LiteRT refuses to run it ({e}); "
                              "try another recipe (int8 or int8-weights)") from e
    outputs = _run_batched(artifact, job.validation.arrays, job.source)
    parity = job.parity(outputs)
    diagnosis = _output_diagnosis(artifact, outputs, job)  # output name -> what it shows
    error_layers = []
    if recipe == "int8" and opts.explain_errors and job.calibration is not None:
        job.progress("    ranking layers by quantization error")
        tf = require("tensorflow", "quantization error analysis")
        with captured_native_output():
            error_layers = _explain(tf, job.source, job.calibration)
        if error_layers:
            error_layers = _with_output_quantization(error_layers, artifact, outputs, job, saturated=set(diagnosis))
    manifest = job.manifest(TFLITE, recipe, artifact.inputs, artifact.outputs, parity)
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


def _quantized_outputs(artifact: Model, outputs: list[np.ndarray], job: _Job):
    """(name, info, artifact output, reference) for each integer output, in the source's order."""
    infos = {t.name: t for t in artifact.outputs}
    for name, got, ref in zip(job.source.output_names, outputs, job.reference):
        info = infos.get(name, artifact.outputs[0] if len(artifact.outputs) == 1 else None)
        if info is not None and info.quantized:
            yield name, info, got, ref


def _output_diagnosis(artifact: Model, outputs: list[np.ndarray], job: _Job) -> dict[str, str]:
    """Integer outputs that cannot represent what the source computes, by name, with the fix."""
    return {name: d for name, info, got, ref in _quantized_outputs(artifact, outputs, job)
            if (d := output_saturation(name, got, info.scale, ref))}


def _with_output_quantization(rows: list[dict], artifact: Model, outputs: list[np.ndarray], job: _Job,
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


def _build_coreml(job: _Job, recipe: str, path: Path) -> ArtifactResult:
    """Convert, save to a staging folder, execute *the saved package* for parity, then save again
    with the manifest in its metadata and move it into place (an .mlpackage is a folder: it
    appears whole or not at all)."""
    from edgekit.coreml.model import CoreMLModel

    from . import coreml as coreml_converter

    start = time.perf_counter()
    with captured_native_output():
        mlmodel = coreml_converter.convert(job.source, recipe, job.spec, job.labels, ios=job.opts.ios)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        checked = staging / "checked.mlpackage"
        with captured_native_output():
            mlmodel.save(str(checked))
        job.progress(f"    converted in {seconds:.1f}s; executing the saved package on {len(job.validation)} inputs")
        executed = CoreMLModel(checked, native=False, preprocessing=job.spec)
        executed_outputs = _run_batched(executed, job.validation.arrays, job.source)
        parity = job.parity(executed_outputs)
        outputs = [TensorInfo(n, (None,) + tuple(r.shape[1:]), "float32")
                   for n, r in zip(job.source.output_names, job.reference)]
        manifest = job.manifest(COREML, recipe, job.source.inputs, outputs, parity)
        manifest.reference_stats = job.reference_stats(job.source.inputs[0], executed_outputs)
        manifest.weights_sha256 = coreml_weights_sha256(checked)  # the re-save below is checked to keep them
        _describe_coreml(mlmodel, job, manifest)
        mlmodel.user_defined_metadata[COREML_MANIFEST_KEY] = manifest.to_json()
        final = staging / path.name
        with captured_native_output():
            mlmodel.save(str(final))
        if _weights_digest(final) != _weights_digest(checked):
            raise ConversionError(f"{path.name}: re-saving with metadata changed the weights; not writing it")
        replace_dir(final, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest_path = manifest_path_for(path)
    atomic_write_text(manifest_path, manifest.to_json())
    return ArtifactResult(path, COREML, recipe, path_size(path), seconds, parity, manifest_path)


def _describe_coreml(mlmodel, job: _Job, manifest: Manifest) -> None:
    """Descriptions Xcode shows in the generated class."""
    info = manifest.model
    mlmodel.short_description = f"{info['description']}; parity cosine {manifest.parity['cosine']:.6f}"
    mlmodel.version = info["version"]
    mlmodel.author = info["author"]
    mlmodel.license = info["license"]
    spec = job.spec
    for name in mlmodel.input_description:
        if spec is not None:
            mlmodel.input_description[name] = (f"{spec.width}x{spec.height} {'grayscale' if spec.channels == 1 else 'RGB'}"
                                               f" image; normalized as (pixel - {list(spec.mean)}) / {list(spec.std)}")
    for name in mlmodel.output_description:
        mlmodel.output_description[name] = ("most likely class label" if name == "classLabel"
                                            else "class probabilities" if name.endswith("_probs") else "model output")


def _weights_digest(package: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((package / "Data").rglob("*")):
        if f.is_file() and f.suffix == ".bin":
            h.update(f.read_bytes())
    return h.hexdigest()


def _classifier_outputs(names: list[str], reference: list[np.ndarray], labels) -> list[str]:
    if labels is not None:
        return names[:1]  # labels describe the first output (checked in _check_labels)
    return [n for n, r in zip(names, reference) if looks_like_probabilities(r)]


def _explain(tf, source, calibration) -> list[dict]:
    from .quant_debug import explain_quantization_error

    try:
        return explain_quantization_error(tf, source, calibration)
    except Exception as e:  # analysis is advisory: report why it is missing, keep the artifact
        return [{"layer": None, "error": f"quantization debugger failed: {type(e).__name__}: {str(e)[:200]}"}]


def _run_batched(model, arrays: list[np.ndarray], source: SourceModel) -> list[np.ndarray]:
    """Run the artifact on the source's inputs and return its outputs in the source's order: a
    converted signature lists inputs and outputs alphabetically, the source model in its own order
    (a two-input model got its arrays swapped)."""
    in_names, out_names = [t.name for t in model.inputs], [t.name for t in model.outputs]
    to_artifact = _permutation([t.name for t in source.inputs], in_names)
    arrays = [arrays[to_artifact.index(k)] for k in range(len(arrays))] if to_artifact else arrays
    n = arrays[0].shape[0]
    batch = RUN_BATCH if model.inputs[0].shape and model.inputs[0].shape[0] is None else 1
    chunks = [model.run([a[i:i + batch] for a in arrays]) for i in range(0, n, batch)]
    outputs = [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    from_artifact = _permutation(out_names, list(source.output_names))
    return [outputs[from_artifact.index(k)] for k in range(len(outputs))] if from_artifact else outputs


def _permutation(names: list[str], target: list[str]) -> list[int] | None:
    """Where each of `names` sits in `target`, when `target` is a reordering of the same names."""
    if sorted(names) != sorted(target) or len(set(names)) != len(names):
        return None
    return [target.index(n) for n in names]


def _image_spec(source: SourceModel, opts: ConvertOptions) -> ImageSpec | None:
    first = source.inputs[0]
    is_image = len(source.inputs) == 1 and len(first.shape) == 4 and first.shape[-1] in (1, 3)
    if not is_image:
        if opts.mean is not None or opts.std is not None:
            raise InputError(f"--mean/--std describe image preprocessing, but the model input {first.name!r} has "
                             f"shape {first.shape}, not NHWC with 1 or 3 channels; drop them and give tensors")
        return None
    return ImageSpec.for_input_shape(first.shape, opts.mean or (0.0,), opts.std or (1.0,))


def _datasets(source: SourceModel, spec, opts: ConvertOptions, progress) -> tuple[Dataset | None, Dataset, str]:
    """Calibration and validation sets, and a note saying where the validation inputs came from."""
    needs_calibration = any(r.needs_calibration for r in opts.recipes)
    calibration = None
    if opts.calibration is not None:
        progress(f"reading calibration data from {opts.calibration}")
        pool = load_dataset(opts.calibration, source.inputs, spec,
                            limit=opts.calibration_samples + (0 if opts.validate else VALIDATION_CAP))
        calibration = pool.take(range(min(opts.calibration_samples, len(pool))))
        calibration.skipped = pool.skipped
        rest = len(pool) - len(calibration)
    elif needs_calibration:
        names = [r.name for r in opts.recipes if r.needs_calibration]
        raise InputError(f"recipe {', '.join(names)} needs calibration data: pass --calibration DIR_OR_NPZ "
                         "(a folder of representative images or a .npz of input tensors); edgekit never "
                         "calibrates on random numbers")
    if opts.validate is not None:
        progress(f"reading validation data from {opts.validate}")
        return calibration, load_dataset(opts.validate, source.inputs, spec, VALIDATION_CAP, "validate"), \
            f"--validate {opts.validate}"
    if calibration is not None and rest > 0:
        return calibration, pool.take(range(len(calibration), len(pool))), \
            "calibration inputs not used for calibration"
    if calibration is not None and len(calibration) >= 2:
        # Every calibration input was used: hold out a fifth so parity is not measured on
        # the very data the quantization ranges were fitted to.
        cut = max(1, len(calibration) * 4 // 5)
        validation = calibration.take(range(cut, len(calibration)))
        calibration_kept = calibration.take(range(cut))
        calibration_kept.skipped = calibration.skipped
        return calibration_kept, validation, f"held out {len(validation)} of the calibration inputs (no --validate)"
    return calibration, _synthetic(source, spec), \
        f"{SYNTHETIC_SAMPLES} synthetic uniform inputs over the input range (no --validate or --calibration)"


def _synthetic(source: SourceModel, spec) -> Dataset:
    rng = np.random.default_rng(0)
    lo, hi = spec.value_range() if spec else (-1.0, 1.0)
    arrays = [rng.uniform(lo, hi, size=(SYNTHETIC_SAMPLES, *[d or 1 for d in t.shape[1:]])).astype(np.float32)
              for t in source.inputs]
    return Dataset(arrays, "synthetic")


def _read_labels(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise InputError(f"--labels expects a text file with one class name per line, got {str(path)!r}, "
                         "which is not a file")
    labels = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not labels:
        raise InputError(f"--labels expects one class name per line, {str(path)!r} is empty")
    return labels


def _check_labels(labels, reference: list[np.ndarray]) -> None:
    if labels is None:
        return
    classes = reference[0].shape[-1]
    if classes != len(labels):
        raise InputError(f"--labels has {len(labels)} names but the model's first output has {classes} classes; "
                         "give one label per class, in class-index order")


def _dataset_info(ds: Dataset) -> dict:
    return {"source": ds.source, "samples": len(ds), "sha256": ds.sha256(), "skipped": len(ds.skipped)}


def _versions() -> dict[str, str]:
    versions = {"edgekit": edgekit.__version__, "python": platform.python_version()}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
