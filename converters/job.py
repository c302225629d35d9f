"""What every artifact of one convert run shares (the loaded source, the data sets, the
reference outputs), and the steps every format takes with them: run an artifact on the
parity inputs in the source's tensor order, compare, assemble the manifest, hold the
result to its recipe's gate."""
from __future__ import annotations

import dataclasses
import datetime as dt
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Callable

import numpy as np

import edgekit
from edgekit.dataset import Dataset
from edgekit.fileio import replace_path
from edgekit.manifest import Manifest, TensorInfo
from edgekit.parity import gate_failure, looks_like_probabilities, parity_report
from edgekit.preprocess import ImageSpec
from edgekit.recipes import COREML

from .accuracy import top1
from .data import dataset_info
from .options import ArtifactResult, ConvertOptions, rejected_path
from .sources.base import SourceModel

RUN_BATCH = 32


@dataclass
class Job:
    """What every artifact of one convert run shares."""
    source: SourceModel
    opts: ConvertOptions
    spec: ImageSpec | None
    labels: list[str] | None
    calibration: Dataset | None
    validation: Dataset
    reference: list[np.ndarray]
    notes: str
    progress: Callable[[str], None]
    memo: dict = field(default_factory=dict)  # work several recipes share (a PyTorch model's float .tflite)
    task_labels: np.ndarray | None = None     # true class per validation input, when --validate has labels
    # A composed recipe (prune-channels-30+distill+int8) converts a compressed copy of the source:
    original: SourceModel | None = None       # then the user's model, which the manifest names
    steps: str = ""                           # "prune-channels-30+distill+"
    compression: list[dict] | None = None     # one provenance row per step

    def parity(self, outputs: list[np.ndarray]) -> dict:
        """Against the user's original model, also for a compressed variant (its reference outputs are
        the original's); with labelled validation data, the artifact's task top-1 too."""
        names = self.source.output_names
        report = parity_report(names, self.reference, outputs, len(self.validation), self.notes,
                               classifier_outputs(names, self.reference, self.labels))
        if self.task_labels is not None:
            report["task_top1"] = top1(outputs[0], self.task_labels)
        return report

    @property
    def nhwc_tflite(self) -> bool:
        """--channels-last on an NCHW (PyTorch/ONNX) source: the TFLite artifacts take NHWC images.
        (The pipeline refuses --channels-last for any other source.)"""
        return self.opts.channels_last and self.source.layout == "NCHW"

    def tflite_layout(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Input arrays in the source's layout, as this run's TFLite artifacts take them."""
        return [arrays[0].transpose(0, 2, 3, 1), *arrays[1:]] if self.nhwc_tflite else arrays

    def compressed(self, source: SourceModel, steps: str, provenance: list[dict]) -> "Job":
        """This job for a compressed copy of the source: same data and reference outputs."""
        return dataclasses.replace(self, source=source, original=self.source, steps=steps, compression=provenance,
                                   memo={})

    def reference_stats(self, input_info: TensorInfo, outputs: list[np.ndarray]) -> dict | None:
        """What drift monitoring compares against (edgekit.monitor.reference). From the validation inputs
        and this artifact's own outputs on them, not the source's: an int8 artifact's confidences sit on
        its output codes (top 0.996), the float source's do not (0.9999), and KS would flag every window.
        Synthetic inputs describe no real data, so they give no reference."""
        if self.validation.source == "synthetic":
            return None
        from edgekit.monitor.reference import compute_reference

        folder = Path(self.validation.source)
        files = [folder / item for item in self.validation.items] if folder.is_dir() else None
        return compute_reference(self.validation.arrays[0], outputs[0], input_info,
                                 self.spec.to_dict() if self.spec else None, self.notes, files)

    def model_info(self, recipe: str) -> dict[str, str]:
        opts = self.opts
        name = opts.name or opts.model.name.split(".")[0]
        description = opts.description or (f"{name}, recipe {recipe}, converted by edgekit {edgekit.__version__} "
                                           f"from {opts.model.name}")
        return {"name": name, "description": description, "version": opts.model_version, "author": opts.author,
                "license": opts.license}

    def manifest(self, fmt: str, recipe: str, inputs, outputs, parity: dict) -> Manifest:
        user_model = self.original or self.source
        manifest = Manifest(
            format=fmt, recipe=self.steps + recipe, inputs=inputs, outputs=outputs,
            model=self.model_info(self.steps + recipe),
            preprocessing=self.spec.to_dict() if self.spec else None, labels=self.labels, parity=parity,
            source={"file": self.opts.model.name, "kind": user_model.kind, "sha256": user_model.sha256()},
            calibration=(dataset_info(self.calibration)
                         if self.calibration is not None and recipe in ("int8", "int16x8") else None),
            versions=versions(), created_utc=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat())
        if self.opts.keep_float and recipe == "int8":
            manifest.source["keep_float"] = list(self.opts.keep_float)
        if fmt == COREML:
            manifest.source["ios"] = self.opts.ios
        if self.compression:
            manifest.source["compression"] = self.compression  # provenance: each step, MACs and params
        return manifest


def gated(job: Job, result: ArtifactResult) -> ArtifactResult:
    """Hold a written artifact to its recipe's parity gate. A failing one is renamed to
    `*.rejected` (with its manifest) so nothing downstream picks it up by its normal name, and
    the run exits non-zero; the table still shows its figures."""
    if not job.opts.gate:
        return result
    recipe = next(r for r in job.opts.recipes if r.name == result.recipe)
    result.gate = job.opts.gate_for(recipe)
    failure = gate_failure(result.parity, *result.gate)
    if failure is None:
        return result
    rejected = rejected_path(result.path)
    replace_path(result.path, rejected)
    if result.manifest_path is not None and result.manifest_path.exists():
        result.manifest_path.unlink()
    job.progress(f"    rejected: {failure}")
    result.path, result.manifest_path = rejected, None
    result.error = "; ".join([failure, *result.diagnosis])
    result.error_kind = "parity"
    return result


def run_batched(model, arrays: list[np.ndarray], source: SourceModel) -> list[np.ndarray]:
    """Run the artifact on the source's inputs and return its outputs in the source's order: a
    converted signature lists inputs and outputs alphabetically, the source model in its own order
    (a two-input model got its arrays swapped)."""
    in_names, out_names = [t.name for t in model.inputs], [t.name for t in model.outputs]
    to_artifact = permutation([t.name for t in source.inputs], in_names)
    arrays = [arrays[to_artifact.index(k)] for k in range(len(arrays))] if to_artifact else arrays
    n = arrays[0].shape[0]
    batch = RUN_BATCH if model.inputs[0].shape and model.inputs[0].shape[0] is None else 1
    chunks = [model.run([a[i:i + batch] for a in arrays]) for i in range(0, n, batch)]
    outputs = [np.concatenate([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    from_artifact = permutation(out_names, list(source.output_names))
    return [outputs[from_artifact.index(k)] for k in range(len(outputs))] if from_artifact else outputs


def permutation(names: list[str], target: list[str]) -> list[int] | None:
    """Where each of `names` sits in `target`, when `target` is a reordering of the same names."""
    if sorted(names) != sorted(target) or len(set(names)) != len(names):
        return None
    return [target.index(n) for n in names]


def classifier_outputs(names: list[str], reference: list[np.ndarray], labels) -> list[str]:
    if labels is not None:
        return names[:1]  # labels describe the first output (checked in _check_labels)
    return [n for n, r in zip(names, reference) if looks_like_probabilities(r)]



def versions() -> dict[str, str]:
    versions = {"edgekit": edgekit.__version__, "python": platform.python_version()}
    for dist in ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions
