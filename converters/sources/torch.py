"""PyTorch sources: an ExportedProgram (`torch.export.save`, .pt2), TorchScript
(`torch.jit.save`, .pt) or an `nn.Module` built by code (`--source package.module:factory`).

The reference outputs are the module run eagerly in float32; the converters (litert-torch,
coremltools' PyTorch frontend) trace the same module. Vision models are NCHW: the source
records that layout and the image preprocessing follows it.
"""
from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import numpy as np

from edgekit._deps import require
from edgekit.errors import InputError, first_line
from edgekit.manifest import TensorInfo

from .base import TORCH, SourceModel, fixed_batch, image_layout


def import_torch():
    """torch, with triton kept out (why: edgekit._deps.keep_triton_out)."""
    return require("torch", "converting PyTorch models")


def load(path: Path, kind: str, options=None) -> SourceModel:
    torch = import_torch()
    declared = getattr(options, "input_shapes", None)
    if kind == "torch_export":
        module, inputs = _load_exported(torch, path)
    elif kind == "torchscript":
        module, inputs = _load_script(torch, path), None
    else:
        module, inputs = _from_factory(torch, options.factory), None
        path = Path(inspect.getfile(type(module)))
    if declared:
        inputs = _declared(declared, _input_names(module, len(declared)))
    if inputs is None:
        raise InputError(f"a {'TorchScript' if kind == 'torchscript' else 'PyTorch module from code'} does not say "
                         "its input shape; pass --input-shape, e.g. --input-shape 1,3,224,224 (several inputs: "
                         "'1,64:int32;1,64:int32')")
    return from_module(torch, module, path, kind, inputs)


def from_module(torch, module, path: Path, kind: str, inputs: list[TensorInfo]) -> SourceModel:
    """A SourceModel around an eval-mode module whose inputs are known (also used for ONNX)."""
    try:
        module = module.eval()
    except NotImplementedError:  # an exported program's module: its mode was fixed when it was exported
        pass
    def run(arrays: list[np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
        return [o.detach().float().numpy() for o in flatten_outputs(out)]

    try:
        probe = run([example_array(t) for t in inputs])
    except Exception as e:  # a wrong --input-shape surfaces here as whatever the module raises
        raise InputError(f"the PyTorch model does not run on inputs {[t.shape for t in inputs]} "
                         f"({type(e).__name__}: {first_line(str(e), 200)}); check --input-shape") from e
    output_names = ["output"] if len(probe) == 1 else [f"output_{i}" for i in range(len(probe))]
    return SourceModel(path, kind, TORCH, inputs, output_names, run, layout=image_layout(inputs[0].shape),
                       torch_module=module, max_batch=fixed_batch(inputs))


def example_array(t: TensorInfo) -> np.ndarray:
    return np.zeros(tuple(d or 1 for d in t.shape), np.dtype(t.dtype))


def flatten_outputs(out) -> list:
    if isinstance(out, dict):
        return [v for value in out.values() for v in flatten_outputs(value)]
    if isinstance(out, (list, tuple)):
        return [v for value in out for v in flatten_outputs(value)]
    return [out]


def _load_exported(torch, path: Path):
    try:
        program = torch.export.load(str(path))
    except Exception as e:
        raise InputError(f"expected a loadable torch.export program in {path.name!r}, torch could not read it "
                         f"({type(e).__name__}: {first_line(str(e), 200)}); save it with torch.export.save") from e
    user_inputs = set(program.graph_signature.user_inputs)
    inputs = []
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in user_inputs:
            val = node.meta.get("val")
            if val is None or not hasattr(val, "shape"):
                return program.module(), None
            shape = tuple(int(d) if isinstance(d, int) or str(d).isdigit() else None for d in val.shape)
            inputs.append(TensorInfo(node.name, shape, str(val.dtype).removeprefix("torch.")))
    return program.module(), inputs


def _load_script(torch, path: Path):
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise InputError(f"expected a loadable TorchScript file in {path.name!r}, torch could not read it "
                         f"({type(e).__name__}: {first_line(str(e), 200)}); save it with torch.jit.save") from e


def _from_factory(torch, spec: str | None):
    if not spec or ":" not in spec:
        raise InputError(f"--source expects package.module:function, got {spec!r}")
    module_name, _, attr = spec.partition(":")
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the user's own package in the working folder
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise InputError(f"--source {spec}: cannot import {attr!r} from {module_name!r} ({first_line(str(e), 200)}); "
                         "run from the folder that holds the package, or check the name") from e
    try:
        module = factory()
    except Exception as e:
        raise InputError(f"--source {spec}: calling {attr}() failed ({type(e).__name__}: "
                         f"{first_line(str(e), 200)})") from e
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"--source {spec}: expected {attr}() to return a torch.nn.Module, got "
                         f"{type(module).__name__}")
    return module


def _input_names(module, count: int) -> list[str]:
    try:
        params = [p for p in inspect.signature(module.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        names = [p.name for p in params][:count]
    except (TypeError, ValueError, AttributeError):  # TorchScript methods have no Python signature
        names = []
    return names if len(names) == count else [f"input_{i}" if count > 1 else "input" for i in range(count)]


def _declared(declared, names: list[str]) -> list[TensorInfo]:
    return [TensorInfo(name, tuple(shape), dtype) for name, (shape, dtype) in zip(names, declared)]
