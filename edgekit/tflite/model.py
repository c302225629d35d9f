"""Run a `.tflite` artifact on the device: numpy + a LiteRT runtime, never TensorFlow.

`edgekit.load(path)` (edgekit.artifact) builds a TFLiteModel, which verifies the file and builds the interpreter once. Callers deal in real values:
images are preprocessed with the manifest's spec, integer inputs are quantized with the
tensor's scale/zero-point, integer outputs dequantized, and the batch dimension is resized
when the model allows it. One lock serialises interpreter access (a LiteRT interpreter is
not re-entrant), so a Model can be shared by threads.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..backends import interpreter_class
from ..errors import ArtifactError, InputError, first_line
from ..manifest import Manifest, TensorInfo
from ..native_output import quiet_native
from ..predictor import Predictor
from ..preprocess import ImageSpec
from ..weights import check_digest
from .integrity import verify_tflite
from .metadata import read_manifest
from .reader import read_bytes  # noqa: F401  (edgekit.artifact.load reads the file through here)
from .weights import check_tflite_finite, tflite_weights_sha256

_UNRESOLVED_OP = re.compile(r"unresolved custom op:\s*([A-Za-z0-9_]+)", re.IGNORECASE)


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    return _Codec(info).encode(np.asarray(x, dtype=np.float32))


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    return _Codec(info).decode(q)


class _Codec:
    """Real values <-> a tensor's stored values, with everything per-call precomputed: the
    wrapper's overhead budget is tens of microseconds, and np.iinfo/np.dtype lookups alone
    cost several."""

    __slots__ = ("dtype", "quantized", "inv_scale", "scale", "zero_point", "lo", "hi", "_work")

    def __init__(self, info: TensorInfo):
        self.dtype = np.dtype(info.dtype)
        self.quantized = info.quantized and self.dtype.kind in "iu"
        if self.quantized:
            limits = np.iinfo(self.dtype)
            self.scale, self.inv_scale = np.float32(info.scale), np.float32(1.0 / info.scale)
            self.zero_point = np.float32(info.zero_point)
            self.lo, self.hi = np.float32(limits.min), np.float32(limits.max)
        self._work: np.ndarray | None = None  # reused float32 scratch; callers hold the model lock

    def encode(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """round(x / scale) + zero_point, saturated; written into `out` when given."""
        if not self.quantized:
            if out is None:
                return np.ascontiguousarray(x, dtype=self.dtype)
            np.copyto(out, x, casting="unsafe")
            return out
        if out is None:
            work = np.multiply(x, self.inv_scale, dtype=np.float32)
            out = np.empty(x.shape, self.dtype)
        else:  # the hot path: reuse scratch memory, four passes, no allocation
            if self._work is None or self._work.shape != x.shape:
                self._work = np.empty(x.shape, np.float32)
            work = np.multiply(x, self.inv_scale, out=self._work, dtype=np.float32)
        # rint(x/scale) + zp == rint(x/scale + zp) because zp is an integer
        work += self.zero_point
        np.clip(work, self.lo, self.hi, out=work)
        np.rint(work, out=out, casting="unsafe")  # round and narrow in one pass
        return out

    def decode(self, q: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return q.astype(np.float32, copy=False)
        real = np.subtract(q, self.zero_point, dtype=np.float32)
        real *= self.scale
        return real


@dataclass
class _Binding:
    """One signature (or the bare subgraph 0 of a model without signatures)."""
    name: str | None
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    input_index: list[int]
    output_index: list[int]
    runner: Any = None  # SignatureRunner, for models with several signatures

    def __post_init__(self) -> None:
        self.in_codecs = [_Codec(t) for t in self.inputs]
        self.out_codecs = [_Codec(t) for t in self.outputs]


class TFLiteModel(Predictor):
    """A loaded .tflite artifact. Build once; call `predict`/`run` from any thread."""

    format = "tflite"

    def __init__(self, data: bytes, origin: str = "model", threads: int | None = None, backend: str = "auto",
                 labels: Sequence[str] | None = None, preprocessing: ImageSpec | None = None,
                 path: Path | None = None):
        """`data` is verified; with `path` (the same bytes on disk) the interpreter maps the file
        instead of copying `data`: less memory, and on this host ~5% faster invokes on
        MobileNetV2 int8 (weights page-aligned rather than wherever Python put the bytes)."""
        verify_tflite(data, origin)
        self.origin = origin
        self.size_bytes = len(data)
        manifest = read_manifest(data, origin)
        self.manifest: Manifest | None = Manifest.from_dict(manifest) if manifest else None
        check_tflite_finite(data, origin)
        if self.manifest and self.manifest.weights_sha256:
            check_digest(self.manifest.weights_sha256, tflite_weights_sha256(data), origin)
        self.labels = list(labels) if labels is not None else (self.manifest.labels if self.manifest else None)
        if preprocessing is None and self.manifest and self.manifest.preprocessing:
            preprocessing = ImageSpec.from_dict(self.manifest.preprocessing)
        self.preprocessing = preprocessing
        self.backend, interpreter_cls = interpreter_class(backend)
        try:
            source = {"model_path": str(path)} if path is not None else {"model_content": data}
            with quiet_native():  # the delegate's "INFO: Created ... XNNPACK delegate" on every load
                self._interpreter = interpreter_cls(**source, num_threads=threads)
                self._interpreter.allocate_tensors()
        except (RuntimeError, ValueError, MemoryError) as e:  # MemoryError: std::bad_alloc on absurd sizes
            raise _load_error(e, origin, self.backend) from e
        self._lock = threading.Lock()
        self._shapes: dict[int, tuple] = {}
        try:
            self._bindings = self._bind()
        except (RuntimeError, ValueError, KeyError, UnicodeDecodeError) as e:  # a corrupt signature table
            raise _load_error(e, origin, self.backend) from e
        self._default = next(iter(self._bindings.values()))

    # -- structure -------------------------------------------------------------------------
    def _bind(self) -> dict[str | None, _Binding]:
        it = self._interpreter
        signatures = list(it.get_signature_list())
        if not signatures:
            ins, outs = it.get_input_details(), it.get_output_details()
            return {None: _Binding(None, [_info(d["name"], d) for d in ins], [_info(d["name"], d) for d in outs],
                                   [d["index"] for d in ins], [d["index"] for d in outs])}
        bindings = {}
        for key in signatures:
            runner = it.get_signature_runner(key)
            ins = list(runner.get_input_details().items())
            outs = list(runner.get_output_details().items())
            ins, outs = self._manifest_order(ins, "inputs"), self._manifest_order(outs, "outputs")
            bindings[key] = _Binding(key, [_info(n, d) for n, d in ins], [_info(n, d) for n, d in outs],
                                     [d["index"] for _, d in ins], [d["index"] for _, d in outs],
                                     runner if len(signatures) > 1 else None)
        return bindings

    def _manifest_order(self, named: list, kind: str) -> list:
        """The converter recorded the source model's order; signatures sort names alphabetically."""
        if not self.manifest:
            return named
        order = {t.name: i for i, t in enumerate(getattr(self.manifest, kind))}
        return sorted(named, key=lambda nd: order.get(nd[0], len(order)))

    def _binding(self, signature: str | None) -> _Binding:
        if signature is None:
            return self._default
        if signature not in self._bindings:
            raise InputError(f"signature {signature!r} not in {self.origin}; it has {self.signatures}")
        return self._bindings[signature]

    @property
    def signatures(self) -> list[str]:
        return [k for k in self._bindings if k is not None]

    def signature_inputs(self, signature: str | None) -> list[TensorInfo]:
        return self._binding(signature).inputs

    def signature_outputs(self, signature: str | None) -> list[TensorInfo]:
        return self._binding(signature).outputs

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._default.inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._default.outputs

    @property
    def input_tensor_indices(self) -> list[int]:
        """The graph tensor index of each input, in `inputs` order (what graph.py keys by)."""
        return list(self._default.input_index)

    @property
    def resizable_batch(self) -> bool:
        return all(t.shape and t.shape[0] is None for t in self.inputs)

    # -- execution ---------------------------------------------------------------------------
    def run(self, arrays: Sequence[np.ndarray], signature: str | None = None) -> list[np.ndarray]:
        """Real-valued inputs (batch first, in input order) -> real-valued outputs."""
        b = self._binding(signature)
        if len(arrays) != len(b.inputs):
            raise InputError(f"{self.origin} expects {len(b.inputs)} inputs "
                             f"({', '.join(t.name for t in b.inputs)}), got {len(arrays)}")
        arrays = [_checked(np.asarray(a), info) for a, info in zip(arrays, b.inputs)]
        try:
            raw = self._invoke(b, arrays)
        except (RuntimeError, ValueError, MemoryError) as e:
            # Inputs were checked above, so a failing kernel or resize means the model itself is
            # broken (e.g. "Input tensor 8 lacks data", a delegate that cannot reshape).
            cause = first_line(str(e)) or type(e).__name__
            raise ArtifactError(f"the {self.backend} runtime failed to run {self.origin}: {cause}; the file may "
                                "be corrupt: re-copy or re-convert it") from e
        return [codec.decode(r) for r, codec in zip(raw, b.out_codecs)]

    def invoke_again(self) -> None:
        """Run the interpreter once more on the inputs the last `run` left in it, and read nothing:
        the kernels' time alone, without quantizing inputs or copying outputs (edgekit profile's
        op probes, whose input handling would otherwise outweigh a small layer)."""
        with self._lock:
            self._interpreter.invoke()

    def _invoke(self, b: _Binding, arrays: list[np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            if b.runner is not None:
                out = b.runner(**{t.name: c.encode(a) for t, c, a in zip(b.inputs, b.in_codecs, arrays)})
                return [out[t.name] for t in b.outputs]
            it = self._interpreter
            # Resize every input first, then allocate once: allocating after each input in turn
            # leaves the inputs briefly disagreeing on batch size, and XNNPACK then fails to
            # reshape the graph (a two-input model at batch 2 could not run).
            resized = False
            for index, a in zip(b.input_index, arrays):
                if self._shapes.get(index) != a.shape:
                    it.resize_tensor_input(index, a.shape, strict=True)
                    self._shapes[index] = a.shape
                    resized = True
            if resized:
                it.allocate_tensors()
            for index, codec, a in zip(b.input_index, b.in_codecs, arrays):
                # Quantize straight into the interpreter's input buffer: saves set_tensor's copy.
                # The view must be gone before invoke(), which refuses to run while one is alive.
                codec.encode(a, out=it.tensor(index)())
            it.invoke()
            return [it.get_tensor(index) for index in b.output_index]

def _checked(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise InputError(f"input {info.name!r} expects numbers ({info.dtype}), got an array of {x.dtype}")
    expected = info.shape[1:]
    if x.ndim != len(info.shape) or any(e is not None and e != g for e, g in zip(expected, x.shape[1:])):
        shape = "(" + ", ".join("N" if i == 0 else ("?" if d is None else str(d)) for i, d in enumerate(info.shape)) + ")"
        raise InputError(f"input {info.name!r} expects shape {shape}, got {x.shape}")
    if x.ndim and x.shape[0] == 0:
        raise InputError(f"input {info.name!r} has an empty batch (shape {x.shape}); send at least one sample")
    if info.shape and info.shape[0] is not None and x.shape[0] != info.shape[0]:
        raise InputError(f"input {info.name!r} has a fixed batch of {info.shape[0]}, got {x.shape[0]}; "
                         "use predict_batch to loop")
    return x


def _info(name: str, details: dict) -> TensorInfo:
    sig = details.get("shape_signature")
    shape = sig if sig is not None and len(sig) else details["shape"]
    scale, zero_point = details.get("quantization", (0.0, 0))
    quantized = scale != 0.0
    return TensorInfo(name, tuple(None if int(d) < 0 else int(d) for d in shape), np.dtype(details["dtype"]).name,
                      float(scale) if quantized else None, int(zero_point) if quantized else None)


def _load_error(error: Exception, origin: str, backend: str) -> ArtifactError:
    text = str(error)
    ops = sorted(set(_UNRESOLVED_OP.findall(text)))
    if ops:
        return ArtifactError(f"{origin} uses custom op {', '.join(ops)}, which the {backend} runtime does not have; "
                             "register the op's kernel or re-convert the model without it")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return ArtifactError(f"the {backend} runtime cannot load {origin}: {first}")
