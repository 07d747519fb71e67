"""One image-to-gray conversion: files and arrays give the same gray (Pillow's ITU-R 601 luma)."""

import numpy as np
from PIL import Image

from hybrid_hwr.data import load_image
from hybrid_hwr.preprocess import as_gray_uint8


def test_colour_arrays_and_files_become_the_same_luma(tmp_path):
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(9, 13, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)           # pure red: luma 76, not the channel mean 85
    gray = as_gray_uint8(rgb)
    assert gray[0, 0] == 76
    Image.fromarray(rgb).save(tmp_path / "line.png")
    np.testing.assert_array_equal(load_image(tmp_path / "line.png"), gray)
    luma = np.rint((rgb.astype(np.int64) * [299, 587, 114]).sum(axis=2) / 1000.0)
    assert np.abs(gray.astype(np.int64) - luma).max() <= 1      # PIL's fixed-point rounding


def test_alpha_is_paper_and_depths_are_scaled_like_files(tmp_path):
    rgba = np.zeros((4, 6, 4), np.uint8)
    rgba[:, :3, 3] = 255                  # opaque black on the left, transparent on the right
    gray = as_gray_uint8(rgba)
    assert (gray[:, :3] == 0).all() and (gray[:, 3:] == 255).all()
    Image.fromarray(rgba).save(tmp_path / "alpha.png")
    np.testing.assert_array_equal(load_image(tmp_path / "alpha.png"), gray)
    floats = np.array([[0.0, 0.5, 1.0, np.nan]])
    assert as_gray_uint8(floats).tolist() == [[0, 128, 255, 255]]     # NaN is paper
    sixteen = np.array([[0, 65535, 32768]], np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(load_image(tmp_path / "deep.png"), as_gray_uint8(sixteen))
