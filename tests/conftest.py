"""Shared fixtures: the bundled sample model, converted once per session with every recipe."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
# Subprocesses run from here, never from the checkout: `python -c` puts its working directory first on
# sys.path, so from ROOT it would import ./edgekit instead of the installed package under test.
OUTSIDE = Path(tempfile.gettempdir())
SAMPLES = ROOT / "sample_models"
ALL_TFLITE_RECIPES = ["fp32", "fp16", "int8-weights", "int8", "int16x8"]


def pytest_sessionstart(session):
    """tests/run_installed.sh sets EDGEKIT_TEST_INSTALLED=1: then the package under test must be the
    installed wheel, and a checkout that shadows it is an error, not a silent pass."""
    if os.environ.get("EDGEKIT_TEST_INSTALLED") == "1":
        import edgekit

        location = Path(edgekit.__file__).resolve()
        if ROOT in location.parents:
            raise pytest.UsageError(f"testing the installed package, but edgekit was imported from the checkout "
                                    f"({location}); run pytest from outside the source tree")


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES


@pytest.fixture(scope="session")
def labelled_digits(tmp_path_factory) -> Path:
    """The sample's validation images in one sub-folder per class (their labels are in the names):
    labelled data for task top-1 (convert --validate, sweep)."""
    root = tmp_path_factory.mktemp("labelled")
    for f in sorted((SAMPLES / "validation").glob("*.png")):
        label = f.stem.split("label")[1]
        (root / label).mkdir(exist_ok=True)
        shutil.copy(f, root / label / f.name)
    return root


def run_tflite(path: Path, x):
    """An artifact's first output for every row of `x`, one input at a time, through edgekit's runtime."""
    import numpy as np

    from edgekit.artifact import load

    model = load(path)
    return np.concatenate([model.run([x[i:i + 1]])[0] for i in range(len(x))])


def artifact_macs(path: Path) -> float:
    """Multiply-accumulates of a .tflite as edgekit's graph reader counts them."""
    from edgekit.tflite.graph import read_graph

    return read_graph(path.read_bytes()).total_macs


def run_cli(*args: str):
    from edgekit.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """The committed sample artifacts (sample_models/build_artifacts.py made them with `edgekit
    convert`): the device and serve tiers run on these, with no TensorFlow installed."""
    return SAMPLES / "artifacts"


@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """`edgekit convert` on digits_cnn.keras with all five TFLite recipes, through the CLI."""
    out = tmp_path_factory.mktemp("converted")
    report = out / "report.json"
    result = run_cli("convert", SAMPLES / "digits_cnn.keras", "--to", "tflite",
                     "--quantize", ",".join(ALL_TFLITE_RECIPES),
                     "--calibration", SAMPLES / "calibration", "--validate", SAMPLES / "validation",
                     "--labels", SAMPLES / "labels.txt", "--mean", "0", "--std", "255",
                     "-o", out, "--report", report)
    assert result.exit_code == 0, result.output + result.stderr
    return {"dir": out, "stdout": result.stdout, "stderr": result.stderr,
            "report": json.loads(report.read_text())}


@pytest.fixture(scope="session")
def image_files(samples):
    return sorted((samples / "validation").glob("*.png"))


@pytest.fixture(scope="session")
def validation_set(samples):
    """Validation images as the model sees them, and their true labels (from the file names)."""
    import numpy as np
    from PIL import Image

    files = sorted((samples / "validation").glob("*.png"))
    x = np.stack([np.asarray(Image.open(f), dtype=np.float32)[..., None] / 255.0 for f in files])
    y = np.array([int(f.stem.split("label")[1]) for f in files])
    return x, y


@pytest.fixture(scope="session")
def keras_model(samples):
    import keras

    return keras.models.load_model(samples / "digits_cnn.keras", compile=False)


def tflite_from_function(fn, input_signature, path, allow_custom_ops: bool = False):
    """A .tflite converted by TensorFlow directly from a plain function (not by edgekit): the
    third-party models the device side must also handle."""
    import tensorflow as tf

    module = tf.Module()
    module.fn = tf.function(fn, input_signature=input_signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.fn.get_concrete_function()], module)
    converter.allow_custom_ops = allow_custom_ops
    path.write_bytes(converter.convert())
    return path
