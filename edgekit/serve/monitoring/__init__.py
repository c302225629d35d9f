"""Grafana dashboard and Prometheus alert rules for `edgekit serve` (package data, shipped in the wheel).

    grafana_dashboard.json   import into Grafana (Dashboards > Import); pick the Prometheus data source
    prometheus_alerts.yml    add to prometheus.yml under rule_files:

Both query only metrics edgekit/serve/metrics.py exports (tests/test_monitor.py checks every name).
"""
from __future__ import annotations

from pathlib import Path

FOLDER = Path(__file__).resolve().parent
DASHBOARD = FOLDER / "grafana_dashboard.json"
ALERTS = FOLDER / "prometheus_alerts.yml"
