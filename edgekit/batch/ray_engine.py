"""`edgekit predict --engine ray`: a pool of Ray Data actors reads and predicts, the driver stores.

Each actor loads the artifact once (`edgekit.load`): the driver ships the file's bytes through the
object store, so workers need only edgekit's device install and Ray, not the artifact on their disk.
The driver writes every store, one block at a time: workers need no database credentials or network
path to it, and the same stores, summary and failure accounting serve both engines. A block whose
actor died is recomputed by Ray (actors restart, tasks retry); upserts on (input, model_sha256) and
the driver's own de-duplication keep that from ever writing a row twice.

Per input, the actor does what the local engine does (read the file, decode and preprocess inside
`prediction_row`, predict, drift statistics) and nothing else runs per input: no read tasks, no
bytes through the object store, no JSON. The driver hands out blocks of input names (one block per
actor call) and gets back one Arrow table per block (result_schema), turned into rows in one call.
"""
from __future__ import annotations

import functools
import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
import warnings
import weakref
from pathlib import Path
from typing import Callable

from .._deps import require
from ..errors import EdgekitError, InputError, first_line
from ..fileio import sha256_path
from ..predict_job import PredictSummary
from .sources import Source, key_prefix

# Rows per block (one actor call, one store transaction, one progress step) are sized by time: the
# driver times the first input (read, decode, predict) and aims at BLOCK_SECONDS of work, so Ray's
# fixed cost per block (~5-10 ms here: a task, an object put, metadata) stays a few per cent whatever
# the model, while every actor still gets at least 8 blocks (they finish together; progress moves).
BLOCK_SECONDS = 0.25
MAX_BLOCK_ROWS = 2048
BATCH_SIZE = 256  # when the first input cannot be timed (it fails to read or decode: the actors will report it)


@functools.cache
def result_schema():
    import pyarrow as pa

    # one fixed schema, so blocks never disagree on types (a block of failures has no scores);
    # model and model_sha256 are the same for every row: the driver adds them
    return pa.schema([("input", pa.string()), ("status", pa.string()), ("error", pa.string()),
                      ("label", pa.string()), ("score", pa.float64()), ("top_k", pa.string()),
                      ("outputs", pa.string()), ("latency_ms", pa.float64()), ("created_utc", pa.string()),
                      ("stats", pa.string())])


class PredictActor:
    """Lives in a Ray worker; Ray Data calls it on blocks of inputs (pyarrow tables: path, or bytes and id)."""

    def __init__(self, artifact: list | None, artifact_path: str, model_name: str, model_sha: str, top_k: int,
                 threads: int, prefix: str, done=None):
        import edgekit

        folder = None
        if artifact is not None:  # a single-file artifact shipped by the driver: [ObjectRef of its bytes]
            import ray

            artifact = ray.get(artifact[0])
            folder = tempfile.mkdtemp(prefix="edgekit-actor-")
            artifact_path = os.path.join(folder, model_name)
            with open(artifact_path, "wb") as fh:
                fh.write(artifact)
        from edgekit.monitor.model import watch

        try:
            # rows carry drift statistics (the manifest's reference_stats), as the local engine's do
            self.model = watch(edgekit.load(artifact_path, threads=threads), every=0)
        finally:
            if folder is not None:
                # the interpreter has mapped the copy: on POSIX the mapping outlives the name, so the folder
                # goes now (or the load failed) rather than at an exit a killed actor never reaches
                if os.name == "posix":
                    shutil.rmtree(folder, ignore_errors=True)
                else:
                    weakref.finalize(self, shutil.rmtree, folder, True)
        self.model_name, self.model_sha, self.top_k, self.prefix = model_name, model_sha, top_k, prefix
        self.done = done or frozenset()

    def __call__(self, batch):
        """A pyarrow batch of inputs in, a pyarrow table of results out (result_schema()): columns travel
        back as Arrow buffers, which the driver turns into rows in one call, no JSON per row."""
        import numpy as np
        import pyarrow as pa

        from edgekit.predict_job import prediction_row

        schema = result_schema()
        cols = {name: batch.column(name).to_pylist() for name in ("id", "path", "bytes") if name in batch.column_names}
        out = {name: [] for name in schema.names}
        data = cols.get("bytes")
        for i in range(batch.num_rows):
            key = self._key(cols, i)
            row = None
            if key in self.done:
                status, error = "skipped", None
            else:
                try:
                    raw = data[i] if data is not None else _read(key)  # the actor reads: no separate read tasks
                    x = np.load(io.BytesIO(raw), allow_pickle=False) if raw[:6] == b"\x93NUMPY" else raw
                    row = prediction_row(self.model, self.model_name, self.model_sha, key, x, self.top_k)
                    status, error = "ok", None
                except (EdgekitError, OSError, ValueError) as e:
                    status, error = "failed", first_line(str(e)) or type(e).__name__
            out["input"].append(key), out["status"].append(status), out["error"].append(error)
            for name in schema.names[3:]:
                out[name].append(row[name] if row is not None else None)
        return pa.Table.from_pydict(out, schema=schema)

    def _key(self, cols: dict, i: int) -> str:
        if "id" in cols:
            return str(cols["id"][i])
        if "path" in cols:
            path = str(cols["path"][i])
            return path if "://" in path or "bytes" not in cols else self.prefix + path
        return "sha256:" + hashlib.sha256(cols["bytes"][i]).hexdigest()


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
    _quiet_ray_data(ray)
    return ray


def _quiet_ray_data(ray) -> None:
    """No Ray Data progress bars or tuning hints: edgekit shows one bar, as the local engine does.
    Called wherever a pipeline runs (this process, or the cluster-side driver of a Ray Client job)."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    warnings.filterwarnings("ignore", module=r"ray\.")  # tuning hints meant for Ray developers, not our users
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # "progress bars disabled" etc.


def run_ray_predictions(artifact: Path, source: Source, store=None, top_k: int = 5, actors: int | None = None,
                        threads_per_actor: int = 1, address: str | None = None, batch_size: int | None = None,
                        on_total: Callable[[int], None] = lambda n: None,
                        on_progress: Callable[[int], None] = lambda n: None) -> PredictSummary:
    ray = connect(address)
    model_sha = sha256_path(artifact)
    summary = PredictSummary()
    done = store.done(model_sha) if store is not None else set()
    if actors is None:
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // threads_per_actor))
    inputs = _inputs(source, done, summary)
    total = inputs.num_rows if inputs is not None else 0
    on_total(total + summary.skipped_done)
    on_progress(summary.skipped_done)
    if not total:  # everything was already predicted: no actor need start
        return summary
    if batch_size is None:
        batch_size = _rows_per_block(artifact, inputs, threads_per_actor, total, actors)
    # the bytes travel as an object reference the actor resolves: an actor restarted after a crash
    # gets them again from the driver's object store
    kwargs = dict(artifact=[ray.put(artifact.read_bytes())] if artifact.is_file() else None,
                  artifact_path=str(artifact.resolve()), model_name=artifact.name, model_sha=model_sha, top_k=top_k,
                  threads=threads_per_actor, prefix=key_prefix(source.protocol),
                  done=frozenset(done) if source.table else None)  # file lists were filtered here already
    job = (inputs, batch_size, actors, threads_per_actor, kwargs)
    seen: set[str] = set()
    start = time.perf_counter()
    try:
        for block in (_blocks_via_cluster(ray, job) if _is_client(ray) else _predicted_blocks(*job)):
            rows = []
            for r in block.to_pylist():  # one C call per block: the columns become row dicts
                key = r["input"]
                if key in seen:  # a duplicate input row in a table, or a block Ray recomputed
                    continue
                seen.add(key)
                status, error = r.pop("status"), r.pop("error")
                if status == "ok":
                    r["model_sha256"], r["model"] = model_sha, artifact.name
                    rows.append(r)
                elif status == "skipped":
                    summary.skipped_done += 1
                else:
                    summary.failures.append((key, error))
            summary.record(rows, store)
            on_progress(block.num_rows)
    except ray.exceptions.RayError as e:
        raise EdgekitError(f"--engine ray: the job failed on the cluster ({first_line(str(e))}); "
                           "every worker needs edgekit and the same ray version installed; re-run to resume") from e
    summary.wall_s = time.perf_counter() - start
    return summary


def _rows_per_block(artifact: Path, inputs, threads: int, total: int, actors: int) -> int:
    seconds = _seconds_per_input(artifact, inputs, threads)
    rows = BATCH_SIZE if seconds is None else int(BLOCK_SECONDS / max(seconds, 1e-6))
    # >= 8 blocks per actor: with two blocks in flight per actor, the last ones can leave one actor
    # idle while another still has one queued; small blocks keep that tail short
    return max(1, min(rows, MAX_BLOCK_ROWS, -(-total // (8 * actors))))


def _seconds_per_input(artifact: Path, inputs, threads: int) -> float | None:
    """What one input costs an actor, measured on the driver (which loaded the model anyway): the
    first input's decode, prediction and row (drift statistics included), best of a few runs, at the
    actors' thread count."""
    import numpy as np

    import edgekit

    from ..monitor.model import watch
    from ..native_output import quiet_native
    from ..predict_job import prediction_row

    try:
        raw = inputs.column("bytes")[0].as_py() if "bytes" in inputs.column_names else _read(inputs.column("path")[0].as_py())
        x = np.load(io.BytesIO(raw), allow_pickle=False) if raw[:6] == b"\x93NUMPY" else raw
        with quiet_native():
            model = watch(edgekit.load(artifact, threads=threads), every=0)
        prediction_row(model, artifact.name, "", "", x, 5)  # the first call allocates: not timed
        best, spent = float("inf"), 0.0
        while spent < 0.05 or best == float("inf"):  # a few runs of a fast model, one more of a slow one
            t0 = time.perf_counter()
            prediction_row(model, artifact.name, "", "", x, 5)
            took = time.perf_counter() - t0
            best, spent = min(best, took), spent + took
        return best
    except Exception:  # noqa: BLE001 - only a size hint: the actors report any real problem with input or model
        return None


def _predicted_blocks(inputs, batch_size: int, actors: int, threads_per_actor: int, actor_kwargs: dict):
    """The Ray Data pipeline: blocks of input names in, one Arrow table of results per block out."""
    import ray

    _quiet_ray_data(ray)
    # from_blocks, not from_arrow: from_arrow computes each block's metadata in a Ray task, which on a
    # fresh pool waits for a worker process to start and import ray.data (1-1.5 s here) before the
    # actors are even asked for; from_blocks reads the metadata of the driver's tables in place
    ds = ray.data.from_blocks(_slices(inputs, batch_size))
    ds = ds.map_batches(PredictActor, fn_constructor_kwargs=actor_kwargs, batch_size=batch_size,
                        batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
                        num_cpus=threads_per_actor)
    yield from ds.iter_batches(batch_size=None, batch_format="pyarrow")


def _is_client(ray) -> bool:
    """Joined through Ray Client (`ray://`): this process has no core worker of its own."""
    return ray.util.client.ray.is_connected()


class ClusterDriver:
    """Runs the Ray Data pipeline inside the cluster for a Ray Client (`ray://`) job. Ray Data's
    executor needs a core worker in its own process (2.60 fails with "'Worker' object has no
    attribute 'core_worker'" from a client), so the client starts this actor (no CPU reserved: it
    only schedules) and pulls the result blocks one call at a time; stores stay on the client."""

    def __init__(self, job: tuple):
        self.blocks = _predicted_blocks(*job)

    def next_block(self):
        return next(self.blocks, None)


def _blocks_via_cluster(ray, job: tuple):
    driver = ray.remote(num_cpus=0, max_restarts=0)(ClusterDriver).remote(job)
    try:
        pending = driver.next_block.remote()
        while True:
            block = ray.get(pending)
            if block is None:
                return
            pending = driver.next_block.remote()  # the next block is fetched while this one is stored
            yield block
    finally:
        ray.kill(driver)


def _inputs(source: Source, done: set[str], summary: PredictSummary):
    """A pyarrow table of the inputs to predict (columns id, path, bytes), or None when none is left."""
    if source.table is None:
        todo = [f for f in source.files if key_prefix(source.protocol) + f not in done]
        summary.skipped_done = len(source.files) - len(todo)
        if not todo:
            return None
        # The actors read the files themselves (local paths, or fsspec URLs by their key): Ray's
        # read_binary_files ran read tasks in processes of their own that, with Arrow blocks of image
        # bytes shipped through the object store, took CPU from the actors on a small machine.
        import pyarrow as pa

        return pa.table({"path": [key_prefix(source.protocol) + f for f in todo]})
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
    return table


def _slices(table, rows: int) -> list:
    """Blocks of one actor call each: Ray hands an actor whole blocks, so a block is never split
    across calls or bundled with another (no copies), and progress arrives block by block."""
    return [table.slice(i, rows) for i in range(0, table.num_rows, rows)] or [table]
