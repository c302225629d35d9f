"""`edgekit serve` against the official Open Inference Protocol client (issue #17 parts 1-2).

The real server runs as a subprocess with both committed sample artifacts, an API key, micro-batching
and `--grpc-port`; tritonclient's HTTP and gRPC clients drive it, and raw requests cover what the
clients never send (error bodies, parameter types, versions, compressed bodies, typed gRPC contents).
Outputs are compared with `edgekit.load(artifact).run` on the same arrays.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import edgekit
from conftest import ROOT
from serve_process import ServeProcess

pytestmark = pytest.mark.serve
try:
    import tritonclient.grpc as tg
    import tritonclient.http as th
    from tritonclient.utils import InferenceServerException
except ImportError:  # other tiers' venvs collect this module too; only the serve tier runs it
    th = tg = None
    InferenceServerException = Exception


@pytest.fixture(autouse=True)
def _official_clients():
    """The serve tier installs [serve-test]; without it this suite fails, never silently skips."""
    if th is None:
        pytest.fail("the conformance suite needs the official clients: pip install 'edgekit[serve-test]'")

KEY = "conformance-key"
ARTIFACTS = ROOT / "sample_models" / "artifacts"
MODELS = {"int8": ARTIFACTS / "digits_cnn_int8.tflite", "fp32": ARTIFACTS / "digits_cnn_fp32.tflite"}


def auth() -> dict:
    # a fresh dict per call: tritonclient's infer() writes Inference-Header-Content-Length into the dict it is given
    return {"Authorization": f"Bearer {KEY}"}


def grpc_auth() -> dict:
    return {"authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServeProcess(tmp_path_factory.mktemp("conformance") / "server.log",
                       *(f"{n}={p}" for n, p in MODELS.items()), "--threads", "1", "--max-batch", "4",
                       grpc=True, env={"EDGEKIT_API_KEY": KEY})
    yield srv
    assert srv.stop() == 0


@pytest.fixture(scope="module")
def http(server):
    client = th.InferenceServerClient(server.url, concurrency=4)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc_client(server):
    client = tg.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    yield client
    client.close()


@pytest.fixture(scope="module")
def reference():
    return {n: edgekit.load(p, threads=1) for n, p in MODELS.items()}


@pytest.fixture(scope="module")
def x(samples):
    from PIL import Image

    files = sorted((samples / "validation").glob("*.png"))[:3]
    return np.stack([np.asarray(Image.open(f), dtype=np.float32)[..., None] / 255.0 for f in files])


def raises(call, status: str, fragment: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        call()
    assert info.value.status() == status, info.value
    assert fragment in info.value.message(), info.value.message()
    return info.value.message()


# -- HTTP, through tritonclient.http -----------------------------------------------------------

def test_http_health_metadata_and_repository(http):
    assert http.is_server_live() and http.is_server_ready()   # health stays open without the key
    meta = http.get_server_metadata(headers=auth())
    assert meta["name"] == "edgekit" and "binary_tensor_data" in meta["extensions"]
    assert http.get_model_repository_index(headers=auth()) == [
        {"name": "fp32", "version": "1", "state": "READY"}, {"name": "int8", "version": "1", "state": "READY"}]
    for name in MODELS:
        m = http.get_model_metadata(name, headers=auth())
        assert m["versions"] == ["1"] and m["parameters"]["labels"] == [str(i) for i in range(10)]
        assert m["inputs"] == [{"name": "image", "datatype": "FP32", "shape": [-1, 32, 32, 1]}]
        assert m["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 10]}]
        assert http.get_model_metadata(name, "1", headers=auth()) == m


def test_http_readiness_and_versions(http):
    assert http.is_model_ready("int8", headers=auth())
    assert http.is_model_ready("int8", "1", headers=auth())
    assert not http.is_model_ready("int8", "2", headers=auth())
    assert not http.is_model_ready("nope", headers=auth())
    raises(lambda: http.get_model_metadata("int8", "2", headers=auth()), "404", "has no version '2'")


def test_http_model_config(http):
    config = http.get_model_config("int8", headers=auth())
    assert config["name"] == "int8" and config["max_batch_size"] == 0
    assert config["input"] == [{"name": "image", "data_type": "TYPE_FP32", "dims": [-1, 32, 32, 1]}]
    assert config["output"] == [{"name": "probs", "data_type": "TYPE_FP32", "dims": [-1, 10]}]
    assert http.get_model_config("int8", "1", headers=auth()) == config
    raises(lambda: http.get_model_config("nope", headers=auth()), "404", "unknown model 'nope'")


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("binary_in,binary_out", [(True, True), (False, False), (True, False), (False, True)])
def test_http_infer_matches_the_runtime(http, reference, x, name, binary_in, binary_out):
    tensor = th.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    out = th.InferRequestedOutput("probs", binary_data=binary_out)
    result = http.infer(name, [tensor], outputs=[out], headers=auth(), request_id="r-7")
    response = result.get_response()
    assert response["id"] == "r-7" and response["model_version"] == "1"
    assert ("data" in response["outputs"][0]) != binary_out
    np.testing.assert_allclose(result.as_numpy("probs"), reference[name].run([x])[0], atol=1e-5)


def test_http_infer_all_outputs_binary_by_default(http, reference, x):
    tensor = th.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = http.infer("int8", [tensor], headers=auth(), model_version="1")  # no outputs: binary_data_output
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == x.shape[0] * 10 * 4
    np.testing.assert_array_equal(result.as_numpy("probs"), reference["int8"].run([x])[0])


def test_http_errors_reach_the_client_as_one_line(http, x):
    tensor = th.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    raises(lambda: http.infer("nope", [tensor], headers=auth()), "404", "unknown model 'nope'")
    raises(lambda: http.infer("int8", [tensor], headers=auth(), model_version="3"), "404", "has no version '3'")
    raises(lambda: http.infer("int8", [tensor]), "401", "missing or wrong API key")
    wrong_type = th.InferInput("image", list(x.shape), "FP64")
    wrong_type.set_data_from_numpy(x.astype(np.float64))
    raises(lambda: http.infer("int8", [wrong_type], headers=auth()), "400", "expected datatype FP32, got 'FP64'")
    wrong_shape = th.InferInput("image", [1, 16, 16, 1], "FP32")
    wrong_shape.set_data_from_numpy(np.zeros((1, 16, 16, 1), np.float32))
    raises(lambda: http.infer("int8", [wrong_shape], headers=auth()), "400", "expected shape [-1, 32, 32, 1]")
    raises(lambda: http.infer("int8", [tensor], headers=auth(), outputs=[th.InferRequestedOutput("logits")]),
           "400", "unknown output(s) ['logits']")
    raises(lambda: http.infer("int8", [tensor], headers=auth(), outputs=[th.InferRequestedOutput("probs", class_count=3)]),
           "400", "classification extension is not supported")
    raises(lambda: http.infer("int8", [tensor], headers=auth(), request_compression_algorithm="gzip"),
           "415", "Content-Encoding 'gzip' is not supported")


# -- HTTP, raw: what the client never sends -------------------------------------------------------

def infer_raw(server, payload, path="/v2/models/int8/infer", headers=None):
    return server.request("POST", path, json.dumps(payload).encode(),
                          {**auth(), "Content-Type": "application/json", **(headers or {})})


def request_body(x, **extra) -> dict:
    return {"inputs": [{"name": "image", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            **extra}


def test_binary_data_output_and_per_output_override(server, reference, x):
    expected = reference["int8"].run([x])[0]
    status, headers, body = infer_raw(server, request_body(x, parameters={"binary_data_output": True}))
    assert status == 200 and headers["Content-Type"] == "application/octet-stream"
    n = int(headers["Inference-Header-Content-Length"])
    header = json.loads(body[:n])
    assert header["outputs"][0]["parameters"] == {"binary_data_size": expected.nbytes}
    np.testing.assert_array_equal(np.frombuffer(body[n:], np.float32).reshape(expected.shape), expected)
    # the output's own binary_data wins over the request's default, both ways
    status, headers, body = infer_raw(server, request_body(
        x, parameters={"binary_data_output": True}, outputs=[{"name": "probs", "parameters": {"binary_data": False}}]))
    assert status == 200 and "Inference-Header-Content-Length" not in headers
    np.testing.assert_array_equal(np.array(json.loads(body)["outputs"][0]["data"], np.float32), expected.ravel())
    status, headers, _ = infer_raw(server, request_body(x, outputs=[{"name": "probs",
                                                                      "parameters": {"binary_data": True}}]))
    assert status == 200 and "Inference-Header-Content-Length" in headers


@pytest.mark.parametrize("payload_extra,fragment", [
    ({"parameters": {"binary_data_output": "yes"}}, '"binary_data_output" must be true or false'),
    ({"outputs": [{"name": "probs", "parameters": {"binary_data": 1}}]}, "binary_data must be true or false"),
])
def test_binary_flags_must_be_booleans(server, x, payload_extra, fragment):
    status, headers, body = infer_raw(server, request_body(x, **payload_extra))
    assert status == 400 and headers["Content-Type"] == "application/json"
    assert fragment in json.loads(body)["error"]


@pytest.mark.parametrize("method,path,status,fragment", [
    ("GET", "/v2/models/int8/versions/1", 200, None),
    ("GET", "/v2/models/int8/versions/1/ready", 200, None),
    ("GET", "/v2/models/int8/versions/1/config", 200, None),
    ("GET", "/v2/models/int8/versions/2", 404, "has no version '2'"),
    ("GET", "/v2/models/int8/versions/2/ready", 404, "has no version '2'"),
    ("GET", "/v2/models/nope/ready", 404, "unknown model 'nope'"),
    ("GET", "/v2/models/nope/config", 404, "unknown model 'nope'"),
    ("GET", "/v2/no/such/route", 404, "Not Found"),
    ("GET", "/v2/models/int8/infer", 405, "Method Not Allowed"),
    ("POST", "/v2/models/int8/versions/2/infer", 404, "has no version '2'"),
])
def test_routes_answer_json(server, method, path, status, fragment):
    got, headers, body = server.request(method, path, b"{}" if method == "POST" else None, auth())
    assert got == status and headers["Content-Type"] == "application/json"
    payload = json.loads(body)
    if fragment is None:
        assert "error" not in payload
    else:
        assert list(payload) == ["error"] and fragment in payload["error"]


def test_versioned_infer_path(server, reference, x):
    status, _, body = infer_raw(server, request_body(x), path="/v2/models/fp32/versions/1/infer")
    assert status == 200
    np.testing.assert_allclose(np.array(json.loads(body)["outputs"][0]["data"]),
                               reference["fp32"].run([x])[0].ravel(), atol=1e-5)


# -- gRPC, through tritonclient.grpc ----------------------------------------------------------

def test_grpc_health_metadata_readiness(grpc_client):
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()   # open, like /v2/health
    meta = grpc_client.get_server_metadata(headers=grpc_auth(), as_json=True)
    assert meta["name"] == "edgekit" and "binary_tensor_data" in meta["extensions"]
    m = grpc_client.get_model_metadata("int8", headers=grpc_auth(), as_json=True)
    assert m["versions"] == ["1"] and m["inputs"] == [{"name": "image", "datatype": "FP32",
                                                       "shape": ["-1", "32", "32", "1"]}]  # int64 -> JSON string
    # (the labels travel in the spec's `properties` map, which Triton's proto, and so tritonclient, lacks)
    assert grpc_client.is_model_ready("int8", headers=grpc_auth())
    assert grpc_client.is_model_ready("int8", "1", headers=grpc_auth())
    assert not grpc_client.is_model_ready("int8", "2", headers=grpc_auth())
    assert not grpc_client.is_model_ready("nope", headers=grpc_auth())


@pytest.mark.parametrize("name", list(MODELS))
def test_grpc_infer_matches_the_runtime(grpc_client, reference, x, name):
    tensor = tg.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    result = grpc_client.infer(name, [tensor], outputs=[tg.InferRequestedOutput("probs")], headers=grpc_auth(),
                               request_id="g-1")
    assert result.get_response().id == "g-1"
    np.testing.assert_allclose(result.as_numpy("probs"), reference[name].run([x])[0], atol=1e-5)


def test_grpc_errors(grpc_client, x):
    tensor = tg.InferInput("image", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    raises(lambda: grpc_client.infer("int8", [tensor]), "StatusCode.UNAUTHENTICATED", "missing or wrong API key")
    raises(lambda: grpc_client.infer("nope", [tensor], headers=grpc_auth()), "StatusCode.NOT_FOUND",
           "unknown model 'nope'")
    raises(lambda: grpc_client.infer("int8", [tensor], model_version="2", headers=grpc_auth()),
           "StatusCode.NOT_FOUND", "has no version '2'")
    small = tg.InferInput("image", [1, 16, 16, 1], "FP32")
    small.set_data_from_numpy(np.zeros((1, 16, 16, 1), np.float32))
    raises(lambda: grpc_client.infer("int8", [small], headers=grpc_auth()), "StatusCode.INVALID_ARGUMENT",
           "expected shape [-1, 32, 32, 1]")
    raises(lambda: grpc_client.get_model_metadata("nope", headers=grpc_auth()), "StatusCode.NOT_FOUND", "unknown model")
    # Triton's ModelConfig RPC is not in the Open Inference Protocol: refused cleanly, not a hang or a crash
    raises(lambda: grpc_client.get_model_config("int8", headers=grpc_auth()), "StatusCode.UNIMPLEMENTED", "")


def test_grpc_typed_contents_in_and_out(server, reference, x):
    """What tritonclient never sends: fp32_contents instead of raw_input_contents, answered in kind."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="int8")
        tensor = request.inputs.add(name="image", datatype="FP32", shape=list(x.shape))
        tensor.contents.fp32_contents.extend(x.ravel().tolist())
        response = stub.ModelInfer(request, metadata=[("authorization", f"Bearer {KEY}")])
        assert not response.raw_output_contents and list(response.outputs[0].shape) == [len(x), 10]
        got = np.array(response.outputs[0].contents.fp32_contents, np.float32).reshape(len(x), 10)
        np.testing.assert_array_equal(got, reference["int8"].run([x])[0])
        bad = service_pb2.ModelInferRequest(model_name="int8")
        bad.inputs.add(name="image", datatype="FP32", shape=[1, 32, 32, 1]).contents.fp32_contents.extend([0.0] * 5)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(bad, metadata=[("authorization", f"Bearer {KEY}")])
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 1024 values, got 5" in info.value.details()


def test_both_protocols_share_batcher_and_metrics(server, http, grpc_client, reference, x):
    expected = reference["int8"].run([x[:1]])[0]

    def over_grpc(_):
        t = tg.InferInput("image", [1, 32, 32, 1], "FP32")
        t.set_data_from_numpy(x[:1])
        return grpc_client.infer("int8", [t], headers=grpc_auth()).as_numpy("probs")

    t = th.InferInput("image", [1, 32, 32, 1], "FP32")
    t.set_data_from_numpy(x[:1])
    # tritonclient.http runs on gevent (one thread): its own async_infer, while gRPC calls run in threads
    with ThreadPoolExecutor(4) as pool:
        grpc_results = pool.map(over_grpc, range(16))
        pending = [http.async_infer("int8", [t], headers=auth()) for _ in range(16)]
        results = [r.get_result().as_numpy("probs") for r in pending] + list(grpc_results)
    for got in results:
        np.testing.assert_array_equal(got, expected)
    status, _, body = server.request("GET", "/metrics", headers=auth())
    text = body.decode()
    assert 'edgekit_requests_total{endpoint="grpc:ModelInfer",model="int8",status="OK"}' in text
    assert 'edgekit_requests_total{endpoint="grpc:ModelInfer",model="int8",status="UNAUTHENTICATED"}' in text
    assert 'edgekit_requests_total{endpoint="/v2/models/{name}/infer",model="int8",status="200"}' in text
    # one engine for both front ends: every sample of both protocols went through the int8 model's batcher
    batched = float(next(line.split()[-1] for line in text.splitlines()
                         if line.startswith('edgekit_batch_size_sum{model="int8"}')))
    assert batched >= 32


def test_grpc_allow_list(tmp_path):
    srv = ServeProcess(tmp_path / "server.log", MODELS["int8"], "--allow-ip", "10.0.0.0/8", grpc=True)
    try:
        client = tg.InferenceServerClient(f"127.0.0.1:{srv.grpc_port}")
        raises(lambda: client.is_server_live(), "StatusCode.PERMISSION_DENIED", "is not in --allow-ip")
        client.close()
        assert srv.request("GET", "/v2/health/live")[0] == 403
    finally:
        assert srv.stop() == 0


def test_grpc_port_in_use_is_one_line(server):
    import subprocess
    import sys

    from conftest import OUTSIDE

    done = subprocess.run([sys.executable, "-m", "edgekit.cli", "serve", str(MODELS["int8"]), "--port", "0",
                           "--grpc-port", str(server.grpc_port)], cwd=OUTSIDE, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"Error: --grpc-port {server.grpc_port}: cannot listen on 127.0.0.1:"
                                   f"{server.grpc_port} (Address already in use); is another server using it?")
