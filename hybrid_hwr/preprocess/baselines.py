"""Upper and lower baseline (the core zone) from the horizontal profile of ink runs per row."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _row_runs(ink, threshold):
    """Per row: number of ink runs (background->ink transitions)."""
    h, w = ink.shape
    runs = np.zeros(h, np.float64)
    for y in range(h):
        n = 0
        prev = False
        for x in range(w):
            cur = ink[y, x] > threshold
            n += cur and not prev
            prev = cur
        runs[y] = n
    return runs


@numba.njit(cache=True)
def _median5(a):
    """Median over 5 samples, 0 beyond both ends (``ndimage.median_filter(a, 5, mode='constant')``)."""
    n = a.size
    out = np.empty(n, np.float64)
    window = np.empty(5, np.float64)
    for i in range(n):
        for k in range(5):
            j = i - 2 + k
            window[k] = a[j] if 0 <= j < n else 0.0
        window.sort()
        out[i] = window[2]
    return out


@numba.njit(cache=True)
def _mean3(a):
    """Mean over 3 samples, 0 beyond both ends, as a running sum: the same arithmetic as
    ``ndimage.uniform_filter1d(a, 3, mode='constant')``."""
    n = a.size
    out = np.empty(n, np.float64)
    total = 0.0 + a[0]
    if n > 1:
        total += a[1]
    out[0] = total / 3.0
    for i in range(1, n):
        total += (a[i + 1] if i + 1 < n else 0.0) - (a[i - 2] if i >= 2 else 0.0)
        out[i] = total / 3.0
    return out


@numba.njit(cache=True)
def _crossing(prof, inside, outside, thr):
    """Fraction of a pixel beyond ``inside`` at which the profile reaches ``thr``."""
    if outside < 0 or outside >= prof.size:
        return 0.0
    a = prof[inside]
    b = prof[outside]
    if a <= b:
        return 0.0
    return min(max((a - thr) / (a - b), 0.0), 1.0) - 0.5


@numba.njit(cache=True)
def _core_zone(runs, fraction):
    """Upper and lower baseline from the run profile (see :func:`estimate_baselines`)."""
    h = runs.size
    # a median filter first: one-row spikes (fragments of a ruled line, a long dotted
    # stroke) must not become the core zone
    prof = _mean3(_median5(runs) if h >= 5 else runs)
    peak = 0
    for y in range(1, h):
        if prof[y] > prof[peak]:
            peak = y
    thr = fraction * prof[peak]
    up = peak
    while up > 0 and prof[up - 1] >= thr:
        up -= 1
    lo = peak
    while lo < h - 1 and prof[lo + 1] >= thr:
        lo += 1
    # sub-pixel edges: where the profile crosses the threshold
    upper = up - _crossing(prof, up, up - 1, thr)
    lower = lo + 1 + _crossing(prof, lo, lo + 1, thr)
    upper = min(max(upper, 0.0), h - 1.0)
    lower = min(max(lower, upper + 1.0), float(h))
    return upper, lower


def estimate_baselines(ink: np.ndarray, fraction: float = 0.5) -> tuple[float, float]:
    """Upper and lower baseline (rows; core zone = ``[upper, lower)``) of an upright line.

    The profile is the number of ink runs crossing each row (robust to long horizontal
    strokes and rules, unlike the ink sum), median-filtered over 5 rows and smoothed; the core zone is the band around
    the profile's centre of mass where it stays above ``fraction`` of its peak value.
    A blank image gives the middle third.
    """
    ink = np.asarray(ink, dtype=np.float32)
    h = ink.shape[0]
    if h < 3:
        return 0.0, float(h)
    runs = _row_runs(ink, 0.5)
    if runs.sum() < 1:
        return h / 3.0, 2.0 * h / 3.0
    upper, lower = _core_zone(runs, float(fraction))
    return float(upper), float(lower)
