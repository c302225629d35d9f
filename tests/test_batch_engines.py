"""`edgekit predict --engine ray` and the PostgreSQL/Parquet stores (tier `batch`: edgekit[ray,sql]).

Ray runs locally (2 CPUs, no dashboard), PostgreSQL is a real server this module starts from Debian's
binaries in a temporary folder on a free loopback port: never a mock. Without the binaries the
PostgreSQL tests skip with the reason (under CI, where .ci/run installs them, they fail instead).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import OUTSIDE, SAMPLES, run_cli
from serve_process import free_port

pytestmark = pytest.mark.batch
INT8 = SAMPLES / "artifacts" / "digits_cnn_int8.tflite"
IMAGES = sorted((SAMPLES / "validation").glob("*.png"))
PG_BIN = Path(os.environ.get("EDGEKIT_PG_BIN", "/usr/lib/postgresql/15/bin"))


def _missing(reason: str):
    if os.environ.get("CI"):  # .ci/run installs postgresql: its absence there is a broken CI, not a skip
        pytest.fail(reason)
    print(f"\nSKIPPING: {reason}", file=sys.stderr)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory):
    """A PostgreSQL server of our own: initdb + pg_ctl as the unprivileged `postgres` user when root."""
    pytest.importorskip("psycopg")
    if not (PG_BIN / "initdb").exists():
        _missing(f"PostgreSQL server binaries not found in {PG_BIN}: apt-get install postgresql (or set EDGEKIT_PG_BIN)")
    # not under pytest's basetemp: its parents are private to root, and the server runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="edgekit-pg-"))
    data = root / "data"
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if shutil.which("runuser") is None:
            _missing("running as root without runuser: cannot start PostgreSQL as an unprivileged user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    user = "postgres" if as_user else os.environ.get("USER", "postgres")
    for step in ([str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "--no-sync"],
                 [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60",
                  "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off", "start"]):
        done = subprocess.run([*as_user, *step], capture_output=True, text=True)
        assert done.returncode == 0, f"{step[0]} failed: {done.stdout}{done.stderr}"
    try:
        yield f"postgresql://{user}@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _count(url: str, table: str) -> tuple[int, int]:
    import psycopg

    with psycopg.connect(url) as db:
        return db.execute(f"SELECT count(*), count(DISTINCT (input, model_sha256)) FROM {table}").fetchone()


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


def _replicas(folder: Path, copies: int) -> Path:
    """The 150 validation PNGs, `copies` times, as distinct files (hard links: no bytes copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    for c in range(copies):
        for image in IMAGES:
            target = folder / f"{c:03d}_{image.name}"
            if not target.exists():
                os.link(image, target)
    return folder


def test_ray_engine_into_postgres_same_rows_as_local_and_resumes(ray_local, pg_url, tmp_path):
    url = f"{pg_url}?table=ray_rows"
    actor_copies = set(Path(tempfile.gettempdir()).glob("edgekit-actor-*"))
    first = run_cli("predict", INT8, SAMPLES / "validation", "--engine", "ray", "--actors", "2", "--out", url)
    assert first.exit_code == 0, first.output + first.stderr
    assert "predicted 150, already done 0, failed 0" in first.stdout
    # each actor got the artifact's bytes and wrote a copy to load: none of them is left behind
    assert set(Path(tempfile.gettempdir()).glob("edgekit-actor-*")) == actor_copies
    assert _count(pg_url, "ray_rows") == (150, 150)
    again = run_cli("predict", INT8, SAMPLES / "validation", "--engine", "ray", "--out", url)
    assert again.exit_code == 0 and "predicted 0, already done 150, failed 0" in again.stdout, again.output
    # the same rows as the local engine writes (stores.COLUMNS, same labels and scores)
    local = run_cli("predict", INT8, SAMPLES / "validation", "--out", tmp_path / "local.sqlite")
    assert local.exit_code == 0, local.stderr
    import psycopg

    want = {r[0]: r[1:] for r in sqlite3.connect(tmp_path / "local.sqlite").execute(
        "SELECT input, model_sha256, model, label, score FROM predictions")}
    with psycopg.connect(pg_url) as db:
        got = {r[0]: r[1:] for r in db.execute(
            "SELECT input, model_sha256, model, label, score FROM ray_rows")}
        columns = [d.name for d in db.execute("SELECT * FROM ray_rows LIMIT 0").description]
    from edgekit.stores import COLUMNS

    assert columns == COLUMNS and got.keys() == want.keys()
    assert all(got[k][:3] == want[k][:3] and abs(got[k][3] - want[k][3]) < 1e-6 for k in want)


def _actor_pids() -> list[int]:
    """Our Ray's prediction actors: processes below this test process named after PredictActor."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), []):
            todo.append(pid)
            try:
                if b"PredictActor" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
    return found


def test_killed_actor_job_completes_with_one_row_per_input(ray_local, pg_url, tmp_path):
    from edgekit.batch.ray_engine import run_ray_predictions
    from edgekit.batch.sources import resolve
    from edgekit.stores import open_store

    inputs = _replicas(tmp_path / "imgs", 12)  # 1800 inputs
    store = open_store(f"{pg_url}?table=killed")
    killed = []

    def kill_once(n):
        if n and not killed:  # the first block is stored: the job is mid-run
            pids = _actor_pids()
            assert pids, "no PredictActor process found to kill"
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])

    try:
        summary = run_ray_predictions(INT8, resolve([str(inputs)]), store, actors=2, batch_size=32,
                                      on_progress=kill_once)
    finally:
        store.close()
    assert killed
    assert summary.predicted == 1800 and not summary.failures
    assert _count(pg_url, "killed") == (1800, 1800)


def test_concurrent_runs_into_postgres_never_duplicate(pg_url, tmp_path):
    """Three processes (local engine) predict overlapping inputs into one table at the same time."""
    url = f"{pg_url}?table=concurrent"
    inputs = _replicas(tmp_path / "imgs", 2)  # 300 inputs; each run takes an overlapping 200
    files = sorted(str(p) for p in inputs.iterdir())
    runs = [files[:200], files[100:], files[:100] + files[200:]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    procs = [subprocess.Popen([sys.executable, "-m", "edgekit.cli", "predict", str(INT8), *chunk, "--out", url],
                              cwd=OUTSIDE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for chunk in runs]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    assert _count(pg_url, "concurrent") == (300, 300)
    # and the store itself, from threads upserting the same rows at once
    from concurrent.futures import ThreadPoolExecutor

    from edgekit.stores import open_store

    rows = [{"input": f"x{i}", "model_sha256": "s", "model": "m", "label": "1", "score": 0.5, "top_k": None,
             "outputs": None, "latency_ms": 0.1, "created_utc": "2026-11-26T00:00:00+00:00"} for i in range(200)]

    def write(k):
        store = open_store(url)
        try:
            for i in range(0, 200, 20):
                store.add(rows[i:i + 20][::(-1) ** k])  # opposite orders: would deadlock unsorted
        finally:
            store.close()

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    assert _count(pg_url, "concurrent") == (500, 500)


def test_table_source_and_parquet_out_resume(ray_local, tmp_path):
    """A Parquet table with an id and a bytes column in, a folder of Parquet parts out; a re-run skips."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"id": [f"img-{i}" for i in range(40)], "bytes": [p.read_bytes() for p in IMAGES[:40]]})
    pq.write_table(table, tmp_path / "inputs.parquet")
    pq.write_table(table.slice(0, 5), tmp_path / "more.parquet")
    out = f"{tmp_path / 'preds'}/"
    first = run_cli("predict", INT8, tmp_path / "inputs.parquet", "--engine", "ray", "--out", out)
    assert first.exit_code == 0 and "predicted 40, already done 0, failed 0" in first.stdout, first.output
    again = run_cli("predict", INT8, tmp_path / "inputs.parquet", "--engine", "ray", "--out", out)
    assert "predicted 0, already done 40, failed 0" in again.stdout, again.output
    rows = pq.read_table(tmp_path / "preds").to_pylist()
    assert sorted(r["input"] for r in rows) == sorted(f"img-{i}" for i in range(40))
    # a file URL folder through fsspec, and one corrupt input counted as a failure, not a crash
    (tmp_path / "urls").mkdir()
    for image in IMAGES[:10]:
        os.link(image, tmp_path / "urls" / image.name)
    (tmp_path / "urls" / "broken.png").write_bytes(b"not a png")
    result = run_cli("predict", INT8, f"file://{tmp_path / 'urls'}", "--engine", "ray", "--out",
                     tmp_path / "u.parquet", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    summary = json.loads(result.stdout)
    assert summary["predicted"] == 10 and summary["failed"] == 1
    assert summary["failures"][0]["input"] == f"file://{tmp_path / 'urls' / 'broken.png'}"
    assert pq.read_table(tmp_path / "u.parquet").num_rows == 10
    assert not (tmp_path / ".u.parquet.parts").exists()  # merged into the single file


def test_parquet_file_store_resumes_from_parts(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    out = tmp_path / "p.parquet"
    assert run_cli("predict", INT8, *IMAGES[:3], "--out", out).exit_code == 0
    result = run_cli("predict", INT8, *IMAGES[:5], "--out", out)
    assert "predicted 2, already done 3" in result.stdout, result.output
    assert pq.read_table(out).num_rows == 5


@pytest.mark.parametrize("out, message", [
    ("postgresql://nobody@127.0.0.1:1/db", "cannot be reached"),
    ("postgresql://u:secret@127.0.0.1:1/db?table=a;drop", "table expects a name"),
    ("postgresql://u@127.0.0.1:port/db", "bad port"),
    ("mysql://u@h/db", "got a mysql:// URL"),
])
def test_bad_out_url_is_one_line(out, message):
    pytest.importorskip("psycopg")
    result = run_cli("predict", INT8, IMAGES[0], "--out", out)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "secret" not in result.stderr


def test_ray_options_need_the_ray_engine():
    result = run_cli("predict", INT8, IMAGES[0], "--actors", "2")
    assert result.exit_code == 2 and "--actors expects --engine ray" in result.stderr


def test_local_engine_imports_no_ray(tmp_path):
    """The local engine (the default) never imports Ray, pyarrow or psycopg."""
    code = ("import sys\nfrom click.testing import CliRunner\nfrom edgekit.cli import main\n"
            f"r = CliRunner().invoke(main, ['predict', {str(INT8)!r}, {str(IMAGES[0])!r}, '--out', "
            f"{str(tmp_path / 'p.sqlite')!r}])\nassert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in ('ray', 'pyarrow', 'psycopg', 'fsspec') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=OUTSIDE, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.fixture(scope="module")
def ray_client_head():
    """A Ray head of our own joined through Ray Client: `ray start --head --block` on loopback with
    free ports, its own temp dir (no other `ray.init()` on this machine finds it there) and its own
    auth token (token auth is Ray 2.60's default). Yields (ray:// address, GCS address, environment for
    clients, its session logs); stopped by its pid: SIGTERM makes `--block` take its processes down."""
    pytest.importorskip("ray")
    try:
        import grpc  # noqa: F401
    except ImportError:
        _missing("Ray Client needs grpcio: edgekit[ray] declares ray[data,client]")
    root = Path(tempfile.mkdtemp(prefix="ekrc-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           # the client proxy forks a server per client from its multithreaded gRPC process; with gRPC's
           # fork handlers on, that child segfaults before exec (ray-project/ray#63202; every time here)
           "GRPC_ENABLE_FORK_SUPPORT": "false"}
    gcs_port, client_port = free_port(), free_port()
    with open(root / "head.log", "wb") as log:
        head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                                 "--node-ip-address=127.0.0.1", f"--port={gcs_port}", f"--ray-client-server-port={client_port}",
                                 "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={root}", "--disable-usage-stats"],
                                env=env, cwd=OUTSIDE, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert head.poll() is None, f"ray start exited: {(root / 'head.log').read_text()[-2000:]}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", client_port)) == 0:
                    break
            assert time.monotonic() < deadline, f"no Ray Client server: {(root / 'head.log').read_text()[-2000:]}"
            time.sleep(0.5)
        yield f"ray://127.0.0.1:{client_port}", f"127.0.0.1:{gcs_port}", env, root / "session_latest" / "logs"
    finally:
        head.send_signal(signal.SIGTERM)
        try:
            head.wait(timeout=90)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()
        shutil.rmtree(root, ignore_errors=True)


def _cli(env: dict, *args) -> subprocess.CompletedProcess:
    env = {**env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run([sys.executable, "-m", "edgekit.cli", "predict", *map(str, args)], cwd=OUTSIDE, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_ray_client_address_with_url_inputs_and_resume(ray_client_head, tmp_path):
    """`--address ray://...` (Ray Client, a separate process joining our head): a file:// glob URL,
    then a Parquet table of file:// paths given by URL; same labels as the local engine, resumed."""
    address, _, env, _ = ray_client_head
    folder = tmp_path / "imgs"
    folder.mkdir()
    for image in IMAGES[:40]:
        os.link(image, folder / image.name)
    out = tmp_path / "client.sqlite"
    first = _cli(env, INT8, f"file://{folder}/00[01]*.png", "--engine", "ray", "--address", address, "--out", out, "--json")
    assert first.returncode == 0, first.stdout + first.stderr
    n_first = len(list(folder.glob("00[01]*.png")))
    assert 0 < n_first < 40 and json.loads(first.stdout)["predicted"] == n_first
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"path": [f"file://{p}" for p in sorted(folder.iterdir())]}), tmp_path / "all.parquet")
    again = _cli(env, INT8, f"file://{tmp_path / 'all.parquet'}", "--engine", "ray", "--address", address, "--out", out)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"predicted {40 - n_first}, already done {n_first}, failed 0" in again.stdout, again.stdout
    local = run_cli("predict", INT8, *sorted(folder.iterdir()), "--out", tmp_path / "local.sqlite")
    assert local.exit_code == 0, local.stderr
    want = {Path(k).name: v for k, v in sqlite3.connect(tmp_path / "local.sqlite").execute(
        "SELECT input, label FROM predictions")}
    got = {Path(k).name: v for k, v in sqlite3.connect(out).execute("SELECT input, label FROM predictions")}
    assert got == want and len(got) == 40


def test_without_address_a_running_ray_is_joined_not_started(ray_client_head, tmp_path):
    """RAY_ADDRESS (or the last `ray start` on this machine) and no --address: the CLI joins the running
    Ray as a driver, paying no start of its own; its driver log lands in that Ray's session."""
    _, gcs, env, logs = ray_client_head
    env = {**env, "RAY_ADDRESS": gcs, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "edgekit.cli", "predict", str(INT8), *map(str, IMAGES[:20]),
                             "--engine", "ray", "--out", str(tmp_path / "joined.sqlite")],
                            cwd=OUTSIDE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "predicted 20, already done 0, failed 0" in out, out + err
    assert any(name.endswith(f"_{proc.pid}.log") for name in os.listdir(logs) if name.startswith("python-core-driver"))


def test_process_local_url_inputs_are_refused_for_ray():
    result = run_cli("predict", INT8, "memory://imgs/*.png", "--engine", "ray")
    assert result.exit_code == 2 and "Ray workers cannot read" in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1
