"""The executor's ops one by one against TensorFlow, then whole keras.applications networks
(MobileNetV2, MobileNetV3Small, EfficientNetB0, ResNet50) converted and executed against Keras."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli
from edgekit.coreml import ops

pytestmark = pytest.mark.convert

RNG = np.random.default_rng(0)


def nchw_to_nhwc(x):
    return np.transpose(x, (0, 2, 3, 1))


@pytest.mark.parametrize("kernel, stride, pad_type, dilation", [
    (3, 1, "same", 1), (3, 2, "valid", 1), (1, 1, "valid", 1), (3, 2, "same", 1), (5, 1, "same", 2), (2, 2, "same", 1)])
def test_conv_matches_tensorflow(kernel, stride, pad_type, dilation):
    import tensorflow as tf

    x = RNG.standard_normal((1, 6, 11, 9)).astype(np.float32)
    w = RNG.standard_normal((8, 6, kernel, kernel)).astype(np.float32)  # MIL: (Cout, Cin, kh, kw)
    b = RNG.standard_normal(8).astype(np.float32)
    ours = ops.conv(x, w, b, strides=[stride] * 2, pad_type=pad_type, dilations=[dilation] * 2)
    ref = tf.nn.conv2d(nchw_to_nhwc(x), np.transpose(w, (2, 3, 1, 0)), strides=stride, padding=pad_type.upper(),
                       dilations=dilation).numpy() + b
    np.testing.assert_allclose(nchw_to_nhwc(ours), ref, atol=1e-4)


def test_conv_custom_padding_and_groups():
    x = RNG.standard_normal((1, 4, 7, 7)).astype(np.float32)
    w = RNG.standard_normal((6, 2, 3, 3)).astype(np.float32)
    ours = ops.conv(x, w, strides=[1, 1], pad_type="custom", pad=[1, 2, 0, 1], groups=2)
    padded = np.pad(x, [(0, 0), (0, 0), (1, 2), (0, 1)])
    ref = np.concatenate([ops.conv(padded[:, :2], w[:3]), ops.conv(padded[:, 2:], w[3:])], axis=1)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("stride, pad_type", [(1, "same"), (2, "same"), (2, "valid")])
def test_depthwise_matches_tensorflow(stride, pad_type):
    import tensorflow as tf

    x = RNG.standard_normal((1, 5, 9, 9)).astype(np.float32)
    w = RNG.standard_normal((5, 1, 3, 3)).astype(np.float32)
    ours = ops.conv(x, w, strides=[stride] * 2, pad_type=pad_type, groups=5)
    ref = tf.nn.depthwise_conv2d(nchw_to_nhwc(x), np.transpose(w, (2, 3, 0, 1)), strides=[1, stride, stride, 1],
                                 padding=pad_type.upper()).numpy()
    np.testing.assert_allclose(nchw_to_nhwc(ours), ref, atol=1e-4)


@pytest.mark.parametrize("pool, pad_type", [("max", "same"), ("max", "valid"), ("avg", "same"), ("avg", "valid")])
def test_pooling_matches_tensorflow(pool, pad_type):
    import tensorflow as tf

    x = RNG.standard_normal((1, 3, 9, 10)).astype(np.float32)
    if pool == "max":
        ours = ops.max_pool(x, [3, 3], [2, 2], pad_type=pad_type)
        ref = tf.nn.max_pool2d(nchw_to_nhwc(x), 3, 2, pad_type.upper()).numpy()
    else:  # TF's SAME average pooling divides by the valid count
        ours = ops.avg_pool(x, [3, 3], [2, 2], pad_type=pad_type, exclude_padding_from_average=True)
        ref = tf.nn.avg_pool2d(nchw_to_nhwc(x), 3, 2, pad_type.upper()).numpy()
    np.testing.assert_allclose(nchw_to_nhwc(ours), ref, atol=1e-5)


def test_elementwise_and_shape_ops():
    import tensorflow as tf

    x = RNG.standard_normal((2, 7)).astype(np.float32) * 4
    np.testing.assert_allclose(ops.softmax(x, axis=-1), tf.nn.softmax(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(ops.silu(x), tf.nn.silu(x).numpy(), atol=1e-5)
    np.testing.assert_allclose(ops.sigmoid_hard(x, 1 / 6, 0.5), np.clip(x / 6 + 0.5, 0, 1), atol=1e-6)
    w, b = RNG.standard_normal((3, 7)).astype(np.float32), RNG.standard_normal(3).astype(np.float32)
    np.testing.assert_allclose(ops.linear(x, w, b), x @ w.T + b, atol=1e-5)
    np.testing.assert_allclose(ops.matmul(x, w, transpose_y=True), x @ w.T, atol=1e-5)
    img = RNG.standard_normal((1, 2, 4, 5)).astype(np.float32)
    for mode, tf_mode in (("constant", "CONSTANT"), ("reflect", "REFLECT"), ("replicate", "SYMMETRIC")):
        got = ops.pad(img, [1, 1, 2, 0], mode=mode)
        if mode != "replicate":  # TF has no edge mode; SYMMETRIC differs from replicate
            ref = tf.pad(img, [[0, 0], [0, 0], [1, 1], [2, 0]], mode=tf_mode).numpy()
            np.testing.assert_allclose(got, ref)
        else:
            np.testing.assert_allclose(got, np.pad(img, [(0, 0), (0, 0), (1, 1), (2, 0)], mode="edge"))
    np.testing.assert_allclose(ops.reduce_mean(img, axes=[2, 3], keep_dims=True), img.mean(axis=(2, 3), keepdims=True),
                               atol=1e-6)


def test_bit_unpacking_follows_the_spec_example():
    # constexpr_lut_to_dense doc: n_bits = 2, shape (5,), bytes |01 10 11 00| xx xx xx 11| -> 0, 3, 2, 1, 3
    packed = np.array([0b01101100, 0b00000011], np.uint8)
    assert ops.unpack_bits(packed, 2, 5).tolist() == [0, 3, 2, 1, 3]


ARCHITECTURES = ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "ResNet50"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_keras_applications_executed_against_keras(name, tmp_path):
    """weights=None with BatchNorm statistics set by two training-mode passes, so activations have
    realistic ranges; logits (no softmax), so the comparison is not of flat probabilities."""
    import keras

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(input_shape=(224, 224, 3), weights=None, classifier_activation=None)
    rng = np.random.default_rng(0)
    for _ in range(2):
        model(rng.uniform(-1, 1, (8, 224, 224, 3)).astype(np.float32), training=True)
    model.save(tmp_path / f"{name}.keras")
    np.savez(tmp_path / "val.npz", x=rng.uniform(0, 255, (3, 224, 224, 3)).astype(np.float32))
    report = tmp_path / "r.json"
    result = run_cli("convert", tmp_path / f"{name}.keras", "--to", "coreml", "-q", "fp32,fp16",
                     "--validate", tmp_path / "val.npz", "-o", tmp_path / "out", "--report", report)
    assert result.exit_code == 0, result.stderr
    parity = {a["quantize"]: a["parity"] for a in json.loads(report.read_text())["artifacts"]}
    assert parity["fp32"]["cosine"] >= 0.99999, parity["fp32"]
    assert parity["fp16"]["cosine"] >= 0.999, parity["fp16"]
    assert parity["fp32"]["samples"] == 3
