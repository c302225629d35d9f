"""The Starlette application behind `edgekit serve`.

Routes (Open Inference Protocol v2, plus an image convenience endpoint and metrics):
  GET  /v2/health/live  /v2/health/ready  /v2  /v2/models/{name}  /v2/models/{name}/ready
  GET  /v2/models/{name}/config     Triton's model configuration (tritonclient reads it)
  POST /v2/models/{name}/infer      JSON tensors, or the v2 binary-tensor extension (per output binary_data)
  POST /v2/models/{name}/classify   an image (raw body or multipart "file") -> top-k labels
  GET  /v2/models/{name}/manifest   the artifact's manifest and size (for the web page)
  GET  /v2/models/{name}/stats      drift of recent inputs/outputs from the manifest's reference_stats (JSON)
  every /v2/models/{name}/... also as /v2/models/{name}/versions/1/...; other versions are a 404
  POST /v2/repository/index         served models (Triton's repository extension, read-only)
  GET  /metrics                     Prometheus text format
  GET  /                            the web page (--ui), see ui.py
Inference and image decoding run in worker threads (the runtime is thread-safe); the event loop
only parses, validates and answers, so a slow model never blocks health checks. guard.Guard wraps
the app (access, body deadline, metrics, JSON errors); every error a request causes is a 4xx with
{"error": "..."}, a 5xx only when the model or the server fails.
"""
from __future__ import annotations

import contextlib
import io
import json
import time
import warnings
from dataclasses import dataclass

import anyio.to_thread
import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import EdgekitError
from ..monitor.model import MonitoredModel
from ..predictor import Predictor
from .engine import VERSION, Engine, InferenceFailed, UnknownModel, server_info
from .guard import CLOSES_CONNECTION, Guard, HTTPError, parse_uint
from .metrics import ServerMetrics
from .protocol import (DATATYPE_OF, DATATYPES, ProtocolError, binary_outputs, check_request, decode_inputs,
                       model_config, requested_outputs, show, tensor_metadata)
from .ui import ui_routes

BINARY_HEADER = "inference-header-content-length"
# Parsers a client may reach through /classify: common camera/web formats only (Pillow would
# otherwise also try EPS, which runs Ghostscript, and a few dozen rarer decoders).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF")


@dataclass
class ServerConfig:
    api_key: str | None = None
    allow_ips: tuple = ()            # ip_network objects; empty = everyone who can reach the port
    trusted_proxies: tuple = ()      # ip_network objects whose proxy header names the client
    proxy_header: str = "x-forwarded-for"
    max_batch: int = 1               # >1 turns on micro-batching for resizable-batch models
    batch_timeout_ms: float = 2.0
    max_body_bytes: int = 32 * 2**20
    # A JSON tensor costs 10-20x its text once parsed (a Python object per number): 31 MB of
    # "0," cost +300 MB. Large tensors belong in the binary extension, which costs its size.
    max_json_bytes: int = 4 * 2**20
    max_image_pixels: int = 25_000_000  # 24 MP photos pass; a 160 KB 13000x13000 PNG (+806 MB) does not
    body_timeout: float = 30.0          # seconds to receive a whole request body
    ui: bool = False                    # the web page at / (edgekit/serve/static)
    grpc_port: int | None = None        # the protocol's gRPC service too, on this port
    host: str = "127.0.0.1"             # where gRPC binds (REST's socket is uvicorn's)
    monitor: bool = True                # drift monitoring for models whose manifest has reference_stats
    drift_window: int = 200             # predictions per sliding drift window
    drift_every: int = 100              # evaluate the window every this many predictions (half a window)


def create_app(models: dict[str, Predictor], config: ServerConfig) -> Starlette:
    metrics = ServerMetrics()
    models = _monitored(models, config, metrics)
    engine = Engine(models, metrics, config.max_batch, config.batch_timeout_ms)

    def served(request: Request) -> Predictor:
        try:
            return engine.model(request.path_params["name"], request.path_params.get("version"))
        except UnknownModel as e:
            raise HTTPError(404, e.message) from None

    async def run_model(name: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return await engine.run(name, arrays)
        except ProtocolError as e:
            raise HTTPError(400, str(e)) from None
        except InferenceFailed as e:
            raise HTTPError(500, str(e)) from None

    async def read_body(request: Request, limit: int | None = None, option: str = "--max-body-mb") -> bytearray:
        """The whole body, within the size limit, in one growing buffer (a 600 KB tensor is copied
        once, not gathered and joined). Not preallocated from Content-Length: memory follows the
        bytes actually sent, so connections that declare 32 MB and stall cost nothing."""
        limit = min(limit or config.max_body_bytes, config.max_body_bytes)
        expected = parse_uint(request.headers.get("content-length"))
        if expected is not None and expected > limit:  # refused before a byte is read
            raise HTTPError(413, f"request body of {expected} bytes is over the {limit} byte limit ({option})")
        buffer = bytearray()
        try:
            async for chunk in request.stream():
                if len(buffer) + len(chunk) > limit:
                    raise HTTPError(413, f"request body over the {limit} byte limit ({option})")
                buffer += chunk
        except ClientDisconnect:
            raise HTTPError(400, "client disconnected before sending the whole body") from None
        return buffer

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        return JSONResponse({"ready": True})

    async def server_metadata(request: Request) -> Response:
        return JSONResponse(server_info())

    async def model_metadata(request: Request) -> Response:
        model = served(request)
        return JSONResponse(model_info(request.path_params["name"], model))

    async def model_ready(request: Request) -> Response:
        served(request)  # loaded at start-up: a served model is always ready
        return JSONResponse({"name": request.path_params["name"], "ready": True})

    async def model_config_route(request: Request) -> Response:
        model = served(request)
        return JSONResponse(model_config(request.path_params["name"], model.inputs, model.outputs,
                                         f"tflite ({model.backend})"))

    async def model_manifest(request: Request) -> Response:
        """edgekit's extension for the web page: what the converter recorded (recipe, parity...)."""
        model = served(request)
        manifest = model.manifest.to_dict() if model.manifest else None
        return JSONResponse({"name": request.path_params["name"], "size_bytes": model.size_bytes,
                             "manifest": manifest})

    async def repository_index(request: Request) -> Response:
        # Triton's model repository extension, read-only: tritonclient's get_model_repository_index
        return JSONResponse([{"name": n, "version": VERSION, "state": "READY"} for n in sorted(models)])

    async def infer(request: Request) -> Response:
        name = request.path_params["name"]
        model = served(request)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":  # decompressing would need its own bomb limits; send the tensors uncompressed
            raise HTTPError(415, f"Content-Encoding {show(encoding)} is not supported; send the request uncompressed")
        header_len = request.headers.get(BINARY_HEADER)
        if header_len is None:  # all JSON: held to the lower JSON limit before reading
            raw = await read_body(request, config.max_json_bytes, "--max-json-mb; large tensors: binary extension")
        else:
            raw = await read_body(request)
        body, binary = _split_binary(raw, header_len, config.max_json_bytes)
        payload = _parse_json(body)
        names = [t.name for t in model.outputs]
        try:
            check_request(payload)  # types first: nothing below can hash a list or .get() on one
            if binary is not None:
                _inline_binary_inputs(payload, binary)
            arrays = decode_inputs(payload, model.inputs)
            wanted = requested_outputs(payload, names)
            as_binary = binary_outputs(payload, names)
        except ProtocolError as e:
            raise HTTPError(400, str(e)) from None
        outputs = await run_model(name, arrays)
        chosen = [(n, a) for n, a in zip(names, outputs) if wanted is None or n in wanted]
        response = {"model_name": name, "model_version": VERSION}
        if "id" in payload:
            response["id"] = payload["id"]
        return _infer_response(response, chosen, as_binary)

    async def classify(request: Request) -> Response:
        name = request.path_params["name"]
        model = served(request)
        top_k = parse_uint(request.query_params.get("top_k", "5"))
        if not top_k:
            raise HTTPError(400, f"top_k must be a positive integer, got {show(request.query_params.get('top_k'))}")
        if model.preprocessing is None:
            raise HTTPError(400, f"model {name!r} has no image preprocessing in its manifest; use /infer with tensors")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            if (parse_uint(request.headers.get("content-length")) or 0) > config.max_body_bytes:
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
        picture = _open_image(image, config.max_image_pixels)
        try:  # decoding takes a while for a large photo: off the event loop, like inference
            arrays = await anyio.to_thread.run_sync(model.to_arrays, picture)
        except EdgekitError as e:
            raise HTTPError(400, str(e)) from None
        except Exception as e:  # a decoder choking on a corrupt file: Pillow raises SyntaxError, struct.error...
            raise HTTPError(400, f"expected an image Pillow can decode, got one it fails on: "
                                 f"{type(e).__name__}: {show(str(e))}") from None
        outputs = await run_model(name, arrays)
        scores = outputs[0][0]
        top = model.top_k(scores, top_k)
        return JSONResponse({"model_name": name, "predictions": [{"label": l, "score": s} for l, s in top],
                             "latency_ms": round((time.perf_counter() - start) * 1e3, 3)})

    async def drift_stats(request: Request) -> Response:
        model = served(request)
        if not isinstance(model, MonitoredModel):
            why = "monitoring is off (--no-monitor)" if not config.monitor else "its manifest has no reference_stats"
            raise HTTPError(404, f"no drift statistics for model {request.path_params['name']!r}: {why}; "
                                 "re-convert it with edgekit convert --validate DATA and serve it with monitoring on")
        return JSONResponse(await anyio.to_thread.run_sync(model.drift))

    async def prometheus(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    model_routes = [  # each also under /versions/{version}, as the protocol states (only "1" exists)
        ("", model_metadata, ["GET"]), ("/ready", model_ready, ["GET"]), ("/config", model_config_route, ["GET"]),
        ("/infer", infer, ["POST"]), ("/classify", classify, ["POST"]), ("/manifest", model_manifest, ["GET"]),
        ("/stats", drift_stats, ["GET"]),
    ]
    routes = [
        Route("/v2/health/live", live), Route("/v2/health/ready", ready), Route("/v2", server_metadata),
        Route("/v2/repository/index", repository_index, methods=["POST"]),
        *[Route(f"/v2/models/{{name}}{suffix}", fn, methods=m) for suffix, fn, m in model_routes],
        *[Route(f"/v2/models/{{name}}/versions/{{version}}{suffix}", fn, methods=m) for suffix, fn, m in model_routes],
        Route("/metrics", prometheus),
    ]
    if config.ui:
        routes += ui_routes()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        engine.start()
        grpc_server = None
        if config.grpc_port is not None:  # imported only when asked for: grpcio is ~10 MB of import
            from .grpc.service import start_grpc

            grpc_server = await start_grpc(engine, config)
        yield
        if grpc_server is not None:
            await grpc_server.stop(grace=5)
        await engine.stop()

    async def http_error(request: Request, exc: HTTPError) -> Response:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        if exc.status in CLOSES_CONNECTION:
            headers["Connection"] = "close"
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)

    async def starlette_error(request: Request, exc: HTTPException) -> Response:
        # the router's 404/405 and a malformed multipart form: the protocol's JSON, not plain text
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={HTTPError: http_error, HTTPException: starlette_error,
                                        Exception: unexpected})
    app.state.metrics, app.state.batchers, app.state.engine = metrics, engine.batchers, engine
    return Guard(app, config, metrics, set(models))


def _monitored(models: dict, config: ServerConfig, metrics: ServerMetrics) -> dict:
    """Wrap each model that carries reference_stats so every batch it runs feeds its drift window
    (direct and micro-batched requests alike); each evaluated window updates the Prometheus gauges."""
    if not config.monitor:
        return models
    wrapped = {}
    for name, model in models.items():
        if model.manifest is not None and model.manifest.reference_stats:
            model = MonitoredModel(model, name, config.drift_window, config.drift_every)
            model.monitor.listeners.append(metrics.record_drift)
        wrapped[name] = model
    return wrapped


def model_info(name: str, model: Predictor) -> dict:
    body = {"name": name, "versions": [VERSION], "platform": f"{model.format} ({model.backend})",
            "inputs": [tensor_metadata(t) for t in model.inputs],
            "outputs": [tensor_metadata(t) for t in model.outputs]}
    if model.labels:
        body["parameters"] = {"labels": model.labels}
    return body


# -- /classify images ---------------------------------------------------------------------------

def _open_image(data: bytes | bytearray, max_pixels: int):
    """A lazily opened image whose declared size is within max_pixels. Image.open reads only the
    header, so a 160 KB PNG declaring 13000x13000 (806 MB once decoded) is refused for free."""
    from PIL import Image, UnidentifiedImageError

    try:
        # Pillow warns past its own MAX_IMAGE_PIXELS (89 MP) and raises past twice that; as errors
        # here, both land in the 413 below. (The filter swap is on the event loop thread only.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise HTTPError(413, f"image over the {max_pixels}-pixel limit (--max-image-pixels; Pillow: {e}); "
                             "send it downscaled") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise HTTPError(400, f"expected a {'/'.join(IMAGE_FORMATS)} image Pillow can read, got {len(data)} bytes: "
                             f"{show(str(e))}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise HTTPError(413, f"image of {width}x{height} = {width * height} pixels is over the {max_pixels}-pixel "
                             "limit (--max-image-pixels); send it downscaled")
    return image


# -- the v2 binary tensor extension ------------------------------------------------------------

def _split_binary(raw, header_len: str | None, max_json_bytes: int):
    """(JSON header bytes, binary section as a zero-copy memoryview or None)."""
    if header_len is None:
        return raw, None
    n = parse_uint(header_len)
    if n is None or n > len(raw):
        raise HTTPError(400, f"Inference-Header-Content-Length {show(header_len)} does not fit a {len(raw)}-byte "
                             "body; expected the JSON header's length in bytes")
    if n > max_json_bytes:
        raise HTTPError(413, f"JSON header of {n} bytes is over the {max_json_bytes} byte limit (--max-json-mb)")
    view = memoryview(raw)
    return bytes(view[:n]), view[n:]


def _parse_json(body) -> dict:
    try:
        return json.loads(body)
    except RecursionError:
        raise HTTPError(400, "malformed JSON body: nested too deeply for an inference request") from None
    except ValueError as e:  # also bad UTF-8, and integers over Python's 4300-digit limit
        raise HTTPError(400, f"malformed JSON body: {show(str(e))}") from None


def _inline_binary_inputs(payload: dict, binary: memoryview) -> None:
    """Replace inputs sent as binary_data_size with arrays read from the binary section (in order).
    The payload's structure is already checked (protocol.check_request)."""
    offset = 0
    for tensor in payload["inputs"]:
        size = tensor.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        name = show(tensor.get("name"))
        # bool is an int to Python, and a negative count made numpy read "the rest"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise ProtocolError(f"input {name}: binary_data_size {show(size)} does not fit the "
                                f"{len(binary) - offset} bytes left; expected a byte count")
        dtype = DATATYPES.get(tensor.get("datatype"))
        if dtype is None:
            raise ProtocolError(f"input {name}: unsupported datatype {show(tensor.get('datatype'))}; "
                                f"expected one of {sorted(DATATYPES)}")
        if size % np.dtype(dtype).itemsize:
            raise ProtocolError(f"input {name}: {size} bytes is not a whole number of {tensor['datatype']} values")
        tensor["data"] = np.frombuffer(binary, dtype=dtype, count=size // np.dtype(dtype).itemsize, offset=offset)
        offset += size


def _infer_response(response: dict, chosen: list, as_binary: set[str]) -> Response:
    """Outputs named in as_binary go in the binary section, in output order, after the JSON header."""
    blobs, entries = [], []
    for name, array in chosen:
        entry = {"name": name, "shape": list(array.shape), "datatype": DATATYPE_OF.get(array.dtype.name, "FP32")}
        if name in as_binary:
            blob = np.ascontiguousarray(array).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = array.ravel().tolist()
        entries.append(entry)
    response["outputs"] = entries
    if not blobs:
        return JSONResponse(response)
    header = json.dumps(response).encode()
    return Response(header + b"".join(blobs), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})
