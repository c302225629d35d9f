"""Knowledge distillation: fine-tune a compressed student to reproduce its teacher's outputs.

The teacher (the model before compression) labels whatever the student sees, so unlabelled
calibration inputs are enough. Softmax heads are matched on temperature-softened
distributions (Hinton et al.: KL(teacher_T || student_T) * T^2, logits recovered as log p, which
is exact up to a constant for a softmax output); other outputs by mean squared error. True
labels, when given, add a cross-entropy term. Each batch is randomly shifted by a few pixels
(image inputs only): the teacher's answer on a shifted image is as valid a target as on the
original, and a few hundred calibration images otherwise overfit in a few epochs.

Pruning changes what every later BatchNormalization sees, so its moving statistics are stale:
they are re-estimated on the calibration inputs (one pass in training mode over all of them with
momentum 0) before training and again after it. Training itself uses batch statistics (frozen
statistics made a 50 %-pruned student stall at chance); with a few dozen steps the moving averages
would lag the new weights, which the final re-estimate fixes: the converted model then computes
what the student learned.

Deterministic for a seed: shuffling and shifts come from one numpy generator, and Keras'
seed is set before the student's optimizer is built.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from edgekit.errors import InputError

TEMPERATURE = 4.0
SOFT_WEIGHT = 0.7           # share of the loss on soft targets when labels are given
BATCH = 32
LEARNING_RATE = 1e-3
MAX_SHIFT = 2               # pixels


def _is_softmax_head(model) -> bool:
    last = model.layers[-1]
    return getattr(getattr(last, "activation", None), "__name__", "") == "softmax" or type(last).__name__ == "Softmax"


def shift_images(batch: np.ndarray, rng: np.random.Generator, channels_first: bool = False) -> np.ndarray:
    """Random translation by up to MAX_SHIFT pixels, zero fill, per sample; images only (NHWC, or
    NCHW with channels_first), other inputs returned as they are."""
    if channels_first and batch.ndim == 4:
        return np.ascontiguousarray(shift_images(batch.transpose(0, 2, 3, 1), rng).transpose(0, 3, 1, 2))
    if batch.ndim != 4 or min(batch.shape[1:3]) < 8:
        return batch
    out = np.zeros_like(batch)
    h, w = batch.shape[1:3]
    for i, (dy, dx) in enumerate(rng.integers(-MAX_SHIFT, MAX_SHIFT + 1, size=(len(batch), 2))):
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[i, yd, xd] = batch[i, ys, xs]
    return out


def check_can_distill(after_compression: bool, calibration_arrays) -> None:
    """The two refusals of a distill step, the same for Keras and PyTorch models."""
    if not after_compression:
        raise InputError("distill fine-tunes a compressed model against the original; put it after "
                         "prune-channels-N, prune-blocks-N or lowrank-N")
    if not calibration_arrays:
        raise InputError("distill learns from the calibration inputs; pass --calibration with a few "
                         "hundred representative inputs")


def training_inputs(inputs: list[np.ndarray], labels, n_inputs: int, n_outputs: int) -> np.ndarray:
    """The one float32 input array distillation trains on, after the checks every model type shares."""
    if len(inputs) != 1 or n_inputs != 1 or n_outputs != 1:
        raise InputError(f"distill fine-tunes single-input, single-output models; this one has "
                         f"{n_inputs} inputs and {n_outputs} outputs")
    x = np.asarray(inputs[0], dtype=np.float32)
    if len(x) < 2:
        raise InputError(f"distill needs calibration inputs to learn from; got {len(x)} (pass --calibration "
                         "with a few hundred representative inputs)")
    if labels is not None and len(labels) != len(x):
        raise InputError(f"distill: {len(labels)} labels for {len(x)} inputs; give one label per input")
    return x


def recalibrate_batchnorm(model, x: np.ndarray, chunk: int = 512) -> None:
    """Moving mean/variance of every BatchNormalization := their statistics on `x` (the first
    `chunk` inputs: one batch, so each layer sees inputs normalized as they will be at inference)."""
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    if not norms:
        return
    saved = [layer.momentum for layer in norms]
    try:
        for layer in norms:
            layer.momentum = 0.0
        model(x[:chunk], training=True)
    finally:
        for layer, momentum in zip(norms, saved):
            layer.momentum = momentum


def distill(student, teacher, inputs: list[np.ndarray], labels: np.ndarray | None = None, epochs: int = 8,
            seed: int = 0, progress: Callable[[str], None] = lambda msg: None):
    """Train `student` in place against `teacher` on `inputs` (one array per model input). Returns
    {"epochs", "samples", "loss_first", "loss_last", "labelled"}."""
    import keras
    import tensorflow as tf

    x = training_inputs(inputs, labels, len(student.inputs), len(student.outputs))
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    softmax = _is_softmax_head(teacher)
    steps_per_epoch = -(-len(x) // BATCH)
    # cosine decay to zero over the run: the last epochs settle instead of hopping around a minimum
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=epochs * steps_per_epoch)
    optimizer = keras.optimizers.Adam(schedule)
    t = TEMPERATURE

    recalibrate_batchnorm(student, x)

    @tf.function(reduce_retracing=True)
    def step(batch, target, y, has_labels):
        with tf.GradientTape() as tape:
            pred = student(batch, training=True)
            if softmax:
                eps = 1e-7
                soft_t = tf.nn.softmax(tf.math.log(target + eps) / t)
                log_soft_s = tf.nn.log_softmax(tf.math.log(pred + eps) / t)
                soft = tf.reduce_mean(tf.reduce_sum(soft_t * (tf.math.log(soft_t + eps) - log_soft_s), -1)) * t * t
                hard = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, pred))
                loss = tf.where(has_labels, SOFT_WEIGHT * soft + (1 - SOFT_WEIGHT) * hard, soft)
            else:
                loss = tf.reduce_mean(tf.square(pred - target))
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    y_all = np.zeros(len(x), np.int64) if labels is None else np.asarray(labels, np.int64)
    first = last = None
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for start in range(0, len(x), BATCH):
            idx = order[start:start + BATCH]
            batch = shift_images(x[idx], rng)
            target = teacher(batch, training=False)
            losses.append(float(step(tf.constant(batch), target, tf.constant(y_all[idx]),
                                     tf.constant(labels is not None))))
        last = float(np.mean(losses))
        first = last if first is None else first
        progress(f"    distill epoch {epoch + 1}/{epochs}: loss {last:.4f}")
    recalibrate_batchnorm(student, x)  # the moving averages lag the weights that training just changed
    return {"epochs": epochs, "samples": int(len(x)), "loss_first": round(first, 6), "loss_last": round(last, 6),
            "labelled": labels is not None, "temperature": TEMPERATURE}
