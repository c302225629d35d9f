"""`edgekit sweep`: the best artifact for a device under an accuracy budget.

A grid of variants, compression levels x quantization recipes, each built by the ordinary
conversion pipeline from a compressed copy of the source model and measured the same way: task
top-1 on labelled validation data (and the drop from the source model, in points), agreement with
the source, size, MACs from the artifact's graph, host p50 through edgekit's runtime, and emulated
latency on every target. int8 variants over the budget go through the accuracy-budget loop
(converters.budget). The Pareto frontier (top-1 against latency on the first target) is printed;
for each target the fastest variant inside the budget is marked "best". Output folder:

    models/      the compressed Keras models (+ provenance JSON), one per compression level
    artifacts/   every .tflite with its manifest
    variants/    one result JSON per variant: a re-run skips variants whose JSON and artifact exist
    sweep.json, sweep.html (table + frontier chart)

Variants run one after another: conversion and distillation already use both cores of a small
machine, and a host p50 measured while another conversion runs beside it would be noise.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.dataset import load_dataset
from edgekit.errors import ConversionError, InputError
from edgekit.fileio import atomic_write_text
from edgekit.manifest import TensorInfo
from edgekit.preprocess import ImageSpec

from .accuracy import dataset_labels, top1
from .budget import drop_points, fit_budget
from .compress import apply_recipe, split_recipe

DEFAULT_RECIPES = ("fp32", "fp16", "int8-weights", "int8")
DEFAULT_COMPRESSIONS = ("none", "prune-channels-30+distill", "prune-channels-50+distill")
KERAS_SUFFIXES = (".keras", ".h5")
VALIDATION_LIMIT = 2000
RUN_BATCH = 32


@dataclass(frozen=True)
class SweepOptions:
    model: Path
    out_dir: Path
    calibration: Path
    validate: Path
    targets: tuple[str, ...] = ("rpi4",)
    max_drop: float = 1.0                    # top-1 points
    budget_minutes: float | None = None
    recipes: tuple[str, ...] = DEFAULT_RECIPES
    compressions: tuple[str, ...] = DEFAULT_COMPRESSIONS
    labels: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    calibration_samples: int = 500
    seed: int = 0
    bench_runs: int = 100
    threads: int | None = None


@dataclass
class SweepResult:
    source: dict
    rows: list[dict]
    frontier: list[str]                       # variant names on the Pareto frontier
    best: dict[str, str | None]               # target -> best variant inside the budget
    seconds: float
    complete: bool                            # False: --budget-minutes ran out first
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"source": self.source, "options": self.options, "seconds": round(self.seconds, 1),
                "complete": self.complete, "frontier": self.frontier, "best": self.best, "variants": self.rows}


def variant_name(compression: str, recipe: str) -> str:
    return recipe if compression == "none" else f"{compression}+{recipe}"


def _slug(text: str) -> str:
    return text.replace(".", "p").replace("/", "_")


def check_options(opts: SweepOptions) -> list:
    """Everything a user can get wrong, before any slow work; returns the target devices."""
    from edgekit.emulator import load_device
    from edgekit.recipes import RECIPES, TFLITE

    if not opts.model.exists():
        raise InputError(f"sweep expects a Keras model file (.keras or .h5), got {str(opts.model)!r}, which does not "
                         "exist")
    if not opts.model.is_file() or opts.model.suffix.lower() not in KERAS_SUFFIXES:
        raise InputError(f"sweep expects a Keras model file (.keras or .h5), got {str(opts.model)!r}; compression "
                         "rebuilds the Keras model, so a SavedModel folder cannot be swept")
    for recipe in opts.recipes:
        if recipe not in RECIPES or not RECIPES[recipe].supports(TFLITE):
            valid = [n for n, r in RECIPES.items() if r.supports(TFLITE)]
            raise InputError(f"--recipes: {recipe!r} is not a TFLite recipe; expected some of {', '.join(valid)}")
    for compression in opts.compressions:
        if compression != "none":
            steps, rest = split_recipe(compression)
            if rest is not None:
                raise InputError(f"--compress: {compression!r} ends in {rest!r}, which is not a compression step; "
                                 "give quantization recipes with --recipes")
    if opts.max_drop < 0:
        raise InputError(f"--max-drop expects points of top-1 accuracy >= 0, got {opts.max_drop}")
    if opts.budget_minutes is not None and opts.budget_minutes <= 0:
        raise InputError(f"--budget-minutes expects a positive number, got {opts.budget_minutes}")
    if not opts.targets:
        raise InputError("--target expects at least one device name (see edgekit targets)")
    from edgekit.charts import require_matplotlib

    require_matplotlib("edgekit sweep's frontier chart")  # before the minutes of work, not after
    return [load_device(t) for t in opts.targets]


class _Clock:
    def __init__(self, minutes: float | None):
        self.start = time.perf_counter()
        self.deadline = None if minutes is None else self.start + minutes * 60

    @property
    def out_of_time(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start


class _Data:
    """Calibration and labelled validation data, read once, as the model sees them."""

    def __init__(self, keras_model, opts: SweepOptions, progress):
        shape = tuple(keras_model.inputs[0].shape)
        self.inputs = [TensorInfo(keras_model.inputs[0].name, shape, "float32")]
        is_image = len(keras_model.inputs) == 1 and len(shape) == 4 and shape[-1] in (1, 3)
        self.spec = ImageSpec.for_input_shape(shape, opts.mean or (0.0,), opts.std or (1.0,)) if is_image else None
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


def _predict_keras(model, arrays: list[np.ndarray]) -> np.ndarray:
    out = model.predict(arrays[0] if len(arrays) == 1 else arrays, batch_size=64, verbose=0)
    return np.asarray(out[0] if isinstance(out, list) else out, dtype=np.float32)


def _predict_artifact(path: Path, arrays: list[np.ndarray], threads: int | None) -> np.ndarray:
    from edgekit.artifact import load

    model = load(path, threads=threads)
    batch = RUN_BATCH if model.resizable_batch else 1
    n = len(arrays[0])
    return np.concatenate([model.run([a[i:i + batch] for a in arrays])[0] for i in range(0, n, batch)])


def measure(path: Path, data: _Data, reference: np.ndarray, baseline_top1: float, devices: list,
            opts: SweepOptions) -> dict:
    """Everything the table and the chart show about one artifact."""
    from edgekit.bench import run_bench
    from edgekit.emulator import estimate_for

    probs = _predict_artifact(path, data.validation.arrays, opts.threads)
    accuracy = top1(probs, data.labels)
    graph, estimates = estimate_for(path, devices)
    bench = run_bench(path, threads=opts.threads, runs=opts.bench_runs) if opts.bench_runs else None
    return {"artifact": str(path), "top1": round(accuracy, 6), "drop": drop_points(baseline_top1, accuracy),
            "agreement": round(float(np.mean(np.argmax(probs, -1) == np.argmax(reference, -1))), 6),
            "size_bytes": path.stat().st_size, "macs": int(graph.total_macs),
            "host_p50_ms": round(bench.latency_ms["p50"], 4) if bench else None,
            "emulated_ms": {e.target: round(e.estimate_ms, 4) for e in estimates},
            "memory_mb": {e.target: round(e.memory_mb, 2) for e in estimates}}


def _convert(model_path: Path, recipes: list[str], out_dir: Path, opts: SweepOptions, progress,
             keep_float: tuple[str, ...] = ()):
    from edgekit.recipes import RECIPES

    from .pipeline import ConvertOptions, convert

    copts = ConvertOptions(model=model_path, formats=("tflite",), recipes=tuple(RECIPES[r] for r in recipes),
                           out_dir=out_dir, calibration=opts.calibration, validate=opts.validate,
                           calibration_samples=opts.calibration_samples, labels=opts.labels, mean=opts.mean,
                           std=opts.std, keep_float=keep_float, explain_errors=True, force=True, gate=False)
    return convert(copts, progress=lambda msg: progress(f"  {msg}"))


def _compressed_model(source_model, compression: str, data: _Data, opts: SweepOptions,
                      progress) -> tuple[Path, list, float]:
    """The Keras model of one compression level, built once and kept in models/ (resumable), its
    provenance and its own top-1 (what quantization starts from)."""
    import keras

    models = opts.out_dir / "models"
    models.mkdir(parents=True, exist_ok=True)
    path = models / f"{opts.model.stem.split('.')[0]}__{_slug(compression)}.keras"
    record = path.with_suffix(".json")
    if path.is_file() and record.is_file():
        saved = json.loads(record.read_text())
        return path, saved["provenance"], saved["top1"]
    progress(f"compressing: {compression}")
    model, provenance, _ = apply_recipe(source_model, compression, data.calibration.arrays, data.calibration_labels,
                                        seed=opts.seed, progress=progress)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.keras")
    accuracy = top1(_predict_keras(model, data.validation.arrays), data.labels)
    progress(f"  {compression}: Keras top-1 {100 * accuracy:.2f} %")
    model.save(tmp)
    os.replace(tmp, path)
    atomic_write_text(record, json.dumps({"compression": compression, "top1": accuracy, "provenance": provenance},
                                         indent=2) + "\n")
    keras.backend.clear_session()
    return path, provenance, accuracy


def sweep(opts: SweepOptions, progress: Callable[[str], None] = lambda msg: None) -> SweepResult:
    from edgekit._deps import require

    devices = check_options(opts)
    require("tensorflow", "edgekit sweep")
    keras = require("keras", "edgekit sweep")
    clock = _Clock(opts.budget_minutes)
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    (opts.out_dir / "variants").mkdir(exist_ok=True)
    try:
        source_model = keras.models.load_model(opts.model, compile=False)
    except Exception as e:  # a corrupt or foreign file: keras raises many kinds
        raise InputError(f"cannot load {opts.model.name} as a Keras model ({type(e).__name__}: {str(e)[:200]}); "
                         "re-save it with model.save('model.keras')") from e
    data = _Data(source_model, opts, progress)
    reference = _predict_keras(source_model, data.validation.arrays)
    baseline = top1(reference, data.labels)
    progress(f"source top-1 on {len(data.labels)} labelled inputs: {100 * baseline:.2f} %")
    rows, complete = [], True
    for compression in opts.compressions:
        pending = [r for r in opts.recipes if not _finished(opts, variant_name(compression, r))]
        if not pending:
            rows += [_load_row(opts, variant_name(compression, r)) for r in opts.recipes]
            continue
        if clock.out_of_time:
            complete = False
            rows += [_not_run(opts, variant_name(compression, r), compression, r) for r in opts.recipes]
            continue
        if compression == "none":
            model_path, provenance, compressed_top1 = opts.model, [], baseline
        else:
            model_path, provenance, compressed_top1 = _compressed_model(source_model, compression, data, opts,
                                                                        progress)
        progress(f"converting {compression}: {', '.join(pending)}")
        out_dir = opts.out_dir / "artifacts"
        result = _convert(model_path, pending, out_dir, opts, progress)
        for art in result.artifacts:
            name = variant_name(compression, art.recipe)
            row = {"variant": name, "compression": compression, "recipe": art.recipe, "provenance": provenance,
                   "compressed_top1": round(compressed_top1, 6)}
            if art.error:
                row.update(status="failed", error=art.error)
            else:
                progress(f"measuring {name}")
                row.update(measure(art.path, data, reference, baseline, devices, opts), status="ok",
                           parity_to_compressed=art.parity.get("cosine"))
                compression_drop = drop_points(baseline, compressed_top1)
                if art.recipe == "int8" and row["drop"] > opts.max_drop and compression_drop > opts.max_drop:
                    # keeping layers in float cannot win back what compression itself lost
                    row.update(status="over budget", note=f"compression alone loses {compression_drop:.2f} points")
                elif art.recipe == "int8" and row["drop"] > opts.max_drop:
                    row = _budget_loop(row, art, model_path, data, reference, baseline, devices, opts, clock, progress)
            atomic_write_text(_row_path(opts, name), json.dumps(row, indent=2) + "\n")
        rows += [_load_row(opts, variant_name(compression, r)) for r in opts.recipes]
        keras.backend.clear_session()
    return _summarise(opts, rows, baseline, len(data.labels), clock, complete)


def _budget_loop(row: dict, art, model_path: Path, data: _Data, reference, baseline, devices, opts, clock, progress):
    worst = [e.get("keep_float") for e in art.error_layers if e.get("keep_float")]
    progress(f"  {row['variant']}: top-1 drop {row['drop']:.2f} points > {opts.max_drop}; keeping the worst layers "
             "in float")

    def evaluate(keep: tuple[str, ...]) -> dict:
        if clock.out_of_time:
            return {"drop": float("inf"), "status": "not run", "error": "--budget-minutes ran out"}
        out_dir = opts.out_dir / "artifacts" / f"keep{len(keep)}-{_slug(row['compression'])}"
        try:
            result = _convert(model_path, ["int8"], out_dir, opts, progress, keep_float=keep)
        except (InputError, ConversionError) as e:
            return {"drop": float("inf"), "status": "failed", "error": str(e)}
        a = result.artifacts[0]
        if a.error:
            return {"drop": float("inf"), "status": "failed", "error": a.error}
        return dict(measure(a.path, data, reference, baseline, devices, opts), status="ok")

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


def _row_path(opts: SweepOptions, name: str) -> Path:
    return opts.out_dir / "variants" / f"{_slug(name)}.json"


def _finished(opts: SweepOptions, name: str) -> bool:
    path = _row_path(opts, name)
    if not path.is_file():
        return False
    row = json.loads(path.read_text())
    return row.get("status") != "not run" and (row.get("artifact") is None or Path(row["artifact"]).exists())


def _load_row(opts: SweepOptions, name: str) -> dict:
    path = _row_path(opts, name)
    return json.loads(path.read_text()) if path.is_file() else {"variant": name, "status": "not run"}


def _not_run(opts, name, compression, recipe) -> dict:
    return {"variant": name, "compression": compression, "recipe": recipe, "status": "not run",
            "error": "--budget-minutes ran out before it; re-run the same command to continue"}


def pareto(rows: list[dict], target: str) -> list[str]:
    """Variants no other variant beats on both top-1 (higher) and emulated latency on `target` (lower)."""
    ok = [r for r in rows if "top1" in r and r.get("status") in ("ok", "over budget")]
    front = []
    for r in ok:
        ms, acc = r["emulated_ms"][target], r["top1"]
        dominated = any(o is not r and o["emulated_ms"][target] <= ms and o["top1"] >= acc
                        and (o["emulated_ms"][target] < ms or o["top1"] > acc) for o in ok)
        if not dominated:
            front.append(r["variant"])
    return front


def best_under_budget(rows: list[dict], target: str, max_drop: float) -> str | None:
    inside = [r for r in rows if r.get("status") == "ok" and r["drop"] <= max_drop]
    if not inside:
        return None
    return min(inside, key=lambda r: (r["emulated_ms"][target], r["size_bytes"]))["variant"]


def _summarise(opts: SweepOptions, rows, baseline, n_labels, clock, complete) -> SweepResult:
    for r in rows:
        if r.get("status") == "not run":
            complete = False
        if r.get("status") == "ok" and r["drop"] > opts.max_drop:  # the budget may differ from the last run's
            r["status"] = "over budget"
    frontier = pareto(rows, opts.targets[0])
    best = {t: best_under_budget(rows, t, opts.max_drop) for t in opts.targets}
    for r in rows:
        r["frontier"] = r["variant"] in frontier
        r["best_for"] = [t for t, v in best.items() if v == r["variant"]]
    source = {"model": str(opts.model), "top1": round(baseline, 6), "validation_samples": n_labels}
    options = {"targets": list(opts.targets), "max_drop": opts.max_drop, "recipes": list(opts.recipes),
               "compressions": list(opts.compressions), "budget_minutes": opts.budget_minutes, "seed": opts.seed}
    result = SweepResult(source, rows, frontier, best, clock.elapsed, complete, options)
    from .sweep_report import write_reports

    write_reports(result, opts.out_dir)
    return result
