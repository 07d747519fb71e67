"""Running one function over many lines: progress bars, worker processes, bad-line reports.

Shared by every subcommand that reads a dataset (features, train, align, decode), so
that ``--jobs N``, ``--scheduler`` (a Dask cluster, :mod:`hybrid_hwr.cluster`) and the
"one bad line is reported and skipped" rule behave the same everywhere.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
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
    """``map(function, items)`` in input order, over ``jobs`` processes when jobs > 1.

    ``initializer(*initargs)`` runs once in every process before its first item. While a
    cluster session is open (:func:`hybrid_hwr.cluster.connect`) the work runs there
    instead, whatever ``jobs`` says: then ``function``, ``initializer`` and ``initargs``
    are pickled (module-level functions, picklable data).
    """
    from . import cluster

    if cluster.active() is not None and items:
        yield from cluster.map_ordered(function, items, initializer, initargs)
        return
    if jobs <= 1 or len(items) <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(function, items)
        return
    import multiprocessing

    jobs = min(jobs, len(items))
    pool = multiprocessing.get_context("fork").Pool(jobs, initializer=initializer, initargs=initargs)
    try:
        yield from pool.imap(function, items, chunksize=max(1, min(8, len(items) // (4 * jobs))))
        # every result is in: the workers exit on their own. Pool.terminate (what its `with`
        # block does) signals workers that may be waiting on the task queue's lock, and has
        # been seen to leave the parent waiting on one of them for ever
        pool.close()
    except BaseException:      # an error, SIGTERM, or the caller stopped reading
        pool.terminate()
        raise
    finally:
        pool.join()


def tree_sum(values: Iterable, add: Callable):
    """``add``-sum of ``values`` in a pairwise tree fixed by their number alone (None if empty).

    Pairs are added as soon as both halves exist (memory stays logarithmic), and the tree
    is the same whether the values are local results or futures on a cluster, so the
    float sum does not depend on where the values were computed.
    """
    stack: list = []   # (number of values summed, partial sum), sizes decreasing
    for value in values:
        stack.append((1, value))
        while len(stack) >= 2 and stack[-1][0] == stack[-2][0]:
            (n, right), (_, left) = stack.pop(), stack.pop()
            stack.append((2 * n, add(left, right)))
    if not stack:
        return None
    total = stack.pop()[1]
    while stack:
        total = add(stack.pop()[1], total)
    return total


def summed_map(function: Callable, items: list, add: Callable, jobs: int = 1, initializer=None, initargs=()):
    """``add``-sum of ``function(item)`` over ``items`` (:func:`tree_sum`'s tree), over ``jobs``
    processes or the open cluster; the same value whatever runs it. ``add`` must not
    modify its arguments."""
    from . import cluster

    if cluster.active() is not None and items:
        return cluster.map_summed(function, items, add, initializer, initargs)
    return tree_sum(ordered_map(function, items, jobs, initializer, initargs), add)


# What one line can raise without the batch stopping: bad input, or an odd image a stage failed on.
LINE_ERRORS = (HwrError, ValueError, IndexError, ArithmeticError, MemoryError)


def line_error(line: Line, exc: Exception, what: str) -> str:
    """The one-line reason a line of a batch is skipped."""
    if isinstance(exc, HwrError):
        return str(exc)
    return f"{line.image_path}: {what} failed ({type(exc).__name__}: {exc})"


_WORKER_TASK = None  # (function of one gray image, what it does, whether it takes the line), per process


def _set_worker_task(function: Callable, what: str, with_line: bool = False) -> None:
    global _WORKER_TASK
    _WORKER_TASK = (function, what, with_line)


def _run_on_line(item):
    """(result, error) of one line, or of (line, image bytes) when the image is sent; never raises for a bad line."""
    function, what, with_line = _WORKER_TASK
    line, data = item if isinstance(item, tuple) else (item, None)
    try:
        gray = load_image(line.image_path, data=data)
        return (function(gray, line) if with_line else function(gray)), None
    except LINE_ERRORS as exc:
        return None, line_error(line, exc, what)


def _for_cluster(lines: list[Line]) -> list:
    """The lines as a cluster's workers read them: absolute paths, or with the image's bytes
    when the workers do not see the image files (no shared data path)."""
    import dataclasses

    from . import cluster

    sent = [dataclasses.replace(line, image_path=Path(line.image_path).absolute()) for line in lines]
    if not sent or cluster.workers_can_read(sent[0].image_path):
        return sent
    return [(line, _read_bytes(line.image_path)) for line in sent]


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None     # load_image on the worker reports it


def map_line_images(lines: list[Line], function: Callable, jobs: int = 1, what: str = "processing",
                    desc: str = "", on_skip: Callable | None = None, with_line: bool = False) -> Iterator[tuple]:
    """``(line, function(gray image))`` per line, in input order, over ``jobs`` processes.

    ``function`` reaches forked workers without pickling (a bound method or partial is
    fine); on a cluster it is pickled once per run (a :class:`hybrid_hwr.cluster.PerProcess`
    is built once per worker). ``with_line``: ``function(gray, line)``. A line whose image
    cannot be read, or that ``function`` fails on (one of :data:`LINE_ERRORS`), is
    reported on stderr as "``what`` failed" and skipped (and given to ``on_skip(line id,
    reason)``).
    """
    from . import cluster

    items = _for_cluster(lines) if cluster.active() is not None else lines
    outcomes = ordered_map(_run_on_line, items, jobs, _set_worker_task, (function, what, with_line))
    results = ((line, result, error) for line, (result, error) in zip(lines, outcomes))
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
