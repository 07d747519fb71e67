"""The one exception type that reaches users as a single clear line."""


class HwrError(Exception):
    """A problem with the user's input (file, model, option) rather than a bug.

    The command line prints ``hybrid-hwr: error: <message>`` and exits non-zero;
    messages name the file (and line number when there is one) and what is wrong.
    """
