"""The Starlette application behind `edgekit serve`.

Routes (Open Inference Protocol v2, plus an image convenience endpoint and metrics):
  GET  /v2/health/live  /v2/health/ready  /v2  /v2/models/{name}  /v2/models/{name}/ready
  POST /v2/models/{name}/infer      JSON tensors, or the v2 binary-tensor extension
  POST /v2/models/{name}/classify   an image (raw body or multipart "file") -> top-k labels
  GET  /metrics                     Prometheus text format
Inference runs in worker threads (the runtime is thread-safe); the event loop only parses,
validates and answers, so a slow model never blocks health checks.
"""
from __future__ import annotations

import contextlib
import hmac
import ipaddress
import json
import time
from dataclasses import dataclass

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import __version__
from ..errors import EdgekitError
from ..runtime import Model
from .batching import MicroBatcher
from .metrics import ServerMetrics
from .protocol import DATATYPES, ProtocolError, decode_inputs, encode_outputs, requested_outputs, tensor_metadata

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready")
BINARY_HEADER = "inference-header-content-length"


@dataclass
class ServerConfig:
    api_key: str | None = None
    allow_ips: tuple = ()            # ip_network objects; empty = everyone who can reach the port
    max_batch: int = 1               # >1 turns on micro-batching for resizable-batch models
    batch_timeout_ms: float = 2.0
    max_body_bytes: int = 32 * 2**20


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def create_app(models: dict[str, Model], config: ServerConfig) -> Starlette:
    metrics = ServerMetrics()
    batchers: dict[str, MicroBatcher] = {}

    def served(name: str) -> Model:
        if name not in models:
            raise HTTPError(404, f"unknown model {name!r}; serving {sorted(models)}")
        return models[name]

    async def read_body(request: Request) -> bytes | bytearray:
        """The whole body, within the size limit. With a Content-Length the chunks land in one
        preallocated buffer: a 600 KB tensor is copied once, not gathered and joined."""
        declared = request.headers.get("content-length")
        expected = int(declared) if declared and declared.isdigit() else None
        buffer = bytearray(expected) if expected is not None else None
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                if size + len(chunk) > config.max_body_bytes:
                    raise HTTPError(413, f"request body over the {config.max_body_bytes} byte limit "
                                         "(--max-body-mb)")
                if buffer is not None and size + len(chunk) <= expected:
                    buffer[size:size + len(chunk)] = chunk
                else:
                    chunks.append(chunk)
                size += len(chunk)
        except ClientDisconnect:
            raise HTTPError(400, "client disconnected before sending the whole body") from None
        if buffer is not None and not chunks and size == expected:
            return buffer
        return (bytes(buffer[:min(size, expected)]) if buffer is not None else b"") + b"".join(chunks)

    async def run_model(name: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if name in batchers:
            return await batchers[name].submit(arrays)
        start = time.perf_counter()
        outputs = await anyio.to_thread.run_sync(models[name].run, arrays)
        metrics.inference.labels(name).observe(time.perf_counter() - start)
        metrics.batch_size.labels(name).observe(arrays[0].shape[0])
        return outputs

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "edgekit", "version": __version__, "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: Request) -> Response:
        name = request.path_params["name"]
        model = served(name)
        body = {"name": name, "versions": ["1"], "platform": f"tflite ({model.backend})",
                "inputs": [tensor_metadata(t) for t in model.inputs],
                "outputs": [tensor_metadata(t) for t in model.outputs]}
        if model.labels:
            body["parameters"] = {"labels": model.labels}
        return JSONResponse(body)

    async def model_ready(request: Request) -> Response:
        served(request.path_params["name"])
        return JSONResponse({"name": request.path_params["name"], "ready": True})

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        model = served(name)
        raw = await read_body(request)
        header_len = request.headers.get(BINARY_HEADER)
        body, binary = _split_binary(raw, header_len)
        try:
            payload = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise HTTPError(400, f"malformed JSON body: {e}") from None
        if binary is not None:
            payload = _inline_binary_inputs(payload, binary, model)
        try:
            arrays = decode_inputs(payload, model.inputs)
            wanted = requested_outputs(payload, [t.name for t in model.outputs])
        except ProtocolError as e:
            raise HTTPError(400, str(e)) from None
        try:
            outputs = await run_model(name, arrays)
        except EdgekitError as e:
            raise HTTPError(400, str(e)) from None
        except Exception as e:  # the model failed: report it, keep serving
            raise HTTPError(500, f"inference failed: {type(e).__name__}: {e}") from None
        encoded = encode_outputs([t.name for t in model.outputs], outputs, wanted)
        response = {"model_name": name, "model_version": "1", "outputs": encoded}
        if isinstance(payload, dict) and "id" in payload:
            response["id"] = payload["id"]
        if _wants_binary(payload):
            return _binary_response(response, outputs, [t.name for t in model.outputs], wanted)
        return JSONResponse(response)

    async def classify(request: Request) -> Response:
        name = request.path_params["name"]
        model = served(name)
        try:
            top_k = int(request.query_params.get("top_k", "5"))
        except ValueError:
            raise HTTPError(400, f"top_k must be an integer, got {request.query_params.get('top_k')!r}") from None
        if model.preprocessing is None:
            raise HTTPError(400, f"model {name!r} has no image preprocessing in its manifest; use /infer with tensors")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            if int(request.headers.get("content-length") or 0) > config.max_body_bytes:
                raise HTTPError(413, f"request body over the {config.max_body_bytes} byte limit (--max-body-mb)")
            form = await request.form(max_part_size=config.max_body_bytes)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPError(400, 'multipart upload needs a file field named "file"')
            image = await upload.read()
        else:
            image = await read_body(request)
        if not image:
            raise HTTPError(400, "expected an image in the body (raw bytes or multipart field \"file\"), got nothing")
        start = time.perf_counter()
        try:
            arrays = model.to_arrays(image)
        except EdgekitError as e:
            raise HTTPError(400, str(e)) from None
        try:
            outputs = await run_model(name, arrays)
        except Exception as e:
            raise HTTPError(500, f"inference failed: {type(e).__name__}: {e}") from None
        scores = outputs[0][0]
        top = model.top_k(scores, top_k)
        return JSONResponse({"model_name": name, "predictions": [{"label": l, "score": s} for l, s in top],
                             "latency_ms": round((time.perf_counter() - start) * 1e3, 3)})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
        Route("/v2/models/{name}", model_metadata), Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v2/models/{name}/classify", classify, methods=["POST"]),
        Route("/metrics", prometheus),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app):
        for name, model in models.items():
            if config.max_batch > 1 and model.resizable_batch:
                batchers[name] = MicroBatcher(name, model, metrics, config.max_batch, config.batch_timeout_ms)
                batchers[name].start()
        yield
        for b in batchers.values():
            await b.stop()

    async def http_error(request: Request, exc: HTTPError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPError: http_error, Exception: unexpected})
    app.state.metrics, app.state.batchers = metrics, batchers
    return _Guard(app, config, metrics, set(models))


class _Guard:
    """ASGI wrapper: allow-list, API key, and the one place errors become JSON and metrics.
    Plain ASGI rather than BaseHTTPMiddleware: it adds microseconds, not a task per request."""

    def __init__(self, app: Starlette, config: ServerConfig, metrics: ServerMetrics, names: set[str]):
        self.app, self.config, self.metrics, self.names = app, config, metrics, names
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        path = scope["path"]
        model, endpoint = _labels(path, self.names)
        status_holder = {"status": 500}

        async def send_tracking(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
            await send(message)

        try:
            self._check_access(scope, path)
            declared = _header(scope, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.config.max_body_bytes:
                raise HTTPError(413, f"request body of {declared} bytes is over the {self.config.max_body_bytes} "
                                     "byte limit (--max-body-mb)")
            await self.app(scope, receive, send_tracking)
        except HTTPError as e:
            await _send_json(send_tracking, e.status, {"error": e.message},
                             {b"www-authenticate": b"Bearer"} if e.status == 401 else None)
        except Exception as e:  # nothing a request does may take the server down
            await _send_json(send_tracking, 500, {"error": f"internal error: {type(e).__name__}: {e}"})
        finally:
            self.metrics.requests.labels(model, endpoint, str(status_holder["status"])).inc()
            self.metrics.latency.labels(model, endpoint).observe(time.perf_counter() - start)

    def _check_access(self, scope, path: str) -> None:
        if self.config.allow_ips:
            client = (scope.get("client") or ("", 0))[0]
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                raise HTTPError(403, f"client address {client!r} is not allowed") from None
            if not any(address in net for net in self.config.allow_ips):
                raise HTTPError(403, f"client {client} is not in --allow-ip")
        if self.config.api_key and path not in OPEN_PATHS:
            given = _header(scope, b"authorization") or ""
            expected = f"Bearer {self.config.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")


def _labels(path: str, names: set[str]) -> tuple[str, str]:
    parts = path.strip("/").split("/")
    if len(parts) >= 3 and parts[0] == "v2" and parts[1] == "models":
        model = parts[2] if parts[2] in names else "_unknown"  # bounded label cardinality
        return model, parts[3] if len(parts) > 3 else "metadata"
    return "", "/".join(parts[:3]) or "/"


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_json(send, status: int, body: dict, extra: dict | None = None) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    headers += list((extra or {}).items())
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
    except RuntimeError:
        pass  # a response had already started; the client sees a truncated reply


# -- the v2 binary tensor extension ------------------------------------------------------------

def _split_binary(raw, header_len: str | None):
    """(JSON header bytes, binary section as a zero-copy memoryview or None)."""
    if header_len is None:
        return raw, None
    if not header_len.isdigit() or int(header_len) > len(raw):
        raise HTTPError(400, f"Inference-Header-Content-Length {header_len!r} does not fit a {len(raw)}-byte body")
    n = int(header_len)
    view = memoryview(raw)
    return bytes(view[:n]), view[n:]


def _inline_binary_inputs(payload, binary: memoryview, model: Model):
    """Replace inputs sent as binary_data_size with arrays read from the binary section (in order)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        return payload
    offset = 0
    for tensor in payload["inputs"]:
        size = (tensor.get("parameters") or {}).get("binary_data_size") if isinstance(tensor, dict) else None
        if size is None:
            continue
        if not isinstance(size, int) or offset + size > len(binary):
            raise HTTPError(400, f"binary_data_size {size!r} of input {tensor.get('name')!r} overruns the body")
        dtype = DATATYPES.get(tensor.get("datatype"))
        if dtype is None:
            raise HTTPError(400, f"input {tensor.get('name')!r}: unsupported datatype {tensor.get('datatype')!r}")
        if size % np.dtype(dtype).itemsize:
            raise HTTPError(400, f"input {tensor.get('name')!r}: {size} bytes is not a whole number of "
                                 f"{tensor.get('datatype')} values")
        tensor["data"] = np.frombuffer(binary, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset)
        offset += size
    return payload


def _wants_binary(payload) -> bool:
    return isinstance(payload, dict) and bool((payload.get("parameters") or {}).get("binary_data_output"))


def _binary_response(response: dict, outputs: list[np.ndarray], names: list[str], wanted) -> Response:
    blobs = []
    chosen = [a for n, a in zip(names, outputs) if wanted is None or n in wanted]
    for entry, array in zip(response["outputs"], chosen):
        blob = np.ascontiguousarray(array).tobytes()
        entry.pop("data")
        entry["parameters"] = {"binary_data_size": len(blob)}
        blobs.append(blob)
    header = json.dumps(response).encode()
    return Response(header + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})
