"""Parquet store for analytics: `--out preds.parquet` (one file) or `--out preds/` (part files).

Parquet files cannot be appended to, so durability comes from part files: every chunk is written
to a temporary name and renamed into place (a crash leaves whole parts or none). With a folder the
parts are the result (pandas, pyarrow, DuckDB and Spark read a folder of parts as one table). With
`x.parquet` they gather in `.x.parquet.parts/` beside it and are merged into `x.parquet` when the
run ends; an interrupted run leaves them there and the next run picks them up.
"""
from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from .._deps import require
from ..errors import InputError, first_line
from .columns import COLUMNS


class ParquetStore:
    def __init__(self, path: Path, folder: bool):
        self.pa = require("pyarrow", "Parquet output")
        self.pq = require("pyarrow.parquet", "Parquet output")
        self.path, self.folder = path, folder
        self.parts = path if folder else path.with_name(f".{path.name}.parts")
        self.parts.mkdir(parents=True, exist_ok=True)
        for stale in self.parts.glob(".part-*.tmp"):  # a chunk in flight when a run died
            stale.unlink()
        s = self.pa.string()
        self.schema = self.pa.schema([(c, self.pa.float64() if c in ("score", "latency_ms") else s) for c in COLUMNS])

    def _files(self) -> list[Path]:
        files = sorted(self.parts.glob("part-*.parquet"))
        return files if self.folder or not self.path.exists() else [self.path, *files]

    def done(self, model_sha: str) -> set[str]:
        done = set()
        for file in self._files():
            try:
                table = self.pq.read_table(file, columns=["input", "model_sha256"])
            except (OSError, self.pa.ArrowException) as e:
                raise InputError(f"--out: {str(file)!r} is not a Parquet file edgekit wrote ({first_line(str(e))}); "
                                 "choose a new name") from e
            for inp, sha in zip(table.column("input").to_pylist(), table.column("model_sha256").to_pylist()):
                if sha == model_sha:
                    done.add(inp)
        return done

    def add(self, rows: list[dict]) -> None:
        if not rows:
            return
        table = self.pa.Table.from_pylist([{c: r[c] for c in COLUMNS} for r in rows], schema=self.schema)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.parts / f".{name}.tmp"
        self.pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self.parts / name)

    def close(self) -> None:
        """One file: merge it with the parts of this (and any interrupted) run, atomically."""
        if self.folder:
            return
        parts = sorted(self.parts.glob("part-*.parquet"))
        if parts:
            tables = [self.pq.read_table(f, schema=self.schema) for f in self._files()]
            merged = self.pa.concat_tables(tables)
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            self.pq.write_table(merged, tmp)
            os.replace(tmp, self.path)
        shutil.rmtree(self.parts, ignore_errors=True)
