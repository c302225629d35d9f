"""Serving overhead and throughput: `edgekit serve` against the raw interpreter loop.

    python benchmarks/serve_bench.py [--requests 200] [--json out.json]

Model: keras.applications MobileNetV3Small 224 fp32 (weights=None), converted by edgekit. The
server runs as its own process on a free loopback port with the same interpreter threads as
the raw loop (2). Clients keep HTTP connections open and send the v2 binary tensor extension
(what performance clients use: a 224x224x3 float input is 600 KB raw, ~1.6 MB as JSON text);
one JSON run at concurrency 1 shows what text encoding costs. Every level is bounded by a
request count and a time limit, and everything stays on 127.0.0.1.
Targets (issue 6): p50 overhead at concurrency 1 <= 1.5 ms over raw invoke; saturated
throughput >= 80% of the raw loop's; the gain from micro-batching at concurrency 16.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
THREADS = 2
TIME_LIMIT_S = 60


def artifact() -> Path:
    from emulator_accuracy import build_tflite

    return build_tflite("mobilenet_v3_small_1.0_224", "fp32")


def raw_loop(path: Path, n: int) -> dict:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=THREADS)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    times = []
    cpu = time.process_time()
    for i in range(n + 10):
        t = time.perf_counter()
        it.set_tensor(inp, x)
        it.invoke()
        it.get_tensor(out)
        if i >= 10:
            times.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu) / (n + 10)
    p50 = float(np.median(times)) * 1e3
    return {"cpu_ms_per_inference": cpu * 1e3, "p50_ms": p50, "p99_ms": float(np.percentile(times, 99)) * 1e3, "throughput_per_s": 1e3 / p50}


class Server:
    def __init__(self, path: Path, *extra: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "serve", f"m={path}", "--port",
                                      str(self.port), "--threads", str(THREADS), *extra],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def input_name(port: int) -> str:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", "/v2/models/m")
    return json.loads(c.getresponse().read())["inputs"][0]["name"]


def binary_request(x: np.ndarray, name: str) -> tuple[bytes, dict]:
    header = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                  "Content-Type": "application/octet-stream"}


def json_request(x: np.ndarray, name: str) -> tuple[bytes, dict]:
    body = {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


def process_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc), to account for where time goes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, concurrency: int, requests: int, body: bytes, headers: dict, server_pid: int) -> dict:
    per_client = max(1, requests // concurrency)
    latencies, errors = [], []
    lock = threading.Lock()
    deadline = time.perf_counter() + TIME_LIMIT_S

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        for _ in range(per_client):
            if time.perf_counter() > deadline:
                break
            t = time.perf_counter()
            conn.request("POST", "/v2/models/m/infer", body, headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - t)
            if response.status != 200:
                errors.append(response.status)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    server_cpu, client_cpu = process_cpu_s(server_pid), time.process_time()
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    server_cpu, client_cpu = process_cpu_s(server_pid) - server_cpu, time.process_time() - client_cpu
    lat = np.asarray(latencies) * 1e3
    return {"concurrency": concurrency, "requests": len(lat), "errors": len(errors),
            "p50_ms": float(np.median(lat)), "p99_ms": float(np.percentile(lat, 99)),
            "throughput_per_s": len(lat) / wall, "server_cpu_ms_per_req": 1e3 * server_cpu / max(1, len(lat)),
            "client_cpu_ms_per_req": 1e3 * client_cpu / max(1, len(lat))}


def main() -> None:
    from edgekit.table import render

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    path = artifact()
    raw = raw_loop(path, args.requests)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    rows = []
    server = Server(path)
    try:
        name = input_name(server.port)
        body, headers = binary_request(x, name)
        load(server.port, 1, 20, body, headers, server.proc.pid)  # warm-up
        for c in (1, 4, 16):
            rows.append({"server": "edgekit serve", "encoding": "binary", **load(server.port, c, args.requests,
                                                                                 body, headers, server.proc.pid)})
        body, headers = json_request(x, name)
        rows.append({"server": "edgekit serve", "encoding": "json", **load(server.port, 1, args.requests // 4,
                                                                           body, headers, server.proc.pid)})
    finally:
        server.stop()
    batching = Server(path, "--max-batch", "8", "--batch-timeout-ms", "2")
    try:
        body, headers = binary_request(x, name)
        load(batching.port, 4, 20, body, headers, batching.proc.pid)
        rows.append({"server": "micro-batch 8/2ms", "encoding": "binary",
                     **load(batching.port, 16, args.requests, body, headers, batching.proc.pid)})
    finally:
        batching.stop()
    headers_ = ["server", "encoding", "concurrency", "requests", "errors", "p50_ms", "p99_ms", "throughput_per_s",
                "server_cpu_ms_per_req", "client_cpu_ms_per_req"]
    print(f"raw loop ({THREADS} threads): p50 {raw['p50_ms']:.3f} ms, p99 {raw['p99_ms']:.3f} ms, "
          f"{raw['throughput_per_s']:.1f}/s, {raw['cpu_ms_per_inference']:.3f} ms CPU per inference")
    print(render(headers_, [[round(r[h], 3) if isinstance(r[h], float) else r[h] for h in headers_] for r in rows]))
    c1 = rows[0]
    saturated = max(r["throughput_per_s"] for r in rows if r["server"] == "edgekit serve")
    plain16 = next(r for r in rows if r["concurrency"] == 16 and r["server"] == "edgekit serve")
    batched16 = rows[-1]
    summary = {"p50_overhead_ms_c1": c1["p50_ms"] - raw["p50_ms"],
               "saturated_vs_raw": saturated / raw["throughput_per_s"],
               "microbatch_gain_c16": batched16["throughput_per_s"] / plain16["throughput_per_s"]}
    if any(r["errors"] for r in rows):
        raise SystemExit("some requests failed: the figures above are not valid")
    print(f"p50 overhead at concurrency 1: {summary['p50_overhead_ms_c1']:.3f} ms; saturated throughput "
          f"{100 * summary['saturated_vs_raw']:.0f}% of raw; micro-batching at concurrency 16: "
          f"{summary['microbatch_gain_c16']:.2f}x throughput")
    if args.json:
        args.json.write_text(json.dumps({"raw": raw, "rows": rows, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
