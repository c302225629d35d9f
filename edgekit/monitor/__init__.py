"""Know when a deployed model stops seeing the data it was built for.

features   per-sample statistics (the one measurement every side shares)
reference  the manifest's reference_stats: computed at conversion, read back on the device
drift      PSI/KS of a window against the reference, with size-aware thresholds
window     online sliding windows and warnings (runtime and server)
offline    `edgekit monitor STORE`: drift per time window from edgekit predict's stored rows
"""
from __future__ import annotations

from .drift import Statistic, evaluate
from .model import MonitoredModel, watch
from .reference import compute_reference, extractor_for
from .window import DriftMonitor

__all__ = ["DriftMonitor", "MonitoredModel", "Statistic", "compute_reference", "evaluate", "extractor_for", "watch"]
