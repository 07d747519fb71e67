"""The whole preprocessing of one line image (:func:`preprocess`): every stage in order."""

from __future__ import annotations

import math

import numba
import numpy as np

from .baselines import estimate_baselines
from .config import PreprocessConfig, PreprocessedLine
from .contrast import enhance_contrast
from .crop import crop_margins
from .gray import as_gray_uint8
from .height import normalize_height
from .slant import _shear_geometry, deskew, estimate_skew, estimate_slant, shear


@numba.njit(cache=True)
def _profile_peak(prof):
    """Index of the maximum of ``prof`` smoothed by a 5-sample mean (when it has at least
    5 samples), -1 if the smoothed profile is all 0.

    The mean is ``ndimage.uniform_filter1d(prof, 5, mode='constant')``: a running sum in
    float64 with 0 beyond both ends, each value divided by 5 and rounded to float32.
    """
    n = prof.size
    smooth = np.empty(n, np.float32)
    if n >= 5:
        total = 0.0
        for k in range(3):
            total += np.float64(prof[k])
        smooth[0] = total / 5.0
        for i in range(1, n):
            entering = np.float64(prof[i + 2]) if i + 2 < n else 0.0
            leaving = np.float64(prof[i - 3]) if i >= 3 else 0.0
            total += entering - leaving
            smooth[i] = total / 5.0
    else:
        smooth[:] = prof
    best = 0
    inked = False
    for i in range(n):
        inked = inked or smooth[i] != 0
        if smooth[i] > smooth[best]:
            best = i
    return best if inked else -1


def _core_centre_row(ink: np.ndarray) -> float:
    """Row of the densest smoothed horizontal profile (about the core-zone centre)."""
    peak = _profile_peak(ink.sum(axis=1))
    return float(peak) if peak >= 0 else (ink.shape[0] - 1) / 2.0


def preprocess(gray, config: PreprocessConfig | None = None, keep_steps: bool = False) -> PreprocessedLine:
    """Run the whole preprocessing on one line image (any gray/RGB(A)/16-bit array).

    ``keep_steps=True`` stores the intermediate images in ``line.steps`` (for notebooks):
    'gray', 'contrast', 'deskewed', 'deslanted', 'cropped' and the baselines found on
    'cropped' as 'source_baselines'.
    """
    cfg = config or PreprocessConfig()
    g = as_gray_uint8(gray)
    steps: dict = {"gray": g} if keep_steps else {}
    ink = enhance_contrast(g, cfg) if g.size else np.zeros((1, 1), np.float32)
    if keep_steps:
        steps["contrast"] = ink
    skew = 0.0
    if cfg.deskew and ink.shape[0] >= 3:
        skew = estimate_skew(ink, cfg.max_skew_deg)
        # keep the added height bounded on very long lines
        max_tan = (4.0 * ink.shape[0] + 20.0) / max(ink.shape[1], 1)
        skew = float(np.clip(skew, -math.degrees(math.atan(max_tan)), math.degrees(math.atan(max_tan))))
        if abs(skew) > 0.05:
            ink = deskew(ink, skew)
    if keep_steps:
        steps["deskewed"] = ink
    slant, pad = 0.0, 0.0
    if cfg.deslant and ink.shape[0] >= 3:
        slant = estimate_slant(ink, cfg.max_slant_deg)
        if abs(slant) > 0.05:
            ref = _core_centre_row(ink)
            _, pad, _ = _shear_geometry(ink.shape[0], -slant, ref)
            ink = shear(ink, -slant, ref)
    if keep_steps:
        steps["deslanted"] = ink
    left = 0
    if cfg.crop:
        ink, _, left = crop_margins(ink, 0.0)
    if keep_steps:
        steps["cropped"] = ink
    upper, lower = estimate_baselines(ink)
    if keep_steps:
        steps["source_baselines"] = (upper, lower)
    x_offset = left - pad
    if not ink.any():  # blank: a valid, empty, normalised line
        h = cfg.height if cfg.normalize_height else ink.shape[0]
        up, lo = (cfg.ascender_height, cfg.ascender_height + cfg.core_height) if cfg.normalize_height else (upper, lower)
        return PreprocessedLine(np.zeros((h, 1), np.float32), float(up), float(lo), 0.0, 1.0, float(x_offset), steps)
    x_scale = 1.0
    if cfg.normalize_height:
        ink, x_scale = normalize_height(ink, upper, lower, cfg)
        upper = float(cfg.ascender_height)
        lower = float(cfg.ascender_height + cfg.core_height)
    return PreprocessedLine(
        ink=ink if ink.dtype == np.float32 else ink.astype(np.float32),
        upper_baseline=float(upper),
        lower_baseline=float(lower),
        slant_deg=float(slant),
        x_scale=float(x_scale),
        x_offset=float(x_offset),
        steps=steps,
    )
