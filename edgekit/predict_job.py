"""`edgekit predict`: run an artifact over many inputs, resumably, into a store."""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import EdgekitError, InputError
from .fileio import sha256_path
from .preprocess import IMAGE_SUFFIXES
from .predictor import Predictor
from .monitor.model import watch

INPUT_SUFFIXES = IMAGE_SUFFIXES | {".npy"}


@dataclass
class PredictSummary:
    predicted: int = 0
    skipped_done: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    rows: list[dict] = field(default_factory=list)  # kept when no store is given

    def record(self, rows: list[dict], store=None) -> None:
        """Count a chunk of predicted rows and make it durable (store) or keep it (no store); both
        engines end every chunk here, so they count and store the same way."""
        self.predicted += len(rows)
        self.latencies_ms.extend(r["latency_ms"] for r in rows)
        if store is not None:
            store.add(rows)
        else:
            self.rows.extend(rows)

    def to_dict(self) -> dict:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else None
        return {"predicted": self.predicted, "skipped_already_done": self.skipped_done,
                "failed": len(self.failures), "failures": [{"input": i, "reason": r} for i, r in self.failures],
                "p50_latency_ms": float(np.percentile(lat, 50)) if lat is not None else None,
                "throughput_per_s": self.predicted / self.wall_s if self.wall_s > 0 else None}


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files, folders (recursively: image and .npy files) and glob patterns as resolved absolute paths
    (strings: a Path per input costs more than listing a folder), de-duplicated, sorted per item."""
    found: list[str] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found.extend(_folder_inputs(path))
        elif path.is_file():
            found.append(str(path.resolve()))
        elif glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
            if not matches:
                raise InputError(f"INPUT pattern {pattern!r} matches no files")
            found.extend(str(p.resolve()) for p in matches)
        else:
            raise InputError(f"INPUT expects files, folders or glob patterns, got {pattern!r}, which does not exist")
    unique = list(dict.fromkeys(found))
    if not unique:
        raise InputError(f"no input files found in {', '.join(patterns)}; expected images or .npy files")
    return unique


def _folder_inputs(folder: Path) -> list[str]:
    """The image and .npy files below `folder` as `rglob` finds them (symlinked folders are not entered,
    symlinked files count), sorted as Paths sort, resolved. One os.scandir per folder and no Path or
    realpath per file: a folder of 100k inputs lists in a fraction of a second, not seconds."""
    found: list[tuple[str, str]] = []  # (sort key, resolved path)
    todo = [str(folder.resolve())]  # resolved once: entries below it are real paths unless symlinks
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        todo.append(entry.path)
                    elif os.path.splitext(entry.name)[1].lower() in INPUT_SUFFIXES and entry.is_file():
                        real = os.path.realpath(entry.path) if entry.is_symlink() else entry.path
                        # NUL sorts below any character of a name: strings order as Paths (part by part) do
                        found.append((entry.path.replace(os.sep, "\0"), real))
        except PermissionError:  # as rglob: an unreadable folder contributes nothing
            continue
    found.sort(key=lambda item: item[0])
    return [real for _, real in found]


def run_predictions(model: Predictor, model_path: Path, inputs: list[str | Path], store=None, top_k: int = 5,
                    chunk_size: int = 16, on_progress: Callable[[int], None] = lambda n: None) -> PredictSummary:
    model_sha = sha256_path(model_path)
    model = watch(model, every=0)  # rows carry drift statistics when the manifest has reference_stats
    summary = PredictSummary()
    done = store.done(model_sha) if store is not None else set()
    todo = [p for p in inputs if str(p) not in done]
    summary.skipped_done = len(inputs) - len(todo)
    on_progress(summary.skipped_done)
    start = time.perf_counter()
    for chunk in _chunks(todo, chunk_size):
        rows = []
        for path in chunk:
            try:
                rows.append(_predict_one(model, model_path, model_sha, path, top_k))
            except EdgekitError as e:
                summary.failures.append((str(path), str(e)))
        summary.record(rows, store)
        on_progress(len(chunk))
    summary.wall_s = time.perf_counter() - start
    return summary


def _predict_one(model: Predictor, model_path: Path, model_sha: str, path: str | Path, top_k: int) -> dict:
    path = os.fspath(path)
    try:
        x = np.load(path, allow_pickle=False) if path.lower().endswith(".npy") else path
    except (EOFError, ValueError, OSError) as e:  # empty, truncated or not an .npy at all: this input fails
        raise InputError(f"expected a NumPy .npy array, {os.path.basename(path)} is not one "
                         f"({type(e).__name__}: {e})") from e
    return prediction_row(model, model_path.name, model_sha, path, x, top_k)


def prediction_row(model: Predictor, model_name: str, model_sha: str, key: str, x, top_k: int) -> dict:
    """One store row (stores.COLUMNS) for input `x` (array, image path or bytes) known as `key`.
    Shared by the local engine and the Ray actors, so both write the same schema."""
    t0 = time.perf_counter()
    out = model.predict(x)
    latency = (time.perf_counter() - t0) * 1000
    first = out if isinstance(out, np.ndarray) else next(iter(out.values()))
    classes = None
    if first.ndim == 2 and first.shape[0] == 1 and first.shape[1] > 1:  # class scores
        classes = model.top_k(first[0], top_k)
    outputs = None if classes is not None and len(model.outputs) == 1 else json.dumps(
        {k: v.tolist() for k, v in (out.items() if isinstance(out, dict) else [(model.outputs[0].name, out)])})
    return {"input": key, "model_sha256": model_sha, "model": model_name,
            "label": classes[0][0] if classes else None, "score": classes[0][1] if classes else None,
            "top_k": json.dumps(classes) if classes else None, "outputs": outputs, "latency_ms": round(latency, 4),
            "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            # per-row drift statistics for `edgekit monitor` (None when the artifact has no reference_stats)
            "stats": model.last_stats() if hasattr(model, "last_stats") else None}


def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]
