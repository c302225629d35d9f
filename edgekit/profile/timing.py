"""Latency that holds on a shared machine: the best of several block medians, 1-thread runs pinned
and timed by the thread's CPU clock.

A single long median of a busy host measures the neighbours as much as the model (the same network's
p50 moved by a median 40 % between two rounds a minute apart on a 2-core host at load 5-23). Here a
model is timed in short blocks spread over the run (callers interleave blocks of different models,
so load drift hits all of them alike), each block gives its median, and the statistic is the lowest
block median: the speed when the machine let the model run, which a quiet device shows every time.
1-thread blocks run pinned to one core (os.sched_setaffinity; Linux): without it the scheduler moves
the thread between cores mid-inference and each move costs a cold L1/L2. Multi-thread interpreters
are created and run unpinned, since XNNPACK's worker threads inherit the creator's CPU mask.
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..artifact import load
from ..bench import random_inputs
from ..tflite.graph import vocabulary_sizes

WARMUP_S = 0.05          # a probe's first runs pack weights and fault in the arena
MIN_WARMUP_RUNS = 3
MIN_BLOCK_RUNS = 3       # a block median needs a few runs even for a 50 ms model


def pin_core() -> int | None:
    """The core 1-thread runs are pinned to: the last one this process may use (cpu0 takes most
    interrupts), or None where affinity cannot be set."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    try:
        return max(os.sched_getaffinity(0))
    except OSError:
        return None


@contextmanager
def pinned(threads: int, core: int | None):
    """Run the body on one core when threads == 1; restores the calling thread's mask after."""
    if threads != 1 or core is None:
        yield
        return
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {core})
    except OSError:  # a container that forbids it: time unpinned rather than fail
        yield
        return
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


class Timed:
    """One loaded model at one thread count, timed block by block."""

    def __init__(self, path: str | Path, threads: int, core: int | None = None, seed: int = 0,
                 invoke_only: bool = False):
        """invoke_only: time the interpreter's invoke alone (TFLiteModel.invoke_again), inputs set once."""
        self.threads, self.core = threads, core
        self.invoke_only = invoke_only
        self.model = load(Path(path), threads=threads)
        vocab = vocabulary_sizes(Path(path).read_bytes())
        self.arrays = random_inputs(self.model, np.random.default_rng(seed), vocab)
        self.block_medians: list[float] = []
        self.samples: list[float] = []
        with pinned(threads, core):
            deadline, runs = time.perf_counter() + WARMUP_S, 0
            while runs < MIN_WARMUP_RUNS or time.perf_counter() < deadline:
                self.model.run(self.arrays)
                runs += 1

    def block(self, seconds: float) -> float:
        """Time runs for about `seconds` (at least MIN_BLOCK_RUNS); returns and keeps their median
        busy time (ms): at 1 thread the calling thread's CPU time, which is the inference's wall time on
        a quiet device and leaves out the time a busy one spent running others (XNNPACK runs a
        1-thread inference on the caller); at more threads, wall time (the workers' CPU time would
        count spinning, not latency)."""
        walls, busy = [], []
        cpu_clock = self.threads == 1
        with pinned(self.threads, self.core):
            deadline = time.perf_counter() + seconds
            while len(walls) < MIN_BLOCK_RUNS or time.perf_counter() < deadline:
                t, c = time.perf_counter(), time.thread_time() if cpu_clock else 0.0
                if self.invoke_only:
                    self.model.invoke_again()
                else:
                    self.model.run(self.arrays)
                wall = (time.perf_counter() - t) * 1e3
                walls.append(wall)
                busy.append((time.thread_time() - c) * 1e3 if cpu_clock else wall)
        median = float(np.median(busy))
        self.block_medians.append(median)
        self.samples.extend(walls)
        return median

    def stats(self) -> dict:
        """p50 / p10 of the wall time of every timed run (what `edgekit bench` reports), and
        min_median: the lowest block median of busy time (see block)."""
        return {"p50_ms": float(np.percentile(self.samples, 50)), "p10_ms": float(np.percentile(self.samples, 10)),
                "min_median_ms": min(self.block_medians), "blocks": len(self.block_medians),
                "block_spread": max(self.block_medians) / min(self.block_medians) - 1,
                "clock": "thread-cpu" if self.threads == 1 else "wall"}

    def close(self) -> None:
        self.model = None
