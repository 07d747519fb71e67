"""Batch work on a Dask cluster: ``--scheduler tcp://HOST:PORT`` or ``--scheduler local:N``.

The functions of :mod:`hybrid_hwr.batch` that fan work out over ``--jobs`` processes
(:func:`~hybrid_hwr.batch.ordered_map`, :func:`~hybrid_hwr.batch.summed_map`) send it to
the cluster instead while a :func:`connect` session is open, so every command gets the
option from one place::

    with cluster.connect("local:2"):          # or "tcp://scheduler:8786"
        train_gmm_hmm(lines, "exp/gmm", config)

How the work is cut and put together again:

* items are grouped into tasks of a few lines (shards); results come back in input
  order, whichever worker ran what;
* the setup a ``--jobs`` pool runs once per process (``initializer(*initargs)``: the
  model of an E-step iteration, the decoder) is sent once per call as one piece of data
  and run once per worker process, not once per task; a :class:`PerProcess` function
  (e.g. a decoder loaded from its model directory) crosses as its recipe and is built
  once per worker process;
* training sums (accumulators) are added in a tree fixed by the number of shards alone,
  on the workers, so the sum is the same float for any number of workers or processes,
  and ``--jobs 1`` gives the same model to the last bit;
* data sent once and kept on the cluster (the training lines' features, see :func:`held`)
  is held by a task that returns it, so Dask can recompute it when the worker holding it
  dies. Dask retries the tasks of a lost worker; each shard's result is a pure function
  of its inputs, returned rather than added up on the worker, so an iteration's sums
  stay exact (no line counted twice, none lost).

Dask is an optional dependency (``pip install 'hybrid_hwr[dask]'``). Worker processes
should run one thread each (``dask worker ADDRESS --nthreads 1 --nworkers N``): the
kernels hold the interpreter lock.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import threading
import uuid
import warnings
import weakref
from pathlib import Path
from typing import Callable, Iterator

from .errors import HwrError

INSTALL_HINT = "pip install 'hybrid_hwr[dask]'"
CONNECT_TIMEOUT = "20s"
WORKERS_TIMEOUT = 60      # seconds to wait for a first worker on a scheduler that has none
_LOCAL = re.compile(r"local:([1-9][0-9]{0,2})")
_REMOTE = re.compile(r"(tcp|tls|ws|wss|inproc|ucx)://\S+")


def parse_scheduler(text: str) -> str:
    """``--scheduler`` value: ``local:N`` (1 <= N <= 999) or a scheduler address ``tcp://host:port``."""
    text = text.strip()
    if _LOCAL.fullmatch(text) or _REMOTE.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(
        f"expected a Dask scheduler address such as tcp://host:8786, or local:N for N local worker "
        f"processes, got {text!r}")


def _distributed():
    try:
        import distributed
    except ImportError:
        raise HwrError(f"--scheduler needs Dask's distributed scheduler, which is not installed: "
                       f"{INSTALL_HINT}") from None
    return distributed


class Session:
    """A connection to a Dask cluster, opened at its first use (so a command that fails on its
    input first starts nothing), and the local cluster it started for ``local:N``."""

    def __init__(self, address: str):
        self.address = address
        self.local_cluster = None
        self._client = None
        self._held: dict[tuple, list] = {}

    @property
    def client(self):
        if self._client is None:
            self._client, self.local_cluster = _open(self.address)
        return self._client

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def close(self) -> None:
        self._held.clear()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        if self.local_cluster is not None:
            with contextlib.suppress(Exception):
                self.local_cluster.close()
        self._client = self.local_cluster = None


def _open(address: str):
    """(Client, LocalCluster or None) of a scheduler address."""
    distributed = _distributed()
    quiet = not os.environ.get("HYBRID_HWR_DEBUG")
    if quiet:   # a lost worker is retried by Dask: its log lines are not the user's business
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    local = _LOCAL.fullmatch(address)
    cluster = None
    try:
        if local:
            with warnings.catch_warnings():   # e.g. "port 8787 in use" when another cluster runs here
                warnings.simplefilter("ignore", UserWarning)
                cluster = distributed.LocalCluster(
                    n_workers=int(local.group(1)), threads_per_worker=1, processes=True, dashboard_address=None,
                    silence_logs=logging.CRITICAL if quiet else logging.WARNING)
            return distributed.Client(cluster), cluster
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as exc:
        if cluster is not None:
            cluster.close()
        raise HwrError(f"--scheduler {address}: cannot reach the Dask scheduler ({_one_line(exc)})") from None
    try:   # tasks would wait for ever on a scheduler without workers
        client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
    except (OSError, TimeoutError):
        client.close()
        raise HwrError(f"--scheduler {address}: no Dask worker joined the scheduler within {WORKERS_TIMEOUT} s "
                       f"(start some with: dask worker {address} --nthreads 1)") from None
    return client, None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


_ACTIVE: Session | None = None


def active() -> Session | None:
    """The session opened by :func:`connect`, or None (work runs in local processes)."""
    return _ACTIVE


@contextlib.contextmanager
def connect(address: str) -> Iterator[Session]:
    """A Dask session on ``address`` (``local:N`` starts N local worker processes) for the block.

    Inside the block, batch work of this process runs on the cluster; the connection is
    made at the first piece of work. Dask missing or a scheduler out of reach is an
    :class:`HwrError` naming the fix or the address.
    """
    global _ACTIVE
    try:
        address = parse_scheduler(address)
    except argparse.ArgumentTypeError as exc:
        raise HwrError(f"--scheduler: {exc}") from None
    _distributed()   # missing: said now, before any work
    session = Session(address)
    previous, _ACTIVE = _ACTIVE, session
    try:
        yield session
    finally:
        _ACTIVE = previous
        session.close()


# ----------------------------------------------------------------------------- worker side

_SETUP_LOCK = threading.RLock()
_SETUP_DONE: str | None = None     # token of the setup this worker process ran last


def _hold(value):
    """A task that returns its argument: data kept on the cluster with a way to recompute it."""
    return value


def _run_task(token: str, setup, function: Callable, items: list) -> list:
    """``[function(item) ...]`` after the call's setup, run once per worker process."""
    global _SETUP_DONE
    initializer, initargs = setup
    with _SETUP_LOCK:   # one setup at a time per process (module-level state)
        if initializer is not None and _SETUP_DONE != token:
            initializer(*initargs)
            _SETUP_DONE = token
        return [function(item) for item in items]


def _run_one(token: str, setup, function: Callable, item):
    return _run_task(token, setup, function, [item])[0]


def _lost_message(exc: Exception) -> str:
    return f"the Dask cluster could not run a task ({type(exc).__name__}: {exc})"


# ----------------------------------------------------------------------------- client side


def _submit_setup(session: Session, initializer, initargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)   # "large graph": sent once on purpose, see _hold
        return uuid.uuid4().hex, session.client.submit(_hold, (initializer, tuple(initargs)), pure=False)


def task_size(n_items: int, n_workers: int, most: int = 32) -> int:
    """Items per task: about four tasks per worker, at most ``most`` items each."""
    return max(1, min(most, n_items // (4 * n_workers)))


def map_ordered(function: Callable, items: list, initializer=None, initargs=(), per_task: int | None = None,
                session: Session | None = None) -> Iterator:
    """``map(function, items)`` on the cluster, yielded in input order as results arrive."""
    session = session or _ACTIVE
    size = per_task or task_size(len(items), session.n_workers)
    token, setup = _submit_setup(session, initializer, initargs)
    client = session.client
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        futures = [client.submit(_run_task, token, setup, function, items[i:i + size], pure=False)
                   for i in range(0, len(items), size)]
    try:
        for k in range(len(futures)):
            future, futures[k] = futures[k], None   # released as soon as it is read
            yield from _result(future)
    finally:
        for future in futures:
            if future is not None:
                future.cancel()


def _result(future):
    distributed = _distributed()
    try:
        return future.result()
    except (distributed.client.FutureCancelledError, distributed.scheduler.KilledWorker) as exc:
        raise HwrError(_lost_message(exc)) from None


def map_summed(function: Callable, items: list, add: Callable, initializer=None, initargs=(),
               session: Session | None = None):
    """``add``-sum of ``function(item)`` over ``items`` on the cluster, in the tree of :func:`tree_sum`.

    One task per item; the additions run on the workers too, in the same fixed tree as a
    local run, so the result does not depend on where or when the shards ran.
    """
    from .batch import tree_sum

    session = session or _ACTIVE
    client = session.client
    token, setup = _submit_setup(session, initializer, initargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        leaves = [client.submit(_run_one, token, setup, function, item, pure=False) for item in items]
        total = tree_sum(leaves, lambda a, b: client.submit(add, a, b, pure=False))
    return None if total is None else _result(total)


def held(owner, parts: Callable[[], list], tag=None, session: Session | None = None) -> list:
    """Futures of ``parts()``, sent to the cluster once per ``owner`` object (and ``tag``: a way of
    cutting it) and kept while the owner lives.

    Each part is held by a task that returns it (not scattered), so Dask recomputes it
    from the task when the worker holding it is lost.
    """
    session = session or _ACTIVE
    key = (id(owner), tag)
    if key not in session._held:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            session._held[key] = [session.client.submit(_hold, part, pure=False) for part in parts()]
        weakref.finalize(owner, session._held.pop, key, None)
    return session._held[key]


def workers_can_read(path: str | Path, session: Session | None = None) -> bool:
    """Whether every worker sees the file ``path`` (a shared data path); else images are sent as bytes."""
    session = session or _ACTIVE
    seen = session.client.run(os.path.isfile, str(Path(path).absolute()))
    return bool(seen) and all(seen.values())


# ----------------------------------------------------------------------------- functions built per process

_BUILT: dict = {}        # recipe key -> built function, the most recent few per process
_BUILT_KEEP = 4


def _stamp(value) -> tuple:
    """Modification times of a path argument (a model folder: its model and decoder files)."""
    if not isinstance(value, (str, os.PathLike)):
        return ()
    path = Path(value)
    candidates = [path] + ([path / "model.json", path / "decoder.json"] if path.is_dir() else [])
    return tuple(p.stat().st_mtime_ns for p in candidates if p.exists())


class PerProcess:
    """A function built once per process from a small recipe, ``factory(*args)``.

    Pickled (to a Dask worker or a pool process), it carries only the recipe: each process
    builds the function at its first call and keeps it, keyed by the recipe and the
    modification times of the files its arguments name, so a worker loads a model once
    for all its tasks (and again only when the files change). ``built`` is the function
    already built in this process (the command's own copy), so it is not built twice here.
    """

    def __init__(self, factory: Callable, *args, built: Callable | None = None):
        self.factory, self.args = factory, args
        self._key = None
        if built is not None:
            _remember(self.key, built)

    @property
    def key(self):
        if self._key is None:
            name = f"{self.factory.__module__}.{self.factory.__qualname__}"
            self._key = (name, repr(self.args), tuple(_stamp(a) for a in self.args))
        return self._key

    def function(self) -> Callable:
        built = _BUILT.get(self.key)
        if built is None:
            built = _remember(self.key, self.factory(*self.args))
        return built

    def __call__(self, *args, **kwargs):
        return self.function()(*args, **kwargs)

    def __reduce__(self):
        return (PerProcess, (self.factory, *self.args))


def _remember(key, function):
    with _SETUP_LOCK:
        _BUILT.pop(key, None)
        _BUILT[key] = function
        while len(_BUILT) > _BUILT_KEEP:
            _BUILT.pop(next(iter(_BUILT)))
    return function

