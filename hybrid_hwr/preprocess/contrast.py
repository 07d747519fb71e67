"""Contrast enhancement: gray image -> ink map in [0, 1] (1 = ink).

The local paper level per column block, the ink level from the strongest strokes, a
noise floor, and faint long horizontal structures (ruled lines) subtracted as background.
"""

from __future__ import annotations

import numba
import numpy as np

from .config import PreprocessConfig
from .gray import as_gray_uint8


@numba.njit(cache=True)
def _block_percentiles(gray, block_width, q):
    """q-quantile (0..1) of the gray levels of each block of ``block_width`` columns."""
    h, w = gray.shape
    nb = (w + block_width - 1) // block_width
    out = np.empty(nb, np.float32)
    # four histograms filled in turn: runs of equal gray levels (paper) do not wait on
    # the previous increment of the same counter
    hist = np.zeros((4, 256), np.int64)
    for b in range(nb):
        hist[:] = 0
        x0 = b * block_width
        n = min(w, x0 + block_width) - x0
        n4 = n // 4 * 4
        for y in range(h):
            row = gray[y, x0 : x0 + n]
            for x in range(0, n4, 4):
                hist[0, row[x]] += 1
                hist[1, row[x + 1]] += 1
                hist[2, row[x + 2]] += 1
                hist[3, row[x + 3]] += 1
            for x in range(n4, n):
                hist[0, row[x]] += 1
        target = q * (n * h)
        acc = 0
        out[b] = 255.0
        for v in range(256):
            acc += hist[0, v] + hist[1, v] + hist[2, v] + hist[3, v]
            if acc >= target and acc > 0:
                out[b] = v
                break
    return out


_CONTRAST_BINS = 1024


@numba.njit(cache=True)
def _contrast_map(gray, paper_cols, scale, min_contrast):
    """max(paper level of the column - gray, 0) * scale, as float32, and the histogram
    (``_CONTRAST_BINS`` bins over [0, 1]) of the values above ``min_contrast``."""
    h, w = gray.shape
    out = np.empty((h, w), np.float32)
    hist = np.zeros(_CONTRAST_BINS, np.int64)
    for y in range(h):
        src = gray[y]
        dst = out[y]
        for x in range(w):  # vectorised: no histogram in this loop
            d = paper_cols[x] - src[x]
            dst[x] = d * scale if d > 0 else 0.0
        for x in range(w):
            v = np.float64(dst[x])
            if v > min_contrast:
                hist[min(int(v * _CONTRAST_BINS), _CONTRAST_BINS - 1)] += 1
    return out, hist


def _hist_percentile(hist: np.ndarray, q: float) -> float:
    """q-th percentile (0..100) of values histogrammed over [0, 1] (bin centre)."""
    cum = np.cumsum(hist)
    i = int(np.searchsorted(cum, q / 100.0 * cum[-1]))
    return (min(i, hist.size - 1) + 0.5) / hist.size


@numba.njit(cache=True)
def _stretch(img, ref, floor):
    """Map contrast ``ref`` to ink 1, values below ``floor`` (after mapping) to 0, in place
    (``img`` is a temporary: no new image, no new memory pages to fault in)."""
    h, w = img.shape
    inv = 1.0 / (ref * (1.0 - floor))
    for y in range(h):
        row = img[y]
        for x in range(w):
            v = (row[x] - floor * ref) * inv
            row[x] = 0.0 if v <= 0.0 else (1.0 if v >= 1.0 else v)
    return img


def enhance_contrast(gray, config: PreprocessConfig | None = None) -> np.ndarray:
    """Gray image -> float32 ink map in [0, 1] (1 = ink), robust to real scans.

    The paper level is a percentile of each block of columns (gray or unevenly lit paper),
    interpolated across blocks; the contrast to it is stretched so that the
    ``ink_percentile`` of ink candidates maps to 1; a noise floor removes paper texture;
    faint long horizontal structures (ruled lines, which survive a horizontal opening
    of ``rule_length`` image heights) are subtracted as background.  A uniform image
    (no contrast at all, e.g. blank or all black) has no ink.
    """
    cfg = config or PreprocessConfig()
    g = as_gray_uint8(gray)
    h, w = g.shape
    if h == 0 or w == 0:
        return np.zeros((max(h, 1), max(w, 1)), np.float32)
    if not cfg.contrast:
        return (1.0 - g.astype(np.float32) / 255.0).astype(np.float32)
    bw = max(1, int(cfg.block_width))
    paper_blocks = _block_percentiles(g, bw, cfg.paper_percentile / 100.0)
    if paper_blocks.size > 1:  # interpolate between block centres
        centres = (np.arange(paper_blocks.size) + 0.5) * bw
        paper_cols = np.interp(np.arange(w, dtype=np.float32), centres, paper_blocks)
    else:
        paper_cols = np.full(w, paper_blocks[0])
    contrast, hist = _contrast_map(
        g, paper_cols.astype(np.float32), np.float32(1.0 / 255.0), np.float32(cfg.min_contrast)
    )
    if hist.sum() == 0:
        return np.zeros((h, w), np.float32)
    ref = max(_hist_percentile(hist, cfg.ink_percentile), cfg.min_contrast)
    floor = np.float32(max(cfg.noise_floor, 0.0))
    if not cfg.remove_rules:
        return _stretch(contrast, np.float32(ref), floor)
    return _remove_rules(_stretch(contrast, np.float32(ref), np.float32(0.0)), cfg, floor)


def _remove_rules(ink: np.ndarray, cfg: PreprocessConfig, floor) -> np.ndarray:
    """Subtract faint horizontal structures longer than the rule length (ruled lines),
    then apply the noise ``floor``.

    The background of a row is the median, over blocks of ``rule_length`` image heights,
    of the row's ink after a 3-row vertical max (so that thin, slightly tilted and broken
    rules still cover most of a block); handwriting covers far less than half of a
    row block, so only rules (and dense writing, recognised by its thickness) give a
    non-zero median.
    """
    h, w = ink.shape
    length = int(max(25, cfg.rule_length * h))
    if w < length or h < 3:
        return _stretch(ink, np.float32(1.0), floor)
    thickness = 3 + int(cfg.rule_max_thickness * h)
    bg = _block_row_medians(ink, length, np.float32(cfg.rule_max_ink), thickness)
    return _subtract_background(ink, bg, length, floor)


@numba.njit(cache=True)
def _block_row_medians(ink, block, max_level, max_thickness):
    """Rule level of each row within each block of columns: the 60th percentile of the
    row's 3-row vertical max of ``ink`` where its median is not 0 (a rule covers most of
    the block), else 0.

    Medians above ``max_level`` are dark long strokes, not rules; bands of non-zero
    medians thicker than ``max_thickness`` rows are dense writing, not rules: both -> 0.
    """
    h, w = ink.shape
    nb = (w + block - 1) // block
    out = np.zeros((h, nb), np.float32)
    tall = np.empty(w, np.float32)
    scratch = np.empty(block, np.float32)
    for y in range(h):
        above = ink[max(y - 1, 0)]
        row = ink[y]
        below = ink[min(y + 1, h - 1)]
        for x in range(w):
            tall[x] = max(above[x], row[x], below[x])
        for b in range(nb):
            x0 = b * block
            n = min(w, x0 + block) - x0
            if n < block // 2 and b > 0:  # short last block: see below
                continue
            values = tall[x0 : x0 + n]
            nonzero = 0
            for x in range(n):
                nonzero += values[x] > 0.0
            if 2 * nonzero <= n:  # median 0 (not a rule): most rows of most blocks
                continue
            # a rule: its median is its level; a somewhat higher percentile leaves fewer
            # fragments of its darker pixels (strokes crossing it are the top ~20%)
            scratch[:n] = values
            k_high = (n * 3) // 5
            m = _select(scratch, n, k_high)
            median = _select(scratch, k_high, n // 2) if n // 2 < k_high else m
            out[y, b] = m if median <= max_level else 0.0
    for b in range(nb):
        if b > 0 and min(w, (b + 1) * block) - b * block < block // 2:
            out[:, b] = out[:, b - 1]  # short last block: same rules as its neighbour
            continue
        y = 0
        while y < h:
            if out[y, b] > 0.0:
                y1 = y
                while y1 < h and out[y1, b] > 0.0:
                    y1 += 1
                if y1 - y > max_thickness:
                    out[y:y1, b] = 0.0
                y = y1
            else:
                y += 1
    return out


@numba.njit(cache=True)
def _select(a, n, k):
    """k-th smallest (0-based) of ``a[:n]``, found in place (quickselect, the value
    ``np.sort(a[:n])[k]``); afterwards ``a[:k]`` holds the k smallest values."""
    lo = 0
    hi = n - 1
    while hi > lo:
        mid = (lo + hi) // 2
        # median of three as the pivot, also the sentinels of the scans below
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:  # between the two parts: equal to the pivot
            return a[k]
    return a[k]


@numba.njit(cache=True)
def _subtract_background(ink, bg, block, floor):
    """(ink - bg) / (1 - bg), clipped to [0, 1] (ink crossing a rule keeps its strength),
    then values below ``floor`` -> 0 and the rest stretched back to [0, 1]; in place."""
    h, w = ink.shape
    nb = bg.shape[1]
    for y in range(h):
        for k in range(nb):
            b = bg[y, k]
            # ((v - b) / (1 - b) - floor) / (1 - floor) = v * scale - offset
            scale = 1.0 / ((1.0 - b) * (1.0 - floor)) if b < 0.999 else 0.0
            offset = (b / (1.0 - b) + floor) / (1.0 - floor) if b < 0.999 else 1.0
            x0 = k * block
            seg = ink[y, x0 : min(w, x0 + block)]  # zero-based loops over slices vectorise
            for x in range(seg.size):
                v = seg[x] * scale - offset
                seg[x] = 0.0 if v <= 0.0 else (1.0 if v >= 1.0 else v)
    return ink
