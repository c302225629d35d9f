"""Batch prediction throughput: the local engine vs `--engine ray` with 1 and 2 actors, and store
write speed (rows/s) into PostgreSQL vs SQLite.

    python benchmarks/batch_bench.py [--inputs 6000] [--repeats 3] [--json out.json]

Inputs: the 150 validation PNGs hard-linked to --inputs distinct files. Every engine predicts the
same files with one interpreter thread per process, without a store (the stores are measured apart),
end to end: wall time from the call to the last row back on the driver, Ray's pipeline and actor
start included, `ray.init` (once, local, 2 CPUs) excluded. Each configuration runs --repeats times,
alternating; the table gives the median and the min-max spread (this machine is shared: noisy).
Targets (issue 19): Ray 2 actors >= 1.6x Ray 1 actor; Ray 1 actor >= 0.8x local (overhead <= 20 %).
PostgreSQL: a server of our own (initdb in a temp folder, fsync on, loopback), or --pg-url.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "sample_models" / "artifacts" / "digits_cnn_int8.tflite"
PG_BIN = Path(os.environ.get("EDGEKIT_PG_BIN", "/usr/lib/postgresql/15/bin"))


def replicate(folder: Path, n: int) -> Path:
    images = sorted((ROOT / "sample_models" / "validation").glob("*.png"))
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.link(images[i % len(images)], folder / f"{i:06d}_{images[i % len(images)].name}")
    return folder


class Clock:
    """End-to-end rate, and the steady rate: rows after the first result over the time after it
    (start-up excluded: Ray's actor processes, the interpreter load, the first block)."""

    def __init__(self):
        self.start, self.first, self.after_first = time.perf_counter(), None, 0

    def progress(self, n: int) -> None:
        if n <= 0:
            return
        if self.first is None:
            self.first = time.perf_counter()
        else:
            self.after_first += n

    def rates(self, total: int) -> tuple[float, float]:
        end = time.perf_counter()
        return total / (end - self.start), self.after_first / max(end - self.first, 1e-9)


def run_local(inputs: list[Path]) -> tuple[float, float]:
    import edgekit
    from edgekit.predict_job import run_predictions

    clock = Clock()
    summary = run_predictions(edgekit.load(ARTIFACT, threads=1), ARTIFACT, inputs, chunk_size=256,
                              on_progress=clock.progress)
    assert summary.predicted == len(inputs) and not summary.failures
    return clock.rates(len(inputs))


def run_ray(folder: Path, n: int, actors: int) -> tuple[float, float]:
    from edgekit.batch.ray_engine import run_ray_predictions
    from edgekit.batch.sources import resolve

    clock = Clock()
    summary = run_ray_predictions(ARTIFACT, resolve([str(folder)]), None, actors=actors, threads_per_actor=1,
                                  on_progress=clock.progress)
    assert summary.predicted == n and not summary.failures, summary.to_dict()
    return clock.rates(n)


def start_postgres(root: Path) -> tuple[str, callable]:
    """initdb + pg_ctl as `postgres` when root (initdb refuses root); returns (url, stop)."""
    data = root / "data"
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user = "postgres" if as_user else os.environ.get("USER", "postgres")
    subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", user], check=True,
                   capture_output=True)
    subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-o",
                    f"-c listen_addresses=127.0.0.1 -p {port} -k {root}", "start"], check=True, capture_output=True)

    def stop():
        subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    return f"postgresql://{user}@127.0.0.1:{port}/postgres", stop


def store_rate(out: str, rows: list[dict], chunk: int) -> float:
    from edgekit.stores import open_store

    store = open_store(out)
    start = time.perf_counter()
    for i in range(0, len(rows), chunk):
        store.add(rows[i:i + chunk])
    elapsed = time.perf_counter() - start
    store.close()
    return len(rows) / elapsed


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=20000, help="rows written per store")
    ap.add_argument("--chunk", type=int, default=256, help="rows per store transaction (the Ray engine's block)")
    ap.add_argument("--pg-url", help="an existing PostgreSQL (default: start one in a temp folder)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="edgekit-batch-bench-"))
    os.chmod(work, 0o755)
    results: dict = {"inputs": args.inputs, "repeats": args.repeats, "artifact": ARTIFACT.name,
                     "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0]}
    try:
        folder = replicate(work / "inputs", args.inputs)
        files = sorted(p.resolve() for p in folder.iterdir())
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        run_ray(folder, args.inputs, 1)  # warm: worker processes, imports, page cache
        runs: dict[str, list[tuple[float, float]]] = {"local (1 process)": [], "ray 1 actor": [], "ray 2 actors": []}
        for _ in range(args.repeats):
            runs["local (1 process)"].append(run_local(files))
            runs["ray 1 actor"].append(run_ray(folder, args.inputs, 1))
            runs["ray 2 actors"].append(run_ray(folder, args.inputs, 2))
        ray.shutdown()
        results["throughput_per_s"] = {k: spread([r[0] for r in v]) for k, v in runs.items()}
        results["steady_throughput_per_s"] = {k: spread([r[1] for r in v]) for k, v in runs.items()}
        for kind in ("throughput_per_s", "steady_throughput_per_s"):
            med = {k: v["median"] for k, v in results[kind].items()}
            results[f"{kind}_ray_2_vs_1_actor"] = med["ray 2 actors"] / med["ray 1 actor"]
            results[f"{kind}_ray_1_actor_vs_local"] = med["ray 1 actor"] / med["local (1 process)"]

        from edgekit.predict_job import prediction_row  # a real row shape, repeated with distinct inputs
        import edgekit

        row = prediction_row(edgekit.load(ARTIFACT), ARTIFACT.name, "0" * 64, "x", files[0], 5)
        rows = [dict(row, input=f"/data/{i:07d}.png") for i in range(args.rows)]
        stop = None
        pg_url = args.pg_url
        if pg_url is None and (PG_BIN / "initdb").exists():
            pg_root = work / "pg"
            pg_root.mkdir()
            pg_url, stop = start_postgres(pg_root)
        try:
            stores = {"sqlite (WAL)": str(work / "bench.sqlite")}
            if pg_url:
                stores["postgresql (upsert, loopback)"] = f"{pg_url}?table=bench_{os.getpid()}"
            results["store_rows_per_s"] = {name: store_rate(out, rows, args.chunk) for name, out in stores.items()}
        finally:
            if stop:
                stop()
        results["loadavg_end"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{args.inputs} inputs ({ARTIFACT.name}), {args.repeats} runs each, 1 interpreter thread per process; "
          f"load average {results['loadavg_start']:.1f} -> {results['loadavg_end']:.1f} on {results['cpus']} CPUs")
    print(f"{'engine':<20} {'end-to-end /s (min-max)':>26} {'steady /s (min-max)':>24}")
    for name, s in results["throughput_per_s"].items():
        t = results["steady_throughput_per_s"][name]
        print(f"{name:<20} {s['median']:>8.0f} ({s['min']:.0f}-{s['max']:.0f}){'':>6} {t['median']:>8.0f} "
              f"({t['min']:.0f}-{t['max']:.0f})")
    for kind, label in (("throughput_per_s", "end-to-end"), ("steady_throughput_per_s", "steady")):
        print(f"{label}: ray 2 actors / 1 actor {results[kind + '_ray_2_vs_1_actor']:.2f}x (target >= 1.6x); "
              f"ray 1 actor / local {results[kind + '_ray_1_actor_vs_local']:.2f} (target >= 0.80)")
    for name, rate in results["store_rows_per_s"].items():
        print(f"store {name:<32} {rate:>9.0f} rows/s ({args.rows} rows, {args.chunk} per transaction)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
