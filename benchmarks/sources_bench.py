"""Sources benchmark (issue #12): every source kind x TFLite recipe through `edgekit convert`,
and MobileNetV3-Large from PyTorch against the same network from Keras.

    python benchmarks/sources_bench.py [--json out.json] [--rounds 5] [--skip-mnv3]

Needs edgekit[onnx,torch-test] (torch, litert-torch, onnxruntime, torchvision) beside [convert].
Per source x recipe: size vs that source's fp32, conversion seconds, host p50 (1 thread) and parity
against the source (cosine, top-1 agreement on the 150 held-out digit images). The digits sources
are the trained samples (Keras, its fp32 .tflite, the PyTorch net as .pt2 and as ONNX).

MobileNetV3-Large 224 (weights=None, BatchNorm statistics from a few training-mode passes so int8
has realistic ranges; logits out): torchvision's and keras.applications' networks, both int8
through edgekit with the same 200 synthetic calibration inputs. Target: the PyTorch int8 host p50
within 10 % of the Keras int8 p50. Latency: the raw LiteRT loop, batch 1, 1 thread; both models
are timed in alternating rounds and each keeps its lowest round median, so load drift on this
shared 2-core host hits both alike. The load average before and after is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_bench import application_with_bn_statistics, raw_p50_ms  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
RECIPES = ["fp32", "fp16", "int8-weights", "int8", "int16x8"]
DIGITS_SOURCES = {"keras": SAMPLES / "digits_cnn.keras", "tflite (float)": SAMPLES / "artifacts" / "digits_cnn_fp32.tflite",
                  "pytorch .pt2": SAMPLES / "digits_torch.pt2", "onnx": SAMPLES / "digits_torch.onnx"}


def run_convert(model: Path | None, out: Path, recipes: list[str], label: str, **extra):
    from edgekit.converters.pipeline import ConvertOptions, convert
    from edgekit.recipes import RECIPES as TABLE

    opts = ConvertOptions(model=model, formats=("tflite",), recipes=tuple(TABLE[r] for r in recipes), out_dir=out,
                          explain_errors=False, force=True, **extra)
    return convert(opts, progress=lambda m: print(f"  {label}: {m.strip()}", file=sys.stderr))


def digits_rows(work: Path, rounds: int) -> list[dict]:
    rows = []
    for label, path in DIGITS_SOURCES.items():
        result = run_convert(path, work / label.split()[0], RECIPES, label, calibration=SAMPLES / "calibration",
                             validate=SAMPLES / "validation", labels=SAMPLES / "labels.txt", mean=(0.0,), std=(255.0,))
        fp32 = next(a for a in result.artifacts if a.recipe == "fp32")
        for a in result.artifacts:
            if a.error:
                rows.append({"source": label, "recipe": a.recipe, "error": a.error})
                continue
            rows.append({"source": label, "recipe": a.recipe, "size_bytes": a.size_bytes,
                         "size_vs_fp32": round(a.size_bytes / fp32.size_bytes, 3), "convert_s": round(a.seconds, 1),
                         "p50_ms_1t": round(min(raw_p50_ms(a.path, 1, 100) for _ in range(rounds)), 4),
                         "cosine": a.parity["cosine"], "top1_agreement": a.parity["top1_agreement"]})
    return rows


def torchvision_mnv3_large(seed: int = 0, passes: int = 4, batch: int = 16):
    import torch
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v3_large(weights=None)
    model.train()
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for _ in range(passes):
            model(torch.from_numpy(rng.uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)))
    return model.eval()


def mnv3_rows(work: Path, rounds: int) -> list[dict]:
    import torch

    factory = work / "mnv3_factory.py"
    torch.save(torchvision_mnv3_large().state_dict(), work / "mnv3_torch_state.pt")
    factory.write_text("import torch, torchvision\n"
                       "def build():\n    m = torchvision.models.mobilenet_v3_large(weights=None)\n"
                       f"    m.load_state_dict(torch.load({str(work / 'mnv3_torch_state.pt')!r}))\n    return m.eval()\n")
    sys.path.insert(0, str(work))
    keras_model = application_with_bn_statistics("MobileNetV3Large")
    keras_path = work / "mnv3_keras.keras"
    keras_model.save(keras_path)
    rng = np.random.default_rng(0)
    nchw = rng.uniform(-1, 1, (220, 3, 224, 224)).astype(np.float32)
    np.savez(work / "cal_nchw.npz", nchw[:200])
    np.savez(work / "val_nchw.npz", nchw[200:])
    np.savez(work / "cal_nhwc.npz", nchw[:200].transpose(0, 2, 3, 1))
    np.savez(work / "val_nhwc.npz", nchw[200:].transpose(0, 2, 3, 1))
    results = {
        "keras": run_convert(keras_path, work / "mnv3_keras", ["fp32", "int8"], "MobileNetV3-Large keras",
                             calibration=work / "cal_nhwc.npz", validate=work / "val_nhwc.npz"),
        "pytorch": run_convert(Path("mnv3"), work / "mnv3_torch", ["fp32", "int8"], "MobileNetV3-Large pytorch",
                               calibration=work / "cal_nchw.npz", validate=work / "val_nchw.npz",
                               factory="mnv3_factory:build", input_shapes=(((1, 3, 224, 224), "float32"),)),
    }
    artifacts = {(source, a.recipe): a for source, r in results.items() for a in r.artifacts}
    best: dict[tuple, float] = {}
    for _ in range(rounds):  # alternate the two sources within every round
        for key, a in artifacts.items():
            if not a.error:
                best[key] = min(best.get(key, float("inf")), raw_p50_ms(a.path, 1, 30))
    rows = []
    for (source, recipe), a in artifacts.items():
        row = {"source": f"MobileNetV3-Large {source}", "recipe": recipe}
        if a.error:
            row["error"] = a.error
        else:
            row.update(size_bytes=a.size_bytes, convert_s=round(a.seconds, 1), p50_ms_1t=round(best[(source, recipe)], 3),
                       cosine=a.parity["cosine"], top1_agreement=a.parity["top1_agreement"])
        rows.append(row)
    return rows


def main() -> None:
    from edgekit.table import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip-mnv3", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        rows = digits_rows(Path(tmp), args.rounds)
        if not args.skip_mnv3:
            rows += mnv3_rows(Path(tmp), args.rounds)
    load_after = os.getloadavg()
    headers = ["source", "recipe", "size_bytes", "size_vs_fp32", "convert_s", "p50_ms_1t", "cosine", "top1_agreement"]
    print(render(headers, [[r.get(h, "FAILED" if h == "size_bytes" else None) for h in headers] for r in rows]))
    summary = {"load_before": [round(v, 2) for v in load_before], "load_after": [round(v, 2) for v in load_after]}
    mnv3 = {r["source"].split()[-1]: r for r in rows if r["source"].startswith("MobileNetV3") and r["recipe"] == "int8"}
    if {"keras", "pytorch"} <= set(mnv3) and "p50_ms_1t" in mnv3["keras"] and "p50_ms_1t" in mnv3["pytorch"]:
        ratio = mnv3["pytorch"]["p50_ms_1t"] / mnv3["keras"]["p50_ms_1t"]
        summary["mnv3_int8_pytorch_vs_keras_p50"] = round(ratio, 3)
        print(f"MobileNetV3-Large int8, PyTorch vs Keras host p50: {ratio:.3f}x (target within 10 %: "
              f"{'met' if abs(ratio - 1) <= 0.10 else 'missed'})")
    print(f"load average before {summary['load_before']}, after {summary['load_after']}")
    for r in rows:
        if "error" in r:
            print(f"{r['source']} {r['recipe']}: {r['error'][:300]}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
