"""Compression of PyTorch sources (converters/compress/pytorch): each transform checked on the
converted .tflite (parity where the transform is exact, MACs read from the artifact's graph),
channel groups through residual adds and a depthwise convolution, depth pruning, distillation of
the trained PyTorch sample against its teacher, and `edgekit convert` end to end from .pt2,
TorchScript and ONNX sources."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES, artifact_macs, run_cli, run_tflite

pytestmark = pytest.mark.torch

DIGITS_NORM = ["--mean", "0", "--std", "255"]


# ---- small networks (weights=random, BatchNorm statistics away from the identity) -----------------

def _nets():
    import torch
    from torch import nn

    class Residual(nn.Module):
        """Stem, two residual blocks (3x3 conv, BN, ReLU, depthwise 3x3, 1x1 conv, BN, add), global mean,
        two linear layers: Add groups, a depthwise conv following its input, BN sliced along."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
            self.blocks = nn.ModuleList(nn.ModuleDict({
                "c1": nn.Conv2d(16, 24, 3, padding=1), "bn1": nn.BatchNorm2d(24),
                "dw": nn.Conv2d(24, 24, 3, padding=1, groups=24), "c2": nn.Conv2d(24, 16, 1),
                "bn2": nn.BatchNorm2d(16)}) for _ in range(2))
            self.fc = nn.Linear(16, 64)
            self.probs = nn.Linear(64, 10)

        def forward(self, image):
            x = self.stem(image)
            for b in self.blocks:
                x = x + b["bn2"](b["c2"](b["dw"](torch.relu(b["bn1"](b["c1"](x))))))
            return torch.softmax(self.probs(torch.relu(self.fc(x.mean((2, 3))))), 1)

    class Identity(nn.Module):
        """Stem, two identity blocks at 12x12 (conv, BN, ReLU, conv, BN, add, ReLU), a strided block with a
        1x1 projection shortcut (not removable), softmax head."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())

            def branch(cin, cout, stride):
                return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU(),
                                     nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout))
            self.b0, self.b1, self.b2 = branch(8, 8, 1), branch(8, 8, 1), branch(8, 16, 2)
            self.proj = nn.Conv2d(8, 16, 1, stride=2)
            self.probs = nn.Linear(16, 5)

        def forward(self, image):
            x = self.stem(image)
            x = torch.relu(x + self.b0(x))
            x = torch.relu(x + self.b1(x))
            x = torch.relu(self.proj(x) + self.b2(x))
            return torch.softmax(self.probs(x.mean((2, 3))), 1)

    class Projection(nn.Module):
        """Every add has a projection on its shortcut: no block can be skipped."""

        def __init__(self):
            super().__init__()
            self.stem, self.c1, self.proj = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1), \
                nn.Conv2d(8, 16, 1)
            self.probs = nn.Linear(16, 3)

        def forward(self, image):
            x = torch.relu(self.stem(image))
            return torch.softmax(self.probs((self.proj(x) + self.c1(x)).mean((2, 3))), 1)

    return Residual, Identity, Projection


def _with_statistics(module, seed: int):
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                m.bias.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
    return module.eval()


def _torch_out(module, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


def _fp32_tflite(module, example: np.ndarray, tmp: Path, name: str) -> Path:
    """Export (batch 1), save as .pt2 and convert through edgekit's pipeline (fp32, no gate): the artifact
    the MACs and parity are read from."""
    import torch

    from edgekit.converters.pipeline import ConvertOptions, convert
    from edgekit.recipes import RECIPES

    src = tmp / f"{name}.pt2"
    torch.export.save(torch.export.export(module, (torch.from_numpy(example[:1]),)), str(src))
    result = convert(ConvertOptions(model=src, formats=("tflite",), recipes=(RECIPES["fp32"],), out_dir=tmp / name,
                                    gate=False, explain_errors=False))
    assert not result.failed, result.failed[0].error
    return result.artifacts[0].path


def _images(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The sample's 32x32 grey digits as NCHW floats in [0, 1] (the source's normalization) and labels."""
    from PIL import Image

    files = sorted(folder.glob("*.png"))
    x = np.stack([np.asarray(Image.open(f), np.float32)[None] / 255.0 for f in files])
    return x, np.array([int(f.stem.split("label")[1]) for f in files])


# ---- low-rank -------------------------------------------------------------------------------------

def test_lowrank_at_full_rank_keeps_fp32_parity_in_torch_and_in_the_artifact(tmp_path):
    from edgekit.converters.compress.pytorch.graph import working_graph
    from edgekit.converters.compress.pytorch.lowrank import factorize

    Residual, _, _ = _nets()
    model = _with_statistics(Residual(), 1)
    x = np.random.default_rng(0).uniform(0, 1, (16, 3, 16, 16)).astype(np.float32)
    gm = working_graph(model, [x[:1]])
    details = factorize(gm, [x[:1]], energy=1.0, only_if_cheaper=False)
    assert {d["layer"] for d in details} == {"blocks.0.c2", "blocks.1.c2", "fc"}  # never the output layer
    reference = _torch_out(model, x)
    np.testing.assert_allclose(_torch_out(gm, x), reference, rtol=0, atol=1e-5)
    out = run_tflite(_fp32_tflite(gm, x, tmp_path, "full_rank"), x)
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-5)


def test_lowrank_cuts_linear_macs_by_the_stated_amount_in_the_graph(tmp_path):
    import torch
    from torch import nn

    from edgekit.converters.compress import compress

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10),
                          nn.Softmax(1)).eval()
    x = np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)
    small, provenance = compress(model, "lowrank-50", None, inputs=[x[:1]])
    row = provenance[0]
    # 256x256 -> rank floor(0.5 * 128) = 64; 64x256 -> rank 25; the output layer stays whole
    assert {d["layer"]: d["rank"] for d in row["details"]} == {"0": 25, "2": 64}
    before = artifact_macs(_fp32_tflite(model, x, tmp_path, "mlp"))
    after = artifact_macs(_fp32_tflite(small, x, tmp_path, "mlp_lowrank"))
    assert (before, after) == (row["macs_before"], row["macs_after"])
    assert after == 25 * (64 + 256) + 64 * 512 + 2560 and after < 0.55 * before


# ---- structured pruning ---------------------------------------------------------------------------

def test_pruning_channels_whose_weights_are_zero_keeps_parity_and_cuts_exactly_their_macs(tmp_path):
    import torch
    from torch import nn

    from edgekit.converters.compress import compress

    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                          nn.Conv2d(16, 8, 1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 5), nn.Softmax(1))
    model = _with_statistics(model, 3)
    dead = [1, 4, 6, 9]  # 25 % of the first conv: zero filter, zero bias, zero depthwise bias -> exactly 0
    with torch.no_grad():
        model[0].weight[dead], model[0].bias[dead], model[2].bias[dead] = 0.0, 0.0, 0.0
        model[4].weight[:2], model[4].bias[:2] = 0.0, 0.0   # 25 % of the 1x1 conv's channels: BN outputs 0
    x = np.random.default_rng(1).uniform(0, 1, (8, 3, 12, 12)).astype(np.float32)

    pruned, provenance = compress(model, "prune-channels-25", None, inputs=[x[:1]])
    assert sorted((d["producers"][0], d["channels_after"]) for d in provenance[0]["details"]) == [("0", 12), ("3", 6)]
    reference = _torch_out(model, x)
    np.testing.assert_allclose(_torch_out(pruned, x), reference, rtol=0, atol=1e-6)
    small = _fp32_tflite(pruned, x, tmp_path, "pruned")
    np.testing.assert_allclose(run_tflite(small, x), reference, rtol=0, atol=1e-5)
    before = artifact_macs(_fp32_tflite(model, x, tmp_path, "whole"))
    pixels = 12 * 12
    removed = (4 * pixels * 27            # first conv: 4 filters of 3x3x3
               + 4 * pixels * 9           # their depthwise filters
               + pixels * (8 * 16 - 6 * 12)  # the 1x1 conv: 8x16 -> 6x12
               + 5 * 2)                   # the linear layer reads 2 features fewer
    assert before - artifact_macs(small) == removed
    assert (before, artifact_macs(small)) == (provenance[0]["macs_before"], provenance[0]["macs_after"])


def test_pruning_couples_residual_channels_through_adds_and_the_depthwise_conv(tmp_path):
    from edgekit.converters.compress import compress

    Residual, _, _ = _nets()
    model = _with_statistics(Residual(), 4)
    x = np.random.default_rng(2).uniform(0, 1, (8, 3, 16, 16)).astype(np.float32)
    pruned, provenance = compress(model, "prune-channels-50", None, inputs=[x[:1]])
    groups = {tuple(d["producers"]): (d["channels_before"], d["channels_after"]) for d in provenance[0]["details"]}
    # the stem and both blocks' 1x1 outputs meet in the adds: one group; the softmax units are never pruned
    assert groups == {("blocks.0.c2", "blocks.1.c2", "stem.0"): (16, 8), ("blocks.0.c1",): (24, 12),
                      ("blocks.1.c1",): (24, 12), ("fc",): (64, 32)}
    state = dict(pruned.named_parameters()) | dict(pruned.named_buffers())
    assert tuple(state["blocks.0.dw.weight"].shape) == (12, 1, 3, 3)     # depthwise follows its input
    assert tuple(state["blocks.1.c1.weight"].shape) == (12, 8, 3, 3)     # reads the coupled 8
    assert tuple(state["blocks.1.bn2.running_var"].shape) == (8,) and tuple(state["probs.weight"].shape) == (10, 32)
    ran = _torch_out(pruned, x)
    assert ran.shape == (8, 10) and np.allclose(ran.sum(1), 1, atol=1e-5)
    artifact = _fp32_tflite(pruned, x, tmp_path, "residual_pruned")
    np.testing.assert_allclose(run_tflite(artifact, x), ran, rtol=0, atol=1e-5)
    before = artifact_macs(_fp32_tflite(model, x, tmp_path, "residual"))
    assert (before, artifact_macs(artifact)) == (provenance[0]["macs_before"], provenance[0]["macs_after"])
    assert provenance[0]["macs_after"] < 0.3 * before   # channels halved on both sides of most convolutions


def test_tile_rounding_and_activation_criterion_on_the_torch_graph():
    from edgekit.converters.compress import compress

    Residual, _, _ = _nets()
    model = _with_statistics(Residual(), 4)
    x = np.random.default_rng(3).uniform(0, 1, (16, 3, 16, 16)).astype(np.float32)
    _, provenance = compress(model, "prune-channels-30-act-m8", [x], inputs=[x[:1]])
    assert {tuple(d["producers"]): d["channels_after"] for d in provenance[0]["details"]} == {
        ("blocks.0.c2", "blocks.1.c2", "stem.0"): 8, ("blocks.0.c1",): 16, ("blocks.1.c1",): 16, ("fc",): 48}


# ---- depth pruning --------------------------------------------------------------------------------

def test_removing_a_block_whose_branch_outputs_zeros_keeps_parity_and_cuts_its_convs_macs(tmp_path):
    import torch

    from edgekit.converters.compress import compress
    from edgekit.converters.compress.pytorch.blocks import removable_blocks
    from edgekit.converters.compress.pytorch.graph import working_graph

    _, Identity, _ = _nets()
    model = _with_statistics(Identity(), 5)
    # the MACs before come from the same network with b1 intact: with its branch multiplied by zero
    # litert-torch folds that branch away, and the artifact of `model` itself no longer has b1's convs
    intact = copy.deepcopy(model)
    with torch.no_grad():
        model.b1[4].weight.zero_()
        model.b1[4].bias.zero_()   # b1's branch adds exactly zero; the relu after the add sees its input
    x = np.random.default_rng(4).uniform(0, 1, (16, 3, 12, 12)).astype(np.float32)
    assert len(removable_blocks(working_graph(model, [x[:1]]))) == 2   # b2 has a projection: not removable

    pruned, provenance = compress(model, "prune-blocks-50", [x], inputs=[x[:1]])
    details = provenance[0]["details"]
    assert len(details["removed"]) == 1 and len(details["kept"]) == 1
    assert details["removed"][0]["output_change"] == 0.0
    assert not [n for n in pruned.graph.nodes if n.op == "get_attr" and n.target.startswith("b1.")]
    reference = _torch_out(model, x)
    np.testing.assert_allclose(_torch_out(pruned, x), reference, rtol=0, atol=1e-6)
    shallow = _fp32_tflite(pruned, x, tmp_path, "shallow")
    np.testing.assert_allclose(run_tflite(shallow, x), reference, rtol=0, atol=1e-5)
    before = artifact_macs(_fp32_tflite(intact, x, tmp_path, "deep"))
    two_convs = 2 * 12 * 12 * 3 * 3 * 8 * 8   # b1's two 3x3 convolutions, 8 -> 8 channels, 12x12 outputs
    assert before - artifact_macs(shallow) == two_convs == details["removed"][0]["macs"]
    assert (before, artifact_macs(shallow)) == (provenance[0]["macs_before"], provenance[0]["macs_after"])


def test_a_model_without_identity_blocks_is_refused_in_one_line(tmp_path):
    from edgekit.converters.compress import compress
    from edgekit.errors import InputError

    _, _, Projection = _nets()
    x = np.zeros((2, 3, 8, 8), np.float32)
    with pytest.raises(InputError) as e:
        compress(Projection().eval(), "prune-blocks-50", [x], inputs=[x[:1]])
    assert "identity shortcut" in str(e.value) and "\n" not in str(e.value)
    result = run_cli("convert", SAMPLES / "digits_torch.pt2", "-q", "prune-blocks-50+int8", "--calibration",
                     SAMPLES / "calibration", *DIGITS_NORM, "-o", tmp_path / "out")
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "identity shortcut" in line]
    assert result.exit_code != 0 and len(errors) == 1, result.output + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# ---- distillation on the trained sample -----------------------------------------------------------

def test_distill_recovers_the_pruned_samples_top1_deterministically():
    """digits_torch.pt2 (held-out top-1 1.0): prune-channels-30 alone falls to chance (measured 0.09);
    distilled for 40 epochs on the 200 unlabelled calibration images it is back to 0.82 (seed 0)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same arithmetic on any machine: the seed fixes the result
    try:
        _distill_checks(torch)
    finally:
        torch.set_num_threads(threads)


def _distill_checks(torch):
    from edgekit.converters.compress import compress
    from edgekit.converters.compress.pytorch.graph import run

    calibration, _ = _images(SAMPLES / "calibration")
    x_val, y_val = _images(SAMPLES / "validation")
    source = torch.export.load(str(SAMPLES / "digits_torch.pt2")).module()
    source_top1 = float((run(source, [x_val], batch=1).argmax(1) == y_val).mean())
    pruned, _ = compress(torch.export.load(str(SAMPLES / "digits_torch.pt2")).module(), "prune-channels-30",
                         [calibration], inputs=[calibration[:1]])
    distilled, provenance = compress(torch.export.load(str(SAMPLES / "digits_torch.pt2")).module(),
                                     "prune-channels-30+distill-40", [calibration], inputs=[calibration[:1]], seed=0)
    before = float((run(pruned, [x_val]).argmax(1) == y_val).mean())
    after = float((run(distilled, [x_val]).argmax(1) == y_val).mean())
    details = provenance[1]["details"]
    assert details["loss_last"] < 0.5 * details["loss_first"] and details["samples"] == 200
    assert after > before + 0.4, (before, after)
    assert after >= source_top1 - 0.25, (source_top1, after)   # measured: 1.0 -> 0.82
    again, _ = compress(torch.export.load(str(SAMPLES / "digits_torch.pt2")).module(),
                        "prune-channels-30+distill-40", [calibration], inputs=[calibration[:1]], seed=0)
    np.testing.assert_allclose(run(again, [x_val]), run(distilled, [x_val]), atol=1e-5)


# ---- edgekit convert end to end -------------------------------------------------------------------


def test_convert_compresses_a_pt2_source_end_to_end(tmp_path, labelled_digits):
    """The default distill (15 epochs) on 200 calibration images leaves the pruned sample at about
    two thirds top-1, which the parity gate for lossy recipes rejects: --no-gate keeps the artifact
    so the run is measured, not hidden."""
    out = tmp_path / "out"
    result = run_cli("convert", SAMPLES / "digits_torch.pt2", "-q", "int8,prune-channels-30+distill+int8",
                     "--calibration", SAMPLES / "calibration", "--validate", labelled_digits, "--labels",
                     SAMPLES / "labels.txt", *DIGITS_NORM, "--no-gate", "-o", out, "--report", out / "r.json")
    assert result.exit_code == 0, result.output + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("tflite")]
    assert [line.split()[1] for line in rows] == ["int8", "prune-channels-30+distill+int8"]
    assert "task top-1" in result.stdout
    arts = {a["quantize"]: a for a in json.loads((out / "r.json").read_text())["artifacts"]}
    pruned = arts["prune-channels-30+distill+int8"]
    assert pruned["size_bytes"] < arts["int8"]["size_bytes"]
    assert pruned["parity"]["task_top1"] > 0.5, pruned["parity"]   # chance is 0.1; undistilled 0.09
    manifest = json.loads((out / "digits_torch_prune-channels-30+distill+int8.tflite.json").read_text())
    assert manifest["source"]["kind"] == "torch_export" and manifest["recipe"] == "prune-channels-30+distill+int8"
    steps = manifest["source"]["compression"]
    assert [row["step"] for row in steps] == ["prune-channels-30", "distill"]
    assert set(steps[0]) == {"step", "params", "details", "macs_before", "macs_after", "params_before",
                             "params_after", "seconds"}
    pruned_artifact = out / "digits_torch_prune-channels-30+distill+int8.tflite"
    assert steps[1]["macs_after"] == artifact_macs(pruned_artifact) < artifact_macs(out / "digits_torch_int8.tflite")


def test_torchscript_source_compresses_to_tflite_and_coreml(tmp_path):
    out = tmp_path / "out"
    result = run_cli("convert", SAMPLES / "digits_torch.pt", "--input-shape", "1,1,32,32", "--to", "tflite,coreml",
                     "-q", "lowrank-50+distill+fp16", "--calibration", SAMPLES / "calibration", "--validate",
                     SAMPLES / "validation", *DIGITS_NORM, "--no-gate", "-o", out, "--report", out / "r.json")
    assert result.exit_code == 0, result.output + result.stderr
    arts = {a["format"]: a for a in json.loads((out / "r.json").read_text())["artifacts"]}
    assert set(arts) == {"tflite", "coreml"}
    for art in arts.values():
        assert not art.get("error") and art["parity"]["top1_agreement"] >= 0.8, art["parity"]
    manifest = json.loads((out / "digits_torch_lowrank-50+distill+fp16.tflite.json").read_text())
    assert manifest["source"]["kind"] == "torchscript"
    assert [r["step"] for r in manifest["source"]["compression"]] == ["lowrank-50", "distill"]
    assert manifest["source"]["compression"][0]["details"][0]["layer"] == "block.1"


def test_onnx_source_compresses_and_keeps_its_tensor_names(tmp_path):
    pytest.importorskip("onnxruntime", reason="ONNX sources need edgekit[onnx]")
    out = tmp_path / "out"
    result = run_cli("convert", SAMPLES / "digits_torch.onnx", "-q", "fp32,prune-channels-30-act+distill+fp32",
                     "--calibration", SAMPLES / "calibration", "--validate", SAMPLES / "validation", *DIGITS_NORM,
                     "--no-gate", "-o", out, "--report", out / "r.json")
    assert result.exit_code == 0, result.output + result.stderr
    arts = {a["quantize"]: a for a in json.loads((out / "r.json").read_text())["artifacts"]}
    pruned = arts["prune-channels-30-act+distill+fp32"]
    assert pruned["parity"]["top1_agreement"] >= 0.7, pruned["parity"]
    manifest = json.loads((out / "digits_torch_prune-channels-30-act+distill+fp32.tflite.json").read_text())
    assert manifest["source"]["kind"] == "onnx"
    assert [t["name"] for t in manifest["outputs"]] == [t["name"] for t in json.loads(
        (out / "digits_torch_fp32.tflite.json").read_text())["outputs"]]
    row = manifest["source"]["compression"][0]
    assert row["macs_after"] < row["macs_before"] and row["macs_after"] == artifact_macs(
        out / "digits_torch_prune-channels-30-act+distill+fp32.tflite")
