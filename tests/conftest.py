"""Shared test helpers: the bundled sample, planted line images and small datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hybrid_hwr.data import sample_dir

TEST_DATA = Path(__file__).resolve().parent / "data"


def planted_line(width: int = 120, height: int = 40, seed: int = 0) -> np.ndarray:
    """A white uint8 image with a few black vertical strokes (a stand-in for handwriting)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width), 255, dtype=np.uint8)
    for x in range(8, width - 8, 12):
        top = int(rng.integers(height // 6, height // 3))
        image[top : height - height // 5, x : x + 3] = 0
    image[height // 2 : height // 2 + 2, 6 : width - 6] = 0
    return image


def write_png(path: Path, gray: np.ndarray) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(gray).save(path)
    return path


@pytest.fixture
def sample() -> Path:
    """The sample shipped in the package (train.tsv, test.tsv, lines/)."""
    return sample_dir()


@pytest.fixture
def make_dataset(tmp_path):
    """``make_dataset({id: text}, split='train')`` -> path of a split file with planted images."""

    def make(texts: dict[str, str], split: str = "train", folder: str = "ds") -> Path:
        root = tmp_path / folder
        for index, line_id in enumerate(texts):
            write_png(root / "lines" / f"{line_id}.png", planted_line(seed=index))
        tsv = root / f"{split}.tsv"
        tsv.write_text("".join(f"{k}\t{v}\n" for k, v in texts.items()), encoding="utf-8")
        return tsv

    return make
