"""The one exception type that reaches users as a single clear line."""


class HwrError(Exception):
    """A problem with the user's input (file, model, option) rather than a bug.

    The command line prints ``hybrid-hwr: error: <message>`` and exits non-zero;
    messages name the file (and line number when there is one) and what is wrong.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, a batch scheduler), raised in the main process so that
    unfinished temporary files are removed as for Ctrl-C."""


_held = 0          # > 0 inside deferred_termination()
_pending = False   # a SIGTERM arrived meanwhile


def raise_on_sigterm():
    """Make SIGTERM raise :class:`Terminated` in this process (worker processes forked later
    still die at once); returns the previous handler, to be restored with ``signal.signal``."""
    import os
    import signal

    main_pid = os.getpid()

    def handler(signum, frame):
        global _pending
        if os.getpid() != main_pid:        # a forked worker: the default, immediate exit
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if _held:
            _pending = True
            return
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


class deferred_termination:
    """A block that SIGTERM does not cut in two (e.g. creating a temporary file and taking
    note of its name): the :class:`Terminated` is raised when the block ends."""

    def __enter__(self):
        global _held
        _held += 1

    def __exit__(self, *exc):
        global _held, _pending
        _held -= 1
        if not _held and _pending:
            _pending = False
            raise Terminated()
