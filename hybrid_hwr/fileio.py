"""Files that survive crashes, kills and full disks.

* :func:`atomic_path` / :func:`atomic_write_bytes` / :class:`AtomicNpzWriter`: a crash at
  any moment leaves the old file or the new one, never half of one. The temporary file
  (``<name>.<random>.tmp`` beside the target) is locked while it is written, so the next
  writer of the same target removes the temporaries of killed runs and leaves a live
  writer's alone.
* :class:`RecordFile`: an append-only file of text records (TSV or JSON lines), each written
  whole in one ``write``; a record that does not fit on the disk is taken back, so the
  file always ends at a record boundary. :func:`complete_records` cuts the partial last
  record an earlier kill left, before a resumed run appends to the file.
* A full disk (or an I/O error) while writing becomes one :class:`HwrError` that names the
  file, says "disk full" and what was kept (:func:`write_error`).
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import HwrError, deferred_termination

_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_WRITE_ERRORS = (*_FULL, errno.EIO)


def write_error(path, exc: OSError, kept: str) -> HwrError:
    """The one-line error of a failed write of ``path``; ``kept`` says what is still there."""
    if exc.errno in _FULL:
        reason = f"disk full ({exc.strerror or exc})"
    else:
        reason = f"write failed ({exc.strerror or exc})"
    return HwrError(f"{path}: {reason}; {kept}")


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def remove_stale_temporaries(directory: str | os.PathLike, names=("*.tmp", "*.part", "*/*.tmp")) -> int:
    """Remove the temporary files that killed writers left in ``directory`` (those matching
    ``names`` that no live process holds locked); returns how many were removed."""
    removed = 0
    for pattern in names:
        for stale in Path(directory).glob(pattern):
            try:
                fd = os.open(stale, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue   # gone meanwhile, a link or not ours to read
            try:
                if os.path.isfile(stale) and _try_lock(fd):   # a live writer holds its lock
                    os.unlink(stale)
                    removed += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    return removed


def _locked_temporary(path: Path) -> tuple[int, Path]:
    """A new locked temporary file beside ``path`` (stale ones of ``path`` removed first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, (f"{glob_escape(path.name)}.*.tmp",))
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd, Path(tmp)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _publish(tmp: Path, path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)   # mkstemp's files are 0600
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | os.PathLike, kept: str | None = None):
    """Yield a temporary path beside ``path``; when the block ends normally it replaces ``path``.

    If the block raises, the temporary file is removed and ``path`` is left untouched (a
    full disk becomes a one-line HwrError that says so, and ``kept``: what is left).
    """
    path = Path(path)
    fd = tmp = None
    try:
        with deferred_termination():     # a SIGTERM waits until the name is known
            fd, tmp = _locked_temporary(path)
        yield tmp
        _publish(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRORS:
            if kept is None:
                kept = f"the previous {path.name} is kept" if path.exists() else "nothing written"
            raise write_error(path, exc, kept) from None
        raise
    finally:
        if fd is not None:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, payload: bytes, kept: str | None = None) -> None:
    """Write ``payload`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path, kept) as tmp, open(tmp, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` (newlines as ``\\n``) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


class AtomicNpzWriter:
    """Writes arrays one by one into ``path`` (.npz, no pickle); the file appears only on ``commit``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.count = 0
        self._fd = self._tmp = None
        try:
            with deferred_termination():     # a SIGTERM waits until the name is known
                self._fd, self._tmp = _locked_temporary(self.path)
                self._zip = zipfile.ZipFile(self._tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        except BaseException:
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
            self._close_lock()
            raise

    def add(self, name: str, array: np.ndarray) -> None:
        try:
            with self._zip.open(f"{name}.npy", "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.ascontiguousarray(array), allow_pickle=False)
        except OSError as exc:
            self.abort()
            kept = f"the previous {self.path.name} is kept" if self.path.exists() else "nothing written"
            raise write_error(self.path, exc, kept) from None
        self.count += 1

    def commit(self) -> None:
        try:
            self._zip.close()
            _publish(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise write_error(self.path, exc, "nothing written") from None
        self._close_lock()

    def abort(self) -> None:
        try:
            self._zip.close()
        except (OSError, ValueError):   # e.g. the central directory does not fit on a full disk
            pass
        self._tmp.unlink(missing_ok=True)
        self._close_lock()

    def _close_lock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "AtomicNpzWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def complete_records(path: str | os.PathLike) -> bytes:
    """The whole records (lines ending in ``\\n``) of ``path``; a last record cut short by
    an interruption is removed from the file. ``b""`` for a missing file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    return complete


class RecordFile:
    """An append-only file of text records, one per line, each written whole.

    ``write(record)`` is one unbuffered write of the complete line, so a reader or a kill
    sees whole records only (a kill inside the system call at worst leaves a partial last
    line, which :func:`complete_records` removes). If the disk is full, the bytes of the
    record that did reach the file are truncated away and a one-line HwrError names the file;
    the records written before are kept.
    """

    def __init__(self, path: str | os.PathLike, append: bool = False):
        self.path = Path(path)
        if append:
            complete_records(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o666)
        self.count = 0

    def write(self, record: str) -> None:
        data = (record.rstrip("\n") + "\n").encode("utf-8")
        try:
            start = os.lseek(self._fd, 0, os.SEEK_END)
        except OSError:      # a pipe or terminal (-o /dev/stdout): nothing to take back
            start = None
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            if start is not None:
                try:
                    os.ftruncate(self._fd, start)
                except OSError:
                    pass
            raise write_error(self.path, exc, "the records written before this one are kept") from None
        self.count += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "RecordFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def directory_lock(directory: str | os.PathLike, what: str = "directory"):
    """Hold an exclusive lock on ``directory`` (created if missing) meanwhile: a second writer
    gets a one-line HwrError instead of both runs writing into the same files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / ".lock", "a+")
    try:
        if not _try_lock(handle.fileno()):
            handle.seek(0)
            owner = handle.read().strip()
            raise HwrError(f"{what} {directory} is being written by another run"
                           f"{f' (process {owner})' if owner else ''}; wait for it or write elsewhere")
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        remove_stale_temporaries(directory)
        yield directory
    finally:
        handle.close()     # closing releases the lock
