"""Convert the sample model into the small artifacts the device test tier runs on.

    python sample_models/build_artifacts.py      # needs edgekit[convert]; writes sample_models/artifacts/

The device tier (`pytest -m device`, run in a virtual environment with only the device install)
has no TensorFlow to convert with, so it tests edgekit's runtime, inspect, bench, emulate, predict
and bundle on these committed files (about 200 KB in all). They are made by `edgekit convert`
itself, so they carry exactly what a user's artifacts carry: TFLite Metadata, packed labels, the
embedded manifest with its parity figures, and the manifest JSON beside each file.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from click.testing import CliRunner

HERE = Path(__file__).resolve().parent
RECIPES = {"tflite": "fp32,fp16,int8", "coreml": "fp16"}


def main() -> int:
    from edgekit.cli import main as edgekit

    os.chdir(HERE)  # relative paths: the manifests must not record this machine's folders
    for fmt, recipes in RECIPES.items():
        args = ["convert", "digits_cnn.keras", "--to", fmt, "--quantize", recipes,
                "--calibration", "calibration", "--validate", "validation",
                "--labels", "labels.txt", "--mean", "0", "--std", "255",
                "--version", "1", "--author", "edgekit sample", "--license", "Apache-2.0",
                "-o", "artifacts", "--force", "--no-explain"]
        result = CliRunner().invoke(edgekit, args)
        print(result.output)
        if result.exit_code:
            return result.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
