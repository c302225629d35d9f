"""An existing float .tflite as the source (issue #12): the recipes through ai-edge-quantizer,
parity against the float model run by the device runtime, and what cannot be made refused
before any work."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SAMPLES, run_cli

pytestmark = pytest.mark.convert


DIGITS = ["--calibration", SAMPLES / "calibration", "--validate", SAMPLES / "validation", "--labels",
          SAMPLES / "labels.txt", "--mean", "0", "--std", "255"]
FLOAT_DIGITS = SAMPLES / "artifacts" / "digits_cnn_fp32.tflite"


def test_every_tflite_recipe_from_a_float_tflite(tmp_path):
    """edgekit's own fp32 artifact (metadata and packed labels included) as a third party would hand it over."""
    result = run_cli("convert", FLOAT_DIGITS, "-q", "fp32,fp16,int8-weights,int8,int16x8", *DIGITS, "-o", tmp_path,
                     "--report", tmp_path / "report.json")
    assert result.exit_code == 0, result.output + result.stderr
    report = {a["quantize"]: a for a in json.loads((tmp_path / "report.json").read_text())["artifacts"]}
    assert report["fp32"]["parity"]["cosine"] >= 0.9999
    assert report["int8"]["parity"]["top1_agreement"] >= 0.95
    assert report["int8"]["size_bytes"] < 0.6 * report["fp32"]["size_bytes"]  # the weights really are 8-bit
    assert report["fp16"]["size_bytes"] < 0.75 * report["fp32"]["size_bytes"]
    import edgekit

    model = edgekit.load(tmp_path / "digits_cnn_fp32_int8.tflite")
    manifest = json.loads((tmp_path / "digits_cnn_fp32_int8.tflite.json").read_text())
    assert manifest["source"]["kind"] == "tflite" and manifest["labels"][:2] == ["0", "1"]
    files = sorted((SAMPLES / "validation").glob("*.png"))[:30]
    truth = np.array([int(f.stem.split("label")[1]) for f in files])
    got = np.array([int(model.classify(f)[0][0][0]) for f in files])
    assert (got == truth).mean() >= 0.9


def test_a_signatureless_third_party_model(tmp_path):
    """MediaPipe's hand re-crop model (Apache-2.0, tests/data): no signature, PReLU. fp16 converts with
    parity; ai-edge-quantizer 0.10's int8 of it is refused by LiteRT itself (XNNPACK cannot delegate its
    requantizing MAX_POOL_2D): the recipe fails with the runtime's reason and writes nothing, the others
    are kept."""
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", rng.uniform(0, 1, (24, 256, 256, 3)).astype(np.float32))
    out = tmp_path / "out"
    result = run_cli("convert", SAMPLES.parent / "tests" / "data" / "hand_recrop.tflite", "-q", "fp32,fp16,int8",
                     "--calibration", tmp_path / "cal.npz", "-o", out, "--report", tmp_path / "r.json")
    report = {a["quantize"]: a for a in json.loads((tmp_path / "r.json").read_text())["artifacts"]}
    assert report["fp32"]["parity"]["cosine"] >= 0.9999 and report["fp16"]["parity"]["cosine"] >= 0.999
    assert (out / "hand_recrop_fp16.tflite").exists()
    if "error" in report["int8"]:
        assert result.exit_code != 0 and "Traceback" not in result.stderr
        assert "LiteRT refuses to run it" in report["int8"]["error"]
        assert not (out / "hand_recrop_int8.tflite").exists()
    else:  # a later quantizer fixed it: then it must hold its gate like any artifact
        assert report["int8"]["gate"]["passed"], report["int8"]


def test_core_ml_from_a_tflite_is_refused_before_any_work(tmp_path):
    result = run_cli("convert", FLOAT_DIGITS, "--to", "coreml", "-q", "fp16", "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "coremltools reads no .tflite" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_an_already_quantized_tflite_is_refused(tmp_path):
    result = run_cli("convert", SAMPLES / "artifacts" / "digits_cnn_int8.tflite", "-q", "fp32", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "already quantized" in result.stderr


def test_options_of_the_tensorflow_route_are_refused_not_ignored(tmp_path):
    """--io/--io-out/--keep-float steer TFLiteConverter; the quantizer route cannot honour them."""
    result = run_cli("convert", FLOAT_DIGITS, "-q", "int8", "--io", "float", "--calibration", SAMPLES / "calibration",
                     "-o", tmp_path / "out")
    assert result.exit_code == 2 and "--io, --io-out and --keep-float" in result.stderr
    assert not (tmp_path / "out").exists()
