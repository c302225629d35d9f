"""`edgekit emulate --exec`: run an artifact on the device's own runtime build (the aarch64 LiteRT wheel
a Pi installs) in the device sysroot under an emulated Cortex core, on the same raw inputs as the
host runtime, and report whether it loads (and why not), what XNNPACK took, and output parity.

What this proves: the device install resolves and imports on that Python/platform, the device
runtime's op set and op versions accept the graph, and its ARM kernels (NEON/dotprod paths chosen
for that core) give the host's numbers. What it does not: latency. qemu translates every instruction,
so wall times here say nothing about the device; `edgekit emulate` without --exec estimates that.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import first_line
from .build import (
    ARCH,
    DeviceEnvError,
    check_arch,
    guest_python,
    guest_site,
    require_ready,
    run_mode,
    target_cpu,
)
from .cpu_view import write_cpu_view
from .guest import delegated_nodes

GUEST_TIMEOUT_S = 1800  # emulation is ~50x slower than native; a hang should still end

# What a runtime's load failure means, from LiteRT's own wording (first match wins).
LOAD_FAILURES = [
    (re.compile(r"unresolved custom op:?\s*([A-Za-z0-9_]+)", re.IGNORECASE), "missing op",
     "custom op {0} is not in the device runtime; register it in the app or replace it at conversion"),
    (re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'"), "op version",
     "the device runtime has no {0} version {1}; convert with a TensorFlow no newer than the runtime's LiteRT"),
    (re.compile(r"builtin_code out of range|Op builtin_code (\d+)", re.IGNORECASE), "unknown op",
     "the model uses a builtin op newer than the device runtime; upgrade ai-edge-litert on the device"),
    (re.compile(r"Model provided has model identifier|not a valid flatbuffer|Could not open", re.IGNORECASE), "unreadable model",
     "the device runtime cannot read the file; check it with `edgekit inspect`"),
]
DELEGATE_TROUBLE = re.compile(r"(failed to (apply|prepare|delegate)|delegate.*(error|fail)|restored original "
                              r"execution plan)", re.IGNORECASE)


def explain_load_failure(message: str) -> tuple[str, str]:
    """(kind, one-line reason) for a runtime error at load."""
    for pattern, kind, reason in LOAD_FAILURES:
        match = pattern.search(message)
        if match:
            return kind, reason.format(*match.groups())
    return "runtime error", first_line(message)


@dataclass
class ExecResult:
    target: str
    cpu: str
    threads: int
    loaded: bool
    cpu_features: list = field(default_factory=list)  # what the emulated core advertises (AT_HWCAP)
    failure: dict | None = None          # {"kind", "reason", "message"} when the device runtime rejects it
    host_failure: str | None = None      # the host runtime's own error, if it rejects the model too
    nodes: int = 0
    delegated: dict = field(default_factory=dict)     # node index -> op name, taken by XNNPACK
    not_delegated: dict = field(default_factory=dict)  # op name -> count, left on the built-in kernels
    host_delegated: int | None = None   # nodes XNNPACK took on the host (x86), for comparison
    delegate_messages: list = field(default_factory=list)
    parity: list = field(default_factory=list)   # per output
    samples: int = 0
    inputs: str = ""
    install: dict = field(default_factory=dict)
    wall_s: float = 0.0
    invoke_ms: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _profile_cores(target: str) -> int:
    profile = json.loads(resources.files("edgekit").joinpath("devices", f"{target}.json").read_text())
    return sum(c["count"] for c in profile.get("clusters", [])) or 1


def _host_interpreter(artifact: Path, threads: int):
    from ai_edge_litert.interpreter import Interpreter

    from ..native_output import quiet_native

    with quiet_native():
        interpreter = Interpreter(model_path=str(artifact), num_threads=threads)
        interpreter.allocate_tensors()
    return interpreter


def _raw_inputs(artifact: Path, interpreter, input_file: Path | None, samples: int, seed: int) -> tuple[list, str]:
    """Per sample, one raw tensor per interpreter input: the user's file or random values in the
    model's range (edgekit's bench inputs), quantized the way edgekit's runtime would."""
    from ..bench import load_input_file, random_inputs
    from ..runtime import load, quantize

    model = load(artifact)
    infos = {info.name: info for info in model.inputs}
    details = interpreter.get_input_details()
    order = [infos.get(d["name"]) for d in details]
    if None in order:  # names differ (a signature-less file): the model's own order then
        order = list(model.inputs)
    by_name = {info.name: i for i, info in enumerate(model.inputs)}
    if input_file is not None:
        arrays, note = load_input_file(input_file, model), f"{input_file.name}"
        samples = len(arrays[0])
    else:
        rng = np.random.default_rng(seed)
        batches = [random_inputs(model, rng) for _ in range(samples)]
        arrays = [np.concatenate([b[i] for b in batches]) for i in range(len(model.inputs))]
        note = f"{samples} random inputs in the model's range (seed {seed})"
    raw = []
    for s in range(samples):
        sample = []
        for detail, info in zip(details, order):
            x = arrays[by_name[info.name]][s:s + 1]
            q = quantize(x, info) if info.quantized else x.astype(detail["dtype"])
            sample.append(np.ascontiguousarray(q.reshape(detail["shape"]), dtype=detail["dtype"]))
        raw.append(sample)
    return raw, note


def _host_outputs(interpreter, raw: list) -> list[list[np.ndarray]]:
    outputs = []
    for sample in raw:
        for detail, x in zip(interpreter.get_input_details(), sample):
            interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        outputs.append([interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()])
    return outputs


def _output_parity(name: str, host: np.ndarray, device: np.ndarray) -> dict:
    """Integer outputs: identical codes or the differing fraction; float: cosine and max error."""
    from ..parity import output_parity

    differing = float(np.mean(host != device)) if host.size else 0.0
    p = output_parity(name, host, device, classifier=False)
    return {"name": name, "dtype": str(host.dtype), "bit_exact": bool(np.array_equal(host, device)),
            "differing_fraction": differing, "cosine": p["cosine"], "max_abs_err": p["max_abs_err"]}


def _guest_job(root: Path) -> Path:
    # under the sysroot's /tmp: the same folder is /tmp/... inside a chroot and ROOT/tmp/... outside
    return Path(tempfile.mkdtemp(prefix="edgekit-exec-", dir=root / "tmp"))


def run_exec(artifact: Path, target: str = "rpi4", threads: int | None = None, input_file: Path | None = None,
             samples: int = 10, seed: int = 0, arch: str = ARCH,
             progress: Callable[[str], None] = lambda m: None) -> ExecResult:
    check_arch(arch)
    cpu = target_cpu(target)
    status = require_ready(arch)
    from ..artifact import require_kind
    from ..emulator import default_threads

    require_kind(artifact, "tflite", "emulate --exec")
    cores = _profile_cores(target)
    threads = threads or default_threads(cores)
    result = ExecResult(target, cpu, threads, loaded=False)
    resolved = json.loads((status.path / "env.json").read_text()).get("resolved", [])
    result.install = {"resolved": resolved, "installed": status.packages, "mode": status.mode,
                      "run": run_mode(status.mode)}

    raw: list = []
    try:
        host = _host_interpreter(artifact, threads)
    except Exception as e:  # noqa: BLE001 -- any host rejection is reported; the device run still decides
        host, result.host_failure = None, first_line(str(e))
    if host is not None:
        result.host_delegated = len(delegated_nodes(host._get_ops_details())[1])
        raw, result.inputs = _raw_inputs(artifact, host, input_file, samples, seed)
        result.samples = len(raw)

    root = status.path / "root"
    job = _guest_job(root)
    mode = run_mode(status.mode)
    inside = (lambda p: "/" + str(p.relative_to(root))) if mode == "chroot" else str
    try:
        shutil.copy2(artifact, job / "model.tflite")
        shutil.copy2(Path(__file__).with_name("guest.py"), job / "guest.py")
        (job / "request.json").write_text(json.dumps({
            "model": inside(job / "model.tflite"), "threads": threads, "samples": len(raw),
            "site": None if mode == "chroot" else guest_site(root, status.mode)}))
        if raw:
            np.savez(job / "inputs.npz", **{f"{i}_{s}": x for s, sample in enumerate(raw) for i, x in enumerate(sample)})
        command, extra_env = guest_python(root, mode, cpu)
        progress(f"running on {target}'s runtime build under QEMU_CPU={cpu}, {threads} thread(s), "
                 f"{len(raw)} input(s)")
        start = time.monotonic()
        # one run at a time per sysroot: the CPU view below is per target, and the machine is shared
        with open(status.path / "exec.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_cpu_view(root, cpu, cores)
            proc = _run_guest(command + ["-I", inside(job / "guest.py"), inside(job)], extra_env)
        result.wall_s = round(time.monotonic() - start, 2)
        if not (job / "result.json").exists():
            raise DeviceEnvError(f"the device Python exited {proc.returncode} without a result: "
                                 f"{first_line(proc.stderr) or 'no output'}; check `edgekit device-env status`")
        guest = json.loads((job / "result.json").read_text())
        if guest.get("stage") != "done":  # the device Python died mid-way: a native crash is a verdict
            _crashed(result, guest, proc)
        else:
            _fill(result, guest, raw, host, job)
    finally:
        shutil.rmtree(job, ignore_errors=True)
    return result


def _run_guest(command: list[str], extra_env: dict) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, env={**os.environ, **extra_env}, capture_output=True, text=True,
                              errors="replace", timeout=GUEST_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceEnvError(f"the device run did not finish in {GUEST_TIMEOUT_S} s under qemu; "
                             "try fewer inputs (--samples)") from None


def _crashed(result: ExecResult, guest: dict, proc: subprocess.CompletedProcess) -> None:
    code = proc.returncode
    how = f"signal {-code}" if code < 0 else f"exit {code}"
    if code > 128:  # chroot/qemu report a child's signal as 128 + N
        how = f"signal {code - 128}"
    result.install.update({k: guest.get(k) for k in ("python", "machine", "numpy", "litert", "edgekit")})
    result.failure = {"kind": "crash", "reason": f"the device runtime crashed ({how}) while {guest.get('stage')} "
                                                 "the model; check it with `edgekit inspect` and load(isolate=True)",
                      "message": first_line(proc.stderr) or how}
    result.loaded = False


def _fill(result: ExecResult, guest: dict, raw: list, host, job: Path) -> None:
    result.install.update({k: guest.get(k) for k in ("python", "machine", "numpy", "litert", "edgekit",
                                                     "edgekit_error")})
    result.cpu_features = guest.get("cpu_features", [])
    log = guest.get("log", "")
    result.delegate_messages = [line.strip() for line in log.splitlines() if DELEGATE_TROUBLE.search(line)]
    result.loaded = bool(guest.get("loaded"))
    if not result.loaded:
        message = guest.get("error", "") + "\n" + log
        kind, reason = explain_load_failure(message)
        result.failure = {"kind": kind, "reason": reason, "message": first_line(guest.get("error", ""))}
        return
    result.nodes = len(guest["nodes"])
    result.delegated = guest["delegated"]
    left: dict[str, int] = {}
    for index, name in enumerate(guest["nodes"]):
        if str(index) not in result.delegated:
            left[name] = left.get(name, 0) + 1
    result.not_delegated = left
    result.invoke_ms = [round(t, 2) for t in guest.get("invoke_ms", [])]
    if not raw:
        return
    names = [d["name"] for d in host.get_output_details()]
    with np.load(job / "outputs.npz", allow_pickle=False) as device:
        host_out = _host_outputs(host, raw)
        for k, name in enumerate(names):
            h = np.stack([sample[k] for sample in host_out])
            d = np.stack([device[f"{k}_{s}"] for s in range(len(raw))])
            result.parity.append(_output_parity(name, h, d))
