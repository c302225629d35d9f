"""Where `edgekit predict` puts results: SQLite, CSV or JSON Lines, chosen by suffix.

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

from .errors import InputError

COLUMNS = ["input", "model_sha256", "model", "label", "score", "top_k", "outputs", "latency_ms", "created_utc"]


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
        except sqlite3.DatabaseError as e:
            raise InputError(f"--out expects an SQLite database, {str(path)!r} is not one ({e}); "
                             "choose a new file name") from e

    def done(self, model_sha: str) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT input FROM predictions WHERE model_sha256 = ?", (model_sha,))}

    def add(self, rows: list[dict]) -> None:
        with self.db:  # one transaction per chunk: all of it or none of it
            self.db.executemany(f"INSERT OR REPLACE INTO predictions ({', '.join(COLUMNS)}) "
                                f"VALUES ({', '.join('?' * len(COLUMNS))})", [[r[c] for c in COLUMNS] for r in rows])

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
        self.writer = csv.DictWriter(self.fh, fieldnames=COLUMNS)
        if new:
            self.writer.writeheader()

    def done(self, model_sha: str) -> set[str]:
        with open(self.path, encoding="utf-8", newline="") as fh:
            return {r["input"] for r in csv.DictReader(fh) if r.get("model_sha256") == model_sha}

    def _write(self, rows: list[dict]) -> None:
        self.writer.writerows(rows)


class JsonlStore(_TextStore):
    def done(self, model_sha: str) -> set[str]:
        with open(self.path, encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh if line.strip()]
        return {r["input"] for r in rows if r.get("model_sha256") == model_sha}

    def _write(self, rows: list[dict]) -> None:
        for r in rows:
            record = dict(r, top_k=json.loads(r["top_k"]) if r["top_k"] else None,
                          outputs=json.loads(r["outputs"]) if r["outputs"] else None)
            self.fh.write(json.dumps(record) + "\n")


def _drop_partial_last_line(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    data = path.read_bytes()
    if not data.endswith(b"\n"):
        with open(path, "r+b") as fh:
            fh.truncate(data.rfind(b"\n") + 1)


def open_store(path: Path):
    suffix = path.suffix.lower()
    stores = {".sqlite": SqliteStore, ".db": SqliteStore, ".sqlite3": SqliteStore, ".csv": CsvStore,
              ".jsonl": JsonlStore}
    if suffix not in stores:
        raise InputError(f"--out expects a .sqlite, .db, .csv or .jsonl file, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return stores[suffix](path)
