"""Local file stores for `edgekit predict`: SQLite, CSV or JSON Lines, chosen by suffix.

Every store is resumable: `done()` lists the inputs this model (by sha256) already
predicted, and `add()` makes a chunk durable before returning (a transaction for SQLite,
flush+fsync for text files), so an interrupted run loses at most the chunk in flight and a
re-run neither repeats nor loses work. A text file cut mid-line by a crash is repaired on open.
"""
from __future__ import annotations

import csv
import json
import os
import sqlite3
from pathlib import Path

from ..errors import InputError
from .columns import COLUMNS

# Columns the local stores keep beyond the shared schema: `stats` holds each row's drift statistics
# (edgekit.monitor, JSON) for `edgekit monitor`. Stores written before it read back with none.
LOCAL_COLUMNS = COLUMNS + [c for c in ("stats",) if c not in COLUMNS]


class SqliteStore:
    def __init__(self, path: Path):
        self.path = path
        try:
            self.db = sqlite3.connect(path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS predictions (input TEXT NOT NULL, model_sha256 TEXT NOT NULL, "
                "model TEXT, label TEXT, score REAL, top_k TEXT, outputs TEXT, latency_ms REAL, created_utc TEXT, "
                "PRIMARY KEY (input, model_sha256))")
            if "stats" not in {row[1] for row in self.db.execute("PRAGMA table_info(predictions)")}:
                self.db.execute("ALTER TABLE predictions ADD COLUMN stats TEXT")  # a store from before monitoring
        except sqlite3.DatabaseError as e:
            raise InputError(f"--out expects an SQLite database, {str(path)!r} is not one ({e}); "
                             "choose a new file name") from e

    def done(self, model_sha: str) -> set[str]:
        try:
            return {row[0] for row in self.db.execute("SELECT input FROM predictions WHERE model_sha256 = ?",
                                                      (model_sha,))}
        except sqlite3.Error as e:  # a database of another shape (or damaged) under our file name
            raise self._foreign(e) from e

    def add(self, rows: list[dict]) -> None:
        try:
            with self.db:  # one transaction per chunk: all of it or none of it
                self.db.executemany(f"INSERT OR REPLACE INTO predictions ({', '.join(LOCAL_COLUMNS)}) "
                                    f"VALUES ({', '.join('?' * len(LOCAL_COLUMNS))})",
                                    [[r.get(c) for c in LOCAL_COLUMNS] for r in rows])
        except sqlite3.Error as e:
            raise self._foreign(e) from e

    def _foreign(self, error: Exception) -> InputError:
        return InputError(f"--out {str(self.path)!r} is an SQLite database edgekit cannot use ({error}); "
                          "choose a new file name")

    def close(self) -> None:
        self.db.close()


class _TextStore:
    def __init__(self, path: Path):
        self.path = path
        _drop_partial_last_line(path)
        self.fh = open(path, "a", encoding="utf-8", newline="")

    def add(self, rows: list[dict]) -> None:
        self._write(rows)
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


class CsvStore(_TextStore):
    def __init__(self, path: Path):
        new = not path.exists() or path.stat().st_size == 0
        super().__init__(path)
        # a file from before the stats column keeps its header (and gets no stats)
        header = LOCAL_COLUMNS if new else _csv_header(path)
        self.writer = csv.DictWriter(self.fh, fieldnames=header, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def done(self, model_sha: str) -> set[str]:
        with open(self.path, encoding="utf-8", errors="replace", newline="") as fh:
            # csv raises on NUL bytes; a damaged line then only loses itself
            rows = csv.DictReader(line.replace("\0", "") for line in fh)
            return {r["input"] for r in rows if r.get("model_sha256") == model_sha and isinstance(r.get("input"), str)}

    def _write(self, rows: list[dict]) -> None:
        self.writer.writerows(rows)


class JsonlStore(_TextStore):
    def done(self, model_sha: str) -> set[str]:
        """Inputs already predicted. A line that is not one of our records (hand-edited, another
        tool's, bytes damaged) is skipped and reported in `unreadable`, not fatal: the run resumes
        and predicts that line's input again if it was ours."""
        done = set()
        self.unreadable = []
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as e:
                    self.unreadable.append((number, f"not JSON ({e})"))
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("input"), str):
                    self.unreadable.append((number, "not a prediction record (no 'input')"))
                elif record.get("model_sha256") == model_sha:
                    done.add(record["input"])
        return done

    def _write(self, rows: list[dict]) -> None:
        for r in rows:
            record = dict(r, top_k=json.loads(r["top_k"]) if r["top_k"] else None,
                          outputs=json.loads(r["outputs"]) if r["outputs"] else None,
                          stats=json.loads(r["stats"]) if r.get("stats") else None)
            self.fh.write(json.dumps(record) + "\n")


def _csv_header(path: Path) -> list[str]:
    with open(path, encoding="utf-8", errors="replace", newline="") as fh:
        first = next(csv.reader(line.replace("\0", "") for line in fh), None)
    return first if first and "input" in first else LOCAL_COLUMNS


def _drop_partial_last_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)
