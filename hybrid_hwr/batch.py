"""Running one function over many lines: progress bars, worker processes, bad-line reports.

Shared by every subcommand that reads a dataset (features, train, align, decode), so
that ``--jobs N`` and the "one bad line is reported and skipped" rule behave the same
everywhere.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable, Iterator

import numpy as np

from .data import Line, load_image
from .errors import HwrError


def warn(message: str) -> None:
    print(f"hybrid-hwr: warning: {message}", file=sys.stderr, flush=True)


def progress(iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "line"):
    """A progress bar on stderr (shown when stderr is a terminal)."""
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)


def ordered_map(function: Callable, items: list, jobs: int = 1, initializer=None, initargs=()) -> Iterator:
    """``map(function, items)`` in input order, over ``jobs`` processes when jobs > 1."""
    if jobs <= 1 or len(items) <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(function, items)
        return
    import multiprocessing

    jobs = min(jobs, len(items))
    with multiprocessing.get_context("fork").Pool(jobs, initializer=initializer, initargs=initargs) as pool:
        yield from pool.imap(function, items, chunksize=max(1, min(8, len(items) // (4 * jobs))))


# What one line can raise without the batch stopping: bad input, or an odd image a stage failed on.
LINE_ERRORS = (HwrError, ValueError, IndexError, ArithmeticError, MemoryError)


def line_error(line: Line, exc: Exception, what: str) -> str:
    """The one-line reason a line of a batch is skipped."""
    if isinstance(exc, HwrError):
        return str(exc)
    return f"{line.image_path}: {what} failed ({type(exc).__name__}: {exc})"


_WORKER_FRONTEND = None
_WORKER_KEEP_PREPROCESSED = False


def _set_worker_frontend(frontend, keep_preprocessed: bool) -> None:
    global _WORKER_FRONTEND, _WORKER_KEEP_PREPROCESSED
    _WORKER_FRONTEND, _WORKER_KEEP_PREPROCESSED = frontend, keep_preprocessed


def _line_features(line: Line):
    """(line, features, preprocessed line, error) of one line; never raises for a bad line."""
    try:
        feats, pre = _WORKER_FRONTEND.line_features(load_image(line.image_path))
        feats = np.asarray(feats, dtype=np.float32)
        if feats.ndim != 2:
            raise HwrError(f"features have shape {feats.shape}, expected (frames, dims)")
        # the preprocessed line holds whole images: only ship it back when asked
        return line, feats, (pre if _WORKER_KEEP_PREPROCESSED else None), None
    except LINE_ERRORS as exc:
        return line, None, None, line_error(line, exc, "feature extraction")


def line_features(lines: list[Line], frontend, jobs: int = 1, desc: str = "features",
                  keep_preprocessed: bool = False) -> Iterator[tuple]:
    """``(line, features, preprocessed_or_None)`` per readable line, in input order.

    Lines whose image cannot be read or processed are reported on stderr and skipped.
    ``keep_preprocessed`` also returns the preprocessed line (needed to map frames back to
    pixels of the original image); otherwise it is dropped in the worker.
    """
    results = ordered_map(_line_features, lines, jobs, _set_worker_frontend, (frontend, keep_preprocessed))
    for line, feats, pre, error in progress(results, total=len(lines), desc=desc):
        if error is not None:
            warn(f"skipped line {line.id}: {error}")
            continue
        yield line, feats, pre
