"""Small, backend-free checks of the pieces the pipeline is built from."""
from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.dataset import load_dataset
from edgekit.errors import InputError
from edgekit.manifest import TensorInfo
from edgekit.parity import looks_like_probabilities, output_parity
from edgekit.preprocess import ImageSpec
from edgekit.recipes import parse_recipes
from edgekit.runtime import dequantize, quantize

pytestmark = pytest.mark.device


def test_parity_metrics_by_hand():
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    got = np.array([[1.0, 1.5], [0.0, 2.0]])
    p = output_parity("y", ref, got)
    assert p["max_abs_err"] == 1.5 and p["mean_abs_err"] == 0.375
    assert math.isclose(p["snr_db"], 10 * math.log10(5 / 2.25))
    assert math.isclose(p["cosine"], 5 / (math.sqrt(5) * math.sqrt(7.25)))
    assert p["top1_agreement"] == 0.5
    assert output_parity("y", ref, ref)["snr_db"] == 200.0
    assert output_parity("v", np.ones((3,)), np.ones((3,)))["top1_agreement"] is None
    assert output_parity("y", ref, got, classifier=False)["top1_agreement"] is None


def test_probability_detection():
    assert looks_like_probabilities(np.array([[0.2, 0.8], [1.0, 0.0]]))
    assert not looks_like_probabilities(np.array([[2.0, -1.0], [0.5, 0.5]]))  # logits
    assert not looks_like_probabilities(np.array([0.5, 0.5]))


def test_quantize_round_trip_and_saturation():
    info = TensorInfo("x", (None, 3), "int8", scale=0.5, zero_point=-10)
    q = quantize(np.array([[0.0, 1.26, 1000.0]]), info)
    assert q.tolist() == [[-10, -7, 127]]
    assert dequantize(q, info).tolist() == [[0.0, 1.5, 68.5]]


def test_recipes_parse_dedupe_and_format_table():
    assert [r.name for r in parse_recipes("fp32, int8 ,fp32", ["tflite"])] == ["fp32", "int8"]
    with pytest.raises(InputError, match="coreml supports"):
        parse_recipes("int16x8", ["coreml"])


def test_composed_recipes_know_which_steps_need_calibration():
    # distillation, block ranking and activation-ranked pruning read the calibration inputs; the
    # others (and an fp16 base) do not, so convert must ask for --calibration exactly for the first
    needs = {r.name: r.needs_calibration for r in parse_recipes(
        "prune-channels-30-act-m16+fp16,prune-channels-30-act+fp16,prune-blocks-50+fp16,"
        "prune-channels-30-m16+fp16,lowrank-50+fp16,prune-channels-30+distill+fp16", ["tflite"])}
    assert needs == {"prune-channels-30-act-m16+fp16": True, "prune-channels-30-act+fp16": True,
                     "prune-blocks-50+fp16": True, "prune-channels-30-m16+fp16": False,
                     "lowrank-50+fp16": False, "prune-channels-30+distill+fp16": True}


def test_image_spec_per_channel_normalization(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 2), (255, 128, 0)).save(tmp_path / "a.png")
    spec = ImageSpec(height=2, width=4, channels=3, mean=(255.0, 128.0, 0.0), std=(1.0, 2.0, 4.0))
    assert np.allclose(spec.load(tmp_path / "a.png"), 0.0)
    gray = ImageSpec(height=3, width=3, channels=1, mean=(0.0,), std=(255.0,))
    x = gray.load(tmp_path / "a.png")
    assert x.shape == (3, 3, 1) and 0.0 < x.mean() < 1.0
    with pytest.raises(InputError, match="--std expects 1 or 3 values"):
        ImageSpec(height=2, width=2, channels=3, std=(1.0, 2.0))


def test_npz_dataset_by_input_name_and_limit(tmp_path):
    inputs = [TensorInfo("a", (None, 2), "float32"), TensorInfo("b", (None, 3), "float32")]
    np.savez(tmp_path / "d.npz", b=np.ones((5, 3)), a=np.zeros((5, 2)))
    ds = load_dataset(tmp_path / "d.npz", inputs, None, limit=4)
    assert len(ds) == 4 and ds.arrays[0].shape == (4, 2) and ds.arrays[1].shape == (4, 3)
    assert ds.sha256() == load_dataset(tmp_path / "d.npz", inputs, None, limit=4).sha256()
    np.savez(tmp_path / "bad.npz", a=np.zeros((5, 2)))
    with pytest.raises(InputError, match="named a, b; it has a"):
        load_dataset(tmp_path / "bad.npz", inputs, None)


