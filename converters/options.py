"""What a convert run is asked to do (ConvertOptions) and what it reports (ConvertResult),
and where each artifact, its manifest and a rejected artifact are written."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import ArtifactError, InputError, MissingDependencyError
from edgekit.recipes import COREML, TFLITE, Recipe

SUFFIX = {TFLITE: ".tflite", COREML: ".mlpackage"}
INPUT_DTYPES = ("float32", "int32", "int64")


@dataclass(frozen=True)
class ConvertOptions:
    model: Path
    formats: tuple[str, ...]
    recipes: tuple[Recipe, ...]
    out_dir: Path
    calibration: Path | None = None
    validate: Path | None = None
    calibration_samples: int = 200
    labels: Path | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    io: str = "int8"
    io_out: str | None = None          # output type of int8 artifacts (default: same as io)
    ios: int = 16
    keep_float: tuple[str, ...] = ()
    name: str | None = None            # model name shown in Android Studio / Xcode (default: file stem)
    description: str | None = None
    model_version: str = "1"
    author: str = ""
    license: str = ""
    explain_errors: bool = True
    force: bool = False
    gate: bool = True                  # reject artifacts below their recipe's parity gate
    min_cosine: float | None = None    # override every recipe's gate
    min_top1: float | None = None
    # PyTorch/ONNX sources
    factory: str | None = None         # "package.module:function" returning an nn.Module (then `model` names it)
    input_shapes: tuple[tuple[tuple[int, ...], str], ...] | None = None  # (shape, dtype) per input, when the
    #                                    source cannot tell (TorchScript, a module from code, dynamic ONNX dims)
    channels_last: bool = False        # TFLite image I/O as NHWC for an NCHW source (Android pipelines)

    def gate_for(self, recipe: Recipe) -> tuple[float, float]:
        return (recipe.gate.min_cosine if self.min_cosine is None else self.min_cosine,
                recipe.gate.min_top1 if self.min_top1 is None else self.min_top1)


@dataclass
class ArtifactResult:
    path: Path
    format: str
    recipe: str
    size_bytes: int
    seconds: float
    parity: dict
    manifest_path: Path | None
    error_layers: list[dict] = field(default_factory=list)
    error: str | None = None  # set when this recipe failed; nothing was written for it
    error_kind: str | None = None  # "conversion", "dependency", "artifact", "parity" (see _error_kind)
    diagnosis: list[str] = field(default_factory=list)  # what the artifact's outputs show (saturation...)
    gate: tuple[float, float] | None = None  # (min cosine, min top-1) it was held to; None: not gated

    def to_dict(self) -> dict:
        d = {"path": str(self.path), "format": self.format, "quantize": self.recipe,
             "size_bytes": self.size_bytes, "seconds": round(self.seconds, 3), "parity": self.parity,
             "manifest": str(self.manifest_path) if self.manifest_path else None,
             "largest_quantization_error": self.error_layers, "diagnosis": self.diagnosis,
             "gate": ({"min_cosine": self.gate[0], "min_top1": self.gate[1],
                       "passed": self.error_kind != "parity"} if self.gate else None)}
        if self.error:
            d["error"], d["error_kind"] = self.error, self.error_kind
        return d


@dataclass
class ConvertResult:
    source: str
    artifacts: list[ArtifactResult]
    calibration: dict | None
    validation: dict
    skipped_files: list[tuple[str, str]]

    @property
    def failed(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.error]

    def to_dict(self) -> dict:
        return {"source": self.source, "calibration": self.calibration, "validation": self.validation,
                "skipped_files": [{"file": f, "reason": r} for f, r in self.skipped_files],
                "artifacts": [a.to_dict() for a in self.artifacts]}


def error_kind(error: Exception) -> str:
    """How a failed recipe is classed in the report and in the exit code."""
    kinds = ((MissingDependencyError, "dependency"), (ArtifactError, "artifact"))
    return next((kind for cls, kind in kinds if isinstance(error, cls)), "conversion")


def rejected_path(artifact: Path) -> Path:
    """Where an artifact that fails its parity gate is kept for inspection (never loaded by name)."""
    return artifact.with_name(artifact.name + ".rejected")


def manifest_path_for(artifact: Path) -> Path:
    """The manifest beside an artifact: digits_int8.tflite -> digits_int8.tflite.json (distinct for
    the .tflite and .mlpackage of the same recipe)."""
    return artifact.with_name(artifact.name + ".json")


def artifact_path(opts: ConvertOptions, fmt: str, recipe: str) -> Path:
    return opts.out_dir / f"{opts.model.name.split('.')[0] or 'model'}_{recipe}{SUFFIX[fmt]}"


def parse_input_shapes(text: str | None) -> tuple | None:
    """'1,3,224,224' or '1,64:int32;1,64:int32' -> (((1, 3, 224, 224), 'float32'),) ..."""
    if not text:
        return None
    result = []
    for part in text.split(";"):
        dims, _, dtype = part.strip().partition(":")
        dtype = dtype.strip() or "float32"
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            shape = ()
        if not shape or any(d < 1 for d in shape) or dtype not in INPUT_DTYPES:
            raise InputError(f"--input-shape expects comma-separated positive sizes with an optional dtype "
                             f"({', '.join(INPUT_DTYPES)}), inputs separated by ';', e.g. 1,3,224,224 or "
                             f"'1,64:int32;1,64:int32'; got {part.strip()!r}")
        result.append((shape, dtype))
    return tuple(result)
