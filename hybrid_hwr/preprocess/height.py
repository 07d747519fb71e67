"""Height normalisation: ascender / core / descender zones mapped to fixed heights.

18 / 36 / 18 = 72 px by default; the width is scaled by the core-zone scale, so the aspect
ratio is kept relative to the core.
"""

from __future__ import annotations

import numba
import numpy as np

from .config import PreprocessConfig
from .resample import linspace as _linspace, resample_cols_transposed, resample_rows, resample_weights


@numba.njit(cache=True)
def _nonzero_rows(img):
    """First and last row with a non-zero pixel (-1, -1 if none)."""
    first = -1
    last = -1
    for y in range(img.shape[0]):
        row = img[y]
        n = 0
        for x in range(row.size):
            n += row[x] != 0
        if n > 0:
            if first < 0:
                first = y
            last = y
    return first, last


def normalize_height(
    ink: np.ndarray, upper: float, lower: float, config: PreprocessConfig | None = None
) -> tuple[np.ndarray, float]:
    """Map ascender / core / descender zones to fixed heights -> (normalised ink, x scale).

    The core zone ``[upper, lower)`` becomes ``config.core_height`` rows; the zones above and
    below (their ink extent, bounded to ``min_zone_ratio``..``max_zone_ratio`` core heights,
    ink further out is cut off) become ``ascender_height`` and ``descender_height`` rows.
    The width is scaled by the core-zone scale (capped by ``max_width``).
    """
    cfg = config or PreprocessConfig()
    ink = np.ascontiguousarray(ink, dtype=np.float32)
    h, w = ink.shape
    first, last = _nonzero_rows(ink)
    top, bottom = (float(first), float(last + 1)) if first >= 0 else (0.0, float(h))
    core = max(float(lower) - float(upper), 1.0)
    lower = float(upper) + core
    asc = float(min(max(upper - top, cfg.min_zone_ratio * core), cfg.max_zone_ratio * core))
    desc = float(min(max(bottom - lower, cfg.min_zone_ratio * core), cfg.max_zone_ratio * core))
    a, c, d = cfg.ascender_height, cfg.core_height, cfg.descender_height
    edges = np.concatenate(
        [
            _linspace(upper - asc, upper, a + 1)[:-1],
            _linspace(upper, lower, c + 1)[:-1],
            _linspace(lower, lower + desc, d + 1),
        ]
    )
    vertical = resample_rows(ink, *resample_weights(edges, h))
    scale = c / core
    scale = min(scale, cfg.max_width / max(w, 1))
    out_w = max(1, int(round(w * scale)))
    scale = out_w / w
    x_edges = np.arange(out_w + 1, dtype=np.float64) / scale
    out_t = resample_cols_transposed(np.ascontiguousarray(vertical.T), *resample_weights(x_edges, w))
    # (H, W) view of a column-major array: the feature kernel reads the line column by column
    return out_t.T, scale
