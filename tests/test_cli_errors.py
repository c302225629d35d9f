"""Every bad input gets one line on stderr, a non-zero exit, no traceback, nothing half-written."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import OUTSIDE, run_cli

pytestmark = pytest.mark.convert


def assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    error_lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
    assert len(error_lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def test_missing_model_file(tmp_path):
    result = run_cli("convert", tmp_path / "nope.keras", "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "nope.keras", "does not exist")
    assert not (tmp_path / "out").exists()


def test_unknown_model_format(tmp_path):
    (tmp_path / "model.bin").write_bytes(b"\x00\x07 not a model")
    result = run_cli("convert", tmp_path / "model.bin", "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "expected a Keras .keras/.h5 file", "PyTorch .pt2", ".onnx", "model.bin",
                          "none of these by its content")


def test_pickled_torch_state_names_the_route(tmp_path):
    """torch.save(model.state_dict()) is a zip with data.pkl: weights without the network."""
    import zipfile

    with zipfile.ZipFile(tmp_path / "weights.pt", "w") as z:
        z.writestr("weights/data.pkl", b"\x80\x02}q\x00.")
    result = run_cli("convert", tmp_path / "weights.pt", "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "weights.pt", "torch.export.save", "torch.jit.save", "--source")


def test_corrupt_keras_file(tmp_path, samples):
    corrupt = tmp_path / "broken.keras"
    corrupt.write_bytes((samples / "digits_cnn.keras").read_bytes()[:5000])
    result = run_cli("convert", corrupt, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "broken.keras", "Keras could not read it")
    assert not (tmp_path / "out").exists()


def test_folder_without_saved_model(tmp_path):
    result = run_cli("convert", tmp_path, "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "saved_model.pb")


def test_calibration_folder_with_no_images(tmp_path, samples):
    empty = tmp_path / "calib"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    (empty / "fake.png").write_bytes(b"not really a png")
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "int8", "--calibration", empty,
                     "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "at least one readable image", "2 files skipped")
    assert not (tmp_path / "out").exists()


def test_unreadable_images_are_skipped_and_counted(tmp_path, samples):
    calib = tmp_path / "calib"
    calib.mkdir()
    for f in sorted((samples / "calibration").glob("*.png"))[:30]:
        (calib / f.name).write_bytes(f.read_bytes())
    (calib / "zz_broken.png").write_bytes(b"\x89PNG garbage")
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "fp32", "--calibration", calib,
                     "--std", "255", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "skipped 1 unreadable files" in result.stdout and "zz_broken.png" in result.stdout


def test_mismatched_channels(tmp_path, samples):
    rgb = tmp_path / "rgb.npz"
    np.savez(rgb, image=np.zeros((8, 32, 32, 3), np.float32))
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "int8", "--calibration", rgb,
                     "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "expected shape (N, 32, 32, 1)", "(8, 32, 32, 3)",
                          "the model takes 1, the data has 3")


def test_existing_output_refused_without_force_and_kept_intact(tmp_path, samples):
    out = tmp_path / "out"
    out.mkdir()
    existing = out / "digits_cnn_fp32.tflite"
    existing.write_bytes(b"precious")
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "fp32", "-o", out)
    assert_one_line_error(result, 3, "already exists", "--force")
    assert existing.read_bytes() == b"precious"
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "fp32", "-o", out, "--force")
    assert result.exit_code == 0, result.stderr
    assert existing.read_bytes()[4:8] == b"TFL3"
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_unknown_recipe_suggests_close_match(tmp_path, samples):
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "int9", "-o", tmp_path)
    assert_one_line_error(result, 2, "unknown recipe 'int9'", "Did you mean 'int8'?", "fp32, fp16")


def test_recipe_the_format_cannot_do(tmp_path, samples):
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "palettize-4", "-o", tmp_path)
    assert_one_line_error(result, 2, "'palettize-4' is not available for tflite", "tflite supports: fp32")
    result = run_cli("convert", samples / "digits_cnn.keras", "--to", "coreml", "-q", "int16x8", "-o", tmp_path)
    assert_one_line_error(result, 2, "'int16x8' is not available for coreml", "coreml supports: fp32, fp16")


def test_full_integer_without_calibration_is_refused(tmp_path, samples):
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "fp32,int8", "-o", tmp_path / "out")
    assert_one_line_error(result, 2, "needs calibration data", "--calibration", "never calibrates on random")
    assert not (tmp_path / "out").exists()


def test_labels_count_must_match_classes(tmp_path, samples):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "fp32", "--labels", labels, "-o", tmp_path / "o")
    assert_one_line_error(result, 2, "--labels has 2 names", "10 classes")


def test_bad_mean_std(tmp_path, samples):
    result = run_cli("convert", samples / "digits_cnn.keras", "--mean", "1,2,3", "-o", tmp_path)
    assert_one_line_error(result, 2, "--mean expects 1 or 1 values", "got 3")
    result = run_cli("convert", samples / "digits_cnn.keras", "--std", "abc", "-o", tmp_path)
    assert_one_line_error(result, 2, "--std expects a number")


@pytest.fixture(scope="module")
def unsupported_op_model(tmp_path_factory):
    """A SavedModel whose graph uses MatrixDeterminant, which TFLite has no builtin kernel for."""
    import tensorflow as tf

    class Det(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4], tf.float32, name="x")])
        def serve(self, x):
            return {"y": tf.linalg.det(x)}

    path = tmp_path_factory.mktemp("unsupported") / "det_model"
    module = Det()
    tf.saved_model.save(module, str(path), signatures=module.serve)
    return path


def test_converter_rejection_names_the_op(tmp_path, unsupported_op_model):
    result = run_cli("convert", unsupported_op_model, "-q", "fp32", "-o", tmp_path / "out")
    assert_one_line_error(result, 5, "tf.MatrixDeterminant", "replace the op")
    assert not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True


def test_inspect_rejects_non_tflite(tmp_path):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    result = run_cli("inspect", junk)
    assert_one_line_error(result, 4, "expected a .tflite flatbuffer (identifier TFL3")
    truncated = tmp_path / "cut.tflite"
    truncated.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40)
    result = run_cli("inspect", truncated)
    assert_one_line_error(result, 4, "cut.tflite")


def test_cli_subprocess_has_no_traceback_and_debug_env_shows_it(tmp_path):
    """The installed console script, as a user runs it."""
    cmd = [sys.executable, "-m", "edgekit.cli", "convert", str(tmp_path / "missing.keras")]
    quiet = subprocess.run(cmd, capture_output=True, text=True, cwd=OUTSIDE)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert quiet.stderr.strip().startswith("Error: expected a model file")
    loud = subprocess.run(cmd, capture_output=True, text=True, cwd=OUTSIDE, env={**__import__("os").environ,
                                                                               "EDGEKIT_DEBUG": "1"})
    assert loud.returncode != 0 and "Traceback" in loud.stderr


def test_one_failing_recipe_keeps_the_others_and_exits_non_zero(tmp_path, samples, monkeypatch):
    """The orchestration around a converter failure: other artifacts are written, the failed one
    is not, the report records the error, and the CLI exits 5 with one line."""
    import json

    from conftest import run_cli
    from edgekit.converters.formats import tflite_tensorflow as tflite_converter
    from edgekit.errors import ConversionError

    real = tflite_converter.convert

    def fail_fp16(source, recipe, *args, **kwargs):
        if recipe == "fp16":
            raise ConversionError("simulated rejection of fp16")
        return real(source, recipe, *args, **kwargs)

    monkeypatch.setattr(tflite_converter, "convert", fail_fp16)
    report = tmp_path / "r.json"
    result = run_cli("convert", samples / "digits_cnn.keras", "-q", "fp32,fp16", "--std", "255",
                     "-o", tmp_path, "--report", report)
    assert result.exit_code == 5
    assert result.stderr.strip().splitlines()[-1] == "Error: 1 of 2 recipes failed: fp16: simulated rejection of fp16"
    assert (tmp_path / "digits_cnn_fp32.tflite").exists() and not (tmp_path / "digits_cnn_fp16.tflite").exists()
    rows = {a["quantize"]: a for a in json.loads(report.read_text())["artifacts"]}
    assert rows["fp16"]["error"] == "simulated rejection of fp16" and "error" not in rows["fp32"]
    assert "FAILED" in result.stdout


def test_missing_optional_package_is_a_dependency_error_and_other_recipes_are_kept(tmp_path, samples):
    """README's Core ML command in an install without scikit-learn (round 1's [convert] extra): the
    fp16 package is written and tabled, palettize-4 fails with the pip command, exit 6."""
    report = tmp_path / "r.json"
    script = ("import sys; sys.modules['sklearn'] = None\nfrom edgekit.cli import main\n"
              f"main(['convert', {str(samples / 'digits_cnn.keras')!r}, '--to', 'coreml', '-q', 'fp16,palettize-4', "
              f"'--std', '255', '--validate', {str(samples / 'validation')!r}, '-o', {str(tmp_path)!r}, "
              f"'--report', {str(report)!r}])")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=OUTSIDE)
    assert proc.returncode == 6, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: 1 of 2 recipes failed: palettize-4: a required package is not importable")
    assert last.endswith("install it: pip install 'edgekit[convert]'"), last
    assert "Traceback" not in proc.stderr
    assert (tmp_path / "digits_cnn_fp16.mlpackage").is_dir() and not (tmp_path / "digits_cnn_palettize-4.mlpackage").exists()
    assert "palettize-4" in proc.stdout and "FAILED" in proc.stdout  # the table was printed
    rows = {a["quantize"]: a for a in json.loads(report.read_text())["artifacts"]}
    assert rows["palettize-4"]["error_kind"] == "dependency" and "error" not in rows["fp16"]
