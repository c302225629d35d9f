"""`edgekit serve` as a real process on a free loopback port, spoken to over HTTP."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

import edgekit
from conftest import OUTSIDE, ROOT
from serve_process import free_port

pytestmark = pytest.mark.serve

KEY = "test-key-123"
INFER = "/v2/models/{name}/infer"  # metrics label requests by route template, never by raw path


class Server:
    def __init__(self, *args, env=None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "serve", *map(str, args),
                                      "--port", str(self.port)], cwd=OUTSIDE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if self.get("/v2/health/ready")[0] in (200, 403):  # 403: up, but we are not on its allow-list
                    return
            except OSError:
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
        self.proc.kill()  # never leave a stray server behind a failed test
        raise RuntimeError("server did not become ready in 60 s")

    def request(self, method, path, body=None, headers=None, key=KEY):
        headers = dict(headers or {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(self.base + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read(), r.headers  # case-insensitive
        except urllib.error.HTTPError as e:
            return e.code, e.read(), e.headers

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def infer(self, model, x, key=KEY, **extra):
        body = {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
                **extra}
        status, raw, _ = self.request("POST", f"/v2/models/{model}/infer", json.dumps(body).encode(), key=key)
        return status, json.loads(raw)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=30)
        return self.proc.returncode, err


@pytest.fixture(scope="module")
def server(artifacts):
    srv = Server(f"digits={artifacts / 'digits_cnn_fp32.tflite'}", artifacts / "digits_cnn_int8.tflite",
                 "--max-batch", "8", "--batch-timeout-ms", "2", "--max-body-mb", "0.5", "--threads", "1",
                 env={"EDGEKIT_API_KEY": KEY})
    yield srv
    if srv.proc.poll() is None:
        srv.stop()


@pytest.fixture(scope="module")
def images(samples):
    files = sorted((samples / "validation").glob("*.png"))[:8]
    x = np.stack([np.asarray(Image.open(f), dtype=np.float32)[..., None] / 255.0 for f in files])
    return files, x


def test_metadata(server):
    status, raw, _ = server.get("/v2/models/digits_cnn_int8")
    meta = json.loads(raw)
    assert status == 200
    assert meta["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 32, 32, 1]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["parameters"]["labels"][0] == "0"
    assert json.loads(server.get("/v2")[1])["name"] == "edgekit"


@pytest.mark.parametrize("model, artifact", [("digits", "digits_cnn_fp32.tflite"),
                                             ("digits_cnn_int8", "digits_cnn_int8.tflite")])
def test_infer_matches_model_predict(server, artifacts, images, model, artifact):
    _, x = images
    status, body = server.infer(model, x, id="req-1")
    assert status == 200, body
    assert body["model_name"] == model and body["id"] == "req-1"
    (out,) = body["outputs"]
    assert out["name"] == "probs" and out["shape"] == [8, 10] and out["datatype"] == "FP32"
    expected = edgekit.load(artifacts / artifact).predict(x)
    np.testing.assert_allclose(np.array(out["data"]).reshape(8, 10), expected, atol=1e-6)


def test_binary_tensor_extension_matches_json(server, images):
    _, x = images
    header = json.dumps({"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    status, raw, headers = server.request("POST", "/v2/models/digits/infer", header + x.tobytes(),
                                          {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200
    n = int(headers["Inference-Header-Content-Length"])
    meta = json.loads(raw[:n])
    binary = np.frombuffer(raw[n:], np.float32).reshape(meta["outputs"][0]["shape"])
    _, body = server.infer("digits", x)
    np.testing.assert_array_equal(binary, np.array(body["outputs"][0]["data"], np.float32).reshape(8, 10))


def test_classify_endpoint_raw_and_multipart(server, artifacts, images):
    files, _ = images
    model = edgekit.load(artifacts / "digits_cnn_int8.tflite")
    expected = model.classify(files[0], top_k=3)[0]
    status, raw, _ = server.request("POST", "/v2/models/digits_cnn_int8/classify?top_k=3", files[0].read_bytes(),
                                    {"Content-Type": "image/png"})
    body = json.loads(raw)
    assert status == 200 and [p["label"] for p in body["predictions"]] == [l for l, _ in expected]
    boundary = "edgekitboundary"
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + files[0].read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, raw, _ = server.request("POST", "/v2/models/digits_cnn_int8/classify", form,
                                    {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and json.loads(raw)["predictions"][0]["label"] == expected[0][0]
    status, raw, _ = server.request("POST", "/v2/models/digits_cnn_int8/classify", b"not an image")
    assert status == 400 and "Pillow" in json.loads(raw)["error"]


def test_auth(server, images):
    _, x = images
    assert server.infer("digits", x[:1], key=None)[0] == 401
    status, raw, headers = server.request("GET", "/v2/models/digits", key="wrong")
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
    assert server.get("/v2/health/live", key=None)[0] == 200
    assert server.get("/metrics", key=None)[0] == 401


def test_bad_requests(server, images):
    _, x = images
    post = lambda model, body: server.request("POST", f"/v2/models/{model}/infer", body)  # noqa: E731
    status, raw, _ = post("digits", b"{not json")
    assert status == 400 and "malformed JSON" in json.loads(raw)["error"]
    status, body = server.infer("digits", np.zeros((1, 28, 28, 1), np.float32))
    assert status == 400 and body["error"] == "input 'image': expected shape [-1, 32, 32, 1], got [1, 28, 28, 1]"
    bad_type = {"inputs": [{"name": "image", "shape": [1, 32, 32, 1], "datatype": "INT8", "data": [0] * 1024}]}
    status, raw, _ = post("digits", json.dumps(bad_type).encode())
    assert status == 400 and json.loads(raw)["error"] == "input 'image': expected datatype FP32, got 'INT8'"
    status, raw, _ = post("digits", json.dumps({"inputs": [{"name": "x"}]}).encode())
    assert status == 400
    status, body = server.infer("nope", x[:1])
    assert status == 404 and "unknown model 'nope'" in body["error"]
    # declared too large: refused from the headers, before the body is read (a client streaming
    # the body would see the connection close, as with any server)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.putrequest("POST", "/v2/models/digits/infer")
    conn.putheader("Content-Length", str(600 * 1024))
    conn.putheader("Authorization", f"Bearer {KEY}")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "over the 524288 byte limit" in json.loads(response.read())["error"]
    conn.close()
    status, body = server.infer("digits", np.zeros((0, 32, 32, 1), np.float32))
    assert status == 400 and "empty batch" in body["error"]


def test_sixteen_concurrent_clients_and_metrics(server, images):
    _, x = images
    before = _count(server, "digits_cnn_int8", INFER, "200")

    def client(i):
        ok = 0
        for j in range(50):
            status, body = server.infer("digits_cnn_int8", x[(i + j) % 8:(i + j) % 8 + 1])
            ok += status == 200 and len(body["outputs"][0]["data"]) == 10
        return ok

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(client, range(16)))
    assert results == [50] * 16
    assert _count(server, "digits_cnn_int8", INFER, "200") - before == 800
    text = server.get("/metrics")[1].decode()
    batches = float(re.search(r'edgekit_batch_size_count\{model="digits_cnn_int8"\} (\S+)', text).group(1))
    samples = float(re.search(r'edgekit_batch_size_sum\{model="digits_cnn_int8"\} (\S+)', text).group(1))
    assert samples >= 800 and batches <= samples  # micro-batching grouped some requests
    assert f'edgekit_request_seconds_bucket{{endpoint="{INFER}",le="0.5",model="digits_cnn_int8"}}' in text
    assert "edgekit_queue_depth" in text


def _count(server, model, endpoint, status) -> float:
    text = server.get("/metrics")[1].decode()
    labels = f'endpoint="{re.escape(endpoint)}",model="{model}",status="{status}"'
    m = re.search(rf"edgekit_requests_total\{{{labels}\}} (\S+)", text)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def gather_tflite():
    """A model whose inference fails for out-of-range indices (GATHER checks bounds at run time);
    made by tests/data/build_tflite.py."""
    return ROOT / "tests" / "data" / "lookup.tflite"


def test_failing_inference_is_500_and_server_keeps_serving(gather_tflite):
    srv = Server(gather_tflite)
    try:
        ok = {"inputs": [{"name": srv_input(srv), "shape": [1], "datatype": "INT32", "data": [3]}]}
        bad = {"inputs": [{"name": srv_input(srv), "shape": [1], "datatype": "INT32", "data": [1000]}]}
        status, raw, _ = srv.request("POST", "/v2/models/lookup/infer", json.dumps(bad).encode(), key=None)
        assert status == 500 and "inference failed" in json.loads(raw)["error"]
        status, raw, _ = srv.request("POST", "/v2/models/lookup/infer", json.dumps(ok).encode(), key=None)
        assert status == 200 and json.loads(raw)["outputs"][0]["data"] == [6.0]
    finally:
        srv.stop()


def srv_input(srv) -> str:
    return json.loads(srv.get("/v2/models/lookup", key=None)[1])["inputs"][0]["name"]


def test_allow_list_rejects_other_clients(artifacts):
    srv = Server(artifacts / "digits_cnn_fp32.tflite", "--allow-ip", "10.9.8.0/24")
    try:
        status, raw, _ = srv.get("/v2/models/digits_cnn_fp32", key=None)
        assert status == 403 and "not in --allow-ip" in json.loads(raw)["error"]
    finally:
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.communicate(timeout=30)


def test_sigterm_shuts_down_cleanly(artifacts):
    srv = Server(artifacts / "digits_cnn_fp32.tflite")
    code, err = srv.stop()
    assert code == 0 and "server stopped" in err and "Traceback" not in err


def test_serve_bad_arguments(artifacts):
    from conftest import run_cli

    a = artifacts / "digits_cnn_fp32.tflite"
    result = run_cli("serve", f"m={a}", f"m={a}")
    assert result.exit_code == 2 and "two artifacts are named 'm'" in result.stderr
    result = run_cli("serve", a, "--allow-ip", "not-a-cidr")
    assert result.exit_code == 2 and "--allow-ip expects CIDRs" in result.stderr
