"""The served models and how they run, shared by the REST app and the gRPC service: one set of
interpreters, one micro-batcher per model and one metrics registry, whichever protocol a request
came in on (two batchers would halve the batches and double the threads contending for 2 cores).

Errors are protocol-neutral; each front end maps them to its status codes:
  UnknownModel -> 404 / NOT_FOUND, ProtocolError -> 400 / INVALID_ARGUMENT, InferenceFailed -> 500 / INTERNAL.
"""
from __future__ import annotations

import time

import anyio.to_thread
import numpy as np

from .. import __version__
from ..errors import InputError
from ..predictor import Predictor
from .batching import MicroBatcher
from .metrics import ServerMetrics
from .protocol import ProtocolError

VERSION = "1"  # one artifact per name: the protocol's version is always "1" (or left out)


class UnknownModel(LookupError):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InferenceFailed(RuntimeError):
    """The model or the runtime failed on a valid request: the server's fault, not the client's."""


class Engine:
    def __init__(self, models: dict[str, Predictor], metrics: ServerMetrics, max_batch: int = 1,
                 batch_timeout_ms: float = 2.0):
        self.models, self.metrics = models, metrics
        self.max_batch, self.batch_timeout_ms = max_batch, batch_timeout_ms
        self.batchers: dict[str, MicroBatcher] = {}

    def model(self, name: str, version: str | None = None) -> Predictor:
        if name not in self.models:
            raise UnknownModel(f"unknown model {name!r}; serving {sorted(self.models)}")
        if version not in (None, "", VERSION):
            raise UnknownModel(f"model {name!r} has no version {version!r}; its versions are [{VERSION!r}]")
        return self.models[name]

    def start(self) -> None:
        """Start the micro-batchers; needs the running event loop both front ends share."""
        for name, model in self.models.items():
            if self.max_batch > 1 and model.resizable_batch:
                self.batchers[name] = MicroBatcher(name, model, self.metrics, self.max_batch, self.batch_timeout_ms)
                self.batchers[name].start()

    async def stop(self) -> None:
        for b in self.batchers.values():
            await b.stop()

    async def run(self, name: str, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs of a served model; ProtocolError when the arrays do not fit it, InferenceFailed
        when it fails (the server keeps serving)."""
        try:
            if name in self.batchers:
                return await self.batchers[name].submit(arrays)
            start = time.perf_counter()
            outputs = await anyio.to_thread.run_sync(self.models[name].run, arrays)
            self.metrics.inference.labels(name).observe(time.perf_counter() - start)
            self.metrics.batch_size.labels(name).observe(arrays[0].shape[0])
            return outputs
        except InputError as e:  # the arrays do not fit the model: the client's to fix
            raise ProtocolError(str(e)) from None
        except Exception as e:  # the runtime's ArtifactError, or worse: report it, keep serving
            raise InferenceFailed(f"inference failed: {type(e).__name__}: {e}") from None


def server_info() -> dict:
    """The protocol's server metadata, for both front ends."""
    return {"name": "edgekit", "version": __version__,
            "extensions": ["binary_tensor_data", "model_configuration", "model_repository(index)"]}
