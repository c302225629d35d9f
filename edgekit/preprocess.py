"""One preprocessing spec for every consumer: calibration loading, the runtime, the server.

Images become float32 NHWC tensors: resize to the model's (height, width) with bilinear
filtering, convert to the model's channels (1 = grayscale "L", 3 = RGB), then
`(pixel - mean) / std` per channel. The spec travels in the artifact's manifest, so the
device applies exactly what calibration applied.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


LAYOUTS = ("NHWC", "NCHW")


@dataclass(frozen=True)
class ImageSpec:
    height: int
    width: int
    channels: int  # 1 (grayscale) or 3 (RGB)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "NHWC"   # of the model's input: NCHW for PyTorch/ONNX vision models
    color_order: str = "RGB"

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise InputError(f"image inputs need 1 or 3 channels, the model has {self.channels}; "
                             "feed this model arrays (.npy/.npz) instead of images")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise InputError(f"--{name} expects 1 or {self.channels} values for a {self.channels}-channel "
                                 f"model, got {len(values)} ({','.join(map(str, values))})")
        if any(s == 0 for s in self.std):
            raise InputError("--std must be non-zero, got 0; use --std 1 for no scaling")
        if self.layout not in LAYOUTS:
            raise InputError(f"image layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")

    @classmethod
    def for_input_shape(cls, shape: tuple, mean=(0.0,), std=(1.0,), layout: str = "NHWC") -> "ImageSpec":
        """Derive the spec from an input shape like (None, 224, 224, 3), or (1, 3, 224, 224) for NCHW."""
        h, w, c = (shape[2], shape[3], shape[1]) if layout == "NCHW" else (shape[1], shape[2], shape[-1])
        if len(shape) != 4 or h is None or w is None:
            raise InputError(f"image preprocessing needs a fixed {layout} input shape, the model input is {shape}; "
                             "give calibration/validation data as .npy/.npz arrays instead")
        return cls(height=int(h), width=int(w), channels=int(c), mean=tuple(float(m) for m in mean),
                   std=tuple(float(s) for s in std), layout=layout)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ImageSpec":
        return cls(height=d["height"], width=d["width"], channels=d["channels"], mean=tuple(d["mean"]),
                   std=tuple(d["std"]), layout=d.get("layout", "NHWC"), color_order=d.get("color_order", "RGB"))

    def load(self, source: Any) -> np.ndarray:
        """A path, bytes or PIL image -> float32 array (height, width, channels), normalized."""
        from PIL import Image, UnidentifiedImageError

        try:
            if isinstance(source, Image.Image):
                img = source
            elif isinstance(source, (bytes, bytearray)):
                img = Image.open(io.BytesIO(source))
            else:
                img = Image.open(Path(source))
            img = img.convert("L" if self.channels == 1 else "RGB")
            img = img.resize((self.width, self.height), Image.BILINEAR)
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise InputError(f"expected an image Pillow can read, got {_describe(source)}: {e}") from e
        pixels = np.asarray(img, dtype=np.float32).reshape(self.height, self.width, self.channels)
        return self.to_layout(self.normalize(pixels))

    def to_layout(self, hwc: np.ndarray) -> np.ndarray:
        """(H, W, C) -> the model's layout for one image: (C, H, W) for NCHW models."""
        return np.ascontiguousarray(hwc.transpose(2, 0, 1)) if self.layout == "NCHW" else hwc

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((pixels - mean) / std).astype(np.float32)

    def value_range(self) -> tuple[float, float]:
        """The range normalized pixels (0..255) land in; used for synthetic inputs."""
        lo = min((0.0 - m) / s for m, s in zip(_bcast(self.mean, self.channels), _bcast(self.std, self.channels)))
        hi = max((255.0 - m) / s for m, s in zip(_bcast(self.mean, self.channels), _bcast(self.std, self.channels)))
        return float(min(lo, hi)), float(max(lo, hi))


def _bcast(values: tuple[float, ...], n: int) -> tuple[float, ...]:
    return values * n if len(values) == 1 else values


def _describe(source: Any) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"{len(source)} bytes"
    return repr(str(source))


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """'0.5' or '123.7,116.3,103.5' -> tuple of floats."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise InputError(f"{option} expects a number or a comma list of numbers (one per channel), got {text!r}") from None
    return values
