"""Running one function over many lines: progress bars, worker processes, bad-line reports.

Shared by every subcommand that reads a dataset (features, train, align, decode), so
that ``--jobs N`` and the "one bad line is reported and skipped" rule behave the same
everywhere.
"""

from __future__ import annotations

import functools
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


_WORKER_TASK = None  # (function of one gray image, what it does), set in each worker process


def _set_worker_task(function: Callable, what: str) -> None:
    global _WORKER_TASK
    _WORKER_TASK = (function, what)


def _run_on_line(line: Line):
    """(line, result, error) of one line; never raises for a bad line."""
    function, what = _WORKER_TASK
    try:
        return line, function(load_image(line.image_path)), None
    except LINE_ERRORS as exc:
        return line, None, line_error(line, exc, what)


def map_line_images(lines: list[Line], function: Callable, jobs: int = 1, what: str = "processing",
                    desc: str = "", on_skip: Callable | None = None) -> Iterator[tuple]:
    """``(line, function(gray image))`` per line, in input order, over ``jobs`` processes.

    ``function`` reaches forked workers without pickling (a bound method or partial is
    fine). A line whose image cannot be read, or that ``function`` fails on (one of
    :data:`LINE_ERRORS`), is reported on stderr as "``what`` failed" and skipped (and
    given to ``on_skip(line id, reason)``).
    """
    results = ordered_map(_run_on_line, lines, jobs, _set_worker_task, (function, what))
    for line, result, error in progress(results, total=len(lines), desc=desc):
        if error is not None:
            warn(f"skipped line {line.id}: {error}")
            if on_skip is not None:
                on_skip(line.id, str(error))
            continue
        yield line, result


def _frame_features(gray: np.ndarray, frontend, keep_preprocessed: bool):
    feats, pre = frontend.line_features(gray)
    feats = np.asarray(feats, dtype=np.float32)
    if feats.ndim != 2:
        raise HwrError(f"features have shape {feats.shape}, expected (frames, dims)")
    # the preprocessed line holds whole images: only ship it back when asked
    return feats, (pre if keep_preprocessed else None)


def line_features(lines: list[Line], frontend, jobs: int = 1, desc: str = "features",
                  keep_preprocessed: bool = False) -> Iterator[tuple]:
    """``(line, features, preprocessed_or_None)`` per readable line, in input order.

    Lines whose image cannot be read or processed are reported on stderr and skipped.
    ``keep_preprocessed`` also returns the preprocessed line (needed to map frames back to
    pixels of the original image); otherwise it is dropped in the worker.
    """
    function = functools.partial(_frame_features, frontend=frontend, keep_preprocessed=keep_preprocessed)
    for line, (feats, pre) in map_line_images(lines, function, jobs, "feature extraction", desc):
        yield line, feats, pre
