"""What `edgekit predict --engine ray` reads: files (local or fsspec URLs) or a table of inputs.

- files, folders, globs: local ones as the local engine expands them (so both engines name an input
  alike and share resume state in one store); URLs (`s3://bucket/imgs/`, `file:///data/*.png`) through
  fsspec. The driver lists them and drops those already predicted before any worker reads a byte.
- one `.parquet` or `.csv` table (local or URL) with a `path` column (files to read) or a `bytes`
  column (encoded images/.npy; named by an `id` column if there is one, else by content sha256).
  Inputs already predicted are dropped by the workers, since only they see the rows.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass, field

from .._deps import require
from ..errors import InputError
from ..predict_job import INPUT_SUFFIXES, expand_inputs

TABLE_SUFFIXES = (".parquet", ".csv")
PROCESS_LOCAL = {"memory"}  # fsspec filesystems whose files exist only in the process that made them


@dataclass
class Source:
    files: list[str] = field(default_factory=list)  # input keys: absolute paths or URLs
    protocol: str = ""                                # fsspec protocol of URL files ("" = local)
    filesystem: object = None                         # fsspec filesystem for URL files
    table: str | None = None                          # a .parquet/.csv of inputs
    table_format: str = ""


def resolve(items: list[str]) -> Source:
    if len(items) == 1 and items[0].lower().endswith(TABLE_SUFFIXES) and not glob.has_magic(items[0]):
        return _table(items[0])
    urls = [i for i in items if "://" in i]
    if not urls:
        return Source(files=expand_inputs(items))
    if len(urls) != len(items):
        raise InputError("INPUT expects either local paths or URLs, got both; run them as two jobs into one --out")
    fsspec = require("fsspec", "URL inputs")
    protocols = {u.split("://", 1)[0] for u in urls}
    if len(protocols) > 1:
        raise InputError(f"INPUT URLs expect one protocol per job, got {', '.join(sorted(protocols))}")
    if protocols & PROCESS_LOCAL:
        raise InputError(f"INPUT {urls[0]!r}: a {protocols.pop()}:// filesystem lives inside one process, which the "
                         "Ray workers cannot read; use file:// paths they share or an object store (s3://, gs://)")
    try:
        fs = fsspec.filesystem(protocols.pop())
    except (ImportError, ValueError) as e:
        raise InputError(f"INPUT {urls[0]!r}: fsspec cannot open this protocol ({e})") from e
    found: list[str] = []
    for url in urls:
        path = fs._strip_protocol(url)
        if glob.has_magic(path):
            matches = fs.glob(path)
        elif fs.isdir(path):
            matches = [p for p in fs.find(path) if "." + p.rsplit(".", 1)[-1].lower() in INPUT_SUFFIXES]
        elif fs.exists(path):
            matches = [path]
        else:
            raise InputError(f"INPUT {url!r} does not exist")
        if not matches:
            raise InputError(f"INPUT {url!r} matches no image or .npy files")
        found.extend(matches)
    unique = sorted(dict.fromkeys(found))
    return Source(files=unique, protocol=fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0],
                  filesystem=fs)


def _table(path: str) -> Source:
    if "://" not in path:
        from pathlib import Path

        if not Path(path).is_file():
            raise InputError(f"INPUT table {path!r} does not exist")
        path = str(Path(path).resolve())
    return Source(table=path, table_format=path.lower().rsplit(".", 1)[-1])


def key_prefix(protocol: str) -> str:
    """Ray reports URL files without their protocol; the input key puts it back."""
    return f"{protocol}://" if protocol else ""
