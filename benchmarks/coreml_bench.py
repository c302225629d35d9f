"""Core ML executor: speed of verifying a saved package, and fidelity per recipe and architecture.

    python benchmarks/coreml_bench.py [--models MobileNetV2,...] [--inputs 50] [--json out.json]

For each keras.applications architecture (weights=None, BatchNorm statistics set by two
training-mode passes, logits output): convert to Core ML with several recipes through
`edgekit convert`'s pipeline, then time edgekit's numpy executor on --inputs validation inputs
(the same work `edgekit convert` does for parity) and report parity against Keras.
Target (issue 3): verifying MobileNetV2 224 on 50 inputs takes under 60 s on this machine.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

RECIPES = ["fp32", "fp16", "int8-weights", "palettize-4"]


def main() -> None:
    from convert_bench import application_with_bn_statistics

    from edgekit.coreml.model import CoreMLModel
    from edgekit.converters.pipeline import ConvertOptions, convert
    from edgekit.recipes import RECIPES as TABLE
    from edgekit.table import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="MobileNetV2,MobileNetV3Small,EfficientNetB0,ResNet50")
    parser.add_argument("--inputs", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in args.models.split(","):
            application_with_bn_statistics(name, passes=2, batch=8).save(work / f"{name}.keras")
            rng = np.random.default_rng(0)
            np.savez(work / "val.npz", x=rng.uniform(0, 255, (args.inputs, 224, 224, 3)).astype(np.float32))
            opts = ConvertOptions(model=work / f"{name}.keras", formats=("coreml",),
                                  recipes=tuple(TABLE[r] for r in RECIPES), out_dir=work / name,
                                  validate=work / "val.npz", force=True)
            result = convert(opts, progress=lambda m, name=name: print(f"  {name}: {m.strip()}", file=sys.stderr))
            x = np.load(work / "val.npz")["x"]
            for a in result.artifacts:
                executor = CoreMLModel(a.path, native=False)
                start = time.perf_counter()
                executor.run([x])
                verify_s = time.perf_counter() - start
                rows.append({"model": name, "recipe": a.recipe, "size_mb": round(a.size_bytes / 2**20, 2),
                             "convert_s": round(a.seconds, 1), "verify_s": round(verify_s, 1),
                             "inputs": len(x), "cosine": a.parity["cosine"], "snr_db": round(a.parity["snr_db"], 1),
                             "max_abs_err": a.parity["max_abs_err"]})
    headers = ["model", "recipe", "size_mb", "convert_s", "verify_s", "inputs", "cosine", "snr_db", "max_abs_err"]
    print(render(headers, [[r[h] for h in headers] for r in rows]))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
