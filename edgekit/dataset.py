"""Calibration and validation inputs: a folder of images or ready tensors (.npy/.npz).

Both become a `Dataset`: one float32 array per model input, batch first, plus what
was skipped and a content hash recorded in the manifest (so an artifact says exactly
which data calibrated it).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .manifest import TensorInfo
from .preprocess import IMAGE_SUFFIXES, ImageSpec


@dataclass
class Dataset:
    arrays: list[np.ndarray]          # one per model input, shape (N, ...)
    source: str                       # what the user pointed at
    items: list[str] = field(default_factory=list)   # file names (images) or "index i" (tensors)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def take(self, indices) -> "Dataset":
        idx = np.asarray(indices, dtype=np.int64)
        items = [self.items[i] for i in idx] if self.items else []
        return Dataset([a[idx] for a in self.arrays], self.source, items, [])

    def sha256(self) -> str:
        h = hashlib.sha256()
        for a in self.arrays:
            h.update(str(a.shape).encode())
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        return h.hexdigest()

    def samples(self):
        """Yield one sample at a time as a list of (1, ...) arrays, in input order."""
        for i in range(len(self)):
            yield [a[i:i + 1] for a in self.arrays]


def load_dataset(path: str | Path, inputs: list[TensorInfo], image_spec: ImageSpec | None,
                 limit: int | None = None, role: str = "calibration") -> Dataset:
    path = Path(path)
    if not path.exists():
        raise InputError(f"--{role} expects a folder of images or a .npy/.npz file, got {str(path)!r}, "
                         "which does not exist")
    if path.is_dir():
        dataset = _load_image_folder(path, inputs, image_spec, limit, role)
    elif path.suffix.lower() in (".npy", ".npz"):
        dataset = _load_tensors(path, inputs, limit, role)
    else:
        raise InputError(f"--{role} expects a folder of images or a .npy/.npz file, got {path.name!r}")
    for array, spec in zip(dataset.arrays, inputs):
        _check_shape(array, spec, path, role)
    return dataset


def _load_image_folder(folder: Path, inputs: list[TensorInfo], spec: ImageSpec | None,
                       limit: int | None, role: str) -> Dataset:
    if len(inputs) != 1 or spec is None:
        raise InputError(f"--{role} {str(folder)!r} is a folder of images, but the model has "
                         f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)}) that are not one NHWC image; "
                         "give a .npz with one array per input name instead")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images, items, skipped = [], [], []
    for f in files:
        if limit is not None and len(images) >= limit:
            break
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((str(f), "not an image file type"))
            continue
        try:
            images.append(spec.load(f))
            items.append(str(f.relative_to(folder)))
        except InputError as e:
            skipped.append((str(f), str(e)))
    if not images:
        raise InputError(f"--{role} expects a folder with at least one readable image, got {str(folder)!r} "
                         f"with none ({len(skipped)} files skipped); add .png/.jpg files or give a .npy/.npz")
    return Dataset([np.stack(images)], str(folder), items, skipped)


def _load_tensors(path: Path, inputs: list[TensorInfo], limit: int | None, role: str) -> Dataset:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"--{role} expects a readable .npy/.npz file, got {path.name!r}: {e}") from e
    if isinstance(loaded, np.ndarray):
        if len(inputs) != 1:
            raise InputError(f"the model has {len(inputs)} inputs; give a .npz keyed by input name "
                             f"({', '.join(i.name for i in inputs)}), got a single .npy array")
        arrays = [loaded]
    else:
        with loaded:
            keys = list(loaded.keys())
            if len(inputs) == 1 and len(keys) == 1:
                arrays = [loaded[keys[0]]]
            else:
                missing = [i.name for i in inputs if i.name not in keys]
                if missing:
                    raise InputError(f"--{role} .npz expects one array per model input named "
                                     f"{', '.join(i.name for i in inputs)}; it has {', '.join(keys)}")
                arrays = [loaded[i.name] for i in inputs]
    counts = {a.shape[0] if a.ndim else 0 for a in arrays}
    if len(counts) != 1 or 0 in counts:
        raise InputError(f"--{role} arrays need the same non-zero number of samples along axis 0, got "
                         f"{[a.shape for a in arrays]}")
    if limit is not None:
        arrays = [a[:limit] for a in arrays]
    # Each input keeps its own kind: token ids stay integers (a model with an int32 input rejects
    # float calibration data), everything numeric else becomes float32.
    arrays = [_as_input_dtype(a, spec) for a, spec in zip(arrays, inputs)]
    n = arrays[0].shape[0]
    return Dataset(arrays, str(path), [f"{path.name}[{i}]" for i in range(n)], [])


def _as_input_dtype(array: np.ndarray, spec: TensorInfo) -> np.ndarray:
    if array.dtype.kind not in "fiub":
        return array  # refused later with the input's name
    wanted = np.dtype(spec.dtype) if spec.dtype else np.dtype(np.float32)
    if wanted.kind in "iu":
        if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.round(array))):
            raise InputError(f"input {spec.name!r} takes {wanted.name} values (e.g. token ids), but the data holds "
                             "fractional numbers; save the ids as integers")
        return array.astype(wanted)
    return array.astype(np.float32)


def _check_shape(array: np.ndarray, spec: TensorInfo, path: Path, role: str) -> None:
    expected = tuple(spec.shape[1:])
    given = tuple(array.shape[1:])
    ok = len(expected) == len(given) and all(e is None or e == g for e, g in zip(expected, given))
    if not ok:
        exp = "(N, " + ", ".join("?" if e is None else str(e) for e in expected) + ")"
        hint = ""
        if len(expected) == len(given) and expected[:-1] == given[:-1]:
            hint = f" (channels differ: the model takes {expected[-1]}, the data has {given[-1]})"
        raise InputError(f"--{role} data for input {spec.name!r} expected shape {exp}, got {array.shape}{hint} "
                         f"in {str(path)!r}; convert the data to the model's input shape")
