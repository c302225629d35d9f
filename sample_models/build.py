"""Build the bundled sample models, reproducibly, from scikit-learn's 8x8 digits.

    python sample_models/build.py            # writes into sample_models/

The 8x8 digits are upscaled to 32x32 so the network has real spatial convolutions,
depthwise convolutions and pooling to quantize: the op mix of a small mobile CNN.
Images are stored as PNG files (raw 0..255 pixels); the models expect the
normalization `(pixel - 0) / 255`, which edgekit applies from `--mean 0 --std 255`.

Outputs (a few hundred KB in all):
  digits_cnn.keras             Keras 3 native format
  digits_cnn.h5                the same weights in the legacy HDF5 format
  digits_cnn_savedmodel/       the same network as a TF SavedModel (signature output "probs")
  labels.txt                   one class name per line
  calibration/                 200 training images for post-training quantization
  validation/                  150 held-out images (never seen in training or calibration)
  training_summary.json        held-out accuracy and the seed, to check a rebuild against
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SEED = 20261126
IMAGE_SIZE = 32
N_CALIBRATION = 200
N_VALIDATION = 150


def load_digits_32() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 sklearn digits as uint8 32x32 images (bilinear upscale) and their labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = []
    for img in digits.images:  # values 0..16
        small = Image.fromarray(np.uint8(np.round(img * (255.0 / 16.0))), mode="L")
        images.append(np.asarray(small.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)))
    return np.stack(images), digits.target.astype(np.int64)


def build_network():
    import keras
    from keras import layers

    inputs = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw_conv")(x)
    x = layers.Conv2D(32, 1, name="pw_conv")(x)
    x = layers.BatchNormalization(name="pw_bn")(x)
    x = layers.ReLU(max_value=6.0, name="pw_relu6")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def save_images(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir()
    for i, (img, label) in enumerate(zip(images, labels)):
        Image.fromarray(img, mode="L").save(folder / f"{i:04d}_label{label}.png", optimize=True)


def export_saved_model(model, path: Path) -> None:
    import keras

    if path.exists():
        shutil.rmtree(path)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda image: {"probs": model(image, training=False)},
        input_signature=[keras.InputSpec(shape=(None, IMAGE_SIZE, IMAGE_SIZE, 1), dtype="float32", name="image")],
    )
    archive.write_out(str(path), verbose=False)


def main() -> None:
    import keras

    keras.utils.set_random_seed(SEED)
    images, labels = load_digits_32()
    order = np.random.default_rng(SEED).permutation(len(images))
    val_idx, train_idx = order[:N_VALIDATION], order[N_VALIDATION:]
    x_train = images[train_idx, ..., None].astype("float32") / 255.0
    x_val = images[val_idx, ..., None].astype("float32") / 255.0

    model = build_network()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, labels[train_idx], epochs=60, batch_size=64, verbose=0, shuffle=True)
    _, val_acc = model.evaluate(x_val, labels[val_idx], verbose=0)
    print(f"held-out accuracy: {val_acc:.4f}")

    model.save(HERE / "digits_cnn.keras")
    model.save(HERE / "digits_cnn.h5")
    export_saved_model(model, HERE / "digits_cnn_savedmodel")
    (HERE / "labels.txt").write_text("".join(f"{d}\n" for d in range(10)))
    save_images(HERE / "calibration", images[train_idx[:N_CALIBRATION]], labels[train_idx[:N_CALIBRATION]])
    save_images(HERE / "validation", images[val_idx], labels[val_idx])
    summary = {"seed": SEED, "held_out_accuracy": round(float(val_acc), 4), "n_train": int(len(train_idx)),
               "n_calibration": N_CALIBRATION, "n_validation": N_VALIDATION, "image_size": IMAGE_SIZE,
               "normalization": {"mean": [0.0], "std": [255.0]}}
    (HERE / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
