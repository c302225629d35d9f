"""Outputs appear whole or not at all, and never replace a file without --force."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import OutputExistsError

_recorders: list[list[Path]] = []  # open `recording_writes` blocks


@contextmanager
def recording_writes() -> Iterator[list[Path]]:
    """Collect every path the helpers below publish inside the block, so an interrupted command
    can take back exactly what it wrote (edgekit.interrupt)."""
    written: list[Path] = []
    _recorders.append(written)
    try:
        yield written
    finally:
        _recorders.remove(written)


@contextmanager
def _publishing(path: Path) -> Iterator[None]:
    """Rename into place and record it with SIGINT/SIGTERM held back: a signal between the two
    would leave an output on disk that its run does not know it wrote."""
    blocked = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
        for written in _recorders:
            written.append(path)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def path_size(path: Path) -> int:
    """Bytes of a file, or of all files in a folder (an .mlpackage is a folder)."""
    return path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def sha256_path(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, sorted)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        if path.is_dir():
            h.update(str(f.relative_to(path)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def check_writable(paths: list[Path], force: bool) -> None:
    """Refuse up front, before any slow work, if an output exists and --force is off."""
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        names = ", ".join(str(p) for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise OutputExistsError(f"output already exists: {names}; pass --force to overwrite or choose another -o")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write beside the target, fsync, then rename: readers see the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; outputs are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        with _publishing(path):
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))



def replace_dir(built: Path, target: Path) -> None:
    """Move a fully built folder (an .mlpackage) into place. With a previous version present,
    it is renamed aside first and deleted only once the new one is in place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(built, 0o777 & ~_umask())  # staging folders come from mkdtemp (0700)
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        with _publishing(target):
            os.replace(target, old)
            os.replace(built, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        with _publishing(target):
            os.replace(built, target)


def replace_path(source: Path, target: Path) -> None:
    """Rename a file or a package folder onto `target`, replacing what is there (--force was
    checked before the run started)."""
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(source, target)
