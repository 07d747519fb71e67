"""Checked number types for the command line: every numeric option is parsed by one of
these, so non-finite or absurd values are refused with a usage error before any work.

``LIMIT`` bounds every float: weights, penalties, beams and scales of this decoder live
within a few thousand, and a value like 1e308 overflows the score sums.
"""

from __future__ import annotations

import argparse
import math

LIMIT = 1e6


def _number(text: str, kind: str, convert):
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
    if isinstance(value, float) and not (math.isfinite(value) and abs(value) <= LIMIT):
        raise argparse.ArgumentTypeError(f"expected {kind} of magnitude at most {LIMIT:g}, got {text!r}")
    return value


def finite_float(text: str) -> float:
    return _number(text, "a finite number", float)


def positive_float(text: str) -> float:
    value = _number(text, "a positive number", float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, "a finite number >= 0", float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive_int(text: str) -> int:
    value = _number(text, "a positive integer", int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, "an integer >= 0", int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def any_int(text: str) -> int:
    return _number(text, "an integer", int)


def int_upto(high: int, low: int = 1):
    """An integer type in [low, high]: counts whose absurd values would run for days or
    exhaust memory (e.g. --mixtures 100000000) are refused at parsing."""
    def parse(text: str) -> int:
        value = _number(text, "an integer", int)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}")
        return value

    parse.__name__ = f"integer from {low} to {high}"
    return parse


# upper bounds of counts (far above any useful value)
MAX_JOBS = 256
