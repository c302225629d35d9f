"""Dynamic micro-batching: requests that arrive within a short window run as one batch.

A batch costs little more than one sample on a CPU that is otherwise idle between requests,
so under concurrency this trades up to `timeout_ms` of latency for throughput. Only for models
whose batch dimension can be resized; each request keeps its own batch size and gets its rows
back.
"""
from __future__ import annotations

import asyncio
import time

import anyio.to_thread
import numpy as np

from ..predictor import Predictor
from .metrics import ServerMetrics


class MicroBatcher:
    def __init__(self, name: str, model: Predictor, metrics: ServerMetrics, max_batch: int, timeout_ms: float):
        self.name, self.model, self.metrics = name, model, metrics
        self.max_batch, self.timeout = max_batch, timeout_ms / 1000.0
        self.queue: asyncio.Queue = asyncio.Queue()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((arrays, future))
        self.metrics.queue_depth.labels(self.name).set(self.queue.qsize())
        return await future

    async def _worker(self) -> None:
        while True:
            first = await self.queue.get()
            batch = [first]
            rows = first[0][0].shape[0]
            deadline = time.perf_counter() + self.timeout
            while rows < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
                batch.append(item)
                rows += item[0][0].shape[0]
            self.metrics.queue_depth.labels(self.name).set(self.queue.qsize())
            await self._run(batch)

    async def _run(self, batch: list) -> None:
        sizes = [arrays[0].shape[0] for arrays, _ in batch]
        stacked = [np.concatenate([arrays[k] for arrays, _ in batch]) for k in range(len(batch[0][0]))]
        start = time.perf_counter()
        try:
            outputs = await anyio.to_thread.run_sync(self.model.run, stacked)
        except Exception as e:  # every waiting request gets the failure; the worker lives on
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        self.metrics.inference.labels(self.name).observe(time.perf_counter() - start)
        self.metrics.batch_size.labels(self.name).observe(sum(sizes))
        offset = 0
        for (_, future), n in zip(batch, sizes):
            if not future.done():
                future.set_result([o[offset:offset + n] for o in outputs])
            offset += n
