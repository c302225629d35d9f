"""The data a convert run works from: calibration and parity (validation) inputs, split
so parity is never measured on what calibrated the ranges, the image preprocessing that
turns files into input tensors, and class labels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.dataset import Dataset, load_dataset
from edgekit.errors import InputError
from edgekit.preprocess import ImageSpec

from .options import ConvertOptions
from .sources.base import SourceModel

VALIDATION_CAP = 500       # more validation samples add time, not information, for parity
SYNTHETIC_SAMPLES = 32


def image_spec(source: SourceModel, opts: ConvertOptions) -> ImageSpec | None:
    first = source.inputs[0]
    if len(source.inputs) != 1 or source.layout is None:
        if opts.mean is not None or opts.std is not None:
            raise InputError(f"--mean/--std describe image preprocessing, but the model input {first.name!r} has "
                             f"shape {first.shape}, not NHWC/NCHW with 1 or 3 channels; drop them and give tensors")
        return None
    return ImageSpec.for_input_shape(first.shape, opts.mean or (0.0,), opts.std or (1.0,), source.layout)


def datasets(source: SourceModel, spec, opts: ConvertOptions, progress) -> tuple[Dataset | None, Dataset, str]:
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
    return calibration, synthetic(source, spec), \
        f"{SYNTHETIC_SAMPLES} synthetic uniform inputs over the input range (no --validate or --calibration)"


def synthetic(source: SourceModel, spec) -> Dataset:
    rng = np.random.default_rng(0)
    lo, hi = spec.value_range() if spec else (-1.0, 1.0)
    arrays = [rng.uniform(lo, hi, size=(SYNTHETIC_SAMPLES, *[d or 1 for d in t.shape[1:]])).astype(np.float32)
              for t in source.inputs]
    return Dataset(arrays, "synthetic")


def read_labels(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    if not path.is_file():
        raise InputError(f"--labels expects a text file with one class name per line, got {str(path)!r}, "
                         "which is not a file")
    labels = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    if not labels:
        raise InputError(f"--labels expects one class name per line, {str(path)!r} is empty")
    return labels


def check_labels(labels, reference: list[np.ndarray]) -> None:
    if labels is None:
        return
    classes = reference[0].shape[-1]
    if classes != len(labels):
        raise InputError(f"--labels has {len(labels)} names but the model's first output has {classes} classes; "
                         "give one label per class, in class-index order")


def dataset_info(ds: Dataset) -> dict:
    return {"source": ds.source, "samples": len(ds), "sha256": ds.sha256(), "skipped": len(ds.skipped)}


