"""`edgekit serve` as a subprocess on free loopback ports, for the conformance and web page tests.
Run from OUTSIDE the checkout, so the package under test is the installed one (run_installed.sh)."""
from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import OUTSIDE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    def __init__(self, log: Path, *args: str, grpc: bool = False, env: dict | None = None):
        self.port = free_port()
        self.grpc_port = free_port() if grpc else None
        self.url = f"127.0.0.1:{self.port}"
        extra = ["--grpc-port", str(self.grpc_port)] if grpc else []
        self.log_path, self.log = log, log.open("w")  # a file, not a pipe: a full pipe would stall the server
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "serve", *map(str, args),
                                      "--port", str(self.port), *extra],
                                     cwd=OUTSIDE, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env={**os.environ, **(env or {})})
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()}")
            try:
                if self.request("GET", "/v2/health/ready")[0] in (200, 403):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become ready in 60 s: {log.read_text()}")

    def request(self, method: str, path: str, body=None, headers=None):
        """(status, headers, body bytes) on a fresh connection."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.headers, r.read()
        finally:
            c.close()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
