"""Atomic file writes: a crash at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; when the block ends normally it replaces ``path``.

    If the block raises, the temporary file is removed and ``path`` is left untouched.
    The new file gets the usual permissions (mkstemp's are 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` (newlines as ``\\n``) to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def remove_stale_temporaries(directory: str | os.PathLike, names=("*.tmp", "*.part")) -> int:
    """Remove temporary files that an interrupted write left in ``directory`` (call it while
    holding the directory's lock, or for files no other writer can own); returns the count."""
    removed = 0
    for pattern in names:
        for stale in Path(directory).glob(pattern):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed += 1
    return removed


@contextmanager
def directory_lock(directory: str | os.PathLike, what: str = "directory"):
    """Hold an exclusive lock on ``directory`` (created if missing) meanwhile: a second writer
    gets a one-line HwrError instead of both runs writing into the same files."""
    import fcntl

    from .errors import HwrError

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip()
            raise HwrError(f"{what} {directory} is being written by another run"
                           f"{f' (process {owner})' if owner else ''}; wait for it or write elsewhere") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        remove_stale_temporaries(directory)
        yield directory
    finally:
        handle.close()     # closing releases the lock
