"""Drift monitoring in `edgekit serve`: gauges, GET /v2/models/{name}/stats, the dashboard and alert rules."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import OUTSIDE, SAMPLES

pytestmark = pytest.mark.serve

INT8 = SAMPLES / "artifacts" / "digits_cnn_int8.tflite"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(base: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "serve", f"digits={INT8}", "--port", str(port),
                             "--threads", "1"], cwd=OUTSIDE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ))
    deadline = time.time() + 60
    while True:
        try:
            if _call(base, "/v2/health/ready")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"server did not start: {proc.communicate()[1][-2000:]}")
    yield base, proc
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)


def _infer(base: str, x: np.ndarray) -> None:
    body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    status, raw = _call(base, "/v2/models/digits/infer", body)
    assert status == 200, raw


def _metric(text: str, name: str, statistic: str) -> float | None:
    m = re.search(rf'^{name}{{model="digits",statistic="{statistic}"}} (\S+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else None


def test_drift_reaches_stats_metrics_and_log(server):
    from edgekit.dataset import load_dataset
    from edgekit.preprocess import ImageSpec

    base, proc = server
    spec = ImageSpec(32, 32, 1, (0.0,), (255.0,))
    x = load_dataset(SAMPLES / "validation", [_image_info()], spec, role="validate").arrays[0]
    for i in range(100):  # clean: one evaluation (every 100), nothing drifting
        _infer(base, x[i:i + 1])
    status, raw = _call(base, "/v2/models/digits/stats")
    report = json.loads(raw)
    assert status == 200 and report["drifting"] == [] and report["window"]["samples"] == 100
    metrics = _call(base, "/metrics")[1].decode()
    assert _metric(metrics, "edgekit_drift_alert", "brightness_psi") == 0.0
    for i in range(150):  # brighter and beyond the int8 range: 20 % over white clips
        _infer(base, (x[i:i + 1] * 1.2 + 0.15).astype(np.float32))
    report = json.loads(_call(base, "/v2/models/digits/stats")[1])
    assert {"brightness_psi", "int8_clipped_fraction"} <= set(report["drifting"])
    metrics = _call(base, "/metrics")[1].decode()
    assert _metric(metrics, "edgekit_drift_alert", "brightness_psi") == 1.0
    assert _metric(metrics, "edgekit_drift", "int8_clipped_fraction") > 0.01
    assert _metric(metrics, "edgekit_drift_alerts_total", "brightness_psi") == 1.0
    assert re.search(r'^edgekit_drift_window_samples{model="digits"} 200.0$', metrics, re.MULTILINE)
    assert _call(base, "/v2/models/nope/stats")[0] == 404
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=30)[1]
    assert re.search(r"drift on model digits: brightness_psi = \S+ is over its threshold", err), err[-2000:]


def _image_info():
    from edgekit.manifest import TensorInfo

    return TensorInfo("image", (None, 32, 32, 1), "float32")


def _exported_names() -> set[str]:
    """Every series name the server's registry can export (counters add _total, histograms _bucket...)."""
    from edgekit.serve.metrics import ServerMetrics

    names = set()
    for family in ServerMetrics().registry.collect():
        names.add(family.name)
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                    "gauge": ()}[family.type]
        names.update(family.name + s for s in suffixes)
    return names


def test_dashboard_and_alert_rules_query_exported_metrics():
    import yaml

    from edgekit.serve.monitoring import ALERTS, DASHBOARD

    exported = _exported_names()
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    rules = yaml.safe_load(ALERTS.read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    assert len(exprs) > 10 and all(r.get("alert") and r.get("for") for g in rules["groups"] for r in g["rules"])
    used = {n for e in exprs for n in re.findall(r"\bedgekit_[a-z_]+", e)}
    assert used and used <= exported, used - exported
    # latency, errors and drift are all watched
    for needed in ("edgekit_request_seconds_bucket", "edgekit_requests_total", "edgekit_drift_alert"):
        assert needed in used
