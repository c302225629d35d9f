"""Model shapes beyond the one-image sample, built in code: a two-input (image + tabular) model and
a token-id text classifier. Each converts with every TFLite recipe that applies, runs, and is
compared with Keras; the defects round 2 found on them stay fixed."""
from __future__ import annotations

import json

import numpy as np
import pytest

import edgekit
from conftest import ALL_TFLITE_RECIPES, run_cli

pytestmark = pytest.mark.convert

RNG = np.random.default_rng(7)


@pytest.fixture(scope="module")
def two_input(tmp_path_factory):
    """image (16x16x3) + 5 tabular features -> 3 classes, trained a few steps so outputs vary."""
    import keras

    keras.utils.set_random_seed(3)
    image = keras.Input((16, 16, 3), name="image")
    table = keras.Input((5,), name="features")
    x = keras.layers.Conv2D(8, 3, activation="relu")(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Concatenate()([x, keras.layers.Dense(8, activation="relu")(table)])
    out = keras.layers.Dense(3, activation="softmax", name="probs")(x)
    model = keras.Model([image, table], out)
    folder = tmp_path_factory.mktemp("two_input")
    path = folder / "two_input.keras"
    model.save(path)
    data = {"image": RNG.uniform(0, 1, (120, 16, 16, 3)).astype(np.float32),
            "features": RNG.standard_normal((120, 5)).astype(np.float32)}
    np.savez(folder / "calibration.npz", **data)
    return {"dir": folder, "model": model, "path": path, "data": data}


def test_two_input_model_converts_every_recipe_and_runs_at_batch_two(two_input):
    """Resizing one input and allocating before the other made XNNPACK fail to reshape."""
    out = two_input["dir"] / "artifacts"
    result = run_cli("convert", two_input["path"], "-q", ",".join(ALL_TFLITE_RECIPES), "--io", "float",
                     "--calibration", two_input["dir"] / "calibration.npz", "-o", out)
    assert result.exit_code == 0, result.output + result.stderr
    data = two_input["data"]
    expected = two_input["model"].predict([data["image"][:2], data["features"][:2]], verbose=0)
    for recipe in ALL_TFLITE_RECIPES:
        model = edgekit.load(out / f"two_input_{recipe}.tflite")
        got = model.predict({"image": data["image"][:2], "features": data["features"][:2]})
        assert got.shape == (2, 3)
        np.testing.assert_allclose(got, expected, atol=0.05 if recipe.startswith("int") else 1e-3)
        single = model.predict({"image": data["image"][:1], "features": data["features"][:1]})  # and back to 1
        np.testing.assert_allclose(single, got[:1], atol=1e-6)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """Embedding(50) over 12 int32 token ids -> 4 classes."""
    import keras

    keras.utils.set_random_seed(5)
    ids = keras.Input((12,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(50, 8)(ids)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(4, activation="softmax", name="probs")(x)
    model = keras.Model(ids, out)
    folder = tmp_path_factory.mktemp("text")
    model.save(folder / "text.keras")
    tokens = RNG.integers(0, 50, (100, 12)).astype(np.int32)
    np.savez(folder / "calibration.npz", tokens=tokens)
    return {"dir": folder, "model": model, "tokens": tokens}


def test_int32_token_inputs_calibrate_int8_and_bench_makes_valid_ids(text_model):
    """.npz calibration used to be cast to float32 for every input: 'Got value of type FLOAT32 but
    expected type INT32', blamed on the model. bench fed floats cast to int."""
    folder = text_model["dir"]
    result = run_cli("convert", folder / "text.keras", "-q", "fp32,int8", "--io", "float",
                     "--calibration", folder / "calibration.npz", "-o", folder / "out")
    assert result.exit_code == 0, result.output + result.stderr
    artifact = folder / "out" / "text_int8.tflite"
    model = edgekit.load(artifact)
    assert model.inputs[0].dtype == "int32"
    expected = text_model["model"].predict(text_model["tokens"][:20], verbose=0)
    got = model.predict(text_model["tokens"][:20])
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.9

    from edgekit.bench import random_inputs
    from edgekit.tflite.graph import vocabulary_sizes

    vocab = vocabulary_sizes(artifact.read_bytes())
    assert list(vocab.values()) == [50]
    (ids,) = random_inputs(model, np.random.default_rng(0), vocab)
    assert ids.dtype == np.int32 and ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 5
    bench = run_cli("bench", artifact, "--runs", "5", "--json")
    assert bench.exit_code == 0, bench.output
    assert json.loads(bench.stdout)["runs"] == 5


def test_fractional_values_for_an_integer_input_are_refused(text_model, tmp_path):
    np.savez(tmp_path / "bad.npz", tokens=text_model["tokens"].astype(np.float32) + 0.5)
    result = run_cli("convert", text_model["dir"] / "text.keras", "-q", "int8", "--calibration", tmp_path / "bad.npz",
                     "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "input 'tokens' takes int32 values (e.g. token ids), but the data holds fractional numbers" in result.stderr


@pytest.fixture(scope="module")
def wide_softmax(tmp_path_factory):
    """16 features -> 1000-way softmax, untrained: every probability is near 0.001, below the int8
    output step of 1/256 (what MobileNetV3/EfficientNet with their softmax head showed)."""
    import keras

    keras.utils.set_random_seed(11)
    inputs = keras.Input((16,), name="features")
    x = keras.layers.Dense(64, activation="relu")(inputs)
    out = keras.layers.Dense(1000, activation="softmax", name="probs")(x)
    folder = tmp_path_factory.mktemp("wide")
    keras.Model(inputs, out).save(folder / "wide.keras")
    np.savez(folder / "calibration.npz", features=RNG.standard_normal((150, 16)).astype(np.float32))
    return folder


def test_parity_gate_rejects_an_underflowing_int8_softmax_and_names_the_fix(wide_softmax):
    out, report = wide_softmax / "out", wide_softmax / "report.json"
    result = run_cli("convert", wide_softmax / "wide.keras", "-q", "fp32,int8", "--calibration",
                     wide_softmax / "calibration.npz", "-o", out, "--report", report)
    assert result.exit_code == 5, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("Error: 1 of 2 recipes failed: int8: parity gate: cosine")
    assert (out / "wide_fp32.tflite").exists()
    assert not (out / "wide_int8.tflite").exists() and (out / "wide_int8.tflite.rejected").exists()
    assert not (out / "wide_int8.tflite.json").exists()
    row = next(line for line in result.stdout.splitlines() if line.startswith("tflite  int8"))
    assert "REJECTED" in row
    assert "int8: output 'probs' underflows its integer type" in result.stdout
    assert "--keep-float SOFTMAX --io-out float" in result.stdout
    int8 = next(a for a in json.loads(report.read_text())["artifacts"] if a["quantize"] == "int8")
    assert int8["error_kind"] == "parity" and int8["gate"] == {"min_cosine": 0.98, "min_top1": 0.9, "passed": False}
    assert int8["largest_quantization_error"][0]["layer"].startswith("output probs")  # ranked, not hidden

    fixed = run_cli("convert", wide_softmax / "wide.keras", "-q", "int8", "--calibration",
                    wide_softmax / "calibration.npz", "--keep-float", "SOFTMAX", "--io-out", "float",
                    "-o", out, "--report", report, "--force")
    assert fixed.exit_code == 0, fixed.output + fixed.stderr
    artifact = json.loads(report.read_text())["artifacts"][0]
    assert artifact["parity"]["cosine"] > 0.99 and artifact["gate"]["passed"] is True
    model = edgekit.load(out / "wide_int8.tflite")
    assert model.inputs[0].dtype == "int8" and model.outputs[0].dtype == "float32"

    ungated = run_cli("convert", wide_softmax / "wide.keras", "-q", "int8", "--calibration",
                      wide_softmax / "calibration.npz", "-o", out, "--no-gate", "--force")
    assert ungated.exit_code == 0 and (out / "wide_int8.tflite").exists()


def test_lstm_over_unknown_length_fails_in_one_line_with_the_remedy(tmp_path):
    """The converter's hint used to hide behind a kilobyte of MLIR location dump."""
    import keras

    ids = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.LSTM(8)(keras.layers.Embedding(30, 4)(ids))
    keras.Model(ids, keras.layers.Dense(3, activation="softmax")(x)).save(tmp_path / "lstm.keras")
    result = run_cli("convert", tmp_path / "lstm.keras", "-q", "fp32", "-o", tmp_path / "out")
    assert result.exit_code == 5
    last = result.stderr.strip().splitlines()[-1]
    assert "needs tf.TensorListReserve" in last and "give the model a fixed sequence length" in last
    assert "loc(" not in last and len(last) < 450


def _sequence_model(kind: str):
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    ids = keras.Input((32,), dtype="int32", name="tokens")
    x = layers.Embedding(1000, 32)(ids)
    if kind == "lstm":
        x = layers.LSTM(64)(x)
    elif kind == "gru":
        x = layers.GRU(64)(x)
    else:  # a Transformer encoder block
        x = layers.LayerNormalization()(x + layers.MultiHeadAttention(4, 8)(x, x))
        x = layers.LayerNormalization()(x + layers.Dense(32)(layers.Dense(64, activation="relu")(x)))
        x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(ids, layers.Dense(4, activation="softmax")(x))


@pytest.mark.parametrize("kind", ["lstm", "gru", "transformer"])
def test_keras_sequence_models_at_a_fixed_length_convert_in_both_formats(tmp_path, kind):
    """Embedding -> LSTM / GRU / attention over 32 token ids: every recipe used to fail in both formats
    (TFLite: TensorListReserve; Core ML: `list index out of range`). Recurrent layers are now unrolled
    for conversion (same weights), and the artifacts are checked against the original model."""
    _sequence_model(kind).save(tmp_path / f"{kind}.keras")
    np.savez(tmp_path / "tokens.npz", np.random.default_rng(0).integers(0, 1000, (40, 32)).astype(np.int32))
    result = run_cli("convert", tmp_path / f"{kind}.keras", "--to", "tflite,coreml", "-q", "fp32,int8,fp16",
                     "--calibration", tmp_path / "tokens.npz", "-o", tmp_path / "out", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output + result.stderr
    report = {(a["format"], a["quantize"]): a["parity"] for a in json.loads((tmp_path / "r.json").read_text())["artifacts"]}
    assert report[("tflite", "fp32")]["cosine"] >= 0.9999 and report[("coreml", "fp32")]["cosine"] >= 0.9999
    assert report[("tflite", "int8")]["cosine"] >= 0.99 and report[("coreml", "fp16")]["cosine"] >= 0.999


def _keras_gap_model(kind: str, folder):
    """Three Keras models that failed Core ML before: 1-D convolutions (the executor refused rank-3
    convs), exact GELU (coremltools lacks TF's Erfc), and a SavedModel from model.export() (several
    concrete functions: "Only a single concrete function is supported")."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    if kind == "conv1d":
        i = keras.Input((64, 3))
        x = layers.Conv1D(8, 3, strides=2)(layers.Conv1D(8, 5, padding="same", activation="relu")(i))
        keras.Model(i, layers.Dense(4, activation="softmax")(layers.GlobalAveragePooling1D()(x))).save(folder / "m.keras")
        return folder / "m.keras", (64, 3)
    i = keras.Input((16,))
    model = keras.Model(i, layers.Dense(4)(layers.Dense(32, activation="gelu")(i)))
    if kind == "gelu":
        model.save(folder / "m.keras")
        return folder / "m.keras", (16,)
    model.export(str(folder / "exported"), verbose=False)
    return folder / "exported", (16,)


@pytest.mark.parametrize("kind", ["conv1d", "gelu", "exported_savedmodel"])
def test_keras_models_core_ml_used_to_refuse(tmp_path, kind):
    model, shape = _keras_gap_model(kind, tmp_path)
    np.savez(tmp_path / "x.npz", np.random.default_rng(0).normal(size=(20, *shape)).astype(np.float32))
    result = run_cli("convert", model, "--to", "coreml,tflite", "-q", "fp32,fp16", "--validate", tmp_path / "x.npz",
                     "-o", tmp_path / "out", "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output + result.stderr
    report = {(a["format"], a["quantize"]): a["parity"] for a in json.loads((tmp_path / "r.json").read_text())["artifacts"]}
    assert report[("coreml", "fp32")]["cosine"] >= 0.9999 and report[("coreml", "fp16")]["cosine"] >= 0.999
    assert report[("tflite", "fp32")]["cosine"] >= 0.9999
