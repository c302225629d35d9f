"""`edgekit sweep` of PyTorch and ONNX sources: each level's compressed model saved as a .pt2 in models/,
the rows' numbers checked against an independent run of every artifact (and of the saved .pt2) over
the validation images in the source's NCHW layout, MACs of the compressed level below the source's,
resume, the ONNX source, and the one-line refusals."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES, run_cli

pytestmark = pytest.mark.torch

DIGITS_NORM = ["--mean", "0", "--std", "255"]
LEVEL = "prune-channels-30+distill-3"



def _images() -> tuple[np.ndarray, np.ndarray]:
    """Read here, not through edgekit: the 32x32 grey digits as NCHW floats in [0, 1] (the source's
    normalization, pixel / 255) and their labels."""
    from PIL import Image

    files = sorted((SAMPLES / "validation").glob("*.png"))
    x = np.stack([np.asarray(Image.open(f), np.float32)[None] / 255.0 for f in files])
    return x, np.array([int(f.stem.split("label")[1]) for f in files])


def _artifact_top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    from edgekit.artifact import load

    model = load(path)
    probs = np.concatenate([model.run([x[i:i + 1]])[0] for i in range(len(x))])
    return float(np.mean(np.argmax(probs, -1) == y))


def _pt2_top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    module = torch.export.load(str(path)).module()
    with torch.no_grad():
        probs = np.concatenate([module(torch.from_numpy(x[i:i + 1])).numpy() for i in range(len(x))])
    return float(np.mean(np.argmax(probs, -1) == y))


def _sweep(model: Path, labelled: Path, out: Path, compressions: str, recipes: str):
    return run_cli("sweep", model, "--calibration", SAMPLES / "calibration", "--validate", labelled, "--labels",
                   SAMPLES / "labels.txt", *DIGITS_NORM, "--compress", compressions, "--recipes", recipes,
                   "--bench-runs", "5", "-o", out)


def test_sweep_of_a_pt2_source_measures_each_artifact_saves_pt2_levels_and_resumes(tmp_path, labelled_digits):
    out = tmp_path / "sweep"
    result = _sweep(SAMPLES / "digits_torch.pt2", labelled_digits, out, f"none,{LEVEL}", "fp32,int8")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "sweep.json").read_text())
    rows = {r["variant"]: r for r in report["variants"]}
    assert set(rows) == {"fp32", "int8", f"{LEVEL}+fp32", f"{LEVEL}+int8"}
    x, y = _images()
    assert report["source"]["top1"] == pytest.approx(_pt2_top1(SAMPLES / "digits_torch.pt2", x, y), abs=1e-6)
    assert report["source"]["top1"] > 0.9  # the trained sample: a real baseline, not chance
    for name, row in rows.items():
        assert row["status"] in ("ok", "over budget"), (name, row.get("error"))
        assert row["top1"] == pytest.approx(_artifact_top1(Path(row["artifact"]), x, y), abs=1e-6), name
    # the level's compressed model: a .pt2 (+ provenance JSON) whose own top-1 is the one recorded
    model = out / "models" / f"digits_torch__{LEVEL}.pt2"
    record = json.loads(model.with_suffix(".json").read_text())
    assert [p["step"] for p in record["provenance"]] == ["prune-channels-30", "distill-3"]
    assert record["top1"] == pytest.approx(_pt2_top1(model, x, y), abs=1e-6)
    assert rows[f"{LEVEL}+fp32"]["compressed_top1"] == pytest.approx(record["top1"], abs=1e-6)
    # fp32 of the source is the source's arithmetic; pruning cuts MACs counted from the artifacts
    assert rows["fp32"]["drop"] == pytest.approx(0.0, abs=1e-9)
    from edgekit.tflite.graph import read_graph

    for recipe in ("fp32", "int8"):
        pruned, source = rows[f"{LEVEL}+{recipe}"], rows[recipe]
        assert pruned["macs"] == read_graph(Path(pruned["artifact"]).read_bytes()).total_macs
        assert pruned["macs"] < 0.75 * source["macs"]
    assert record["provenance"][0]["macs_after"] < record["provenance"][0]["macs_before"]
    # resume: nothing compressed, converted or rewritten
    stamps = {p: p.stat().st_mtime_ns for p in [model, *(Path(r["artifact"]) for r in rows.values())]}
    again = _sweep(SAMPLES / "digits_torch.pt2", labelled_digits, out, f"none,{LEVEL}", "fp32,int8")
    assert again.exit_code == 0, again.output
    assert "4 already finished" in again.stderr
    assert "compressing" not in again.stderr and "converting" not in again.stderr
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    final = {r["variant"]: r for r in json.loads((out / "sweep.json").read_text())["variants"]}
    assert {n: r["top1"] for n, r in final.items()} == {n: r["top1"] for n, r in rows.items()}


def test_sweep_of_an_onnx_source_compresses_to_pt2_and_measures_it(tmp_path, labelled_digits):
    out = tmp_path / "sweep"
    result = _sweep(SAMPLES / "digits_torch.onnx", labelled_digits, out, LEVEL, "fp32")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "sweep.json").read_text())
    [row] = report["variants"]
    assert row["variant"] == f"{LEVEL}+fp32" and row["status"] in ("ok", "over budget"), row.get("error")
    x, y = _images()
    assert report["source"]["top1"] > 0.9
    assert row["top1"] == pytest.approx(_artifact_top1(Path(row["artifact"]), x, y), abs=1e-6)
    model = out / "models" / f"digits_torch__{LEVEL}.pt2"
    assert row["compressed_top1"] == pytest.approx(_pt2_top1(model, x, y), abs=1e-6)
    assert row["provenance"][0]["macs_after"] < row["provenance"][0]["macs_before"]
    assert row["macs"] == row["provenance"][-1]["macs_after"]  # the graph's count is the artifact's


def test_sweep_refusals_of_torch_sources_are_one_line(tmp_path, labelled_digits):
    common = ["--calibration", SAMPLES / "calibration", "--validate", labelled_digits, "-o", tmp_path / "out"]
    no_shape = run_cli("sweep", SAMPLES / "digits_torch.pt", *common)
    assert no_shape.exit_code == 2 and "--input-shape" in no_shape.output
    factory = run_cli("sweep", "--source", "torchvision.models:mobilenet_v2", *common)
    assert factory.exit_code == 2 and "torch.export.save" in factory.output
    keras_shape = run_cli("sweep", SAMPLES / "digits_cnn.keras", "--input-shape", "1,32,32,1", *common)
    assert keras_shape.exit_code == 2 and "drop --input-shape" in keras_shape.output
    for r in (no_shape, factory, keras_shape):
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 2, r.output
    assert not (tmp_path / "out" / "models").exists()
