"""Project a .tflite's latency and memory onto a target CPU, from its graph alone.

Model (explainable by design, a few numbers per core type, the rest global):
  per op, on one core:  compute = work / (clock * peak(core, precision) * core_eff * class_eff)
                        memory  = bytes moved / (DRAM bandwidth * bw_eff)
  with n threads:       compute * (s + (1 - s) * r)   where r = fastest core rate / summed rate
                        of the n fastest cores and s is a serial fraction
  op time = max(compute, memory) + a fixed per-op dispatch cost (cycles / clock)
work is multiply-accumulates for conv / depthwise / fully-connected ops (class_eff differs per
class) and values processed for everything else. peak is the core's nominal fp32 SIMD MACs per
cycle, times an int8 gain (with or without sdot) for integer ops. core_eff, class_eff and the
globals are fitted to published measurements by benchmarks/emulator_accuracy.py and stored in
devices/calibration.json together with the error band the leave-one-device-out check measured.
Memory = file (mmapped weights) + repacked weights (XNNPACK packs fp32/fp16/int8 kernels) +
activation arena (planned like the runtime's) + the runtime's own baseline.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import InputError
from .tflite.arena import lifetimes, plan_arena
from .tflite.graph import Graph, Op

# RSS of python (10.6 MB) + numpy (15.3) + edgekit (1.8) + the LiteRT interpreter and XNNPACK once a
# model runs (~14), measured on this x86-64 host; an aarch64 Pi process is of the same order.
RUNTIME_BASELINE_MB = 42.0


@dataclass(frozen=True)
class CoreType:
    name: str
    fp32_macs_per_cycle: float
    dotprod: bool
    efficiency: float
    calibrated: bool


@dataclass(frozen=True)
class Cluster:
    count: int
    core: CoreType
    clock_ghz: float


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    clusters: tuple[Cluster, ...]
    dram_bw_gbs: float
    ram_mb: float
    source: str

    @property
    def cores(self) -> int:
        return sum(c.count for c in self.clusters)

    def fastest(self, n: int) -> list[Cluster]:
        """The n fastest cores, as single-core clusters, fastest first (how schedulers place threads)."""
        ranked = sorted(self.clusters, key=lambda c: -c.clock_ghz * c.core.fp32_macs_per_cycle * c.core.efficiency)
        cores = [Cluster(1, c.core, c.clock_ghz) for c in ranked for _ in range(c.count)]
        return cores[:n]


@dataclass
class OpEstimate:
    index: int
    type: str
    precision: str
    ms: float
    bound: str  # compute | memory | overhead


@dataclass
class Estimate:
    target: str
    threads: int
    estimate_ms: float
    low_ms: float
    high_ms: float
    memory_mb: float
    memory_breakdown_mb: dict
    fits: bool
    ops: list[OpEstimate]
    not_costed: list[str]
    method: str = field(default="per-op roofline, fitted to published latencies (see edgekit.emulator)")

    def to_dict(self, top: int | None = None) -> dict:
        ops = sorted(self.ops, key=lambda o: -o.ms)[:top] if top else self.ops
        return {"target": self.target, "threads": self.threads, "estimate_ms": round(self.estimate_ms, 3),
                "low_ms": round(self.low_ms, 3), "high_ms": round(self.high_ms, 3),
                "memory_mb": round(self.memory_mb, 2), "memory_breakdown_mb": self.memory_breakdown_mb,
                "fits": self.fits, "not_costed": self.not_costed, "method": self.method,
                "ops": [{"index": o.index, "type": o.type, "precision": o.precision, "ms": round(o.ms, 4),
                         "bound": o.bound} for o in ops]}


def _read_json(name: str) -> dict:
    return json.loads(resources.files("edgekit").joinpath("devices", name).read_text())


@lru_cache(maxsize=None)
def calibration() -> dict:
    return _read_json("calibration.json")


@lru_cache(maxsize=None)
def core_types() -> dict[str, CoreType]:
    raw = {k: v for k, v in _read_json("core_types.json").items() if not k.startswith("_")}
    fitted = calibration().get("core_efficiency", {})
    default = sorted(fitted.values())[len(fitted) // 2] if fitted else 0.5
    return {name: CoreType(name, spec["fp32_macs_per_cycle"], spec["dotprod"], fitted.get(name, default),
                           name in fitted) for name, spec in raw.items()}


def core_rows() -> dict[str, int]:
    """Published rows each fitted core type was fitted on (benchmarks/emulator_accuracy.py --write)."""
    return calibration().get("fit_summary", {}).get("core_rows", {})


def device_names() -> list[str]:
    files = resources.files("edgekit").joinpath("devices").iterdir()
    skip = {"core_types.json", "calibration.json"}
    return sorted(f.name[:-5] for f in files if f.name.endswith(".json") and f.name not in skip)


def load_device(name: str) -> Device:
    """A built-in profile by name, or a measured profile JSON (edgekit profile run) by path."""
    from .profile.device import is_profile_path, load_profile

    if is_profile_path(name):
        return load_profile(name)
    known = device_names()
    if name not in known:
        raise InputError(f"unknown target {name!r}; known targets: {', '.join(known)} (edgekit targets)")
    d = _read_json(f"{name}.json")
    types = core_types()
    clusters = tuple(Cluster(c["count"], types[c["core"]], c["clock_ghz"]) for c in d["clusters"])
    return Device(d["name"], d["description"], clusters, d["dram_bw_gbs"], d["ram_mb"], d["source"])


# int8 ops XNNPACK does not take (ai-edge-litert 2.x): they run on TFLite's reference kernels, measured
# on this host by `edgekit profile run` at 30-100x the per-value cost of their delegated fp32 form
# (HARD_SWISH int8 3.1 ns/value vs 0.05; PRELU int8 7 ns vs 0.07). MobileNetV3 int8 pays this.
REFERENCE_INT8_OPS = {"HARD_SWISH": 60.0, "PRELU": 60.0}


def _peak_macs_per_cycle(core: CoreType, precision: str, p: dict, op_class: str = "conv") -> float:
    base = core.fp32_macs_per_cycle
    if precision == "int8":
        # XNNPACK's QS8 depthwise kernels widen to 16/32 bits per tap: their gain over fp32 is far
        # below the GEMM's (sdot or not), so depthwise gets its own factor when the fit has one
        if op_class == "dwconv" and "int8_gain_dw" in p:
            return base * p["int8_gain_dw"]
        return base * (p["int8_gain_dot"] if core.dotprod else p["int8_gain_nodot"])
    if precision == "hybrid":
        return base * p["hybrid_factor"]
    if precision == "int16":
        return base * p["int16_factor"]
    return base


def op_seconds(op: Op, cores: list[Cluster], device: Device, p: dict) -> tuple[float, str]:
    """Seconds for one op on the given cores (fastest first) and what bounds it."""
    if not op.costed or op.op_class == "view":
        return 0.0, "overhead"
    lead = cores[0]
    rates = [c.clock_ghz * 1e9 * _peak_macs_per_cycle(c.core, op.precision, p, op.op_class) * c.core.efficiency
             for c in cores]
    if op.op_class == "elementwise":
        work, class_eff = op.elements, p["elementwise_values_per_mac"]
        if op.precision == "int8" and op.type in REFERENCE_INT8_OPS:
            class_eff /= REFERENCE_INT8_OPS[op.type] * p.get("int8_gain_nodot", 1.0)
    else:
        work, class_eff = op.macs, p["class_efficiency"][op.op_class]
    single = work / (rates[0] * class_eff) if work else 0.0
    share = rates[0] / sum(rates)
    compute = single * (p["serial_fraction"] + (1 - p["serial_fraction"]) * share)
    memory = (op.bytes_in + op.bytes_out + op.bytes_weights) / (device.dram_bw_gbs * 1e9 * p["bandwidth_efficiency"])
    overhead = p["op_overhead_cycles"] / (lead.clock_ghz * 1e9)
    bound = "compute" if compute >= memory else "memory"
    if overhead > max(compute, memory):
        bound = "overhead"
    return max(compute, memory) + overhead, bound


def check_threads(device: Device, threads: int) -> None:
    if hasattr(device, "check_threads"):  # a measured profile: only the thread counts it timed
        return device.check_threads(threads)
    if threads < 1 or threads > device.cores:
        raise InputError(f"--threads expects 1..{device.cores} for {device.name} ({device.cores} cores), got {threads}")


def op_estimates(graph: Graph, device: Device, threads: int, params: dict) -> list[OpEstimate]:
    cores = device.fastest(threads)
    out = []
    for op in graph.ops:
        seconds, bound = op_seconds(op, cores, device, params)
        out.append(OpEstimate(op.index, op.type, op.precision, seconds * 1e3, bound))
    return out


def latency_ms(graph: Graph, device: Device, threads: int, legacy_runtime: bool, params: dict) -> float:
    """The point estimate alone (what the calibration fit evaluates thousands of times). Rows measured
    on the pre-XNNPACK runtime (2019-2020 docs) scale by legacy_runtime_factor, and their int8 ops by
    legacy_int8_factor on top: gemmlowp/ruy int8 and the old float kernels were not slower alike."""
    return _total_ms(op_estimates(graph, _as_run_by(device, legacy_runtime), threads, params), legacy_runtime, params)


def _as_run_by(device: Device, legacy_runtime: bool) -> Device:
    """The device as the runtime's kernels see it. The pre-XNNPACK int8 kernels (gemmlowp, early ruy)
    had no sdot paths: on a dot-product core they ran the widening-multiply kernels, so legacy rows
    take the no-sdot int8 gain whatever the core has."""
    if not legacy_runtime or not any(c.core.dotprod for c in device.clusters):
        return device
    clusters = tuple(replace(c, core=replace(c.core, dotprod=False)) for c in device.clusters)
    return replace(device, clusters=clusters)


def _total_ms(ops: list[OpEstimate], legacy_runtime: bool, params: dict) -> float:
    if not legacy_runtime:
        return sum(o.ms for o in ops)
    int8 = params.get("legacy_int8_factor", 1.0)
    return params["legacy_runtime_factor"] * sum(o.ms * (int8 if o.precision == "int8" else 1.0) for o in ops)


# The thread count an estimate assumes when the user names none. Four, because that is how the
# published latencies the emulator is checked against were mostly measured (31 of the 71 rows of
# device-data/published_latency.csv use 4 threads, TFLite benchmark_model's usual phone setting),
# because Raspberry Pis have four cores, and because on big.LITTLE phones threads past the big and
# mid cores land on little ones and slow the whole inference down. Fewer on smaller devices.
DEFAULT_MAX_THREADS = 4


def default_threads(cores: int) -> int:
    return min(DEFAULT_MAX_THREADS, cores)


def estimate_for(path, devices: list[Device], threads: int | None = None) -> tuple[Graph, list[Estimate]]:
    """The graph of the .tflite at `path` and one estimate per device, each at `threads` or the
    device's default (what `edgekit emulate`, bundle and report show)."""
    from .artifact import tflite_bytes
    from .tflite.graph import read_graph

    data = tflite_bytes(path, "emulation")
    graph = read_graph(data, Path(path).name)
    return graph, [estimate(graph, d, threads or default_threads(d.cores)) for d in devices]


def estimate(graph: Graph, device: Device, threads: int, legacy_runtime: bool = False,
             params: dict | None = None) -> Estimate:
    check_threads(device, threads)
    if hasattr(device, "measured_threads"):
        from .profile.device import estimate_measured

        return estimate_measured(graph, device, threads)
    p = params or calibration()["params"]
    ops = op_estimates(graph, _as_run_by(device, legacy_runtime), threads, p)
    total = _total_ms(ops, legacy_runtime, p)
    band = calibration().get("error_band_log", {"low": -0.4, "high": 0.4})
    memory = memory_mb(graph)
    return Estimate(device.name, threads, total, total * math.exp(band["low"]), total * math.exp(band["high"]),
                    memory["total"], memory, memory["total"] <= device.ram_mb * 0.5, ops, graph.uncosted)


def memory_mb(graph: Graph) -> dict:
    arena, _ = plan_arena(lifetimes(graph))
    # XNNPACK repacks the weights of the ops it runs into its own layout; fp16 weights are
    # dequantized to fp32 first, so the packed copy is twice their size in the file.
    packed = 0
    for op in graph.ops:
        if op.op_class in ("conv", "dwconv", "fc"):
            for t in op.inputs:
                tensor = graph.tensors[t]
                if tensor.constant:
                    packed += tensor.nbytes * (2 if tensor.dtype == "float16" else 1)
    mb = 1024 * 1024
    parts = {"file": graph.size_bytes / mb, "packed_weights": packed / mb, "arena": arena / mb,
             "runtime": RUNTIME_BASELINE_MB}
    parts = {k: round(v, 3) for k, v in parts.items()}
    parts["total"] = round(sum(parts.values()), 3)
    return parts
