"""Drift monitoring (edgekit.monitor) on the committed int8 digits model: shifted inputs fire, clean ones don't.

False alarms, measured here (test_false_alarm_rate_on_held_out_windows): the reference is rebuilt from
a random half of the 150 validation images and judged on windows of the other, never-seen half;
over 400 such splits 1-3 windows (0.25-0.75 %, seeds 0 and 1) raise any alarm (all statistics
together, ALPHA = 0.001 each). The test allows up to 3 %. README "Monitoring" quotes the figure.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from conftest import OUTSIDE, SAMPLES, run_cli

import edgekit
from edgekit.dataset import load_dataset
from edgekit.errors import ArtifactError, InputError
from edgekit.manifest import Manifest
from edgekit.monitor import DriftMonitor, compute_reference, evaluate, extractor_for
from edgekit.monitor.drift import ks_against_quantiles, psi
from edgekit.monitor.reference import LEVELS

pytestmark = pytest.mark.device

INT8 = SAMPLES / "artifacts" / "digits_cnn_int8.tflite"


@pytest.fixture(scope="module")
def model():
    return edgekit.load(INT8)


@pytest.fixture(scope="module")
def validation(model):
    ds = load_dataset(SAMPLES / "validation", model.inputs, model.preprocessing, role="validate")
    labels = np.array([int(name.split("label")[1][0]) for name in ds.items])
    return ds.arrays[0], labels


def alerts(model, ref, x) -> set[str]:
    ex = extractor_for(ref, model.inputs[0])
    return {s.name for s in evaluate(ex.rows(x, model.run([x])[0]), ref, ex.layout) if s.alert}


def test_monitoring_never_imports_tensorflow():
    """In a fresh process (this session may have imported TensorFlow for other tiers)."""
    code = ("import sys, numpy as np, edgekit; from edgekit.monitor.offline import monitor_store; "
            f"m = edgekit.load({str(INT8)!r}, monitor=True); m.predict(np.zeros((1, 32, 32, 1), np.float32)); "
            "m.drift(); assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    result = subprocess.run([sys.executable, "-c", code], cwd=OUTSIDE, capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_manifest_carries_compact_reference(model, validation):
    ref = model.manifest.reference_stats
    assert ref["samples"] == 150 and ref["source"] == "--validate validation"
    assert len(json.dumps(ref)) < 4096  # a few KB, never the data
    # The int8 input range: scale 1/255, zero point -128 -> pixels 0..255 / 255 = 0..1 (plus half a step).
    q = ref["int8_input"]
    assert (q["scale"], q["zero_point"]) == (model.inputs[0].scale, model.inputs[0].zero_point)
    assert q["min"] < 0.0 and 1.0 < q["max"] < 1.003 and q["clipped_fraction"] == 0.0
    assert ref["classes"]["count"] == 10 and abs(sum(ref["classes"]["fractions"]) - 1) < 1e-3
    assert set(ref["features"]) == {"brightness", "contrast", "confidence", "entropy"}
    assert ref["original_size"]["width"][2] == 32
    # The converter's figures are what the device recomputes from the same images and outputs.
    x, _ = validation
    again = compute_reference(x, model.run([x])[0], model.inputs[0], model.manifest.preprocessing, "again")
    for name in ref["features"]:
        assert again["features"][name]["quantiles"] == pytest.approx(ref["features"][name]["quantiles"], abs=1e-3)
    assert again["classes"]["fractions"] == pytest.approx(ref["classes"]["fractions"], abs=1e-4)


@pytest.mark.parametrize("shift, expected", [
    ("brighter", {"brightness_psi", "brightness_ks", "pixel_histogram_psi"}),
    ("low_contrast", {"contrast_psi", "contrast_ks"}),
    ("noise", {"confidence_drop", "entropy_psi", "class_frequency_psi"}),
    # heavier noise makes this model confidently wrong (one class for everything): no confidence drop,
    # but the class mix gives it away
    ("heavy_noise", {"class_frequency_psi", "confidence_ks"}),
    ("class_mix", {"class_frequency_psi"}),
    ("beyond_range", {"int8_clipped_fraction"}),
])
def test_shifts_fire(model, validation, shift, expected):
    x, labels = validation
    rng = np.random.default_rng(7)
    shifted = {
        "brighter": lambda: np.clip(x + 0.2, 0, 1),                    # +51 on 0..255, saturating at white
        "low_contrast": lambda: (x - 0.5) * 0.6 + 0.5,                 # washed out
        "noise": lambda: np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1),  # sensor noise, sigma 26 levels
        "heavy_noise": lambda: np.clip(x + rng.normal(0, 0.3, x.shape), 0, 1),
        "class_mix": lambda: x[rng.choice(np.flatnonzero(np.isin(labels, [1, 7])), 100)],  # only 1s and 7s
        "beyond_range": lambda: x * 1.5,                               # a 0..1.5 input: 1/3 of ink clips
    }[shift]().astype(np.float32)
    fired = alerts(model, model.manifest.reference_stats, shifted)
    assert expected <= fired, fired


def test_unshifted_validation_does_not_fire(model, validation):
    x, _ = validation
    assert alerts(model, model.manifest.reference_stats, x) == set()


def test_false_alarm_rate_on_held_out_windows(model, validation):
    """Reference from half the validation set, 75-image windows from the other half: 400 splits."""
    x, _ = validation
    scores = model.run([x])[0]
    rng = np.random.default_rng(0)
    fired = 0
    for _ in range(400):
        order = rng.permutation(len(x))
        ref_idx, win_idx = order[:75], order[75:]
        ref = compute_reference(x[ref_idx], scores[ref_idx], model.inputs[0], model.manifest.preprocessing, "half")
        ex = extractor_for(ref, model.inputs[0])
        fired += any(s.alert for s in evaluate(ex.rows(x[win_idx], scores[win_idx]), ref, ex.layout))
    assert fired / 400 <= 0.03, f"{fired} of 400 clean windows alarmed"


def test_input_statistics_quiet_on_calibration_images(model):
    """The 200 calibration images are training data from the same source: the input side must stay quiet.
    (The output side does not: the model is surer on what it was trained on, and confidence_ks says so.)"""
    cal = load_dataset(SAMPLES / "calibration", model.inputs, model.preprocessing).arrays[0]
    rng = np.random.default_rng(3)
    for _ in range(50):
        window = cal[rng.choice(len(cal), 100, replace=False)]
        fired = alerts(model, model.manifest.reference_stats, window)
        assert not {f for f in fired if f.split("_")[0] in ("brightness", "contrast", "pixel", "int8")}, fired


def test_load_monitor_warns_once_per_crossing(validation, caplog):
    x, _ = validation
    m = edgekit.load(INT8, monitor=True)
    for i in range(len(x)):  # clean traffic: no warning
        m.predict(x[i])
    assert m.drift()["drifting"] == []
    with caplog.at_level(logging.WARNING, logger="edgekit.monitor"):
        for _ in range(2):
            for i in range(len(x)):
                m.predict(np.clip(x[i] + 0.3, 0, 1))
    report = m.drift()
    assert "brightness_psi" in report["drifting"]
    assert report["alerts_total"]["brightness_psi"] == 1  # still drifting: counted when it started, once
    assert sum("brightness_psi" in r.getMessage() for r in caplog.records) == 1
    assert report["window"]["samples"] == 200 and report["window"]["seen"] == 450
    assert m.labels == model_labels() and m.classify(x[0], 1)[0][0][0] == "5"


def model_labels():
    return [str(i) for i in range(10)]


def test_monitor_needs_reference(tmp_path):
    m = edgekit.load(INT8)
    m.manifest.reference_stats = None
    from edgekit.monitor import MonitoredModel

    with pytest.raises(InputError, match="reference_stats"):
        MonitoredModel(m)
    with pytest.raises(InputError, match="at least 30"):
        DriftMonitor(edgekit.load(INT8).manifest.reference_stats, window=10)


def test_manifest_reference_is_optional_and_checked():
    data = json.loads((SAMPLES / "artifacts" / "digits_cnn_int8.tflite.json").read_text())
    assert Manifest.from_dict(data).reference_stats["schema"] == "edgekit.reference_stats/1"
    old = {k: v for k, v in data.items() if k != "reference_stats"}
    assert Manifest.from_dict(old).reference_stats is None  # artifacts from before monitoring load
    for breakage in ({"schema": "x"}, {"features": []}, {"histogram": {"edges": [1], "fractions": [1]}}):
        bad = dict(data, reference_stats={**data["reference_stats"], **breakage})
        with pytest.raises(ArtifactError, match="reference_stats"):
            Manifest.from_dict(bad)


def test_psi_and_ks_in_numpy():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=5000), rng.normal(0.5, 1, 400)
    exact = _ks_exact(a, b)
    assert ks_against_quantiles(b, np.quantile(a, LEVELS)) == pytest.approx(exact, abs=0.03)
    assert ks_against_quantiles(a[:400], np.quantile(a, LEVELS)) < 0.08
    # a point mass: most int8 confidences sit on the top code
    top = np.float32(0.99609375)
    ref = np.where(rng.random(1000) < 0.6, top, rng.uniform(0.5, 0.99, 1000)).astype(np.float32)
    same = np.where(rng.random(200) < 0.6, top, rng.uniform(0.5, 0.99, 200)).astype(np.float32)
    assert ks_against_quantiles(same, np.quantile(ref, LEVELS)) < 0.12
    assert psi(np.array([50, 50]), [0.5, 0.5], 100, 100) == pytest.approx(0.0)
    assert psi(np.array([90, 10]), [0.5, 0.5], 100, 100) > 0.5


def _ks_exact(a, b):
    pts = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), pts, side="right") / a.size
    fb = np.searchsorted(np.sort(b), pts, side="right") / b.size
    return float(np.abs(fa - fb).max())


# -- offline: edgekit predict --out STORE, then edgekit monitor STORE ---------------------------------

def _predict_store(tmp_path, x, name):
    artifact = tmp_path / INT8.name
    if not artifact.exists():
        artifact.write_bytes(INT8.read_bytes())
    folder = tmp_path / f"in_{name}"
    folder.mkdir()
    for i, sample in enumerate(x):
        np.save(folder / f"{i:04d}.npy", sample[None])
    out = tmp_path / f"{name}.sqlite"
    result = run_cli("predict", artifact, folder, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_offline_monitor_table_and_json(tmp_path, validation):
    x, _ = validation
    clean = _predict_store(tmp_path, x, "clean")
    result = run_cli("monitor", clean, "--window", "75")
    assert result.exit_code == 0, result.output
    assert "0 of 2 evaluated windows drifting" in result.output
    bright = _predict_store(tmp_path, np.clip(x + 0.25, 0, 1), "bright")
    result = run_cli("monitor", bright, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["summary"]["drifting"] == 1
    assert "brightness_psi" in data["windows"][0]["drifting"]
    result = run_cli("monitor", bright, "--window", "1h")
    assert "brightness_psi" in result.output.splitlines()[2]  # the window's row names what fired


def test_offline_monitor_reads_old_stores_and_says_what_is_missing(tmp_path):
    old = tmp_path / "old.sqlite"  # the schema before the stats column
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE predictions (input TEXT NOT NULL, model_sha256 TEXT NOT NULL, model TEXT, label TEXT, "
               "score REAL, top_k TEXT, outputs TEXT, latency_ms REAL, created_utc TEXT, "
               "PRIMARY KEY (input, model_sha256))")
    db.execute("INSERT INTO predictions VALUES ('a.png', 'abc', 'm.tflite', '1', 0.9, NULL, NULL, 1.0, "
               "'2026-11-26T10:00:00+00:00')")
    db.commit()
    db.close()
    result = run_cli("monitor", old)
    assert result.exit_code == 2 and "found none" in result.output and len(result.output.strip().splitlines()) == 1
    from edgekit.stores.local import SqliteStore

    SqliteStore(old).close()  # opening it for more predictions adds the column, keeping the rows
    columns = [r[1] for r in sqlite3.connect(old).execute("PRAGMA table_info(predictions)")]
    assert columns[-1] == "stats"
    assert run_cli("monitor", old, "--window", "5").exit_code == 2  # a count under 30 is refused
    assert run_cli("monitor", tmp_path / "nope.sqlite").exit_code == 2


def test_csv_store_from_before_keeps_its_header(tmp_path):
    from edgekit.stores.local import CsvStore

    old = tmp_path / "old.csv"
    old.write_text("input,model_sha256,model,label,score,top_k,outputs,latency_ms,created_utc\n")
    store = CsvStore(old)
    store.add([{"input": "a", "model_sha256": "x", "model": "m", "label": "1", "score": 0.5, "top_k": None,
                "outputs": None, "latency_ms": 1.0, "created_utc": "2026-11-26T10:00:00+00:00", "stats": "{}"}])
    store.close()
    lines = old.read_text().splitlines()
    assert lines[0].endswith("created_utc") and len(lines) == 2  # no stats column forced into an old file
