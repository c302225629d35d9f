"""The one seam between a path on disk and the format that reads it.

Every command that takes an artifact (load, inspect, emulate, bundle, report, predict, serve)
asks `kind_of` which format it is, by content rather than by name: a .tflite renamed `.bin` is
still a flatbuffer with TFL3 at byte 4, and a Core ML package is a folder holding Manifest.json
and Data/com.apple.CoreML/. The suffix is read only to word the error for a path that is
neither, or that does not exist.

This module imports no format at module level: a .tflite load never imports edgekit.coreml
(nor coremltools), and `import edgekit` stays cheap.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from .errors import ArtifactError, InputError
from .manifest import Manifest
from .predictor import Predictor
from .preprocess import ImageSpec
from .recipes import COREML, TFLITE

# Where each format carries the edgekit manifest. The converter writes it there; everything on the
# device side reads it through read_manifest below.
TFLITE_MANIFEST_BUFFER = "edgekit_manifest"  # a named metadata buffer of the .tflite flatbuffer
COREML_MANIFEST_KEY = "edgekit.manifest"     # a key of the Core ML spec's user_defined_metadata
MANIFEST_LOCATION = {TFLITE: f"metadata buffer {TFLITE_MANIFEST_BUFFER!r}",
                     COREML: f"user_defined_metadata key {COREML_MANIFEST_KEY!r}"}


def is_coreml_package(path: Path) -> bool:
    return path.is_dir() and (path / "Manifest.json").is_file() and (path / "Data" / "com.apple.CoreML").is_dir()


def kind_of(path: str | Path) -> str:
    """TFLITE or COREML, by content. A path that is neither raises a one-line InputError."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir():
        # an .mlpackage folder that lost its Manifest.json is still meant as Core ML: its loader
        # says what is missing from it
        if is_coreml_package(path) or suffix == ".mlpackage":
            return COREML
        raise InputError(f"expected a .tflite file or an .mlpackage folder, got {str(path)!r}, which is a folder "
                         "without Manifest.json and Data/com.apple.CoreML/")
    if not path.exists():
        raise _missing(path)
    from .tflite.reader import TFLITE_IDENTIFIER

    with open(path, "rb") as f:
        if f.read(8)[4:8] == TFLITE_IDENTIFIER:
            return TFLITE
    if suffix == ".mlpackage":
        raise InputError(f"expected a Core ML package folder, got {str(path)!r}, which is a file")
    # Any other file goes to the TFLite reader: its identifier check is the error a user needs
    # ("expected a .tflite flatbuffer (identifier TFL3 at byte 4), got ...").
    return TFLITE


def _missing(path: Path) -> InputError:
    if path.suffix.lower() == ".mlpackage":
        return InputError(f"expected a Core ML package folder, got {str(path)!r}, which does not exist")
    return InputError(f"expected a .tflite file, got {str(path)!r}, which does not exist")


def require_kind(path: str | Path, kind: str, purpose: str) -> Path:
    """`path` if it is an artifact of `kind`, else a one-line InputError naming `purpose`."""
    path = Path(path)
    got = kind_of(path)
    if got != kind:
        wanted = ".tflite file" if kind == TFLITE else ".mlpackage folder"
        raise InputError(f"{purpose} expects a {wanted}, got {str(path)!r} (a {got} artifact)")
    return path


def load(path: str | Path, threads: int | None = None, backend: str = "auto", labels: Sequence[str] | None = None,
         preprocessing: ImageSpec | None = None, isolate: bool = False, monitor: bool = False) -> Predictor:
    """Load an artifact: a .tflite (edgekit's or any other) through LiteRT, or an .mlpackage through
    Core ML on macOS and edgekit's numpy executor elsewhere (backend says which).

    isolate=True first loads and runs a .tflite once in a sandbox process (edgekit.sandbox), so a
    file that crashes or hangs the native runtime raises ArtifactError instead of killing this
    process; it costs about half a second. Use it for files from elsewhere.

    monitor=True watches inputs and outputs for drift from the manifest's reference_stats
    (edgekit.monitor): `model.drift()` reports it, crossings log a warning on "edgekit.monitor"."""
    if monitor:
        from .monitor import MonitoredModel

        return MonitoredModel(load(path, threads, backend, labels, preprocessing, isolate))
    path = Path(path)
    if kind_of(path) == COREML:
        from .coreml.model import CoreMLModel

        return CoreMLModel(path)
    if threads is not None and threads < 1:
        raise InputError(f"threads expects a positive number, got {threads}")
    if isolate:
        from .sandbox import probe

        probe(path, threads=threads, backend=backend)
    from .tflite.model import TFLiteModel, read_bytes

    return TFLiteModel(read_bytes(path), origin=path.name, threads=threads, backend=backend, labels=labels,
                       preprocessing=preprocessing, path=path)


def read_manifest_dict(path: str | Path) -> dict[str, Any] | None:
    """The manifest embedded in an artifact as a checked dict (None when it has none)."""
    path = Path(path)
    if kind_of(path) == COREML:
        from .coreml.executor import load_spec_and_program

        _, spec, _ = load_spec_and_program(path)
        meta = dict(spec.description.metadata.userDefined)
        if COREML_MANIFEST_KEY not in meta:
            return None
        data = _json(meta[COREML_MANIFEST_KEY], path.name)
        _checked(data, path.name)
        return data
    from .tflite.reader import read_bytes
    from .tflite.metadata import read_manifest as read_tflite_manifest

    return read_tflite_manifest(read_bytes(path), path.name)


def read_manifest(path: str | Path) -> Manifest | None:
    """The typed manifest embedded in an artifact (None when it has none)."""
    data = read_manifest_dict(path)
    return Manifest.from_dict(data) if data is not None else None


def manifest_from_json(raw: str | bytes, origin: str) -> dict[str, Any]:
    """A manifest payload as read from either format: JSON, then the typed checks."""
    data = _json(raw, origin)
    _checked(data, origin)
    return data


def _json(raw: str | bytes, origin: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{origin}: the embedded edgekit manifest is not valid JSON ({e})") from e


def _checked(data: Any, origin: str) -> None:
    try:
        Manifest.from_dict(data)  # every reader (runtime, inspect, bundle) gets a well-typed manifest
    except ArtifactError as e:
        raise ArtifactError(f"{origin}: {e}") from e


def app_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of an artifact the app builds can configure themselves from (bundle, report),
    or a one-line InputError saying what is missing and how to add it."""
    path = Path(path)
    kind = kind_of(path)
    manifest = read_manifest_dict(path)
    missing = [] if manifest is not None else ["the edgekit manifest"]
    if kind == TFLITE:
        from .tflite.metadata import METADATA_BUFFER_NAME
        from .tflite.reader import metadata_buffer, read_bytes

        if metadata_buffer(read_bytes(path), METADATA_BUFFER_NAME, path.name) is None:
            missing.append("TFLite Metadata (TFLITE_METADATA)")
    if missing:
        where = "" if manifest is not None else f" (the manifest lives in the {MANIFEST_LOCATION[kind]})"
        raise InputError(f"{path.name} lacks {' and '.join(missing)}{where}: the apps could not configure "
                         "themselves from it; re-convert it with `edgekit convert` (add --labels and --mean/--std "
                         "for image classifiers)")
    return manifest


def inspect(path: str | Path):
    """What an artifact holds, without running it: a `tflite.reader.TfliteInfo` or a
    `coreml.info.CoreMLInfo` (both have `kind`, `size_bytes` and `manifest`)."""
    path = Path(path)
    if kind_of(path) == COREML:
        from .coreml.info import inspect_package

        return inspect_package(path)
    from .tflite.info import inspect_bytes
    from .tflite.reader import read_bytes

    return inspect_bytes(read_bytes(path), path.name)


def tflite_bytes(path: str | Path, purpose: str) -> bytes:
    """The verified bytes of a .tflite for the tools that read its graph (emulate, bundle, report)."""
    from .tflite.integrity import verify_tflite
    from .tflite.reader import read_bytes

    path = require_kind(path, TFLITE, purpose)
    data = read_bytes(path)
    verify_tflite(data, path.name)
    return data
