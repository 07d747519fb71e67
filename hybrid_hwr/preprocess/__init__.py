"""Line-image preprocessing: contrast enhancement, slant correction, baselines, height normalisation.

One module per stage: ``gray`` (any image -> uint8 gray), ``contrast``, ``slant`` (skew
and slant estimation, shears), ``crop``, ``baselines``, ``height`` (zone heights), with
``resample`` (the resampler the height normalisation and the pixel features share),
``config`` (:class:`PreprocessConfig`, :class:`PreprocessedLine`) and ``pipeline``
(:func:`preprocess`). Every name is importable from ``hybrid_hwr.preprocess``.

The pipeline run by :func:`preprocess` (every step can be switched off in
:class:`PreprocessConfig`)::

    gray uint8 (0 = black .. 255 = paper)
      -> enhance_contrast   ink map in [0, 1] (1 = ink): local paper level per column block,
                            ink level from the strongest strokes, a noise floor, and faint
                            long horizontal structures (ruled lines) subtracted as background
      -> estimate_slant     angle that makes the vertical projection of near-vertical strokes
                            sharpest (sum of squared column sums over shears of -45..45 degrees)
      -> shear              horizontal shear that makes the strokes upright
      -> crop               empty margins removed (columns and rows without ink)
      -> estimate_baselines upper and lower baseline (the core zone) from the horizontal profile
                            of ink runs per row
      -> normalize_height   ascender / core / descender zones mapped to fixed heights
                            (18 / 36 / 18 = 72 px by default); the width is scaled by the
                            core-zone scale, so the aspect ratio is kept relative to the core

Conventions: ``ink`` images are float32 (H, W) in [0, 1] with 1 = ink; rows grow downwards;
a positive slant angle means strokes lean to the right (the usual forward slant).
No input (blank, 1-pixel-high, 30000-pixel-wide, all-black, RGB(A), 16-bit, float) makes
these functions crash or return NaN.
"""

from __future__ import annotations

from .baselines import _mean3, _median5, estimate_baselines
from .config import PreprocessConfig, PreprocessedLine
from .contrast import _select, enhance_contrast
from .crop import crop_margins
from .gray import as_gray_uint8, image_to_gray
from .height import normalize_height
from .pipeline import _core_centre_row, _profile_peak, preprocess
from .resample import linspace, resample_cols_transposed, resample_rows, resample_weights
from .slant import (_SPLAT, _SPLAT_TAPS, _halve, _projection_sharpness, _shear_geometry, _shear_rows, deskew,
                    estimate_skew, estimate_slant, shear)

# the names these had when preprocessing was one module
_resample_weights = resample_weights
_apply_rows = resample_rows
_apply_cols_transposed = resample_cols_transposed
_linspace = linspace

__all__ = [
    "PreprocessConfig",
    "PreprocessedLine",
    "as_gray_uint8",
    "image_to_gray",
    "enhance_contrast",
    "estimate_skew",
    "deskew",
    "estimate_slant",
    "shear",
    "crop_margins",
    "estimate_baselines",
    "normalize_height",
    "preprocess",
    "resample_weights",
    "resample_rows",
    "resample_cols_transposed",
]
