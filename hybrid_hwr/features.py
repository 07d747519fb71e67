"""Sliding-window features of a preprocessed line: 28 handcrafted static features + 28 deltas.

A window of ``width`` columns slides over the normalised line (72 rows: ascender zone
rows 0-17, core zone 18-53, descender zone 54-71 by default) in steps of ``shift``
columns; frame ``t`` covers columns ``[t*shift + shift//2 - width//2, ... + width)``, columns
outside the image count as paper.  Ink is the [0, 1] map of :mod:`hybrid_hwr.preprocess`
(1 = ink); "binary" below means ink > ``FeatureConfig.threshold`` (0.5).

Static features (per frame)::

    #   name            definition
    0   dens_frame      mean ink of the window
    1   dens_asc        mean ink of the window's ascender zone (above the upper baseline)
    2   dens_core       mean ink of the window's core zone (between the baselines)
    3   dens_desc       mean ink of the window's descender zone (below the lower baseline)
    4   cog             vertical centre of gravity of the ink: height above the lower baseline
                        in core heights (0 = lower, 1 = upper baseline; 0.5 if no ink)
    5   cog_change      cog minus the previous frame's cog (0 for the first frame)
    6   cfg_top         2x2 blocks [00/11] (paper above ink: top edge of a stroke) in the window,
                        divided by the window's binary ink pixel count
    7   cfg_bottom      2x2 blocks [11/00] (ink above paper: bottom edge of a stroke), same
    8   cfg_left        2x2 blocks [01/01] (paper left of ink: left edge of a stroke), same
    9   cfg_right       2x2 blocks [10/10] (ink left of paper: right edge of a stroke), same
    10  cfg_diag_up     2x2 blocks on a "/" edge: one corner differs, top-left or bottom-right
                        ([10/00] [00/01] [01/11] [11/10]), same
    11  cfg_diag_down   2x2 blocks on a "\\" edge: top-right or bottom-left corner differs
                        ([01/00] [00/10] [10/11] [11/01]), same
    12  core_cfg_top    as cfg_top, blocks and ink count restricted to the core zone
    13  core_cfg_bottom as cfg_bottom in the core zone
    14  core_cfg_left   as cfg_left in the core zone
    15  core_cfg_right  as cfg_right in the core zone
    16  core_cfg_diag_up    as cfg_diag_up in the core zone
    17  core_cfg_diag_down  as cfg_diag_down in the core zone
    18  dens_left       mean ink of the left half of the window (width // 2 columns)
    19  dens_right      mean ink of the right half of the window (width // 2 columns)
    20  grad_000        gradient-orientation histogram of the ink (central differences): share
                        of the gradient pointing right (0 deg, ink increases to the right: left
                        edges of strokes); each gradient vector is decomposed onto its two
                        nearest of the 8 directions (45 deg apart), the components summed over
                        the window and divided by max(their total, 1)
    21  grad_045        ... pointing up-right (45 deg)
    22  grad_090        ... pointing up (90 deg: bottom edges of strokes)
    23  grad_135        ... pointing up-left
    24  grad_180        ... pointing left (right stroke edges)
    25  grad_225        ... pointing down-left
    26  grad_270        ... pointing down (top edges of strokes)
    27  grad_315        ... pointing down-right

Features 28-55 are ``d_<name>``: the time derivative of each static feature, HTK's
regression formula over +-2 frames, ``d_t = sum_k k (c_{t+k} - c_{t-k}) / (2 sum_k k^2)``,
k = 1..2, with the first/last frame repeated at the edges.

The alternative ``kind='pixels'`` returns the raw ink of each window, area-averaged to
``pixel_rows x pixel_cols`` (default 18 x 3 = 54 values, named ``px_r<row>_c<col>``),
plus their deltas when ``deltas`` is true (D = 108 by default).

The frame computation is a Numba kernel (:func:`static_features`); a plain-NumPy
implementation of the same computation (:func:`static_features_numpy`) is kept as a
reference for tests and benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import numba
import numpy as np

from .errors import HwrError
from .preprocess import PreprocessConfig, PreprocessedLine, preprocess, resample_rows, resample_weights

__all__ = [
    "STATIC_NAMES",
    "FEATURE_NAMES",
    "FeatureConfig",
    "frame_positions",
    "static_features",
    "static_features_numpy",
    "deltas",
    "extract_features",
    "Normalizer",
    "FrontEnd",
]

_CONFIGS = ("top", "bottom", "left", "right", "diag_up", "diag_down")
# 2x2 block code = 8*a + 4*b + 2*c + d for the block [a b / c d] (1 = binary ink);
# the configuration each code belongs to (-1: none): straight edges, then the edges
# running "/" (one corner pixel differs: top-left or bottom-right) and "\\" (top-right
# or bottom-left differs)
_CONFIG_PATTERNS = {
    0: (0b0011,),  # top: [00/11] paper above ink
    1: (0b1100,),  # bottom: [11/00] ink above paper
    2: (0b0101,),  # left: [01/01] paper left of ink
    3: (0b1010,),  # right: [10/10] ink left of paper
    4: (0b1000, 0b0001, 0b0111, 0b1110),  # diag_up "/": [10/00] [00/01] [01/11] [11/10]
    5: (0b0100, 0b0010, 0b1011, 0b1101),  # diag_down "\\": [01/00] [00/10] [10/11] [11/01]
}
_CONFIG_OF_CODE = np.full(16, -1, dtype=np.int64)
for _k, _codes in _CONFIG_PATTERNS.items():
    _CONFIG_OF_CODE[list(_codes)] = _k

STATIC_NAMES = (
    ["dens_frame", "dens_asc", "dens_core", "dens_desc", "cog", "cog_change"]
    + [f"cfg_{c}" for c in _CONFIGS]
    + [f"core_cfg_{c}" for c in _CONFIGS]
    + ["dens_left", "dens_right"]
    + [f"grad_{d:03d}" for d in range(0, 360, 45)]
)
FEATURE_NAMES = STATIC_NAMES + [f"d_{n}" for n in STATIC_NAMES]
N_STATIC = len(STATIC_NAMES)  # 28
EMPTY_COG = 0.5  # centre of gravity of a frame without ink: middle of the core zone
GRAD_FLOOR = 1.0  # gradient histograms are divided by max(total magnitude, this)
SQRT2 = math.sqrt(2.0)


@dataclass
class FeatureConfig:
    """Sliding window and feature type, saved with a model (``to_dict`` is JSON-safe)."""

    kind: str = "handcrafted"  # 'handcrafted' (56 features) or 'pixels'
    width: int = 9  # window width (normalised pixels)
    shift: int = 3  # window shift (normalised pixels)
    deltas: bool = True  # append the regression deltas of the static features
    delta_window: int = 2  # +-frames of the delta regression
    threshold: float = 0.5  # ink level of "binary" ink (configuration counts)
    pixel_rows: int = 18  # kind='pixels': rows of the downscaled window
    pixel_cols: int = 3  # kind='pixels': columns of the downscaled window

    def __post_init__(self):
        if self.kind not in ("handcrafted", "pixels"):
            raise HwrError(f"unknown feature kind {self.kind!r} (expected 'handcrafted' or 'pixels')")
        if self.width < 2 or self.shift < 1 or self.delta_window < 1:
            raise HwrError("feature window needs width >= 2, shift >= 1 and delta_window >= 1")
        if self.pixel_rows < 1 or self.pixel_cols < 1:
            raise HwrError("pixel features need pixel_rows >= 1 and pixel_cols >= 1")

    @property
    def names(self) -> list[str]:
        if self.kind == "handcrafted":
            static = list(STATIC_NAMES)
        else:
            static = [f"px_r{r}_c{c}" for r in range(self.pixel_rows) for c in range(self.pixel_cols)]
        return static + [f"d_{n}" for n in static] if self.deltas else static

    @property
    def dim(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HwrError(f"unknown feature option(s): {', '.join(unknown)}")
        return cls(**d)


def n_frames_of(width: int, config: FeatureConfig) -> int:
    """Number of frames of a line ``width`` normalised pixels wide (at least 1)."""
    return max(1, -(-int(width) // config.shift))


def _window_left(n_frames: int, config: FeatureConfig) -> np.ndarray:
    return np.arange(n_frames, dtype=np.int64) * config.shift + config.shift // 2 - config.width // 2


def frame_positions(n_frames: int, config: FeatureConfig) -> np.ndarray:
    """x centre (normalised pixels) of each frame's window."""
    return _window_left(n_frames, config) + (config.width - 1) / 2.0


# --------------------------------------------------------------------------- static features


def _zone_rows(height: int, upper: float, lower: float) -> tuple[int, int]:
    """Integer row limits of the core zone: rows [ua, lb)."""
    ua = int(min(max(round(upper), 0), height))
    lb = int(min(max(round(lower), ua), height))
    return ua, lb


@numba.njit(cache=True)
def _column_stats(ink_t, ua, lb, threshold, config_of_code):
    """Per-column statistics (27 per column) of the transposed ink ``ink_t`` (W, H).

    0 ink, 1 ascender ink, 2 core ink, 3 descender ink, 4 ink * row centre, 5 binary ink
    pixels, 6 binary ink pixels in the core, 7-12 configuration blocks whose top-left
    pixel is in the column, 13-18 the same for blocks inside the core zone, 19-26 gradient
    magnitude per orientation bin.

    Sums run down each column in local accumulators, row by row, so every statistic is
    added in the same order as a plain double loop over the pixels (identical values).
    """
    w, h = ink_t.shape
    stats = np.zeros((w, 27), np.float64)
    # rows [first, last] of each column's ink: a pixel whose 3x3 neighbourhood has
    # no ink there is paper around and adds nothing, so only that band is visited
    first = np.full(w, h, np.int64)
    last = np.full(w, -1, np.int64)
    for x in range(w):
        col = ink_t[x]
        lo = h
        hi = -1
        for y in range(h):  # no early exit: a vectorised min / max
            inked = col[y] != 0.0
            lo = min(lo, y if inked else h)
            hi = max(hi, y if inked else -1)
        first[x] = lo
        last[x] = hi
    paper = np.zeros(h, np.float32)  # the columns beyond both borders
    blocks = np.zeros(12, np.int64)  # configuration counts: 6 in the window, 6 in the core
    grad = np.zeros(8, np.float64)  # gradient magnitude per direction
    for x in range(w):
        has_right = x + 1 < w
        y0 = first[x]
        y1 = last[x]
        if x > 0:
            y0 = min(y0, first[x - 1])
            y1 = max(y1, last[x - 1])
        if has_right:
            y0 = min(y0, first[x + 1])
            y1 = max(y1, last[x + 1])
        y_lo = max(y0 - 1, 0)
        y_hi = min(y1 + 2, h)
        if y_lo >= y_hi:
            continue
        col = ink_t[x]
        left_col = ink_t[x - 1] if x > 0 else paper
        right_col = ink_t[x + 1] if has_right else paper
        ink = 0.0
        asc = 0.0
        core = 0.0
        desc = 0.0
        moment = 0.0
        n_bin = 0
        n_bin_core = 0
        grad[:] = 0.0
        blocks[:] = 0
        # zero-based loop over slices of the band: no negative-index checks
        n = y_hi - y_lo
        c = col[y_lo:]
        rc = right_col[y_lo:]
        lc = left_col[y_lo:]
        below_edge = h - 1 - y_lo  # band index of the last row
        u = np.float64(col[y_lo - 1]) if y_lo > 0 else 0.0  # pixel above
        v = np.float64(c[0])
        for i in range(n):
            y = y_lo + i
            d = np.float64(c[i + 1]) if i < below_edge else 0.0  # pixel below
            r = np.float64(rc[i])
            lft = np.float64(lc[i])
            if v != 0.0:
                ink += v
                if y < ua:
                    asc += v
                elif y < lb:
                    core += v
                else:
                    desc += v
                moment += v * (y + 0.5)
                if v > threshold:
                    n_bin += 1
                    if ua <= y < lb:
                        n_bin_core += 1
            if has_right and i < below_edge:  # 2x2 block with top-left (y, x)
                code = (
                    (8 if v > threshold else 0)
                    + (4 if r > threshold else 0)
                    + (2 if d > threshold else 0)
                    + (1 if rc[i + 1] > threshold else 0)
                )
                k = config_of_code[np.uint64(code)]
                if k >= 0:
                    blocks[np.uint64(k)] += 1
                    if ua <= y and y + 1 < lb:
                        blocks[np.uint64(6 + k)] += 1
            gx = r - lft
            gy = u - d
            if gx != 0.0 or gy != 0.0:
                # decompose the gradient onto its two nearest of the 8 directions: the
                # axis one gets |ax - ay|, the diagonal one min(ax, ay) * sqrt 2; bins by
                # arithmetic rather than branches (the directions change pixel to pixel)
                ax = abs(gx)
                ay = abs(gy)
                west = np.uint64(gx < 0.0)
                south = np.uint64(gy < 0.0)
                horizontal = np.uint64(ax >= ay)
                # axis bins 0 (east) 4 (west) 2 (north) 6 (south); diagonals 1 3 7 5
                one = np.uint64(1)
                axis = horizontal * (np.uint64(4) * west) + (one - horizontal) * (np.uint64(2) + np.uint64(4) * south)
                diag = one + np.uint64(2) * west + south * (np.uint64(6) - np.uint64(4) * west)
                grad[axis] += max(ax, ay) - min(ax, ay)
                grad[diag] += min(ax, ay) * SQRT2
            u = v
            v = d
        st = stats[x]
        st[0] = ink
        st[1] = asc
        st[2] = core
        st[3] = desc
        st[4] = moment
        st[5] = n_bin
        st[6] = n_bin_core
        for k in range(12):
            st[7 + k] = blocks[k]
        for k in range(8):
            st[19 + k] = grad[k]
    return stats


@numba.njit(cache=True)
def _window_features(stats, h, ua, lb, width, shift, out):
    """Window sums of the column statistics -> the 28 static features of each frame,
    written to ``out[:, :28]`` (``out`` has one row per frame).

    Window sums are differences of prefix sums over the columns (paper columns padded on
    both sides).  Only the prefix sums a frame needs are kept, in a ring of rows that
    the frames sweep over: the same values as a full table, without its memory.
    """
    w = stats.shape[0]
    n_frames = out.shape[0]
    ring = 1
    while ring < width + shift + 2:
        ring *= 2
    mask = ring - 1
    cum = np.zeros((ring, 27), np.float64)  # cum[c & mask] = sum of padded columns < c
    done = 0  # prefix sums 0..done are in the ring
    half = width // 2
    n_asc = ua
    n_core = lb - ua
    n_desc = h - lb
    prev_cog = EMPTY_COG
    for t in range(n_frames):
        left = t * shift + shift // 2 - half + width  # padded column index
        right = left + width
        while done < right:
            x = done - width  # the padded column done is image column x
            prev = cum[done & mask]
            nxt = cum[(done + 1) & mask]
            if 0 <= x < w:
                col = stats[x]
                for k in range(27):
                    nxt[k] = prev[k] + col[k]
            else:
                for k in range(27):
                    nxt[k] = prev[k] + 0.0
            done += 1
        lo = cum[left & mask]
        hi = cum[right & mask]
        below = cum[(right - 1) & mask]  # configuration blocks: top-left in [left, right - 1)
        ink = hi[0] - lo[0]
        out[t, 0] = ink / (width * h)
        out[t, 1] = (hi[1] - lo[1]) / (width * n_asc) if n_asc > 0 else 0.0
        out[t, 2] = (hi[2] - lo[2]) / (width * n_core) if n_core > 0 else 0.0
        out[t, 3] = (hi[3] - lo[3]) / (width * n_desc) if n_desc > 0 else 0.0
        cog = EMPTY_COG
        if ink > 1e-6 and n_core > 0:
            cog = (lb - (hi[4] - lo[4]) / ink) / n_core
        out[t, 4] = cog
        out[t, 5] = cog - prev_cog if t > 0 else 0.0
        prev_cog = cog
        fg = max(hi[5] - lo[5], 1.0)
        fgc = max(hi[6] - lo[6], 1.0)
        for k in range(6):
            out[t, 6 + k] = (below[7 + k] - lo[7 + k]) / fg
            out[t, 12 + k] = (below[13 + k] - lo[13 + k]) / fgc
        out[t, 18] = (cum[(left + half) & mask, 0] - lo[0]) / (half * h)
        out[t, 19] = (hi[0] - cum[(right - half) & mask, 0]) / (half * h)
        total = 0.0
        for k in range(8):
            total += hi[19 + k] - lo[19 + k]
        norm = max(total, GRAD_FLOOR)
        for k in range(8):
            out[t, 20 + k] = (hi[19 + k] - lo[19 + k]) / norm


@numba.njit(cache=True)
def _append_deltas(out, n_static, window):
    """``out[:, n_static:2 n_static]`` = :func:`deltas` of ``out[:, :n_static]`` (same
    arithmetic), then non-finite values of both halves -> 0."""
    n = out.shape[0]
    denom = 0.0
    for k in range(1, window + 1):
        denom += k * k
    denom *= 2.0
    num = np.empty(n_static, np.float64)
    for t in range(n):
        num[:] = 0.0
        for k in range(1, window + 1):
            ahead = out[min(t + k, n - 1)]
            behind = out[max(t - k, 0)]
            for j in range(n_static):  # vectorised over the features
                num[j] += k * (np.float64(ahead[j]) - np.float64(behind[j]))
        row = out[t]
        for j in range(n_static):
            row[n_static + j] = num[j] / denom
        for j in range(2 * n_static):
            if not np.isfinite(row[j]):
                row[j] = 0.0
    return out


def _static_into(ink: np.ndarray, upper: float, lower: float, config: FeatureConfig, out: np.ndarray) -> None:
    ink = np.asarray(ink, dtype=np.float32)  # column-major lines (preprocess output) transpose for free
    h, w = ink.shape
    ua, lb = _zone_rows(h, upper, lower)
    stats = _column_stats(np.ascontiguousarray(ink.T), ua, lb, np.float32(config.threshold), _CONFIG_OF_CODE)
    _window_features(stats, h, ua, lb, config.width, config.shift, out)


def static_features(ink: np.ndarray, upper: float, lower: float, config: FeatureConfig) -> np.ndarray:
    """The 28 static features of every frame (Numba kernel) -> float32 (T, 28)."""
    out = np.zeros((n_frames_of(np.shape(ink)[1], config), N_STATIC), np.float32)
    _static_into(ink, upper, lower, config, out)
    return out


def static_features_numpy(ink: np.ndarray, upper: float, lower: float, config: FeatureConfig) -> np.ndarray:
    """Plain-NumPy reference of :func:`static_features` (same values, vectorised NumPy)."""
    ink = np.asarray(ink, dtype=np.float32)
    h, w = ink.shape
    width, shift = config.width, config.shift
    ua, lb = _zone_rows(h, upper, lower)
    n = n_frames_of(w, config)
    f64 = ink.astype(np.float64)
    rows = np.arange(h)
    cols = []
    cols.append(f64.sum(axis=0))
    cols.append(f64[:ua].sum(axis=0))
    cols.append(f64[ua:lb].sum(axis=0))
    cols.append(f64[lb:].sum(axis=0))
    cols.append(((rows + 0.5)[:, None] * f64).sum(axis=0))
    b = ink > config.threshold
    cols.append(b.sum(axis=0).astype(np.float64))
    cols.append(b[ua:lb].sum(axis=0).astype(np.float64))
    code = np.zeros((h, w), np.int64)
    code[:-1, :-1] = 8 * b[:-1, :-1] + 4 * b[:-1, 1:] + 2 * b[1:, :-1] + b[1:, 1:]
    valid = np.zeros((h, w), bool)
    valid[:-1, :-1] = True
    core_block = np.zeros(h, bool)
    core_block[ua : max(lb - 1, ua)] = True
    kind = np.where(valid, _CONFIG_OF_CODE[code], -1)
    for k in range(6):
        cols.append((kind == k).sum(axis=0).astype(np.float64))
    for k in range(6):
        cols.append(((kind == k) & core_block[:, None]).sum(axis=0).astype(np.float64))
    padded = np.pad(f64, 1)
    gx = padded[1:-1, 2:] - padded[1:-1, :-2]
    gy = padded[:-2, 1:-1] - padded[2:, 1:-1]
    ax, ay = np.abs(gx), np.abs(gy)
    horizontal = ax >= ay
    major = np.where(horizontal, ax - ay, ay - ax)
    minor = np.where(horizontal, ay, ax) * SQRT2
    major_bin = np.where(horizontal, np.where(gx >= 0, 0, 4), np.where(gy >= 0, 2, 6))
    diag_bin = np.where(gy >= 0, np.where(gx >= 0, 1, 3), np.where(gx >= 0, 7, 5))
    for k in range(8):
        cols.append((np.where(major_bin == k, major, 0.0) + np.where(diag_bin == k, minor, 0.0)).sum(axis=0))
    stats = np.stack(cols, axis=1)  # (w, 27)
    stats = np.pad(stats, ((width, width + 1), (0, 0)))
    cum = np.vstack([np.zeros((1, stats.shape[1])), np.cumsum(stats, axis=0)])
    left = np.arange(n) * shift + shift // 2 - width // 2 + width
    right = left + width
    s = cum[right] - cum[left]
    sb = cum[right - 1] - cum[left]
    half = width // 2
    out = np.zeros((n, N_STATIC), np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, 0] = s[:, 0] / (width * h)
        out[:, 1] = s[:, 1] / (width * ua) if ua > 0 else 0.0
        out[:, 2] = s[:, 2] / (width * (lb - ua)) if lb > ua else 0.0
        out[:, 3] = s[:, 3] / (width * (h - lb)) if h > lb else 0.0
        has = (s[:, 0] > 1e-6) & (lb > ua)
        cog = np.where(has, (lb - s[:, 4] / np.where(has, s[:, 0], 1.0)) / max(lb - ua, 1), EMPTY_COG)
    out[:, 4] = cog
    out[1:, 5] = np.diff(cog)
    out[:, 6:12] = sb[:, 7:13] / np.maximum(s[:, 5:6], 1.0)
    out[:, 12:18] = sb[:, 13:19] / np.maximum(s[:, 6:7], 1.0)
    out[:, 18] = (cum[left + half, 0] - cum[left, 0]) / (half * h)
    out[:, 19] = (cum[right, 0] - cum[right - half, 0]) / (half * h)
    g = s[:, 19:27]
    out[:, 20:28] = g / np.maximum(g.sum(axis=1, keepdims=True), GRAD_FLOOR)
    return out.astype(np.float32)


def deltas(x: np.ndarray, window: int = 2) -> np.ndarray:
    """HTK regression deltas over +-``window`` frames (edge frames repeated)."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if n == 0:
        return np.zeros_like(x, dtype=np.float32)
    padded = np.concatenate([np.repeat(x[:1], window, 0), x, np.repeat(x[-1:], window, 0)])
    num = np.zeros_like(x)
    for k in range(1, window + 1):
        num += k * (padded[window + k : window + k + n] - padded[window - k : window - k + n])
    return (num / (2.0 * sum(k * k for k in range(1, window + 1)))).astype(np.float32)


# --------------------------------------------------------------------------- pixels


def pixel_features(ink: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Raw ink of each window, area-averaged to pixel_rows x pixel_cols -> (T, rows*cols)."""
    ink = np.ascontiguousarray(ink, dtype=np.float32)
    h, w = ink.shape
    rows = resample_rows(ink, *resample_weights(np.linspace(0, h, config.pixel_rows + 1), h))
    n = n_frames_of(w, config)
    width = config.width
    padded = np.pad(rows, ((0, 0), (width, width + config.shift)))
    start, index, weight = resample_weights(np.linspace(0, width, config.pixel_cols + 1), width)
    m = np.zeros((width, config.pixel_cols), np.float32)  # window column -> output column
    for c in range(config.pixel_cols):
        m[index[start[c] : start[c + 1]], c] = weight[start[c] : start[c + 1]]
    left = _window_left(n, config) + width
    win = np.lib.stride_tricks.sliding_window_view(padded, width, axis=1)[:, left]  # (R, T, width)
    out = np.einsum("rtw,wc->trc", win, m)
    return np.ascontiguousarray(out.reshape(n, -1), dtype=np.float32)


# --------------------------------------------------------------------------- extraction


def extract_features(line: PreprocessedLine, config: FeatureConfig | None = None) -> np.ndarray:
    """Features of a preprocessed line -> float32 (T, D), finite (D = 56 by default)."""
    cfg = config or FeatureConfig()
    if cfg.kind == "handcrafted" and cfg.deltas:  # the common case in one buffer, no copies
        out = np.zeros((n_frames_of(line.ink.shape[1], cfg), 2 * N_STATIC), np.float32)
        _static_into(line.ink, line.upper_baseline, line.lower_baseline, cfg, out)
        _append_deltas(out, N_STATIC, cfg.delta_window)
        return out
    if cfg.kind == "handcrafted":
        x = static_features(line.ink, line.upper_baseline, line.lower_baseline, cfg)
    else:
        x = pixel_features(line.ink, cfg)
    if cfg.deltas:
        x = np.concatenate([x, deltas(x, cfg.delta_window)], axis=1)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32, copy=False)


class Normalizer:
    """Per-dimension mean / standard deviation normalisation, fitted on training frames.

    ``scale_`` is the standard deviation floored at ``sqrt(var_floor * mean variance)``
    (and at ``min_scale``), so constant dimensions never divide by zero.
    """

    def __init__(self, var_floor: float = 1e-3, min_scale: float = 1e-4):
        self.var_floor = var_floor
        self.min_scale = min_scale

    def fit(self, arrays) -> "Normalizer":
        arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
        arrays = [a for a in arrays if a.ndim == 2 and a.shape[0] > 0]
        if not arrays:
            raise HwrError("cannot fit feature normalisation: no frames")
        dims = {a.shape[1] for a in arrays}
        if len(dims) != 1:
            raise HwrError(f"cannot fit feature normalisation: mixed dimensions {sorted(dims)}")
        n = sum(a.shape[0] for a in arrays)
        total = sum(a.sum(axis=0) for a in arrays)
        mean = total / n
        var = sum(((a - mean) ** 2).sum(axis=0) for a in arrays) / n
        var = np.nan_to_num(var, nan=0.0)
        floor = max(self.var_floor * float(var.mean()), self.min_scale**2)
        self.mean_ = np.nan_to_num(mean)
        self.scale_ = np.sqrt(np.maximum(var, floor))
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean_.size:
            raise HwrError(f"features have shape {x.shape}, the normalisation expects (T, {self.mean_.size})")
        return ((x - self.mean_) / self.scale_).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "var_floor": self.var_floor,
            "min_scale": self.min_scale,
            "mean": [float(v) for v in self.mean_],
            "scale": [float(v) for v in self.scale_],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        try:
            norm = cls(float(d.get("var_floor", 1e-3)), float(d.get("min_scale", 1e-4)))
            norm.mean_ = np.asarray(d["mean"], dtype=np.float64)
            norm.scale_ = np.asarray(d["scale"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as e:
            raise HwrError(f"bad feature normalisation description: {e}") from None
        if norm.mean_.shape != norm.scale_.shape or norm.mean_.ndim != 1:
            raise HwrError("bad feature normalisation description: mean and scale differ in shape")
        if not (np.all(np.isfinite(norm.mean_)) and np.all(np.isfinite(norm.scale_)) and np.all(norm.scale_ > 0)):
            raise HwrError("bad feature normalisation description: non-finite or non-positive values")
        return norm


@dataclass
class FrontEnd:
    """Preprocessing + feature configuration: everything that turns an image into frames."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)

    @property
    def dim(self) -> int:
        return self.features.dim

    def line_features(self, gray, keep_steps: bool = False) -> tuple[np.ndarray, PreprocessedLine]:
        """Image (any gray/RGB(A)/16-bit array) -> (un-normalised features (T, D), line)."""
        line = preprocess(gray, self.preprocess, keep_steps=keep_steps)
        return extract_features(line, self.features), line

    def to_dict(self) -> dict:
        return {"preprocess": self.preprocess.to_dict(), "features": self.features.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "FrontEnd":
        try:
            return cls(PreprocessConfig.from_dict(d["preprocess"]), FeatureConfig.from_dict(d["features"]))
        except (KeyError, TypeError) as e:
            raise HwrError(f"bad front-end description: {e}") from None
