"""Hostile .tflite files (issue #15): no crash, no hang, no foreign exception.

Device tier: numpy and ai-edge-litert only (no TensorFlow, no coremltools). The campaign runs
each mutant in a worker process (tests/fuzzing.py), so a segfault is a counted failure with
the mutation that caused it, not a dead pytest.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import fuzzing

pytestmark = pytest.mark.device

DATA = Path(__file__).parent / "data"
SPARSE_FP32 = DATA / "sparse_cnn_fp32.tflite"
SPARSE_FP16 = DATA / "sparse_cnn_fp16.tflite"

RAW_LITERT = ("import sys\nfrom ai_edge_litert.interpreter import Interpreter\n"
              "it = Interpreter(model_path=sys.argv[1]); it.allocate_tensors(); it.invoke()")


def test_fuzz_campaign_has_no_crash_hang_or_foreign_exception():
    models = fuzzing.default_models()
    assert any(m.name.startswith("sparse") for m in models), "the sparse test models are missing from tests/data"
    campaign = fuzzing.run_campaign(models, mutants=300, seed=15, workers=2, timeout=30)
    counts = campaign.counts()
    assert len(campaign.results) == 300
    assert counts.get("ok", 0) > 0 and counts.get("ArtifactError", 0) > 0, counts  # the harness exercises both paths
    bad = "\n".join(f"#{r.index} {r.model} {r.outcome} {r.error}: {r.mutation} -> {r.message}" for r in campaign.bad())
    assert not bad, f"{counts}\n{bad}"


def test_mutation_is_deterministic():
    data = SPARSE_FP32.read_bytes()
    assert fuzzing.mutate(data, 7, 3) == fuzzing.mutate(data, 7, 3)
    assert fuzzing.mutate(data, 7, 3) != fuzzing.mutate(data, 7, 4)
    assert any(s.category == "sparsity" for s in fuzzing.find_sites(data))


def _corrupt(tmp_path: Path, source: Path, pos: int, old: int, new: int) -> Path:
    data = bytearray(source.read_bytes())
    assert data[pos] == old, "the committed test model changed: find the byte again with tests/fuzzing.py"
    data[pos] = new
    path = tmp_path / f"corrupt_{source.name}"
    path.write_bytes(bytes(data))
    return path


# One array index of the block-sparse FULLY_CONNECTED weights (9 -> 255, out of range) and one
# array-segment count of a DENSIFY input (2 -> 4): both segfault raw LiteRT in allocate/invoke.
@pytest.mark.parametrize("source, pos, old, new", [(SPARSE_FP32, 5795, 9, 255), (SPARSE_FP16, 6140, 2, 4)],
                         ids=["fc-index", "densify-segment"])
def test_corrupt_sparsity_segfaults_raw_litert_but_load_raises(tmp_path, source, pos, old, new):
    import edgekit

    path = _corrupt(tmp_path, source, pos, old, new)
    raw = subprocess.run([sys.executable, "-c", RAW_LITERT, str(path)], capture_output=True)
    assert raw.returncode == -signal.SIGSEGV  # the hazard is real...
    with pytest.raises(edgekit.ArtifactError, match="corrupt sparsity metadata"):
        edgekit.load(path)  # ...and edgekit refuses the file before LiteRT sees it


def test_valid_sparse_models_load_and_predict():
    import numpy as np

    import edgekit

    for path in (SPARSE_FP32, SPARSE_FP16):
        model = edgekit.load(path)
        out = model.predict(np.random.default_rng(0).random((1, 16, 16, 3), dtype=np.float32))
        assert out.shape == (1, 10) and np.isfinite(out).all() and abs(out.sum() - 1) < 1e-3


def test_isolated_load_turns_a_native_crash_into_artifact_error(tmp_path, monkeypatch):
    """A stand-in runtime that dies of SIGSEGV: the sandbox reports it, the caller lives on."""
    import edgekit

    fake_python = tmp_path / "python"
    fake_python.write_text("#!/bin/sh\nkill -SEGV $$\n")
    fake_python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake_python))
    with pytest.raises(edgekit.ArtifactError, match=r"crashed the runtime \(signal SIGSEGV\)"):
        edgekit.load(SPARSE_FP32, isolate=True)


def test_isolated_load_of_a_good_and_a_rejected_model(tmp_path):
    import edgekit

    assert edgekit.load(SPARSE_FP16, isolate=True).outputs
    with pytest.raises(edgekit.ArtifactError, match="corrupt sparsity metadata"):
        edgekit.load(_corrupt(tmp_path, SPARSE_FP32, 5795, 9, 255), isolate=True)


def test_isolation_is_the_cli_default_for_foreign_or_sparse_files():
    from edgekit.sandbox import needs_isolation

    root = Path(__file__).resolve().parents[1]
    assert needs_isolation(SPARSE_FP32)  # sparse and no manifest
    assert needs_isolation(DATA / "hand_recrop.tflite")  # third-party: no edgekit manifest
    own = root / "sample_models" / "artifacts" / "digits_cnn_int8.tflite"
    if own.exists():
        assert not needs_isolation(own)


def test_bench_survives_a_crashing_file(tmp_path):
    """`edgekit bench` on a file that kills LiteRT: one line and exit 4, not a dead process."""
    path = _corrupt(tmp_path, SPARSE_FP32, 5795, 9, 255)
    env = dict(os.environ, EDGEKIT_DEBUG="0")
    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "bench", str(path), "--runs", "2"],
                          capture_output=True, text=True, env=env)
    assert done.returncode == 4, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "corrupt sparsity metadata" in done.stderr
