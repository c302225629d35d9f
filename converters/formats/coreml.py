"""The Core ML format, end to end: convert the source for a recipe (coreml_convert), save
the package, execute *the saved package* with edgekit's own ML-program executor for
parity, embed the manifest in its metadata and move it into place whole."""
from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from pathlib import Path

from edgekit.artifact import COREML_MANIFEST_KEY
from edgekit.errors import ConversionError
from edgekit.fileio import atomic_write_text, path_size, replace_dir
from edgekit.manifest import Manifest, TensorInfo
from edgekit.native_output import captured_native_output
from edgekit.recipes import COREML
from edgekit.weights import coreml_weights_sha256

from ..job import Job, run_batched
from ..options import ArtifactResult, manifest_path_for


def build(job: Job, recipe: str, path: Path) -> ArtifactResult:
    """Convert, save to a staging folder, execute *the saved package* for parity, then save again
    with the manifest in its metadata and move it into place (an .mlpackage is a folder: it
    appears whole or not at all)."""
    from edgekit.coreml.model import CoreMLModel

    from . import coreml_convert

    start = time.perf_counter()
    with captured_native_output():
        mlmodel = coreml_convert.convert(job.source, recipe, job.spec, job.labels, ios=job.opts.ios)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        checked = staging / "checked.mlpackage"
        with captured_native_output():
            mlmodel.save(str(checked))
        job.progress(f"    converted in {seconds:.1f}s; executing the saved package on {len(job.validation)} inputs")
        executed = CoreMLModel(checked, native=False, preprocessing=job.spec)
        executed_outputs = run_batched(executed, job.validation.arrays, job.source)
        parity = job.parity(executed_outputs)
        outputs = [TensorInfo(n, (None,) + tuple(r.shape[1:]), "float32")
                   for n, r in zip(job.source.output_names, job.reference)]
        manifest = job.manifest(COREML, recipe, job.source.inputs, outputs, parity)
        manifest.reference_stats = job.reference_stats(job.source.inputs[0], executed_outputs)
        manifest.weights_sha256 = coreml_weights_sha256(checked)  # the re-save below is checked to keep them
        _describe_coreml(mlmodel, job, manifest)
        mlmodel.user_defined_metadata[COREML_MANIFEST_KEY] = manifest.to_json()
        final = staging / path.name
        with captured_native_output():
            mlmodel.save(str(final))
        if _weights_digest(final) != _weights_digest(checked):
            raise ConversionError(f"{path.name}: re-saving with metadata changed the weights; not writing it")
        replace_dir(final, path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest_path = manifest_path_for(path)
    atomic_write_text(manifest_path, manifest.to_json())
    return ArtifactResult(path, COREML, recipe, path_size(path), seconds, parity, manifest_path)


def _describe_coreml(mlmodel, job: Job, manifest: Manifest) -> None:
    """Descriptions Xcode shows in the generated class."""
    info = manifest.model
    mlmodel.short_description = f"{info['description']}; parity cosine {manifest.parity['cosine']:.6f}"
    mlmodel.version = info["version"]
    mlmodel.author = info["author"]
    mlmodel.license = info["license"]
    spec = job.spec
    for name in mlmodel.input_description:
        if spec is not None:
            mlmodel.input_description[name] = (f"{spec.width}x{spec.height} {'grayscale' if spec.channels == 1 else 'RGB'}"
                                               f" image; normalized as (pixel - {list(spec.mean)}) / {list(spec.std)}")
    for name in mlmodel.output_description:
        mlmodel.output_description[name] = ("most likely class label" if name == "classLabel"
                                            else "class probabilities" if name.endswith("_probs") else "model output")


def _weights_digest(package: Path) -> str:
    h = hashlib.sha256()
    for f in sorted((package / "Data").rglob("*")):
        if f.is_file() and f.suffix == ".bin":
            h.update(f.read_bytes())
    return h.hexdigest()


