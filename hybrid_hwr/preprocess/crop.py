"""Cropping of the empty margins (rows and columns without ink)."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _ink_box(ink, threshold):
    """First and last row and column holding a pixel above ``threshold`` (-1s if none)."""
    h, w = ink.shape
    top = -1
    bottom = -1
    left = w
    right = -1
    for y in range(h):
        row = ink[y]
        lo = w
        hi = -1
        for x in range(w):  # no early exit: a vectorised min / max
            above = row[x] > threshold
            lo = min(lo, x if above else w)
            hi = max(hi, x if above else -1)
        if hi >= 0:
            if top < 0:
                top = y
            bottom = y
            left = min(left, lo)
            right = max(right, hi)
    return top, bottom, left, right


def crop_margins(ink: np.ndarray, threshold: float = 0.0):
    """Remove empty border rows/columns -> (cropped, top, left); a blank image gives 1x1."""
    fast = isinstance(ink, np.ndarray) and ink.dtype == np.float32 and ink.ndim == 2
    if fast and type(threshold) in (int, float):
        # threshold as float32: the comparison NumPy makes between a float32 array and a float
        top, bottom, left, right = _ink_box(ink, np.float32(threshold))
        if top < 0:
            return np.zeros((1, 1), np.float32), 0, 0
        return ink[top : bottom + 1, left : right + 1], top, left
    cols = np.flatnonzero((ink > threshold).any(axis=0))
    if cols.size == 0:
        return np.zeros((1, 1), np.float32), 0, 0
    rows = np.flatnonzero((ink[:, cols[0] : cols[-1] + 1] > threshold).any(axis=1))
    top, left = int(rows[0]), int(cols[0])
    return ink[top : rows[-1] + 1, left : cols[-1] + 1], top, left
