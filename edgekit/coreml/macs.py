"""Multiply-accumulates of a Core ML ML program, counted from the saved package itself.

`edgekit sweep` puts a Core ML variant beside TFLite ones, whose MACs come from the .tflite graph;
taking the Core ML row's figure from the TFLite file would report what another artifact computes.
So the program is executed once on a zero input (shapes are what matter) and every conv, linear
and matmul is counted from its weight and output shapes, as the TFLite graph counter does: one MAC
per weight use, bias adds and elementwise ops not counted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .executor import ProgramExecutor

COUNTED = ("conv", "linear", "matmul")


def program_macs(path: str | Path) -> int:
    executor = ProgramExecutor(Path(path))
    feeds = {name: np.zeros(executor.input_shapes[name], np.float32) for name in executor.input_names}
    env = executor.run(feeds, keep=True)
    total = 0
    for step in executor.steps:
        if step.op_type in COUNTED:
            args = {p: _value(ref, env, executor.constants) for p, ref in step.args.items()}
            total += _macs(step.op_type, args, np.shape(env[step.outputs[0]]))
    return int(total)


def _value(ref: tuple, env: dict, constants: dict):
    kind, value = ref
    if kind == "var":
        return env[value] if value in env else constants[value]
    if kind == "vars":
        return [env[v] if v in env else constants[v] for v in value]
    return value


def _macs(op_type: str, args: dict, out_shape: tuple) -> int:
    if op_type == "conv":
        # weight (C_out, C_in / groups, *kernel): each output value reads C_in/groups x kernel weights
        return int(np.prod(out_shape)) * int(np.prod(np.shape(args["weight"])[1:]))
    if op_type == "linear":
        return int(np.prod(out_shape)) * int(np.shape(args["weight"])[1])  # weight (out, in)
    x = np.shape(args["x"])
    inner = x[-2] if args.get("transpose_x") else x[-1]
    return int(np.prod(out_shape)) * int(inner)
