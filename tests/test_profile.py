"""edgekit profile: probes built without TensorFlow, a measured profile, emulate with it, bad profiles."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import OUTSIDE, run_cli
from edgekit.tflite.graph import read_graph
from edgekit.profile import costmodel
from edgekit.profile.probes import SUITE, build, suite
from edgekit.runtime import Model

pytestmark = pytest.mark.device


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory):
    """`edgekit profile run --quick` at 1 thread: the reduced probe suite, timed briefly."""
    out = tmp_path_factory.mktemp("profile") / "host.json"
    result = run_cli("profile", "run", "-o", out, "--threads", "1", "--quick", "--seconds-per-probe", "0.05")
    assert result.exit_code == 0, result.stderr
    assert f"wrote {out}" in result.stdout and f"--target {out}" in result.stdout
    return out


def test_every_probe_builds_and_runs():
    """The whole suite is valid TFLite that the runtime (and XNNPACK) accepts, in fp32 and int8."""
    assert {p.precision for p in SUITE} == {"fp32", "int8"}
    for p in SUITE:
        model = Model(build(p), p.name, threads=1)
        model.run([np.zeros(i.shape, np.float32) for i in model.inputs])
        if p.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            assert read_graph(build(p)).total_macs > 0, p.name


def test_probes_need_no_tensorflow(tmp_path):
    code = ("import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None\n"
            "from edgekit.profile.probes import suite, build\n"
            "print(sum(len(build(p)) > 0 for p in suite(quick=True)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=OUTSIDE)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(suite(quick=True))


def test_nnls_recovers_non_negative_coefficients():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (40, 4))
    truth = np.array([2.0, 0.0, 0.5, 1.0])
    assert np.allclose(costmodel.nnls(a, a @ truth), truth, atol=1e-8)


def test_quick_profile_is_valid_and_emulate_uses_it(quick_profile, artifacts):
    data = json.loads(quick_profile.read_text())
    assert data["edgekit_profile"] == 1 and list(data["threads"]) == ["1"]
    entry = data["threads"]["1"]
    assert entry["band_log"]["low"] < 0 < entry["band_log"]["high"]
    assert any(k.startswith("CONV_2D") for k in entry["coefficients"])
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", quick_profile, "--json")
    assert result.exit_code == 0, result.stderr
    [est] = json.loads(result.stdout)
    assert est["target"] == quick_profile.stem and est["threads"] == 1
    assert 0 < est["low_ms"] < est["estimate_ms"] < est["high_ms"]
    assert "edgekit profile run" in est["method"]
    # next to the built-in targets, in one table
    table = run_cli("emulate", artifacts / "digits_cnn_fp32.tflite", "--target", f"rpi4,{quick_profile}")
    assert table.exit_code == 0, table.stderr
    assert "rpi4" in table.stdout and quick_profile.stem in table.stdout


def test_emulate_refuses_a_thread_count_not_profiled(quick_profile, artifacts):
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", quick_profile, "--threads", "2")
    assert result.exit_code == 2
    assert "profiled at threads 1" in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("threads"), "'threads'"),
    (lambda d: d.update(edgekit_profile=99), "'edgekit_profile'"),
    (lambda d: d["threads"]["1"]["coefficients"]["_global"].update(invokes="fast"), "'threads.1.coefficients._global'"),
    (lambda d: d.update(ram_mb=-1), "'ram_mb'"),
    (lambda d: d["threads"].update({"x": {}}), "'threads' key 'x'"),
])
def test_wrong_profile_fields_are_one_line(quick_profile, artifacts, tmp_path, mutate, field):
    data = json.loads(quick_profile.read_text())
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", bad)
    assert result.exit_code == 2, result.stderr
    assert field in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unreadable_or_missing_profile_is_one_line(artifacts, tmp_path):
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    for target, words in ((junk, "not readable JSON"), (tmp_path / "none.json", "does not exist")):
        result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", target)
        assert result.exit_code == 2 and words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_profile_run_refuses_bad_options(tmp_path):
    out = tmp_path / "p.json"
    result = run_cli("profile", "run", "-o", out, "--threads", "1,many")
    assert result.exit_code == 2 and "--threads expects" in result.stderr
    out.write_text("{}")
    result = run_cli("profile", "run", "-o", out, "--threads", "1")
    assert result.exit_code == 3 and "--force" in result.stderr


def test_targets_say_which_core_types_are_fitted_on_how_many_rows():
    result = run_cli("targets")
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("rpi4 "))
    assert re.search(r"cortex-a72 \d+ rows", line)
    # a big.LITTLE phone whose little cores have no published rows: one fitted type, one prior
    pixel3 = next(line for line in result.stdout.splitlines() if line.startswith("pixel3 "))
    assert re.search(r"cortex-a75 \d+ rows, cortex-a55 prior", pixel3)
    assert "edgekit profile run" in result.stdout
