"""Area-averaging / interpolating resampler of images along one axis (CSR weights).

:func:`resample_weights` gives the sparse weights of an output grid over the source
pixels; :func:`resample_rows` and :func:`resample_cols_transposed` apply them. Used by the
height normalisation and by the pixel features (:func:`hybrid_hwr.features.pixel_features`).
"""

from __future__ import annotations

import math

import numba
import numpy as np


def linspace(start: float, stop: float, num: int) -> np.ndarray:
    """``np.linspace(start, stop, num)`` (the same arithmetic) without its call overhead."""
    div = num - 1
    delta = np.float64(stop) - np.float64(start)
    y = np.arange(num, dtype=np.float64)
    if div > 0:
        step = delta / div
        if step == 0:
            y /= div
            y *= delta
        else:
            y *= step
    else:
        y = y * delta
    y += start
    if num > 1:
        y[-1] = stop
    return y


def resample_weights(edges: np.ndarray, n_src: int):
    """Sparse weights mapping source pixels to output pixels with source ``edges``.

    Output pixel i covers source interval ``[edges[i], edges[i+1])``: when that is at least
    one pixel long its value is the area average (no aliasing when shrinking), otherwise
    the linear interpolation at its centre (smooth when enlarging).  Sources outside the
    image count as paper.  Returns CSR arrays (start (n_out+1,), index, weight).
    """
    return _weights_kernel(np.asarray(edges, dtype=np.float64), n_src)


@numba.njit(cache=True)
def _weights_kernel(edges, n_src):
    n_out = edges.size - 1
    # at most (length + 2) sources per output of length >= 1, 2 per shorter output
    # (summed per output: edges need not increase, e.g. with odd zone ratios)
    cap = 0
    for i in range(n_out):
        length = edges[i + 1] - edges[i]
        cap += int(length) + 2 if length >= 1.0 else 2
    start = np.zeros(n_out + 1, np.int64)
    index = np.empty(cap, np.int64)
    weight = np.empty(cap, np.float32)
    k = 0
    for i in range(n_out):
        e0 = edges[i]
        e1 = edges[i + 1]
        length = e1 - e0
        if length >= 1.0:
            j = int(math.floor(e0))
            while j < e1:
                ov = min(e1, j + 1.0) - max(e0, float(j))
                if ov > 0 and 0 <= j < n_src:
                    index[k] = j
                    weight[k] = ov / length
                    k += 1
                j += 1
        else:
            c = 0.5 * (e0 + e1) - 0.5
            j0 = int(math.floor(c))
            f = c - j0
            if 1.0 - f > 0 and 0 <= j0 < n_src:
                index[k] = j0
                weight[k] = 1.0 - f
                k += 1
            if f > 0 and 0 <= j0 + 1 < n_src:
                index[k] = j0 + 1
                weight[k] = f
                k += 1
        start[i + 1] = k
    return start, index[:k], weight[:k]


@numba.njit(cache=True)
def resample_rows(img, start, index, weight):
    """Resample along axis 0 with CSR weights."""
    n_out = start.size - 1
    w = img.shape[1]
    out = np.zeros((n_out, w), np.float32)
    for i in range(n_out):
        for k in range(start[i], start[i + 1]):
            j = index[k]
            wk = weight[k]
            for x in range(w):
                out[i, x] += wk * img[j, x]
    return out


@numba.njit(cache=True)
def resample_cols_transposed(img_t, start, index, weight):
    """Resample along the columns of an image given transposed (W, H) -> transposed (n_out, H).

    Transposed in and out so that the inner loop runs over contiguous rows of H values.
    """
    n_out = start.size - 1
    h = img_t.shape[1]
    out = np.zeros((n_out, h), np.float32)
    for i in range(n_out):
        for k in range(start[i], start[i + 1]):
            wk = weight[k]
            src = img_t[index[k]]
            for y in range(h):
                out[i, y] += wk * src[y]
        for y in range(h):
            if out[i, y] > 1.0:
                out[i, y] = 1.0
    return out
