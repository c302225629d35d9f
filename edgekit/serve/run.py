"""Run the app on uvicorn, stopping cleanly (exit 0) on SIGINT/SIGTERM."""
from __future__ import annotations

import contextlib
import signal

import uvicorn


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):
        # uvicorn re-raises the signal after its graceful shutdown, so a server stopped on
        # request would die with status 143; a clean, requested stop should exit 0.
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def run_server(app, host: str, port: int) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10)
    _Server(config).run()
