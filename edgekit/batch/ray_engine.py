"""`edgekit predict --engine ray`: Ray Data reads the inputs, a pool of actors predicts, the driver stores.

Each actor loads the artifact once (`edgekit.load`): the driver ships the file's bytes through the
object store, so workers need only edgekit's device install and Ray, not the artifact on their disk.
The driver writes every store, one block at a time: workers need no database credentials or network
path to it, and the same stores, summary and failure accounting serve both engines. A block whose
actor died is recomputed by Ray (actors restart, tasks retry); upserts on (input, model_sha256) and
the driver's own de-duplication keep that from ever writing a row twice.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

from .._deps import require
from ..errors import EdgekitError, InputError, first_line
from ..fileio import sha256_path
from ..predict_job import PredictSummary
from .sources import Source, key_prefix

BATCH_SIZE = 256  # rows per actor call: amortises Ray's per-block cost (~ms) over ~0.1 ms predictions


class PredictActor:
    """Lives in a Ray worker; Ray Data calls it on batches (dicts of numpy columns)."""

    def __init__(self, artifact: list | None, artifact_path: str, model_name: str, model_sha: str, top_k: int,
                 threads: int, prefix: str, done=None):
        import edgekit

        if artifact is not None:  # a single-file artifact shipped by the driver: [ObjectRef of its bytes]
            import ray

            artifact = ray.get(artifact[0])
            folder = tempfile.mkdtemp(prefix="edgekit-actor-")
            artifact_path = os.path.join(folder, model_name)
            with open(artifact_path, "wb") as fh:
                fh.write(artifact)
        self.model = edgekit.load(artifact_path, threads=threads)
        self.model_name, self.model_sha, self.top_k, self.prefix = model_name, model_sha, top_k, prefix
        self.done = done or frozenset()

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from edgekit.predict_job import prediction_row

        out = {"input": [], "status": [], "payload": []}  # all strings: blocks never disagree on types
        data = batch.get("bytes")
        for i in range(len(next(iter(batch.values())))):
            key = self._key(batch, i)
            if key in self.done:
                out["input"].append(key), out["status"].append("skipped"), out["payload"].append("")
                continue
            try:
                raw = bytes(data[i]) if data is not None else _read(key)
                x = np.load(io.BytesIO(raw), allow_pickle=False) if raw[:6] == b"\x93NUMPY" else raw
                row = prediction_row(self.model, self.model_name, self.model_sha, key, x, self.top_k)
                status, payload = "ok", json.dumps(row)
            except (EdgekitError, OSError, ValueError) as e:
                status, payload = "failed", first_line(str(e)) or type(e).__name__
            out["input"].append(key), out["status"].append(status), out["payload"].append(payload)
        return out

    def _key(self, batch: dict, i: int) -> str:
        if "id" in batch:
            return str(batch["id"][i])
        if "path" in batch:
            path = str(batch["path"][i])
            return path if "://" in path or "bytes" not in batch else self.prefix + path
        return "sha256:" + hashlib.sha256(bytes(batch["bytes"][i])).hexdigest()


def _read(key: str) -> bytes:
    if "://" in key:
        import fsspec

        with fsspec.open(key, "rb") as fh:
            return fh.read()
    with open(key, "rb") as fh:
        return fh.read()


def connect(address: str | None):
    """Join the cluster at `address` (`auto`, `ray://host:10001`), or start a local Ray; reuse one
    already initialised in this process (tests, notebooks)."""
    ray = require("ray", "--engine ray")
    require("ray.data", "--engine ray")
    if not ray.is_initialized():
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                     configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address!r}" if address else "a local Ray instance"
            raise InputError(f"--engine ray could not join {where} ({first_line(str(e))}); "
                             "check --address (auto, ray://HOST:10001) and that `ray status` works there") from e
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # edgekit shows one bar, as the local engine does
    ctx.print_on_execution_start = False
    warnings.filterwarnings("ignore", module=r"ray\.")  # tuning hints meant for Ray developers, not our users
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # "progress bars disabled" etc.
    return ray


def run_ray_predictions(artifact: Path, source: Source, store=None, top_k: int = 5, actors: int | None = None,
                        threads_per_actor: int = 1, address: str | None = None, batch_size: int = BATCH_SIZE,
                        on_total: Callable[[int], None] = lambda n: None,
                        on_progress: Callable[[int], None] = lambda n: None) -> PredictSummary:
    ray = connect(address)
    model_sha = sha256_path(artifact)
    summary = PredictSummary()
    done = store.done(model_sha) if store is not None else set()
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // threads_per_actor))
    ds, total = _dataset(ray, source, done, summary, actors, batch_size)
    on_total(total + summary.skipped_done)
    on_progress(summary.skipped_done)
    # a short job still gives every actor work: at least two batches per actor
    batch_size = max(1, min(batch_size, -(-total // (2 * actors)))) if total else batch_size
    single_file = artifact.is_file()
    # the bytes travel as an object reference the actor resolves: an actor restarted after a crash
    # gets them again from the driver's object store
    kwargs = dict(artifact=[ray.put(artifact.read_bytes())] if single_file else None, artifact_path=str(artifact.resolve()),
                  model_name=artifact.name, model_sha=model_sha, top_k=top_k, threads=threads_per_actor,
                  prefix=key_prefix(source.protocol),
                  done=frozenset(done) if source.table else None)  # file lists were filtered here already
    ds = ds.map_batches(PredictActor, fn_constructor_kwargs=kwargs, batch_size=batch_size, batch_format="numpy",
                        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=threads_per_actor)
    seen: set[str] = set()
    start = time.perf_counter()
    try:
        for block in ds.iter_batches(batch_size=None, batch_format="numpy"):
            rows = []
            for key, status, payload in zip(block["input"], block["status"], block["payload"]):
                key = str(key)
                if key in seen:  # a duplicate input row in a table, or a block Ray recomputed
                    continue
                seen.add(key)
                if status == "ok":
                    rows.append(json.loads(payload))
                elif status == "skipped":
                    summary.skipped_done += 1
                else:
                    summary.failures.append((key, str(payload)))
            summary.predicted += len(rows)
            summary.latencies_ms.extend(r["latency_ms"] for r in rows)
            if store is not None:
                store.add(rows)
            else:
                summary.rows.extend(rows)
            on_progress(len(block["input"]))
    except ray.exceptions.RayError as e:
        raise EdgekitError(f"--engine ray: the job failed on the cluster ({first_line(str(e))}); "
                           "every worker needs edgekit and the same ray version installed; re-run to resume") from e
    summary.wall_s = time.perf_counter() - start
    return summary


def _dataset(ray, source: Source, done: set[str], summary: PredictSummary, actors: int, batch_size: int):
    """(Ray dataset of the inputs to predict, their number)."""
    if source.table is None:
        todo = [f for f in source.files if key_prefix(source.protocol) + f not in done]
        summary.skipped_done = len(source.files) - len(todo)
        if not todo:
            return ray.data.from_items([]), 0
        fs = None
        if source.filesystem is not None:
            import pyarrow.fs

            fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(source.filesystem))
        # reading small files is I/O, not compute: it reserves no CPU, or on a small machine the
        # actors would hold every CPU and the reads would wait forever. Zero-CPU tasks are not limited
        # by CPUs either, so their concurrency is: unbounded, Ray started a process per read task
        # (dozens on 2 cores, 40 s before the first prediction); one reader per two actors.
        ds = ray.data.read_binary_files(todo, include_paths=True, filesystem=fs, num_cpus=0,
                                        concurrency=max(1, actors // 2),
                                        override_num_blocks=min(len(todo), max(2 * actors, -(-len(todo) // batch_size))))
        return ds, len(todo)
    # The driver reads the table (only the id/path/bytes columns) and hands Ray its slices: Ray's own
    # Parquet reader starts with a file-listing task that wants a whole CPU, which a pool of actors
    # holding every CPU of a small cluster never frees (a hang, seen on 2 CPUs with 2 actors).
    import pyarrow.dataset as pads

    fmt = "parquet" if source.table_format == "parquet" else "csv"
    try:
        where, fs = source.table, None
        if "://" in where:  # any fsspec URL, through pyarrow's fsspec bridge
            import pyarrow.fs

            fsspec_fs, where = require("fsspec", "URL inputs").core.url_to_fs(where)
            fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fsspec_fs))
        table_ds = pads.dataset(where, format=fmt, filesystem=fs)
        columns = set(table_ds.schema.names)
        if not {"path", "bytes"} & columns:
            raise InputError(f"INPUT table {source.table!r} expects a 'path' or a 'bytes' column, "
                             f"got {', '.join(sorted(columns))}")
        table = table_ds.to_table(columns=[c for c in ("id", "path", "bytes") if c in columns])
    except (OSError, ValueError) as e:  # pyarrow's errors derive from these
        raise InputError(f"INPUT table {source.table!r} cannot be read as {fmt} ({first_line(str(e))})") from e
    if "id" in columns:  # keys are strings whatever type the id column has
        table = table.set_column(table.schema.get_field_index("id"), "id", table.column("id").cast("string"))
    step = max(1, -(-table.num_rows // (2 * actors)))
    slices = [table.slice(i, step) for i in range(0, table.num_rows, step)] or [table]
    return ray.data.from_arrow(slices), table.num_rows
