"""GRPCInferenceService on grpc.aio, in the same event loop as the REST app (started from its
lifespan), so both protocols share the loaded models, the micro-batchers (asyncio queues of that
loop) and the metrics registry; access rules are the REST ones.

- Access: `--allow-ip` on the TCP peer (proxy headers have no gRPC equivalent here: a trusted proxy's
  clients are not told apart), then the API key as metadata `authorization: Bearer KEY`; ServerLive
  and ServerReady stay open, like /v2/health/*.
- Errors: unknown model NOT_FOUND, bad request INVALID_ARGUMENT, model failure INTERNAL, access
  PERMISSION_DENIED / UNAUTHENTICATED; one line each, as over REST.
- Tensors: raw_input_contents (what tritonclient sends) or typed contents; answered the same way.
- Metrics: endpoint `grpc:<Method>`, status the gRPC code name (OK, NOT_FOUND...).
"""
from __future__ import annotations

import functools
import hmac
import json
import time

import grpc
import numpy as np
from grpc import aio

from ...errors import InputError
from ..engine import VERSION, InferenceFailed, UnknownModel, server_info
from ..guard import _ip
from ..protocol import (DATATYPE_OF, DATATYPES, ProtocolError, decode_inputs, requested_outputs, show,
                        tensor_metadata)
from . import open_inference_grpc_pb2 as pb
from . import open_inference_grpc_pb2_grpc as pb_grpc

# InferTensorContents field per datatype; FP16 has none (raw_input_contents only)
TYPED = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
         "INT64": "int64_contents", "UINT8": "uint_contents", "FP32": "fp32_contents", "FP64": "fp64_contents"}
OPEN_METHODS = ("ServerLive", "ServerReady")


class _Refused(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _rpc(method):
    """Access check, error mapping and metrics around one RPC."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self, request, context):
        start, code = time.perf_counter(), grpc.StatusCode.OK
        model = getattr(request, "name", "") or getattr(request, "model_name", "")
        try:
            self.check_access(context, name)
            return await method(self, request, context)
        except _Refused as e:
            code, message = e.code, e.message
        except UnknownModel as e:
            code, message = grpc.StatusCode.NOT_FOUND, e.message
        except ProtocolError as e:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(e)
        except InferenceFailed as e:
            code, message = grpc.StatusCode.INTERNAL, str(e)
        except Exception as e:  # nothing a request does may take the server down
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"
        finally:
            label = model if model in self.engine.models else ("other" if model else "")
            self.metrics.requests.labels(label, f"grpc:{name}", code.name).inc()
            self.metrics.latency.labels(label, f"grpc:{name}").observe(time.perf_counter() - start)
        await context.abort(code, message)
    return wrapper


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, engine, config):
        self.engine, self.config, self.metrics = engine, config, engine.metrics

    def check_access(self, context, method: str) -> None:
        if self.config.allow_ips:
            client = _peer_address(context.peer())
            if client is None or not any(client in net for net in self.config.allow_ips):
                raise _Refused(grpc.StatusCode.PERMISSION_DENIED, f"client {context.peer()} is not in --allow-ip")
        if self.config.api_key and method not in OPEN_METHODS:
            given = dict(context.invocation_metadata() or ()).get("authorization", "")
            if isinstance(given, bytes):
                given = given.decode("latin-1")
            if not hmac.compare_digest(given.encode(), f"Bearer {self.config.api_key}".encode()):
                raise _Refused(grpc.StatusCode.UNAUTHENTICATED,
                               "missing or wrong API key: send metadata 'authorization: Bearer <key>'")

    @_rpc
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    @_rpc
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    @_rpc
    async def ModelReady(self, request, context):
        # a probe's answer: an unknown model or version is "not ready", as tritonclient's is_model_ready expects
        try:
            self.engine.model(request.name, request.version)
        except UnknownModel:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    @_rpc
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(**server_info())

    @_rpc
    async def ModelMetadata(self, request, context):
        model = self.engine.model(request.name, request.version)
        tensors = [pb.ModelMetadataResponse.TensorMetadata(**tensor_metadata(t)) for t in model.inputs]
        outputs = [pb.ModelMetadataResponse.TensorMetadata(**tensor_metadata(t)) for t in model.outputs]
        properties = {"labels": json.dumps(model.labels)} if model.labels else {}
        return pb.ModelMetadataResponse(name=request.name, versions=[VERSION], platform=f"{model.format} ({model.backend})",
                                        inputs=tensors, outputs=outputs, properties=properties)

    @_rpc
    async def ModelInfer(self, request, context):
        model = self.engine.model(request.model_name, request.model_version)
        payload = {"inputs": _inputs(request),
                   "outputs": [{"name": o.name} for o in request.outputs] if request.outputs else None}
        for o in request.outputs:
            if "classification" in o.parameters:
                raise ProtocolError(f"output {show(o.name)}: the classification extension is not supported; "
                                    "use POST /v2/models/{name}/classify for top-k labels")
        if payload["outputs"] is None:
            del payload["outputs"]
        names = [t.name for t in model.outputs]
        arrays = decode_inputs(payload, model.inputs)
        wanted = requested_outputs(payload, names)
        outputs = await self.engine.run(request.model_name, arrays)
        raw = bool(request.raw_input_contents)  # answer the way the client asked
        response = pb.ModelInferResponse(model_name=request.model_name, model_version=VERSION, id=request.id)
        for name, array in zip(names, outputs):
            if wanted is not None and name not in wanted:
                continue
            datatype = DATATYPE_OF.get(array.dtype.name, "FP32")
            tensor = response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
            if raw or datatype not in TYPED:
                response.raw_output_contents.append(np.ascontiguousarray(array).tobytes())
            else:
                getattr(tensor.contents, TYPED[datatype]).extend(array.ravel().tolist())
        return response


def _inputs(request) -> list[dict]:
    """The request's tensors as protocol.decode_inputs takes them (which checks shapes and types)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; expected one per input")
    tensors = []
    for i, t in enumerate(request.inputs):
        dtype = DATATYPES.get(t.datatype)
        if dtype is None:
            raise ProtocolError(f"input {show(t.name)}: unsupported datatype {show(t.datatype)}; "
                                f"expected one of {sorted(DATATYPES)}")
        if raw:
            size = np.dtype(dtype).itemsize
            if len(raw[i]) % size:
                raise ProtocolError(f"input {show(t.name)}: {len(raw[i])} bytes is not a whole number of "
                                    f"{t.datatype} values")
            data = np.frombuffer(raw[i], dtype=dtype)
        elif t.datatype in TYPED:
            data = list(getattr(t.contents, TYPED[t.datatype]))  # a list: out-of-range ints are refused, not wrapped
        else:
            raise ProtocolError(f"input {show(t.name)}: {t.datatype} has no typed contents; send raw_input_contents")
        tensors.append({"name": t.name, "datatype": t.datatype, "shape": list(t.shape), "data": data})
    return tensors


def _peer_address(peer: str):
    """'ipv4:127.0.0.1:5000' / 'ipv6:[::1]:5000' -> ip_address; None for unix sockets and the like."""
    kind, _, rest = peer.partition(":")
    return _ip(rest) if kind in ("ipv4", "ipv6") else None


async def start_grpc(engine, config) -> aio.Server:
    # the REST body limit applies to a gRPC message too (grpc's default is 4 MB)
    # so_reuseport 0: grpc's default (1) let a second server bind the same port and silently take
    # half of the connections
    server = aio.server(options=[("grpc.max_receive_message_length", config.max_body_bytes),
                                 ("grpc.max_send_message_length", config.max_body_bytes),
                                 ("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(engine, config), server)
    host = f"[{config.host}]" if ":" in config.host else config.host
    try:
        server.add_insecure_port(f"{host}:{config.grpc_port}")
    except RuntimeError as e:
        raise InputError(f"cannot listen for gRPC on {host}:{config.grpc_port} ({e}); is the port taken?") from None
    await server.start()
    return server
