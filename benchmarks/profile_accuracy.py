"""Does a measured profile predict networks it never saw? This host plays the device.

    python benchmarks/profile_accuracy.py [--threads 1,2] [--statistic p50|p10] [--json out.json]

1. `edgekit profile run` (the library calls) times the probe suite at each thread count and fits the
   per-op-kind costs to the chosen statistic (p50 by default, as `edgekit bench` reports).
2. Unseen networks: keras.applications MobileNetV2 / MobileNetV3Small / EfficientNetB0 / ResNet50 at
   small inputs converted by `edgekit convert` to fp32 and int8 (benchmarks/profile_networks.py), the
   committed sample digits_cnn fp32/int8 and the MediaPipe hand_recrop model.
3. Each is timed with `edgekit bench`'s loop (the same statistic) in two rounds, and estimated by `emulate` with the
   profile. Printed: per network and thread count, measured p50 (both rounds), estimate, error, and
   whether the profile's band holds the measurement; then the share within +-10 %, the median |error|
   and the round-to-round noise of the measurements themselves.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def networks() -> dict[str, Path]:
    from profile_networks import artifacts

    nets = artifacts()
    nets["digits_cnn_fp32"] = ROOT / "sample_models/artifacts/digits_cnn_fp32.tflite"
    nets["digits_cnn_int8"] = ROOT / "sample_models/artifacts/digits_cnn_int8.tflite"
    nets["hand_recrop_fp32"] = ROOT / "tests/data/hand_recrop.tflite"
    return nets


def main() -> None:
    from edgekit.bench import run_bench
    from edgekit.emulator import estimate
    from edgekit.tflite.graph import read_graph
    from edgekit.profile.device import load_profile
    from edgekit.profile.probes import suite
    from edgekit.profile.run import build_profile, measure
    from edgekit.table import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--statistic", default="p50", choices=["p50", "p10"],
                        help="p50: what edgekit bench reports; p10: the uncontended speed of a shared host")
    parser.add_argument("--seconds", type=float, default=2.0, help="bench seconds per network and round")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    threads = [int(t) for t in args.threads.split(",")]

    nets = networks()  # builds (TensorFlow) before anything is timed
    start = time.perf_counter()
    probes = suite()
    samples = measure(probes, threads, 0.25, progress=lambda m: print("  " + m, file=sys.stderr))
    profile_seconds = time.perf_counter() - start
    path = ROOT / f"benchmarks/.cache/profile/host_{args.statistic}.json"
    path.write_text(json.dumps(build_profile("host", len(probes), samples, args.statistic, profile_seconds), indent=1))
    print(f"profiled in {profile_seconds:.0f} s -> {path}", file=sys.stderr)
    device = load_profile(path)

    rounds: dict[tuple, list[float]] = {}
    q = 50 if args.statistic == "p50" else 10
    for r in range(2):  # two rounds, interleaved, to see how much the busy host moves the truth itself
        for name, artifact in nets.items():
            for n in threads:
                res = run_bench(artifact, threads=n, duration_s=args.seconds, warmup=5)
                rounds.setdefault((name, n), []).append(float(np.percentile(res.samples_ms, q)))
    rows, out = [], []
    for (name, n), p50s in rounds.items():
        est = estimate(read_graph(nets[name].read_bytes()), device, n)
        measured = float(np.median(p50s))
        err = est.estimate_ms / measured - 1
        inside = est.low_ms <= measured <= est.high_ms
        noise = abs(p50s[0] - p50s[1]) / measured
        out.append({"network": name, "threads": n, "measured_ms": p50s, "estimate_ms": est.estimate_ms,
                    "low_ms": est.low_ms, "high_ms": est.high_ms, "error": err, "in_band": inside, "noise": noise})
        rows.append([name, n, f"{p50s[0]:.3f} / {p50s[1]:.3f}", f"{100 * noise:.0f}%", round(est.estimate_ms, 3),
                     f"{100 * err:+.1f}%", f"{est.low_ms:.2f}-{est.high_ms:.2f}", "yes" if inside else "no"])
    print(render(["network", "thr", f"bench {args.statistic} ms (2 rounds)", "noise", "estimate ms", "error", "band ms", "in band"],
                 rows, align="lrrrrrrl"))
    errors = np.array([abs(o["error"]) for o in out])
    summary = {"statistic": args.statistic, "cases": len(out), "within_10pct": round(float((errors <= 0.10).mean()), 3),
               "median_abs_error_pct": round(float(np.median(errors)) * 100, 1),
               "worst_abs_error_pct": round(float(errors.max()) * 100, 1),
               "band_coverage": round(float(np.mean([o["in_band"] for o in out])), 3),
               "median_noise_pct": round(float(np.median([o["noise"] for o in out])) * 100, 1),
               "max_noise_pct": round(float(max(o["noise"] for o in out)) * 100, 1),
               "profile_seconds": round(profile_seconds, 1),
               "probe_fit": {n: {k: v for k, v in e.items() if k != "coefficients"} for n, e in device.threads.items()}}
    print(f"\n{summary['cases']} network x thread cases: {100 * summary['within_10pct']:.0f}% within +-10%, median "
          f"|error| {summary['median_abs_error_pct']}%, worst {summary['worst_abs_error_pct']}%; band holds "
          f"{100 * summary['band_coverage']:.0f}%; measurement noise (round to round) median "
          f"{summary['median_noise_pct']}%, max {summary['max_noise_pct']}%"
          + f"; profile run {summary['profile_seconds']} s")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "cases": out}, indent=2))


if __name__ == "__main__":
    main()
