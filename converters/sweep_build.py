"""Building the variants of one compression level for `edgekit sweep`: compress the source model
(once per level, kept in models/: .keras for a Keras source, .pt2 for a PyTorch or ONNX one),
convert it per format with the ordinary pipeline, and measure
what does not depend on a quiet machine: task top-1, drop, agreement, size, MACs from the
artifact itself, emulated latency. Host p50 is *not* measured here: builds may run side by side
in worker processes (converters.sweep_jobs), and converters.sweep times every artifact afterwards,
one at a time. Each finished variant's row is written to variants/ atomically, so a re-run skips it.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.dataset import load_dataset
from edgekit.errors import ConversionError, InputError
from edgekit.fileio import atomic_write_text, path_size
from edgekit.manifest import TensorInfo
from edgekit.preprocess import ImageSpec
from edgekit.recipes import COREML, TFLITE

from .accuracy import dataset_labels, top1
from .budget import drop_points, fit_budget
from .compress import apply_recipe

VALIDATION_LIMIT = 2000
RUN_BATCH = 32
# Why a Core ML row has no latency, shown in the report instead of a number.
COREML_HOST_NA = ("no Core ML runtime on this OS: edgekit runs packages with its numpy reference executor, "
                  "whose speed says nothing about Core ML's")
COREML_EMULATED_NA = "the emulator costs TFLite graphs only (no Core ML cost model)"


def variant_name(compression: str, recipe: str, fmt: str = TFLITE) -> str:
    """TFLite variants keep the names sweeps before formats gave them (their folders still resume)."""
    name = recipe if compression == "none" else f"{compression}+{recipe}"
    return name if fmt == TFLITE else f"{name}@{fmt}"


def slug(text: str) -> str:
    return text.replace(".", "p").replace("/", "_")


def row_path(out_dir: Path, name: str) -> Path:
    return out_dir / "variants" / f"{slug(name)}.json"


def finished(out_dir: Path, name: str) -> bool:
    path = row_path(out_dir, name)
    if not path.is_file():
        return False
    row = json.loads(path.read_text())
    return row.get("status") != "not run" and (row.get("artifact") is None or Path(row["artifact"]).exists())


class Data:
    """Calibration and labelled validation data, read once, as the model sees them (NCHW images for a
    PyTorch/ONNX vision model, as `edgekit convert` reads them for it)."""

    def __init__(self, inputs: list[TensorInfo], spec: ImageSpec | None, opts, progress):
        self.inputs, self.spec = inputs, spec
        class_names = None
        if opts.labels is not None:
            if not opts.labels.is_file():
                raise InputError(f"--labels expects a text file with one class name per line, got {str(opts.labels)!r}")
            class_names = [ln.strip() for ln in opts.labels.read_text().splitlines() if ln.strip()]
        progress(f"reading labelled validation data from {opts.validate}")
        self.validation = load_dataset(opts.validate, self.inputs, self.spec, VALIDATION_LIMIT, "validate")
        labelled = dataset_labels(self.validation, class_names)
        if labelled is None:
            raise InputError(f"--validate {str(opts.validate)!r} has no labels: sweep ranks variants by task accuracy; "
                             "put the images in one sub-folder per class (validate/3/x.png) or add labels.csv "
                             "(file,label rows)")
        self.labels, self.class_names = labelled
        progress(f"reading calibration data from {opts.calibration}")
        self.calibration = load_dataset(opts.calibration, self.inputs, self.spec, opts.calibration_samples)
        cal = dataset_labels(self.calibration, self.class_names, role="calibration")
        self.calibration_labels = cal[0] if cal else None  # distillation adds a label term when it has them


@dataclass
class Context:
    """What every level's build reads: the source, the data, its reference outputs and top-1."""
    opts: object                      # converters.sweep.SweepOptions
    formats: tuple[str, ...]
    devices: list
    source_model: object
    data: Data
    reference: np.ndarray
    baseline: float
    deadline: float | None            # time.time() after which no level starts (--budget-minutes)
    progress: Callable[[str], None]   # detail lines
    done: Callable[[str], None]       # one line per finished variant

    @property
    def out_of_time(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    def recipes_for(self, fmt: str) -> list[str]:
        from edgekit.recipes import RECIPES

        return [r for r in self.opts.recipes if RECIPES[r].supports(fmt)]

    def variants(self, compression: str) -> list[tuple[str, str, str]]:
        """(format, recipe, variant name) of one level, in the order of --formats then --recipes."""
        return [(fmt, r, variant_name(compression, r, fmt)) for fmt in self.formats for r in self.recipes_for(fmt)]


KERAS_SUFFIXES = (".keras", ".h5")


def is_torch_source(opts) -> bool:
    """PyTorch (.pt2, TorchScript) and ONNX sources are compressed on their torch.export graph."""
    return opts.model.suffix.lower() not in KERAS_SUFFIXES


def prepare(opts, formats, devices, deadline, progress, done) -> Context:
    if is_torch_source(opts):
        return _prepare_torch(opts, formats, devices, deadline, progress, done)
    import keras

    try:
        source_model = keras.models.load_model(opts.model, compile=False)
    except Exception as e:  # a corrupt or foreign file: keras raises many kinds
        raise InputError(f"cannot load {opts.model.name} as a Keras model ({type(e).__name__}: {str(e)[:200]}); "
                         "re-save it with model.save('model.keras')") from e
    shape = tuple(source_model.inputs[0].shape)
    inputs = [TensorInfo(source_model.inputs[0].name, shape, "float32")]
    is_image = len(source_model.inputs) == 1 and len(shape) == 4 and shape[-1] in (1, 3)
    spec = ImageSpec.for_input_shape(shape, opts.mean or (0.0,), opts.std or (1.0,)) if is_image else None
    data = Data(inputs, spec, opts, progress)
    reference = predict_keras(source_model, data.validation.arrays)
    return Context(opts, tuple(formats), devices, source_model, data, reference, top1(reference, data.labels),
                   deadline, progress, done)


def _prepare_torch(opts, formats, devices, deadline, progress, done) -> Context:
    """The source loaded as `edgekit convert` loads it (SourceModel: the module, its inputs and image
    layout); data preprocessed in that layout, so the reference outputs, the source's top-1 and every
    artifact's inputs are the ones a convert run of this model uses."""
    from types import SimpleNamespace

    from .sources import detect, load

    source = load(opts.model, detect(opts.model), SimpleNamespace(input_shapes=opts.input_shapes, factory=None))
    first = source.inputs[0]
    is_image = len(source.inputs) == 1 and source.layout is not None
    spec = (ImageSpec.for_input_shape(first.shape, opts.mean or (0.0,), opts.std or (1.0,), source.layout)
            if is_image else None)
    data = Data(list(source.inputs), spec, opts, progress)
    reference = source.predict(data.validation.arrays)[0]
    return Context(opts, tuple(formats), devices, source, data, reference, top1(reference, data.labels),
                   deadline, progress, done)


def predict_keras(model, arrays: list[np.ndarray]) -> np.ndarray:
    out = model.predict(arrays[0] if len(arrays) == 1 else arrays, batch_size=64, verbose=0)
    return np.asarray(out[0] if isinstance(out, list) else out, dtype=np.float32)


def _predict_artifact(path: Path, arrays: list[np.ndarray], threads: int | None) -> np.ndarray:
    from edgekit.artifact import load

    model = load(path, threads=threads)  # an .mlpackage: edgekit's Core ML executor (numpy) off macOS
    batch = RUN_BATCH if model.resizable_batch else 1
    n = len(arrays[0])
    return np.concatenate([model.run([a[i:i + batch] for a in arrays])[0] for i in range(0, n, batch)])


def measure_built(path: Path, fmt: str, ctx: Context) -> dict:
    """Everything about one artifact except host latency (converters.sweep times it later, alone)."""
    from edgekit.artifact import read_manifest

    probs = _predict_artifact(path, ctx.data.validation.arrays, ctx.opts.threads)
    accuracy = top1(probs, ctx.data.labels)
    manifest = read_manifest(path)
    row = {"artifact": str(path), "format": fmt, "top1": round(accuracy, 6),
           # the weights alone: the size also counts the embedded manifest (timestamps, step timings)
           "weights_sha256": manifest.weights_sha256 if manifest else None,
           "drop": drop_points(ctx.baseline, accuracy),
           "agreement": round(float(np.mean(np.argmax(probs, -1) == np.argmax(ctx.reference, -1))), 6),
           "size_bytes": path_size(path), "host_p50_ms": None}
    targets = [d.name for d in ctx.devices]
    if fmt == COREML:
        from edgekit.coreml.macs import program_macs

        row.update(macs=program_macs(path), emulated_ms={t: None for t in targets},
                   memory_mb={t: None for t in targets}, latency_na={"emulated": COREML_EMULATED_NA})
        return row
    from edgekit.emulator import estimate_for

    graph, estimates = estimate_for(path, ctx.devices)
    row.update(macs=int(graph.total_macs), emulated_ms={e.target: round(e.estimate_ms, 4) for e in estimates},
               memory_mb={e.target: round(e.memory_mb, 2) for e in estimates})
    return row


def _convert(model_path: Path, fmt: str, recipes: list[str], out_dir: Path, ctx: Context,
             keep_float: tuple[str, ...] = ()):
    from edgekit.recipes import RECIPES

    from .pipeline import ConvertOptions, convert

    opts = ctx.opts
    # --input-shape describes the user's model (a TorchScript file does not say it); a compressed .pt2 does
    shapes = getattr(opts, "input_shapes", None) if model_path == opts.model else None
    copts = ConvertOptions(model=model_path, formats=(fmt,), recipes=tuple(RECIPES[r] for r in recipes),
                           out_dir=out_dir, calibration=opts.calibration, validate=opts.validate,
                           calibration_samples=opts.calibration_samples, labels=opts.labels, mean=opts.mean,
                           std=opts.std, keep_float=keep_float, explain_errors=True, force=True, gate=False,
                           input_shapes=shapes,
                           ios=18 if "int4-weights" in recipes else 16)  # int4 weights are an iOS 18 op
    return convert(copts, progress=lambda msg: ctx.progress(f"  {msg}"))


def compressed_model(compression: str, ctx: Context) -> tuple[Path, list, float]:
    """The model of one compression level (.keras, or .pt2 for a PyTorch/ONNX source), built once and
    kept in models/ (resumable), its provenance and its own top-1 (what quantization starts from)."""
    opts = ctx.opts
    models = opts.out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    torch_source = is_torch_source(opts)
    path = models / f"{opts.model.stem.split('.')[0]}__{slug(compression)}.{'pt2' if torch_source else 'keras'}"
    record = path.with_suffix(".json")
    if path.is_file() and record.is_file():
        saved = json.loads(record.read_text())
        return path, saved["provenance"], saved["top1"]
    ctx.progress(f"compressing: {compression}")
    if torch_source:
        provenance, accuracy = _compress_torch(compression, path, ctx)
    else:
        provenance, accuracy = _compress_keras(compression, path, ctx)
    atomic_write_text(record, json.dumps({"compression": compression, "top1": accuracy, "provenance": provenance},
                                         indent=2) + "\n")
    return path, provenance, accuracy


def _compress_keras(compression: str, path: Path, ctx: Context) -> tuple[list, float]:
    import keras

    opts = ctx.opts
    model, provenance, _ = apply_recipe(ctx.source_model, compression, ctx.data.calibration.arrays,
                                        ctx.data.calibration_labels, seed=opts.seed, progress=ctx.progress)
    accuracy = top1(predict_keras(model, ctx.data.validation.arrays), ctx.data.labels)
    ctx.progress(f"  {compression}: Keras top-1 {100 * accuracy:.2f} %")
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # interrupted mid-save: no half-written model left behind
    keras.backend.clear_session()
    return provenance, accuracy


def _compress_torch(compression: str, path: Path, ctx: Context) -> tuple[list, float]:
    """Compressed on the torch.export graph and saved as a .pt2 at the source's input shape; its top-1
    is measured on that saved file, loaded back as `edgekit convert` will load it."""
    from .compress import compress, split_recipe
    from .compress.pytorch import exported
    from .sources.torch import example_array, import_torch
    from .sources.torch import load as load_torch

    opts, source = ctx.opts, ctx.source_model
    torch = import_torch()
    steps, _ = split_recipe(compression)
    examples = [example_array(t) for t in source.inputs]
    model, provenance = compress(source.torch_module, steps, ctx.data.calibration.arrays, ctx.data.calibration_labels,
                                 seed=opts.seed, progress=ctx.progress, inputs=examples)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.pt2")
    try:
        torch.export.save(exported(model, examples), str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # interrupted mid-save: no half-written model left behind
    saved = load_torch(path, "torch_export")
    try:
        accuracy = top1(saved.predict(ctx.data.validation.arrays)[0], ctx.data.labels)
    finally:
        saved.close()
    ctx.progress(f"  {compression}: PyTorch top-1 {100 * accuracy:.2f} %")
    return provenance, accuracy


def not_run(name: str, compression: str, recipe: str, fmt: str) -> dict:
    return {"variant": name, "compression": compression, "recipe": recipe, "format": fmt, "status": "not run",
            "error": "--budget-minutes ran out before it; re-run the same command to continue"}


def build_level(compression: str, ctx: Context) -> list[dict]:
    """Build and measure (all but host p50) every unfinished variant of one compression level; returns
    the rows written (a level started after the deadline returns "not run" rows, written nowhere)."""
    opts = ctx.opts
    pending = [(fmt, r, name) for fmt, r, name in ctx.variants(compression) if not finished(opts.out_dir, name)]
    if not pending:
        return []
    if ctx.out_of_time:
        return [not_run(name, compression, r, fmt) for fmt, r, name in pending]
    if compression == "none":
        model_path, provenance, compressed_top1 = opts.model, [], ctx.baseline
    else:
        model_path, provenance, compressed_top1 = compressed_model(compression, ctx)
    rows = []
    for fmt in ctx.formats:
        recipes = [r for f, r, _ in pending if f == fmt]
        if not recipes:
            continue
        ctx.progress(f"converting {compression} to {fmt}: {', '.join(recipes)}")
        result = _convert(model_path, fmt, recipes, opts.out_dir / "artifacts", ctx)
        for art in result.artifacts:
            row = _artifact_row(art, fmt, compression, model_path, provenance, compressed_top1, ctx)
            atomic_write_text(row_path(opts.out_dir, row["variant"]), json.dumps(row, indent=2) + "\n")
            ctx.done(_finished_line(row, opts.max_drop))
            rows.append(row)
    if not is_torch_source(opts):
        import keras

        keras.backend.clear_session()
    return rows


def _artifact_row(art, fmt: str, compression: str, model_path: Path, provenance, compressed_top1: float,
                  ctx: Context) -> dict:
    opts = ctx.opts
    name = variant_name(compression, art.recipe, fmt)
    row = {"variant": name, "compression": compression, "recipe": art.recipe, "format": fmt,
           "provenance": provenance, "compressed_top1": round(compressed_top1, 6)}
    if art.error:
        row.update(status="failed", error=art.error)
        return row
    ctx.progress(f"measuring {name}")
    row.update(measure_built(art.path, fmt, ctx), status="ok", parity_to_compressed=art.parity.get("cosine"))
    compression_drop = drop_points(ctx.baseline, compressed_top1)
    if art.recipe == "int8" and row["drop"] > opts.max_drop and compression_drop > opts.max_drop:
        # keeping layers in float cannot win back what compression itself lost
        row.update(status="over budget", note=f"compression alone loses {compression_drop:.2f} points")
    elif art.recipe == "int8" and row["drop"] > opts.max_drop:
        row = _budget_loop(row, art, model_path, ctx)
    return row


def _finished_line(row: dict, max_drop: float) -> str:
    if row["status"] == "failed":
        return f"{row['variant']}: failed ({row['error'].splitlines()[0][:120]})"
    from edgekit.table import human_size

    keep = f", keep-float {len(row['keep_float'])}" if row.get("keep_float") else ""
    status = "over budget" if row["drop"] > max_drop else row["status"]  # as the table will say
    return (f"{row['variant']}: top-1 {100 * row['top1']:.2f} % (drop {row['drop']:+.2f}{keep}), "
            f"{human_size(row['size_bytes'])}, {row['macs'] / 1e6:.1f} MMACs, {status}")


def _budget_loop(row: dict, art, model_path: Path, ctx: Context) -> dict:
    opts = ctx.opts
    worst = [e.get("keep_float") for e in art.error_layers if e.get("keep_float")]
    ctx.progress(f"  {row['variant']}: top-1 drop {row['drop']:.2f} points > {opts.max_drop}; keeping the worst "
                 "layers in float")

    def evaluate(keep: tuple[str, ...]) -> dict:
        if ctx.out_of_time:
            return {"drop": float("inf"), "status": "not run", "error": "--budget-minutes ran out"}
        out_dir = opts.out_dir / "artifacts" / f"keep{len(keep)}-{slug(row['compression'])}"
        try:
            result = _convert(model_path, TFLITE, ["int8"], out_dir, ctx, keep_float=keep)
        except (InputError, ConversionError) as e:
            return {"drop": float("inf"), "status": "failed", "error": str(e)}
        a = result.artifacts[0]
        if a.error:
            return {"drop": float("inf"), "status": "failed", "error": a.error}
        return dict(measure_built(a.path, TFLITE, ctx), status="ok")

    chosen, attempts = fit_budget(dict(row), evaluate, worst, opts.max_drop)
    trail = [{"keep_float": a.get("keep_float", []), "drop": a["drop"] if np.isfinite(a["drop"]) else None,
              "artifact": a.get("artifact"), "error": a.get("error")} for a in attempts]
    if chosen is None:
        row.update(status="over budget", budget_attempts=trail)
        return row
    merged = dict(row)
    merged.update(chosen)
    merged.update(status="ok", budget_attempts=trail)
    return merged
