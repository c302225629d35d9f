"""The device half: `import edgekit`, inspect and run artifacts with TensorFlow unimportable."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import OUTSIDE, run_cli

pytestmark = pytest.mark.device

BLOCK_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"


def test_import_and_run_without_tensorflow(artifacts, validation_set, tmp_path):
    x, _ = validation_set
    np.save(tmp_path / "x.npy", x[:16])
    script = BLOCK_TF + textwrap.dedent(f"""
        import json, numpy as np, edgekit
        from edgekit.cli import main
        m = edgekit.load({str(artifacts / 'digits_cnn_int8.tflite')!r}, threads=1)
        y = m.predict(np.load({str(tmp_path / 'x.npy')!r}))
        try:
            main(["inspect", {str(artifacts / 'digits_cnn_int8.tflite')!r}])
        except SystemExit as e:
            assert e.code in (0, None), e.code
        loaded = [name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')
                  and sys.modules[name] is not None]
        print(json.dumps({{"backend": m.backend, "shape": list(y.shape), "argmax": y.argmax(1).tolist(),
                          "tf_modules": loaded}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=OUTSIDE)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "ai_edge_litert"
    assert result["shape"] == [16, 10] and result["tf_modules"] == []
    assert "edgekit manifest: recipe int8" in proc.stdout


def test_converter_needs_tensorflow_message(tmp_path, samples):
    script = BLOCK_TF + textwrap.dedent(f"""
        from edgekit.cli import main
        main(["convert", {str(samples / 'digits_cnn.keras')!r}, "-o", {str(tmp_path)!r}])
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=OUTSIDE)
    assert proc.returncode == 6
    assert "needs tensorflow" in proc.stderr and "pip install 'edgekit[convert]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_runtime_quantized_io_matches_float_artifact(artifacts, validation_set):
    import edgekit

    x, _ = validation_set
    fp32 = edgekit.load(artifacts / "digits_cnn_fp32.tflite").predict(x[:40])
    int8_model = edgekit.load(artifacts / "digits_cnn_int8.tflite")
    assert int8_model.inputs[0].dtype == "int8" and int8_model.inputs[0].name == "image"
    int8 = int8_model.predict(x[:40])
    assert int8.dtype == np.float32 and int8.shape == (40, 10)
    assert np.mean(fp32.argmax(1) == int8.argmax(1)) >= 0.95
    assert np.max(np.abs(fp32 - int8)) < 0.5
    assert np.allclose(int8.sum(1), 1.0, atol=0.05)  # dequantized softmax, not raw int8 codes


def test_runtime_rejects_wrong_shape(artifacts):
    import edgekit
    import pytest

    model = edgekit.load(artifacts / "digits_cnn_fp32.tflite")
    with pytest.raises(edgekit.InputError, match=r"expects shape \(N, 32, 32, 1\), got \(2, 32, 32, 3\)"):
        model.predict(np.zeros((2, 32, 32, 3), np.float32))


def test_inspect_table_lists_quantization_and_ops(artifacts):
    result = run_cli("inspect", artifacts / "digits_cnn_int8.tflite")
    assert result.exit_code == 0
    out = result.stdout
    assert "input   serving_default_image:0    ?x32x32x1  int8   0.003922        -128" in out
    assert "CONV_2D                3" in out and "DEPTHWISE_CONV_2D      1" in out
    assert "labels: 10 (0, 1, 2, 3, 4 ...)" in out
    assert "preprocessing: 32x32x1 NHWC, (pixel - [0.0]) / [255.0]" in out


@pytest.mark.parametrize("command", [["predict"], ["bench", "--runs", "3"]])
def test_a_missing_edgekit_module_is_a_broken_install_not_a_corrupt_model(artifacts, samples, command):
    """Round 1's wheel lacked edgekit/tflite_metadata/ and every load said the model was corrupt."""
    artifact = str(artifacts / "digits_cnn_int8.tflite")
    args = [command[0], artifact, *([str(next((samples / "validation").glob("*.png")))] if command == ["predict"]
                                    else command[1:])]
    script = ("import sys; sys.modules['edgekit.tflite_metadata'] = None\n"
              f"from edgekit.cli import main; main({args!r})")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=OUTSIDE)
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.strip() == ("Error: edgekit is installed incompletely: its module edgekit.tflite_metadata "
                                   "is missing; reinstall it: pip install --force-reinstall edgekit")
    assert "corrupt" not in proc.stderr


def test_coreml_package_on_the_device_install_names_the_extra(artifacts):
    """Reading an ML program needs coremltools' protobuf classes, which only [convert] installs."""
    script = ("import sys; sys.modules['coremltools'] = None\nfrom edgekit.cli import main\n"
              f"main(['inspect', {str(artifacts / 'digits_cnn_fp16.mlpackage')!r}])")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=OUTSIDE)
    assert proc.returncode == 6 and "pip install 'edgekit[convert]'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bundle_and_check_on_committed_artifacts(artifacts, tmp_path):
    out = tmp_path / "bundle"
    made = run_cli("bundle", artifacts / "digits_cnn_int8.tflite", artifacts / "digits_cnn_fp32.tflite", "-o", out)
    assert made.exit_code == 0, made.output
    checked = run_cli("bundle", "--check", out)
    assert checked.exit_code == 0, checked.output
    (out / "android" / "digits_cnn_int8.tflite").write_bytes(b"tampered")
    tampered = run_cli("bundle", "--check", out)
    assert tampered.exit_code != 0 and "digits_cnn_int8.tflite" in tampered.output + tampered.stderr


def test_closed_pipe_ends_quietly(artifacts, image_files):
    """`edgekit predict ... | head -1` used to end with 'Error: unexpected BrokenPipeError'."""
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "predict", str(artifacts / "digits_cnn_int8.tflite"),
                             *map(str, image_files[:40])], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=OUTSIDE)
    proc.stdout.close()  # the reader is gone before the first line is written
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert "Error" not in stderr and "Traceback" not in stderr, stderr


def test_loading_is_quiet_unless_verbose(artifacts, image_files):
    """Every load printed 'INFO: Created TensorFlow Lite XNNPACK delegate for CPU.' to stderr."""
    args = ["predict", str(artifacts / "digits_cnn_fp32.tflite"), str(image_files[0])]
    quiet = subprocess.run([sys.executable, "-m", "edgekit.cli", *args], capture_output=True, text=True, cwd=OUTSIDE)
    loud = subprocess.run([sys.executable, "-m", "edgekit.cli", "-v", *args], capture_output=True, text=True,
                          cwd=OUTSIDE)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr
    assert "XNNPACK" not in quiet.stderr and "XNNPACK delegate" in loud.stderr
    script = (f"import edgekit; m = edgekit.load({str(artifacts / 'digits_cnn_fp32.tflite')!r}); "
              f"m.predict({str(image_files[0])!r})")
    library = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=OUTSIDE)
    assert library.returncode == 0 and "XNNPACK" not in library.stderr, library.stderr


def test_bench_noise_advice_fits_the_options_given():
    """The warning said 'use --duration' when --duration was given."""
    from edgekit.bench import noise_warnings

    tail = {"p50": 1.0, "p90": 1.1, "p99": 5.0, "mean": 1.1, "std": 0.1, "min": 1.0, "max": 6.0}
    assert "use --duration for more samples" in noise_warnings(tail, 100)[0]
    assert "use a longer --duration" in noise_warnings(tail, 100, more_samples="a longer --duration")[0]
