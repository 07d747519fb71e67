"""Preprocessing parameters (:class:`PreprocessConfig`) and result (:class:`PreprocessedLine`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np

from ..errors import HwrError


@dataclass
class PreprocessConfig:
    """Every parameter of the preprocessing, saved with a model (``to_dict`` is JSON-safe)."""

    # contrast enhancement
    contrast: bool = True  # False: ink = 1 - gray / 255
    block_width: int = 64  # paper level is estimated per block of columns (uneven lighting)
    paper_percentile: float = 50.0  # of each block's gray levels (ink rarely covers half a block)
    ink_percentile: float = 90.0  # of the contrasts of ink candidates: this level maps to ink 1
    min_contrast: float = 0.1  # contrast (fraction of 255) below which a pixel is paper
    noise_floor: float = 0.15  # ink below this (after stretching) is set to 0
    remove_rules: bool = True  # subtract faint long horizontal structures (ruled lines)
    rule_length: float = 1.5  # minimum rule length, in image heights (at least 25 px)
    rule_max_ink: float = 1.0  # only structures fainter than this are rules (1: any darkness)
    rule_max_thickness: float = 0.1  # rules are at most 3 px + this x image height thick
    # skew and slant correction
    deskew: bool = True
    max_skew_deg: float = 5.0
    deslant: bool = True
    max_slant_deg: float = 45.0
    # cropping of empty margins
    crop: bool = True
    # height normalisation
    normalize_height: bool = True
    ascender_height: int = 18
    core_height: int = 36
    descender_height: int = 18
    min_zone_ratio: float = 0.5  # ascender/descender source extent at least this x core height
    max_zone_ratio: float = 1.5  # ... and at most this (ink further away is cut off)
    max_width: int = 50000  # safety cap on the normalised width (pixels)

    @property
    def height(self) -> int:
        """Height of normalised lines (sum of the three zone heights)."""
        return self.ascender_height + self.core_height + self.descender_height

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise HwrError(f"unknown preprocessing option(s): {', '.join(unknown)}")
        return cls(**d)


@dataclass
class PreprocessedLine:
    """The result of :func:`preprocess` for one line image.

    ``ink`` has height ``config.height`` (72) when height normalisation is on; the core zone
    is then rows ``[upper_baseline, lower_baseline)`` = ``[18, 54)``.  A normalised ``ink`` is
    stored column by column (Fortran order: ``ink.T`` is contiguous, which the feature
    kernel reads); use ``np.ascontiguousarray`` where C order matters.  Normalised x maps back
    to original-image x by ``x_to_original`` (exact at the core-zone centre; the slant
    correction shifts other rows by ``(row - core centre) * tan(slant)``).
    """

    ink: np.ndarray
    upper_baseline: float
    lower_baseline: float
    slant_deg: float
    x_scale: float = 1.0  # normalised px per original px
    x_offset: float = 0.0  # original x of normalised x = 0
    steps: dict = field(default_factory=dict)  # intermediate images (keep_steps=True)

    def x_to_original(self, x):
        """Original-image x of normalised x (scalar or array)."""
        return np.asarray(x, dtype=np.float64) / self.x_scale + self.x_offset
