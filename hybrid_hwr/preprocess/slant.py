"""Skew and slant: the angle that makes strokes sharpest, and the shear that corrects it.

:func:`estimate_slant` finds the horizontal shear that makes the vertical projection of
near-vertical strokes sharpest (sum of squared column sums over shears of -45..45
degrees); :func:`shear` applies it. :func:`estimate_skew` / :func:`deskew` do the same
with a vertical shear for the baseline's rotation.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .resample import linspace as _linspace


_SPLAT_STEPS = 32  # sub-pixel resolution of the splatting kernel table
_SPLAT_RADIUS = 2  # taps on each side of a pixel (sigma = 1 px: 2 sigma)
_SPLAT_TAPS = 2 * _SPLAT_RADIUS + 2  # columns of the table (c-R .. c+R+1)


def _splat_table(sigma: float = 1.0) -> np.ndarray:
    """Gaussian weights of the taps c-R..c+R+1 for a pixel at c + q / STEPS."""
    q = np.arange(_SPLAT_STEPS)[:, None] / _SPLAT_STEPS
    k = np.arange(-_SPLAT_RADIUS, _SPLAT_RADIUS + 2)[None, :]
    return np.exp(-0.5 * ((k - q) / sigma) ** 2)


_SPLAT = _splat_table()


@numba.njit(cache=True)
def _projection_sharpness(ys, xs, ws, tans, ref_row, width, height, table):
    """For each shear tan: sum of squared bins of the sheared pixels' projection.

    Each pixel is splatted with a Gaussian (``table``, see ``_splat_table``) rather than
    rounded or split linearly: both favour angles whose shifts are whole pixels.
    ``table`` has ``_SPLAT_TAPS`` columns.

    All angles in one pass over the pixels (one row of bins per angle): a pixel's
    positions under every angle are computed first (a vectorised loop), then its taps
    are added; each bin still receives its contributions in pixel order, so the sums
    are those of one pass per angle.  Indices are unsigned: no negative-index checks.
    """
    n_ang = tans.size
    steps = table.shape[0]
    r = (_SPLAT_TAPS - 2) // 2
    pad = int(math.ceil(height * max(abs(tans[0]), abs(tans[-1])))) + r + 2
    nb = width + 2 * pad + 2
    bins = np.zeros(n_ang * nb, np.float64)
    flat = table.ravel()  # row q at q * taps: one flat index, no 2-D index arithmetic
    first_bin = np.empty(n_ang, np.uint64)
    first_tap = np.empty(n_ang, np.uint64)
    for i in range(ys.size):
        x = xs[i]
        dy = ref_row - ys[i]
        wi = ws[i]
        for a in range(n_ang):
            xf = x - dy * tans[a] + pad
            c = int(xf)  # xf > 0
            first_tap[a] = int((xf - c) * steps) * _SPLAT_TAPS
            first_bin[a] = a * nb + c - r
        for a in range(n_ang):
            j = first_bin[a]
            q = first_tap[a]
            # a compile-time tap count: the loop is unrolled
            for k in range(_SPLAT_TAPS):
                bins[j + np.uint64(k)] += wi * flat[q + np.uint64(k)]
    out = np.zeros(n_ang, np.float64)
    for a in range(n_ang):
        s = 0.0
        for j in range(a * nb, (a + 1) * nb):
            s += bins[j] * bins[j]
        out[a] = s
    return out


@numba.njit(cache=True)
def _collect_pixels(img, min_ink, upright_radius, upright_ratio, max_pixels):
    """Rows, columns and ink of the pixels above ``min_ink`` (regularly decimated beyond
    ``max_pixels``).  With ``upright_radius`` r > 0, only pixels whose vertical
    neighbourhood (2r+1 px) holds more ink than their horizontal one: the connecting up-strokes of cursive
    writing (often at 45-60 degrees) and horizontal strokes drop out, so a slant follows
    the down-strokes."""
    h, w = img.shape
    n = 0
    for y in range(h):
        for x in range(w):
            if img[y, x] > min_ink:
                n += 1
    step = n // max_pixels + 1 if n > max_pixels else 1
    ys = np.empty(n // step + 1, np.float64)
    xs = np.empty(n // step + 1, np.float64)
    ws = np.empty(n // step + 1, np.float64)
    k = 0
    seen = 0
    for y in range(h):
        for x in range(w):
            v = img[y, x]
            if v <= min_ink:
                continue
            seen += 1
            if (seen - 1) % step != 0:
                continue
            if upright_radius > 0:
                vert = 0.0
                hor = 0.0
                for d in range(-upright_radius, upright_radius + 1):
                    if 0 <= y + d < h:
                        vert += img[y + d, x]
                    if 0 <= x + d < w:
                        hor += img[y, x + d]
                if vert <= upright_ratio * hor:
                    continue
            ys[k] = y
            xs[k] = x
            ws[k] = v
            k += 1
    return ys[:k], xs[:k], ws[:k]


UPRIGHT_RADIUS = 2  # slant: strokes count when upright over +-2 px (full resolution)
UPRIGHT_RATIO = 1.0  # ... i.e. with this many times more ink vertically than horizontally


@numba.njit(cache=True)
def _halve(ink):
    """2x2 box downscale (float32 sums in the order top-left, bottom-left, top-right,
    bottom-right, then x 0.25)."""
    h = ink.shape[0] // 2
    w = ink.shape[1] // 2
    out = np.empty((h, w), np.float32)
    quarter = np.float32(0.25)
    for y in range(h):
        top = ink[2 * y]
        bottom = ink[2 * y + 1]
        for x in range(w):
            out[y, x] = (((top[2 * x] + bottom[2 * x]) + top[2 * x + 1]) + bottom[2 * x + 1]) * quarter
    return out


@numba.njit(cache=True)
def _count_above(img, level):
    """Number of pixels above ``level``."""
    h, w = img.shape
    n = 0
    for y in range(h):
        for x in range(w):
            n += img[y, x] > level
    return n


_SEARCH_LEVEL = np.float32(0.05)  # ink level of the pixels the angle searches count


def _search_image(ink: np.ndarray) -> np.ndarray:
    """The image the angle searches run on: half resolution for lines with much ink
    (angles do not change with an isotropic downscale; 4x cheaper, as accurate)."""
    ink = np.ascontiguousarray(ink, dtype=np.float32)
    if min(ink.shape) >= 16 and _count_above(ink, _SEARCH_LEVEL) > 3000:
        return _halve(ink)
    return ink




def _best_shear(img, lo_deg, hi_deg, coarse_step, fine_step, transpose, upright_radius, max_pixels):
    """Angle (degrees) in [lo, hi] whose shear makes the projection of ``img`` sharpest.

    Rows are sheared (x - (ref - y) tan) and the columns projected, or with ``transpose``
    the columns sheared and rows projected.  A coarse grid of ``coarse_step`` degrees,
    then a fine grid around its best, and a parabola through the fine maximum; 0 when
    there is too little ink to decide.
    """
    ys, xs, ws = _collect_pixels(img, 0.05, upright_radius, UPRIGHT_RATIO, max_pixels)
    if ys.size < 10:
        return 0.0
    ih, iw = img.shape
    if transpose:
        ys, xs, ih, iw = xs, ys, iw, ih

    def scores(tans):
        return _projection_sharpness(ys, xs, ws, tans, ih / 2.0, iw, ih, _SPLAT)

    coarse, coarse_tans = _coarse_grid(lo_deg, hi_deg, coarse_step)
    best = coarse[int(np.argmax(scores(coarse_tans)))]
    lo, hi = max(best - coarse_step, lo_deg), min(best + coarse_step, hi_deg)
    fine = _linspace(lo, hi, max(3, int(round((hi - lo) / fine_step)) + 1))
    s = scores(np.tan(np.radians(fine)))
    i = int(np.argmax(s))
    deg = float(fine[i])
    if 0 < i < s.size - 1:
        den = s[i - 1] - 2.0 * s[i] + s[i + 1]
        if den < 0:
            deg += 0.5 * (fine[1] - fine[0]) * (s[i - 1] - s[i + 1]) / den
    return min(max(deg, lo_deg), hi_deg)


_COARSE_GRIDS: dict = {}


def _coarse_grid(lo_deg: float, hi_deg: float, step: float):
    """Angles of a coarse search grid and their tangents (the same few grids every line)."""
    key = (lo_deg, hi_deg, step)
    grid = _COARSE_GRIDS.get(key)
    if grid is None:
        degs = _linspace(lo_deg, hi_deg, int(round((hi_deg - lo_deg) / step)) + 1)
        grid = _COARSE_GRIDS[key] = (degs, np.tan(np.radians(degs)))
        if len(_COARSE_GRIDS) > 64:  # unusual configurations: keep the cache small
            _COARSE_GRIDS.clear()
    return grid


def estimate_slant(ink: np.ndarray, max_deg: float = 45.0, max_pixels: int = 20000) -> float:
    """Slant of the writing in degrees (positive = leaning right), 0 if undecidable.

    Criterion: the shear whose vertical projection is sharpest (largest sum of squared,
    ink-weighted column sums, each pixel splatted with a 1-px Gaussian: long upright
    strokes stack into few columns), searched on a coarse grid (4 degrees) then a fine
    one (1 degree), refined by a parabola.  Only pixels of near-upright strokes count
    (see ``_collect_pixels``); as that selection depends on the slant itself, the
    estimate is refined twice on the image deslanted by the current estimate (+-8, then
    +-3 degrees), which makes it a fixed point.
    """
    ink = np.asarray(ink, dtype=np.float32)
    if ink.ndim != 2 or ink.shape[0] < 3 or max_deg <= 0:
        return 0.0
    img = _search_image(ink)
    gate = UPRIGHT_RADIUS if img.shape == ink.shape else max(1, UPRIGHT_RADIUS // 2)
    deg = _best_shear(img, -max_deg, max_deg, 4.0, 1.0, False, gate, max_pixels)
    for radius, coarse, fine in ((8.0, 2.0, 0.5), (3.0, 1.0, 0.25)):
        deg += _best_shear(shear(img, -deg), -radius, radius, coarse, fine, False, gate, max_pixels)
    return float(min(max(deg, -max_deg), max_deg))


def estimate_skew(ink: np.ndarray, max_deg: float = 5.0, max_pixels: int = 20000) -> float:
    """Skew of the line in degrees (positive = the text rises to the right), 0 if undecidable.

    Same criterion as :func:`estimate_slant` with rows and columns swapped: the vertical
    shear that makes the horizontal projection sharpest.
    """
    ink = np.asarray(ink, dtype=np.float32)
    if ink.ndim != 2 or ink.shape[1] < 3 or ink.shape[0] < 3 or max_deg <= 0:
        return 0.0
    return _best_shear(_search_image(ink), -max_deg, max_deg, 1.0, 0.2, True, 0, max_pixels)


def deskew(ink: np.ndarray, deg: float, ref_col: float | None = None) -> np.ndarray:
    """Shift columns vertically to undo a skew of ``deg`` degrees (see :func:`estimate_skew`)."""
    ink = np.asarray(ink, dtype=np.float32)
    if ref_col is None:
        ref_col = (ink.shape[1] - 1) / 2.0
    h, w = ink.shape
    t, pad, extra = _shear_geometry(w, -deg, ref_col)
    return _shear_cols(np.ascontiguousarray(ink), t, float(ref_col), pad, h + extra)


@numba.njit(cache=True)
def _shear_cols(ink, t, ref_col, pad, out_h):
    """out[y + (ref_col - x) * t + pad, x] = ink[y, x], linear interpolation."""
    h, w = ink.shape
    out = np.zeros((out_h, w), np.float32)
    shift = np.empty(w, np.int64)
    frac = np.empty(w, np.float32)
    for x in range(w):
        s = (ref_col - x) * t + pad
        shift[x] = int(math.floor(s))
        frac[x] = s - shift[x]
    for y in range(h):
        for x in range(w):
            v = ink[y, x]
            if v == 0.0:
                continue
            yo = y + shift[x]
            f = frac[x]
            if 0 <= yo < out_h:
                out[yo, x] += v * (1.0 - f)
            if 0 <= yo + 1 < out_h:
                out[yo + 1, x] += v * f
    return out


def _shear_geometry(height: int, deg: float, ref_row: float):
    """tan, left padding and output width offset of a shear by ``deg``."""
    t = math.tan(math.radians(deg))
    shifts = [(ref_row - 0) * t, (ref_row - (height - 1)) * t]
    pad = max(0.0, -min(shifts))
    extra = int(math.ceil(pad + max(0.0, max(shifts)))) + 1
    return t, pad, extra


@numba.njit(cache=True)
def _shear_rows(ink, t, ref_row, pad, out_w):
    """out[y, x + (ref_row - y) * t + pad] = ink[y, x], linear interpolation.

    Written as a gather (vectorised): output ``si + i`` of a row shifted by ``si + f``
    receives ``ink[i - 1] * f`` and then ``ink[i] * (1 - f)``, the order in which a
    scatter over the source pixels would add them, with the same roundings.
    """
    h, w = ink.shape
    out = np.zeros((h, out_w), np.float32)
    for y in range(h):
        s = (ref_row - y) * t + pad
        si = int(math.floor(s))
        f = s - si
        g = 1.0 - f
        row = ink[y]
        i0 = max(0, -si)
        i1 = min(w + 1, out_w - si)
        if i1 <= i0:
            continue
        dst = out[y]
        if i0 == 0:  # no source on the left
            dst[si] = np.float64(np.float32(0.0)) + np.float64(row[0]) * g
        a = max(i0, 1)
        n = min(i1, w) - a
        if n > 0:
            left = row[a - 1 : a - 1 + n]
            right = row[a : a + n]
            seg = dst[si + a : si + a + n]
            for i in range(n):
                first = np.float32(np.float64(left[i]) * f)
                seg[i] = np.float64(first) + np.float64(right[i]) * g
        if i1 == w + 1:  # no source on the right
            dst[si + w] = np.float32(np.float64(row[w - 1]) * f)
    return out


def shear(ink: np.ndarray, deg: float, ref_row: float | None = None) -> np.ndarray:
    """Shear rows horizontally so that vertical strokes lean right by ``deg`` degrees.

    Row ``ref_row`` (default: the middle row) stays in place up to the left padding that
    keeps every pixel inside; the output is wider by about ``height * |tan(deg)|``.
    ``shear(ink, -estimate_slant(ink))`` makes the writing upright.
    """
    ink = np.ascontiguousarray(ink, dtype=np.float32)
    h, w = ink.shape
    if ref_row is None:
        ref_row = (h - 1) / 2.0
    t, pad, extra = _shear_geometry(h, deg, ref_row)
    return _shear_rows(ink, t, float(ref_row), pad, w + extra)
