"""Knowledge distillation of a compressed ATen graph against its teacher: ../distill.py (Keras) in torch.

Same recipe: Adam 1e-3 with cosine decay to zero over the run, batches of 32, softmax heads matched
on temperature-4 softened distributions (KL * T^2, logits recovered as log p), other outputs by MSE,
true labels (when given) adding a cross-entropy term, each batch randomly shifted by up to 2 pixels
(NCHW images). Deterministic for a seed: torch.manual_seed for torch, one numpy generator for the
shuffling and the shifts.

BatchNorm: in the exported graph an aten.batch_norm node carries its mode as arguments
(training, momentum), and the module's .train() does not reach them. So the mode is switched by
rewriting those arguments: re-estimating the statistics is one pass over (up to) 512 calibration
inputs with training=True and momentum=1.0 (torch's momentum is the weight of the new batch, so the
running statistics become that batch's: what Keras' momentum=0 pass does), before training and again
after it; training itself runs with training=True and momentum=0.0, i.e. on batch statistics without
touching the running ones (Keras trains on batch statistics too: frozen ones made a 50 %-pruned
student stall at chance). Dropout nodes are switched on for training the same way.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from edgekit.errors import InputError

from ..distill import BATCH, LEARNING_RATE, SOFT_WEIGHT, TEMPERATURE, shift_images, training_inputs
from .graph import _first, import_torch, op_name, output_nodes

RECALIBRATION_CHUNK = 512


def _is_softmax_head(gm) -> bool:
    outs = output_nodes(gm)
    return len(outs) == 1 and op_name(outs[0]) in ("softmax", "_softmax")


def set_mode(gm, training: bool, momentum: float = 0.0) -> None:
    """Rewrite every batch_norm's (training, momentum) and every dropout's train argument."""
    for node in gm.graph.nodes:
        name = op_name(node)
        if name == "batch_norm":
            args = list(node.args)
            args[5], args[6] = training, momentum
            node.args = tuple(args)
        elif name == "dropout" and len(node.args) >= 3:
            node.args = (*node.args[:2], training)
    gm.recompile()


def recalibrate_batchnorm(gm, x: np.ndarray) -> None:
    """Running mean/variance of every batch_norm := their statistics on the first RECALIBRATION_CHUNK
    inputs (one batch, so each layer sees inputs normalized as they will be at inference)."""
    torch = import_torch()
    if not any(op_name(n) == "batch_norm" for n in gm.graph.nodes):
        return
    try:
        set_mode(gm, True, 1.0)
        with torch.no_grad():
            gm(torch.from_numpy(np.ascontiguousarray(x[:RECALIBRATION_CHUNK])))
    finally:
        set_mode(gm, False, 0.0)


def distill(student, teacher, inputs: list[np.ndarray], labels: np.ndarray | None = None, epochs: int = 8,
            seed: int = 0, progress: Callable[[str], None] = lambda msg: None) -> dict:
    """Train `student` (a GraphModule) in place against `teacher` on `inputs`. Returns
    {"epochs", "samples", "loss_first", "loss_last", "labelled", "temperature"}."""
    torch = import_torch()
    placeholders = [n for n in student.graph.nodes if n.op == "placeholder"]
    x = training_inputs(inputs, labels, len(placeholders), len(output_nodes(student)))
    try:
        student(torch.from_numpy(x[:2]))
    except Exception as e:
        raise InputError("distill trains on batches, and this exported graph is fixed to its example's batch "
                         "size; export the model with a dynamic batch dimension (torch.export.Dim) to distill "
                         "it") from e
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    softmax = _is_softmax_head(teacher)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=LEARNING_RATE)
    total = epochs * -(-len(x) // BATCH)
    # cosine decay to zero over the run (Keras' CosineDecay): the last epochs settle
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    t, eps = TEMPERATURE, 1e-7
    y_all = torch.from_numpy(np.zeros(len(x), np.int64) if labels is None else np.asarray(labels, np.int64))

    recalibrate_batchnorm(student, x)
    first = last = None
    try:
        set_mode(student, True, 0.0)
        for epoch in range(epochs):
            order = rng.permutation(len(x))
            losses = []
            for start in range(0, len(x), BATCH):
                idx = order[start:start + BATCH]
                batch = torch.from_numpy(shift_images(x[idx], rng, channels_first=True))
                with torch.no_grad():
                    target = _first(teacher(batch))
                pred = _first(student(batch))
                if softmax:
                    soft_t = torch.softmax(torch.log(target + eps) / t, -1)
                    log_soft_s = torch.log_softmax(torch.log(pred + eps) / t, -1)
                    loss = (soft_t * (torch.log(soft_t + eps) - log_soft_s)).sum(-1).mean() * t * t
                    if labels is not None:
                        hard = torch.nn.functional.nll_loss(torch.log(pred + eps), y_all[idx])
                        loss = SOFT_WEIGHT * loss + (1 - SOFT_WEIGHT) * hard
                else:
                    loss = torch.mean((pred - target) ** 2)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(float(loss.detach()))
            last = float(np.mean(losses))
            first = last if first is None else first
            progress(f"    distill epoch {epoch + 1}/{epochs}: loss {last:.4f}")
    finally:
        set_mode(student, False, 0.0)
    recalibrate_batchnorm(student, x)  # the running statistics lag the weights that training just changed
    return {"epochs": epochs, "samples": int(len(x)), "loss_first": round(first, 6), "loss_last": round(last, 6),
            "labelled": labels is not None, "temperature": TEMPERATURE}
