"""What `edgekit emulate --exec` costs: the device sysroot (build time, size) and the wall time of one
`--exec` run per target, start-up included (target: <= 60 s for MobileNetV2 int8 on 10 inputs).

    python benchmarks/exec_bench.py [--samples 10] [--targets rpi3,rpi4,rpi5] [--json FILE]

The sysroot is `edgekit device-env build rpi4` (built first when missing: ~10 min; its stage times
come from its env.json). Models: the committed digits int8 sample and MobileNetV2 224 int8
(keras.applications weights=None, BN statistics set: convert_bench.prepare, converted by
`edgekit convert -q int8` with a random .npz calibration; needs edgekit[convert]). Each run is the CLI
in a subprocess, so the times include Python start-up, the host reference run and the emulated one.
Wall times under qemu are translation time, not device latency.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
EDGEKIT = [str(Path(sys.executable).with_name("edgekit"))]  # the installed CLI, as a user runs it


def build_mobilenet(work: Path) -> Path:
    path = work / "mobilenet_v2_int8.tflite"
    if path.exists():
        return path
    from convert_bench import (
        prepare,  # MobileNetV2, weights=None, BN statistics set; random .npz data
    )

    spec = prepare("mobilenet_v2", work)
    subprocess.run(EDGEKIT + ["convert", str(spec["model"]), "--to", "tflite", "-q", "int8", "--calibration",
                              str(spec["calibration"]), "--validate", str(spec["validate"]), "-o", str(work),
                              "--force"], check=True, cwd=tempfile.gettempdir())
    return path


def sysroot() -> dict:
    from edgekit.device_env import env_status

    status = env_status()
    if not status.ready:
        start = time.monotonic()
        subprocess.run(EDGEKIT + ["device-env", "build", "rpi4"], check=True)
        print(f"built in {time.monotonic() - start:.0f} s", file=sys.stderr)
        status = env_status()
    return {"path": str(status.path), "build_s": status.build_s, "stages_s": status.stages, "size_mb": status.size_mb,
            "mode": status.mode, "packages": status.packages}


def exec_run(model: Path, target: str, samples: int) -> dict:
    start = time.monotonic()
    proc = subprocess.run(EDGEKIT + ["emulate", str(model), "--target", target, "--exec", "--json", "--samples",
                                     str(samples)], capture_output=True, text=True, cwd=tempfile.gettempdir(), check=False)
    wall = time.monotonic() - start
    if proc.returncode:
        return {"model": model.stem, "target": target, "error": proc.stderr.strip()[-300:]}
    report = json.loads(proc.stdout)
    run, estimate = report["exec"][0], report["estimates"][0]
    invoke = run["invoke_ms"]
    worst = min(run["parity"], key=lambda p: p["cosine"]) if run["parity"] else {}
    return {"model": model.stem, "target": target, "cpu": run["cpu"], "samples": run["samples"],
            "wall_s": round(wall, 1), "guest_s": run["wall_s"],
            "qemu_ms_per_invoke": round(sum(invoke) / len(invoke), 1) if invoke else None,
            "estimate_ms": estimate["estimate_ms"], "loaded": run["loaded"],
            "delegated": f"{len(run['delegated'])}/{run['nodes']}", "bit_exact": all(p["bit_exact"] for p in run["parity"]),
            "differing_fraction": max((p["differing_fraction"] for p in run["parity"]), default=None),
            "cosine": worst.get("cosine"), "max_abs_err": max((p["max_abs_err"] for p in run["parity"]), default=None),
            "float": any(p["dtype"].startswith("float") for p in run["parity"])}


def _parity(r: dict) -> str:
    if r["bit_exact"]:
        return "bit-exact"
    if r["float"]:  # ARM and x86 float kernels round differently (FMA, accumulation order): ulp-level
        return f"cos {r['cosine']:.7f}, max err {r['max_abs_err']:.2g}"
    return f"cos {r['cosine']:.7f}, {r['differing_fraction']:.3%} of codes differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--targets", default="rpi3,rpi4,rpi5")
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "edgekit-exec-bench")
    parser.add_argument("--json", type=Path, help="Also write the results here.")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = sysroot()
    print(f"sysroot {env['path']}: {env['size_mb']:.0f} MB, built in {env['build_s']} s ({env['mode']}); stages: "
          + ", ".join(f"{k} {v} s" for k, v in env["stages_s"].items()))
    models = [ROOT / "sample_models/artifacts/digits_cnn_int8.tflite", ROOT / "sample_models/artifacts/digits_cnn_fp32.tflite"]
    if not args.skip_mobilenet:
        models.append(build_mobilenet(args.work))
    rows = [exec_run(m, t, args.samples) for m in models for t in args.targets.split(",")]
    from edgekit.table import render

    print(render(["model", "target", "cpu", "inputs", "wall s", "qemu ms/invoke", "estimate ms", "XNNPACK",
                  "parity"],
                 [[r["model"], r["target"], r.get("cpu", "-"), r.get("samples", "-"), r.get("wall_s", "-"),
                   r.get("qemu_ms_per_invoke", "-"), r.get("estimate_ms", "-"), r.get("delegated", "-"),
                   r.get("error") or _parity(r)]
                  for r in rows]))
    print("wall s: the whole CLI run (start-up, host reference, emulated run); qemu ms/invoke is translation time, "
          "not device latency (estimate ms is the device estimate)")
    if args.json:
        args.json.write_text(json.dumps({"sysroot": env, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
