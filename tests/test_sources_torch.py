"""PyTorch and ONNX sources (issue #12): real architectures nobody here wrote (torchvision,
weights=None), the PyTorch sample trained on the digits (so top-1 agreement means something),
sequence models, an ONNX export, converted through `edgekit convert` to TFLite and Core ML
and compared with the source run eagerly (onnxruntime for ONNX)."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from conftest import SAMPLES, run_cli

pytestmark = pytest.mark.torch

torch = pytest.importorskip("torch", reason="the torch tier needs edgekit[torch] (tests/run_installed.sh installs it)")

DIGITS = ["--calibration", SAMPLES / "calibration", "--validate", SAMPLES / "validation", "--labels",
          SAMPLES / "labels.txt", "--mean", "0", "--std", "255"]


def convert(*args, ok: bool = True):
    result = run_cli("convert", *map(str, args))
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def report_of(out):
    return {(a["format"], a["quantize"]): a for a in json.loads((out / "report.json").read_text())["artifacts"]}


def predict_images(artifact, files):
    import edgekit

    model = edgekit.load(artifact)
    return np.array([int(model.classify(f)[0][0][0]) for f in files])


@pytest.fixture(scope="module")
def digits_torch(tmp_path_factory):
    """The trained PyTorch sample (.pt2), all TFLite recipes and Core ML fp16/int8-weights."""
    out = tmp_path_factory.mktemp("digits_torch")
    convert(SAMPLES / "digits_torch.pt2", "--to", "tflite,coreml", "-q", "fp32,fp16,int8-weights,int8,int16x8",
            *DIGITS, "-o", out, "--report", out / "report.json")
    return out, report_of(out)


def test_trained_pytorch_sample_converts_with_parity(digits_torch):
    out, report = digits_torch
    fp32 = report[("tflite", "fp32")]["parity"]
    assert fp32["cosine"] >= 0.9999 and fp32["top1_agreement"] == 1.0
    int8 = report[("tflite", "int8")]["parity"]
    assert int8["top1_agreement"] >= 0.95, int8
    for key in [("tflite", "fp16"), ("tflite", "int8-weights"), ("tflite", "int16x8"), ("coreml", "fp16"),
                ("coreml", "int8-weights")]:
        assert report[key]["parity"]["cosine"] >= 0.99, (key, report[key]["parity"])
        assert report[key]["gate"]["passed"], key
    manifest = json.loads((out / "digits_torch_int8.tflite.json").read_text())
    assert manifest["source"]["kind"] == "torch_export"
    assert manifest["preprocessing"]["layout"] == "NCHW"


def test_runtime_classifies_images_for_an_nchw_artifact(digits_torch):
    """The manifest's NCHW layout reaches the device-side preprocessing: files in, right digits out."""
    out, _ = digits_torch
    files = sorted((SAMPLES / "validation").glob("*.png"))[:40]
    truth = np.array([int(f.stem.split("label")[1]) for f in files])
    for name in ("digits_torch_fp32.tflite", "digits_torch_int8.tflite"):
        accuracy = float((predict_images(out / name, files) == truth).mean())
        assert accuracy >= 0.9, (name, accuracy)


def test_torchscript_needs_and_takes_an_input_shape(tmp_path):
    refused = convert(SAMPLES / "digits_torch.pt", "-q", "fp32", "-o", tmp_path / "a", ok=False)
    assert refused.exit_code == 2 and "--input-shape" in refused.stderr and "Traceback" not in refused.stderr
    convert(SAMPLES / "digits_torch.pt", "--input-shape", "1,1,32,32", "-q", "fp32", *DIGITS, "-o", tmp_path / "b",
            "--report", tmp_path / "b" / "report.json")
    assert report_of(tmp_path / "b")[("tflite", "fp32")]["parity"]["cosine"] >= 0.9999


def test_channels_last_gives_nhwc_io_with_unchanged_parity(tmp_path):
    convert(SAMPLES / "digits_torch.pt2", "--channels-last", "-q", "fp32,int8", *DIGITS, "-o", tmp_path,
            "--report", tmp_path / "report.json")
    import edgekit

    model = edgekit.load(tmp_path / "digits_torch_fp32.tflite")
    assert tuple(model.inputs[0].shape[1:]) == (32, 32, 1)
    report = report_of(tmp_path)
    assert report[("tflite", "fp32")]["parity"]["cosine"] >= 0.9999
    assert report[("tflite", "int8")]["parity"]["top1_agreement"] >= 0.95
    files = sorted((SAMPLES / "validation").glob("*.png"))[:20]
    truth = np.array([int(f.stem.split("label")[1]) for f in files])
    assert (predict_images(tmp_path / "digits_torch_fp32.tflite", files) == truth).mean() >= 0.9


def test_onnx_export_converts_against_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX sources need edgekit[onnx]")
    convert(SAMPLES / "digits_torch.onnx", "--to", "tflite,coreml", "-q", "fp32,int8,fp16", *DIGITS, "-o", tmp_path,
            "--report", tmp_path / "report.json")
    report = report_of(tmp_path)
    assert report[("tflite", "fp32")]["parity"]["cosine"] >= 0.9999
    assert report[("tflite", "int8")]["parity"]["top1_agreement"] >= 0.95
    assert report[("coreml", "fp16")]["parity"]["cosine"] >= 0.999
    manifest = json.loads((tmp_path / "digits_torch_fp32.tflite.json").read_text())
    assert manifest["source"]["kind"] == "onnx"


TORCHVISION = ["mobilenet_v3_small", "efficientnet_b0", "resnet18", "shufflenet_v2_x0_5", "mobilenet_v3_large"]


@pytest.mark.parametrize("arch", TORCHVISION)
def test_torchvision_architectures_from_a_factory(tmp_path, arch, monkeypatch):
    """`--source package.module:function`: torchvision's own code builds the network (weights=None)."""
    pytest.importorskip("torchvision", reason="needs edgekit[torch-test]")
    (tmp_path / "factories.py").write_text(
        "import torch, torchvision\n"
        f"def build():\n    torch.manual_seed(0)\n    return torchvision.models.{arch}(weights=None).eval()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", rng.uniform(-2, 2, (24, 3, 96, 96)).astype(np.float32))
    convert("--source", "factories:build", "--input-shape", "1,3,96,96", "-q", "fp32,int8", "--calibration",
            tmp_path / "cal.npz", "-o", tmp_path / "out", "--report", tmp_path / "report.json")
    report = {(a["format"], a["quantize"]): a for a in json.loads((tmp_path / "report.json").read_text())["artifacts"]}
    assert report[("tflite", "fp32")]["parity"]["cosine"] >= 0.9999, report[("tflite", "fp32")]["parity"]
    assert report[("tflite", "int8")]["parity"]["cosine"] >= 0.9, report[("tflite", "int8")]["parity"]
    assert (tmp_path / "out" / "build_int8.tflite").exists()
