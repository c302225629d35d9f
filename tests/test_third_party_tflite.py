"""Models converted by TensorFlow directly, not by edgekit: the third-party .tflite files the device
side must also handle (fixed batch, no manifest, custom ops, several signatures, hand-checked MACs).
Building them needs TensorFlow, so this module is in the convert tier."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

import edgekit
from conftest import ROOT, run_cli, tflite_from_function
from edgekit.emulator import Cluster, CoreType, Device, op_seconds
from edgekit.tflite.graph import read_graph

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def fixed_batch_tflite(tmp_path_factory):
    """A third-party model (converted by TensorFlow directly) with a fixed batch of 1."""
    import tensorflow as tf

    return tflite_from_function(
        lambda x: tf.nn.relu(tf.matmul(x, tf.reshape(tf.range(32, dtype=tf.float32), [8, 4])) - 50.0),
        [tf.TensorSpec([1, 8], tf.float32)], tmp_path_factory.mktemp("fixed") / "affine.tflite")


def test_predict_batch_loops_on_fixed_batch_model(fixed_batch_tflite):
    model = edgekit.load(fixed_batch_tflite)
    assert not model.resizable_batch and model.manifest is None
    xs = [np.full(8, i, np.float32) for i in range(5)]
    got = model.predict_batch(xs, batch_size=4)
    w = np.arange(32, dtype=np.float32).reshape(8, 4)
    for x, y in zip(xs, got):
        np.testing.assert_allclose(y, np.maximum(x @ w - 50, 0), rtol=1e-6)
    with pytest.raises(edgekit.InputError, match="fixed batch of 1, got 3"):
        model.predict(np.zeros((3, 8), np.float32))


def test_image_without_preprocessing_is_refused(fixed_batch_tflite, image_files):
    model = edgekit.load(fixed_batch_tflite)
    with pytest.raises(edgekit.InputError):
        model.predict(image_files[0])


def test_missing_custom_op_is_named(tmp_path):
    import tensorflow as tf

    path = tflite_from_function(tf.linalg.det, [tf.TensorSpec([1, 3, 3], tf.float32)], tmp_path / "custom.tflite",
                                allow_custom_ops=True)
    with pytest.raises(edgekit.ArtifactError, match="uses custom op MatrixDeterminant"):
        edgekit.load(path)
    result = run_cli("inspect", path)
    assert "custom ops (need a registered kernel on the device): MatrixDeterminant" in result.stdout


def test_multi_signature_model(tmp_path):
    """Two signatures in one .tflite (converted by TensorFlow directly): both callable by name."""
    import tensorflow as tf

    module = tf.Module()
    module.double = tf.function(lambda x: {"y": x * 2.0}, input_signature=[tf.TensorSpec([None, 3], tf.float32, "x")])
    module.plus = tf.function(lambda x: {"y": x + 10.0}, input_signature=[tf.TensorSpec([None, 3], tf.float32, "x")])
    saved = tmp_path / "sm"
    tf.saved_model.save(module, str(saved), signatures={"double": module.double.get_concrete_function(),
                                                        "plus": module.plus.get_concrete_function()})
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=["double", "plus"])
    path = tmp_path / "two.tflite"
    path.write_bytes(converter.convert())
    model = edgekit.load(path)
    assert sorted(model.signatures) == ["double", "plus"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(model.predict(x, signature="double"), x * 2)
    np.testing.assert_allclose(model.predict(x, signature="plus"), x + 10)


def test_conv_depthwise_dense_macs_by_hand(tmp_path):
    import keras

    conv = _single_op_tflite(tmp_path, keras.layers.Conv2D(16, 3, padding="same", use_bias=False), (8, 8, 4))
    (op,) = [o for o in conv.ops if o.type == "CONV_2D"]
    assert op.macs == 8 * 8 * 16 * 3 * 3 * 4  # out pixels x out channels x kernel x in channels
    # weights: the 3x3x4x16 filter plus the zero bias (16 floats) the converter always adds
    assert op.bytes_weights == (16 * 3 * 3 * 4 + 16) * 4 and op.bytes_in == 8 * 8 * 4 * 4 and op.bytes_out == 8 * 8 * 16 * 4

    dw = _single_op_tflite(tmp_path, keras.layers.DepthwiseConv2D(3, strides=2, padding="valid"), (9, 9, 8))
    (op,) = [o for o in dw.ops if o.type == "DEPTHWISE_CONV_2D"]
    assert op.macs == 4 * 4 * 8 * 3 * 3  # (9-3)/2+1 = 4

    fc = _single_op_tflite(tmp_path, keras.layers.Dense(10), (32,))
    (op,) = [o for o in fc.ops if o.type == "FULLY_CONNECTED"]
    assert op.macs == 32 * 10 and op.precision == "fp32"


def test_op_cost_formula_by_hand(tmp_path):
    import keras

    graph = _single_op_tflite(tmp_path, keras.layers.Dense(1000, use_bias=False), (1000,))
    (op,) = [o for o in graph.ops if o.type == "FULLY_CONNECTED"]
    core = CoreType("test-core", fp32_macs_per_cycle=8, dotprod=False, efficiency=0.5, calibrated=True)
    device = Device("t", "test", (Cluster(4, core, 2.0),), dram_bw_gbs=4.0, ram_mb=1024, source="test")
    params = {"class_efficiency": {"conv": 1.0, "dwconv": 0.5, "fc": 0.25}, "elementwise_values_per_mac": 1.0,
              "int8_gain_dot": 4.0, "int8_gain_nodot": 2.0, "hybrid_factor": 0.5, "int16_factor": 0.1,
              "serial_fraction": 0.2, "op_overhead_cycles": 2000, "bandwidth_efficiency": 0.5,
              "legacy_runtime_factor": 1.0}
    one, bound = op_seconds(op, device.fastest(1), device, params)
    compute = 1e6 / (2e9 * 8 * 0.5 * 0.25)         # 1M MACs at 2 GHz x 8 MACs x core eff x fc eff = 500 us
    memory = (4000 + 4000 + 4e6) / (4e9 * 0.5)       # 4 MB of weights over 2 GB/s effective = 2004 us
    assert bound == "memory" and one == pytest.approx(max(compute, memory) + 2000 / 2e9)
    params["bandwidth_efficiency"] = 100.0           # make it compute-bound to check thread scaling
    four, bound = op_seconds(op, device.fastest(4), device, params)
    assert bound == "compute" and four == pytest.approx(compute * (0.2 + 0.8 / 4) + 1e-6, rel=1e-3)


def test_emulate_names_ops_it_cannot_cost(tmp_path):
    import tensorflow as tf

    path = tflite_from_function(lambda x: tf.linalg.det(x) + tf.reduce_sum(x), [tf.TensorSpec([1, 3, 3], tf.float32)],
                                tmp_path / "custom.tflite", allow_custom_ops=True)
    result = run_cli("emulate", path, "--target", "rpi4")
    assert result.exit_code == 0
    assert "not costed (estimate excludes them): CUSTOM" in result.stderr


def test_inspect_third_party_tflite_without_manifest(tmp_path):
    """A model converted by TensorFlow directly, not by edgekit."""
    import tensorflow as tf

    path = tflite_from_function(lambda x: tf.nn.relu(tf.matmul(x, tf.ones([8, 4])) + 1.0),
                                [tf.TensorSpec([1, 8], tf.float32)], tmp_path / "third_party.tflite")
    result = run_cli("inspect", path, "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["manifest"] is None
    assert info["inputs"][0]["shape"] == [1, 8] and info["outputs"][0]["shape"] == [1, 4]
    assert "FULLY_CONNECTED" in info["ops"]
    text = run_cli("inspect", path)
    assert "no edgekit manifest" in text.stdout


def _single_op_tflite(tmp_path, layer, input_shape):
    import keras
    import tensorflow as tf

    inp = keras.Input(input_shape, batch_size=1)
    model = keras.Model(inp, layer(inp))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path = tmp_path / "op.tflite"
    path.write_bytes(converter.convert())
    return read_graph(path.read_bytes())


def test_inspect_knows_the_custom_ops_the_runtime_provides(tmp_path):
    """MediaPipe's Convolution2DTransposeBias runs on stock LiteRT (the XNNPACK delegate claims it), so
    inspect must not list it as needing a kernel; an unknown custom op still is."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(ROOT / "tests" / "data" / "lookup.tflite"))
    for name in ("Convolution2DTransposeBias", "MyVendorOp"):
        code = copy.deepcopy(model.operatorCodes[0])
        code.builtinCode = code.deprecatedBuiltinCode = 32  # CUSTOM
        code.customCode = name.encode()
        model.operatorCodes.append(code)
        op = copy.deepcopy(model.subgraphs[0].operators[0])
        op.opcodeIndex, op.builtinOptionsType, op.builtinOptions = len(model.operatorCodes) - 1, 0, None
        model.subgraphs[0].operators.append(op)
    path = tmp_path / "custom.tflite"
    flatbuffer_utils.write_model(model, str(path))
    result = run_cli("inspect", path)
    assert "custom ops the LiteRT runtime provides: Convolution2DTransposeBias (XNNPACK delegate)" in result.stdout
    assert "custom ops (need a registered kernel on the device): MyVendorOp" in result.stdout
    data = json.loads(run_cli("inspect", path, "--json").stdout)
    assert data["custom_ops_needing_a_kernel"] == ["MyVendorOp"]
