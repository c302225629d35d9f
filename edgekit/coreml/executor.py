"""Execute a saved Core ML ML program with numpy, op by op.

The program is read from the package on disk (what ships, not an in-memory object): constants
and compile-time ops (constexpr_*: dequantize, palette lookup, sparse-to-dense) are evaluated
once at load, like the Core ML runtime does; every other op runs per call in program order.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._deps import require
from ..errors import ArtifactError
from .ops import OPS

_NUMPY = {"fp16": np.float16, "fp32": np.float32, "fp64": np.float64, "int32": np.int32, "int16": np.int16,
          "int8": np.int8, "uint8": np.uint8, "bool": np.bool_}


@dataclass
class _Step:
    op_type: str
    name: str
    args: dict           # param -> ("var", name) | ("vars", [names]) | ("value", python/numpy value)
    outputs: list[str]
    dtypes: list[str | None]


def _dtype_name(var) -> str | None:
    dtype = getattr(var, "dtype", None)
    return getattr(dtype, "__name__", None)


def load_spec_and_program(path: Path):
    """(MLModel without compiling, its spec, the MIL program) — works on Linux."""
    from ..native_output import captured_native_output

    # Importing coremltools on Linux logs "Failed to load _MLModelProxy" (no Core ML framework
    # here) and pulls in TensorFlow's banner when it is installed: not ours to print.
    with captured_native_output():
        ct = require("coremltools", "reading Core ML packages")
        from coremltools.converters.mil.frontend.milproto.load import load as mil_load

    if not (path / "Manifest.json").exists():
        raise ArtifactError(f"expected an .mlpackage folder with Manifest.json, got {str(path)!r}")
    check_package_paths(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = ct.models.MLModel(str(path), skip_model_load=True)
            spec = model.get_spec()
        except Exception as e:
            raise ArtifactError(f"{path.name} is not a readable Core ML package ({type(e).__name__}: {e})") from e
        if spec.WhichOneof("Type") != "mlProgram":
            raise ArtifactError(f"{path.name} is a {spec.WhichOneof('Type')} model; the executor runs ML programs "
                                "(convert with convert_to='mlprogram')")
        check_blob_offsets(spec, path)
        try:
            program = mil_load(spec, spec.specificationVersion, model.weights_dir)
        except Exception as e:
            raise ArtifactError(f"{path.name}: its ML program cannot be loaded ({type(e).__name__}: {e})") from e
    return model, spec, program


def check_package_paths(path: Path) -> None:
    """Every item Manifest.json names must be a file inside the package's Data folder: coremltools
    opens whatever path is written there, so '../../etc/passwd' or a symlink would be read (and a
    weight file outside the package trusted) by anyone loading a package from elsewhere."""
    import json

    try:
        entries = json.loads((path / "Manifest.json").read_text(encoding="utf-8"))["itemInfoEntries"]
        items = [e["path"] for e in entries.values()]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ArtifactError(f"{path.name}: Manifest.json is malformed ({type(e).__name__}: {e}); re-copy or "
                            "re-convert the package") from e
    data = (path / "Data").resolve()
    for item in items:
        plain = isinstance(item, str) and bool(item) and not Path(item).is_absolute() and ".." not in Path(item).parts
        if plain:
            walk = path / "Data"
            for part in Path(item).parts:
                walk = walk / part
                plain = plain and not walk.is_symlink()
            plain = plain and walk.resolve().is_relative_to(data)
        if not plain:
            raise ArtifactError(f"{path.name}: Manifest.json names {item!r}, which is not a plain file inside the "
                                "package; refusing to read outside it. Re-copy or re-convert the package")


_BLOB_SENTINEL = 0xDEADBEEF
_BLOB_HEADER = 64  # the weight file's header, then one 64-byte record before each blob


def check_blob_offsets(spec, path: Path) -> None:
    """Every weight the program reads by (file, offset) must point at a blob record in that file
    whose data lies inside it. coremltools reads whatever is at the offset: one pointing into the
    file header loads garbage as weights with no error."""
    import struct

    refs: list = []
    _blob_refs(spec.mlProgram, refs)
    sizes: dict[str, bytes] = {}
    weights = path / "Data" / "com.apple.CoreML"
    for file_name, offset in refs:
        rel = file_name.removeprefix("@model_path/")
        if rel not in sizes:
            target = weights / rel
            if ".." in Path(rel).parts or Path(rel).is_absolute() or not target.is_file() or target.is_symlink():
                raise ArtifactError(f"{path.name}: a weight refers to {file_name!r}, which is not a file in the "
                                    "package; re-copy or re-convert it")
            sizes[rel] = target.read_bytes()
        blob = sizes[rel]
        ok = _BLOB_HEADER <= offset <= len(blob) - _BLOB_HEADER
        if ok:
            sentinel, _, size, data_offset = struct.unpack_from("<IIQQ", blob, offset)
            ok = sentinel == _BLOB_SENTINEL and data_offset >= offset + _BLOB_HEADER and data_offset + size <= len(blob)
        if not ok:
            raise ArtifactError(f"{path.name}: a weight points at byte {offset} of {rel}, which is not a weight "
                                f"record inside the file ({len(blob)} bytes); the package is damaged, re-copy or "
                                "re-convert it")


def _blob_refs(message, out: list) -> None:
    for field, value in message.ListFields():
        if field.name == "blobFileValue":
            out.append((value.fileName, value.offset))
        elif field.type == field.TYPE_MESSAGE:
            items = value.values() if hasattr(value, "values") and hasattr(value, "keys") else (
                value if not hasattr(value, "ListFields") else [value])
            for item in items:
                if hasattr(item, "ListFields"):
                    _blob_refs(item, out)


class ProgramExecutor:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.model, self.spec, program = load_spec_and_program(self.path)
        fn = program.functions["main"]
        self.input_names = list(fn.inputs)
        self.input_shapes = {n: tuple(int(d) for d in v.shape) for n, v in fn.inputs.items()}
        self.input_dtypes = {n: _dtype_name(v) for n, v in fn.inputs.items()}
        self.output_names = [v.name for v in fn.outputs]
        self.constants: dict[str, Any] = {}
        self.steps: list[_Step] = []
        self.compile_time_ops: list[str] = []  # constexpr_* op types, evaluated at load
        unknown = sorted({op.op_type for op in fn.operations if op.op_type != "const" and op.op_type not in OPS})
        if unknown:
            raise ArtifactError(f"{self.path.name} uses Core ML op(s) {', '.join(unknown)} that edgekit's executor "
                                "does not implement; run it on macOS, or report the op")
        for op in fn.operations:
            if op.op_type == "const":
                self.constants[op.outputs[0].name] = op.outputs[0].val
                continue
            step = _Step(op.op_type, op.name, {k: self._arg(v) for k, v in op.inputs.items()},
                         [v.name for v in op.outputs], [_dtype_name(v) for v in op.outputs])
            if op.op_type.startswith("constexpr_"):
                self._execute(step, self.constants)  # compile-time: decompress once
                self.compile_time_ops.append(op.op_type)
            else:
                self.steps.append(step)

    def _arg(self, value) -> tuple:
        if isinstance(value, (list, tuple)):
            return ("vars", [v.name for v in value])
        if value.op is None or value.op.op_type not in ("const",) or value.val is None:
            return ("var", value.name)
        return ("value", value.val)

    def _execute(self, step: _Step, env: dict) -> None:
        args = {}
        for param, (kind, ref) in step.args.items():
            if kind == "var":
                args[param] = env[ref] if ref in env else self.constants[ref]
            elif kind == "vars":
                args[param] = [env[r] if r in env else self.constants[r] for r in ref]
            else:
                args[param] = ref
        try:
            result = OPS[step.op_type](**args)
        except Exception as e:
            raise ArtifactError(f"{self.path.name}: op {step.op_type} {step.name!r} failed: {type(e).__name__}: {e}") from e
        results = result if len(step.outputs) > 1 else (result,)
        for name, dtype, value in zip(step.outputs, step.dtypes, results):
            if isinstance(value, np.ndarray) and dtype in _NUMPY and value.dtype != _NUMPY[dtype]:
                value = value.astype(_NUMPY[dtype])  # round to the program's declared precision
            env[name] = value

    def run(self, feeds: dict[str, np.ndarray], keep: bool = False) -> dict[str, Any]:
        """Execute once. feeds: program input name -> array of the program's input shape.
        keep=True returns every intermediate value too (for op-by-op checks)."""
        env: dict[str, Any] = {}
        for name in self.input_names:
            if name not in feeds:
                raise ArtifactError(f"{self.path.name} expects input {name!r}; got {sorted(feeds)}")
            value = np.asarray(feeds[name])
            if value.shape != self.input_shapes[name]:
                raise ArtifactError(f"{self.path.name} input {name!r} expects shape {self.input_shapes[name]}, "
                                    f"got {value.shape}")
            env[name] = value.astype(_NUMPY.get(self.input_dtypes[name], np.float32))
        for step in self.steps:
            self._execute(step, env)
        return env if keep else {name: env[name] for name in self.output_names}


def on_macos_with_coreml() -> bool:
    return os.uname().sysname == "Darwin"
