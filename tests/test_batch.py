"""ordered_map over worker processes: input order, and how the pool ends."""
import multiprocessing
import os
import time
from multiprocessing import util

from hybrid_hwr.batch import ordered_map


def _mark_clean_exit(folder):
    """Worker initializer: a file that appears only when the worker leaves on its own
    (multiprocessing runs finalizers on a normal exit, not when a signal kills it); the pause
    gives a pool that signals its workers the time to do it."""
    def mark():
        time.sleep(0.3)
        open(os.path.join(folder, str(os.getpid())), "w").close()

    util.Finalize(None, mark, exitpriority=10)


def _square_with_pid(x):
    return x * x, os.getpid()


def test_ordered_map_keeps_input_order_over_two_processes():
    results = list(ordered_map(_square_with_pid, list(range(50)), jobs=2))
    assert [r for r, _ in results] == [x * x for x in range(50)]
    assert os.getpid() not in {pid for _, pid in results}


def test_workers_exit_on_their_own_once_every_result_is_read(tmp_path):
    results = list(ordered_map(_square_with_pid, list(range(40)), jobs=2,
                               initializer=_mark_clean_exit, initargs=(str(tmp_path),)))
    workers = {pid for _, pid in results}
    assert not multiprocessing.active_children()
    # a terminated pool would have killed them before their exit handlers ran
    assert {int(name) for name in os.listdir(tmp_path)} >= workers


def test_a_caller_that_stops_reading_ends_the_pool(tmp_path):
    results = ordered_map(_square_with_pid, list(range(400)), jobs=2)
    assert next(results)[0] == 0
    results.close()
    assert not multiprocessing.active_children()
