"""Building `edgekit sweep`'s compression levels in parallel worker processes.

Each worker is a fresh process (spawn: TensorFlow does not survive fork) that loads the source model
and the data once, then builds whole compression levels (compress, convert, measure accuracy): a
level's conversions need its compressed model, so the level is the unit of work, and the longest
(most distillation epochs) start first. Workers keep
TensorFlow's default thread count, the same as a --jobs 1 run: distillation's arithmetic depends on
it (measured: workers limited to cpu_count / jobs threads distilled digits_cnn's prune-channels-50
student to weights up to 0.0066 away, and its int8 top-1 moved 12.67 -> 12.00 %), and a sweep's
results must not depend on --jobs.
Workers send one line per finished variant to the parent, which prints them. Host latency is not
measured here (converters.sweep times every artifact afterwards, one at a time, with nothing else
running).

Ctrl-C: the parent forwards SIGINT to every worker, cancels levels not started and waits; a worker
stops inside its level, and every file it writes is written whole (temp name + rename) or not at
all, so what stays on disk is finished variants, which a re-run skips.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

# A worker's peak resident memory building digits_resnet's levels (TensorFlow, the Keras source, the
# data, distillation, a conversion): 2.35 GB measured; the parent holds about as much again.
WORKER_MB = 2500
# Below this many cores one build at a time is the default. Measured on this 2-core host (digits_resnet,
# 15 variants incl. Core ML, 3 levels): --jobs 1 took 242 s and 292 s, --jobs 2 took 224 s and 304 s
# (two pairs, load average 1.4-4.2): no reliable gain, because TensorFlow's distillation and conversion
# already use both cores (the 40-epoch distillation took 97 s alone and 151 s beside another build),
# for twice the memory. With more cores a small model's distillation leaves cores idle (unmeasured here).
MIN_PARALLEL_CORES = 4
# Each worker's TensorFlow keeps its default thread pool (see above), so one worker per core would
# oversubscribe; one per two cores leaves each some of the parallelism it would use alone.
CORES_PER_WORKER = 2


def available_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def default_jobs(cpu_count: int | None = None, free_mb: float | None = None) -> int:
    """1 below MIN_PARALLEL_CORES cores; else one worker per CORES_PER_WORKER cores, as many as free
    memory holds (WORKER_MB each)."""
    cores = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    if cores < MIN_PARALLEL_CORES:
        return 1
    free = free_mb if free_mb is not None else available_mb()
    by_memory = int(free // WORKER_MB) if free is not None else 1
    return max(1, min(cores // CORES_PER_WORKER, by_memory))


# ---- worker side -------------------------------------------------------------------------------

_worker: dict = {}


def _init_worker(opts, formats, deadline, messages) -> None:
    """Runs once in each worker: SIGINT only while a level is being built (an idle worker exits
    quietly at shutdown instead of printing a traceback), source and data loaded."""
    busy, stopping = threading.Event(), threading.Event()

    def on_sigint(signum, frame):
        # once: the terminal's Ctrl-C and the parent's forwarded one both arrive, and a second
        # KeyboardInterrupt inside the first one's cleanup (removing a staging folder) would cut it short
        if busy.is_set() and not stopping.is_set():
            stopping.set()
            _silence_stderr()
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    messages.put(("pid", os.getpid()))
    from edgekit.emulator import load_device

    from .sweep_build import prepare

    devices = [load_device(t) for t in opts.targets]
    _worker["busy"] = busy
    _worker["ctx"] = prepare(opts, formats, devices, deadline, progress=lambda msg: None,
                             done=lambda line: messages.put(("done", line)))


def _silence_stderr() -> None:
    """An interrupted worker's last words go nowhere: the parent prints the one line the user sees,
    and TensorFlow objects torn down mid-build print "Exception ignored in ... __del__" with a
    traceback at interpreter exit (seen in one run of the interrupt test). The worker's progress reaches
    the parent through the message queue, never through stderr, so nothing the user needs is lost.
    With EDGEKIT_DEBUG=1 it is kept."""
    if os.environ.get("EDGEKIT_DEBUG") == "1":
        return
    import sys

    try:
        sys.stderr.flush()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
    except OSError:
        pass


def _build_in_worker(compression: str) -> list[dict]:
    from .sweep_build import build_level

    busy = _worker["busy"]
    busy.set()
    try:
        return build_level(compression, _worker["ctx"])
    finally:
        busy.clear()


# ---- parent side -------------------------------------------------------------------------------

def level_cost(compression: str) -> int:
    """A rough order of how long a level takes to build, to start the longest first (with levels
    taken in grid order, 2 workers on none / prune-channels-30+distill / prune-blocks-50+distill-40
    would leave the 40-epoch level for last). Distillation epochs dominate; each level converts."""
    if compression == "none":
        return 0
    from .compress import split_recipe

    steps, _ = split_recipe(compression)
    return 1 + sum(step.params["epochs"] for step in steps if step.kind == "distill")


def build_parallel(levels: list[str], opts, formats, deadline, jobs: int, done, progress) -> list[dict]:
    """Build `levels` in `jobs` worker processes; returns every row the workers built."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    context = mp.get_context("spawn")
    messages = context.Queue()
    pids: list[int] = []

    def relay():  # worker lines, printed as they arrive
        while True:
            item = messages.get()
            if item is None:
                return
            kind, value = item
            if kind == "pid":
                pids.append(value)
            else:
                done(value)

    reader = threading.Thread(target=relay, daemon=True)
    reader.start()
    progress(f"building {len(levels)} compression levels in {jobs} worker processes")
    levels = sorted(levels, key=level_cost, reverse=True)
    rows: list[dict] = []
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, initializer=_init_worker,
                               initargs=(opts, formats, deadline, messages))
    try:
        futures = [pool.submit(_build_in_worker, level) for level in levels]
        for future in as_completed(futures):
            try:
                rows += future.result()
            except BrokenProcessPool as e:  # a worker killed (out of memory, a native crash)
                from edgekit.errors import ConversionError

                raise ConversionError(f"a sweep worker process died ({e}); finished variants are kept: re-run "
                                      "the same command, with --jobs 1 if it happens again") from e
    except BaseException:
        from edgekit.interrupt import signals_ignored

        with signals_ignored():  # a second Ctrl-C must not leave workers running unsupervised
            _stop_workers(pids, pool)
        raise
    finally:
        pool.shutdown(wait=True)
        messages.put(None)
        reader.join(timeout=5)
    return rows


STOP_GRACE_S = 30


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"  # exited, not yet reaped by the pool
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False


def _stop_workers(pids: list[int], pool) -> None:
    """SIGINT to every worker (Ctrl-C in a terminal reaches them too; `kill -INT` of the parent does
    not): each stops inside its level and removes its staging files. One that has not stopped after
    STOP_GRACE_S (TensorFlow swallows some interrupts) is terminated; its temp files are hidden names
    that converters.sweep removes (remove_leftovers), and every published file was renamed whole."""
    import time

    for pid in pids:
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            pass
    pool.shutdown(wait=False, cancel_futures=True)  # an idle worker ignores SIGINT: this tells it to exit
    deadline = time.monotonic() + STOP_GRACE_S
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    pool.shutdown(wait=True)
