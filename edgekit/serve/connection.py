"""uvicorn's httptools protocol with bounds on the request head: time and size.

uvicorn (0.54) times out only idle keep-alive connections (`timeout_keep_alive`), and only after a
response: a connection that opens and sends nothing, or half a header line every few seconds
(slowloris), stays open for ever, and httptools puts no limit on header bytes. Here every request
head must arrive within `header_timeout` seconds of its first byte (of the connection, for the
first request) and within `max_header_bytes`; otherwise the client gets a 408/431 and the
connection closes. The body's own deadline is the app's (guard.py), where it can answer in JSON.
"""
from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024  # request line + headers; browsers and clients send well under 16 KB


class BoundedHeadProtocol(HttpToolsProtocol):
    header_timeout = 10.0
    max_header_bytes = MAX_HEADER_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._awaiting_head = True
        self._arm()  # a connection that never sends a byte is closed too

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:  # per read, so one read (<= 256 KB) of a whole head may pass; many may not
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing() or not self._awaiting_head:
            return
        if self._head_bytes > self.max_header_bytes:
            self._refuse(431, f"request head over {self.max_header_bytes} bytes")
        elif self._idle():
            self._arm()  # bytes between requests (even bare CRLFs) start the clock; uvicorn's stops

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._awaiting_head, self._head_bytes = False, 0
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._awaiting_head = True  # what follows is the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_timer is None:  # keep the first deadline: trickling bytes must not extend it
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self._refuse(408, f"request head not received within {self.header_timeout:g} s")

    def _refuse(self, status: int, message: str) -> None:
        """Answer in the protocol's JSON if no response is under way, then close."""
        self._disarm()
        if self._idle():
            body = json.dumps({"error": message}).encode()
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        self.transport.close()


def bounded_protocol(header_timeout: float, max_header_bytes: int = MAX_HEADER_BYTES) -> type:
    """The protocol class for uvicorn.Config(http=...), with these bounds."""
    return type("BoundedHeadProtocol", (BoundedHeadProtocol,),
                {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes})
