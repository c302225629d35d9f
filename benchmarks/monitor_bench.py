"""What drift monitoring costs per prediction, against MobileNetV2 int8's own p50 (target: <= 3 %).

    python benchmarks/monitor_bench.py [--runs 400] [--threads 2] [--json FILE]

MobileNetV2 (keras.applications, weights=None, BN statistics set: convert_bench.prepare) is converted
by `edgekit convert` to int8 with random calibration and validation .npz files (so its manifest has
reference_stats); the committed digits int8 sample is measured too. Per model:
  p50 run / p50 monitored run   Model.run vs the same model monitored (what load(monitor=True) returns)
                                on one sample, alternated call by call so load drift hits both alike;
                                their difference is noisy at the microsecond scale, so the cost of the
                                added work itself is measured on its own too:
  observe                       per-sample statistics + ring-buffer copy (every prediction)
  evaluate                      comparing a full 200-row window with the reference (every 100 predictions)
  per prediction                observe + evaluate / 50: what monitoring adds on average
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build_mobilenet(work: Path) -> Path:
    from click.testing import CliRunner
    from convert_bench import (
        prepare,  # MobileNetV2, weights=None, BN statistics set; random .npz data
    )

    from edgekit.cli import main as edgekit

    spec = prepare("mobilenet_v2", work)
    args = ["convert", str(spec["model"]), "--to", "tflite", "--quantize", "int8", "--calibration",
            str(spec["calibration"]), "--validate", str(spec["validate"]), "-o", str(work), "--force", "--no-explain"]
    result = CliRunner().invoke(edgekit, args)
    path = work / "mobilenet_v2_int8.tflite"
    if result.exit_code or not path.exists():
        raise SystemExit(f"edgekit convert failed ({result.exit_code}):\n{result.output[-3000:]}")
    return path


def _median_us(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1e6


def measure(name: str, path: Path, threads: int, runs: int) -> dict:
    import edgekit
    from edgekit.monitor import MonitoredModel

    model = edgekit.load(path, threads=threads)
    monitored = MonitoredModel(model)  # the same interpreter: only the monitoring differs between the two
    info = model.inputs[0]
    x = np.random.default_rng(0).uniform(0, 1, size=(1, *info.shape[1:])).astype(np.float32)
    plain_t, mon_t = [], []
    for _ in range(20):
        model.run([x]), monitored.run([x])
    for _ in range(runs):
        for fn, sink in ((model.run, plain_t), (monitored.run, mon_t)):
            t = time.perf_counter()
            fn([x])
            sink.append(time.perf_counter() - t)
    p50, p50_mon = float(np.median(plain_t)) * 1e3, float(np.median(mon_t)) * 1e3
    monitor = monitored.monitor
    scores = model.run([x])[0]
    observe_us = _median_us(lambda: monitor.window.add(monitor.extractor.rows(x, scores)), 2000)
    # a full window of varied rows, then the comparison itself
    rng = np.random.default_rng(1)
    for _ in range(monitor.window.capacity):
        xi = rng.uniform(0, 1, size=x.shape).astype(np.float32)
        monitor.window.add(monitor.extractor.rows(xi, scores))
    evaluate_us = _median_us(monitor.evaluate, 200)
    per_prediction = observe_us + evaluate_us / monitor.every
    return {"model": name, "threads": threads, "p50_ms": round(p50, 4), "p50_monitored_ms": round(p50_mon, 4),
            "p50_difference_pct": round((p50_mon / p50 - 1) * 100, 2), "observe_us": round(observe_us, 1),
            "evaluate_window_us": round(evaluate_us, 1), "window": monitor.window.capacity, "every": monitor.every,
            "per_prediction_us": round(per_prediction, 1),
            "overhead_pct_of_p50": round(per_prediction / (p50 * 1e3) * 100, 2)}


def main() -> None:
    from edgekit.table import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mobilenet = build_mobilenet(Path(tmp))
        rows = [measure("mobilenet_v2 int8", mobilenet, args.threads, args.runs),
                measure("digits_cnn int8", ROOT / "sample_models" / "artifacts" / "digits_cnn_int8.tflite",
                        args.threads, args.runs)]
    print(render(["model", "p50 ms", "p50 monitored ms", "diff %", "observe us", "evaluate window us",
                  "per prediction us", "overhead % of p50"],
                 [[r["model"], r["p50_ms"], r["p50_monitored_ms"], r["p50_difference_pct"], r["observe_us"],
                   r["evaluate_window_us"], r["per_prediction_us"], r["overhead_pct_of_p50"]] for r in rows]))
    print(f"per prediction = observe + evaluate / {rows[0]['every']} (a {rows[0]['window']}-row window is "
          f"compared every {rows[0]['every']} predictions); target: <= 3 % of MobileNetV2 int8 p50")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
