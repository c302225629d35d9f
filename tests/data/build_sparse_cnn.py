"""Rebuild sparse_cnn_fp32.tflite and sparse_cnn_fp16.tflite (needs edgekit[convert]).

A tiny random CNN (16x16x3 -> 10) whose weights are pruned to ~80 % zeros and converted with
`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`, so the files carry TFLite sparsity metadata the way
MediaPipe's sparse models do: fp32 has DENSIFY'd conv weights and block-sparse (1x4)
FULLY_CONNECTED weights read directly by the sparse kernel; fp16 has float16 sparse weights
densified then dequantized (unstructured pruning: the converter's fp16 output for 1x4 blocks
feeds the compressed values to DEQUANTIZE as if dense, which reads past them).

    python tests/data/build_sparse_cnn.py
"""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(mode: str, out: Path) -> None:
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 3), name="image")
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(32, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(64, activation="relu", name="fc1")(x)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="probs")(x))
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        flat = weights[0].reshape(-1, weights[0].shape[-1])
        if isinstance(layer, keras.layers.Dense) and flat.shape[0] % 4 == 0 and mode == "fp32":
            # TFLite FC weights are (out, in): keep whole 1x4 blocks along `in`
            flat = flat * np.repeat(rng.random((flat.shape[0] // 4, flat.shape[1])) < 0.2, 4, axis=0)
        elif flat.shape[1] % 4 == 0:
            flat = flat * np.repeat(rng.random((flat.shape[0], flat.shape[1] // 4)) < 0.2, 4, axis=1)
        else:
            flat = flat * (rng.random(flat.shape) < 0.2)
        weights[0] = flat.reshape(weights[0].shape)
        layer.set_weights(weights)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if mode == "fp16":
        converter.optimizations.append(tf.lite.Optimize.DEFAULT)
        converter.target_spec.supported_types = [tf.float16]
    out.write_bytes(converter.convert())


if __name__ == "__main__":
    here = Path(__file__).parent
    for mode in ("fp32", "fp16"):
        build(mode, here / f"sparse_cnn_{mode}.tflite")
        print(f"wrote {here / f'sparse_cnn_{mode}.tflite'}")
