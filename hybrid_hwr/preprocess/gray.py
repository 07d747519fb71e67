"""Any image -> uint8 gray (0 = black ink .. 255 = white paper): the package's one conversion.

Image files (:func:`image_to_gray`, used by :func:`hybrid_hwr.data.load_image`) and arrays
(:func:`as_gray_uint8`, the first step of :func:`hybrid_hwr.preprocess.preprocess`) go
through the same rules: colour becomes Pillow's ITU-R 601-2 luma
(``L = R * 299/1000 + G * 587/1000 + B * 114/1000``), transparency is composited on white
paper, 16-bit and float values are scaled to 8 bits (floats read as [0, 1], [0, 255] or
[0, 65535] by their largest finite value), and NaN is paper.
"""

from __future__ import annotations

import numpy as np

from ..errors import HwrError

_CHANNEL_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def image_to_gray(image) -> np.ndarray:
    """uint8 gray array of a loaded PIL image, whatever its mode."""
    from PIL import Image

    mode = image.mode
    if mode == "P" and "transparency" not in image.info:
        # an opaque palette: its colours' luma directly (the same values as the composite below, ~8x faster)
        return np.asarray(image.convert("L"), dtype=np.uint8)
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("L"), dtype=np.uint8)
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.uint8)
    if mode.startswith("I;16") or mode in ("I", "F"):
        # 16-bit scans use the full 0..65535 range; an 'I' image holding 8-bit values stays as it is
        return _to_uint8(np.asarray(image), sixteen_bit=mode.startswith("I;16"))
    return np.asarray(image.convert("RGB").convert("L"), dtype=np.uint8)


def _to_uint8(values: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """Numbers of any dtype -> uint8 (same shape), scaled from their range to 0..255."""
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        top = 1.0
    elif np.issubdtype(values.dtype, np.floating):
        finite = values[np.isfinite(values)]
        top = 1.0 if finite.size == 0 or finite.max() <= 1.0 else 255.0 if finite.max() <= 255.0 else 65535.0
    else:
        top = 65535.0 if sixteen_bit or values.max(initial=0) > 255 else 255.0
    values = np.nan_to_num(values.astype(np.float64), nan=top, posinf=top, neginf=0.0)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def as_gray_uint8(image) -> np.ndarray:
    """Any 2-D gray or 3-D (H, W, 1-4 channels: L, LA, RGB, RGBA) image array -> uint8 gray.

    Colour and alpha go through Pillow as in :func:`image_to_gray` (luma, white paper).
    """
    from PIL import Image

    a = np.asarray(image)
    if a.ndim == 2:
        return np.ascontiguousarray(_to_uint8(a))
    if a.ndim != 3 or a.shape[2] not in _CHANNEL_MODES:
        raise HwrError(f"expected a 2-D gray or 3-D colour image (1 to 4 channels), got shape {a.shape}")
    if a.size == 0:
        return np.full(a.shape[:2], 255, np.uint8)
    channels = np.ascontiguousarray(_to_uint8(a))
    if a.shape[2] == 1:
        return channels[..., 0]
    return np.ascontiguousarray(image_to_gray(Image.fromarray(channels, _CHANNEL_MODES[a.shape[2]])))
