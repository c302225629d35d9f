"""Seeded mutation fuzzing of `.tflite` loading: each mutant is loaded and predicted once in a
worker process, so a native crash (a signal) or a hang is observed and counted instead of
killing the caller.

Used by `tests/test_fuzz.py` (a fast CI run) and `benchmarks/fuzz_bench.py` (longer runs). It
needs numpy and ai-edge-litert only, never TensorFlow or coremltools (the device tier).

Mutations are a mix of blind byte damage and structure-aware edits: the flatbuffer is walked
with the schema that ships in ai_edge_litert and the byte positions of the fields a native
kernel trusts are collected (sparsity metadata, buffer lengths, tensor shapes and buffer
indices, operator tensor indices), then one to three of those are overwritten in place with
boundary values. Every mutant is a pure function of (seed, index): reruns reproduce failures.
"""
from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"

# vtable offsets of the fields we mutate (schema_py_generated: `self._tab.Offset(N)`)
_MODEL_SUBGRAPHS, _MODEL_BUFFERS, _MODEL_CODES = 8, 12, 6
_SG_TENSORS, _SG_INPUTS, _SG_OUTPUTS, _SG_OPERATORS = 4, 6, 8, 10
_T_SHAPE, _T_TYPE, _T_BUFFER, _T_QUANT, _T_SPARSITY, _T_SHAPE_SIG = 4, 6, 8, 12, 16, 18
_SP_TRAVERSAL, _SP_BLOCK_MAP, _SP_DIM_METADATA = 4, 6, 8
_DM_FORMAT, _DM_DENSE, _DM_SEG_TYPE, _DM_SEG, _DM_IDX_TYPE, _DM_IDX = 4, 6, 8, 10, 12, 14
_OP_OPCODE, _OP_INPUTS, _OP_OUTPUTS = 4, 6, 8
_BUF_DATA, _BUF_OFFSET, _BUF_SIZE = 4, 6, 8
_VECTOR_VALUES = 4
_ELEM = {1: ("<i", 4), 2: ("<H", 2), 3: ("<B", 1)}  # SparseIndexVector: Int32Vector, Uint16Vector, Uint8Vector


def default_models() -> list[Path]:
    """Real third-party models (a sparse one among them), edgekit's own committed artifacts, and
    any extra paths in $EDGEKIT_FUZZ_MODELS (os.pathsep-separated), e.g. MediaPipe's
    face_detection_full_range_sparse.tflite (see tests/data/README.md)."""
    paths = [DATA / "sparse_cnn_fp32.tflite", DATA / "sparse_cnn_fp16.tflite", DATA / "hand_recrop.tflite"]
    paths += sorted((ROOT / "sample_models" / "artifacts").glob("digits_cnn_*.tflite"))
    extra = os.environ.get("EDGEKIT_FUZZ_MODELS", "")
    paths += [Path(p) for p in extra.split(os.pathsep) if p]
    return [p for p in paths if p.is_file()]


# -- where the interesting bytes are ------------------------------------------------------------------
@dataclass(frozen=True)
class Site:
    pos: int
    fmt: str        # struct format of the stored value
    category: str   # sparsity | buffer | shape | index | type


def _scalar(tab, slot: int, fmt: str, category: str, out: list) -> None:
    o = tab.Offset(slot)
    if o:
        out.append(Site(tab.Pos + o, fmt, category))


def _vector(tab, slot: int, fmt: str, size: int, category: str, out: list, elements: bool = True) -> None:
    """The vector's length prefix and (up to 64 of) its elements."""
    o = tab.Offset(slot)
    if not o:
        return
    start, n = tab.Vector(o), tab.VectorLen(o)
    out.append(Site(start - 4, "<I", category))
    if elements:
        out.extend(Site(start + i * size, fmt, category) for i in range(min(n, 64)))


def find_sites(data: bytes) -> list[Site]:
    """Byte positions of the fields that native kernels trust, by category."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(data, 0)
    sites: list[Site] = []
    for b in range(model.BuffersLength()):
        buf = model.Buffers(b)
        _vector(buf._tab, _BUF_DATA, "<B", 1, "buffer", sites, elements=False)  # weight bytes: blind mutation
        _scalar(buf._tab, _BUF_OFFSET, "<Q", "buffer", sites)
        _scalar(buf._tab, _BUF_SIZE, "<Q", "buffer", sites)
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        _vector(sg._tab, _SG_INPUTS, "<i", 4, "index", sites)
        _vector(sg._tab, _SG_OUTPUTS, "<i", 4, "index", sites)
        for t in range(sg.TensorsLength()):
            tensor = sg.Tensors(t)
            tab = tensor._tab
            _vector(tab, _T_SHAPE, "<i", 4, "shape", sites)
            _vector(tab, _T_SHAPE_SIG, "<i", 4, "shape", sites)
            _scalar(tab, _T_BUFFER, "<I", "index", sites)
            _scalar(tab, _T_TYPE, "<b", "type", sites)
            sparsity = tensor.Sparsity()
            if sparsity is None:
                continue
            _vector(sparsity._tab, _SP_TRAVERSAL, "<i", 4, "sparsity", sites)
            _vector(sparsity._tab, _SP_BLOCK_MAP, "<i", 4, "sparsity", sites)
            for d in range(sparsity.DimMetadataLength()):
                dm = sparsity.DimMetadata(d)
                _scalar(dm._tab, _DM_FORMAT, "<b", "sparsity", sites)
                _scalar(dm._tab, _DM_DENSE, "<i", "sparsity", sites)
                _scalar(dm._tab, _DM_SEG_TYPE, "<B", "sparsity", sites)
                _scalar(dm._tab, _DM_IDX_TYPE, "<B", "sparsity", sites)
                for slot, type_slot in ((_DM_SEG, _DM_SEG_TYPE), (_DM_IDX, _DM_IDX_TYPE)):
                    o = dm._tab.Offset(slot)
                    kind = dm._tab.Get(schema.flatbuffers.number_types.Uint8Flags, dm._tab.Pos + dm._tab.Offset(type_slot)) \
                        if dm._tab.Offset(type_slot) else 0
                    if not o or kind not in _ELEM:
                        continue
                    table = schema.Int32Vector()
                    table.Init(dm._tab.Bytes, dm._tab.Indirect(o + dm._tab.Pos))
                    fmt, size = _ELEM[kind]
                    _vector(table._tab, _VECTOR_VALUES, fmt, size, "sparsity", sites)
        for o in range(sg.OperatorsLength()):
            tab = sg.Operators(o)._tab
            _scalar(tab, _OP_OPCODE, "<I", "index", sites)
            _vector(tab, _OP_INPUTS, "<i", 4, "index", sites)
            _vector(tab, _OP_OUTPUTS, "<i", 4, "index", sites)
    return sites


# -- mutations ------------------------------------------------------------------------------------
def _boundary(rng: random.Random, old: int, fmt: str) -> int:
    bits = struct.calcsize(fmt) * 8
    signed = fmt[-1].islower()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    choices = [old + 1, old - 1, old * 2, old // 2, 0, 1, -1, hi, lo, old + rng.randint(-8, 8),
               rng.randint(lo, hi), old + 4, old - 4, 3]
    return max(lo, min(hi, rng.choice(choices)))


def mutate(data: bytes, seed: int, index: int, sites: list[Site] | None = None) -> tuple[bytes, str]:
    """Mutant number `index` of `data` under `seed`, and a description of what was changed."""
    rng = random.Random(f"{seed}:{index}")
    buf = bytearray(data)
    sites = find_sites(data) if sites is None else sites
    by_category: dict[str, list[Site]] = {}
    for s in sites:
        by_category.setdefault(s.category, []).append(s)
    strategy = rng.choices(["struct", "bytes", "truncate"], weights=[75, 20, 5])[0]
    if strategy == "struct" and by_category:
        categories = sorted(by_category)
        # sparsity metadata is where the known crashes live: weight it up when the model has some
        weights = [6 if c == "sparsity" else 2 if c in ("shape", "buffer") else 1 for c in categories]
        changes = []
        for _ in range(rng.choice([1, 1, 1, 2, 3])):
            category = rng.choices(categories, weights=weights)[0]
            site = rng.choice(by_category[category])
            (old,) = struct.unpack_from(site.fmt, buf, site.pos)
            new = _boundary(rng, old, site.fmt)
            struct.pack_into(site.fmt, buf, site.pos, new)
            changes.append(f"{category}@{site.pos}:{old}->{new}")
        return bytes(buf), "struct " + ", ".join(changes)
    if strategy == "truncate":
        cut = rng.randrange(8, len(buf))
        return bytes(buf[:cut]), f"truncate to {cut}"
    changes = []
    for _ in range(rng.randint(1, 8)):
        pos = rng.randrange(8, len(buf))  # keep the file identifier: other tools reject it early anyway
        if rng.random() < 0.5:
            buf[pos] ^= 1 << rng.randrange(8)
            changes.append(f"flip@{pos}")
        else:
            span = rng.randint(1, 8)
            buf[pos:pos + span] = bytes(rng.randrange(256) for _ in range(span))[:len(buf) - pos]
            changes.append(f"overwrite@{pos}+{span}")
    return bytes(buf), "bytes " + ", ".join(changes)


# -- the worker: load + predict once, report the outcome on a private pipe ---------------------------
def _classify(e: BaseException) -> dict:
    from edgekit.errors import EdgekitError

    import traceback

    kind = type(e).__name__
    result = {"outcome": kind if isinstance(e, EdgekitError) else "foreign", "error": kind,
              "message": str(e).splitlines()[0][:300] if str(e) else ""}
    if not isinstance(e, EdgekitError):  # where it escaped from, to fix it
        frame = traceback.extract_tb(e.__traceback__)[-1]
        result["message"] += f" [{Path(frame.filename).name}:{frame.lineno} {frame.name}]"
    return result


def _try_one(path: str, isolate: bool) -> dict:
    import numpy as np

    import edgekit

    from edgekit.errors import EdgekitError
    from edgekit.tflite.graph import read_graph
    from edgekit.tflite.info import inspect_bytes

    data = Path(path).read_bytes()
    for reader in (inspect_bytes, read_graph):  # what `edgekit inspect` / `emulate` read, in pure Python
        try:
            reader(data, Path(path).name)
        except EdgekitError:
            pass
        except Exception as e:  # noqa: BLE001
            return _classify(e)
    try:
        model = edgekit.load(path, **({"isolate": True} if isolate else {}))
        arrays = []
        for info in model.inputs:
            shape = tuple(1 if d is None else d for d in info.shape)
            if int(np.prod(shape, dtype=np.int64)) > 50_000_000:
                return {"outcome": "InputError", "error": "harness", "message": f"input shape {shape} too large to feed"}
            arrays.append(np.random.default_rng(0).random(shape).astype(np.float32))
        outs = model.run(arrays)
        return {"outcome": "ok", "nan": any(bool(np.isnan(o).any()) for o in outs if o.dtype.kind == "f")}
    except Exception as e:  # noqa: BLE001 - classifying every exception is the point
        return _classify(e)


def _worker(isolate: bool) -> None:
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # native code printing to stdout must not corrupt the result stream
    for line in sys.stdin:
        path = line.strip()
        if path:
            results.write(json.dumps(_try_one(path, isolate)) + "\n")


class Worker:
    """One worker process; restarted after it crashes or hangs."""

    def __init__(self, isolate: bool = False, stderr_path: Path | None = None):
        self.isolate = isolate
        self.stderr_path = stderr_path
        self.proc: subprocess.Popen | None = None

    def _start(self) -> None:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONFAULTHANDLER="")
        stderr = open(self.stderr_path, "ab") if self.stderr_path else subprocess.DEVNULL
        args = [sys.executable, __file__, "--worker"] + (["--isolate"] if self.isolate else [])
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     env=env, text=True, bufsize=1, cwd=str(ROOT))

    def run(self, path: Path, timeout: float) -> dict:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        proc = self.proc
        proc.stdin.write(f"{path}\n")
        proc.stdin.flush()
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            proc.kill()
            proc.wait()
            self.proc = None
            return {"outcome": "hang", "error": "timeout", "message": f"no answer in {timeout:.0f}s"}
        if answer and answer[0].strip():
            return json.loads(answer[0])
        code = proc.wait()
        self.proc = None
        name = signal.Signals(-code).name if code < 0 else f"exit {code}"
        return {"outcome": "crash", "error": name, "message": f"worker died: {name}"}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the campaign ---------------------------------------------------------------------------------
@dataclass
class Result:
    model: str
    index: int
    mutation: str
    outcome: str
    error: str = ""
    message: str = ""
    seconds: float = 0.0


@dataclass
class Campaign:
    mutants: int
    seed: int
    seconds: float
    results: list[Result] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.outcome] = out.get(r.outcome, 0) + 1
        return dict(sorted(out.items()))

    def bad(self) -> list[Result]:
        return [r for r in self.results if r.outcome in ("crash", "hang", "foreign")]

    def to_dict(self) -> dict:
        return {"mutants": self.mutants, "seed": self.seed, "seconds": round(self.seconds, 2),
                "mutants_per_s": round(self.mutants / self.seconds, 2) if self.seconds else None,
                "outcomes": self.counts(), "bad": [asdict(r) for r in self.bad()],
                "results": [asdict(r) for r in self.results]}


def run_campaign(models: list[Path], mutants: int, seed: int = 0, workers: int = 2, timeout: float = 30.0,
                 isolate: bool = False, stderr_path: Path | None = None, on_result=None) -> Campaign:
    """`mutants` mutants spread round-robin over `models`, loaded by `workers` worker processes."""
    if not models:
        raise ValueError("no models to fuzz")
    sources = [(m, m.read_bytes()) for m in models]
    sites = [find_sites(data) for _, data in sources]
    jobs = list(range(mutants))
    lock = threading.Lock()
    campaign = Campaign(mutants, seed, 0.0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-fuzz-") as tmp:
        def drain(slot: int) -> None:
            worker = Worker(isolate, stderr_path)
            try:
                while True:
                    with lock:
                        if not jobs:
                            return
                        i = jobs.pop(0)
                    k = i % len(sources)
                    model, data = sources[k]
                    mutant, how = mutate(data, seed, i, sites[k])
                    path = Path(tmp) / f"w{slot}_{model.stem}.tflite"
                    path.write_bytes(mutant)
                    t0 = time.perf_counter()
                    answer = worker.run(path, timeout)
                    result = Result(model.name, i, how, answer["outcome"], answer.get("error", ""),
                                    answer.get("message", ""), round(time.perf_counter() - t0, 3))
                    with lock:
                        campaign.results.append(result)
                        if on_result:
                            on_result(result)
            finally:
                worker.close()

        threads = [threading.Thread(target=drain, args=(s,)) for s in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    campaign.seconds = time.perf_counter() - start
    campaign.results.sort(key=lambda r: r.index)
    return campaign


if __name__ == "__main__" and "--worker" in sys.argv:
    _worker(isolate="--isolate" in sys.argv)
