"""Task accuracy: the true label of every validation input, and top-1 against them.

Labelled data comes in one of two shapes: a folder of class sub-folders (validation/3/0001.png:
class "3"), or any folder / .npz with a CSV of `file,label` rows (labels.csv beside the images, or
named explicitly). Class names map to output indices through the labels file (one name per line,
in class-index order) when one is given, else through the sorted folder names (numerically when
they are all integers, so "10" comes after "9").
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edgekit.dataset import Dataset
from edgekit.errors import InputError


def class_of_item(item: str) -> str | None:
    """'3/0001.png' -> '3'; a file directly in the folder has no class folder."""
    parts = Path(item).parts
    return parts[0] if len(parts) > 1 else None


def read_csv_labels(path: Path) -> dict[str, str]:
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"expected a CSV of file,label rows, got {str(path)!r}: {e}") from e
    out = {}
    for row in rows:
        if len(row) < 2 or row[0].strip().lower() in ("file", "filename", "path"):
            continue
        out[row[0].strip()] = row[1].strip()
    if not out:
        raise InputError(f"expected file,label rows in {str(path)!r}, found none")
    return out


def dataset_labels(dataset: Dataset, class_names: list[str] | None = None, csv_path: Path | None = None,
                   role: str = "validate") -> tuple[np.ndarray, list[str]] | None:
    """(label index per sample, class names), or None when the data carries no labels (a flat folder
    of images without a CSV: agreement with the source is all that can be measured)."""
    source = Path(dataset.source)
    if csv_path is None and source.is_dir() and (source / "labels.csv").is_file():
        csv_path = source / "labels.csv"
    if csv_path is not None:
        table = read_csv_labels(csv_path)
        names = []
        for item in dataset.items:
            key = item if item in table else Path(item).name if Path(item).name in table else None
            if key is None:
                raise InputError(f"--{role}: {item!r} has no row in {csv_path.name}; give every file a label")
            names.append(table[key])
    else:
        names = [class_of_item(i) for i in dataset.items]
        if not names or any(n is None for n in names):
            return None
    classes = class_names or _sorted_classes(set(names))
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(names) - set(index))
    if unknown:
        raise InputError(f"--{role}: class folder(s)/label(s) {', '.join(unknown[:5])} are not in the labels "
                         f"({', '.join(classes[:10])}{'...' if len(classes) > 10 else ''}); name the folders "
                         "after the labels file's class names")
    return np.array([index[n] for n in names], dtype=np.int64), list(classes)


def _sorted_classes(names: set[str]) -> list[str]:
    if all(n.isdigit() for n in names):
        return [str(i) for i in range(max(int(n) for n in names) + 1)]
    return sorted(names)


def top1(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(np.asarray(probs), axis=-1) == labels))
