"""Host benchmark of an artifact through edgekit's runtime: init, first inference, latency
percentiles, throughput and memory, with a warning when the machine was too noisy to trust."""
from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .tflite.graph import vocabulary_sizes
from .errors import InputError
from .artifact import load
from .predictor import Predictor

NOISY_P99_OVER_P50 = 2.0   # a quiet machine keeps the tail within 2x of the median
NOISY_CV = 0.25            # ... and the standard deviation within a quarter of the mean


@dataclass
class BenchResult:
    artifact: str
    backend: str
    threads: int | None
    runs: int
    size_bytes: int
    init_ms: float
    first_inference_ms: float
    latency_ms: dict
    throughput_per_s: float
    peak_rss_mb: float
    model_rss_mb: float
    inputs: str
    warnings: list[str] = field(default_factory=list)
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("samples_ms")
        return d


def rss_mb() -> float:
    """Resident set size now (Linux /proc; elsewhere the peak is the best available)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_rss_mb()


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if os.uname().sysname == "Darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def random_inputs(model: Predictor, rng: np.random.Generator, vocabulary: dict[int, int] | None = None) -> list[np.ndarray]:
    """Inputs in the range the model expects: the normalized pixel range for image models, the
    representable range for quantized inputs, valid ids for integer inputs (token ids below the
    vocabulary size the graph's embedding table tells, else small non-negative ints), a unit
    normal otherwise. Floats cast to int would index embeddings out of range."""
    arrays = []
    spec = model.preprocessing
    indices = getattr(model, "input_tensor_indices", None) or [None] * len(model.inputs)
    for info, tensor_index in zip(model.inputs, indices):
        shape = tuple(1 if d is None else d for d in info.shape)
        dtype = np.dtype(info.dtype)
        if dtype.kind in "iub" and not info.quantized:
            high = (vocabulary or {}).get(tensor_index, 2 if dtype.kind == "b" else 100)
            arrays.append(rng.integers(0, high, size=shape).astype(dtype))
            continue
        if spec is not None and len(model.inputs) == 1:
            lo, hi = spec.value_range()
        elif info.quantized:
            limits = np.iinfo(np.dtype(info.dtype))
            lo, hi = sorted(((limits.min - info.zero_point) * info.scale, (limits.max - info.zero_point) * info.scale))
        else:
            arrays.append(rng.standard_normal(shape).astype(np.float32))
            continue
        arrays.append(rng.uniform(lo, hi, size=shape).astype(np.float32))
    return arrays


def load_input_file(path: Path, model: Predictor) -> list[np.ndarray]:
    """A real input: an image (the manifest's preprocessing), a .npy for a single-input model, or a
    .npz with one array per input name. One sample or a batch."""
    if path.suffix.lower() == ".npy":
        return model.to_arrays(np.load(path, allow_pickle=False))
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return model.to_arrays({name: data[name] for name in data.files})
    return model.to_arrays(path)


def run_bench(path: str | Path, threads: int | None = None, runs: int | None = None, duration_s: float | None = None,
              warmup: int = 10, input_file: Path | None = None, seed: int = 0) -> BenchResult:
    if runs is not None and runs < 1:
        raise InputError(f"--runs expects a positive number, got {runs}")
    if duration_s is not None and duration_s <= 0:
        raise InputError(f"--duration expects seconds > 0, got {duration_s}")
    if runs is None and duration_s is None:
        runs = 100
    path = Path(path)
    before = rss_mb()
    start = time.perf_counter()
    model = load(path, threads=threads)
    init_ms = (time.perf_counter() - start) * 1e3
    loaded = rss_mb()
    if input_file is not None:
        arrays, note = load_input_file(Path(input_file), model), f"from {input_file}"
    else:
        vocab = vocabulary_sizes(path.read_bytes()) if path.is_file() else {}
        arrays, note = random_inputs(model, np.random.default_rng(seed), vocab), "random, in the model's input range"
    start = time.perf_counter()
    model.run(arrays)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in range(warmup):
        model.run(arrays)
    samples = []
    deadline = time.perf_counter() + duration_s if duration_s else None
    while (runs is None or len(samples) < runs) and (deadline is None or time.perf_counter() < deadline):
        t = time.perf_counter()
        model.run(arrays)
        samples.append((time.perf_counter() - t) * 1e3)
    lat = np.asarray(samples)
    stats = {"p50": float(np.percentile(lat, 50)), "p90": float(np.percentile(lat, 90)),
             "p99": float(np.percentile(lat, 99)), "mean": float(lat.mean()), "std": float(lat.std()),
             "min": float(lat.min()), "max": float(lat.max())}
    result = BenchResult(str(path), model.backend, threads, len(samples), model.size_bytes, init_ms, first_ms,
                         {k: round(v, 4) for k, v in stats.items()}, 1e3 / stats["mean"], peak_rss_mb(),
                         max(0.0, loaded - before), note, samples_ms=samples)
    result.warnings = noise_warnings(stats, len(samples), more_samples="a longer --duration" if duration_s
                                     else "--duration for more samples")
    return result


def noise_warnings(stats: dict, n: int, more_samples: str = "--duration for more samples") -> list[str]:
    warnings = []
    if stats["p99"] > NOISY_P99_OVER_P50 * stats["p50"]:
        warnings.append(f"p99 is {stats['p99'] / stats['p50']:.1f}x p50: the machine was busy or throttling; "
                        f"close other work and rerun, or use {more_samples}")
    if stats["mean"] > 0 and stats["std"] / stats["mean"] > NOISY_CV:
        warnings.append(f"latency varies by {100 * stats['std'] / stats['mean']:.0f}% (std/mean): results are noisy")
    if n < 20:
        warnings.append(f"only {n} timed runs: percentiles beyond p90 are not meaningful")
    load_1m = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load_1m > (os.cpu_count() or 1):
        warnings.append(f"system load {load_1m:.1f} exceeds {os.cpu_count()} cores during the run")
    return warnings


def plot_png(result: BenchResult, path: Path):
    """Latency histogram with p50/p90/p99 and the run-order trace as a PNG (matplotlib, from the
    desktop extra edgekit[charts]); returns the figure."""
    from .charts import latency_png

    threads = "default threads" if result.threads is None else f"{result.threads} thread{'s' * (result.threads != 1)}"
    title = f"{Path(result.artifact).name} — {threads}, {result.runs} runs ({result.backend})"
    return latency_png(result.samples_ms, result.latency_ms, title, path)
