"""`edgekit monitor STORE`: drift per time window from the rows `edgekit predict` stored.

Each row carries its per-sample statistics (the `stats` column, edgekit.monitor.features); the
reference comes from the artifact's manifest, found by the row's model file name next to the store
or in the working folder (or given with --artifact) and matched by sha256, so a store never gets
judged against another model's reference.
"""
from __future__ import annotations

import csv
import datetime as dt
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from ..fileio import sha256_path
from ..manifest import Manifest
from .drift import MIN_SAMPLES, Statistic, evaluate
from .reference import extractor_for

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass
class WindowResult:
    model: str
    start: str              # ISO time of the window's first row (or "rows a-b" for count windows)
    samples: int
    statistics: list[Statistic] = field(default_factory=list)

    @property
    def drifting(self) -> list[str]:
        return [s.name for s in self.statistics if s.alert]

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "start": self.start, "samples": self.samples,
                "evaluated": self.samples >= MIN_SAMPLES, "drifting": self.drifting,
                "statistics": [s.to_dict() for s in self.statistics]}


def parse_window(text: str) -> tuple[str, float]:
    """'1h', '30m', '90s', '1d' -> ("time", seconds); '200' -> ("rows", 200)."""
    text = text.strip().lower()
    if text.isdigit() and int(text) >= MIN_SAMPLES:
        return "rows", int(text)
    m = _DURATION.match(text)
    if not m or float(m.group(1)) <= 0:
        raise InputError(f"--window expects a duration like 1h, 30m, 1d or a row count of at least {MIN_SAMPLES}, "
                         f"got {text!r}")
    return "time", float(m.group(1)) * _UNIT[m.group(2)]


def read_rows(path: Path) -> list[dict]:
    """(created_utc, model, model_sha256, stats) of every row of a .sqlite/.db/.csv/.jsonl store.
    Rows of stores written before the stats column have stats None."""
    if not path.is_file():
        raise InputError(f"expected a prediction store (.sqlite, .db, .csv or .jsonl from edgekit predict --out), "
                         f"got {str(path)!r}, which is not a file")
    suffix = path.suffix.lower()
    if suffix in (".sqlite", ".db", ".sqlite3"):
        return _sqlite_rows(path)
    if suffix == ".csv":
        with open(path, encoding="utf-8", errors="replace", newline="") as fh:
            return [_row(r) for r in csv.DictReader(line.replace("\0", "") for line in fh)]
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # edgekit predict reports such lines; drift just skips them
                if isinstance(record, dict):
                    rows.append(_row(record))
        return rows
    raise InputError(f"expected a .sqlite, .db, .csv or .jsonl prediction store, got {path.name!r}")


def monitor_store(path: Path, window: str = "1h", artifact: Path | None = None) -> list[WindowResult]:
    kind, size = parse_window(window)
    rows = [r for r in read_rows(path) if r["stats"] is not None]
    if not rows:
        raise InputError(f"expected rows with drift statistics in {path.name}, found none; re-run edgekit predict "
                         "--out with an artifact whose manifest has reference_stats (edgekit convert --validate)")
    results = []
    by_model: dict[str, list[dict]] = {}
    for r in rows:
        by_model.setdefault(r["model_sha256"], []).append(r)
    for sha, model_rows in by_model.items():
        name = model_rows[0]["model"] or sha[:12]
        manifest = _manifest_for(path, name, sha, artifact)
        if manifest is None:
            continue  # --artifact names another model: its rows are not this reference's to judge
        ref = manifest.reference_stats
        extractor = extractor_for(ref, manifest.inputs[0] if manifest.inputs else None)
        model_rows.sort(key=lambda r: r["created_utc"] or "")
        for start, chunk in _windows(model_rows, kind, size):
            matrix = extractor.from_dicts([r["stats"] for r in chunk])
            results.append(WindowResult(name, start, len(chunk), evaluate(matrix, ref, extractor.layout)))
    if not results:
        raise InputError(f"--artifact {artifact} is not the model of any row in {path.name} (sha256 differs); "
                         "give the artifact the rows were predicted with")
    return results


def _windows(rows: list[dict], kind: str, size: float):
    if kind == "rows":
        n = int(size)
        for i in range(0, len(rows), n):
            yield f"rows {i + 1}-{min(i + n, len(rows))}", rows[i:i + n]
        return
    times = [_time(r["created_utc"]) for r in rows]
    first = min(t for t in times if t is not None) if any(t is not None for t in times) else 0.0
    buckets: dict[int, list[dict]] = {}
    for t, r in zip(times, rows):
        buckets.setdefault(int(((t if t is not None else first) - first) // size), []).append(r)
    for k in sorted(buckets):
        start = dt.datetime.fromtimestamp(first + k * size, dt.timezone.utc).isoformat(timespec="seconds")
        yield start, buckets[k]


def _manifest_for(store: Path, name: str, sha: str, artifact: Path | None) -> Manifest | None:
    if artifact is not None:
        if not artifact.is_file():
            raise InputError(f"--artifact expects the .tflite the rows were predicted with, got {str(artifact)!r}, "
                             "which is not a file")
        return _read_manifest(artifact, name) if sha256_path(artifact) == sha else None
    for folder in (store.parent, Path.cwd()):
        candidate = folder / name
        if candidate.is_file() and sha256_path(candidate) == sha:
            return _read_manifest(candidate, name)
    raise InputError(f"expected the artifact {name!r} (sha256 {sha[:12]}...) beside {store.name} or in the current "
                     "folder to read its reference_stats, found none; pass --artifact PATH")


def _read_manifest(path: Path, name: str) -> Manifest:
    from ..artifact import read_manifest

    manifest = read_manifest(path)
    if manifest is None or not manifest.reference_stats:
        raise ArtifactError(f"{name} has no reference_stats in its manifest, so there is nothing to measure drift "
                            "against; re-convert it with edgekit convert --validate DATA")
    return manifest


def _row(r: dict) -> dict:
    stats = r.get("stats")
    if isinstance(stats, str):
        try:
            stats = json.loads(stats) if stats else None
        except ValueError:
            stats = None
    return {"created_utc": r.get("created_utc"), "model": r.get("model"), "model_sha256": r.get("model_sha256"),
            "stats": stats if isinstance(stats, dict) else None}


def _sqlite_rows(path: Path) -> list[dict]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(predictions)")}
            if not columns:
                raise sqlite3.DatabaseError("no predictions table")
            stats = "stats" if "stats" in columns else "NULL"
            cur = db.execute(f"SELECT created_utc, model, model_sha256, {stats} FROM predictions")
            return [_row(dict(zip(("created_utc", "model", "model_sha256", "stats"), r))) for r in cur]
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise InputError(f"expected an edgekit predict SQLite store, {str(path)!r} is not one ({e})") from e


def _time(text: str | None) -> float | None:
    try:
        return dt.datetime.fromisoformat(text).timestamp() if text else None
    except ValueError:
        return None


def table_rows(results: list[WindowResult]) -> tuple[list[str], list[list]]:
    """The terminal table: one line per window, the headline statistics, then what fired."""
    keys = []
    for r in results:
        for s in r.statistics:
            headline = s.name.endswith("_psi") or s.name in ("confidence_drop", "int8_clipped_fraction")
            if headline and s.name not in keys:
                keys.append(s.name)
    several = len({r.model for r in results}) > 1  # the model column only when it tells windows apart
    headers = ["model"] * several + ["window start", "samples", *keys, "drifting"]
    rows = []
    for r in results:
        values = {s.name: s.value for s in r.statistics}
        status = ", ".join(r.drifting) if r.drifting else ("-" if r.statistics else f"too few (<{MIN_SAMPLES})")
        rows.append([r.model] * several + [r.start, r.samples, *[values.get(k) for k in keys], status])
    return headers, rows


def summary_counts(results: list[WindowResult]) -> dict[str, Any]:
    evaluated = [r for r in results if r.statistics]
    return {"windows": len(results), "evaluated": len(evaluated),
            "drifting": sum(bool(r.drifting) for r in evaluated),
            "samples": int(np.sum([r.samples for r in results]))}
