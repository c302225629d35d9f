"""Compression of PyTorch sources (issue 13): plain int8 against compressed +int8 variants, through
`edgekit convert` exactly as a user runs it, on trained models with real accuracy.

    python benchmarks/compress_torch_bench.py [--json out.json] [--runs 2000] [--rounds 3]

1. sample_models/digits_torch.pt2 (built by sample_models/build_torch.py: top-1 1.0 on the 150 held-out
   digits): int8, prune-channels-30+distill+int8, prune-channels-30-act+distill+int8,
   prune-channels-30+distill-40+int8, lowrank-50+distill+int8. It has no identity residual block, so
   prune-blocks is shown on:
2. a small residual PyTorch network (stem, three identity blocks at 16x16, linear head) trained here
   on the same digits and split as build_torch.py (cached in benchmarks/.cache/compress_torch/):
   int8, prune-blocks-34+distill+int8 (one of three blocks), prune-blocks-67+distill-40+int8 (two).

Per artifact: task top-1 on sample_models/validation (class sub-folders made from the file names),
MACs read from the artifact's graph (edgekit.tflite.graph), size, host p50 from `edgekit bench
--threads 1` (rounds alternate between the artifacts, the median of the rounds' p50 is shown) and
the compression's seconds from the manifest's provenance, and top-1 agreement / cosine with the source.
--no-gate keeps artifacts the lossy parity gate (cosine 0.8, agreement 70 %) would reject, so they
are measured, not hidden.
Run it under the shared lock: flock /tmp/s5/timing.lock python benchmarks/compress_torch_bench.py
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CACHE = ROOT / "benchmarks" / ".cache" / "compress_torch"
EDGEKIT = str(Path(sys.executable).with_name("edgekit"))
DIGITS_RECIPES = ("int8", "prune-channels-30+distill+int8", "prune-channels-30-act+distill+int8",
                  "prune-channels-30+distill-40+int8", "lowrank-50+distill+int8")
RESNET_RECIPES = ("int8", "prune-blocks-34+distill+int8", "prune-blocks-67+distill-40+int8")
RESNET_EPOCHS = 25


def load() -> str:
    return "load average %.2f / %.2f / %.2f (1/5/15 min) on %d CPUs" % (*os.getloadavg(), os.cpu_count())


def labelled_validation(folder: Path) -> Path:
    """sample_models/validation in one sub-folder per class (the labels are in the file names)."""
    for f in sorted((SAMPLES / "validation").glob("*.png")):
        label = f.stem.split("label")[1]
        (folder / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, folder / label / f.name)
    return folder


def residual_digits_net() -> Path:
    """A small residual network with identity blocks, trained on the digits (same split and seed as
    build_torch.py), saved as .pt2; cached."""
    path = CACHE / f"digits_resnet_torch_e{RESNET_EPOCHS}.pt2"
    if path.exists():
        return path
    import torch
    from torch import nn

    sys.path.insert(0, str(SAMPLES))
    from build import IMAGE_SIZE
    from build_torch import train

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.branch = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                        nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(x + self.branch(x))

    class DigitsResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
                                      nn.MaxPool2d(2))
            self.blocks = nn.Sequential(Block(24), Block(24), Block(24))
            self.head = nn.Linear(24, 10)

        def forward(self, image):
            return torch.softmax(self.head(self.blocks(self.stem(image)).mean(dim=(2, 3))), dim=1)

    model, accuracy = train(DigitsResNet, RESNET_EPOCHS)  # build_torch.py's loop, data, split and seed
    print(f"residual torch net: held-out top-1 {accuracy:.4f} after {RESNET_EPOCHS} epochs")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.pt2")
    torch.export.save(torch.export.export(model, (torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE),)), str(tmp))
    tmp.replace(path)
    return path


def convert(model: Path, recipes: tuple[str, ...], validation: Path, out: Path) -> dict:
    cmd = [EDGEKIT, "convert", str(model), "-q", ",".join(recipes), "--calibration", str(SAMPLES / "calibration"),
           "--validate", str(validation), "--labels", str(SAMPLES / "labels.txt"), "--mean", "0", "--std", "255",
           "--no-gate", "-o", str(out), "--report", str(out / "report.json")]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"edgekit convert failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads((out / "report.json").read_text())


def p50(artifact: Path, runs: int) -> float:
    done = subprocess.run([EDGEKIT, "bench", str(artifact), "--threads", "1", "--runs", str(runs), "--json"],
                          capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout)["latency_ms"]["p50"])


def measure(model: Path, recipes: tuple[str, ...], validation: Path, out: Path, runs: int, rounds: int) -> list[dict]:
    from edgekit.tflite.graph import read_graph

    print(f"converting {model.name}: {', '.join(recipes)} ({load()})", flush=True)
    report = convert(model, recipes, validation, out)
    source_top1 = report["validation"]["source_task_top1"]
    rows = []
    for art in report["artifacts"]:
        path = Path(art["path"])
        manifest = json.loads(path.with_name(path.name + ".json").read_text())
        provenance = manifest["source"].get("compression") or []
        rows.append({"model": model.name, "variant": art["quantize"], "path": str(path),
                     "task_top1": art["parity"].get("task_top1"), "source_top1": source_top1,
                     "top1_agreement": art["parity"].get("top1_agreement"), "cosine": art["parity"].get("cosine"),
                     "macs": int(read_graph(path.read_bytes()).total_macs), "size_bytes": art["size_bytes"],
                     "compress_seconds": round(sum(r["seconds"] for r in provenance), 2),
                     "provenance": provenance, "p50_rounds": []})
    print(f"benchmarking {len(rows)} artifacts, {rounds} alternating rounds of {runs} runs, 1 thread ({load()})",
          flush=True)
    for _ in range(rounds):
        for row in rows:
            row["p50_rounds"].append(p50(Path(row["path"]), runs))
    for row in rows:
        row["p50_ms"] = float(np.median(row["p50_rounds"]))
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'model':<28} {'variant':<36} {'top-1':>6} {'drop':>6} {'MACs':>9} {'size':>8} {'p50 ms':>7} "
             f"{'vs int8':>7} {'comp s':>6} {'agree':>6} {'cosine':>7}", "-" * 134]
    base = {r["model"]: r for r in rows if r["variant"] == "int8"}
    for r in rows:
        b = base[r["model"]]
        lines.append(f"{r['model']:<28} {r['variant']:<36} {100 * r['task_top1']:>5.1f}% "
                     f"{100 * (r['source_top1'] - r['task_top1']):>5.1f} {r['macs']:>9,} "
                     f"{r['size_bytes'] / 1024:>6.1f}KB {r['p50_ms']:>7.4f} {b['p50_ms'] / r['p50_ms']:>6.2f}x "
                     f"{r['compress_seconds']:>6.1f} {100 * r['top1_agreement']:>5.1f}% {r['cosine']:>7.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"start: {load()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="edgekit-compress-torch-bench-") as tmp:
        tmp = Path(tmp)
        validation = labelled_validation(tmp / "validation")
        rows = measure(SAMPLES / "digits_torch.pt2", DIGITS_RECIPES, validation, tmp / "digits", args.runs,
                       args.rounds)
        rows += measure(residual_digits_net(), RESNET_RECIPES, validation, tmp / "resnet", args.runs, args.rounds)
        print()
        print(table(rows))
        print(f"\nend: {load()}")
        if args.json:
            for r in rows:
                r.pop("path")
            args.json.write_text(json.dumps({"load_at_end": load(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
