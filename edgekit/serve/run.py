"""Run the app on uvicorn, stopping cleanly (exit 0) on SIGINT/SIGTERM."""
from __future__ import annotations

import contextlib
import signal
import socket

import uvicorn

from ..errors import InputError
from .connection import bounded_protocol


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


def run_server(app, host: str, port: int, header_timeout: float = 10.0, keep_alive: float = 5.0,
               loop: str = "auto") -> None:
    # proxy_headers=False: uvicorn's default rewrites the client address from X-Forwarded-For for
    # any request from 127.0.0.1 (FORWARDED_ALLOW_IPS), which let a local client claim to be on
    # the --allow-ip list. Proxy headers are edgekit's to read, and only from --trusted-proxy
    # peers (guard.py).
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10, proxy_headers=False, forwarded_allow_ips="",
                            http=bounded_protocol(header_timeout), timeout_keep_alive=keep_alive, loop=loop)
    _Server(config).run()


def ensure_port_free(host: str, port: int, option: str) -> None:
    """A one-line InputError now, rather than a traceback from the server's start-up: the gRPC
    server binds inside the app's lifespan, where uvicorn can only print a traceback and exit 3."""
    if port == 0:
        return
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, port))
    except OSError as e:
        raise InputError(f"{option} {port}: cannot listen on {host}:{port} ({e.strerror}); "
                         "is another server using it?") from None
