"""Stop a long command cleanly on SIGINT or SIGTERM, and take back what it wrote.

Measured on `edgekit convert` before this existed (issue #15): SIGTERM has no Python handler by
default, so the process died at once and left its artifacts; SIGINT became a KeyboardInterrupt
that TensorFlow/Keras code sometimes caught and swallowed (the run went on and exited 0); and one
raised between writing an artifact and its JSON left both behind under a message saying nothing
was. So: both signals get one handler that records the signal *and* raises `Interrupted`; the
caller checks the record after the work too (a swallowed interrupt is still an interrupt), removes
every output this run published (`fileio.recording_writes`), and exits 128 + signal number.

Why remove-on-interrupt rather than staging everything in a temp folder renamed at the end:
the pipeline already writes each output atomically (temp file + rename), other commands and the
parity gate rename in the output folder, and a staging folder would need a second rename per
file that can itself be interrupted. Recording the renames keeps one code path for writes.
"""
from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGINT/SIGTERM arrives; exit code 128 + signal number."""

    def __init__(self, signum: int, message: str = ""):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")


class _State:
    signum: int | None = None
    complete: bool = False  # outputs_complete() was called: later signals keep the outputs


_ACTIVE: list[_State] = []  # the innermost signals_as_interrupts block, for checkpoint()/outputs_complete()


@contextmanager
def signals_as_interrupts(after: "LateSignals | None" = None) -> Iterator[_State]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` in the main thread and are
    remembered in the yielded state, even if some library swallows the exception.

    Once `outputs_complete()` has been called, a signal no longer interrupts: it is handed to
    `after` (kept outputs, exit 128 + n) whose handlers stay installed when the block ends, so
    there is no instant in which Python's default handlers are back (a SIGTERM there used to
    kill the process, a SIGINT to print a KeyboardInterrupt traceback)."""
    state = _State()
    if threading.current_thread() is not threading.main_thread():  # signal.signal only works there
        yield state
        return

    def handler(signum, frame):
        if state.complete and after is not None:
            after.late.append(signum)
            return
        if state.signum is None:
            state.signum = signum
        raise Interrupted(signum)

    def unraisable(report):
        # Raised inside a __del__ or a gc callback (TensorFlow's objects have many): Python prints
        # "Exception ignored in ..." with a traceback and carries on. The signal is recorded in
        # `state` and acted on at the next checkpoint; the traceback would only alarm.
        if not isinstance(report.exc_value, Interrupted):
            previous_unraisable(report)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    previous_unraisable, sys.unraisablehook = sys.unraisablehook, unraisable
    _ACTIVE.append(state)
    try:
        yield state
    finally:
        _ACTIVE.remove(state)
        sys.unraisablehook = previous_unraisable
        if state.complete and after is not None and state.signum is None:
            after.arm()  # replaces our handlers directly: no default handler in between
        else:
            for s, h in previous.items():
                signal.signal(s, h)


def checkpoint() -> None:
    """Raise `Interrupted` if a signal arrived that some library swallowed: long commands call it
    between steps so the run stops at the next one instead of finishing work it will delete."""
    if threading.current_thread() is not threading.main_thread():
        return  # a worker's progress line: the main thread is the one that stops the run
    if _ACTIVE and _ACTIVE[-1].signum is not None and not _ACTIVE[-1].complete:
        raise Interrupted(_ACTIVE[-1].signum)


def outputs_complete() -> None:
    """The command's outputs are all written and reported: from here on a signal keeps them (see
    `LateSignals`). Called just before the final "done" line, so a run that says done never
    deletes what it announced."""
    checkpoint()
    if _ACTIVE:
        _ACTIVE[-1].complete = True


@contextmanager
def signals_ignored() -> Iterator[None]:
    """For cleanup: a second Ctrl-C must not leave it half done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def remove_outputs(written: list[Path], created_dirs: list[Path], since: float) -> int:
    """Delete what a run published (files and package folders), renamed leftovers of them
    (`*.rejected` from the parity gate) written since `since`, and folders the run created that
    are now empty. Returns how many outputs were removed."""
    removed = 0
    with signals_ignored():
        for path in reversed(written):
            for candidate in (path, path.with_name(path.name + ".rejected")):
                try:
                    if candidate is not path and candidate.lstat().st_mtime < since - 1:
                        continue
                    if candidate.is_dir() and not candidate.is_symlink():
                        shutil.rmtree(candidate)
                    else:
                        candidate.unlink()
                    removed += 1
                except FileNotFoundError:
                    pass
        for folder in sorted(created_dirs, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty: never someone else's files
            except OSError:
                pass
    return removed


def new_folders(path: Path) -> list[Path]:
    """`path` and its ancestors that do not exist yet: what a run writing into `path` creates."""
    missing = []
    for p in [path, *path.parents]:
        if p.exists():
            break
        missing.append(p)
    return missing


def now() -> float:
    return time.time()


class LateSignals:
    """After the work is done the process still tears TensorFlow down (~0.8 s measured), and a
    signal there used to vanish (exit 0). Outputs are complete by then, so they are kept, but the
    signal still sets the exit code (128 + n), with one line saying so. Create it before the
    heavy imports: its exit hook then runs after theirs (atexit is last-in, first-out)."""

    def __init__(self) -> None:
        import atexit

        self.late: list[int] = []
        self.armed = False
        atexit.register(self._exit)

    def arm(self) -> None:
        """Called when the work has succeeded (by `signals_as_interrupts(after=...)` at its end)."""
        if self.armed:
            return
        self.armed = True
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, lambda signum, frame: self.late.append(signum))

    def _exit(self) -> None:
        import os
        import sys
        import weakref

        if not self.armed:
            return
        if not self.late:
            # What follows is interpreter finalization, where Python has put the default handlers
            # back and a signal kills the process silently. The work is done and reported: hold
            # them instead (a signal in this last stretch does not change the exit).
            for s in SIGNALS:
                signal.signal(s, signal.SIG_IGN)
            return
        exitfunc = getattr(weakref.finalize, "_exitfunc", None)
        if exitfunc is not None:
            exitfunc()  # temporary folders still due for cleanup: os._exit below skips it
        sys.stderr.write(f"Error: interrupted by {signal.Signals(self.late[0]).name} after the run had finished; "
                         "its outputs are complete and were kept\n")
        sys.stderr.flush()
        os._exit(128 + self.late[0])  # atexit cannot set the exit code any other way
