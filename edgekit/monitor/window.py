"""Online drift: a sliding window of the last N predictions' statistics, compared with the reference.

`DriftMonitor.observe` is on every prediction's path, so it only measures the batch and copies a
few floats into a ring buffer; the comparison (drift.evaluate, ~0.5 ms) runs every `every` (100)
predictions, so its cost is spread thin. A statistic that crosses its threshold logs one warning
and counts one alert when it starts firing, not on every evaluation while it stays high.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import InputError
from ..manifest import TensorInfo
from .drift import MIN_SAMPLES, Statistic, evaluate
from .reference import extractor_for

log = logging.getLogger("edgekit.monitor")


class Window:
    """The last `capacity` rows, oldest overwritten first."""

    def __init__(self, capacity: int, width: int):
        self.data = np.zeros((capacity, width), np.float32)
        self.capacity, self.count, self.next = capacity, 0, 0

    def add(self, rows: np.ndarray) -> None:
        rows = rows[-self.capacity:]
        n = rows.shape[0]
        end = self.next + n
        if end <= self.capacity:
            self.data[self.next:end] = rows
        else:
            split = self.capacity - self.next
            self.data[self.next:] = rows[:split]
            self.data[:n - split] = rows[split:]
        self.next = end % self.capacity
        self.count = min(self.capacity, self.count + n)

    def rows(self) -> np.ndarray:
        return self.data[:self.count].copy() if self.count < self.capacity else self.data.copy()


class DriftMonitor:
    """Sliding-window drift of one model against its manifest's reference_stats."""

    def __init__(self, reference: dict[str, Any], input_info: TensorInfo | None = None, name: str = "model",
                 window: int = 200, every: int = 100):
        if window < MIN_SAMPLES:
            raise InputError(f"the drift window expects at least {MIN_SAMPLES} predictions, got {window}; "
                             "raise it (200 is the default)")
        if every < 1:
            raise InputError(f"drift evaluation interval expects a positive number of predictions, got {every}")
        self.reference, self.name, self.every = reference, name, every
        self.extractor = extractor_for(reference, input_info)
        self.window = Window(window, self.extractor.layout.width)
        self.seen = 0
        self.alerts: dict[str, int] = {}          # statistic -> times it started firing
        self.latest: list[Statistic] = []
        self.listeners: list[Callable[[DriftMonitor, list[Statistic], list[Statistic]], None]] = []
        self._since = 0
        self._lock = threading.Lock()              # observe() is called from server worker threads

    def observe(self, x: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        """Record one batch (the model's real-valued input and its first output); returns its rows."""
        rows = self.extractor.rows(x, scores)
        with self._lock:
            self.window.add(rows)
            self.seen += rows.shape[0]
            self._since += rows.shape[0]
            due = self._since >= self.every and self.window.count >= MIN_SAMPLES
            if due:
                self._since = 0
        if due:
            self.evaluate()
        return rows

    def evaluate(self) -> list[Statistic]:
        with self._lock:
            rows = self.window.rows()
        stats = evaluate(rows, self.reference, self.extractor.layout)
        with self._lock:
            before = {s.name for s in self.latest if s.alert}
            started = [s for s in stats if s.alert and s.name not in before]
            for s in started:
                self.alerts[s.name] = self.alerts.get(s.name, 0) + 1
            self.latest = stats
        for s in started:
            log.warning("drift on model %s: %s = %.4g is over its threshold %.4g (last %d predictions)",
                        self.name, s.name, s.value, s.threshold, rows.shape[0])
        for listener in self.listeners:
            listener(self, stats, started)
        return stats

    def report(self) -> dict[str, Any]:
        """The JSON shape of GET /v2/models/{name}/stats and Model.drift()."""
        with self._lock:
            latest, alerts, count, seen = list(self.latest), dict(self.alerts), self.window.count, self.seen
        return {"model": self.name, "window": {"size": self.window.capacity, "samples": count, "seen": seen,
                                               "every": self.every, "min_samples": MIN_SAMPLES},
                "reference": {"samples": self.reference["samples"], "source": self.reference.get("source")},
                "drifting": [s.name for s in latest if s.alert], "alerts_total": alerts,
                "statistics": [s.to_dict() for s in latest]}
