"""Runtime wrapper overhead: `edgekit.Model.predict` against the raw LiteRT loop.

    python benchmarks/runtime_bench.py [--runs 300] [--json out.json]

Same artifact, same threads, same input values, calls alternating raw / wrapper. The raw loop is what a hand-written app
does: set_tensor(already-quantized codes) / invoke / get_tensor. The wrapper takes float
values and returns float values, so its time includes quantizing the input and dequantizing
the output — the work it saves the caller (about 70 us for a 224x224x3 input here). A second
raw loop does that quantization itself in plain numpy, as an app with float inputs must: the
like-for-like comparison. Targets (issue 4): overhead <= 5% at p50 on MobileNetV2 224
int8, <= 50 us on the tiny sample model; `import edgekit` <= 0.5 s with no TensorFlow module.
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def build_artifacts(work: Path) -> dict[str, Path]:
    from convert_bench import prepare  # reuse: MobileNetV2 with BN statistics set
    from edgekit.converters.pipeline import ConvertOptions, convert
    from edgekit.recipes import RECIPES

    out = {}
    for name in ("digits_cnn", "mobilenet_v2"):
        spec = prepare(name, work)
        opts = ConvertOptions(model=spec["model"], formats=("tflite",), recipes=(RECIPES["int8"],), out_dir=work,
                              calibration=spec["calibration"], validate=spec["validate"], mean=spec.get("mean"),
                              std=spec.get("std"), explain_errors=False, force=True)
        out[name] = convert(opts).artifacts[0].path
    return out


def measure(path: Path, threads: int, runs: int) -> dict:
    import edgekit
    from ai_edge_litert.interpreter import Interpreter

    model = edgekit.load(path, threads=threads)
    info = model.inputs[0]
    shape = (1, *info.shape[1:])
    x = np.random.default_rng(0).uniform(0, 1, size=shape).astype(np.float32)
    codes = np.clip(np.round(x / info.scale) + info.zero_point, -128, 127).astype(np.int8)

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def raw():
        it.set_tensor(inp, codes)
        it.invoke()
        return it.get_tensor(out)

    scale, zero_point = np.float32(info.scale), np.float32(info.zero_point)

    def raw_quantizing():  # what a hand-written app with float inputs has to do
        q = np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)
        it.set_tensor(inp, q)
        it.invoke()
        return (it.get_tensor(out).astype(np.float32) - out_zp) * out_scale

    out_scale, out_zp = it.get_output_details()[0]["quantization"]

    def wrapped():
        return model.predict(x)

    timings = {fn: [] for fn in (raw, raw_quantizing, wrapped)}
    for fn in timings:
        for _ in range(20):
            fn()  # warm-up
    for _ in range(runs):  # alternate call by call: load drift hits all alike
        for fn, sink in timings.items():
            t = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - t)
    raw_p50, rawq_p50, wrap_p50 = (float(np.median(t)) * 1e3 for t in timings.values())
    return {"raw_p50_ms": round(raw_p50, 4), "raw_quantizing_p50_ms": round(rawq_p50, 4),
            "wrapper_p50_ms": round(wrap_p50, 4), "overhead_us": round((wrap_p50 - raw_p50) * 1e3, 1),
            "overhead_pct": round((wrap_p50 / raw_p50 - 1) * 100, 2),
            "vs_raw_quantizing_pct": round((wrap_p50 / rawq_p50 - 1) * 100, 2)}


def import_cost() -> dict:
    code = ("import time, sys; t = time.perf_counter(); import edgekit; d = time.perf_counter() - t; "
            "print(d, any(m.split('.')[0] in ('tensorflow', 'keras') for m in sys.modules))")
    times, tf_loaded = [], False
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        times.append(float(out[0]))
        tf_loaded |= out[1] == "True"
    return {"import_s_median": round(float(np.median(times)), 3), "tensorflow_loaded": tf_loaded}


def main() -> None:
    from edgekit.table import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--threads", default="1,2", help="comma list")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = build_artifacts(Path(tmp))
        rows = [{"model": name + " int8", "threads": int(t), **measure(p, int(t), args.runs)}
                for name, p in artifacts.items() for t in args.threads.split(",")]
    imp = import_cost()
    headers = ["model", "threads", "raw_p50_ms", "raw_quantizing_p50_ms", "wrapper_p50_ms", "overhead_us",
               "overhead_pct", "vs_raw_quantizing_pct"]
    print(render(headers, [[r[h] for h in headers] for r in rows]))
    print(f"import edgekit: {imp['import_s_median']} s (median of 5 fresh processes); "
          f"tensorflow loaded: {imp['tensorflow_loaded']}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "import": imp}, indent=2) + "\n")


if __name__ == "__main__":
    main()
