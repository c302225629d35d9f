"""edgekit profile: probes built without TensorFlow, a measured profile, emulate with it, bad profiles."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import OUTSIDE, run_cli
from edgekit.tflite.graph import read_graph
from edgekit.profile import costmodel
from edgekit.profile.probes import SUITE, Probe, build, suite
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
        if p.op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"):
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


def test_a_tied_coefficient_is_kept_and_the_rest_fitted_around_it():
    """More threads may keep the one-thread cost of weights streamed from memory (costmodel.TIED_GLOBAL_FEATURES):
    a tied fit holds it as given, even where its probes alone would pull it elsewhere, and fits the other
    terms on what is left of each probe's time; a device ties it where its streaming probes say so."""
    from edgekit.profile.run import fit_tied

    rng = np.random.default_rng(1)
    cold = costmodel.GLOBAL_FEATURES.index("cold_weight_bytes")
    rows = []
    for _ in range(30):
        glob = np.zeros(len(costmodel.GLOBAL_FEATURES))
        glob[0], glob[cold] = 1.0, rng.uniform(0, 2e7)  # one invoke, up to 20 MB streamed
        t = rng.uniform(1e-5, 5e-3)
        rows.append((glob, [("gemm/fp32", np.array([t, min(t, costmodel.SMALL_OP_SECONDS), 1.0]))]))
    truth = {"invokes": 2e-5, "cold_weight_bytes": 3e-11, "scaled": 0.55}

    def seconds(cold_per_byte):
        return [truth["invokes"] + cold_per_byte * g[cold] + truth["scaled"] * ops[0][1][0] for g, ops in rows]
    # probes that stream at 18 ps/B: refitted, the coefficient follows them; tied, it stays at 30
    free = costmodel.fit_scaled(rows, seconds(1.8e-11))
    tied = costmodel.fit_scaled(rows, seconds(3e-11), tied={"cold_weight_bytes": 3e-11})
    assert free["_global"]["cold_weight_bytes"] == pytest.approx(1.8e-11, rel=1e-6)
    assert tied["_global"]["cold_weight_bytes"] == 3e-11
    assert tied["_global"]["invokes"] == pytest.approx(truth["invokes"], rel=1e-6)
    assert tied["gemm/fp32"]["scaled"] == pytest.approx(truth["scaled"], rel=1e-6)
    pulled = costmodel.fit_scaled(rows, seconds(1.8e-11), tied={"cold_weight_bytes": 3e-11})
    assert pulled["_global"]["cold_weight_bytes"] == 3e-11
    # a device chooses by its streaming probes (edgekit.profile.run.fit_tied): the 10 rows streaming most
    base = {"coefficients": {"_global": {"cold_weight_bytes": 3e-11}}}
    streaming = sorted(range(len(rows)), key=lambda i: -rows[i][0][cold])[:10]
    assert fit_tied(rows, seconds(3e-11), [1.0] * len(rows), base, streaming) == {"cold_weight_bytes": 3e-11}
    assert fit_tied(rows, seconds(1.8e-11), [1.0] * len(rows), base, streaming) == {}
    assert fit_tied(rows, seconds(3e-11), [1.0] * len(rows), base, []) == {}


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
    (lambda d: d["threads"]["1"].update(stream_curve=[[1e6, 0.5]]), "'threads.1.stream_curve'"),
    (lambda d: d["threads"]["1"].update(residuals=[["CONV_2D/fp32", "near", 1.2]]), "'threads.1.residuals'"),
    (lambda d: d["threads"]["1"]["op_models"]["CONV_2D/int8"].update(tiles=[16, 0, 64]), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"].update({"SOFTMAX/fp32": {}}), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["CONV_2D/fp32"]["points"][0].__setitem__(5, 800.0), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["CONV_2D/fp32"].update(tiles=[10 ** 400, 1, 1]), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["CONV_2D/fp32"].update(wide=[32, -0.5]), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["CONV_2D/fp32"].update(wide="32"), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["CONV_2D/fp32"].update(remainder=[8, 0]), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["CONV_2D/fp32"].update(remainder=[True, 2.5]), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["DEPTHWISE_CONV_2D/fp32"].update(tap_floor=0), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["DEPTHWISE_CONV_2D/fp32"].update(tap_floor="4"), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["DEPTHWISE_CONV_2D/fp32"].update(filter_spill="16K"), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"]["op_models"]["DEPTHWISE_CONV_2D/fp32"].update(filter_spill=[16384, -1.5]), "'threads.1.op_models'"),
    (lambda d: d["threads"]["1"].update(spill={"threshold": -1.0, "excess": True}), "'threads.1.spill'"),
    (lambda d: d["threads"]["1"].update(spill={"threshold": 1.0, "excess": "yes"}), "'threads.1.spill'"),
])
def test_wrong_profile_fields_are_one_line(quick_profile, artifacts, tmp_path, mutate, field):
    data = json.loads(quick_profile.read_text())
    mutate(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", bad)
    assert result.exit_code == 2, result.stderr
    assert field in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_profile_with_a_leftover_channel_pass_prices_odd_depthwise_layers_dearer(quick_profile, tmp_path):
    """A profile whose fp32 depthwise model has a leftover-channel pass (written by a device whose grid
    showed one) loads, and prices an 11-channel depthwise layer above a 16-channel one; without the
    pass (profiles written before it) 11 channels cost no more than 16, a partial tile a full one."""
    from edgekit.emulator import estimate
    from edgekit.profile.device import load_profile

    data = json.loads(quick_profile.read_text())
    model = data["threads"]["1"]["op_models"]["DEPTHWISE_CONV_2D/fp32"]
    model.update(tiles=[1, 16, 1], points=[])
    layers = {c: read_graph(build(Probe("d", "DEPTHWISE_CONV_2D", "fp32", (1, 24, 24, c), kernel=5))) for c in (11, 16)}
    prices = {}
    for label, remainder in (("without", None), ("with", [8, 2.5])):
        if remainder:
            model["remainder"] = remainder
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(data))
        device = load_profile(path)
        prices[label] = {c: estimate(g, device, 1).estimate_ms for c, g in layers.items()}
    assert prices["without"][11] <= prices["without"][16]  # less: only its input and output bytes are fewer
    assert prices["with"][16] == pytest.approx(prices["without"][16], rel=1e-9)
    assert prices["with"][11] > prices["with"][16] and prices["with"][11] > prices["without"][11]


def test_a_profile_with_depthwise_traits_loads_and_prices_them(quick_profile, tmp_path):
    """A profile whose fp32 depthwise model has a tap floor and a filter spill (written by a device whose
    grid showed them) loads, and prices a 1x1 depthwise layer and a wide 3x3 one above a profile
    without them; layers the traits do not touch (a narrow 3x3 one) cost the same."""
    from edgekit.emulator import estimate
    from edgekit.profile.device import load_profile

    data = json.loads(quick_profile.read_text())
    model = data["threads"]["1"]["op_models"]["DEPTHWISE_CONV_2D/fp32"]
    model.update(points=[])
    layers = {name: read_graph(build(Probe("d", "DEPTHWISE_CONV_2D", "fp32", (1, 14, 14, c), kernel=k)))
              for name, c, k in (("1x1", 64, 1), ("wide", 768, 3), ("narrow", 64, 3))}
    prices = {}
    for label, traits in (("without", {}), ("with", {"tap_floor": 4, "filter_spill": [16384, 1.5]})):
        model.update(traits)
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(data))
        device = load_profile(path)
        prices[label] = {name: estimate(g, device, 1).estimate_ms for name, g in layers.items()}
    assert prices["with"]["1x1"] > prices["without"]["1x1"] and prices["with"]["wide"] > prices["without"]["wide"]
    assert prices["with"]["narrow"] == pytest.approx(prices["without"]["narrow"], rel=1e-9)


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


def test_quick_profile_stores_its_measurements_and_timing_statistic(quick_profile):
    data = json.loads(quick_profile.read_text())
    assert data["statistic"] == "min_median"
    streams = [m for m in data["measurements"] if m["probe"].startswith("stream_")]
    assert streams, "the reduced suite keeps one weight-streaming probe"
    for m in data["measurements"]:
        # the lowest block median (thread CPU time at 1 thread) never exceeds the wall-clock median by
        # more than timer granularity: a busy host only adds wall time
        assert 0 < m["min_median_ms"] <= m["p50_ms"] * 1.05 + 0.005, m
    entry = data["threads"]["1"]
    assert entry["stream_curve"][0][1] == 1.0
    # local corrections: one per single-kind probe, for kinds the fit has coefficients for, bounded
    assert entry["residuals"] and {k for k, _, _ in entry["residuals"]} <= set(entry["coefficients"])
    assert all(1 / 3 - 1e-6 <= ratio <= 3 + 1e-6 and len(key) == 5 for _, key, ratio in entry["residuals"])


def test_one_thread_timing_is_pinned_and_restores_the_mask(artifacts):
    import os

    from edgekit.profile import timing

    before = os.sched_getaffinity(0)
    core = timing.pin_core()
    seen = []
    with timing.pinned(1, core):
        seen.append(os.sched_getaffinity(0))
    assert seen == [{core}] and os.sched_getaffinity(0) == before
    with timing.pinned(2, core):  # multi-thread runs are never pinned (workers inherit the mask)
        assert os.sched_getaffinity(0) == before
    t = timing.Timed(artifacts / "digits_cnn_int8.tflite", 1, core)
    for _ in range(3):
        t.block(0.02)
    stats = t.stats()
    assert stats["blocks"] == 3 and stats["clock"] == "thread-cpu"
    assert stats["min_median_ms"] == min(t.block_medians) > 0 and stats["block_spread"] >= 0
    assert os.sched_getaffinity(0) == before


def test_stream_curve_interpolates_in_log_footprint_and_never_falls():
    from edgekit.profile.run import stream_curve

    mb = 2**20
    samples = [{"stream_bytes": 16 * mb, "min_median_ms": 1.0}, {"stream_bytes": 32 * mb, "min_median_ms": 1.9},
               {"stream_bytes": 64 * mb, "min_median_ms": 12.0}, {"stream_bytes": 128 * mb, "min_median_ms": 20.0}]
    curve = stream_curve(samples, "min_median")
    # per byte: 1, 0.95 (noise: held at 1), 3, 2.5 (held at 3)
    assert [c[1] for c in curve] == [1.0, 1.0, 3.0, 3.0]
    assert costmodel.stream_factor(8 * mb, curve) == 1.0
    assert costmodel.stream_factor(math.sqrt(32 * 64) * mb, curve) == pytest.approx(2.0)
    assert costmodel.stream_factor(1024 * mb, curve) == 3.0


def test_local_correction_takes_the_nearest_probe_of_the_same_kind():
    residuals = [["PRELU/fp32", [14.0, 3.0, 3.0, 0.0, 1.0], 2.0], ["PRELU/fp32", [8.0, 8.0, 8.0, 0.0, 1.0], 0.8],
                 ["ADD/fp32", [14.0, 3.0, 3.0, 0.0, 1.0], 5.0]]
    assert costmodel.correction("PRELU/fp32", [14.0, 3.0, 3.0, 0.0, 1.0], residuals) == pytest.approx(2.0)
    # two doublings from the nearest probe: its miss counts exp(-1)
    near = costmodel.correction("PRELU/fp32", [14.0, 3.0, 5.0, 0.0, 1.0], residuals)
    assert near == pytest.approx(1 + math.exp(-1))
    assert costmodel.correction("MUL/fp32", [14.0, 3.0, 3.0, 0.0, 1.0], residuals) == 1.0


def test_io_probe_separates_input_handling_from_op_time():
    """A RESHAPE-only probe costs only invoke and I/O in the model: no op kind appears in its terms."""
    [p] = [p for p in SUITE if p.name == "io_56x32_int8"]
    terms = costmodel.graph_terms(read_graph(build(p)))
    assert list(terms) == ["_global"]
    glob = dict(zip(costmodel.GLOBAL_FEATURES, terms["_global"]))
    assert glob["input_values_quantized"] == glob["output_values_quantized"] == 56 * 56 * 32


def test_streaming_probes_fit_the_device_memory():
    """Every probe stays loaded while the suite is timed: the weight-streaming probes are taken
    smallest first while they add up to 1/32 of the RAM."""
    from edgekit.profile.probes import is_stream, weight_bytes

    def streamed(ram_gb):
        return [weight_bytes(p) for p in suite(ram_bytes=ram_gb * 2**30) if is_stream(p)]
    assert len(streamed(24)) == 4
    assert len(streamed(4)) == 3 and sum(streamed(4)) <= 4 * 2**30 / 32
    assert len(streamed(1)) == 1 and streamed(0.25) == []


def test_local_corrections_are_fitted_at_one_thread_only(quick_profile):
    """With more threads a single-op probe also pays the pool's wake-up and barriers, which ops inside
    a network do not: the same measured probes give corrections at 1 thread and none at 2."""
    from edgekit.profile.run import fit_threads

    data = json.loads(quick_profile.read_text())
    probes = {p.name: p for p in SUITE}
    samples = [{**m, "graph": read_graph(build(probes[m["probe"]])), "cache_bytes": data["cache_bytes"],
                "stream_bytes": None, "grid": probes[m["probe"]].grid} for m in data["measurements"]]
    one = fit_threads(samples, band=False)
    two = fit_threads([{**s, "threads": 2} for s in samples], band=False)
    assert one["residuals"] and two["residuals"] == []
    assert one["coefficients"] == two["coefficients"]  # the same numbers: only the corrections differ


def test_pool_cost_counts_its_window_per_output_value():
    """A 3x3 stride-1 pool reads 9 inputs per output, a stride-2 one 9 per 4 inputs: the costed values
    follow the window read from the op's options (Inception's stride-1 pools were ~4x too cheap)."""
    def pool_values(stride):
        p = Probe("pool", "AVERAGE_POOL_2D", "int8", (1, 28, 28, 32), kernel=3, stride=stride)
        graph = read_graph(build(p))
        [op] = graph.ops
        [values] = costmodel.op_features(graph, op, ("values",))
        return op.window, values
    assert pool_values(1) == (9, 28 * 28 * 32 * 9)
    assert pool_values(2) == (9, 14 * 14 * 32 * 9)
    add = read_graph(build(Probe("add", "ADD", "fp32", (1, 28, 28, 32))))
    assert add.ops[0].window == 1


def test_partitions_count_runs_of_delegated_ops():
    """int8 HARD_SWISH runs on the reference kernels: in the hard-swish probe network each one ends an
    XNNPACK partition (19 of them); the fp32 network is one partition, a lone int8 HARD_SWISH none."""
    nets = {p.name: read_graph(build(p)) for p in SUITE if p.name.startswith("net_160_w8_hswish")}
    assert costmodel.partitions(nets["net_160_w8_hswish_fp32"]) == 1
    int8 = nets["net_160_w8_hswish_int8"]
    hswish = sum(op.type == "HARD_SWISH" for op in int8.ops)
    assert costmodel.partitions(int8) == hswish + 1 == 19
    alone = read_graph(build(Probe("hs", "HARD_SWISH", "int8", (1, 14, 14, 8), repeat=2)))
    assert costmodel.partitions(alone) == 0


def _conv_hswish_chain(precision: str, interleaved: bool, n: int = 3, hw: int = 8, c: int = 32) -> bytes:
    """n 1x1 convolutions and n HARD_SWISHes, alternating or all convolutions first."""
    from edgekit.profile.probes import _Builder, _layer

    b = _Builder(precision, 0)
    x = x0 = b.act([1, hw, hw, c], scale=0.05)
    conv = [Probe("", "CONV_2D", precision, (), cout=c)] * n
    hswish = [Probe("", "HARD_SWISH", precision, ())] * n
    for p in ([q for pair in zip(conv, hswish) for q in pair] if interleaved else conv + hswish):
        x = _layer(b, p, x)
    return b.finish([x0], [x])


def test_boundary_values_count_tensors_crossing_the_delegate():
    """int8 HARD_SWISH runs on the reference kernels: alternating with three 1x1 convolutions, five
    8x8x32 tensors cross between XNNPACK and the reference kernels (the last one is the model's
    output, read by nobody); with the convolutions first, one does. fp32 HARD_SWISH is delegated."""
    values = 8 * 8 * 32
    assert costmodel.boundary_values(read_graph(_conv_hswish_chain("int8", True))) == 5 * values
    assert costmodel.boundary_values(read_graph(_conv_hswish_chain("int8", False))) == values
    assert costmodel.boundary_values(read_graph(_conv_hswish_chain("fp32", True))) == 0


def test_a_profile_written_before_a_whole_model_feature_still_loads(two_thread_profile, artifacts, tmp_path):
    """Profiles written before boundary_values was measured lack it at both thread counts: they load and
    cost it at 0 (the same estimate as with a 0 coefficient); a negative one is still refused."""
    data = json.loads(two_thread_profile.read_text())
    model = artifacts / "digits_cnn_int8.tflite"
    for entry in data["threads"].values():
        (entry.get("scaling") or entry["coefficients"])["_global"]["boundary_values"] = 0.0
    zero = tmp_path / "zero.json"
    zero.write_text(json.dumps(data))
    for entry in data["threads"].values():
        del (entry.get("scaling") or entry["coefficients"])["_global"]["boundary_values"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    for threads in ("1", "2"):
        ests = [run_cli("emulate", model, "--target", p, "--threads", threads, "--json") for p in (zero, old)]
        assert all(r.exit_code == 0 for r in ests), ests[1].stderr
        assert json.loads(ests[0].stdout)[0]["estimate_ms"] == json.loads(ests[1].stdout)[0]["estimate_ms"]
    data["threads"]["2"]["scaling"]["_global"]["boundary_values"] = -1.0
    old.write_text(json.dumps(data))
    result = run_cli("emulate", model, "--target", old, "--threads", "2")
    assert result.exit_code == 2 and "'threads.2.scaling'" in result.stderr


def _interpreter_partitions(data: bytes) -> tuple[int, set[int]]:
    """The interpreter's own answer: DELEGATE nodes, and the original nodes XNNPACK took."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.device_env.guest import delegated_nodes

    interpreter = Interpreter(model_content=data, num_threads=1)
    interpreter.allocate_tensors()
    ops = interpreter._get_ops_details()
    return sum(op["op_name"] == "DELEGATE" for op in ops), set(delegated_nodes(ops)[1])


def _cell_model() -> bytes:
    """A NASNet-like cell: six 1x1-convolution branches joined by one 6-way CONCATENATION, then a
    1x1 AVERAGE_POOL_2D with stride 2 and, on a parallel branch, a 4-way concatenation."""
    from edgekit.profile.probes import VALID, _Builder, _layer

    b = _Builder("fp32", 0)
    x = b.act([1, 8, 8, 8])
    branches = [_layer(b, Probe("", "CONV_2D", "fp32", (), cout=8), x) for _ in range(6)]
    cat6 = b.act([1, 8, 8, 48])
    opt = b.s.ConcatenationOptionsT()
    opt.axis = 3
    b.op("CONCATENATION", branches, [cat6], "ConcatenationOptions", opt)
    cat4 = b.act([1, 8, 8, 32])
    b.op("CONCATENATION", branches[:4], [cat4], "ConcatenationOptions", opt)
    pooled = b.act([1, 4, 4, 48])
    pool = b.s.Pool2DOptionsT()
    pool.padding, pool.strideH, pool.strideW, pool.filterHeight, pool.filterWidth = VALID, 2, 2, 1, 1
    b.op("AVERAGE_POOL_2D", [cat6], [pooled], "Pool2DOptions", pool)
    y = _layer(b, Probe("", "CONV_2D", "fp32", (), cout=8), pooled)
    z = _layer(b, Probe("", "CONV_2D", "fp32", (), cout=8), cat4)
    return b.finish([x], [y, z])


def test_delegated_matches_the_interpreter():
    """Which ops XNNPACK leaves out (6-way concatenation, a strided 1x1 pool) and how many partitions
    that makes, as the interpreter's DELEGATE nodes say; the parallel branches join one partition."""
    data = _cell_model()
    graph = read_graph(data)
    count, taken = _interpreter_partitions(data)
    assert {op.index for op in graph.ops if costmodel.delegated(graph, op)} == taken
    assert not costmodel.delegated(graph, next(op for op in graph.ops if len(op.inputs) == 6))
    assert costmodel.partitions(graph) == count == 2


def test_partitions_match_the_interpreter_on_the_probe_networks():
    """The synthetic networks (int8 ones with a HARD_SWISH or SOFTMAX left out) and single-op probes."""
    for p in SUITE:
        if p.name.startswith("net_") or p.op in ("SOFTMAX", "HARD_SWISH", "CONCATENATION", "RELU"):
            data = build(p)
            assert costmodel.partitions(read_graph(data)) == _interpreter_partitions(data)[0], p.name


def test_a_synthetic_network_takes_squeeze_and_excitation_blocks():
    """benchmarks/profile_context.py's networks: after each of the 8 depthwise convolutions a MEAN,
    two 1x1 convolutions on the one pixel left, a LOGISTIC and a broadcast MUL; they run in both
    precisions (fp32 into a softmax that sums to 1), and the cost model counts the delegate partitions
    the interpreter makes."""
    for precision in ("fp32", "int8"):
        plain = Probe("net", "NETWORK", precision, (1, 96, 96, 3), cout=16)
        excited = Probe("net_se", "NETWORK", precision, (1, 96, 96, 3), cout=16, broadcast=True)
        data = {p.name: build(p) for p in (plain, excited)}
        graphs = {name: read_graph(model) for name, model in data.items()}
        counts = {name: Counter(op.type for op in g.ops) for name, g in graphs.items()}
        assert counts["net_se"] - counts["net"] == Counter(MEAN=8, CONV_2D=16, LOGISTIC=8, MUL=8), precision
        one_pixel = [op for op in graphs["net_se"].ops if op.type == "CONV_2D"
                     and graphs["net_se"].tensors[op.outputs[0]].shape[1:3] == (1, 1)]
        assert len(one_pixel) == 16
        assert costmodel.partitions(graphs["net_se"]) == _interpreter_partitions(data["net_se"])[0]
        model = Model(data["net_se"], excited.name, threads=1)
        probabilities = model.run([np.random.default_rng(0).random(i.shape, np.float32) for i in model.inputs])[0]
        assert probabilities.shape[-1] == 1000
        if precision == "fp32":  # int8 probes' random filters at fixed scales saturate: they only have to run
            assert abs(float(probabilities.sum()) - 1) < 1e-3 and np.isfinite(probabilities).all()


def test_mediapipe_transposed_convolution_is_costed_as_the_builtin_the_delegate_runs():
    """MediaPipe's custom Convolution2DTransposeBias (the selfie segmenter's last op: its 128x128x16
    map to the 256x256 mask, ~0.9 ms of ~3 here) is XNNPACK's deconvolution, as TRANSPOSE_CONV is:
    costed as that kind with its multiply-accumulates, not left out, and delegated, as the
    interpreter's DELEGATE nodes say; the suite times the builtin form."""
    data = (Path(__file__).parent / "data" / "selfie_segmentation.tflite").read_bytes()
    graph = read_graph(data)
    op = next(op for op in graph.ops if op.type == "Convolution2DTransposeBias")
    assert "CUSTOM" not in graph.uncosted and op.costed
    assert op.macs == 128 * 128 * 16 * 2 * 2 * 1  # every input value, times the kernel's taps and outputs
    assert costmodel.kind(graph, op) == "TRANSPOSE_CONV/fp32"
    assert costmodel.family("TRANSPOSE_CONV/fp32") == costmodel.CONV_FEATURES
    assert op.index in _interpreter_partitions(data)[1] and costmodel.delegated(graph, op)
    assert any(p.op == "TRANSPOSE_CONV" and p.precision == precision for p in SUITE for precision in ("fp32", "int8"))


def test_a_transposed_convolution_is_priced_in_the_output_tiles_of_the_convolution_kernels(tmp_path):
    """XNNPACK runs a stride-2 transposed convolution as 2x2 sub-convolutions on its GEMM kernels, so
    an output narrower than the kernels' NR columns costs a whole tile: on this runtime a 2x2
    deconvolution to 1 channel takes most of what one to 8 channels takes (raw multiply-accumulates
    say 1/8; measured on a Zen 1: 694 vs 697 us). With the device's convolution tiles known (its kernel
    models), the kind is priced in tiled multiply-accumulates and output pixels."""
    graph = read_graph((Path(__file__).parent / "data" / "selfie_segmentation.tflite").read_bytes())
    op = next(op for op in graph.ops if op.type == "Convolution2DTransposeBias")
    models = {"CONV_2D/fp32": {"tiles": [1, 8, 1]}}
    assert costmodel.kind(graph, op) == "TRANSPOSE_CONV/fp32"  # no kernel model: raw multiply-accumulates
    assert costmodel.kind(graph, op, models) == "TRANSPOSE_CONV_tiled/fp32"
    assert costmodel.family("TRANSPOSE_CONV_tiled/fp32") == costmodel.TRANSPOSED_FEATURES
    assert costmodel.thread_family(graph, op) == "transposed/fp32"
    # 128x128x16 -> 256x256x1, 2x2 stride 2: four sub-convolutions of 128x128 pixels, one tap each
    assert costmodel.transposed_work(graph, op, (1, 1, 1)) == (op.macs, 256 * 256)
    assert costmodel.transposed_work(graph, op, (1, 8, 1)) == (8 * op.macs, 256 * 256)
    assert costmodel.transposed_work(graph, op, (1, 8, 32))[0] == 8 * 2 * op.macs  # 16 inputs padded to 32
    assert costmodel.transposed_work(graph, op, (3, 8, 1))[1] == 4 * 128 * 129  # rows of 128 in tiles of 3
    features = costmodel.op_features(graph, op, costmodel.TRANSPOSED_FEATURES, models)
    assert list(features) == [1.0, 8 * op.macs, 256 * 256, op.bytes_weights]
    # 3x3 stride 2: sub-kernels of 2x2, 2x1, 1x2 and 1x1 taps use each of the 9 taps once
    three = read_graph(build(Probe("t", "TRANSPOSE_CONV", "fp32", (1, 16, 16, 8), cout=8, kernel=3, stride=2)))
    assert costmodel.transposed_work(three, three.ops[0], (1, 1, 1)) == (32 * 32 * 8 * 9 * 8 / 4, 32 * 32)

    from edgekit.profile.timing import Timed, pin_core
    core, timers = pin_core(), {}
    for cout in (1, 8):
        path = tmp_path / f"to{cout}.tflite"
        path.write_bytes(build(Probe(f"to{cout}", "TRANSPOSE_CONV", "fp32", (1, 64, 64, 16), cout=cout, kernel=2, stride=2)))
        timers[cout] = Timed(path, 1, core, invoke_only=True)
    for _ in range(3):
        for t in timers.values():
            t.block(0.1)
    ms = {cout: t.stats()["min_median_ms"] for cout, t in timers.items()}
    assert ms[1] > 0.5 * ms[8], ms


def test_an_unmeasured_reference_kernel_op_is_costed_like_the_measured_ones():
    """An int8 op the delegate leaves out that no probe measured (a lone RELU6) takes the median of the
    measured reference-kernel kinds, not of all elementwise kinds (mostly delegated, 10-300x cheaper)."""
    coefs = {"ADD/int8": {"ops": 1e-6, "values": 1e-10}, "MUL/int8": {"ops": 1e-6, "values": 2e-10},
             "LOGISTIC/int8": {"ops": 1e-6, "values": 3e-10},
             "HARD_SWISH/int8": {"ops": 2e-6, "values": 3e-9}, "PRELU/int8": {"ops": 4e-6, "values": 7e-9}}
    assert costmodel.fallback(coefs, "RELU6/int8") == pytest.approx({"ops": 3e-6, "values": 5e-9})
    assert costmodel.fallback(coefs, "SQUARED_DIFFERENCE/int8") == pytest.approx({"ops": 1e-6, "values": 3e-10})


def test_networks_take_the_corrections_of_single_tap_probes_only(quick_profile):
    """The profile keeps every suite probe's correction (the thread scaling is fitted with them); an
    estimate applies those of 1x1 / elementwise probes, not of 3x3 convolution or depthwise probes.
    Kinds the kernel grid models take no suite corrections: their model has its own."""
    from edgekit.profile import opmodel

    residuals = json.loads(quick_profile.read_text())["threads"]["1"]["residuals"]
    kept = costmodel.transferable(residuals)
    assert residuals and kept and all(r[1][3] == 0 for r in kept)
    assert not any(r[0].split("/")[0] in opmodel.MODELLED for r in residuals)
    mixed = [["CONV_2D/fp32", [10.0, 5.0, 5.0, 3.17, 1.0], 1.3], ["DEPTHWISE_CONV_2D/int8", [8.0, 5.0, 5.0, 3.17, 2.0], 0.8],
             ["CONV_2D_1x1/fp32", [10.0, 5.0, 6.0, 0.0, 1.0], 0.9], ["ADD/int8", [10.0, 5.0, 5.0, 0.0, 1.0], 1.1]]
    assert [r[0] for r in costmodel.transferable(mixed)] == ["CONV_2D_1x1/fp32", "ADD/int8"]


@pytest.fixture(scope="module")
def two_thread_profile(tmp_path_factory):
    """`edgekit profile run --quick` at 1 and 2 threads."""
    out = tmp_path_factory.mktemp("profile2") / "host2.json"
    result = run_cli("profile", "run", "-o", out, "--threads", "1,2", "--quick", "--seconds-per-probe", "0.05")
    assert result.exit_code == 0, result.stderr
    return out


def test_a_profile_written_before_a_thread_family_scales_its_ops_as_it_then_did(two_thread_profile, tmp_path):
    """Transposed convolutions have had a thread family of their own since session 9; a profile
    without it scales them as GEMMs, as it did when written (the same estimate as a copy of those)."""
    data = json.loads(two_thread_profile.read_text())
    selfie = Path(__file__).parent / "data" / "selfie_segmentation.tflite"
    graph = read_graph(selfie.read_bytes())
    assert {costmodel.thread_family(graph, op) for op in graph.ops
            if op.type == "Convolution2DTransposeBias"} == {"transposed/fp32"}
    # the quick suite times no transposed convolution: price the segmenter's at 1 ns per MAC (~1 ms)
    data["threads"]["1"]["coefficients"]["TRANSPOSE_CONV/fp32"] = dict.fromkeys(costmodel.CONV_FEATURES, 0.0) | {"macs": 1e-9}
    scaling = data["threads"]["2"]["scaling"]
    for precision in ("fp32", "int8"):
        # a family of its own that prices them far from any GEMM scaling a quick fit may find (3x their
        # one-thread time: with "no speed-up", a noisy fit's GEMM scaling near 1 made the two alike)
        scaling[f"transposed/{precision}"] = {"scaled": 3.0, "small": 0.0, "ops": 0.0}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    for precision in ("fp32", "int8"):
        scaling[f"transposed/{precision}"] = dict(scaling[f"gemm/{precision}"])
    same = tmp_path / "same.json"
    same.write_text(json.dumps(data))
    for precision in ("fp32", "int8"):
        del scaling[f"transposed/{precision}"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    ests = [run_cli("emulate", selfie, "--target", p, "--threads", "2", "--json") for p in (same, old, other)]
    assert all(r.exit_code == 0 for r in ests), ests[1].stderr
    same_ms, old_ms, other_ms = (json.loads(r.stdout)[0]["estimate_ms"] for r in ests)
    assert same_ms == old_ms < other_ms - 0.1  # and a family of its own prices them (the 1 ms op, 3x)


def test_more_threads_scale_the_one_thread_op_costs(two_thread_profile, artifacts):
    """At 2 threads the profile stores a scaling of the 1-thread op costs per thread family; emulate
    sums it op by op (plus the invoke, I/O and cache terms), and a profile whose scaling
    names no base thread count is refused in one line."""
    data = json.loads(two_thread_profile.read_text())
    one, two = data["threads"]["1"], data["threads"]["2"]
    assert "scaling" not in one and two["base_threads"] == 1 and two["residuals"] == []
    # weights streamed from memory: refitted, or at the one-thread cost where the streaming probe says so
    assert two["tied"] in ([], ["cold_weight_bytes"])
    cold = [e["_global"]["cold_weight_bytes"] for e in (one["coefficients"], two["scaling"])]
    assert (cold[0] == cold[1]) if two["tied"] else (cold[1] >= 0)
    # the quick suite has no transposed convolution: that family is left to the GEMMs' scaling
    assert set(two["scaling"]) == {"_global", *costmodel.THREAD_FAMILIES} - set(costmodel.LATER_THREAD_FAMILIES)
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", two_thread_profile,
                     "--threads", "2", "--json")
    assert result.exit_code == 0, result.stderr
    [est] = json.loads(result.stdout)
    graph = read_graph((artifacts / "digits_cnn_int8.tflite").read_bytes())
    rows = costmodel.scaled_rows(graph, one, data["cache_bytes"], two["stream_curve"])
    assert est["estimate_ms"] == pytest.approx(costmodel.scaled_seconds(rows, two["scaling"]) * 1e3, abs=1e-3)
    glob = costmodel.scaled_seconds((rows[0], []), two["scaling"]) * 1e3
    assert sum(o["ms"] for o in est["ops"]) + glob == pytest.approx(est["estimate_ms"], abs=0.002)
    del two["base_threads"]
    bad = two_thread_profile.with_name("bad.json")
    bad.write_text(json.dumps(data))
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", bad, "--threads", "2")
    assert result.exit_code == 2 and "'threads.2.base_threads'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_depthwise_kernels_over_25_taps_are_costed_from_their_own_probes():
    """XNNPACK runs a depthwise kernel of more than 25 taps (NASNet's 7x7 separable convolutions) on a
    path many times slower per multiply-accumulate than a 5x5 one. Measured here: it is a kind of its
    own, and a fit with the suite's two 7x7 probes estimates an unseen 7x7 layer to within 25 %, where
    the 5x5 layers' rate (what a profile without the 7x7 probes charges) is several times too cheap."""
    from edgekit.profile.run import fit_threads, measure

    seven = [p for p in SUITE if p.name.startswith("dw7x7") and p.precision == "int8"]
    five = next(p for p in SUITE if p.name == "dw5x5_28x120_int8")
    io = [p for p in SUITE if p.name.startswith("io_") and p.precision == "int8"]  # the invoke and I/O terms
    unseen = Probe("dw7x7_14x64_int8", "DEPTHWISE_CONV_2D", "int8", (1, 14, 14, 64), kernel=7, repeat=2)
    assert len(seven) == 2
    samples = {s["probe"]: s for s in measure(seven + [five, unseen] + io, [1], 0.1, rounds=2)}

    def ms_per_mac(probe):
        graph = samples[probe.name]["graph"]
        return samples[probe.name]["min_median_ms"] / sum(op.macs for op in graph.ops)
    graph = samples[unseen.name]["graph"]
    assert {costmodel.kind(graph, op) for op in graph.ops} == {"DEPTHWISE_CONV_2D_multipass/int8"}
    five_graph = samples[five.name]["graph"]
    assert {costmodel.kind(five_graph, op) for op in five_graph.ops} == {"DEPTHWISE_CONV_2D/int8"}
    assert ms_per_mac(unseen) > 5 * ms_per_mac(five)

    entry = fit_threads([s for name, s in samples.items() if name != unseen.name], band=False)
    coefs = entry["coefficients"]
    assert set(coefs["DEPTHWISE_CONV_2D_multipass/int8"]) == set(costmodel.MULTIPASS_FEATURES)
    cache, measured = samples[unseen.name]["cache_bytes"], samples[unseen.name]["min_median_ms"]
    estimate = costmodel.predict_seconds_terms(costmodel.graph_terms(graph, cache), coefs) * 1e3
    assert estimate == pytest.approx(measured, rel=0.25)
    # the 5x5 layers' rate for the 7x7 layer's multiply-accumulates (dropping the multipass coefficients
    # instead, as before, left only the invoke and I/O terms, which a fit on a few probes can set near a
    # third of this layer's time on a fast host: Zen 4, 0.268 ms against 0.785)
    assert ms_per_mac(five) * sum(op.macs for op in graph.ops) < measured / 3


def _elementwise_chain(precision: str, steps: list[str], shape=(1, 16, 16, 32)) -> bytes:
    """A model of ADDs (of the running value and the model's second input), RELUs and concatenations,
    in order; "ADD+RELU" is an ADD with a fused RELU, "ADD|" an ADD whose output is read twice."""
    from edgekit.profile.probes import _Builder
    b = _Builder(precision, 0)
    x0, x1 = b.act(list(shape)), b.act(list(shape))
    x, extra = x0, []
    for step in steps:
        if step.startswith("ADD"):
            y = b.act(list(shape), scale=0.1)
            opt = b.s.AddOptionsT()
            opt.fusedActivationFunction = 1 if step == "ADD+RELU" else 0
            b.op("ADD", [x, x1], [y], "AddOptions", opt, 2 if b.int8 else 1)
            if step == "ADD|":
                extra.append(y)
        elif step == "RELU":
            y = b.act(list(shape), scale=0.1)
            b.op("RELU", [x], [y])
        else:  # CONCATENATION with the model's second input: the chain goes on twice as wide
            wide = b.act([*shape[:3], shape[3] * 2], scale=0.1)
            opt = b.s.ConcatenationOptionsT()
            opt.axis = 3
            b.op("CONCATENATION", [x, x1], [wide], "ConcatenationOptions", opt, 1)
            y, shape = wide, (*shape[:3], shape[3] * 2)
        x = y
    return b.finish([x0, x1], [x, *extra])


def test_float_clamps_fuse_into_the_op_before_them_as_xnnpack_fuses_them():
    """A float RELU costs nothing when the op that produces its input can clamp its own output and
    nothing else reads it (XNNPACK fuses it there); an ADD that then clamps, fused by its options or by
    a RELU after it, is the clamped kind. A RELU after a concatenation, after an ADD whose output is
    read twice, or any int8 one, stays an op of its own."""
    def costed(precision, steps):
        graph = read_graph(_elementwise_chain(precision, steps))
        return [costmodel.kind(graph, op) for op in graph.ops if not costmodel.free(graph, op)]

    assert costed("fp32", ["ADD+RELU"]) == ["ADD_clamped/fp32"]
    assert costed("fp32", ["ADD", "RELU"]) == ["ADD_clamped/fp32"]
    assert costed("fp32", ["ADD"]) == ["ADD/fp32"]
    assert costed("fp32", ["RELU", "RELU", "RELU"]) == ["RELU/fp32"]
    assert costed("fp32", ["ADD|", "RELU"]) == ["ADD/fp32", "RELU/fp32"]
    assert costed("fp32", ["CONCATENATION", "RELU"]) == ["CONCATENATION/fp32", "RELU/fp32"]
    assert costed("int8", ["ADD+RELU"]) == ["ADD/int8"]
    assert costed("int8", ["ADD", "RELU"]) == ["ADD/int8", "RELU/int8"]


def test_a_clamped_float_add_is_measured_and_costed_dearer_than_a_plain_one():
    """This runtime's float ADD with a fused RELU runs a slower kernel than a plain ADD (1.5-3x at
    56x56x32 on the host it was found on): the suite's clamped ADD probes measure it, and a fit
    with them prices a residual block's ADD -> RELU (the RELU fused) above the plain ADD of the same
    shape. (On a Zen 1 host the fit on these few probes gives the plain ADD's time to the input and
    output terms and prices it at 0: the clamped one must still cost something.)"""
    from edgekit.profile.run import fit_threads, measure

    probes = [p for p in SUITE if p.precision == "fp32" and (p.op == "ADD" or p.name.startswith("io_"))]
    assert {p.name for p in probes if p.activation} == {"add_relu_56x32_fp32", "add_relu_14x256_fp32"}
    samples = {s["probe"]: s for s in measure(probes, [1], 0.1, rounds=2)}
    assert samples["add_relu_56x32_fp32"]["min_median_ms"] > samples["add_56x32_fp32"]["min_median_ms"]

    coefs = fit_threads(list(samples.values()), band=False)["coefficients"]
    assert {"ADD/fp32", "ADD_clamped/fp32"} <= set(coefs)
    def op_seconds(steps):
        graph = read_graph(_elementwise_chain("fp32", steps, (1, 64, 64, 24)))
        return sum(costmodel.op_seconds(graph, op, coefs) for op in graph.ops)
    assert op_seconds(["ADD", "RELU"]) == op_seconds(["ADD+RELU"]) > 1.3 * op_seconds(["ADD"])
    assert op_seconds(["ADD+RELU"]) > 0


def _padded(precision: str, pad: str, after: str, h: int = 56, c: int = 16) -> bytes:
    """A PAD ("border": one pixel around, "channels": 4 more channels) read by `after`: "dw" a VALID 3x3
    depthwise convolution, "dw+add" that and an ADD (two readers), "add" an ADD alone, "out" nothing
    (the pad is the model's output); pad "none" with "same": the SAME depthwise convolution alone."""
    from edgekit.profile.probes import VALID, SAME, _Builder

    b = _Builder(precision, 0)
    s = b.s
    x = y = b.act([1, h, h, c])
    if pad != "none":
        border, extra = (1, 0) if pad == "border" else (0, 4)
        pads = b.tensor([4, 2], "int32", np.array([[0, 0], [border] * 2, [border] * 2, [0, extra]], np.int32))
        y = b.act([1, h + 2 * border, h + 2 * border, c + extra])
        b.op("PAD", [x, pads], [y], version=2 if b.int8 else 1)
    outputs = [y] if after == "out" else []
    if after in ("dw", "dw+add", "same"):
        width = c + (4 if pad == "channels" else 0)
        f, fs = b.weights([1, 3, 3, width], 3)
        out = b.act([1, h, h, width])  # VALID after a 1-pixel border, SAME otherwise: h x h either way
        opt = s.DepthwiseConv2DOptionsT()
        opt.padding = VALID if pad == "border" else SAME
        opt.strideH, opt.strideW, opt.depthMultiplier = 1, 1, 1
        b.op("DEPTHWISE_CONV_2D", [y, f, b.bias(width, y, fs)], [out], "DepthwiseConv2DOptions", opt, 3 if b.int8 else 1)
        outputs.append(out)
    if after in ("add", "dw+add"):
        out = b.act(list(b.tensors[y].shape))
        b.op("ADD", [y, y], [out], "AddOptions", s.AddOptionsT(), 2 if b.int8 else 1)
        outputs.append(out)
    return b.finish([x], outputs)


def test_a_border_pad_fuses_into_the_convolution_after_it_as_xnnpack_fuses_it(tmp_path):
    """XNNPACK folds a PAD of height and width into the convolution that alone reads it: the model
    PAD -> VALID depthwise runs in the time of the SAME depthwise alone (this runtime, fp32 and int8),
    and the cost model charges such a pad nothing. A channel pad, a pad read twice or by another op,
    and a pad that is the model's output are not folded."""
    def fused(precision, pad, after):
        graph = read_graph(_padded(precision, pad, after))
        return [op.type for op in graph.ops if op.index in costmodel.pad_fusion(graph)]
    for precision in ("fp32", "int8"):
        assert fused(precision, "border", "dw") == ["PAD"]
        assert fused(precision, "border", "dw+add") == []
        assert fused(precision, "border", "add") == []
        assert fused(precision, "border", "out") == []
        assert fused(precision, "channels", "dw") == []
    graph = read_graph(_padded("fp32", "border", "dw"))
    assert [op.type for op in graph.ops if not costmodel.free(graph, op)] == ["DEPTHWISE_CONV_2D"]

    from edgekit.profile.timing import Timed, pin_core
    core, timers = pin_core(), {}
    for name, pad, after in (("pad+dw", "border", "dw"), ("same", "none", "same"), ("pad", "border", "out")):
        path = tmp_path / f"{name.replace('+', '_')}.tflite"
        path.write_bytes(_padded("fp32", pad, after, h=112, c=32))
        timers[name] = Timed(path, 1, core, invoke_only=True)
    for _ in range(3):
        for t in timers.values():
            t.block(0.1)
    ms = {name: t.stats()["min_median_ms"] for name, t in timers.items()}
    assert ms["pad+dw"] < ms["same"] + 0.5 * ms["pad"], ms


def test_a_per_channel_mul_is_costed_from_the_chained_broadcast_probes():
    """A MUL of a feature map by a per-channel vector (DenseNet's batch-norm scale, an SE gate) is a
    kind of its own, a scalar factor is not; the chained broadcast probes measure it dearer per value
    than a same-shape MUL (~3x on the host it was found on, 1.2-1.3x on a Zen 1), and a fit
    with them estimates an unseen DenseNet-like block of such MULs within 30 % where the same-shape
    MUL line is far too cheap."""
    from edgekit.profile.run import fit_threads, measure

    def mul(shape, other, name):
        from edgekit.profile.probes import _Builder
        b = _Builder("int8", 0)
        x = b.act(list(shape))
        scale = b.tensor(list(other), "int8", np.full(other, 64, np.int8), 1 / 128, 0)
        y = x
        for _ in range(4):
            out = b.act(list(shape))
            b.op("MUL", [y, scale], [out], "MulOptions", b.s.MulOptionsT(), 2)
            y = out
        return Probe(name, "MUL", "int8", shape), b.finish([x], [y])
    _, vector = mul((1, 16, 16, 128), (1, 1, 1, 128), "v")
    _, scalar = mul((1, 16, 16, 128), (1,), "s")
    kinds = {name: {costmodel.kind(g, op) for op in g.ops}
             for name, g in (("vector", read_graph(vector)), ("scalar", read_graph(scalar)))}
    assert kinds == {"vector": {"MUL_broadcast/int8"}, "scalar": {"MUL/int8"}}

    probes = [p for p in SUITE if p.precision == "int8" and (p.op == "MUL" or p.name.startswith("io_"))]
    assert {p.name for p in probes if p.broadcast} == {"mul_se_28x144_x4_int8", "mul_se_7x1152_x4_int8",
                                                       "mul_se_56x16_x4_int8", "mul_se_96x8_x4_int8"}
    unseen = Probe("mul_bn_16x128_x4_int8", "MUL", "int8", (1, 16, 16, 128), broadcast=True, repeat=4)
    samples = {s["probe"]: s for s in measure(probes + [unseen], [1], 0.1, rounds=2)}
    per_value = {name: samples[name]["min_median_ms"] / (4 * np.prod(shape))
                 for name, shape in (("mul_se_28x144_x4_int8", (28, 28, 144)), ("mul_56x32_int8", (56, 56, 32)))}
    io = {name: samples[name]["min_median_ms"] / np.prod(shape)
          for name, shape in (("io_56x32_int8", (56, 56, 32)),)}
    # op time per value above the input/output handling: broadcast above same-shape
    assert per_value["mul_se_28x144_x4_int8"] - io["io_56x32_int8"] / 4 > \
        per_value["mul_56x32_int8"] - io["io_56x32_int8"] / 4

    entry = fit_threads([s for name, s in samples.items() if name != unseen.name], band=False)
    coefs, graph = entry["coefficients"], samples[unseen.name]["graph"]
    cache, measured = samples[unseen.name]["cache_bytes"], samples[unseen.name]["min_median_ms"]
    estimate = costmodel.predict_seconds_terms(costmodel.graph_terms(graph, cache), coefs) * 1e3
    assert estimate == pytest.approx(measured, rel=0.3)
    glob = costmodel.predict_seconds_terms({"_global": costmodel.graph_terms(graph, cache)["_global"]}, coefs) * 1e3
    same_shape = {k: c for k, c in coefs.items() if not k.startswith("MUL_broadcast")}
    old_ops = costmodel.predict_seconds_terms(costmodel.graph_terms(graph, cache), same_shape) * 1e3 - glob
    assert old_ops < (measured - glob) / 1.5


def test_a_broadcast_mul_pays_per_row_of_channels(tmp_path):
    """XNNPACK runs a per-channel MUL once per pixel over its channels: the same values cost more split
    into narrower rows (here 2.7x fp32, 1.8x int8 at 48x48x16 against 6x6x1024), which a same-shape MUL
    does not. The fit with the suite's broadcast probes (784 to 9,216 rows) prices rows, and an unseen
    narrow one within 30 %; a profile written before rows loads and costs them at 0."""
    from edgekit.emulator import estimate
    from edgekit.profile.device import load_profile
    from edgekit.profile.run import fit_threads, measure

    assert costmodel.family("MUL_broadcast/fp32") == costmodel.family("PRELU/int8") == costmodel.ROW_FEATURES
    narrow = Probe("mul_se_48x16_x4_fp32", "MUL", "fp32", (1, 48, 48, 16), broadcast=True, repeat=4)
    wide = Probe("mul_se_6x1024_x4_fp32", "MUL", "fp32", (1, 6, 6, 1024), broadcast=True, repeat=4)
    probes = [p for p in SUITE if p.precision == "fp32" and (p.op == "MUL" or p.name.startswith("io_"))]
    samples = {s["probe"]: s for s in measure(probes + [narrow, wide], [1], 0.1, rounds=2)}
    assert samples[narrow.name]["min_median_ms"] > 1.3 * samples[wide.name]["min_median_ms"]

    entry = fit_threads([s for name, s in samples.items() if name not in (narrow.name, wide.name)], band=False)
    coefs = entry["coefficients"]
    assert coefs["MUL_broadcast/fp32"]["rows"] > 0
    graph, cache = samples[narrow.name]["graph"], samples[narrow.name]["cache_bytes"]
    priced = costmodel.predict_seconds_terms(costmodel.graph_terms(graph, cache), coefs) * 1e3
    assert priced == pytest.approx(samples[narrow.name]["min_median_ms"], rel=0.3)

    per_row = coefs["MUL_broadcast/fp32"]["rows"]
    # local corrections left out: the price is then the linear one, rows times their coefficient apart
    profile = {"edgekit_profile": 1, "name": "rows", "description": "", "ram_mb": 1024, "cache_bytes": cache,
               "threads": {"1": {**entry, "residuals": []}}}
    prices = {}
    for label in ("with", "without"):
        if label == "without":
            del coefs["MUL_broadcast/fp32"]["rows"]
        path = tmp_path / f"{label}.json"
        path.write_text(json.dumps(profile))
        prices[label] = estimate(graph, load_profile(path), 1).estimate_ms
    assert prices["with"] - prices["without"] == pytest.approx(4 * 48 * 48 * per_row * 1e3, rel=1e-6)


# -- kernel models (edgekit.profile.opmodel) ----------------------------------------------------------

def _tiled_seconds(op_type: str, d: tuple, tiles: tuple, per_mac: float, fixed: float) -> float:
    """A made-up device whose kernel computes MR x NR output tiles over K padded to KR per tap."""
    m, n, k, taps, _ = d
    mr, nr, kr = tiles
    if op_type != "FULLY_CONNECTED":
        k = taps * math.ceil(k / taps / kr) * kr
    return fixed + per_mac * math.ceil(m / mr) * mr * math.ceil(n / nr) * nr * k


@pytest.mark.parametrize("precision, tiles, line_misses", [("int8", (16, 64, 64), True), ("fp32", (7, 32, 1), True),
                                                         ("fp32", (4, 8, 1), False)])
def test_kernel_model_finds_the_tile_sizes_a_device_computes_in(precision, tiles, line_misses):
    """Fitted on the grid's own convolution shapes timed as a tiled kernel would run them, the model
    names the tiles and then prices shapes it never saw exactly; a per-MAC line cannot (a 3-channel
    stem at 16 x 64 x 64 tiles costs what a 32-channel layer does)."""
    from edgekit.profile import opmodel
    from edgekit.profile.probes import GRID

    def dims(p):
        g = read_graph(build(p))
        return opmodel.dims(g, g.ops[0])

    probes = [p for p in GRID if p.op == "CONV_2D" and p.kernel > 1 and p.precision == precision]
    shapes = [dims(p) for p in probes]
    seconds = [_tiled_seconds("CONV_2D", d, tiles, 2e-12, 2e-6) for d in shapes]
    entry = opmodel.fit_kind("CONV_2D", precision, shapes, seconds)
    assert tuple(entry["tiles"]) == tiles
    unseen = [Probe("u", "CONV_2D", precision, (1, 20, 20, 3), cout=24, kernel=3, stride=2),
              Probe("u", "CONV_2D", precision, (1, 9, 9, 100), cout=70, kernel=3),
              Probe("u", "CONV_2D", precision, (1, 5, 5, 300), cout=130, kernel=5),
              Probe("u", "CONV_2D", precision, (1, 3, 3, 100), cout=9, kernel=3)]
    for p in unseen:
        d = dims(p)
        truth = _tiled_seconds("CONV_2D", d, tiles, 2e-12, 2e-6)
        assert opmodel.predict(entry, "CONV_2D", precision, d) == pytest.approx(truth, rel=0.02)
    if not line_misses:  # small tiles (a NEON-like 4 x 8): the line's other terms come close enough
        return
    # with large tiles, the straight per-MAC line (1 x 1 x 1 tiles) misses the same unseen shapes by far more
    line = {**opmodel.fit_kind("CONV_2D", precision, shapes, seconds), "tiles": [1, 1, 1], "points": []}
    line["coefficients"] = list(costmodel.nnls_relative(
        np.array([opmodel.features("CONV_2D", precision, d, (1, 1, 1)) for d in shapes]), np.array(seconds)))
    misses = [abs(opmodel.predict(line, "CONV_2D", precision, dims(p)) / _tiled_seconds("CONV_2D", dims(p), tiles, 2e-12, 2e-6) - 1)
              for p in unseen]
    assert max(misses) > 0.1  # the tiled model: within 2 % on each (above)


def _fitted_conv_device(tiles: tuple, wide: tuple) -> tuple:
    """The fp32 kxk convolution kernel model fitted on the grid's shapes as timed by a device whose
    kernels have these (MR, NR, KR) tiles and this (width, cost per column) wider kernel; with the
    device's own price of a 3x3 28x28x32 layer at each output channel count: (entry, price, device)."""
    from edgekit.profile import opmodel
    from edgekit.profile.probes import GRID

    def dims(p):
        g = read_graph(build(p))
        return opmodel.dims(g, g.ops[0])

    def device(d):
        return float(np.dot([2e-6, 2e-12, 0, 0, 0], opmodel.features("CONV_2D", "fp32", d, tiles, wide)))

    shapes = [dims(p) for p in GRID if p.op == "CONV_2D" and p.kernel > 1 and p.precision == "fp32"]
    entry = opmodel.fit_kind("CONV_2D", "fp32", shapes, [device(d) for d in shapes])
    layer = {c: dims(Probe("u", "CONV_2D", "fp32", (1, 28, 28, 32), cout=c, kernel=3)) for c in (8, 16, 24, 32, 40, 64, 96)}
    price = {c: opmodel.predict(entry, "CONV_2D", "fp32", d) for c, d in layer.items()}
    return entry, price, {c: device(d) for c, d in layer.items()}


def test_kernel_model_finds_a_wider_kernel_for_wide_layers():
    """A device like the first host's fp32 convolutions: a 16-wide kernel below 32 output channels, a
    32-wide one from 32 on whose columns cost 0.65x (measured: 8/16 channels 75 us, 24: 151, 32: 97,
    64: 197). The fit names both widths, so 24 channels cost more than 32, as on the device, and
    shapes it never saw are priced within 2 %."""
    entry, price, device = _fitted_conv_device((7, 16, 1), (32, 0.65))
    assert tuple(entry["tiles"]) == (7, 16, 1) and entry["wide"] == [32, 0.65]
    assert price[8] == pytest.approx(price[16], rel=0.02) and price[24] > 1.4 * price[32]
    for c in price:
        assert price[c] == pytest.approx(device[c], rel=0.02), c


def _fitted_depthwise_device(precision: str, tiles: tuple, remainder: tuple | None, tap_floor: int | None = None,
                             kernel: int = 5, filter_spill: tuple | None = None, channels: tuple = ()) -> tuple:
    """The depthwise kernel model fitted on the grid's depthwise shapes (its odd-channel and 1x1
    probes included) as timed by a device with these tiles, leftover-channel pass, tap floor and filter
    spill; with the device's own price of kernel x kernel 24x24 layers at `channels` (8-32 unless given):
    (entry, price, device)."""
    from edgekit.profile import opmodel
    from edgekit.profile.probes import GRID

    def dims(p):
        g = read_graph(build(p))
        return opmodel.dims(g, g.ops[0])

    def device(d):
        return float(np.dot([2e-6, 2e-11, 0, 0, 0], opmodel.features("DEPTHWISE_CONV_2D", precision, d, tiles,
                                                                     remainder=remainder, tap_floor=tap_floor,
                                                                     filter_spill=filter_spill)))

    shapes = [dims(p) for p in GRID if p.op == "DEPTHWISE_CONV_2D" and p.precision == precision]
    entry = opmodel.fit_kind("DEPTHWISE_CONV_2D", precision, shapes, [device(d) for d in shapes])
    layer = {c: dims(Probe("u", "DEPTHWISE_CONV_2D", precision, (1, 24, 24, c), kernel=kernel))
             for c in channels or (8, 11, 12, 16, 20, 22, 24, 28, 32)}
    return entry, {c: opmodel.predict(entry, "DEPTHWISE_CONV_2D", precision, d) for c, d in layer.items()}, \
        {c: device(d) for c, d in layer.items()}


def test_kernel_model_finds_a_dear_pass_for_leftover_depthwise_channels():
    """A device like this Zen 1's fp32 depthwise convolutions: 16-wide tiles, and the channels past the
    last 8 in a masked pass costing 2.5 tiles (measured, 5x5 24x24: 8 channels 36 us, 16: 39, 11 or
    12: 87, 22: 91, 28: 114). The grid's odd-channel probes show it and the fit names it, so 11
    channels cost more than 16, as on the device; a device without it (int8 here, 8 at a time) gets
    no such pass and 11 channels cost what 16 do."""
    entry, price, device = _fitted_depthwise_device("fp32", (1, 16, 1), (8, 2.5))
    assert tuple(entry["tiles"]) == (1, 16, 1) and entry["remainder"] == [8, 2.5]
    assert price[11] > 1.5 * price[16] and price[24] == pytest.approx(price[32], rel=0.02)
    for c in price:
        assert price[c] == pytest.approx(device[c], rel=0.02), c
    entry, price, device = _fitted_depthwise_device("int8", (1, 8, 1), None)
    assert "remainder" not in entry and price[11] == pytest.approx(price[16], rel=0.02)


def test_kernel_model_prices_a_1x1_depthwise_layer_at_the_kernels_fewest_taps():
    """A device like this Zen 4's fp32 depthwise convolutions: a 1x1 filter runs through a kernel of a
    few taps (measured, invoke alone: 1x1 depthwise layers 0.29-0.40 of a 3x3 one of the same shape).
    The grid's 1x1 probes show it and the fit names the floor, so a 1x1 layer costs what the device's
    kernel takes, not a ninth of a 3x3 one; a device with a one-tap path gets no floor."""
    entry, price, device = _fitted_depthwise_device("fp32", (1, 16, 1), None, tap_floor=4, kernel=1)
    assert entry["tap_floor"] == 4
    for c in price:
        assert price[c] == pytest.approx(device[c], rel=0.02), c
    _, price_3x3, _ = _fitted_depthwise_device("fp32", (1, 16, 1), None, tap_floor=4, kernel=3)
    assert price[32] > 0.35 * price_3x3[32]
    entry, price, device = _fitted_depthwise_device("int8", (1, 8, 1), None, kernel=1)
    assert "tap_floor" not in entry
    for c in price:
        assert price[c] == pytest.approx(device[c], rel=0.02), c


def test_kernel_model_prices_wide_depthwise_filters_past_the_l1_dearer():
    """A device like this Zen 4's fp32 depthwise convolutions: past a 16 KB filter each multiply-accumulate
    costs 1.5x (measured, 3x3: 0.044-0.048 ns per MAC to 384 channels, 0.054-0.078 from 480). The grid's
    wide depthwise probes show it and the fit names it, so a 768-channel 3x3 layer is priced as the
    device runs it; a device without it (int8) gets none."""
    entry, price, device = _fitted_depthwise_device("fp32", (1, 16, 1), None, filter_spill=(16384, 1.5), kernel=3,
                                                    channels=(256, 384, 480, 768))
    assert entry["filter_spill"] == [16384, 1.5] and "tap_floor" not in entry
    assert price[480] / price[384] > 1.5 * 480 / 384 * 0.9
    for c in price:
        assert price[c] == pytest.approx(device[c], rel=0.02), c
    entry, _, _ = _fitted_depthwise_device("int8", (1, 8, 1), None, kernel=3, channels=(384, 768))
    assert "filter_spill" not in entry


def test_kernel_model_finds_a_narrow_kernel_for_narrow_layers():
    """A device like a Zen 1's fp32 convolutions: an 8-wide kernel up to 8 output channels, a 16-wide
    one above whose columns cost 1.25x (measured, 3x3 28x28x32: 8 channels 123 us, 16: 250, 24 and 32:
    503, 64: 996). The fit finds the 16-wide kernel among the wider ones, so 24 channels cost what 32
    do - three 8-wide tiles priced MediaPipe's 24-channel face detector stem at 0.68x its time."""
    entry, price, device = _fitted_conv_device((4, 8, 1), (16, 1.25))
    assert tuple(entry["tiles"]) == (4, 8, 1) and entry["wide"] == [16, 1.25]
    assert price[24] == pytest.approx(price[32], rel=0.02) and price[16] > 1.5 * price[8]
    for c in price:
        assert price[c] == pytest.approx(device[c], rel=0.02), c


def test_quick_profile_models_kernels_from_its_grid(quick_profile, artifacts):
    """The kernel grid is timed at one thread only and gives every modelled kind a model; those kinds'
    suite coefficients are one factor on the model's time, and an estimate's convolutions cost exactly
    that factor times the kernel model's price of their shape."""
    from edgekit.emulator import estimate
    from edgekit.profile.device import load_profile

    data = json.loads(quick_profile.read_text())
    grid = [m for m in data["measurements"] if m["probe"].startswith("grid_")]
    assert grid and {m["threads"] for m in grid} == {1}
    entry = data["threads"]["1"]
    models, coefs = entry["op_models"], entry["coefficients"]
    assert {"CONV_2D/fp32", "CONV_2D/int8", "CONV_2D_1x1/int8", "DEPTHWISE_CONV_2D/fp32"} <= set(models)
    assert all(set(c) == {"modelled"} for k, c in coefs.items() if costmodel.GRID_MARK in k)
    assert all(models[k]["tiles"][0] >= 1 and len(models[k]["points"]) >= 6 for k in models)
    graph = read_graph((artifacts / "digits_cnn_int8.tflite").read_bytes())
    est = estimate(graph, load_profile(quick_profile), 1)
    convs = [op for op in graph.ops if op.type == "CONV_2D"]
    assert convs
    for op in convs:
        k = costmodel.kind(graph, op, models)
        assert costmodel.GRID_MARK in k
        want = coefs[k]["modelled"] * costmodel.modelled_seconds(graph, op, models) * 1e3
        assert est.ops[op.index].ms == pytest.approx(want, rel=1e-9) and want > 0


def test_profile_without_kernel_models_keeps_the_linear_fit(artifacts, tmp_path):
    """A profile written before the kernel grid (or from probes without it) has no op_models: its
    convolutions keep the per-kind linear fit, and emulate reads it as before."""
    from edgekit.profile.run import build_profile, measure

    probes = [p for p in suite(quick=True) if not p.grid]
    profile = build_profile("old", len(probes), measure(probes, [1], 0.05, rounds=2), "min_median", 1.0)
    assert "op_models" not in profile["threads"]["1"]
    assert "CONV_2D/int8" in profile["threads"]["1"]["coefficients"]
    assert not any(costmodel.GRID_MARK in k for k in profile["threads"]["1"]["coefficients"])
    old = tmp_path / "old.json"
    old.write_text(json.dumps(profile))
    result = run_cli("emulate", artifacts / "digits_cnn_int8.tflite", "--target", old, "--json")
    assert result.exit_code == 0, result.stderr
    [est] = json.loads(result.stdout)
    assert [o for o in est["ops"] if o["type"] == "CONV_2D" and o["ms"] > 0]


def test_the_fit_finds_where_activations_spill_on_this_device():
    """Spill rules: every op over half the cache pays for all the bytes it moves, or ops pay for the
    bytes beyond the cache or beyond twice it (a 1-pixel pad of 64x64x24 fp32 moves 0.8 MB: over half
    of a 512 KB L2 and over it, not over twice it; one of 14x14x256, 0.46 MB, only over half). The
    one-thread fit keeps the rule its probes miss least: given probe times that follow one rule, it
    finds that rule; a profile without a rule (written before) takes the first."""
    from edgekit.profile import run

    cache = 512 * 1024
    pads = [read_graph(build(Probe("p", "PAD", "fp32", shape))) for shape in ((1, 64, 64, 24), (1, 14, 14, 256))]
    for g in pads:
        del g.ops[1:]  # the first pad of each chain alone
    moved = [g.ops[0].bytes_in + g.ops[0].bytes_out for g in pads]
    covered = {0: (0.0, 0.0)}
    by_rule = [[costmodel.spilled_bytes(g, cache, covered, rule) for g in pads] for rule in costmodel.SPILL_RULES]
    assert by_rule == [moved, [moved[0] - cache, 0.0], [0.0, 0.0]]
    assert costmodel.spilled_bytes(pads[0], cache, covered) == moved[0]  # no rule: the first

    # the broadcast MULs left out: they also pay per row of channels, which this made-up device does not,
    # and a rows term free to take the spill of the two narrow ones would stand in for the rule
    probes = [p for p in SUITE if p.precision == "fp32" and not p.grid and not p.broadcast
              and p.op in ("ADD", "MUL", "PAD", "HARD_SWISH", "LOGISTIC", "CONCATENATION", "RESHAPE")]
    graphs = [read_graph(build(p)) for p in probes]
    for truth in costmodel.SPILL_RULES:
        samples, secs = [], []
        for p, g in zip(probes, graphs):
            values = sum(op.elements for op in g.ops if not costmodel.free(g, op))
            spilled = costmodel.global_features(g, cache, spill=truth)[costmodel.GLOBAL_FEATURES.index("spilled_activation_bytes")]
            samples.append({"probe": p.name, "graph": g, "cache_bytes": cache})
            secs.append(2e-6 + 1e-10 * values + 3e-10 * spilled)
        assert run.fit_spill(samples, secs, [1.0] * len(secs), None, None)[0] == truth


def test_kernel_models_own_the_filter_and_activation_sizes_the_grid_timed():
    """A 1 MB filter over 14x14 pixels overflows half of a 1 MB cache and is charged a sweep per row
    of tiles; once the kernel grid (filters up to 1.5 MB, activations up to 4 MB) models the kind,
    its price holds that, so only larger filters and activations are still charged model-wide."""
    names = costmodel.GLOBAL_FEATURES
    models = {"CONV_2D_1x1/fp32": {}}  # which kinds are modelled is all global_features asks

    def swept_and_spilled(p: Probe, op_models=None):
        glob = dict(zip(names, costmodel.global_features(read_graph(build(p)), 1 << 20, None, op_models)))
        return glob["swept_weight_bytes"], glob["spilled_activation_bytes"]

    within = Probe("c", "CONV_2D", "fp32", (1, 14, 14, 512), cout=512)         # 1.0 MB filter
    beyond = Probe("c", "CONV_2D", "fp32", (1, 14, 14, 512), cout=1024)        # 2.1 MB filter
    wide = Probe("c", "CONV_2D", "fp32", (1, 112, 112, 32), cout=64)           # 4.8 MB in + out
    assert swept_and_spilled(within)[0] > 0 and swept_and_spilled(within, models)[0] == 0
    assert swept_and_spilled(beyond, models)[0] == swept_and_spilled(beyond)[0] > 0
    assert swept_and_spilled(wide, models)[1] == swept_and_spilled(wide)[1] > 0
    narrow = Probe("c", "CONV_2D", "fp32", (1, 56, 56, 32), cout=64)           # 1.2 MB in + out
    assert swept_and_spilled(narrow)[1] > 0 and swept_and_spilled(narrow, models)[1] == 0


def test_a_network_can_be_timed_twice_in_the_same_rounds(artifacts):
    """benchmarks/profile_accuracy.py times each unseen network a second time, first in every round
    where its scored timing comes last (measure's lead and extra): both come back, each with a block
    per round, and on a 1-thread CPU-clock timing of the same model they agree."""
    from edgekit.profile.run import measure

    model = artifacts / "digits_cnn_int8.tflite"
    probes = [p for p in suite(quick=True) if p.name.startswith("io_")]
    samples, refs = measure(probes, [1], 0.05, rounds=3, extra={"digits": (model, 0.15)},
                            lead={"digits again": (model, 0.15)})
    assert {s["probe"] for s in samples} == {p.name for p in probes}
    assert set(refs) == {("digits", 1), ("digits again", 1)}
    first, again = refs[("digits", 1)], refs[("digits again", 1)]
    assert first["blocks"] == again["blocks"] == 3
    assert again["min_median_ms"] == pytest.approx(first["min_median_ms"], rel=0.5)


def test_chained_blocks_keep_their_shape_and_run():
    """benchmarks/profile_chains.py's chains: a block chained 4 and 16 deep keeps the tensor's shape
    (so the chain is the block's ops times the length, nothing else), the runtime runs both in both
    precisions, and an estimate prices 16 blocks dearer than 4."""
    from edgekit.emulator import estimate, load_device

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from profile_chains import BLOCKS, LENGTHS, chain

    ops_per_block = {"conv1x1": 1, "dw3x3": 1, "conv1x1+dw3x3": 2, "add": 1, "mul": 1, "logistic": 1,
                     "hard_swish": 1, "mean*input": 2, "excitation": 5, "scale": 1,
                     "dw3x3+mean*input": 3, "dw3x3+scale": 2}
    assert set(ops_per_block) == set(BLOCKS)
    device = load_device("rpi4")
    for name, block in BLOCKS.items():
        for precision in ("fp32", "int8"):
            estimates = []
            for length in LENGTHS:
                data = chain(precision, (1, 6, 6, 32), block, length)
                graph = read_graph(data)
                assert len(graph.ops) == ops_per_block[name] * length, (name, precision)
                assert graph.tensors[graph.outputs[0]].shape == (1, 6, 6, 32)
                model = Model(data, name, threads=1)
                out = model.run([np.random.default_rng(0).random(i.shape, np.float32) for i in model.inputs])[0]
                assert out.shape == (1, 6, 6, 32) and np.isfinite(out).all(), (name, precision)
                estimates.append(estimate(graph, device, 1).estimate_ms)
            assert estimates[1] > estimates[0], (name, precision)
