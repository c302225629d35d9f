"""`edgekit profile run`: time the probe suite on this device and write a measured device profile.

Each probe is loaded as `edgekit bench` loads it (same runtime, threads and inputs) and timed in
blocks interleaved with every other probe (edgekit.profile.timing: 1-thread runs pinned to a core,
the lowest block median kept), and edgekit.profile.costmodel is fitted per thread count. The error
band stored with the profile is the spread of leave-one-probe-out errors, so it describes ops the
fit did not see rather than how well it memorised the probes.
"""
from __future__ import annotations

import datetime
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..tflite.graph import read_graph
from . import costmodel, opmodel, timing
from .probes import Probe, build, is_grid_invoke, is_stream, suite, weight_bytes

PROFILE_FORMAT = 1


def _ram_mb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            return int(fh.readline().split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return 1024.0


def cache_bytes() -> int:
    """The per-core level-2 cache (Linux sysfs): what a layer's weights must fit to stay cached
    between inferences. Shared last-level caches of servers are left out on purpose: other
    tenants own most of them. Elsewhere, 1 MB (a Raspberry Pi 4's L2)."""
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in sorted(base.glob("index*")):
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                return int(size[:-1]) * (1024 if size.endswith("K") else 1024 * 1024) if size[-1] in "KM" else int(size)
    except (OSError, ValueError):
        pass
    return costmodel.DEFAULT_CACHE_BYTES


# The whole synthetic networks (ops in context: one layer's output is the next one's input, earlier
# weights evicted) count this many single-op probes each in the fit: what `emulate` predicts is networks.
# Chosen on this host (1 thread, at load 10-14): 1 -> 10 moved unseen networks within +-10 % from 45 %
# to 64 %, held-out probes 11.9 % -> 10.9 % (so it was looked at with the check networks: say so).
NETWORK_WEIGHT = 10.0
ROUNDS = 3  # blocks per probe and thread count, spread over the run (edgekit.profile.timing)
GRID_SECONDS = 0.12  # per kernel-grid probe, all rounds: 482 of them (~60 s here)


def interleaved(items: list[tuple], rounds: int = ROUNDS,
                progress: Callable[[str], None] | None = None) -> dict[tuple[str, int], dict]:
    """(name, path, threads, seconds[, invoke_only]) -> timing stats, every model timed in `rounds` blocks of
    seconds/rounds, round-robin: a burst of load on the host lands on one block of each model rather
    than on all blocks of a few. All models stay loaded, so a block costs no reload or re-warm-up.
    Each entry's "seconds" is the wall time its loading, warm-up and blocks took."""
    core = timing.pin_core()
    timers, spent, budget = {}, {}, {}
    for i, (name, path, n, seconds, *invoke_only) in enumerate(items):
        if progress and i % 40 == 0:
            progress(f"loading {i + 1}/{len(items)}")
        start = time.perf_counter()
        timers[(name, n)] = timing.Timed(path, n, core, invoke_only=bool(invoke_only and invoke_only[0]))
        spent[(name, n)], budget[(name, n)] = time.perf_counter() - start, seconds
    for r in range(rounds):
        if progress:
            progress(f"round {r + 1}/{rounds}")
        for key, t in timers.items():
            start = time.perf_counter()
            t.block(budget[key] / rounds)
            spent[key] += time.perf_counter() - start
    stats = {key: {**t.stats(), "seconds": spent[key]} for key, t in timers.items()}
    for t in timers.values():
        t.close()
    return stats


def measure(probes: list[Probe], threads: list[int], seconds_per_probe: float,
            progress: Callable[[str], None] | None = None, rounds: int = ROUNDS,
            extra: dict[str, tuple[Path, float]] | None = None,
            lead: dict[str, tuple[Path, float]] | None = None) -> list[dict] | tuple[list[dict], dict]:
    """min-median, p50 and p10 milliseconds of every probe at every thread count (kernel-grid probes:
    at one thread, by their invoke alone). extra: other models
    (name -> (path, seconds); the benchmarks' reference networks) timed in the same rounds, so the
    host's load drift reaches probes and references alike; their stats come back as a second value.
    lead: more such models, timed first in each round where extra's come last (a network timed in
    both is measured twice, a round's length apart: how repeatable the host's timing is)."""
    out, cache = [], cache_bytes()
    with tempfile.TemporaryDirectory(prefix="edgekit-probes-") as tmp:
        paths = {}
        for p in probes:
            paths[p.name] = Path(tmp) / f"{p.name}.tflite"
            paths[p.name].write_bytes(build(p))
        # kernel-grid probes at one thread only (more threads scale one-thread op costs), invoke alone
        probe_items = [(p.name, paths[p.name], n, min(GRID_SECONDS, seconds_per_probe) if p.grid else seconds_per_probe, p.grid)
                       for n in threads for p in probes if not p.grid or n == 1]

        def references(models: dict | None) -> list[tuple]:
            return [(name, path, n, seconds) for n in threads for name, (path, seconds) in (models or {}).items()]
        stats = interleaved(references(lead) + probe_items + references(extra), rounds, progress)
        graphs = {p.name: read_graph(paths[p.name].read_bytes()) for p in probes}
        for n in threads:
            for p in probes:
                if (p.name, n) in stats:
                    out.append({"probe": p.name, "threads": n, **stats[(p.name, n)], "graph": graphs[p.name],
                                "cache_bytes": cache, "stream_bytes": weight_bytes(p) if is_stream(p) else None,
                                "grid": p.grid})
    if extra is None and lead is None:
        return out
    references = {**(extra or {}), **(lead or {})}
    return out, {key: v for key, v in stats.items() if key[0] in references}


def stream_curve(samples: list[dict], statistic: str, op_models: dict | None = None) -> list[list[float]]:
    """[footprint bytes, time per byte relative to the smallest footprint] from the streaming probes,
    non-decreasing (a larger footprint never streams faster; a dip is timing noise). With kernel
    models, the time per byte is what the probe took beyond its ops' time with their filters warm in
    the cache (what the kernel model prices): that is the streaming alone, and it grows faster with
    the footprint than the total does (here 18 -> 86 ps/B from 17 to 134 MB, the total 38 -> 106)."""
    def beyond_ops(s: dict) -> float:
        seconds = s[f"{statistic}_ms"] / 1e3
        if op_models:
            graph = s["graph"]
            warm = sum(costmodel.modelled_seconds(graph, op, op_models) for op in graph.ops
                       if not costmodel.free(graph, op) and costmodel.is_modelled(graph, op, op_models))
            seconds = max(seconds - warm, seconds * 0.05)
        return seconds / s["stream_bytes"]
    points = sorted((s["stream_bytes"], beyond_ops(s)) for s in samples if s.get("stream_bytes"))
    curve, worst = [], 1.0
    for size, per_byte in points:
        worst = max(worst, per_byte / points[0][1])
        curve.append([float(size), round(worst, 4)])
    return curve


def fit_threads(samples: list[dict], statistic: str = "min_median", band: bool = True,
                base: dict | None = None) -> dict:
    """Coefficients, local corrections, in-sample and leave-one-probe-out errors for one thread count.
    band=False skips the leave-one-probe-out refits (and with them the band and its errors): what
    benchmarks/profile_refit.py needs to re-score a cost model change in seconds. base: the one-thread
    entry, when this count is more than one and one thread was measured too: the entry then also holds
    "scaling" (edgekit.profile.costmodel.fit_scaled), what estimates at this count use."""
    grid = [s for s in samples if s.get("grid")]
    samples = [s for s in samples if not s.get("grid")]
    op_models = fit_op_models(grid, statistic) if grid else (base or {}).get("op_models")
    # more threads: the one-thread curve (streaming is bound by memory, not by the cores; the kernel
    # model prices one-thread op times)
    curve = base["stream_curve"] if base and op_models else stream_curve(samples, statistic, op_models)
    secs = [s[f"{statistic}_ms"] / 1e3 for s in samples]
    weights = [NETWORK_WEIGHT if s["probe"].startswith("net_") else 1.0 for s in samples]
    if base:
        spill = base.get("spill")
        rows = [costmodel.op_rows(s["graph"], s["cache_bytes"], curve, op_models, spill) for s in samples]
    else:
        spill, rows = fit_spill(samples, secs, weights, curve, op_models)
    plain = [costmodel.terms_of(r) for r in rows]
    # Local corrections only at one thread. With more, a single-op probe also pays the thread pool's
    # per-invoke wake-up and per-op barriers, which an op inside a network mostly does not: the
    # corrections carried that into networks (held-out synthetic networks at 2 threads: median error
    # 18 % with them, 4 % without; development networks 17 % -> 14 %, benchmarks/profile_refit.py)
    corrected = all(s["threads"] == 1 for s in samples)
    scaled = [costmodel.scaled_rows(s["graph"], base, s["cache_bytes"], curve) for s in samples] if base else None
    streaming = [i for i, s in enumerate(samples) if s.get("stream_bytes")]
    tied = fit_tied(scaled, secs, weights, base, streaming) if base else {}

    def per_kind(keep: list[int]) -> dict:
        """The per-kind linear fit and, at one thread, its local corrections."""
        coefs = costmodel.fit([plain[i] for i in keep], [secs[i] for i in keep], [weights[i] for i in keep])
        residuals = costmodel.probe_residuals([rows[i] for i in keep], [secs[i] for i in keep], coefs) if corrected else []
        return {"coefficients": coefs, "residuals": residuals}

    def fitted_model(keep: list[int]) -> dict:
        if scaled is None:
            return per_kind(keep)
        return {"scaling": costmodel.fit_scaled([scaled[i] for i in keep], [secs[i] for i in keep],
                                                [weights[i] for i in keep], tied)}

    def predict(i: int, model: dict, linear_only: bool = False) -> float:
        if scaled is not None:
            return costmodel.scaled_seconds(scaled[i], model["scaling"])
        residuals = [] if linear_only else model["residuals"]
        return costmodel.predict_seconds_terms(costmodel.terms_of(rows[i], residuals), model["coefficients"])

    everyone = list(range(len(rows)))
    # the per-kind fit is stored at every thread count (what profiles before "scaling" estimated with)
    entry = {**per_kind(everyone), "stream_curve": curve, "spill": spill}
    if op_models:  # every entry whose coefficients name @grid kinds carries the models they scale
        entry["op_models"] = op_models
    if scaled is not None:
        entry.update(fitted_model(everyone), base_threads=1, tied=sorted(tied))
    if not band:
        return {**entry, "band_log": {"low": -0.05, "high": 0.05}}
    # in-sample error of the linear part alone: with its local corrections every single-op probe is
    # reproduced exactly, which says nothing
    fitted = np.array([predict(i, entry, linear_only=True) for i in everyone])
    held_out = np.zeros(len(rows))
    for i in everyone:
        # refitting without probe i (coefficients and corrections): what an op shape the suite lacks would see
        held_out[i] = predict(i, fitted_model(everyone[:i] + everyone[i + 1:]))
    log_err = np.log(np.maximum(held_out, 1e-9) / np.array(secs))
    return {**entry,
            "fit_median_abs_error_pct": round(float(np.median(np.abs(fitted / secs - 1))) * 100, 1),
            "leave_one_probe_out_median_abs_error_pct": round(float(np.median(np.abs(np.exp(log_err) - 1))) * 100, 1),
            # a band at least +-5 %: the timing noise of a busy device alone is of that order
            "band_log": {"low": round(min(-0.05, float(np.percentile(log_err, 10))), 4),
                         "high": round(max(0.05, float(np.percentile(log_err, 90))), 4)}}


def median_log_miss(fitted, seconds) -> float:
    """How far estimates miss measurements: the median |log(estimate / measured)| (what fit_spill and
    fit_tied choose by)."""
    return float(np.median(np.abs(np.log(np.maximum(fitted, 1e-12) / np.asarray(seconds)))))


def fit_spill(samples: list[dict], secs: list[float], weights: list[float], curve: list | None,
              op_models: dict | None) -> tuple[dict, list]:
    """The spill rule (edgekit.profile.costmodel.SPILL_RULES) whose per-kind fit misses the probes
    least (median |log error|, in sample), and the samples' rows (costmodel.op_rows) under it; ties
    keep the earlier rule (a suite where no probe's activations exceed the cache fits every rule alike)."""
    # the per-op part of a row does not depend on the rule: computed once, the whole-model part per rule
    ops = [costmodel.costed_op_rows(s["graph"], op_models) for s in samples]
    best = None
    for rule in costmodel.SPILL_RULES:
        rows = [(costmodel.global_features(s["graph"], s["cache_bytes"], curve, op_models, rule), o)
                for s, o in zip(samples, ops)]
        plain = [costmodel.terms_of(r) for r in rows]
        coefs = costmodel.fit(plain, secs, weights)
        fitted = np.array([costmodel.predict_seconds_terms(t, coefs) for t in plain])
        miss = median_log_miss(fitted, secs)
        if best is None or miss < best[0]:
            best = (miss, dict(rule), rows)
    return best[1], best[2]


def fit_tied(rows: list, secs: list[float], weights: list[float], base: dict,
             streaming: list[int]) -> dict[str, float]:
    """At more threads: the one-thread coefficients (costmodel.tied_globals) the scaling keeps rather
    than refits, or none - whichever misses the streaming probes (rows `streaming`) less (median |log
    error|, in sample; a tie refits). Stored runs re-fitted, two threads, mean share of networks within
    +-10 % (development / test): the Xeon of runs 26-36 refits in all 11 runs (74.7 / 58.3 %, tied
    every time 54.5 / 42.2 %); the Zen 1 of runs 37-58 ties in 15 of 22 (refitted every time 86.1 / 71.1 %,
    chosen 87.0 / 74.3 %, tied every time 87.8 / 76.2 %). The streaming probes tell the hosts apart
    (the tied fit misses them by a median 43-71 % there, 6-17 % here) but only just choose on this one."""
    if not streaming:  # no streaming probe timed: nothing to tell them apart
        return {}
    best = None
    for tied in ({}, costmodel.tied_globals(base)):
        scaling = costmodel.fit_scaled(rows, secs, weights, tied)
        miss = median_log_miss([costmodel.scaled_seconds(rows[i], scaling) for i in streaming],
                               [secs[i] for i in streaming])
        if best is None or miss < best[0]:
            best = (miss, tied)
    return best[1]


def fit_op_models(grid: list[dict], statistic: str) -> dict:
    """Kernel models (edgekit.profile.opmodel) per kind from the grid probes' invoke times, less the
    time an invoke of an empty model takes (it is paid once per network, not once per op)."""
    invoke = {s["probe"].rsplit("_", 1)[-1]: s[f"{statistic}_ms"] / 1e3 for s in grid if is_grid_invoke(s["probe"])}
    by_kind: dict[str, tuple[str, list, list]] = {}
    for s in grid:
        ops = [op for op in s["graph"].ops if not costmodel.free(s["graph"], op)]
        if is_grid_invoke(s["probe"]) or len(ops) != 1:
            continue
        op = ops[0]
        name = costmodel.kind(s["graph"], op)
        if name.split("/")[0] not in opmodel.MODELLED:
            continue
        seconds = s[f"{statistic}_ms"] / 1e3 - invoke.get(name.split("/")[-1], 0.0)
        entry = by_kind.setdefault(name, (op.type, [], []))
        entry[1].append(opmodel.dims(s["graph"], op))
        entry[2].append(max(seconds, 1e-7))  # never below 0.1 us: a timing blip, not a free op
    return {name: opmodel.fit_kind(op_type, name.split("/")[-1], shapes, seconds)
            for name, (op_type, shapes, seconds) in sorted(by_kind.items()) if len(shapes) >= opmodel.MIN_PROBES}


STATISTICS = ("min_median", "p50", "p10")


def profile(name: str, threads: list[int], quick: bool = False, seconds_per_probe: float = 0.25,
            progress: Callable[[str], None] | None = None, statistic: str = "min_median") -> dict:
    """statistic: min_median (default) the lowest of ROUNDS block medians, what a device shows when
    nothing else runs (edgekit.profile.timing); p50 the median of all runs, as `edgekit bench` reports
    it, which on a shared machine includes the neighbours; p10 the 10th percentile of all runs."""
    from ..tflite.model import TFLiteModel  # noqa: F401  (fails early, as one line, without a runtime)

    start = time.perf_counter()
    # the kernel grid prices one-thread op costs: without a 1-thread count there is nothing to fit it to
    probes = [p for p in suite(quick, _ram_mb() * 2**20) if not p.grid or 1 in threads]
    samples = measure(probes, threads, seconds_per_probe, progress)
    return build_profile(name, len(probes), samples, statistic, time.perf_counter() - start)


def build_profile(name: str, probes: int, samples: list[dict], statistic: str, seconds: float) -> dict:
    """The profile document from measurements (benchmarks fit both statistics from one run)."""
    threads = sorted({s["threads"] for s in samples})
    per_threads = {}
    for n in threads:  # ascending: more threads are fitted as a scaling of the one-thread costs
        per_threads[str(n)] = fit_threads([s for s in samples if s["threads"] == n], statistic,
                                          base=per_threads.get("1"))
    return {
        "edgekit_profile": PROFILE_FORMAT,
        "name": name,
        "description": f"{platform.node() or 'this device'} ({platform.machine()}, {os.cpu_count()} cores), "
                       f"measured by edgekit profile run",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cores": os.cpu_count() or 1,
        "ram_mb": round(_ram_mb()),
        "cache_bytes": cache_bytes(),
        "probes": probes,
        "statistic": statistic,
        "seconds": round(seconds, 1),
        "threads": per_threads,
        "measurements": [{k: s[k] for k in ("probe", "threads", "min_median_ms", "p50_ms", "p10_ms")}
                         for s in samples],
    }
