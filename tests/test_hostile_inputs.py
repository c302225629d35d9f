"""Issue #15 item 8: corrupt inputs end as an EdgekitError with one line and its exit code, never
a TypeError/KeyError/RuntimeError/UnicodeDecodeError (exit 70 is for real bugs only)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES, run_cli

pytestmark = pytest.mark.device

INT8 = SAMPLES / "artifacts" / "digits_cnn_int8.tflite"
IMAGES = sorted((SAMPLES / "validation").glob("*.png"))[:4]


@pytest.fixture(autouse=True)
def _needs_artifacts():
    if not INT8.exists():
        pytest.skip("sample_models/artifacts not built")


def _with_manifest(tmp_path: Path, payload: bytes) -> Path:
    from edgekit.artifact import TFLITE_MANIFEST_BUFFER as TFLITE_METADATA_NAME
    from edgekit.tflite.metadata import embed_metadata

    # a model without packed files: re-embedding drops the zip the sample artifacts append
    base = Path(__file__).parent / "data" / "sparse_cnn_fp32.tflite"
    path = tmp_path / "bad_manifest.tflite"
    path.write_bytes(embed_metadata(base.read_bytes(), {TFLITE_METADATA_NAME: payload}))
    return path


def _good_manifest() -> dict:
    from edgekit.tflite.metadata import read_manifest
    from edgekit.tflite.reader import read_bytes

    return read_manifest(read_bytes(INT8))


@pytest.mark.parametrize("mutate", [
    lambda m: [1, 2],
    lambda m: {**m, "inputs": "image"},
    lambda m: {**m, "inputs": [{"name": 3}]},
    lambda m: {**m, "inputs": [{"name": "x", "shape": "1x28", "dtype": "float32"}]},
    lambda m: {**m, "outputs": [{"name": "p", "shape": [1, 10], "dtype": "complex1024"}]},
    lambda m: {**m, "labels": [1, 2]},
    lambda m: {**m, "preprocessing": {"height": 28}},
    lambda m: {**m, "preprocessing": {**m["preprocessing"], "mean": 5}},
    lambda m: {**m, "source": "x"},
], ids=["list", "inputs-str", "name-int", "shape-str", "dtype", "labels", "pp-missing", "pp-mean", "source"])
def test_corrupt_embedded_manifest_is_an_artifact_error(tmp_path, mutate):
    import edgekit

    path = _with_manifest(tmp_path, json.dumps(mutate(_good_manifest())).encode())
    with pytest.raises(edgekit.ArtifactError, match="manifest is malformed"):
        edgekit.load(path)
    result = run_cli("inspect", path)
    assert result.exit_code == 4, result.output
    assert result.stderr.count("\n") == 1 and "malformed" in result.stderr


def test_manifest_that_is_not_utf8(tmp_path):
    result = run_cli("inspect", _with_manifest(tmp_path, b"\xff\xfe{"))
    assert result.exit_code == 4 and "not valid JSON" in result.stderr


def test_runtime_error_at_invoke_is_an_artifact_error(monkeypatch):
    import edgekit

    model = edgekit.load(INT8)

    def broken_invoke():
        raise RuntimeError("Input tensor 8 lacks data\nNode number 3 failed to invoke.")

    monkeypatch.setattr(model._interpreter, "invoke", broken_invoke)
    with pytest.raises(edgekit.ArtifactError, match="failed to run digits_cnn_int8.tflite: Input tensor 8 lacks data"):
        model.predict(np.zeros((1, 32, 32, 1), np.float32))


def test_emulate_a_file_with_undecodable_names_is_one_line(tmp_path):
    from ai_edge_litert import schema_py_generated as schema

    data = bytearray(INT8.read_bytes())
    tab = schema.Model.GetRootAs(data, 0).Subgraphs(0).Tensors(0)._tab
    data[tab.Vector(tab.Offset(10))] = 0xFF  # the first byte of tensor 0's name: invalid UTF-8
    path = tmp_path / "names.tflite"
    path.write_bytes(bytes(data))
    result = run_cli("emulate", path, "--target", "rpi4")
    assert result.exit_code in (0, 4), result.stderr  # fine either way, never 70
    assert "unexpected" not in result.stderr


@pytest.mark.parametrize("args", [
    ("report", INT8, "-o", "/proc/edgekit-x/r.html", "--bench-runs", "0"),
    ("predict", INT8, *IMAGES, "--out", "/proc/edgekit-x/p.jsonl"),
    ("bundle", INT8, "-o", "/proc/edgekit-x"),
], ids=["report", "predict", "bundle"])
def test_unwritable_output_is_exit_2(args):
    result = run_cli(*args)
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "unexpected" not in result.stderr


def test_predict_out_a_folder_is_exit_2(tmp_path):
    (tmp_path / "p.jsonl").mkdir()
    result = run_cli("predict", INT8, *IMAGES, "--out", tmp_path / "p.jsonl")
    assert result.exit_code == 2 and "is a folder" in result.stderr


def test_jsonl_store_skips_garbage_lines_and_resumes(tmp_path):
    out = tmp_path / "p.jsonl"
    first = run_cli("predict", INT8, *IMAGES[:2], "--out", out)
    assert first.exit_code == 0, first.stderr
    with open(out, "ab") as fh:
        fh.write(b"garbage{\n\xff\xfe\n[1, 2]\n")
    again = run_cli("predict", INT8, *IMAGES, "--out", out)
    assert again.exit_code == 0, again.stderr
    assert "predicted 2, already done 2" in again.stdout
    assert "skipped 3 unreadable line(s)" in again.stderr


def test_sqlite_store_of_another_shape_is_exit_2(tmp_path):
    out = tmp_path / "p.db"
    with sqlite3.connect(out) as db:
        db.execute("CREATE TABLE predictions (x)")
    result = run_cli("predict", INT8, *IMAGES, "--out", out)
    assert result.exit_code == 2 and "cannot use" in result.stderr
