"""The on-device runtime on real artifacts: input kinds, quantized I/O, threads, batches,
resumable prediction stores, and corrupt files that must raise, never crash."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from PIL import Image

import edgekit
from conftest import OUTSIDE, run_cli

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def int8_model(artifacts):
    return edgekit.load(artifacts / "digits_cnn_int8.tflite", threads=2)


@pytest.fixture(scope="module")
def fp32_model(artifacts):
    return edgekit.load(artifacts / "digits_cnn_fp32.tflite")


@pytest.fixture(scope="module")
def image_files(samples):
    return sorted((samples / "validation").glob("*.png"))


def test_every_input_kind_gives_the_same_answer(fp32_model, image_files):
    path = image_files[0]
    pixels = np.asarray(Image.open(path), dtype=np.float32)[..., None] / 255.0
    by_array = fp32_model.predict(pixels[None])
    variants = {
        "sample without batch dim": fp32_model.predict(pixels),
        "path str": fp32_model.predict(str(path)),
        "Path": fp32_model.predict(path),
        "bytes": fp32_model.predict(path.read_bytes()),
        "PIL image": fp32_model.predict(Image.open(path)),
        "RGB PIL image (converted to the model's 1 channel)": fp32_model.predict(Image.open(path).convert("RGB")),
        "list": fp32_model.predict([pixels[None]]),
        "dict": fp32_model.predict({"image": pixels[None]}),
    }
    assert by_array.shape == (1, 10)
    for name, got in variants.items():
        np.testing.assert_allclose(got, by_array, atol=1e-6, err_msg=name)


def test_quantized_io_round_trip_against_float_reference(int8_model, fp32_model, image_files):
    x = np.stack([np.asarray(Image.open(p), dtype=np.float32)[..., None] / 255.0 for p in image_files[:60]])
    ref, got = fp32_model.predict(x), int8_model.predict(x)
    assert got.dtype == np.float32 and got.shape == (60, 10)
    assert np.mean(ref.argmax(1) == got.argmax(1)) >= 0.95
    # outputs are dequantized with the output's scale (1/256): values sit on that grid
    out = int8_model.outputs[0]
    codes = got / out.scale + out.zero_point
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)


def test_classify_uses_manifest_labels(int8_model, image_files):
    (top,) = int8_model.classify(image_files[0], top_k=3)
    assert len(top) == 3 and top[0][0] == image_files[0].stem.split("label")[1]
    assert top[0][1] >= top[1][1] >= top[2][1]


def test_eight_threads_match_sequential(int8_model, image_files):
    inputs = [str(p) for p in image_files[:64]]
    sequential = [int8_model.predict(p) for p in inputs]
    results: dict[int, np.ndarray] = {}
    errors = []

    def worker(offset):
        try:
            for i in range(offset, len(inputs), 8):
                results[i] = int8_model.predict(inputs[i])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, expected in enumerate(sequential):
        np.testing.assert_array_equal(results[i], expected)


def test_predict_batch_resizes_batch_and_matches_single(int8_model, image_files):
    items = [str(p) for p in image_files[:23]]
    batched = int8_model.predict_batch(items, batch_size=8)
    assert int8_model.resizable_batch and len(batched) == 23 and batched[0].shape == (10,)
    for item, got in zip(items, batched):
        np.testing.assert_allclose(got, int8_model.predict(item)[0], atol=1e-6)


def test_wrong_shape_and_dtype_say_expected_and_given(fp32_model):
    with pytest.raises(edgekit.InputError, match=r"expects shape \(N, 32, 32, 1\), got \(1, 28, 28, 1\)"):
        fp32_model.predict(np.zeros((1, 28, 28, 1)))
    with pytest.raises(edgekit.InputError, match="expects numbers .*got an array of <U"):
        fp32_model.predict(np.array(["a"]))
    with pytest.raises(edgekit.InputError, match="signature 'nope' not in"):
        fp32_model.predict(np.zeros((1, 32, 32, 1)), signature="nope")


# -- corrupt and truncated files: run in a subprocess so a segfault fails the test --------------

LOAD_AND_RUN = textwrap.dedent("""
    import sys, numpy as np, edgekit
    try:
        m = edgekit.load(sys.argv[1])
        m.predict(np.zeros((1, 32, 32, 1), np.float32))
        print("RAN")
    except edgekit.EdgekitError as e:
        print("EDGEKIT_ERROR", type(e).__name__, e)
""")


def _load_in_subprocess(path):
    proc = subprocess.run([sys.executable, "-c", LOAD_AND_RUN, str(path)], capture_output=True, text=True, cwd=OUTSIDE)
    assert proc.returncode == 0, f"crashed with {proc.returncode}: {proc.stderr[-500:]}"
    return proc.stdout.strip()


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999])
def test_truncated_file_raises_artifact_error(artifacts, tmp_path, fraction):
    data = (artifacts / "digits_cnn_int8.tflite").read_bytes()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(data[:int(len(data) * fraction)])
    out = _load_in_subprocess(cut)
    assert out.startswith("EDGEKIT_ERROR ArtifactError"), out


def _rewrite(src, dst, mutate):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(src.read_bytes()))
    mutate(model)
    dst.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))


def test_semantic_corruption_is_caught_before_the_native_runtime(artifacts, tmp_path):
    src = artifacts / "digits_cnn_fp32.tflite"

    def bad_buffer_index(model):
        model.subgraphs[0].tensors[1].buffer = 10_000

    def short_weights(model):
        tensor = next(t for t in model.subgraphs[0].tensors if t.buffer and model.buffers[t.buffer].data is not None
                      and len(model.buffers[t.buffer].data) > 64)
        model.buffers[tensor.buffer].data = model.buffers[tensor.buffer].data[:16]

    def bad_opcode(model):
        model.subgraphs[0].operators[0].opcodeIndex = 99

    for mutate, message in ((bad_buffer_index, "points at buffer 10000"), (short_weights, "bytes of weights"),
                            (bad_opcode, "uses opcode 99")):
        path = tmp_path / f"{mutate.__name__}.tflite"
        _rewrite(src, path, mutate)
        out = _load_in_subprocess(path)
        assert out.startswith("EDGEKIT_ERROR ArtifactError") and message in out, out


def test_random_byte_corruption_never_crashes(artifacts, tmp_path):
    data = bytearray((artifacts / "digits_cnn_int8.tflite").read_bytes())
    rng = np.random.default_rng(7)
    for trial in range(12):
        corrupt = bytearray(data)
        for pos in rng.integers(0, len(data), size=8):
            corrupt[pos] = int(rng.integers(0, 256))
        path = tmp_path / f"corrupt{trial}.tflite"
        path.write_bytes(bytes(corrupt))
        out = _load_in_subprocess(path)
        assert out == "RAN" or out.startswith("EDGEKIT_ERROR"), out


# -- edgekit predict: stores and resumption --------------------------------------------------------

def test_predict_cli_table_and_json(artifacts, image_files):
    result = run_cli("predict", artifacts / "digits_cnn_int8.tflite", *image_files[:3], "--top-k", "2")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["input", "label", "score", "top", "2", "latency", "ms"]
    assert lines[2].split()[:2] == [image_files[0].name, image_files[0].stem.split("label")[1]]
    top2 = lines[2].split(None, 3)[3].rsplit(None, 1)[0]  # "5 0.996, 9 0.004"
    assert top2.count(",") == 1 and top2.startswith(image_files[0].stem.split("label")[1] + " ")
    assert lines[-1].startswith("predicted 3, already done 0, failed 0; p50 latency ")
    js = json.loads(run_cli("predict", artifacts / "digits_cnn_int8.tflite", image_files[0], "--json").stdout)
    assert js["predicted"] == 1 and len(json.loads(js["rows"][0]["top_k"])) == 5


def test_predict_resumes_after_interruption_into_sqlite(artifacts, samples, tmp_path):
    from edgekit.predict_job import expand_inputs, run_predictions
    from edgekit.stores import open_store

    artifact = artifacts / "digits_cnn_int8.tflite"
    model = edgekit.load(artifact)
    inputs = expand_inputs([str(samples / "validation")])
    db = tmp_path / "preds.sqlite"
    chunks_seen = []

    def interrupt_after_two_chunks(n):
        chunks_seen.append(n)
        if len(chunks_seen) == 3:  # first call reports already-done inputs, then one call per chunk
            raise KeyboardInterrupt

    store = open_store(db)
    with pytest.raises(KeyboardInterrupt):
        run_predictions(model, artifact, inputs, store, chunk_size=16, on_progress=interrupt_after_two_chunks)
    store.close()
    first = dict(sqlite3.connect(db).execute("SELECT input, created_utc FROM predictions").fetchall())
    assert len(first) == 32  # two whole chunks committed, nothing partial

    result = run_cli("predict", artifact, samples / "validation", "--out", db)
    assert result.exit_code == 0, result.stderr
    assert f"predicted {len(inputs) - 32}, already done 32, failed 0" in result.stdout
    rows = sqlite3.connect(db).execute("SELECT input, created_utc, label FROM predictions").fetchall()
    assert len(rows) == len(inputs) == len({r[0] for r in rows})
    assert all(first[i] == c for i, c, _ in rows if i in first)  # earlier rows untouched
    accuracy = np.mean([r[2] == r[0].split("label")[1][0] for r in rows])
    assert accuracy >= 0.9
    again = run_cli("predict", artifact, samples / "validation", "--out", db)
    assert f"predicted 0, already done {len(inputs)}" in again.stdout


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_text_stores_resume_and_repair_a_cut_last_line(artifacts, image_files, tmp_path, suffix):
    artifact = artifacts / "digits_cnn_int8.tflite"
    out = tmp_path / f"preds{suffix}"
    assert run_cli("predict", artifact, *image_files[:5], "--out", out).exit_code == 0
    text = out.read_text()
    out.write_text(text[:-20])  # a crash mid-write of the last row
    result = run_cli("predict", artifact, *image_files[:8], "--out", out)
    assert "predicted 4, already done 4" in result.stdout
    if suffix == ".jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 8 and rows[0]["top_k"][0][0] == image_files[0].stem.split("label")[1]
    else:
        assert len(out.read_text().splitlines()) == 9  # header + 8


def test_predict_bad_inputs(artifacts, tmp_path):
    artifact = artifacts / "digits_cnn_int8.tflite"
    result = run_cli("predict", artifact, tmp_path / "nothing*.png")
    assert result.exit_code == 2 and "matches no files" in result.stderr
    (tmp_path / "x.npy").write_bytes(b"")
    result = run_cli("predict", artifact, tmp_path / "x.npy", "--out", tmp_path / "x.xlsx")
    assert result.exit_code == 2 and "--out expects a .sqlite, .db, .csv, .jsonl or .parquet file" in result.stderr
    result = run_cli("predict", tmp_path / "missing.tflite", tmp_path / "x.npy")
    assert result.exit_code == 2 and "does not exist" in result.stderr
    (tmp_path / "bad.png").write_bytes(b"nope")
    result = run_cli("predict", artifact, tmp_path / "bad.png")
    assert result.exit_code == 2 and "all 1 inputs failed" in result.stderr


