"""PostgreSQL store: `--out postgresql://user[:password]@host[:port]/db?table=preds`.

psycopg 3 directly rather than SQLAlchemy: the store is two statements (create, upsert) in one
dialect; SQLite keeps its own tested store; psycopg[binary] is one wheel with libpq inside (aarch64
too), where SQLAlchemy would add an ORM layer and greenlet for nothing we use. psycopg 3 runs
`executemany` in pipeline mode, so a chunk costs about one round trip, not one per row.

Many runs (or machines) may write one table at once: rows are upserted on the primary key
(input, model_sha256), so a re-run or a retried batch never duplicates a row.
"""
from __future__ import annotations

import re
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._deps import require
from ..errors import InputError, first_line
from .columns import COLUMNS

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")
_TYPES = {"input": "text NOT NULL", "model_sha256": "text NOT NULL", "model": "text", "label": "text",
          "score": "double precision", "top_k": "jsonb", "outputs": "jsonb", "latency_ms": "double precision",
          "created_utc": "timestamptz"}


def parse_url(url: str) -> tuple[str, str]:
    """(libpq connection URL without edgekit's own `table` parameter, table name)."""
    from . import redact

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    table = next((v for k, v in query if k == "table"), "predictions")
    if not _TABLE.match(table):
        raise InputError(f"--out {redact(url)!r}: table expects a name of letters, digits and '_' "
                         f"(optionally schema.table), got {table!r}")
    if not parts.hostname and "host=" not in parts.query:
        raise InputError(f"--out {redact(url)!r} names no host; expected postgresql://user@host:port/db?table=preds")
    try:
        parts.port  # a non-numeric port raises here, not deep in libpq
    except ValueError as e:
        raise InputError(f"--out {redact(url)!r} has a bad port ({e}); expected postgresql://user@host:5432/db") from e
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode([(k, v) for k, v in query if k != "table"]),
                           ""))
    return conninfo, table


class PostgresStore:
    def __init__(self, url: str):
        from . import redact

        self.psycopg = require("psycopg", "--out postgresql://")
        from psycopg import sql

        self.where = redact(url)
        conninfo, table = parse_url(url)
        self.table = sql.Identifier(*table.split("."))
        try:
            self.db = self.psycopg.connect(conninfo, connect_timeout=10, application_name="edgekit predict")
        except self.psycopg.Error as e:
            raise InputError(f"--out {self.where!r} cannot be reached ({first_line(str(e))}); "
                             "check host, port, user, password and database") from e
        cols = sql.SQL(", ").join(sql.SQL(f"{c} {_TYPES[c]}") for c in COLUMNS)
        names = sql.SQL(", ").join(map(sql.Identifier, COLUMNS))
        updates = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c)) for c in COLUMNS[2:])
        self.upsert = sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (input, model_sha256) DO UPDATE SET {}").format(
            self.table, names, sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)), updates)
        try:
            with self.db.transaction():
                # CREATE TABLE IF NOT EXISTS races with itself (two workers starting together both see no
                # table, one fails on pg_type's unique index): serialize creation on an advisory lock.
                self.db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (table,))
                self.db.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY (input, model_sha256))")
                                .format(self.table, cols))
            with self.db.transaction():
                have = {d.name for d in self.db.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(self.table)).description}
        except self.psycopg.Error as e:
            self.db.close()
            raise InputError(f"--out {self.where!r}: cannot create or read table {table!r} "
                             f"({first_line(str(e))}); check the user's privileges or choose another ?table=") from e
        missing = [c for c in COLUMNS if c not in have]
        if missing:
            self.db.close()
            raise InputError(f"--out {self.where!r}: table {table!r} exists without edgekit's columns "
                             f"({', '.join(missing)}); choose another ?table=")

    def done(self, model_sha: str) -> set[str]:
        from psycopg import sql

        try:
            with self.db.transaction():
                return {r[0] for r in self.db.execute(
                    sql.SQL("SELECT input FROM {} WHERE model_sha256 = %s").format(self.table), (model_sha,))}
        except self.psycopg.Error as e:
            raise InputError(f"--out {self.where!r}: cannot read predictions ({first_line(str(e))})") from e

    def add(self, rows: list[dict]) -> None:
        # Sorted by key: two runs upserting overlapping chunks then take row locks in the same order and
        # cannot deadlock; de-duplicated because one statement batch may not update a row twice.
        unique = {(r["input"], r["model_sha256"]): r for r in rows}
        params = [[unique[k][c] for c in COLUMNS] for k in sorted(unique)]
        for attempt in range(5):
            try:
                with self.db.transaction(), self.db.cursor() as cur:  # one transaction per chunk
                    cur.executemany(self.upsert, params)
                return
            except (self.psycopg.errors.DeadlockDetected, self.psycopg.errors.SerializationFailure):
                time.sleep(0.05 * (attempt + 1))  # another writer holds the rows: retry the chunk
            except self.psycopg.Error as e:
                raise InputError(f"--out {self.where!r}: cannot write predictions ({first_line(str(e))})") from e
        raise InputError(f"--out {self.where!r}: writes kept conflicting with another run; re-run to resume")

    def close(self) -> None:
        self.db.close()
