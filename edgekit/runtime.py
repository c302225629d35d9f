"""Run a `.tflite` artifact: numpy + a LiteRT runtime, never TensorFlow unless asked.

`load(path)` builds the interpreter once; `Model.run` takes real-valued float arrays,
quantizes them for integer inputs, resizes the batch dimension when the model allows it,
and returns real-valued outputs in a stable order (the manifest's, else the signature's).
One lock serialises interpreter access: a LiteRT interpreter is not re-entrant.
"""
from __future__ import annotations

import importlib
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import ArtifactError, InputError, MissingDependencyError
from .manifest import Manifest, TensorInfo
from .tflite_file import check_identifier, read_bytes, read_manifest

# (backend name, module holding Interpreter), in order of preference
BACKENDS = (
    ("ai_edge_litert", "ai_edge_litert.interpreter"),
    ("tflite_runtime", "tflite_runtime.interpreter"),
    ("tensorflow", "tensorflow.lite"),
)


def _interpreter_class(backend: str):
    candidates = BACKENDS if backend == "auto" else [b for b in BACKENDS if b[0] == backend]
    if not candidates:
        raise InputError(f"backend expects one of auto, {', '.join(b[0] for b in BACKENDS)}, got {backend!r}")
    errors = []
    for name, module in candidates:
        if backend == "auto" and name == "tensorflow":
            continue  # never pull in TensorFlow implicitly: it is not a device runtime
        try:
            return name, importlib.import_module(module).Interpreter
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise MissingDependencyError("running .tflite needs a LiteRT runtime: pip install ai-edge-litert "
                                 f"(tried {'; '.join(errors)})")


def _dtype_info(dtype: np.dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    dtype = np.dtype(info.dtype)
    lo, hi = _dtype_info(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(info.scale)) + info.zero_point
    return np.clip(q, lo, hi).astype(dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    return ((q.astype(np.float32) - np.float32(info.zero_point)) * np.float32(info.scale)).astype(np.float32)


class Model:
    """A loaded artifact. Build once, call `run`/`predict` from any thread."""

    def __init__(self, data: bytes, origin: str = "model", threads: int | None = None, backend: str = "auto"):
        check_identifier(data, origin)
        self.origin = origin
        manifest = read_manifest(data, origin)
        self.manifest: Manifest | None = Manifest.from_dict(manifest) if manifest else None
        self.backend, interpreter_cls = _interpreter_class(backend)
        try:
            self._interpreter = interpreter_cls(model_content=data, num_threads=threads)
            self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise ArtifactError(f"the {self.backend} runtime cannot load {origin}: {str(e).strip().splitlines()[0]}") from e
        self._lock = threading.Lock()
        self._bind_tensors()

    def _bind_tensors(self) -> None:
        """Map user-facing names (signature names) to tensor indices and quantization."""
        it = self._interpreter
        signatures = it.get_signature_list()
        if signatures:
            runner = it.get_signature_runner(next(iter(signatures)))
            ins = list(runner.get_input_details().items())
            outs = list(runner.get_output_details().items())
        else:
            ins = [(d["name"], d) for d in it.get_input_details()]
            outs = [(d["name"], d) for d in it.get_output_details()]
        self._in = [(name, d["index"], _info(name, d)) for name, d in ins]
        self._out = [(name, d["index"], _info(name, d)) for name, d in outs]
        if self.manifest:  # the converter's order is the source model's order
            order = {t.name: i for i, t in enumerate(self.manifest.outputs)}
            self._out.sort(key=lambda o: order.get(o[0], len(order)))
            order = {t.name: i for i, t in enumerate(self.manifest.inputs)}
            self._in.sort(key=lambda o: order.get(o[0], len(order)))

    @property
    def inputs(self) -> list[TensorInfo]:
        return [info for _, _, info in self._in]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [info for _, _, info in self._out]

    def run(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Real-valued inputs (batch first, one per input) -> real-valued outputs."""
        if len(arrays) != len(self._in):
            raise InputError(f"{self.origin} expects {len(self._in)} inputs "
                             f"({', '.join(n for n, _, _ in self._in)}), got {len(arrays)}")
        prepared = [self._prepare(np.asarray(a), info) for a, (_, _, info) in zip(arrays, self._in)]
        with self._lock:
            it = self._interpreter
            for (_, index, _), arr in zip(self._in, prepared):
                if tuple(it.get_tensor(index).shape) != arr.shape:
                    it.resize_tensor_input(index, arr.shape, strict=True)
                    it.allocate_tensors()
            for (_, index, _), arr in zip(self._in, prepared):
                it.set_tensor(index, arr)
            it.invoke()
            raw = [it.get_tensor(index) for _, index, _ in self._out]
        return [dequantize(r, info) if info.quantized else r.astype(np.float32, copy=True) for r, (_, _, info) in
                zip(raw, self._out)]

    def _prepare(self, x: np.ndarray, info: TensorInfo) -> np.ndarray:
        expected = info.shape[1:]
        if x.ndim != len(info.shape) or any(e is not None and e != g for e, g in zip(expected, x.shape[1:])):
            shape = "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d)) for i, d in enumerate(info.shape)) + ")"
            raise InputError(f"input {info.name!r} expects shape {shape}, got {x.shape}")
        if info.shape and info.shape[0] is not None and x.shape[0] != info.shape[0]:
            raise InputError(f"input {info.name!r} has a fixed batch of {info.shape[0]}, got {x.shape[0]}")
        if info.quantized and np.dtype(info.dtype).kind in "iu":
            return quantize(x, info)
        return np.ascontiguousarray(x, dtype=np.dtype(info.dtype))

    def predict(self, x: Any) -> np.ndarray | dict[str, np.ndarray]:
        """One array (single-input model), a list in input order, or a dict by input name.
        Returns the output array, or a dict by output name for multi-output models."""
        if isinstance(x, dict):
            missing = [n for n, _, _ in self._in if n not in x]
            if missing:
                raise InputError(f"expected inputs named {[n for n, _, _ in self._in]}, missing {missing}")
            arrays = [x[n] for n, _, _ in self._in]
        elif isinstance(x, (list, tuple)):
            arrays = list(x)
        else:
            arrays = [x]
        outs = self.run(arrays)
        return outs[0] if len(outs) == 1 else {info.name: o for o, info in zip(outs, self.outputs)}


def _info(name: str, details: dict) -> TensorInfo:
    sig = details.get("shape_signature")
    shape = sig if sig is not None and len(sig) else details["shape"]
    scale, zero_point = details.get("quantization", (0.0, 0))
    quantized = scale != 0.0
    return TensorInfo(name, tuple(None if int(d) < 0 else int(d) for d in shape), np.dtype(details["dtype"]).name,
                      float(scale) if quantized else None, int(zero_point) if quantized else None)


def load(path: str | Path, threads: int | None = None, backend: str = "auto") -> Model:
    path = Path(path)
    if path.suffix.lower() != ".tflite" and not path.is_file():
        raise InputError(f"expected a .tflite artifact, got {str(path)!r}")
    return Model(read_bytes(path), origin=path.name, threads=threads, backend=backend)
