"""A Core ML package behind the same API as a .tflite: `edgekit.load("x.mlpackage")`.

On Linux the numpy executor runs the program (backend "coreml-emulated (numpy executor)");
on macOS coremltools' own predict runs it through the Core ML framework. Either way the caller
passes the same real-valued NHWC inputs as to the TFLite artifact of the same model (the
manifest's view of the source model), and image inputs are turned back into the pixels Core ML's
ImageType expects.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..artifact import COREML_MANIFEST_KEY
from ..errors import InputError
from ..fileio import path_size
from ..manifest import Manifest, TensorInfo
from ..predictor import Predictor
from ..preprocess import ImageSpec
from ..weights import check_constants_finite, check_digest, coreml_weights_sha256
from .executor import ProgramExecutor, on_macos_with_coreml

MANIFEST_KEY = COREML_MANIFEST_KEY  # where the converter writes the manifest (edgekit.artifact says)


class CoreMLModel(Predictor):
    format = "coreml"

    def __init__(self, path: str | Path, native: bool | None = None, preprocessing: ImageSpec | None = None):
        """preprocessing overrides the manifest's (the converter checks a package before its
        manifest is written)."""
        self.path = Path(path)
        self.origin = self.path.name
        self._executor = ProgramExecutor(self.path)  # also validates the package
        spec = self._executor.spec
        meta = dict(spec.description.metadata.userDefined)
        self.manifest = Manifest.from_json(meta[MANIFEST_KEY]) if MANIFEST_KEY in meta else None
        if self.manifest and self.manifest.weights_sha256:
            check_digest(self.manifest.weights_sha256, coreml_weights_sha256(self.path), self.origin)
        check_constants_finite(self._executor.constants, self.origin)
        self._image_inputs = {i.name: i.type.imageType for i in spec.description.input
                              if i.type.WhichOneof("Type") == "imageType"}
        self._probs_name = spec.description.predictedProbabilitiesName or None
        self._classes = self._class_labels()
        self.labels = (self.manifest.labels if self.manifest and self.manifest.labels else self._classes)
        if preprocessing is None and self.manifest and self.manifest.preprocessing:
            preprocessing = ImageSpec.from_dict(self.manifest.preprocessing)
        self.preprocessing = preprocessing or self._pixel_spec()
        use_native = on_macos_with_coreml() if native is None else native
        self._native = self._load_native() if use_native else None
        self.backend = "coreml (macOS)" if self._native is not None else "coreml-emulated (numpy executor)"
        self.size_bytes = path_size(self.path)

    def _load_native(self):
        import coremltools as ct

        return ct.models.MLModel(str(self.path))

    def _class_labels(self) -> list[str] | None:
        if not self._probs_name:
            return None
        classes = self._executor.constants
        for step in self._executor.steps:
            if step.op_type == "classify":
                kind, ref = step.args["classes"]
                values = ref if kind == "value" else classes[ref]
                return [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]
        return None

    def _pixel_spec(self) -> ImageSpec | None:
        """Without a manifest, an image input takes raw pixels (Core ML applies its own scale)."""
        if len(self._image_inputs) != 1:
            return None
        image = next(iter(self._image_inputs.values()))
        channels = 1 if image.colorSpace == image.GRAYSCALE else 3
        return ImageSpec(int(image.height), int(image.width), channels)

    @property
    def _nchw(self) -> bool:
        return self.preprocessing is not None and self.preprocessing.layout == "NCHW"

    @property
    def inputs(self) -> list[TensorInfo]:
        if self.manifest:
            return self.manifest.inputs
        out = []
        for name in self._executor.input_names:
            shape = self._executor.input_shapes[name]
            if name in self._image_inputs and not self._nchw:  # program takes NCHW; callers of a model
                shape = (shape[0], shape[2], shape[3], shape[1])  # converted from TensorFlow use NHWC
            out.append(TensorInfo(name, (None,) + tuple(shape[1:]), "float32"))
        return out

    @property
    def outputs(self) -> list[TensorInfo]:
        if self.manifest:
            return self.manifest.outputs
        if self._probs_name:
            return [TensorInfo(self._probs_name, (None, len(self._classes or [])), "float32")]
        return [TensorInfo(n, (None,), "float32") for n in self._executor.output_names]

    @property
    def resizable_batch(self) -> bool:
        return False  # programs are converted with batch 1; batches run as a loop

    def run(self, arrays: Sequence[np.ndarray], signature: str | None = None) -> list[np.ndarray]:
        if signature is not None:
            raise InputError(f"{self.origin} has no named signatures")
        if len(arrays) != len(self._executor.input_names):
            raise InputError(f"{self.origin} expects {len(self._executor.input_names)} inputs, got {len(arrays)}")
        arrays = [np.asarray(a, np.float32) for a in arrays]
        n = arrays[0].shape[0]
        per_sample = [self._run_one([a[i:i + 1] for a in arrays]) for i in range(n)]
        return [np.concatenate([s[k] for s in per_sample]) for k in range(len(per_sample[0]))]

    def _run_one(self, sample: list[np.ndarray]) -> list[np.ndarray]:
        feeds = {}
        for name, x, info in zip(self._executor.input_names, sample, self.inputs):
            if x.shape[1:] != tuple(d for d in info.shape[1:]):
                raise InputError(f"input {info.name!r} expects shape (N, {', '.join(map(str, info.shape[1:]))}), "
                                 f"got {x.shape}")
            if name in self._image_inputs:
                spec = self.preprocessing
                if self._nchw:  # a PyTorch/ONNX source: the caller's arrays are NCHW already
                    channel = (slice(None), None, None)
                    feeds[name] = x * np.asarray(spec.std, np.float32)[channel] + np.asarray(spec.mean, np.float32)[channel]
                    continue
                pixels = x * np.asarray(spec.std, np.float32) + np.asarray(spec.mean, np.float32) if spec else x
                feeds[name] = np.transpose(pixels, (0, 3, 1, 2))  # NHWC -> NCHW, as ImageType delivers
            else:
                feeds[name] = x
        if self._native is not None:
            result = self._predict_native(feeds)
        else:
            result = self._executor.run(feeds)
        if self._probs_name:
            probs = result[self._probs_name]
            return [np.asarray([[probs[c] for c in self._classes]], np.float32)]
        return [np.asarray(result[n], np.float32) for n in self._executor.output_names]

    def _predict_native(self, feeds: dict) -> dict:
        from PIL import Image

        native_feeds = {}
        for name, value in feeds.items():
            if name in self._image_inputs:
                chw = np.clip(np.round(value[0]), 0, 255).astype(np.uint8)
                mode = "L" if chw.shape[0] == 1 else "RGB"
                native_feeds[name] = Image.fromarray(chw[0] if mode == "L" else np.transpose(chw, (1, 2, 0)), mode)
            else:
                native_feeds[name] = value
        return self._native.predict(native_feeds)
