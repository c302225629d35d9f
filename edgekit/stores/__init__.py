"""Where `edgekit predict` puts results, chosen from `--out`.

Every store is resumable and durable per chunk: `done(model_sha)` lists the inputs this model (by
sha256) already predicted, `add(rows)` makes a chunk durable before returning, `close()` finishes.

- `.sqlite`/`.db`/`.sqlite3`, `.csv`, `.jsonl`: local files (local.py)
- `.parquet`, or a folder given with a trailing `/`: Parquet for analytics (parquet.py, needs pyarrow)
- `postgresql://user@host:port/db?table=preds`: a shared database that many runs and machines can
  write at once without duplicates (postgres.py, needs psycopg)
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .columns import COLUMNS
from .local import CsvStore, JsonlStore, SqliteStore

__all__ = ["COLUMNS", "open_store", "redact", "SqliteStore", "CsvStore", "JsonlStore"]

_FILE_STORES = {".sqlite": SqliteStore, ".db": SqliteStore, ".sqlite3": SqliteStore, ".csv": CsvStore,
                ".jsonl": JsonlStore}
_EXPECTED = ("--out expects a .sqlite, .db, .csv, .jsonl or .parquet file, a folder ending in '/' "
             "(Parquet part files) or a postgresql:// URL")


def open_store(out: str | Path):
    text = str(out)
    if "://" in text:
        scheme = text.split("://", 1)[0].lower()
        if scheme in ("postgresql", "postgres"):
            from .postgres import PostgresStore

            return PostgresStore(text)
        raise InputError(f"{_EXPECTED}, got a {scheme}:// URL")
    path = Path(text)
    suffix = path.suffix.lower()
    folder = text.endswith(("/", os.sep)) or (path.is_dir() and suffix not in _FILE_STORES and suffix != ".parquet")
    if not folder and suffix not in _FILE_STORES and suffix != ".parquet":
        raise InputError(f"{_EXPECTED}, got {path.name!r}")
    if not folder and path.is_dir():
        raise InputError(f"--out expects a file, {text!r} is a folder; give a file name inside it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if folder or suffix == ".parquet":
            from .parquet import ParquetStore

            return ParquetStore(path, folder=folder)
        return _FILE_STORES[suffix](path)
    except OSError as e:
        raise InputError(f"--out {text!r} cannot be opened for writing ({e.strerror or e}); "
                         "choose a writable location") from e


def redact(out: str | Path) -> str:
    """`--out` for messages: a database URL without its password."""
    text = str(out)
    if "://" not in text or "@" not in text.split("://", 1)[1].split("/", 1)[0]:
        return text
    scheme, rest = text.split("://", 1)
    userinfo, host = rest.split("@", 1)
    return f"{scheme}://{userinfo.split(':', 1)[0]}{':***' if ':' in userinfo else ''}@{host}"
