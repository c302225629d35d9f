"""Compression before conversion (converters/compress) and `edgekit sweep`: each transform checked
on converted .tflite artifacts (parity where the transform is exact, MACs read from the graph),
distillation against its teacher, the accuracy-budget loop and a small sweep end to end."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES, artifact_macs, run_cli, run_tflite

pytestmark = pytest.mark.convert


def _cosine(a, b) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _fp32_tflite(keras_model, tmp: Path, name: str) -> Path:
    """Save and convert through edgekit's own pipeline (fp32, no gate): the artifact the MACs and
    parity are read from."""
    from edgekit.converters.pipeline import ConvertOptions, convert
    from edgekit.recipes import RECIPES

    src = tmp / f"{name}.keras"
    keras_model.save(src)
    result = convert(ConvertOptions(model=src, formats=("tflite",), recipes=(RECIPES["fp32"],), out_dir=tmp / name,
                                    gate=False, explain_errors=False))
    assert not result.failed, result.failed[0].error
    return result.artifacts[0].path


def _residual_model(seed: int = 1):
    """Stem, two residual blocks (3x3 conv, BN, depthwise, 1x1 conv, Add), Dense head: every
    constraint the pruner has (Add groups, depthwise following its input, BN sliced along)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3), name="image")
    x = layers.ReLU(name="r0")(layers.BatchNormalization(name="bn0")(layers.Conv2D(16, 3, padding="same", name="stem")(inputs)))
    for b in range(2):
        y = layers.ReLU(name=f"b{b}r")(layers.BatchNormalization(name=f"b{b}bn1")(
            layers.Conv2D(24, 3, padding="same", name=f"b{b}c1")(x)))
        y = layers.DepthwiseConv2D(3, padding="same", name=f"b{b}dw")(y)
        y = layers.BatchNormalization(name=f"b{b}bn2")(layers.Conv2D(16, 1, name=f"b{b}c2")(y))
        x = layers.Add(name=f"b{b}add")([x, y])
    x = layers.Dense(64, activation="relu", name="fc")(layers.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(x))
    # BatchNormalization statistics away from the identity, so slicing them wrongly would show
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2.0, n)])
    return model


# ---- step names -------------------------------------------------------------------------------

def test_steps_parse_and_split_off_the_quantization_recipe():
    from edgekit.converters.compress import parse_steps, split_recipe

    steps, rest = split_recipe("prune-channels-30+distill+int8")
    assert [s.name for s in steps] == ["prune-channels-30", "distill"] and rest == "int8"
    assert [s.params for s in parse_steps("prune-channels-40-act+lowrank-e99+distill-3")] == [
        {"percent": 40.0, "criterion": "act"}, {"energy": 0.99}, {"epochs": 3}]
    assert split_recipe("fp16") == ([], "fp16")
    (step,) = parse_steps("prune-channels-30-act-m16")
    assert step.params == {"percent": 30.0, "criterion": "act", "multiple": 16} and step.name == "prune-channels-30-act-m16"
    assert parse_steps("prune-channels-30-m16")[0].name == "prune-channels-30-m16"


def test_convert_accepts_tile_rounded_pruning_and_refuses_a_bad_multiple_in_one_line(tmp_path):
    from edgekit.recipes import parse_recipes

    assert [r.name for r in parse_recipes("int8,prune-channels-30-m16+distill+int8", ["tflite"])] == [
        "int8", "prune-channels-30-m16+distill+int8"]
    result = run_cli("convert", SAMPLES / "digits_resnet.keras", "-q", "prune-channels-30-m1+int8", "-o", tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert result.exit_code == 2 and len(errors) == 1 and "expects M between 2 and 256" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.glob("*.tflite"))



def test_kept_channels_fill_whole_tiles():
    from edgekit.converters.compress.channels import kept_channels

    # digits_resnet's 32/64/128 channels at 30 %: 22/45/90 as percent, 16/48/96 on 16-channel tiles
    assert [kept_channels(n, 30) for n in (32, 64, 128)] == [22, 45, 90]
    assert [kept_channels(n, 30, 16) for n in (32, 64, 128)] == [16, 48, 96]
    assert [kept_channels(n, 40, 16) for n in (32, 64, 128)] == [16, 32, 80]
    assert kept_channels(16, 50, 16) == 16     # one tile already: pruning it would save no time
    assert kept_channels(90, 2, 16) == 90      # 88 rounds to 96, more than there are: all 90 stay
    assert kept_channels(90, 30, 16) == 64     # 63 -> 64
    assert kept_channels(128, 95, 64) == 64    # never below one tile


@pytest.mark.parametrize("text, says", [
    ("prune-channels-0", "between 1 and 95"), ("prune-channels-30x", "compression step like"),
    ("lowrank-e101", "between 1 and 100"), ("distill+int8", "after prune-channels-N"),
    ("int8+prune-channels-30", "may only come last"), ("prune-channels-30++int8", "empty part"),
    ("prune-channels-30-m1", "between 2 and 256"), ("prune-channels-30-m300", "between 2 and 256"),
    ("prune-blocks-0", "between 1 and 100"), ("prune-blocks-150", "between 1 and 100"),
    ("prune-blocks-x", "compression step like"),
])
def test_bad_step_text_is_one_line_input_error(text, says):
    from edgekit.converters.compress import split_recipe
    from edgekit.errors import InputError

    with pytest.raises(InputError) as e:
        split_recipe(text)
    assert says in str(e.value) and "\n" not in str(e.value)


# ---- low-rank -------------------------------------------------------------------------------------

def test_lowrank_at_full_rank_keeps_fp32_parity_in_the_artifact(tmp_path):
    from edgekit.converters.compress.lowrank import factorize

    model = _residual_model()
    factored, details = factorize(model, energy=1.0, only_if_cheaper=False)
    assert {d["layer"] for d in details} == {"b0c2", "b1c2", "fc"}  # never the output layer
    x = np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 3)).astype(np.float32)
    out = run_tflite(_fp32_tflite(factored, tmp_path, "full_rank"), x)
    assert _cosine(out, model.predict(x, verbose=0)) >= 0.9999
    assert out.shape == (16, 10)


def test_lowrank_cuts_dense_macs_by_the_stated_amount_in_the_graph(tmp_path):
    import keras
    from keras import layers

    from edgekit.converters.compress import compress

    keras.utils.set_random_seed(2)
    inputs = keras.Input((64,), name="features")
    x = layers.Dense(256, activation="relu", name="fc1")(inputs)
    x = layers.Dense(256, activation="relu", name="fc2")(x)
    model = keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(x))
    small, provenance = compress(model, "lowrank-50", None)
    row = provenance[0]
    # fc2: 256x256 -> rank floor(0.5 * 128) = 64: 2*64*256 MACs instead of 65536; fc1 64x256 -> rank 25;
    # the output layer stays whole
    assert {d["layer"]: d["rank"] for d in row["details"]} == {"fc1": 25, "fc2": 64}
    before = artifact_macs(_fp32_tflite(model, tmp_path, "mlp"))
    after = artifact_macs(_fp32_tflite(small, tmp_path, "mlp_lowrank"))
    assert (before, after) == (row["macs_before"], row["macs_after"])
    assert after == 25 * (64 + 256) + 64 * 512 + 2560 and after < 0.55 * before


# ---- structured pruning ---------------------------------------------------------------------------

def test_pruning_channels_whose_weights_are_zero_keeps_parity_exactly(tmp_path):
    import keras
    from keras import layers

    from edgekit.converters.compress import compress

    keras.utils.set_random_seed(3)
    inputs = keras.Input((12, 12, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inputs)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.Conv2D(8, 1, activation="relu", name="c2")(x)
    model = keras.Model(inputs, layers.Dense(5, activation="softmax", name="probs")(
        layers.GlobalAveragePooling2D(name="gap")(x)))
    dead = [1, 4, 6, 9]  # 25 % of c1's filters: zero kernel, zero bias, zero depthwise bias -> exactly 0
    kernel, bias = model.get_layer("c1").get_weights()
    kernel[..., dead], bias[dead] = 0.0, 0.0
    model.get_layer("c1").set_weights([kernel, bias])
    dw_kernel, dw_bias = model.get_layer("dw").get_weights()
    dw_bias[dead] = 0.0
    model.get_layer("dw").set_weights([dw_kernel, dw_bias])
    c2_kernel, c2_bias = model.get_layer("c2").get_weights()
    c2_kernel[..., :2], c2_bias[:2] = 0.0, 0.0   # 25 % of c2 too
    model.get_layer("c2").set_weights([c2_kernel, c2_bias])

    pruned, provenance = compress(model, "prune-channels-25", None)
    assert sorted((d["producers"][0], d["channels_after"]) for d in provenance[0]["details"]) == [("c1", 12), ("c2", 6)]
    x = np.random.default_rng(1).uniform(0, 1, (8, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6)
    out = run_tflite(_fp32_tflite(pruned, tmp_path, "pruned"), x)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=0, atol=1e-5)


def test_pruning_respects_residual_groups_and_cuts_macs_as_stated_in_the_graph(tmp_path):
    from edgekit.converters.compress import compress

    model = _residual_model()
    pruned, provenance = compress(model, "prune-channels-50", None)
    groups = {tuple(d["producers"]): (d["channels_before"], d["channels_after"]) for d in provenance[0]["details"]}
    # the stem and both blocks' 1x1 outputs meet in the Adds: one group; the softmax units are never pruned
    assert groups == {("b0c2", "b1c2", "stem"): (16, 8), ("b0c1",): (24, 12), ("b1c1",): (24, 12), ("fc",): (64, 32)}
    assert pruned.get_layer("probs").units == 10 and pruned.get_layer("b0dw").kernel.shape[2] == 12
    before = artifact_macs(_fp32_tflite(model, tmp_path, "residual"))
    after = artifact_macs(_fp32_tflite(pruned, tmp_path, "residual_pruned"))
    assert (before, after) == (provenance[0]["macs_before"], provenance[0]["macs_after"])
    assert after < 0.3 * before  # channels halved on both sides of most convolutions: about a quarter


def test_pruning_to_a_channel_multiple_leaves_whole_tiles_in_the_converted_graph(tmp_path):
    """prune-channels-30-m8: every pruned group keeps a multiple of 8 channels, as the converted
    graph's convolution and Dense outputs show, and the graph's MACs are what provenance states."""
    from edgekit.converters.compress import compress
    from edgekit.tflite.graph import read_graph

    model = _residual_model()
    plain, plain_provenance = compress(model, "prune-channels-30", None)
    tiled, provenance = compress(model, "prune-channels-30-m8", None)
    groups = {tuple(d["producers"]): d["channels_after"] for d in provenance[0]["details"]}
    assert groups == {("b0c2", "b1c2", "stem"): 8, ("b0c1",): 16, ("b1c1",): 16, ("fc",): 48}
    assert {tuple(d["producers"]): d["channels_after"] for d in plain_provenance[0]["details"]} == {
        ("b0c2", "b1c2", "stem"): 11, ("b0c1",): 17, ("b1c1",): 17, ("fc",): 45}
    graph = read_graph(_fp32_tflite(tiled, tmp_path, "tiled").read_bytes())
    widths = [graph.tensors[op.outputs[0]].shape[-1] for op in graph.ops
              if op.type in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")]
    assert widths[-1] == 10 and all(w % 8 == 0 for w in widths[:-1]), widths
    assert graph.total_macs == provenance[0]["macs_after"]
    plain_macs = artifact_macs(_fp32_tflite(plain, tmp_path, "plain"))
    assert plain_macs == plain_provenance[0]["macs_after"] and graph.total_macs < plain_macs  # 8/16 < 11/17


def test_pruning_a_model_without_prunable_groups_says_so():
    import keras
    from keras import layers

    from edgekit.converters.compress import compress
    from edgekit.errors import InputError

    inputs = keras.Input((8,), name="x")
    model = keras.Model(inputs, layers.Dense(3, activation="softmax", name="probs")(inputs))
    with pytest.raises(InputError, match="no prunable channel group"):
        compress(model, "prune-channels-30", None)


# ---- depth pruning (whole residual blocks) ---------------------------------------------------------

def _identity_block_model(seed: int = 2):
    """Stem, two identity residual blocks at 12x12 (3x3 conv, BN, ReLU, 3x3 conv, BN, Add, ReLU), a
    strided block with a 1x1 projection shortcut (not removable), softmax head."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 3), name="image")
    x = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(
        layers.Conv2D(8, 3, padding="same", name="stem")(inputs)))

    def branch(x, name, stride=1):
        y = layers.ReLU(name=f"{name}_r")(layers.BatchNormalization(name=f"{name}_bn1")(
            layers.Conv2D(8 * stride, 3, strides=stride, padding="same", name=f"{name}_c1")(x)))
        return layers.BatchNormalization(name=f"{name}_bn2")(layers.Conv2D(8 * stride, 3, padding="same",
                                                                           name=f"{name}_c2")(y))
    for b in ("b0", "b1"):
        x = layers.ReLU(name=f"{b}_out")(layers.Add(name=f"{b}_add")([x, branch(x, b)]))
    shortcut = layers.Conv2D(16, 1, strides=2, name="b2_proj")(x)
    x = layers.ReLU(name="b2_out")(layers.Add(name="b2_add")([shortcut, branch(x, "b2", 2)]))
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, layers.Dense(5, activation="softmax", name="probs")(x))
    for layer in model.layers:  # statistics away from the identity, so a wrongly rewired graph would show
        if type(layer).__name__ == "BatchNormalization":
            rng = np.random.default_rng(len(layer.name))
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2.0, n)])
    return model


def test_removable_blocks_are_the_identity_shortcut_blocks_only():
    from edgekit.converters.compress.blocks import blocks_to_remove, removable_blocks
    from edgekit.converters.compress.keras_graph import read_graph

    blocks = removable_blocks(read_graph(_identity_block_model()))
    assert [(b["add"], b["branch"]) for b in blocks] == [
        (f"{b}_add", [f"{b}_c1", f"{b}_bn1", f"{b}_r", f"{b}_c2", f"{b}_bn2"]) for b in ("b0", "b1")]
    assert [blocks_to_remove(3, p) for p in (1, 34, 50, 67, 100)] == [1, 1, 2, 2, 3]


def test_removing_a_block_whose_branch_outputs_zeros_keeps_fp32_parity_and_cuts_its_macs(tmp_path):
    """b1's last BatchNormalization has gamma = beta = 0: its branch adds exactly zero and the ReLU
    after the Add sees its input, itself a ReLU output. prune-blocks-50 (one of the two identity
    blocks) must pick b1 (no change of the output), and the artifact computes what the original does
    with exactly b1's two convolutions' MACs fewer."""
    from edgekit.converters.compress import compress

    model = _identity_block_model()
    bn = model.get_layer("b1_bn2")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([np.zeros_like(gamma), np.zeros_like(beta), mean, var])
    x = np.random.default_rng(4).uniform(0, 1, (16, 12, 12, 3)).astype(np.float32)

    pruned, provenance = compress(model, "prune-blocks-50", [x])
    details = provenance[0]["details"]
    assert [r["add"] for r in details["removed"]] == ["b1_add"] and details["kept"] == ["b0_add"]
    assert details["removed"][0]["output_change"] == 0.0
    assert not {"b1_add", "b1_c1", "b1_c2"} & {layer.name for layer in pruned.layers}
    assert "b1_out" in {layer.name for layer in pruned.layers}
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6)
    out = run_tflite(_fp32_tflite(pruned, tmp_path, "shallow"), x)
    np.testing.assert_allclose(out, model.predict(x, verbose=0), rtol=0, atol=1e-5)

    before = artifact_macs(_fp32_tflite(model, tmp_path, "deep"))
    after = artifact_macs(_fp32_tflite(pruned, tmp_path, "shallow2"))
    two_convs = 2 * 12 * 12 * 3 * 3 * 8 * 8   # b1_c1 and b1_c2: 8 -> 8 channels, 3x3, 12x12 outputs
    assert before - after == two_convs == details["removed"][0]["macs"]
    assert (before, after) == (provenance[0]["macs_before"], provenance[0]["macs_after"])


def test_depth_and_channel_pruning_compose(tmp_path):
    from edgekit.converters.compress import compress

    model = _identity_block_model()
    x = np.random.default_rng(5).uniform(0, 1, (16, 12, 12, 3)).astype(np.float32)
    pruned, provenance = compress(model, "prune-blocks-100+prune-channels-50", [x])
    assert [r["add"] for r in provenance[0]["details"]["removed"]] != [] and provenance[0]["details"]["kept"] == []
    assert provenance[1]["macs_before"] == provenance[0]["macs_after"] > provenance[1]["macs_after"]
    assert artifact_macs(_fp32_tflite(pruned, tmp_path, "both")) == provenance[1]["macs_after"]


def test_a_model_without_identity_blocks_is_refused_in_one_line(tmp_path, samples):
    from edgekit.converters.compress import compress
    from edgekit.errors import InputError

    with pytest.raises(InputError) as e:
        compress(_residual_model_without_identity(), "prune-blocks-50", [np.zeros((2, 8, 8, 3), np.float32)])
    assert "identity shortcut" in str(e.value) and "\n" not in str(e.value)
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "prune-blocks-50+int8", "--calibration",
                     samples / "calibration", "-o", tmp_path)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "identity shortcut" in line]
    assert result.exit_code != 0 and len(errors) == 1, result.output + result.stderr
    assert "Traceback" not in result.stdout + result.stderr and not list(tmp_path.glob("*.tflite"))


def _residual_model_without_identity():
    """Every Add has a projection on its shortcut: nothing can be skipped."""
    import keras
    from keras import layers

    inputs = keras.Input((8, 8, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(16, 3, padding="same", name="c1")(x)
    x = layers.Add(name="add")([layers.Conv2D(16, 1, name="proj")(x), y])
    return keras.Model(inputs, layers.Dense(3, activation="softmax", name="probs")(layers.Flatten(name="flat")(x)))


def test_convert_takes_prune_blocks_end_to_end(tmp_path):
    """`edgekit convert -q int8,prune-blocks-50+int8` on a small residual model (one of its two
    identity blocks removed): both artifacts run, the pruned one has fewer MACs in its graph, and
    its manifest records the removed block."""
    import keras
    from keras import layers

    from edgekit.artifact import load

    keras.utils.set_random_seed(6)
    inputs = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    for b in ("b0", "b1"):
        y = layers.Conv2D(8, 3, padding="same", activation="relu", name=f"{b}_c1")(x)
        y = layers.Conv2D(8, 3, padding="same", name=f"{b}_c2")(y)
        x = layers.ReLU(name=f"{b}_out")(layers.Add(name=f"{b}_add")([x, y]))
    model = keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(
        layers.GlobalAveragePooling2D(name="gap")(x)))
    src = tmp_path / "tiny_resnet.keras"
    model.save(src)
    result = run_cli("convert", src, "-q", "int8,prune-blocks-50+int8", "--calibration",
                     SAMPLES / "digits_resnet" / "calibration", "--calibration-samples", "64", "--mean", "0",
                     "--std", "255", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output + result.stderr
    out = tmp_path / "out"
    plain, pruned = out / "tiny_resnet_int8.tflite", out / "tiny_resnet_prune-blocks-50+int8.tflite"
    manifest = json.loads(pruned.with_name(pruned.name + ".json").read_text())
    (row,) = manifest["source"]["compression"]
    assert row["step"] == "prune-blocks-50" and len(row["details"]["removed"]) == 1
    two_convs = 2 * 16 * 16 * 9 * 8 * 8       # one block's two 3x3 convolutions, 8 -> 8 channels at 16x16
    assert artifact_macs(plain) - artifact_macs(pruned) == two_convs == row["details"]["removed"][0]["macs"]
    assert row["macs_after"] == artifact_macs(pruned)
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype(np.float32)
    assert load(pruned).run([x])[0].shape == (1, 10)


# ---- distillation ---------------------------------------------------------------------------------

def test_distill_improves_the_pruned_students_agreement_with_the_teacher(keras_model, validation_set, samples):
    from PIL import Image

    from edgekit.converters.compress import compress

    files = sorted((samples / "calibration").glob("*.png"))
    calibration = np.stack([np.asarray(Image.open(f), np.float32)[..., None] / 255.0 for f in files])
    x_val, _ = validation_set
    teacher = keras_model.predict(x_val, verbose=0).argmax(-1)
    pruned, _ = compress(keras_model, "prune-channels-40", [calibration])
    distilled, provenance = compress(keras_model, "prune-channels-40+distill-10", [calibration], seed=0)
    before = np.mean(pruned.predict(x_val, verbose=0).argmax(-1) == teacher)
    after = np.mean(distilled.predict(x_val, verbose=0).argmax(-1) == teacher)
    assert provenance[1]["details"]["loss_last"] < provenance[1]["details"]["loss_first"]
    assert after > before + 0.2, (before, after)  # measured: 0.17 -> 0.71 with seed 0
    again, _ = compress(keras_model, "prune-channels-40+distill-10", [calibration], seed=0)
    np.testing.assert_allclose(again.predict(x_val, verbose=0), distilled.predict(x_val, verbose=0), atol=1e-5)


# ---- the accuracy budget and the sweep ------------------------------------------------------------

def test_budget_loop_returns_nothing_over_the_budget():
    from edgekit.converters.budget import fit_budget

    calls = []

    def evaluate(keep):
        calls.append(keep)
        return {"drop": 3.0 - len(keep)}  # each kept layer buys one point back

    chosen, attempts = fit_budget({"drop": 3.0}, evaluate, ["a", "b", "c", "d"], max_drop=1.0)
    assert chosen["drop"] <= 1.0 and calls == [("a",), ("a", "b")]
    chosen, attempts = fit_budget({"drop": 3.0}, evaluate, ["a"], max_drop=1.0)
    assert chosen is None and [a["drop"] for a in attempts] == [3.0, 2.0]



def test_small_sweep_runs_end_to_end_resumes_and_never_picks_a_variant_over_budget(tmp_path, samples, labelled_digits):
    out = tmp_path / "sweep"
    args = ["sweep", samples / "digits_cnn.keras", "--target", "rpi4,rpi5", "--max-drop", "0.5",
            "--calibration", samples / "calibration", "--validate", labelled_digits, "--mean", "0", "--std", "255",
            "--recipes", "fp32,int8", "--compress", "none,prune-channels-50+distill-3", "--bench-runs", "20",
            "-o", out]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((out / "sweep.json").read_text())
    names = {r["variant"] for r in report["variants"]}
    assert names == {"fp32", "int8", "prune-channels-50+distill-3+fp32", "prune-channels-50+distill-3+int8"}
    rows = {r["variant"]: r for r in report["variants"]}
    assert rows["fp32"]["drop"] == pytest.approx(0.0, abs=1e-9)  # fp32 is the source's arithmetic
    pruned = rows["prune-channels-50+distill-3+fp32"]
    assert pruned["macs"] < 0.5 * rows["fp32"]["macs"] and pruned["provenance"][0]["step"] == "prune-channels-50"
    for target, best in report["best"].items():
        assert best is None or rows[best]["drop"] <= 0.5
        if best:
            assert rows[best]["emulated_ms"][target] == min(r["emulated_ms"][target] for r in rows.values()
                                                            if r["status"] == "ok" and r["drop"] <= 0.5)
    for r in rows.values():
        assert r["status"] in ("ok", "over budget", "failed")
        if r.get("budget_attempts") and r["status"] == "ok":
            assert r["drop"] <= 0.5
    assert "frontier" in result.stdout and "best under the budget per target" in result.stdout
    html = (out / "sweep.html").read_text()
    assert "<svg" in html and "Pareto frontier" in html and "task top-1 (%)" in html
    again = run_cli(*args)
    assert again.exit_code == 0 and "converting" not in again.stderr   # every variant was finished


def test_sweep_refuses_unlabelled_validation_in_one_line(tmp_path, samples):
    result = run_cli("sweep", samples / "digits_cnn.keras", "--calibration", samples / "calibration",
                     "--validate", samples / "validation", "--mean", "0", "--std", "255", "-o", tmp_path / "s")
    errors = [line for line in result.stderr.splitlines() if not line.startswith("  ")]  # progress is indented
    assert result.exit_code == 2 and len(errors) == 1 and errors[0].startswith("Error: --validate")
    assert "has no labels" in errors[0] and "reading calibration" not in result.stderr  # refused before slow work


def test_task_labels_come_from_class_folders_or_a_labels_csv(tmp_path, labelled_digits, samples):
    from edgekit.converters.accuracy import dataset_labels
    from edgekit.dataset import load_dataset
    from edgekit.errors import InputError
    from edgekit.manifest import TensorInfo
    from edgekit.preprocess import ImageSpec

    inputs = [TensorInfo("image", (None, 32, 32, 1), "float32")]
    spec = ImageSpec.for_input_shape((None, 32, 32, 1), (0.0,), (255.0,))
    folders = load_dataset(labelled_digits, inputs, spec)
    labels, classes = dataset_labels(folders, None)
    assert classes == [str(d) for d in range(10)]
    assert [int(i.split("label")[1][0]) for i in folders.items] == labels.tolist()  # names carry the truth
    flat = tmp_path / "flat"
    shutil.copytree(samples / "validation", flat)
    assert dataset_labels(load_dataset(flat, inputs, spec), None) is None   # nothing says the class
    files = sorted(p.name for p in flat.glob("*.png"))
    (flat / "labels.csv").write_text("file,label\n" + "".join(f"{f},{f.split('label')[1][0]}\n" for f in files))
    from_csv, _ = dataset_labels(load_dataset(flat, inputs, spec), classes)
    assert from_csv.tolist() == [int(f.split("label")[1][0]) for f in files]
    with pytest.raises(InputError, match="not in the labels"):
        dataset_labels(folders, ["zero", "one"])


def test_compressed_source_is_a_keras_source_the_pipeline_can_build_from(samples, validation_set):
    from edgekit.converters.compress.source import compressed_source
    from edgekit.converters.sources.keras import load as load_keras

    source = load_keras(samples / "digits_cnn.keras", "keras")
    x_val, _ = validation_set
    try:
        with compressed_source(source, "prune-channels-30+int8", None) as (small, provenance, rest):
            assert rest == "int8" and provenance[0]["step"] == "prune-channels-30"
            assert small.keras_model.count_params() < source.keras_model.count_params()
            assert small.output_names == source.output_names and small.saved_model_dir.is_dir()
            assert small.predict([x_val])[0].shape == (len(x_val), 10)
            folder = small.path.parent
        assert not folder.exists()  # the compressed model's temporary folder goes with the block
        with compressed_source(source, "fp16", None) as (same, provenance, rest):
            assert same is source and provenance == [] and rest == "fp16"
    finally:
        source.close()


def test_sweep_out_of_minutes_starts_nothing_more_and_says_how_to_continue(tmp_path, samples, labelled_digits):
    out = tmp_path / "sweep"
    result = run_cli("sweep", samples / "digits_cnn.keras", "--calibration", samples / "calibration",
                     "--validate", labelled_digits, "--mean", "0", "--std", "255", "--recipes", "fp32",
                     "--compress", "none", "--budget-minutes", "0.0001", "-o", out)
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((out / "sweep.json").read_text())
    assert report["complete"] is False and [r["status"] for r in report["variants"]] == ["not run"]
    assert report["best"] == {"rpi4": None} and "re-run the same command to continue" in result.stdout
    assert not list((out / "variants").glob("*.json"))  # nothing half-done is recorded as finished


def test_convert_takes_a_composed_recipe_and_reports_task_accuracy(tmp_path):
    """`edgekit convert -q prune-channels-30+distill+int8` on the trained residual sample with labelled
    --validate data: the compressed artifact is smaller, keeps its task top-1 within a point of the
    source, and its manifest records each step (provenance)."""
    samples = SAMPLES / "digits_resnet"
    result = run_cli("convert", SAMPLES / "digits_resnet.keras", "-q", "int8,prune-channels-30+distill+int8",
                     "--calibration", samples / "calibration", "--calibration-samples", "500",
                     "--validate", samples / "validation", "--labels", samples / "labels.txt", "--mean", "0",
                     "--std", "255", "-o", tmp_path, "--report", tmp_path / "r.json")
    assert result.exit_code == 0, result.output + result.stderr
    assert "task top-1" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    arts = {a["quantize"]: a for a in report["artifacts"]}
    source_top1 = report["validation"]["source_task_top1"]
    pruned = arts["prune-channels-30+distill+int8"]
    assert pruned["size_bytes"] < 0.7 * arts["int8"]["size_bytes"]
    assert pruned["parity"]["task_top1"] >= source_top1 - 0.01, (pruned["parity"], source_top1)
    manifest = json.loads((tmp_path / "digits_resnet_prune-channels-30+distill+int8.tflite.json").read_text())
    assert manifest["recipe"] == "prune-channels-30+distill+int8"
    steps = [row["step"] for row in manifest["source"]["compression"]]
    assert steps == ["prune-channels-30", "distill"]
    assert manifest["source"]["compression"][0]["macs_after"] < manifest["source"]["compression"][0]["macs_before"]


def test_stage_prefixes_the_int8_anatomy_times_compute_the_full_models_intermediate_tensors():
    """benchmarks/int8_anatomy.py attributes host time to stages by timing prefixes of the artifact;
    each prefix must compute exactly the tensor the full model has at that point."""
    import sys

    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgekit.profile.probes import Probe, build

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from int8_anatomy import prefix_model, stage_cuts

    data = build(Probe("net", "NETWORK", "int8", (1, 64, 64, 3), cout=16))
    cuts = stage_cuts(data)
    assert [label for _, label in cuts][:3] == ["32x32", "16x16", "8x8"] and cuts[-1][1] == "head"
    x = np.random.default_rng(0).integers(-128, 127, (1, 64, 64, 3), dtype=np.int8)
    full = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    full.allocate_tensors()
    full.set_tensor(full.get_input_details()[0]["index"], x)
    full.invoke()
    ops = full._get_ops_details()
    for last, _ in cuts[:-1]:
        part = Interpreter(model_content=prefix_model(data, last),
                           experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        part.allocate_tensors()
        assert len(part._get_ops_details()) == last + 1
        part.set_tensor(part.get_input_details()[0]["index"], x)
        part.invoke()
        got = part.get_tensor(part.get_output_details()[0]["index"])
        np.testing.assert_array_equal(got, full.get_tensor(ops[last]["outputs"][0]))


# ---- sweep: Core ML variants, parallel builds ------------------------------------------------------

def _sweep_cnn(samples, labelled, out, jobs, *extra):
    return ["sweep", samples / "digits_cnn.keras", "--calibration", samples / "calibration", "--validate", labelled,
            "--mean", "0", "--std", "255", "--recipes", "fp32,int8", "--compress", "none,prune-channels-50+distill-2",
            "--formats", "tflite,coreml", "--jobs", str(jobs), "--bench-runs", "10", *extra, "-o", out]


def _finished_lines(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.strip().startswith("[") and "top-1" in line]


def test_sweep_with_core_ml_variants_in_parallel_equals_serial_and_resumes(tmp_path, samples, labelled_digits):
    """A Core ML variant's row: top-1 from running its .mlpackage with edgekit's executor, size on
    disk, MACs counted from the program, latencies n/a with the reason (never best, never on the
    frontier). --jobs 2 builds the same rows as --jobs 1; a re-run rebuilds only what is missing."""
    from edgekit.artifact import load
    from edgekit.converters.accuracy import dataset_labels
    from edgekit.dataset import load_dataset
    from edgekit.fileio import path_size
    from edgekit.manifest import TensorInfo
    from edgekit.preprocess import ImageSpec

    serial = run_cli(*_sweep_cnn(samples, labelled_digits, tmp_path / "serial", 1))
    assert serial.exit_code == 0, serial.output + serial.stderr
    rows = {r["variant"]: r for r in json.loads((tmp_path / "serial" / "sweep.json").read_text())["variants"]}
    pruned = "prune-channels-50+distill-2+"
    assert set(rows) == {"fp32", "int8", "fp32@coreml", pruned + "fp32", pruned + "int8", pruned + "fp32@coreml"}
    core = rows["fp32@coreml"]
    package = Path(core["artifact"])
    assert core["format"] == "coreml" and package.suffix == ".mlpackage" and core["status"] == "ok"
    model = load(package)
    assert model.backend == "coreml-emulated (numpy executor)"
    inputs = [TensorInfo("image", (None, 32, 32, 1), "float32")]
    data = load_dataset(labelled_digits, inputs, ImageSpec.for_input_shape((None, 32, 32, 1), (0.0,), (255.0,)))
    labels, _ = dataset_labels(data, None)
    x = data.arrays[0]
    probs = np.concatenate([model.run([x[i:i + 1]])[0] for i in range(len(x))])
    assert core["top1"] == pytest.approx(float(np.mean(np.argmax(probs, -1) == labels)), abs=1e-6)
    assert core["top1"] > 0.9 and core["size_bytes"] == path_size(package)
    assert core["macs"] == rows["fp32"]["macs"]  # counted from the ML program; the .tflite graph says the same
    assert rows[pruned + "fp32@coreml"]["macs"] == rows[pruned + "fp32"]["macs"] < 0.5 * core["macs"]
    assert core["emulated_ms"] == {"rpi4": None} and core["host_p50_ms"] is None
    assert "no Core ML cost model" in core["latency_na"]["emulated"] and "Core ML runtime" in core["latency_na"]["host"]
    assert not core["frontier"] and core["best_for"] == []
    assert rows["fp32"]["host_p50_ms"] > 0 and rows["fp32"]["emulated_ms"]["rpi4"] > 0
    table_line = next(line for line in serial.stdout.splitlines() if line.startswith("fp32@coreml "))
    assert table_line.split()[1] == "coreml" and table_line.count("n/a") == 2
    assert "no Core ML cost model" in serial.stdout and "never best for that target" in serial.stdout
    assert len(_finished_lines(serial.stderr)) == 6

    parallel = run_cli(*_sweep_cnn(samples, labelled_digits, tmp_path / "parallel", 2))
    assert parallel.exit_code == 0, parallel.output + parallel.stderr
    assert "in 2 worker processes" in parallel.stderr and len(_finished_lines(parallel.stderr)) == 6
    prows = {r["variant"]: r for r in json.loads((tmp_path / "parallel" / "sweep.json").read_text())["variants"]}
    for name, row in rows.items():  # same seed, same thread count per build: the same weights and numbers
        keys = ("top1", "agreement", "macs", "status", "weights_sha256")
        assert row["weights_sha256"] and {k: prows[name][k] for k in keys} == {k: row[k] for k in keys}, name
        # the size also counts the embedded manifest, whose step timings ("seconds": 9.8 / 10.1) vary
        assert abs(prows[name]["size_bytes"] - row["size_bytes"]) <= 16, name

    (tmp_path / "parallel" / "variants" / f"{pruned}fp32@coreml.json").unlink()
    again = run_cli(*_sweep_cnn(samples, labelled_digits, tmp_path / "parallel", 2))
    assert again.exit_code == 0, again.output + again.stderr
    rebuilt = _finished_lines(again.stderr)
    assert len(rebuilt) == 1 and rebuilt[0].startswith(f"[1] {pruned}fp32@coreml:"), rebuilt
    assert "compressing" not in again.stderr and "timing host p50" not in again.stderr  # model and p50s kept
    final = {r["variant"]: r for r in json.loads((tmp_path / "parallel" / "sweep.json").read_text())["variants"]}
    assert final[pruned + "fp32@coreml"]["top1"] == rows[pruned + "fp32@coreml"]["top1"]
    assert final["fp32"]["host_p50_ms"] == prows["fp32"]["host_p50_ms"]  # finished variants not re-timed


def test_parallel_sweep_out_of_minutes_builds_nothing_in_its_workers(tmp_path, samples, labelled_digits):
    out = tmp_path / "sweep"
    result = run_cli(*_sweep_cnn(samples, labelled_digits, out, 2, "--budget-minutes", "0.0001"))
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads((out / "sweep.json").read_text())
    assert report["complete"] is False and {r["status"] for r in report["variants"]} == {"not run"}
    assert len(report["variants"]) == 6 and not list((out / "variants").glob("*.json"))
    assert not (out / "artifacts").exists() and not (out / "models").exists()


def test_sweep_formats_default_to_what_the_targets_run_and_recipes_are_checked_per_format(tmp_path, samples):
    from edgekit.converters.sweep import SweepOptions, check_options
    from edgekit.errors import InputError

    def opts(**kw):
        return SweepOptions(model=samples / "digits_cnn.keras", out_dir=tmp_path, calibration=samples / "calibration",
                            validate=samples / "validation", **kw)

    assert check_options(opts(targets=("rpi4", "pixel6")))[1] == ("tflite",)  # Core ML runs on neither
    assert check_options(opts(targets=("rpi4", "iphone13")))[1] == ("tflite", "coreml")
    assert check_options(opts(formats=("coreml",), recipes=("fp16", "palettize-4")))[1] == ("coreml",)
    with pytest.raises(InputError, match="'int8' is not a recipe of coreml"):
        check_options(opts(formats=("coreml",), recipes=("int8",)))
    with pytest.raises(InputError, match="--formats: 'onnx' is not a format"):
        check_options(opts(formats=("onnx",)))
    with pytest.raises(InputError, match="--jobs expects a positive number"):
        check_options(opts(jobs=0))


def test_sweep_default_jobs_follow_the_cores_and_the_free_memory():
    from edgekit.converters.sweep_jobs import WORKER_MB, default_jobs

    assert default_jobs(cpu_count=2, free_mb=64000) == 1   # 2 jobs on 2 cores measured no faster
    assert default_jobs(cpu_count=8, free_mb=64000) == 4   # two cores per worker
    assert default_jobs(cpu_count=8, free_mb=2.5 * WORKER_MB) == 2  # as many as memory holds
    assert default_jobs(cpu_count=16, free_mb=100) == 1


def test_interrupted_parallel_sweep_keeps_finished_variants_whole_and_a_rerun_completes(tmp_path, samples,
                                                                                          labelled_digits):
    """SIGINT to the sweep process alone (as `kill -INT` sends it) while two workers build: it is
    forwarded to them, exit 130 with one line, no temp file or staging folder left, every recorded
    variant's artifact complete (it loads and runs), and the same command finishes the grid."""
    import signal
    import subprocess
    import sys
    import time

    from edgekit.artifact import load

    out = tmp_path / "sweep"
    args = [str(a) for a in _sweep_cnn(samples, labelled_digits, out, 2)]
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # the first finished variant: the other worker is mid-build
        seen.append(line)
        if line.strip().startswith("[1] "):
            break
    assert proc.poll() is None, "".join(seen[-20:])
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    _, rest = proc.communicate(timeout=180)
    assert proc.returncode == 130, rest[-800:]
    assert time.monotonic() - sent < 25, "a worker ignored the forwarded SIGINT and was terminated after the grace"
    last = rest.strip().splitlines()[-1]
    assert last.startswith("Error: interrupted by SIGINT; the variants finished so far are kept"), last
    assert "Traceback" not in rest
    assert [p for p in out.rglob(".*")] == []  # no temp file, no .mlpackage staging folder
    kept = [json.loads(p.read_text()) for p in (out / "variants").glob("*.json")]
    assert 1 <= len(kept) < 6
    for row in kept:
        model = load(row["artifact"])
        assert model.run([np.zeros((1, 32, 32, 1), np.float32)])[0].shape == (1, 10)
    again = run_cli(*args)
    assert again.exit_code == 0, again.output + again.stderr
    report = json.loads((out / "sweep.json").read_text())
    assert report["complete"] and len(report["variants"]) == 6
    assert len(_finished_lines(again.stderr)) == 6 - len(kept)  # what was kept is not built again


def test_convert_shows_distillation_progress_on_the_terminal(tmp_path):
    """The converter's native chatter is captured at the file-descriptor level while compressing;
    distillation's epoch lines must still reach the user's stderr (they were swallowed with it).
    A real process, not CliRunner: CliRunner's streams sit above the descriptors and would show
    the lines either way."""
    import subprocess
    import sys

    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "edgekit.cli", "convert", str(SAMPLES / "digits_cnn.keras"), "-q",
         "prune-channels-30+distill-2+fp32", "--no-gate", "--calibration", str(SAMPLES / "calibration"),
         "--calibration-samples", "64", "--mean", "0", "--std", "255", "-o", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    epochs = [line.strip() for line in result.stderr.splitlines() if "distill epoch" in line]
    assert [e.split(":")[0] for e in epochs] == ["distill epoch 1/2", "distill epoch 2/2"], result.stderr[-2000:]
    assert "fully_quantize" not in result.stderr and "XNNPACK" not in result.stderr  # chatter stays captured
