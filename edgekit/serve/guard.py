"""The ASGI layer in front of the routes: who is asking, may they, how long they may take.

- Client address: the TCP peer, unless the peer is a `--trusted-proxy`; only then is the one
  proxy header chosen with `--proxy-header` read, right to left, skipping trusted hops. Reading
  every proxy header would let a client forge the one its proxy passes through untouched.
- Access: `--allow-ip` on that address, then the API key.
- Body: a deadline on receiving it (`--body-timeout`, a 408), and a connection whose body was not
  fully read when the answer starts is closed, so a trickled body cannot hold it open.
- Metrics: labelled by route template and served model name, so hostile paths add no series.
- Errors: anything escaping the app becomes a JSON `{"error": ...}`.
"""
from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import time

from ..errors import InputError

OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/", "/ui/app.js", "/ui/style.css")  # ui.py: the page asks for the key
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
CLOSES_CONNECTION = (408, 413, 431)  # the rest of the request is unread or unwanted


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def parse_networks(text: str, option: str) -> tuple:
    """'10.0.0.0/8, ::1' -> ip_network objects; InputError naming the option otherwise."""
    try:
        return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in text.split(",") if c.strip())
    except ValueError as e:
        raise InputError(f"{option} expects CIDRs like 192.168.1.0/24, got {text!r}: {e}") from None


def parse_uint(text: str | None) -> int | None:
    """A header's non-negative integer, or None. `str.isdigit` alone accepts '²', which int() refuses."""
    if text is None or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


class Guard:
    """Plain ASGI rather than BaseHTTPMiddleware: it adds microseconds, not a task per request."""

    def __init__(self, app, config, metrics, names: set[str]):
        self.app, self.config, self.metrics, self.names = app, config, metrics, names
        self.state = app.state
        # (compiled regex, template, has a model name) of every route, for bounded metric labels
        self.routes = [(r.path_regex, r.path, "name" in r.param_convertors) for r in app.routes]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        model, endpoint = self.labels(scope["path"])
        body = _BodyTracker(scope, receive, self.config.body_timeout)
        status = {"code": 500}

        async def send_tracking(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = message.get("headers", [])
                if not body.complete and (b"connection", b"close") not in headers:
                    # answering before the whole body arrived: close rather than read the rest
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            self._check_access(scope)
            declared = parse_uint(_header(scope, b"content-length"))
            if declared is not None and declared > self.config.max_body_bytes:
                raise HTTPError(413, f"request body of {declared} bytes is over the {self.config.max_body_bytes} "
                                     "byte limit (--max-body-mb)")
            await self.app(scope, body.receive, send_tracking)
        except HTTPError as e:
            await send_error(send_tracking, e.status, e.message)
        except Exception as e:  # nothing a request does may take the server down
            await send_error(send_tracking, 500, f"internal error: {type(e).__name__}: {e}")
        finally:
            self.metrics.requests.labels(model, endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(model, endpoint).observe(time.perf_counter() - start)

    def labels(self, path: str) -> tuple[str, str]:
        """(model, endpoint) metric labels: the route template and a served model name, else
        'other'; never the raw path, which a client controls (13,000 paths were 57k series)."""
        for regex, template, has_model in self.routes:
            match = regex.match(path)
            if match and not has_model:
                return "", template
            if match:
                return (match.group("name") if match.group("name") in self.names else "other"), template
        return "", "other"

    def _check_access(self, scope) -> None:
        client = client_address(scope, self.config.trusted_proxies, self.config.proxy_header)
        if self.config.allow_ips:
            if client is None:
                raise HTTPError(403, f"client address not determinable from the {self.config.proxy_header} header "
                                     "sent by the trusted proxy; expected IP addresses")
            if not any(client in net for net in self.config.allow_ips):
                raise HTTPError(403, f"client {client} is not in --allow-ip")
        if self.config.api_key and scope["path"] not in OPEN_PATHS:
            given = _header(scope, b"authorization") or ""
            expected = f"Bearer {self.config.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                raise HTTPError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'")


class _BodyTracker:
    """Wraps `receive`: a deadline on the whole body, and whether it has all arrived."""

    def __init__(self, scope, receive, timeout: float):
        self._receive, self.timeout = receive, timeout
        length = parse_uint(_header(scope, b"content-length"))
        chunked = "chunked" in (_header(scope, b"transfer-encoding") or "").lower()
        self.complete = not chunked and not length  # no body declared: nothing left unread
        self._deadline: float | None = None

    async def receive(self):
        if self.complete:  # afterwards Starlette only listens for a disconnect: no deadline
            return await self._receive()
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self.timeout
        try:  # wait_for, not asyncio.timeout: the package supports Python 3.10
            message = await asyncio.wait_for(self._receive(), max(self._deadline - loop.time(), 0.0))
        except asyncio.TimeoutError:
            raise HTTPError(408, f"request body not received within {self.timeout:g} s (--body-timeout); "
                                 "send it in one go or raise the limit") from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self.complete = True
        return message


def client_address(scope, trusted: tuple, header: str):
    """The address access rules apply to (an ip_address, or None when a trusted proxy's header
    holds something else). Rewrites scope["client"] so the app sees the same address."""
    peer = (scope.get("client") or ("", 0))[0]
    address = _ip(peer)
    if address is None or not any(address in net for net in trusted):
        return address  # the TCP peer decides; its headers are the client's own words
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == header.encode()]
    if not values:
        return address
    hops = _hops(header, values)
    for hop in reversed(hops):  # nearest hop last: walk back through our own proxies
        hop_address = _ip(hop)
        if hop_address is None:
            return None
        if not any(hop_address in net for net in trusted):
            address = hop_address
            break
    else:
        address = _ip(hops[0]) if hops else address  # every hop is a trusted proxy
    scope["client"] = (str(address), 0)
    return address


def _hops(header: str, values: list[str]) -> list[str]:
    if header == "x-real-ip":
        return [values[-1].strip()]  # a single address, set (overwritten) by the proxy
    hops = [h.strip() for v in values for h in v.split(",")]
    if header == "forwarded":  # RFC 7239: for=192.0.2.1;proto=http, for="[2001:db8::1]:80"
        found = []
        for element in hops:
            pairs = dict(p.strip().split("=", 1) for p in element.split(";") if "=" in p)
            pairs = {k.strip().lower(): v.strip().strip('"') for k, v in pairs.items()}
            found.append(pairs.get("for", ""))
        return found
    return hops


def _ip(text: str):
    """'1.2.3.4', '1.2.3.4:80', '[::1]:80', '::1' -> ip_address, else None ('unknown', '_hidden')."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def send_error(send, status: int, message: str) -> None:
    data = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if status in CLOSES_CONNECTION:
        headers.append((b"connection", b"close"))
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
    except RuntimeError:
        pass  # a response had already started; the client sees a truncated reply
