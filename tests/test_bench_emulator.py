"""edgekit bench (host figures) and the emulator (graph cost model, arena planner, profiles)."""
from __future__ import annotations

import json

import pytest

from conftest import run_cli
from edgekit.tflite.arena import Lifetime, plan_arena
from edgekit.emulator import device_names, estimate, load_device
from edgekit.tflite.graph import read_graph

pytestmark = pytest.mark.device

BENCH_KEYS = {"latency_ms", "init_ms", "first_inference_ms", "throughput_per_s", "peak_rss_mb", "model_rss_mb",
              "size_bytes", "threads"}


def test_bench_figures_and_json(artifacts):
    result = run_cli("bench", artifacts / "digits_cnn_int8.tflite", "--threads", "1", "--runs", "60", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)  # --json: stdout is the JSON document and nothing else
    assert BENCH_KEYS <= set(data)
    lat = data["latency_ms"]
    assert set(lat) == {"p50", "p90", "p99", "mean", "std", "min", "max"}
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert data["peak_rss_mb"] > 0 and data["model_rss_mb"] >= 0 and data["init_ms"] > 0
    assert data["threads"] == 1 and data["size_bytes"] == (artifacts / "digits_cnn_int8.tflite").stat().st_size
    assert data["throughput_per_s"] == pytest.approx(1000 / lat["mean"], rel=0.01)  # mean is rounded to 0.1 us
    table = run_cli("bench", artifacts / "digits_cnn_int8.tflite", "--runs", "20")
    assert table.exit_code == 0 and "p50 ms" in table.stdout.splitlines()[1]


def test_bench_with_real_input_and_duration(artifacts, samples):
    from edgekit.bench import run_bench

    r = run_bench(artifacts / "digits_cnn_fp32.tflite", threads=1, duration_s=0.2, warmup=2,
                  input_file=samples / "validation" / sorted(p.name for p in (samples / "validation").iterdir())[0])
    assert r.runs > 5 and r.inputs.startswith("from ")


def test_noise_warnings_fire_on_a_long_tail():
    from edgekit.bench import noise_warnings

    quiet = {"p50": 1.0, "p90": 1.1, "p99": 1.2, "mean": 1.0, "std": 0.05}
    noisy = {"p50": 1.0, "p90": 3.0, "p99": 5.0, "mean": 1.8, "std": 1.2}
    assert not [w for w in noise_warnings(quiet, 100) if "p99" in w or "varies" in w]
    assert len([w for w in noise_warnings(noisy, 100) if "p99" in w or "varies" in w]) == 2


# -- graph cost model on hand-computed single-op graphs -----------------------------------------------

def test_arena_planner_hand_case():
    # a chain a -> b -> c with a side tensor d alive across: sizes in 64-byte units
    items = [Lifetime(0, 640, -1, 0), Lifetime(1, 256, 0, 1), Lifetime(2, 640, 1, 2), Lifetime(3, 128, -1, 2)]
    arena, offsets = plan_arena(items)
    # biggest first: t0 at 0; t2 (640, ops 1-2) does not overlap t0 (ops -1-0) -> also at 0;
    # t1 (256, ops 0-1) overlaps both -> 640; t3 (128, -1..2) overlaps all -> 896
    assert offsets == {0: 0, 2: 0, 1: 640, 3: 896}
    assert arena == 1024


def test_arena_of_real_model_is_below_sum_of_activations(artifacts):
    from edgekit.tflite.arena import lifetimes

    graph = read_graph((artifacts / "digits_cnn_fp32.tflite").read_bytes())
    items = lifetimes(graph)
    arena, offsets = plan_arena(items)
    assert max(i.size for i in items) <= arena < sum(i.size for i in items)
    # no two tensors alive at the same time share bytes
    for a in items:
        for b in items:
            if a.tensor < b.tensor and a.first <= b.last and b.first <= a.last:
                a0, b0 = offsets[a.tensor], offsets[b.tensor]
                assert a0 + a.size <= b0 or b0 + b.size <= a0


# -- emulate ------------------------------------------------------------------------------------------

def test_emulate_every_profile(artifacts):
    targets = device_names()
    assert {"rpi3", "rpi4", "rpi5", "pixel4", "pixel6", "iphone13"} <= set(targets)
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", ",".join(targets), "--json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["target"] for r in rows] == targets
    for r in rows:
        assert {"target", "threads", "estimate_ms", "low_ms", "high_ms", "memory_mb", "fits", "ops"} <= set(r)
        assert 0 < r["low_ms"] <= r["estimate_ms"] <= r["high_ms"] and r["fits"] is True
        assert len(r["ops"]) == 9 and r["memory_mb"] > 0
    by = {r["target"]: r["estimate_ms"] for r in rows}
    assert by["rpi3"] > by["rpi4"] > by["rpi5"]  # slower cores, slower estimates


def test_emulate_int8_faster_than_fp32_on_a_pi(artifacts):
    fp32 = read_graph((artifacts / "digits_cnn_fp32.tflite").read_bytes())
    int8 = read_graph((artifacts / "digits_cnn_int8.tflite").read_bytes())
    pi4 = load_device("rpi4")
    assert estimate(int8, pi4, 1).estimate_ms < estimate(fp32, pi4, 1).estimate_ms
    assert estimate(fp32, pi4, 4).estimate_ms < estimate(fp32, pi4, 1).estimate_ms


def test_emulate_bad_inputs(artifacts, tmp_path):
    artifact = artifacts / "digits_cnn_int8.tflite"
    result = run_cli("emulate", artifact, "--target", "rpi9")
    assert result.exit_code == 2 and "unknown target 'rpi9'; known targets: iphone13" in result.stderr
    result = run_cli("emulate", artifact, "--target", "rpi4", "--threads", "8")
    assert result.exit_code == 2 and "--threads expects 1..4 for rpi4 (4 cores), got 8" in result.stderr
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"garbage" * 10)
    result = run_cli("emulate", junk, "--target", "rpi4")
    assert result.exit_code == 4 and "TFL3" in result.stderr


def test_targets_lists_profiles():
    result = run_cli("targets")
    assert result.exit_code == 0
    assert "rpi3      Raspberry Pi 3 Model B+" in result.stdout and "4x cortex-a53 @1.4" in result.stdout


def test_fp16_weights_are_costed_like_fp32(artifacts):
    """fp16 weights reach CONV_2D through DEQUANTIZE: they used to count as 0 MACs, so fp16 models
    were estimated several times faster than fp32 on CPUs where fp16 weights run as fp32."""
    fp32 = read_graph((artifacts / "digits_cnn_fp32.tflite").read_bytes())
    fp16 = read_graph((artifacts / "digits_cnn_fp16.tflite").read_bytes())
    assert fp16.total_macs == fp32.total_macs > 0
    assert {op.op_class for op in fp16.ops if op.type == "DEQUANTIZE"} == {"view"}  # done once at load
    device = load_device("rpi4")
    a, b = estimate(fp32, device, 4).estimate_ms, estimate(fp16, device, 4).estimate_ms
    assert b == pytest.approx(a, rel=0.1)
