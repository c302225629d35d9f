"""Build the PyTorch sample, reproducibly, on the same digits and the same split as build.py.

    python sample_models/build_torch.py      # needs edgekit[torch]; writes into sample_models/

A small NCHW CNN (conv-BN-ReLU, depthwise-separable block, global pooling, linear head)
trained on the 32x32 upscaled scikit-learn digits, so the int8 top-1 agreement of its
converted artifacts means something. The calibration/ and validation/ images written by
build.py are its data too (validation: held out from training).

Outputs:
  digits_torch.pt2              torch.export.save of the trained network, input (1, 1, 32, 32)
  digits_torch.pt               the same network as TorchScript (torch.jit.trace)
  digits_torch.onnx             the same network exported to ONNX (opset 17, TorchScript exporter)
  torch_training_summary.json   held-out accuracy and the seed
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from build import IMAGE_SIZE, N_VALIDATION, SEED, load_digits_32

HERE = Path(__file__).resolve().parent
EPOCHS = 80


def build_network():
    import torch
    from torch import nn

    class DigitsNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.MaxPool2d(2))
            self.block = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.Conv2d(16, 32, 1),
                                       nn.BatchNorm2d(32), nn.ReLU6(), nn.MaxPool2d(2))
            self.conv3 = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(32, 10)

        def forward(self, image):
            x = self.conv3(self.block(self.stem(image)))
            return torch.softmax(self.head(x.mean(dim=(2, 3))), dim=1)

    return DigitsNet()


def _recalibrate_batchnorm(torch, model, x) -> None:
    """Exact BatchNorm statistics of the final weights (cumulative average over the training set):
    the running averages trail the weights and cost held-out accuracy in eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for batch in x.split(256):
            model(batch)


def train(make_model, epochs: int):
    """(eval-mode model, held-out top-1): `make_model()` trained on the digits' training split (softmax
    head, Adam 3e-3 with cosine annealing, batches of 64, seeded), BatchNorm statistics recomputed
    for the final weights. The benchmarks train their own architectures with it, on the same data."""
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(1)  # a small network: one thread is as fast, and deterministic
    images, labels = load_digits_32()
    order = np.random.default_rng(SEED).permutation(len(images))
    val_idx, train_idx = order[:N_VALIDATION], order[N_VALIDATION:]
    x = torch.from_numpy(images[:, None].astype(np.float32) / 255.0)
    y = torch.from_numpy(labels)
    model = make_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(train_idx), generator=generator).split(64):
            idx = torch.from_numpy(train_idx)[batch]
            loss = torch.nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-9), y[idx])  # softmax head
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    _recalibrate_batchnorm(torch, model, x[torch.from_numpy(train_idx)])
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x[val_idx]).argmax(1) == y[val_idx]).float().mean())
    return model, accuracy


def main() -> None:
    import torch

    model, accuracy = train(build_network, EPOCHS)
    print(f"held-out accuracy: {accuracy:.4f}")

    example = (torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE),)
    torch.export.save(torch.export.export(model, example), HERE / "digits_torch.pt2")
    torch.jit.save(torch.jit.trace(model, example), HERE / "digits_torch.pt")
    torch.onnx.export(model, example, HERE / "digits_torch.onnx", input_names=["image"], output_names=["probs"],
                      opset_version=17, dynamo=False)  # onnx2torch reads up to opset 17
    summary = {"seed": SEED, "held_out_accuracy": round(accuracy, 4), "epochs": EPOCHS, "layout": "NCHW",
               "input": [1, 1, IMAGE_SIZE, IMAGE_SIZE], "normalization": {"mean": [0.0], "std": [255.0]}}
    (HERE / "torch_training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
