"""Try a `.tflite` in a throwaway process before loading it in ours: `edgekit.load(path, isolate=True)`.

`integrity.py` checks what a native kernel trusts, but no Python check can be complete for every
op LiteRT has; a corrupt or hostile file that slips past it can still segfault or hang inside
`allocate_tensors` or `invoke`, which kills the caller (a server, a batch job) with no message.
The probe runs load + allocate + one invoke on synthetic inputs in a child interpreter
(`python -m edgekit.sandbox PATH`), so such a fault becomes an ArtifactError here. A clean child
costs one Python start plus one load (about half a second); callers pay it for files they did not
make (see `needs_isolation`).

A plain subprocess rather than multiprocessing: it needs no picklable state, works whatever the
caller's `__main__` is, and a dead child is just a return code.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from .errors import ArtifactError, first_line

PROBE_TIMEOUT_S = 120.0
_ERROR_EXIT = 3  # the child caught an exception; its JSON description is on stdout


def probe(path: Path, threads: int | None = None, backend: str = "auto", timeout: float = PROBE_TIMEOUT_S) -> None:
    """Raise ArtifactError if loading and running `path` once crashes or hangs the runtime. An
    ordinary error (an EdgekitError) is left for the in-process load to raise again."""
    args = [sys.executable, "-m", "edgekit.sandbox", str(path), backend] + ([str(threads)] if threads else [])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ArtifactError(f"{path.name} hung the runtime: loading and running it once in a sandbox process took "
                            f"more than {timeout:.0f}s; the file is corrupt or hostile, re-copy or re-convert it") from None
    except OSError as e:
        raise ArtifactError(f"cannot start a sandbox process to check {path.name} ({e}); "
                            "load it with isolate=False if you trust the file") from e
    if done.returncode < 0:
        name = _signal_name(-done.returncode)
        raise ArtifactError(f"{path.name} crashed the runtime (signal {name}) while loading and running it once in a "
                            "sandbox process; the file is corrupt or hostile: do not load it in-process, re-copy or "
                            "re-convert it")
    if done.returncode == _ERROR_EXIT:
        try:
            error = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            error = {"edgekit": False, "type": "unknown", "message": done.stdout.strip()[-300:]}
        if not error.get("edgekit"):
            raise ArtifactError(f"{path.name} failed in a sandbox process with {error.get('type')}: "
                                f"{error.get('message')}; the file may be corrupt, re-copy or re-convert it")
        return  # an EdgekitError: the in-process load (or first predict) raises it with full context
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        raise ArtifactError(f"{path.name} ended the sandbox process with exit code {done.returncode} ({tail}); "
                            "the file may be corrupt, re-copy or re-convert it")


def needs_isolation(path: Path) -> bool:
    """The cheap check the CLI uses to default to a sandboxed first load: a file edgekit did not
    make (no embedded manifest, so no recorded weights digest either), or any sparse tensor (the
    metadata LiteRT trusts most; crashes in fuzzing were concentrated there)."""
    from .artifact import kind_of
    from .errors import EdgekitError
    from .tflite.metadata import read_manifest
    from .tflite.reader import read_bytes, root

    try:
        if kind_of(path) != "tflite" or not path.is_file():
            return False
    except EdgekitError:
        return False
    data = read_bytes(path)
    try:
        if read_manifest(data, path.name) is None:
            return True
        model = root(data, path.name)
        return any(model.Subgraphs(s).Tensors(t).Sparsity() is not None
                   for s in range(model.SubgraphsLength()) for t in range(model.Subgraphs(s).TensorsLength()))
    except Exception:  # noqa: BLE001 - unreadable: the real load reports it; isolate to be safe
        return True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _child(path: str, backend: str, threads: int | None) -> int:
    import numpy as np

    from . import load
    from .errors import EdgekitError

    try:
        model = load(path, threads=threads, backend=backend)
        arrays = [np.random.default_rng(0).random(tuple(1 if d is None else d for d in t.shape)).astype(np.float32)
                  for t in model.inputs]
        model.run(arrays)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
        print(json.dumps({"edgekit": isinstance(e, EdgekitError), "type": type(e).__name__,
                          "message": first_line(str(e))}))
        return _ERROR_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else None))
