"""The container of `edgekit serve` (issue #17 part 4). This machine has the docker CLI but no daemon,
so the image is not built here: the entry point script runs directly (as the image runs it, with the
installed `edgekit` on PATH) and the Dockerfile is checked for what the image promises."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import OUTSIDE, ROOT
from serve_process import free_port

pytestmark = pytest.mark.serve

CONTAINER = ROOT / "edgekit" / "serve" / "container"
ARTIFACT = ROOT / "sample_models" / "artifacts" / "digits_cnn_int8.tflite"


def entrypoint(env: dict, *args: str) -> subprocess.Popen:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the venv's `edgekit` script
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKIT_")}
    return subprocess.Popen(["sh", str(CONTAINER / "entrypoint.sh"), *args], cwd=OUTSIDE, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**clean, "PATH": path, **env})


def test_entrypoint_serves_rest_and_grpc_and_stops_on_sigterm():
    port, grpc_port = free_port(), free_port()
    proc = entrypoint({"EDGEKIT_MODELS": f"digits={ARTIFACT}", "EDGEKIT_HOST": "127.0.0.1",
                       "EDGEKIT_PORT": str(port), "EDGEKIT_GRPC_PORT": str(grpc_port), "EDGEKIT_API_KEY": "k"},
                      "--max-batch", "4")
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as r:
                    assert r.status == 200
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.poll() else "timeout"
                time.sleep(0.2)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/digits", headers={"Authorization": "Bearer k"})
        with urllib.request.urlopen(request, timeout=5) as r:
            assert b'"name":"digits"' in r.read()
        socket.create_connection(("127.0.0.1", grpc_port), timeout=5).close()   # gRPC is listening
    finally:
        proc.send_signal(signal.SIGTERM)   # exec'd: the signal reaches edgekit serve itself
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "micro-batching up to 4" in err and f"grpc 127.0.0.1:{grpc_port}" in err


def test_entrypoint_without_models_says_how_to_mount_them():
    proc = entrypoint({"EDGEKIT_PORT": str(free_port())})   # no EDGEKIT_MODELS and no /models/*.tflite here
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert err.strip() == ("edgekit-entrypoint: no models: mount artifacts at /models (-v $PWD/artifacts:/models:ro) "
                           "or set EDGEKIT_MODELS")


def test_entrypoint_warns_when_open_to_the_network_without_a_key():
    proc = entrypoint({"EDGEKIT_MODELS": str(ARTIFACT), "EDGEKIT_HOST": "0.0.0.0", "EDGEKIT_PORT": "-1"})
    _, err = proc.communicate(timeout=60)   # port -1: edgekit serve refuses it, after the warning
    assert "warning: no EDGEKIT_API_KEY" in err and proc.returncode == 2


def test_dockerfile_is_multi_stage_slim_and_non_root():
    text = (CONTAINER / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(stages) == 2 and all(s.startswith("python:3.11-slim") for s in stages)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert '"edgekit[serve]"' in text and "--no-index" in text   # the final stage installs only built wheels
    target = re.search(r"^COPY --chmod=0755 (\S+) (\S+)$", text, re.M)
    assert (ROOT / target.group(1)).is_file() and f'ENTRYPOINT ["{target.group(2)}"]' in text
    for source in re.findall(r"^COPY (?!--)(\S+)", text, re.M):
        assert (ROOT / source).exists(), source
    assert "HEALTHCHECK" in text and (CONTAINER / "Dockerfile.dockerignore").is_file()
