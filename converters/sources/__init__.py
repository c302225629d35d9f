"""Every kind of trained model `edgekit convert` accepts, recognised by content.

`detect(path)` is cheap (no framework import) and runs before any slow work, so a wrong
file fails in a second with the route that fits it; `load(path, kind)` hands the file to
the module of its framework. Adding a source is one module with a `load(path, kind,
options)` and one row in SOURCES.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import InputError

from .base import FAMILIES, TENSORFLOW, TFLITE_FLOAT, TORCH, SourceModel  # noqa: F401  (re-exported)

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class SourceKind:
    kind: str
    family: str
    module: str           # converters.sources.<module> loads it
    describes: str        # for messages and `edgekit recipes`


SOURCES: dict[str, SourceKind] = {s.kind: s for s in [
    SourceKind("keras", TENSORFLOW, "keras", "Keras 3 .keras file"),
    SourceKind("h5", TENSORFLOW, "keras", "legacy Keras .h5 file"),
    SourceKind("saved_model", TENSORFLOW, "keras", "TensorFlow SavedModel folder"),
    SourceKind("torch_export", TORCH, "torch", "PyTorch ExportedProgram (.pt2, torch.export.save)"),
    SourceKind("torchscript", TORCH, "torch", "TorchScript (.pt/.pth, torch.jit.save)"),
    SourceKind("torch_module", TORCH, "torch", "PyTorch nn.Module from code (--source package.module:factory)"),
    SourceKind("onnx", TORCH, "onnx", "ONNX model (.onnx)"),
    SourceKind("tflite", TFLITE_FLOAT, "tflite", "float LiteRT model (.tflite)"),
]}

BY_SUFFIX = {".keras": "keras", ".h5": "h5", ".hdf5": "h5", ".pt2": "torch_export", ".pt": "torchscript",
             ".pth": "torchscript", ".onnx": "onnx", ".tflite": "tflite"}
ACCEPTED = ("a Keras .keras/.h5 file, a SavedModel folder, a PyTorch .pt2 (torch.export.save) or TorchScript "
            ".pt, an .onnx file, or a float .tflite")


def detect(path: Path) -> str:
    """The source kind of `path`, read from its content (a suffix can lie, or be missing)."""
    if not path.exists():
        raise InputError(f"expected a model file or SavedModel folder, got {str(path)!r}, which does not exist")
    if path.is_dir():
        return _detect_folder(path)
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(HDF5_MAGIC):
        return "h5"
    if head[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    if zipfile.is_zipfile(path):
        return _detect_zip(path)
    if _looks_like_onnx(path):
        return "onnx"
    if path.suffix.lower() in BY_SUFFIX:
        # Content says nothing (a truncated zip, say): the loader of the suffix's kind gives
        # the precise error ("Keras could not read it") rather than "unknown format".
        return BY_SUFFIX[path.suffix.lower()]
    if path.suffix.lower() in (".mlmodel",):
        raise InputError(f"{path.name!r} is already a Core ML model; edgekit converts from the trained source "
                         "(Keras, PyTorch, ONNX): pass that instead, or run this one with `edgekit run`")
    raise InputError(f"expected {ACCEPTED}; got {path.name!r}, which is none of these by its content")


def _detect_folder(path: Path) -> str:
    if (path / "saved_model.pb").exists():
        return "saved_model"
    if (path / "Manifest.json").exists() and path.suffix == ".mlpackage":
        raise InputError(f"{path.name!r} is already a Core ML package; edgekit converts from the trained source "
                         "(Keras, PyTorch, ONNX): pass that instead, or run this one with `edgekit run`")
    raise InputError(f"expected a SavedModel folder (with saved_model.pb), got folder {str(path)!r} without one; "
                     "export with model.export(dir) or tf.saved_model.save")


def _detect_zip(path: Path) -> str:
    """Keras 3, torch.export and TorchScript files are all zip archives; their members differ."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if "config.json" in names and any(n.startswith("model.weights") for n in names):
        return "keras"
    if any(n.endswith("archive_format") or "/models/" in n and n.endswith(".json") for n in names):
        return "torch_export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        raise InputError(f"{path.name!r} is a pickled PyTorch object (torch.save), which holds weights but not "
                         "the network; save the model with torch.export.save(torch.export.export(model, args), "
                         "'model.pt2') or torch.jit.save(torch.jit.trace(model, args), 'model.pt'), or pass "
                         "--source package.module:factory")
    raise InputError(f"expected {ACCEPTED}; got {path.name!r}, a zip archive of none of these kinds")


def _looks_like_onnx(path: Path) -> bool:
    """An ONNX ModelProto starts with field 1 (ir_version, a varint: byte 0x08) and names its
    producer and opsets near the start; nothing else we accept does."""
    with open(path, "rb") as f:
        head = f.read(4096)
    return head[:1] == b"\x08" and (b"onnx" in head or b"pytorch" in head or b"ai.onnx" in head)


def load(path: Path, kind: str, options=None) -> SourceModel:
    import importlib

    module = importlib.import_module(f"{__name__}.{SOURCES[kind].module}")
    return module.load(path, kind, options)


def load_source(path: str | Path) -> SourceModel:
    """Detect and load in one step (benchmarks and tests)."""
    path = Path(path)
    return load(path, detect(path))
