"""`edgekit profile run`: time the probe suite on this device and write a measured device profile.

Each probe is timed with edgekit.bench's loop (the same runtime, threads and input handling as
`edgekit bench`), its p50 taken, and edgekit.profile.costmodel fitted per thread count. The error
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

from ..bench import run_bench
from ..tflite.graph import read_graph
from . import costmodel
from .probes import Probe, build, suite

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


def measure(probes: list[Probe], threads: list[int], seconds_per_probe: float,
            progress: Callable[[str], None] | None = None) -> list[dict]:
    """p50 and p10 milliseconds of every probe at every thread count."""
    out, cache = [], cache_bytes()
    with tempfile.TemporaryDirectory(prefix="edgekit-probes-") as tmp:
        paths = {}
        for p in probes:
            paths[p.name] = Path(tmp) / f"{p.name}.tflite"
            paths[p.name].write_bytes(build(p))
        for n in threads:
            for i, p in enumerate(probes):
                if progress and i % 20 == 0:
                    progress(f"threads {n}: probe {i + 1}/{len(probes)}")
                result = run_bench(paths[p.name], threads=n, duration_s=seconds_per_probe, warmup=5)
                out.append({"probe": p.name, "threads": n, "p50_ms": result.latency_ms["p50"],
                            "p10_ms": float(np.percentile(result.samples_ms, 10)),
                            "terms": costmodel.graph_terms(read_graph(paths[p.name].read_bytes()), cache)})
    return out


def fit_threads(samples: list[dict], statistic: str = "p50") -> dict:
    """Coefficients, in-sample and leave-one-probe-out errors for one thread count."""
    rows, secs = [s["terms"] for s in samples], [s[f"{statistic}_ms"] / 1e3 for s in samples]
    coefs = costmodel.fit(rows, secs)
    fitted = np.array([costmodel.predict_seconds_terms(r, coefs) for r in rows])
    held_out = np.zeros(len(rows))
    for i in range(len(rows)):
        # refitting without probe i: what an op shape the suite lacks would see
        c = costmodel.fit(rows[:i] + rows[i + 1:], secs[:i] + secs[i + 1:])
        held_out[i] = costmodel.predict_seconds_terms(rows[i], c)
    log_err = np.log(np.maximum(held_out, 1e-9) / np.array(secs))
    return {"coefficients": coefs,
            "fit_median_abs_error_pct": round(float(np.median(np.abs(fitted / secs - 1))) * 100, 1),
            "leave_one_probe_out_median_abs_error_pct": round(float(np.median(np.abs(np.exp(log_err) - 1))) * 100, 1),
            # a band at least +-5 %: the timing noise of a busy device alone is of that order
            "band_log": {"low": round(min(-0.05, float(np.percentile(log_err, 10))), 4),
                         "high": round(max(0.05, float(np.percentile(log_err, 90))), 4)}}


STATISTICS = ("p50", "p10")


def profile(name: str, threads: list[int], quick: bool = False, seconds_per_probe: float = 0.25,
            progress: Callable[[str], None] | None = None, statistic: str = "p50") -> dict:
    """statistic: p50 predicts what `edgekit bench` reports (its p50); p10 the uncontended speed of a
    shared machine, where other work inflates medians the more, the longer an inference takes."""
    from ..tflite.model import TFLiteModel  # noqa: F401  (fails early, as one line, without a runtime)

    start = time.perf_counter()
    probes = suite(quick)
    samples = measure(probes, threads, seconds_per_probe, progress)
    return build_profile(name, len(probes), samples, statistic, time.perf_counter() - start)


def build_profile(name: str, probes: int, samples: list[dict], statistic: str, seconds: float) -> dict:
    """The profile document from measurements (benchmarks fit both statistics from one run)."""
    threads = sorted({s["threads"] for s in samples})
    per_threads = {str(n): fit_threads([s for s in samples if s["threads"] == n], statistic) for n in threads}
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
        "measurements": [{k: s[k] for k in ("probe", "threads", "p50_ms", "p10_ms")} for s in samples],
    }
