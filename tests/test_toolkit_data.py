"""PyLaia and kraken line data imported into our split layout (planted files)."""

import numpy as np
import pytest
from PIL import Image

from conftest import planted_line, write_png
from hybrid_hwr.cli import main
from hybrid_hwr.data import load_image, read_split
from hybrid_hwr.errors import HwrError
from hybrid_hwr.toolkit_data import import_lines, read_kraken, read_pylaia


def plant_pylaia(root, tokens=True):
    images = root / "images"
    write_png(images / "train" / "im01.png", planted_line(seed=1))
    rgb = np.stack([planted_line(seed=2)] * 3, axis=-1)
    (images / "train").mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(images / "train" / "im02.jpg")
    write_png(images / "train" / "im03.png", planted_line(seed=3))
    if tokens:
        gt = "train/im01 l ' É t a t <space> a\ntrain/im02 f o r <space> d e t\n\ntrain/im03 « F r u » ,\n"
    else:
        gt = "train/im01 l'État a\ntrain/im02 for  det\ntrain/im03 «Fru»,\n"
    (root / "train.txt").write_text(gt, encoding="utf-8")
    (root / "train_ids.txt").write_text("train/im03\ntrain/im01\n", encoding="utf-8")
    return root / "train.txt", images


@pytest.mark.parametrize("tokens", [True, False])
def test_pylaia_tokens_or_text_give_the_same_lines(tmp_path, tokens):
    gt, images = plant_pylaia(tmp_path, tokens)
    lines = read_pylaia(gt, images)
    assert [(line.id, line.text) for line in lines] == [
        ("train/im01", "l'État a"), ("train/im02", "for det"), ("train/im03", "«Fru»,")]
    assert [line.image_path.name for line in lines] == ["im01.png", "im02.jpg", "im03.png"]
    listed = read_pylaia(gt, images, img_list=tmp_path / "train_ids.txt")
    assert [line.id for line in listed] == ["train/im03", "train/im01"]


def test_pylaia_text_with_one_letter_words_is_not_read_as_tokens(tmp_path):
    (tmp_path / "gt.txt").write_text("x a b c\ny à la\n", encoding="utf-8")
    assert [line.text for line in read_pylaia(tmp_path / "gt.txt")] == ["a b c", "à la"]


def test_pylaia_bad_files_are_one_line_errors(tmp_path):
    (tmp_path / "dup.txt").write_text("a x\nb y\na z\n", encoding="utf-8")
    with pytest.raises(HwrError, match=r"dup.txt:3: duplicate id 'a'"):
        read_pylaia(tmp_path / "dup.txt")
    (tmp_path / "gt.txt").write_text("a x\n", encoding="utf-8")
    (tmp_path / "ids.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(HwrError, match="have no transcription"):
        read_pylaia(tmp_path / "gt.txt", img_list=tmp_path / "ids.txt")
    (tmp_path / "latin1.txt").write_bytes("a \xe9t\xe9\n".encode("latin-1"))
    with pytest.raises(HwrError, match="not UTF-8"):
        read_pylaia(tmp_path / "latin1.txt")
    with pytest.raises(HwrError, match="no such file"):
        read_pylaia(tmp_path / "missing.txt")


def test_kraken_gt_beside_each_image(tmp_path):
    src = tmp_path / "kraken"
    write_png(src / "page1" / "l0.png", planted_line(seed=0))
    (src / "page1" / "l0.gt.txt").write_text("Bonjour  le\nmonde\n", encoding="utf-8")
    write_png(src / "page1" / "l1.png", planted_line(seed=1))        # no transcription: left out
    write_png(src / "l2.tif", planted_line(seed=2))
    (src / "l2.gt.txt").write_text("déjà", encoding="utf-8")
    (src / "orphan.gt.txt").write_text("no image", encoding="utf-8")
    lines = read_kraken(src)
    assert [(line.id, line.text, line.image_path.name) for line in lines] == [
        ("l2", "déjà", "l2.tif"), ("page1/l0", "Bonjour le monde", "l0.png")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(HwrError, match="no line image"):
        read_kraken(tmp_path / "empty")
    with pytest.raises(HwrError, match="no such directory"):
        read_kraken(tmp_path / "missing")


def test_import_cli_writes_our_layout(tmp_path, capsys):
    gt, images = plant_pylaia(tmp_path / "laia")
    out = tmp_path / "ds"
    assert main(["import", "--format", "pylaia", str(gt), "--images", str(images), "-o", str(out),
                 "--split", "train"]) == 0
    lines = read_split(out / "train.tsv")
    assert [(line.id, line.text) for line in lines] == [
        ("train_im01", "l'État a"), ("train_im02", "for det"), ("train_im03", "«Fru»,")]
    assert np.array_equal(load_image(lines[0].image_path), planted_line(seed=1))
    assert load_image(lines[1].image_path).shape == planted_line(seed=2).shape   # JPEG, colour -> gray PNG

    src = tmp_path / "kraken"
    write_png(src / "a.png", planted_line(seed=4))
    (src / "a.gt.txt").write_text("un", encoding="utf-8")
    write_png(src / "b.png", planted_line(seed=5))
    (src / "b.gt.txt").write_text("deux", encoding="utf-8")
    (src / "c.png").write_bytes(b"broken")
    (src / "c.gt.txt").write_text("trois", encoding="utf-8")
    capsys.readouterr()
    assert main(["import", "--format", "kraken", str(src), "-o", str(tmp_path / "k")]) == 0
    captured = capsys.readouterr()
    assert "skipped line c" in captured.err and "imported 2 lines" in captured.out
    assert [(line.id, line.text) for line in read_split(tmp_path / "k" / "all.tsv")] == [("a", "un"), ("b", "deux")]

    assert main(["import", "--format", "kraken", str(src), "--scale", "0.5", "-o", str(tmp_path / "k2")]) == 1
    assert "--scale: not an option of --format kraken" in capsys.readouterr().err


def test_import_lines_refuses_ids_that_collide(tmp_path):
    from hybrid_hwr.data import Line

    image = write_png(tmp_path / "x.png", planted_line())
    with pytest.raises(HwrError, match="both become 'a_b'"):
        import_lines([Line("a/b", "x", image), Line("a b", "y", image)], tmp_path / "out")
