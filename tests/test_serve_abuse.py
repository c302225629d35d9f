"""`edgekit serve` against hostile clients (issue #15 items 2-4), on the real server process.

Every bound below is a number, measured against this server on a loopback port: memory of the
server process (/proc/PID/status), /metrics size and time, health latency under load, how fast
slow connections are dropped, and that no malformed request earns a 5xx.
"""
from __future__ import annotations

import http.client
import json
import random
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import ROOT
from serve_process import ServeProcess

pytestmark = pytest.mark.serve

KEY = "abuse-key"
ARTIFACT = ROOT / "sample_models" / "artifacts" / "digits_cnn_int8.tflite"
# short timeouts so the slow-client tests take seconds, not the defaults' 10/30 s
TIMEOUTS = ("--header-timeout", "2", "--body-timeout", "2", "--keep-alive", "1")
VALID = {"inputs": [{"name": "image", "shape": [1, 32, 32, 1], "datatype": "FP32", "data": [0.5] * 1024}]}


def proc_kb(pid: int, field: str) -> int:
    """VmRSS (now) or VmHWM (peak) of a process, in KB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class Server(ServeProcess):
    """The shared subprocess server (tests/serve_process.py), plus raw connections and memory readings."""

    def __init__(self, log: Path, *args: str, env: dict | None = None):
        super().__init__(log, *args, env=env)

    def connect(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        """(status, body bytes); a fresh connection unless one is given."""
        c = conn or self.connect()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read()
        finally:
            if conn is None:
                c.close()

    def rss_kb(self) -> int:
        return proc_kb(self.proc.pid, "VmRSS")

    def peak_kb(self) -> int:
        return proc_kb(self.proc.pid, "VmHWM")


@pytest.fixture(scope="module")
def artifact() -> Path:
    return ARTIFACT


@pytest.fixture(scope="module")
def server(artifact, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("abuse") / "server.log", f"m={artifact}", "--threads", "1", *TIMEOUTS,
                 env={"EDGEKIT_API_KEY": KEY})
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def pixel_bomb(tmp_path_factory) -> bytes:
    """A 13000x13000 PNG of one colour: ~160 KB on the wire, 169 MB (grey) to 507 MB (RGB) decoded."""
    from PIL import Image

    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("L", (13000, 13000)).save(path, optimize=True)
    return path.read_bytes()


AUTH = {"Authorization": f"Bearer {KEY}"}


def post_json(server, body, conn=None, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, raw = server.request("POST", "/v2/models/m/infer", data, {**AUTH, **(headers or {})}, conn)
    return status, raw


def error_of(raw: bytes) -> str:
    """The protocol's error object: JSON with a string "error"."""
    body = json.loads(raw)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), raw[:200]
    return body["error"]


# -- 3. bounded memory and a /metrics that stays cheap -----------------------------------------

N_PATHS = 6000  # before the fix: +24 MB RSS and a 9 MB /metrics after 5,000 (57k series after 13,000)


def test_unique_paths_add_no_series_memory_or_stalls(server):
    server.request("GET", "/nope/warmup")  # first-request allocations are not growth
    rss_before = server.rss_kb()
    health, stop = [], threading.Event()

    def probe_health():
        conn = server.connect()
        while not stop.is_set():
            start = time.perf_counter()
            assert server.request("GET", "/v2/health/live", conn=conn)[0] == 200
            health.append(time.perf_counter() - start)
            time.sleep(0.02)

    def flood(k):
        conn = server.connect()
        for i in range(k, N_PATHS, 4):  # unauthenticated, every path new: models, endpoints, junk
            path = (f"/v2/models/x{i}/infer", f"/v2/models/m/e{i}", f"/junk/{i}/{'a' * 40}")[i % 3]
            assert server.request("GET", path, conn=conn)[0] in (401, 404, 405)

    prober = threading.Thread(target=probe_health)
    prober.start()
    start = time.perf_counter()
    workers = [threading.Thread(target=flood, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    flood_s = time.perf_counter() - start
    scrape_start = time.perf_counter()
    status, text = server.request("GET", "/metrics", headers=AUTH)
    scrape_s = time.perf_counter() - scrape_start
    time.sleep(0.1)
    stop.set()
    prober.join()
    growth_mb = (server.rss_kb() - rss_before) / 1024
    print(f"\n{N_PATHS} unique paths in {flood_s:.1f} s: RSS +{growth_mb:.1f} MB; /metrics {len(text)} bytes in "
          f"{scrape_s * 1e3:.1f} ms; health max {max(health) * 1e3:.1f} ms over {len(health)} checks")
    assert status == 200
    assert growth_mb < 8, f"RSS grew {growth_mb:.1f} MB over {N_PATHS} requests"
    assert len(text) < 64 * 1024 and scrape_s < 0.5
    assert max(health) < 0.5, f"a health check waited {max(health):.2f} s"  # before: 0.81 s at 6000
    series = [l for l in text.decode().splitlines() if l.startswith("edgekit_requests_total{")]
    assert len(series) <= 12, series  # (model, route template, status) only
    assert 'endpoint="other"' in text.decode() and 'model="other"' in text.decode()
    assert "x17" not in text.decode() and "junk" not in text.decode() and "e19" not in text.decode()


def test_pixel_bomb_is_refused_from_its_header(server, pixel_bomb):
    assert len(pixel_bomb) < 200_000
    peak_before = server.peak_kb()
    start = time.perf_counter()
    status, raw = server.request("POST", "/v2/models/m/classify", pixel_bomb, {**AUTH, "Content-Type": "image/png"})
    elapsed = time.perf_counter() - start
    peak_growth_mb = (server.peak_kb() - peak_before) / 1024
    print(f"\npixel bomb ({len(pixel_bomb)} bytes, 13000x13000): {status} in {elapsed * 1e3:.0f} ms, "
          f"peak RSS +{peak_growth_mb:.1f} MB")
    assert status == 413 and "--max-image-pixels" in error_of(raw)
    assert elapsed < 1.0 and peak_growth_mb < 10


def test_json_body_over_the_json_limit_is_refused_unread(server):
    """31 MB of JSON (under the 32 MB body limit) cost +300 MB parsed; refused from its headers."""
    peak_before = server.peak_kb()
    conn = server.connect()
    conn.putrequest("POST", "/v2/models/m/infer")
    conn.putheader("Content-Length", str(31 * 2**20))
    conn.putheader("Authorization", f"Bearer {KEY}")
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "--max-json-mb" in error_of(response.read())
    assert response.getheader("Connection") == "close"
    conn.close()
    # under the limit but with 1.9 M values for a 1024-value tensor: refused before numpy sees it
    n = 1_900_000
    body = b'{"inputs": [{"name": "image", "shape": [1, 32, 32, 1], "datatype": "FP32", "data": [' + \
        b"0," * (n - 1) + b"0]}]}"
    assert len(body) < 4 * 2**20
    status, raw = post_json(server, body)
    peak_growth_mb = (server.peak_kb() - peak_before) / 1024
    print(f"\n{len(body) / 2**20:.1f} MB JSON with {n} values: {status}, peak RSS +{peak_growth_mb:.1f} MB")
    assert status == 400 and error_of(raw) == f"input 'image': shape [1, 32, 32, 1] needs 1024 values, got {n}"
    assert peak_growth_mb < 60


# -- 3. slow clients are dropped ---------------------------------------------------------------

def _closed_after(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes the socket (reading whatever it answered), or limit."""
    start, received = time.perf_counter(), b""
    sock.settimeout(0.2)
    while time.perf_counter() - start < limit:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return time.perf_counter() - start, received


def test_slow_clients_are_disconnected_within_the_timeouts(server):
    """--header-timeout 2 --body-timeout 2 --keep-alive 1; uvicorn alone kept all of these open."""
    def opened(first: bytes = b"") -> socket.socket:
        s = socket.create_connection(("127.0.0.1", server.port))
        if first:
            s.sendall(first)
        return s

    silent = opened()
    partial = opened(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    trickle = opened(b"GET /v2/health/live HTTP/1.1\r\n")
    body_stall = opened(b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                        b"\r\nContent-Length: 5000\r\n\r\n{\"inputs\": ")
    keep_alive = opened(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    results = {}

    def trickle_bytes():  # one header line every 0.5 s: must not extend the deadline
        for i in range(12):
            try:
                trickle.sendall(b"X-%d: y\r\n" % i)
            except OSError:
                return
            time.sleep(0.5)

    def watch(name, sock):
        results[name] = _closed_after(sock, 8.0)

    threads = [threading.Thread(target=trickle_bytes)] + [
        threading.Thread(target=watch, args=item) for item in
        [("silent", silent), ("partial", partial), ("trickle", trickle), ("body", body_stall),
         ("keep-alive", keep_alive)]]
    for t in threads:
        t.start()
    health_start = time.perf_counter()
    assert server.request("GET", "/v2/health/live")[0] == 200  # the server still answers meanwhile
    health_s = time.perf_counter() - health_start
    for t in threads:
        t.join()
    print("\n" + ", ".join(f"{k} closed after {v[0]:.2f} s" for k, v in results.items()) +
          f"; health during them {health_s * 1e3:.1f} ms")
    for name in ("silent", "partial", "trickle"):
        seconds, answer = results[name]
        assert 1.5 < seconds < 3.5, (name, seconds)
        assert answer.startswith(b"HTTP/1.1 408") and b'"error"' in answer
    seconds, answer = results["body"]
    assert 1.5 < seconds < 3.5 and answer.startswith(b"HTTP/1.1 408") and b"--body-timeout" in answer
    seconds, answer = results["keep-alive"]
    assert answer.startswith(b"HTTP/1.1 200") and 0.5 < seconds < 2.5
    assert health_s < 0.5


def test_oversized_request_head_is_refused(server):
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    try:
        for i in range(40):  # 40 x 4 KB, in separate writes
            s.sendall(b"X-Pad-%d: %s\r\n" % (i, b"a" * 4096))
            time.sleep(0.005)
    except OSError:
        pass  # closed under us: what we expect
    seconds, answer = _closed_after(s, 5.0)
    assert answer.startswith(b"HTTP/1.1 431") and seconds < 2


# -- 4. malformed bodies are 400s with the protocol's error object ------------------------------

def _with(**changes):
    body = json.loads(json.dumps(VALID))
    tensor = body["inputs"][0]
    for key, value in changes.items():
        if key.startswith("top_"):
            body[key[4:]] = value
        else:
            tensor[key] = value
    return body


MALFORMED = {
    "unhashable name": _with(name=[]),
    "dict name": _with(name={"a": 1}),
    "boolean shape": _with(shape=[True, 32, 32, 1]),
    "list parameters on an input": _with(parameters=[1]),
    "list parameters on the request": _with(top_parameters=[1]),
    "list datatype": _with(datatype=[]),
    "list output name": _with(top_outputs=[{"name": []}]),
    "outputs not a list": _with(top_outputs={"name": "probs"}),
    "id not a string": _with(top_id=["x"]),
    "huge shape": _with(shape=[10**30, 32, 32, 1]),
    "shape of floats": _with(shape=[1.0, 32, 32, 1]),
    "data of strings in dicts": _with(data=[{"a": 1}] * 1024),
    "ragged data": _with(data=[[1, 2], [3]]),
    "integer over 4300 digits": b'{"inputs": [{"name": "image", "shape": [1], "datatype": "FP32", "data": [' +
                                b"9" * 5000 + b"]}]}",
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "inputs not objects": {"inputs": [1, "a", None]},
    "not an object": [1, 2, 3],
    "invalid utf-8": b'{"inputs": "\xff\xfe"}',
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_json_body_is_400_json(server, case):
    status, raw = post_json(server, MALFORMED[case])
    assert status == 400, (case, status, raw[:300])
    error_of(raw)


def _binary(header: dict, payload: bytes, length: str | None = None):
    head = json.dumps(header).encode()
    return head + payload, {"Inference-Header-Content-Length": length if length is not None else str(len(head))}


@pytest.mark.parametrize("size, length", [(-8, None), (-4096, None), (True, None), (4097, None), (2**62, None),
                                          ("4096", None), (4096, "-1"), (4096, "\u00b2"), (4096, "99999"),
                                          (4096, "abc")])
def test_malformed_binary_extension_is_400_json(server, size, length):
    header = {"inputs": [{"name": "image", "shape": [1, 32, 32, 1], "datatype": "FP32",
                          "parameters": {"binary_data_size": size}}]}
    body, headers = _binary(header, b"\0" * 4096, length)
    status, raw = post_json(server, body, headers=headers)
    assert status == 400, (size, length, raw[:300])
    error_of(raw)


def test_router_and_form_errors_are_json(server):
    status, raw = server.request("GET", "/v2/models/m/infer", headers=AUTH)
    assert status == 405 and error_of(raw)
    status, raw = server.request("POST", "/v2/models/m/classify", b"--x\r\ngarbage",
                                 {**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
    assert status == 400 and error_of(raw)
    status, raw = server.request("POST", "/v2/models/m/classify?top_k=-3", b"x", AUTH)
    assert status == 400 and "top_k" in error_of(raw)


# -- 4. a seeded fuzz of the request parser -----------------------------------------------------

POOL = [None, True, False, 0, -1, 1, 4096, -4096, 2**63, 1.5, -1e308, "", "x", "FP32", "INT8", "image", "probs",
        [], [[]], {}, {"a": 1}, [True], [-1], [1, 32, 32, 1], [1, 2], {"binary_data_size": -1},
        {"binary_data_output": [1]}, [[[[[[[[[[[]]]]]]]]]]], "\u00b2", "9" * 50]


def _positions(value, path=()):
    """Every (path) into a JSON tree, sampling only the ends of long lists."""
    yield path
    if isinstance(value, dict):
        for key in list(value):
            yield from _positions(value[key], path + (key,))
    elif isinstance(value, list):
        for i in sorted({0, len(value) - 1}) if len(value) > 8 else range(len(value)):
            yield from _positions(value[i], path + (i,))


def _mutate_tree(rng: random.Random, body: dict) -> dict:
    body = json.loads(json.dumps(body))
    for _ in range(rng.randint(1, 3)):
        paths = [p for p in _positions(body) if p]
        if not paths:  # everything deleted already: an empty object is a case too
            break
        path = rng.choice(paths)
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        op = rng.random()
        if op < 0.7:
            parent[path[-1]] = rng.choice(POOL)
        elif op < 0.85:
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["extra", "parameters", "outputs", "id", "shape"])] = rng.choice(POOL)
        else:
            parent.insert(path[-1], rng.choice(POOL))
    return body


def _mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    op = rng.randrange(4)
    at = rng.randrange(len(data))
    if op == 0:
        data[at] = rng.randrange(256)
    elif op == 1:
        del data[at:]
    elif op == 2:
        data[at:at] = bytes(rng.choice([b"[", b"{", b'"', b",", b"]", b"}", b"\\", b"\xff", b"-", b"e9999"]))
    else:
        data[at:at] = data[rng.randrange(len(data)):][:rng.randint(1, 64)]
    return bytes(data)


def _fuzz_cases(seed: int, n_json: int, n_binary: int):
    rng = random.Random(seed)
    small = {"inputs": [{"name": "image", "shape": [1, 32, 32, 1], "datatype": "FP32", "data": [0.25] * 1024}],
             "outputs": [{"name": "probs"}], "id": "r1", "parameters": {"binary_data_output": False}}
    for _ in range(n_json):
        body = _mutate_tree(rng, small)
        data = json.dumps(body).encode()
        yield "json", (_mutate_bytes(rng, data) if rng.random() < 0.3 else data), {}
    header = {"inputs": [{"name": "image", "shape": [1, 32, 32, 1], "datatype": "FP32",
                          "parameters": {"binary_data_size": 4096}}],
              "parameters": {"binary_data_output": True}}
    for _ in range(n_binary):
        mutated = _mutate_tree(rng, header)
        length = rng.choice([None, None, None, "-1", "0", "abc", "\u00b2", "99999999", "7"])
        payload = bytes(rng.randrange(256) for _ in range(rng.choice([0, 16, 4096, 4100])))
        yield "binary", *_binary(mutated, payload, length)


def test_fuzzed_requests_never_get_a_5xx(server):
    outcomes: dict[str, int] = {}
    conn = server.connect()
    start = time.perf_counter()
    for kind, data, headers in _fuzz_cases(seed=15, n_json=300, n_binary=150):
        try:
            status, raw = post_json(server, data, conn, headers)
        except (http.client.HTTPException, OSError):  # the server closed a keep-alive after a 4xx
            conn.close()
            conn = server.connect()
            status, raw = post_json(server, data, conn, headers)
        assert status < 500, (kind, data[:300], headers, raw[:300])
        if status >= 400:
            error_of(raw)
        outcomes[f"{kind} {status}"] = outcomes.get(f"{kind} {status}", 0) + 1
    print(f"\nfuzz: 450 cases in {time.perf_counter() - start:.1f} s: {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) == 450
    assert any(k.endswith(" 200") for k in outcomes) and any(k.endswith(" 400") for k in outcomes)


# -- 2. proxy headers are believed only from --trusted-proxy peers ------------------------------

def test_forwarded_for_from_an_untrusted_peer_is_ignored(artifact, tmp_path):
    srv = Server(tmp_path / "server.log", f"m={artifact}", "--allow-ip", "10.0.0.0/8")
    try:
        for header, value in [("X-Forwarded-For", "10.0.0.1"), ("Forwarded", "for=10.0.0.1"),
                              ("X-Real-IP", "10.0.0.1")]:
            for path in ("/metrics", "/v2/models/m"):
                status, raw = srv.request("GET", path, headers={header: value})
                assert status == 403 and "127.0.0.1 is not in --allow-ip" in error_of(raw), (header, path)
    finally:
        srv.stop()


def test_forwarded_for_from_a_trusted_proxy_is_honoured(artifact, tmp_path):
    srv = Server(tmp_path / "server.log", f"m={artifact}", "--allow-ip", "10.0.0.0/8",
                 "--trusted-proxy", "127.0.0.1/32")
    try:
        def get(**headers):
            return srv.request("GET", "/v2/models/m", headers=headers)[0]

        assert get() == 403  # the proxy itself is not on the allow-list
        assert get(**{"X-Forwarded-For": "10.0.0.1"}) == 200
        assert get(**{"X-Forwarded-For": "10.0.0.1, 127.0.0.1"}) == 200  # our own hop is skipped
        assert get(**{"X-Forwarded-For": "192.168.1.5"}) == 403
        assert get(**{"X-Forwarded-For": "10.0.0.1, 192.168.1.5"}) == 403  # the nearest untrusted hop decides
        assert get(**{"X-Forwarded-For": "not-an-ip"}) == 403
        assert get(Forwarded="for=10.0.0.1") == 403  # not the chosen --proxy-header
    finally:
        srv.stop()


@pytest.mark.parametrize("header, values, expected", [
    ("x-forwarded-for", ["203.0.113.7, 10.1.1.1"], "203.0.113.7"),
    ("x-forwarded-for", ["198.51.100.1", "203.0.113.7:4711"], "203.0.113.7"),
    ("forwarded", ['for=198.51.100.1;proto=http, for="[2001:db8::17]:4711"'], "2001:db8::17"),
    ("forwarded", ["for=unknown"], None),
    ("x-real-ip", ["203.0.113.9"], "203.0.113.9"),
    ("x-forwarded-for", ["10.1.1.2, 10.1.1.1"], "10.1.1.2"),  # every hop trusted: the first
])
def test_client_address_from_a_trusted_proxy(header, values, expected):
    from edgekit.serve.guard import client_address, parse_networks

    scope = {"client": ("10.1.1.1", 5000), "headers": [(header.encode(), v.encode()) for v in values]}
    address = client_address(scope, parse_networks("10.1.0.0/16", "--trusted-proxy"), header)
    assert (str(address) if address else None) == expected
    scope = {"client": ("192.0.2.1", 5000), "headers": [(header.encode(), v.encode()) for v in values]}
    assert str(client_address(scope, parse_networks("10.1.0.0/16", "--trusted-proxy"), header)) == "192.0.2.1"
