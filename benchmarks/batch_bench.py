"""Batch prediction throughput: the local engine vs `--engine ray` with 1 and 2 actors, Ray with 2
actors writing into PostgreSQL, and store write speed (rows/s) into PostgreSQL vs SQLite.

    python benchmarks/batch_bench.py [--model digits|mobilenetv2] [--inputs N [N ...]] [--repeats 3] [--json out.json]

Models: `digits` is the committed sample `digits_cnn_int8.tflite` (32x32, ~0.3 ms per input: the
engines' own per-input costs dominate); `mobilenetv2` is Keras' MobileNetV2 (alpha 0.35, 128x128,
1000 classes, random weights) converted once with `edgekit convert -q int8` (float softmax and output:
random weights give probabilities below an int8 step) and a random calibration
.npz into benchmarks/.cache/ (needs TensorFlow the first time; milliseconds per input: compute dominates).
Inputs: the 150 validation PNGs (digits) or those digits as 224x224 RGB JPEGs (mobilenetv2, resized to
128x128 on load by the manifest's preprocessing), hard-linked to N distinct files per job size.
Job sizes: by default a short job (a few seconds on this 2-CPU machine) and a long one (~30 s for the
local engine), as a periodic batch job is: Ray's fixed costs (starting the actor processes, importing
Ray Data there, loading the model) weigh on the first and are amortised by the second.
Every engine predicts the same files with one interpreter thread per process, end to end: wall time
from listing the inputs (as the CLI does) to the last row back on the driver; the model load (local)
and Ray's pipeline and actor start are included, `ray.init` (once, local, 2 CPUs) is excluded. No store
except in "ray 2 actors -> postgresql" (a fresh table per run, upserts on the driver). Each
configuration runs --repeats times, alternating; the table gives the median and the min-max spread,
and the 1-minute load average sampled during the runs.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTIFACT = ROOT / "sample_models" / "artifacts" / "digits_cnn_int8.tflite"
CACHE = ROOT / "benchmarks" / ".cache" / "batch_bench"
PG_BIN = Path(os.environ.get("EDGEKIT_PG_BIN", "/usr/lib/postgresql/15/bin"))
DEFAULT_INPUTS = {"digits": [12000, 100000], "mobilenetv2": [3000, 18000]}  # short job, ~30 s job


def mobilenetv2_artifact() -> Path:
    """MobileNetV2 0.35/128 int8, built and converted once (TensorFlow, in a subprocess) into CACHE."""
    out = CACHE / "mobilenetv2_035_128"
    artifact = out / "mobilenetv2_035_128_int8.tflite"
    if artifact.exists():
        return artifact
    out.mkdir(parents=True, exist_ok=True)
    build = f"""
import numpy as np, keras
keras.utils.set_random_seed(0)
m = keras.applications.MobileNetV2(input_shape=(128, 128, 3), alpha=0.35, weights=None, classes=1000)
m.save({str(out / 'mobilenetv2_035_128.keras')!r})
np.savez({str(out / 'calibration.npz')!r}, np.random.default_rng(0).uniform(-1, 1, (64, 128, 128, 3)).astype('float32'))
"""
    subprocess.run([sys.executable, "-c", build], check=True)
    subprocess.run([sys.executable, "-m", "edgekit.cli", "convert", str(out / "mobilenetv2_035_128.keras"), "-q", "int8",
                    "--calibration", str(out / "calibration.npz"), "--mean", "127.5", "--std", "127.5",
                    "--io-out", "float", "--keep-float", "SOFTMAX", "--no-explain", "--no-gate", "--force",
                    "-o", str(out)], check=True)
    if not artifact.exists():
        sys.exit(f"expected {artifact} from edgekit convert, got {sorted(p.name for p in out.iterdir())}")
    return artifact


def source_images(model: str) -> list[Path]:
    images = sorted((ROOT / "sample_models" / "validation").glob("*.png"))
    if model == "digits":
        return images
    from PIL import Image

    folder = CACHE / "rgb224"
    if not folder.exists():
        tmp = folder.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for img in images:
            Image.open(img).convert("RGB").resize((224, 224), Image.BILINEAR).save(tmp / f"{img.stem}.jpg", quality=90)
        tmp.rename(folder)
    return sorted(folder.glob("*.jpg"))


def replicate(folder: Path, n: int, images: list[Path]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        os.link(images[i % len(images)], folder / f"{i:06d}_{images[i % len(images)].name}")
    return folder


class LoadSampler:
    """The 1-minute load average every 2 s while the engines run (this machine may be shared)."""

    def __init__(self):
        self.values, self._stop = [os.getloadavg()[0]], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(2):
            self.values.append(os.getloadavg()[0])

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"min": min(self.values), "mean": statistics.mean(self.values), "max": max(self.values)}


class Clock:
    """End-to-end rate, and the steady rate: the last 75 % of the rows over the time they took to
    arrive. That leaves out start-up (Ray's actor processes, the interpreter load) and the first
    blocks, which can reach the driver together in a burst after being buffered."""

    def __init__(self):
        self.start, self.arrivals = time.perf_counter(), []

    def progress(self, n: int) -> None:
        if n > 0:
            self.arrivals.append((time.perf_counter(), n))

    def rates(self, total: int) -> tuple[float, float]:
        end, seen = time.perf_counter(), 0
        if len(self.arrivals) < 8:  # too few blocks for a rate between arrivals
            return total / (end - self.start), float("nan")
        for when, n in self.arrivals:
            seen += n
            if seen >= total / 4:
                break
        return total / (end - self.start), (total - seen) / max(end - when, 1e-9)


def run_local(folder: Path, n: int) -> tuple[float, float]:
    import edgekit
    from edgekit.predict_job import expand_inputs, run_predictions

    clock = Clock()
    summary = run_predictions(edgekit.load(ARTIFACT, threads=1), ARTIFACT, expand_inputs([str(folder)]),
                              chunk_size=256, on_progress=clock.progress)
    assert summary.predicted == n and not summary.failures
    return clock.rates(n)


def run_ray(folder: Path, n: int, actors: int, store_url: str | None = None) -> tuple[float, float]:
    from edgekit.batch.ray_engine import run_ray_predictions
    from edgekit.batch.sources import resolve
    from edgekit.stores import open_store

    clock = Clock()
    store = open_store(store_url) if store_url else None
    try:
        summary = run_ray_predictions(ARTIFACT, resolve([str(folder)]), store, actors=actors, threads_per_actor=1,
                                      on_progress=clock.progress)
    finally:
        if store is not None:
            store.close()
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
    ap.add_argument("--model", choices=sorted(DEFAULT_INPUTS), default="digits")
    ap.add_argument("--inputs", type=int, nargs="+", help="job sizes (default: 12000 100000 for digits, "
                    "3000 18000 for mobilenetv2)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=20000, help="rows written per store")
    ap.add_argument("--chunk", type=int, default=256, help="rows per store transaction (the Ray engine's block)")
    ap.add_argument("--pg-url", help="an existing PostgreSQL (default: start one in a temp folder)")
    ap.add_argument("--stores", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure SQLite/PostgreSQL write rates and Ray 2 actors into PostgreSQL")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    global ARTIFACT
    if args.model == "mobilenetv2":
        ARTIFACT = mobilenetv2_artifact()
    args.inputs = args.inputs or DEFAULT_INPUTS[args.model]

    import ray

    work = Path(tempfile.mkdtemp(prefix="edgekit-batch-bench-"))
    os.chmod(work, 0o755)
    results: dict = {"model": args.model, "inputs": args.inputs, "repeats": args.repeats, "artifact": ARTIFACT.name,
                     "cpus": os.cpu_count(), "loadavg_start": os.getloadavg()[0], "jobs": {}}
    stop_pg = None
    try:
        images = source_images(args.model)
        folders = {n: replicate(work / f"inputs-{n}", n, images) for n in args.inputs}
        pg_url = args.pg_url
        if args.stores and pg_url is None and (PG_BIN / "initdb").exists():
            (work / "pg").mkdir()
            pg_url, stop_pg = start_postgres(work / "pg")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        small = min(args.inputs)
        run_ray(folders[small], small, 1)  # warm: worker processes, imports, page cache
        run_local(folders[small], small)
        for n in args.inputs:
            runs: dict[str, list[tuple[float, float]]] = {"local (1 process)": [], "ray 1 actor": [], "ray 2 actors": []}
            if args.stores and pg_url:
                runs["ray 2 actors -> postgresql"] = []
            load = LoadSampler()
            for r in range(args.repeats):
                runs["local (1 process)"].append(run_local(folders[n], n))
                runs["ray 1 actor"].append(run_ray(folders[n], n, 1))
                runs["ray 2 actors"].append(run_ray(folders[n], n, 2))
                if "ray 2 actors -> postgresql" in runs:
                    runs["ray 2 actors -> postgresql"].append(
                        run_ray(folders[n], n, 2, f"{pg_url}?table=bench_{os.getpid()}_{n}_{r}"))
            job = {"loadavg_during": load.stop()}
            job["throughput_per_s"] = {k: spread([x[0] for x in v]) for k, v in runs.items()}
            job["steady_throughput_per_s"] = {k: spread([x[1] for x in v]) for k, v in runs.items()}
            for kind in ("throughput_per_s", "steady_throughput_per_s"):
                med = {k: v["median"] for k, v in job[kind].items()}
                job[f"{kind}_ray_2_vs_1_actor"] = med["ray 2 actors"] / med["ray 1 actor"]
                job[f"{kind}_ray_1_actor_vs_local"] = med["ray 1 actor"] / med["local (1 process)"]
            results["jobs"][str(n)] = job
        ray.shutdown()
        results["loadavg_end"] = os.getloadavg()[0]
        if args.stores:
            store_rates(args, results, work, next(folders[small].iterdir()), pg_url)
    finally:
        if stop_pg:
            stop_pg()
        shutil.rmtree(work, ignore_errors=True)
    report(args, results)


def store_rates(args, results: dict, work: Path, sample: Path, pg_url: str | None) -> None:
    import edgekit
    from edgekit.predict_job import prediction_row

    # a real row shape, repeated with distinct inputs
    row = prediction_row(edgekit.load(ARTIFACT), ARTIFACT.name, "0" * 64, "x", sample, 5)
    rows = [dict(row, input=f"/data/{i:07d}.png") for i in range(args.rows)]
    stores = {"sqlite (WAL)": str(work / "bench.sqlite")}
    if pg_url:
        stores["postgresql (upsert, loopback)"] = f"{pg_url}?table=bench_{os.getpid()}"
    results["store_rows_per_s"] = {name: store_rate(out, rows, args.chunk) for name, out in stores.items()}


def report(args, results: dict) -> None:
    print(f"{ARTIFACT.name}, {args.repeats} runs each, 1 interpreter thread per process, {results['cpus']} CPUs; "
          "end to end = listing + model/actor start + predictions (ray.init excluded); steady = last 75 % of rows")
    for n, job in results["jobs"].items():
        load = job["loadavg_during"]
        print(f"\n{n} inputs; load average during the runs {load['mean']:.1f} ({load['min']:.1f}-{load['max']:.1f})")
        print(f"{'engine':<28} {'end-to-end /s (min-max)':>26} {'steady /s (min-max)':>24}")
        for name, s in job["throughput_per_s"].items():
            t = job["steady_throughput_per_s"][name]
            print(f"{name:<28} {s['median']:>8.0f} ({s['min']:.0f}-{s['max']:.0f}){'':>6} {t['median']:>8.0f} "
                  f"({t['min']:.0f}-{t['max']:.0f})")
        for kind, label in (("throughput_per_s", "end-to-end"), ("steady_throughput_per_s", "steady")):
            print(f"{label}: ray 2 actors / 1 actor {job[kind + '_ray_2_vs_1_actor']:.2f}x (target >= 1.6x); "
                  f"ray 1 actor / local {job[kind + '_ray_1_actor_vs_local']:.2f} (target >= 0.80)")
    print()
    for name, rate in results.get("store_rows_per_s", {}).items():
        print(f"store {name:<32} {rate:>9.0f} rows/s ({args.rows} rows, {args.chunk} per transaction)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    sys.exit(main())
