"""edgekit.artifact, the one seam: artifacts are told apart by content, and a .tflite load is a
straight descent into edgekit.tflite that never touches edgekit.coreml."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

import edgekit
from conftest import OUTSIDE, run_cli
from edgekit.artifact import kind_of
from edgekit.errors import InputError

pytestmark = pytest.mark.device


def test_kind_is_read_from_content_so_a_renamed_tflite_loads(artifacts, tmp_path):
    renamed = tmp_path / "model.bin"
    shutil.copy(artifacts / "digits_cnn_int8.tflite", renamed)
    assert kind_of(renamed) == "tflite"
    assert kind_of(artifacts / "digits_cnn_fp16.mlpackage") == "coreml"
    model = edgekit.load(renamed)
    assert model.format == "tflite" and model.outputs[0].shape == (None, 10)


def test_a_folder_named_tflite_is_a_one_line_error(tmp_path):
    folder = tmp_path / "x.tflite"
    folder.mkdir()
    with pytest.raises(InputError, match="expected a .tflite file or an .mlpackage folder"):
        edgekit.load(folder)
    result = run_cli("inspect", folder)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_tflite_load_is_a_straight_descent(artifacts):
    script = (f"import sys, json, edgekit; edgekit.load({str(artifacts / 'digits_cnn_int8.tflite')!r}); "
              "print(json.dumps(sorted(m for m in sys.modules if m.startswith('edgekit'))))")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=OUTSIDE)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert {"edgekit.artifact", "edgekit.tflite.model", "edgekit.tflite.integrity", "edgekit.tflite.reader"} <= loaded
    assert not {m for m in loaded if m.startswith("edgekit.coreml")}, loaded
    # the old cross-imports are gone: no writer read at load, no runtime/tflite_file/integrity at the top level
    assert not loaded & {"edgekit.tflite_metadata.writer", "edgekit.tflite_file", "edgekit.integrity", "edgekit.graph",
                         "edgekit.runtime"}, loaded


def test_a_manifest_from_a_newer_edgekit_says_which_to_get(artifacts):
    from edgekit.artifact import read_manifest_dict
    from edgekit.errors import ArtifactError
    from edgekit.manifest import Manifest

    data = read_manifest_dict(artifacts / "digits_cnn_int8.tflite")
    with pytest.raises(ArtifactError, match=r"written by a newer edgekit \(manifest schema 7; .* reads up to 1\); "
                                            r"upgrade: pip install -U edgekit"):
        Manifest.from_dict({**data, "schema": "edgekit.manifest/7"})
    with pytest.raises(ArtifactError, match="'schema' is not edgekit.manifest/N"):
        Manifest.from_dict({**data, "schema": "something else"})


def test_unknown_manifest_keys_survive_a_round_trip(artifacts):
    from edgekit.artifact import read_manifest_dict
    from edgekit.manifest import Manifest

    data = {**read_manifest_dict(artifacts / "digits_cnn_int8.tflite"), "added_later": {"x": 1}}
    again = Manifest.from_dict(data).to_dict()
    assert again["added_later"] == {"x": 1} and again["recipe"] == "int8" and "extra" not in again
