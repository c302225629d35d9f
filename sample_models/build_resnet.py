"""Build the trained residual CNN the compression work is measured on, reproducibly.

    python sample_models/build_resnet.py     # writes sample_models/digits_resnet*

scikit-learn's 1797 8x8 digits (the same loader as build.py), upscaled to 32x32 and coloured:
each image gets a random foreground and background colour, so the network must learn shape,
not intensity, and the stem convolution sees three real channels. The network is a small
ResNet (3x3 stem, three stages of 3x3 residual blocks at 32/64/128 channels on 32/16/8 pixels,
about 0.4 M parameters, about 87 M multiply-accumulates): big enough that removing channels
matters for latency, small enough to train in a few minutes on two CPU cores. Training shifts every image
by up to 2 pixels each epoch.

Outputs:
  digits_resnet.keras                   Keras 3 model, softmax output "probs", input 0..255 RGB
                                        scaled by the model's users with --mean 0 --std 255
  digits_resnet/calibration/<digit>/    500 training images (class sub-folders: labelled)
  digits_resnet/validation/<digit>/     360 held-out images, never trained on
  digits_resnet/labels.txt, digits_resnet/training_summary.json (accuracy, seed, sizes)
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from build import IMAGE_SIZE, load_digits_32  # noqa: E402  (the sample model's loader: one upscale)

SEED = 20261126
OUT = HERE / "digits_resnet"
N_CALIBRATION = 500
N_VALIDATION = 360
EPOCHS = 24


def colourise(gray: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (N, 32, 32) -> (N, 32, 32, 3): ink and paper colours drawn per image, far enough apart
    (>= 120 levels on the sum of channels) that the digit stays visible."""
    out = np.empty(gray.shape + (3,), np.uint8)
    alpha = gray.astype(np.float32)[..., None] / 255.0
    for i in range(len(gray)):
        while True:
            ink, paper = rng.integers(0, 256, size=(2, 3))
            if abs(int(ink.sum()) - int(paper.sum())) >= 120:
                break
        out[i] = np.round(alpha[i] * ink + (1 - alpha[i]) * paper).astype(np.uint8)
    return out


def build_network():
    import keras
    from keras import layers

    def block(x, channels, stride, name):
        shortcut = x
        y = layers.Conv2D(channels, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
        y = layers.BatchNormalization(name=f"{name}_bn1")(y)
        y = layers.ReLU(name=f"{name}_relu1")(y)
        y = layers.Conv2D(channels, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
        y = layers.BatchNormalization(name=f"{name}_bn2")(y)
        if stride != 1 or x.shape[-1] != channels:
            shortcut = layers.Conv2D(channels, 1, strides=stride, use_bias=False, name=f"{name}_proj")(x)
            shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
        return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    x = layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = block(x, 32, 1, "s1b1")
    x = block(x, 32, 1, "s1b2")
    x = block(x, 64, 2, "s2b1")
    x = block(x, 64, 1, "s2b2")
    x = block(x, 128, 2, "s3b1")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="digits_resnet")


def shifted(images: np.ndarray, rng: np.random.Generator, max_shift: int = 2) -> np.ndarray:
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(rng.integers(-max_shift, max_shift + 1, size=(len(images), 2))):
        out[i] = np.roll(images[i], (dy, dx), axis=(0, 1))  # the paper colour wraps: no black border
    return out


def save_images(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    for i, (img, label) in enumerate(zip(images, labels)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="RGB").save(folder / str(label) / f"{i:04d}.png", optimize=True)


def main() -> None:
    import keras

    keras.utils.set_random_seed(SEED)
    rng = np.random.default_rng(SEED)
    gray, labels = load_digits_32()
    images = colourise(gray, rng)
    order = rng.permutation(len(images))
    val_idx, train_idx = order[:N_VALIDATION], order[N_VALIDATION:]
    x_val = images[val_idx].astype("float32") / 255.0
    model = build_network()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        if epoch == EPOCHS * 2 // 3:
            model.optimizer.learning_rate.assign(4e-4)
        x_train = shifted(images[train_idx], rng).astype("float32") / 255.0
        hist = model.fit(x_train, labels[train_idx], epochs=1, batch_size=64, verbose=0, shuffle=True)
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {hist.history['loss'][0]:.4f}", flush=True)
    seconds = time.perf_counter() - start
    _, val_acc = model.evaluate(x_val, labels[val_idx], verbose=0)
    print(f"held-out accuracy: {val_acc:.4f} ({seconds:.0f} s training)")

    # saved without the optimizer (Adam's two moments would triple the file): a deployable model
    plain = build_network()
    plain.set_weights(model.get_weights())
    plain.save(HERE / "digits_resnet.keras")
    OUT.mkdir(exist_ok=True)
    (OUT / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))
    save_images(OUT / "calibration", images[train_idx[:N_CALIBRATION]], labels[train_idx[:N_CALIBRATION]])
    save_images(OUT / "validation", images[val_idx], labels[val_idx])
    summary = {"seed": SEED, "held_out_accuracy": round(float(val_acc), 4), "n_train": int(len(train_idx)),
               "n_calibration": N_CALIBRATION, "n_validation": N_VALIDATION, "image_size": IMAGE_SIZE,
               "epochs": EPOCHS, "parameters": int(model.count_params()), "training_seconds": round(seconds),
               "normalization": {"mean": [0.0], "std": [255.0]}}
    (OUT / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
