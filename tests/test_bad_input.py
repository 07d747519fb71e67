"""Bad input on the command line, case by case: each gives one error line (or one warning
per skipped line) and the expected exit status, never a traceback, and keeps the good lines."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from hybrid_hwr import cli
from hybrid_hwr.data import sample_dir
from hybrid_hwr.demo import default_model_dir

LINES = sample_dir() / "lines"
GOOD = sorted(LINES.glob("*.png"))[:2]


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


@pytest.fixture(scope="module")
def truncated_model(tmp_path_factory):
    """The default model with its arrays file cut short and the checksum recomputed to match."""
    out = tmp_path_factory.mktemp("truncated")
    description = json.loads((default_model_dir() / "model.json").read_text())
    payload = (default_model_dir() / description["arrays_file"]).read_bytes()[:50_000]
    (out / description["arrays_file"]).write_bytes(payload)
    description["arrays_sha256"] = hashlib.sha256(payload).hexdigest()
    (out / "model.json").write_text(json.dumps(description))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("le chat dort\nle chien dort\nun chat court\n", encoding="utf-8")
    return path


# (argv, exit status, fragment of the one error line)
USAGE_CASES = {
    "huge LM weight": (["decode", "--lm-weight", "1e308", "x.png"], 2, "magnitude at most"),
    "NaN penalty": (["decode", "--word-penalty", "nan", "x.png"], 2, "finite number"),
    "infinite beam": (["decode", "--beam", "inf", "x.png"], 2, "positive number"),
    "negative glue as text": (["decode", "--glue-penalty=-inf", "x.png"], 2, "finite number"),
    "zero jobs": (["decode", "--jobs", "0", "x.png"], 2, "positive integer"),
    "huge mixtures": (["train", "--train", "t.tsv", "--mixtures", "x", "-o", "m"], 2, "positive integer"),
    "negative context": (["train", "--train", "t.tsv", "--context", "-1", "-o", "m"], 2, "integer >= 0"),
    "infinite dropout": (["train", "--train", "t.tsv", "--dropout", "inf", "-o", "m"], 2, "finite number >= 0"),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_absurd_numbers_are_refused_at_parsing(case, capsys):
    argv, status, fragment = USAGE_CASES[case]
    code, _, err = run(capsys, *argv)
    assert code == status and fragment in err


def test_gmm_training_refuses_mlp_options(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--train", sample_dir() / "train.tsv", "--hidden", "512",
                       "--prior-scale", "0.5", "-o", tmp_path / "m")
    assert code == 1 and "--hidden, --prior-scale: options of --emission mlp" in err
    assert not (tmp_path / "m").exists()


def test_front_end_options_are_refused_with_an_initial_model(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--emission", "mlp", "--init-model", default_model_dir(),
                       "--train", sample_dir() / "train.tsv", "--kind", "pixels", "-o", tmp_path / "m")
    assert code == 1 and "--kind: the front end is --init-model's" in err


def test_a_unigram_lm_is_refused_at_build_time(capsys, corpus, tmp_path):
    code, _, err = run(capsys, "build-lm", "--order", "1", corpus, "-o", tmp_path / "lm.arpa.gz")
    assert code == 1 and "between 2 and" in err and not (tmp_path / "lm.arpa.gz").exists()


def test_a_word_lm_given_as_character_lm_is_refused(capsys, corpus, tmp_path):
    lm = tmp_path / "words.arpa"
    assert run(capsys, "build-lm", "--order", "2", corpus, "-o", lm)[0] == 0
    code, _, err = run(capsys, "decode", "--char-lm", lm, GOOD[0])
    assert code == 1 and "not a character LM" in err


def test_a_truncated_arrays_file_with_a_matching_checksum_is_a_corrupt_model(capsys, truncated_model):
    code, _, err = run(capsys, "decode", "--model", truncated_model, GOOD[0])
    assert code == 1 and "is corrupt" in err and "internal error" not in err


@pytest.mark.parametrize("command", ["decode", "features"])
def test_a_directory_among_images_is_skipped_and_the_good_lines_kept(command, capsys, tmp_path):
    argv = [command, GOOD[0], tmp_path, GOOD[1]]
    if command == "features":
        argv += ["-o", tmp_path / "f.npz"]
    code, out, err = run(capsys, *argv)
    assert code == 0
    assert f"skipped line {tmp_path.name}: {tmp_path}: is a directory" in err
    if command == "decode":
        assert [row.split("\t")[0] for row in out.splitlines()] == [GOOD[0].stem, GOOD[1].stem]
    else:
        with np.load(tmp_path / "f.npz") as npz:
            assert sorted(npz.files) == sorted([GOOD[0].stem, GOOD[1].stem])


def test_a_bad_array_of_an_emissions_file_is_skipped(capsys, tmp_path):
    emissions = tmp_path / "e.npz"
    assert run(capsys, "emissions", "--model", default_model_dir(), GOOD[0], "-o", emissions)[0] == 0
    with np.load(emissions) as npz:
        good = npz[GOOD[0].stem]
    mixed = tmp_path / "mixed.npz"
    np.savez(mixed, first=good, cplx=good.astype(np.complex64), narrow=good[:, :5], last=good)
    code, out, err = run(capsys, "decode", "--emissions", mixed, "-o", tmp_path / "hyp.tsv")
    assert code == 0
    assert "skipped line cplx" in err and "skipped line narrow" in err
    rows = (tmp_path / "hyp.tsv").read_text(encoding="utf-8").splitlines()
    assert [r.split("\t")[0] for r in rows] == ["first", "last"] and rows[0].split("\t")[1] == rows[1].split("\t")[1]
    code, _, err = run(capsys, "decode", "--emissions", mixed, GOOD[0])
    assert code == 1 and "give no images or split files with it" in err


def test_resume_with_other_settings_warns_and_keeps_the_saved_run(capsys, tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("".join((sample_dir() / "train.tsv").read_text(encoding="utf-8").splitlines(True)[:6]),
                     encoding="utf-8")
    shutil.copytree(LINES, tmp_path / "lines")
    common = ["train", "--train", train, "--states", "3", "--mixtures", "1", "--iterations", "1", "-o", tmp_path / "m"]
    assert run(capsys, *common)[0] == 0
    code, _, err = run(capsys, *common[:-2], "--states", "4", "--resume", "-o", tmp_path / "m")
    assert code == 0 and "--resume continues with the saved settings; ignored: states 4 (saved: 3)" in err


def test_line_ids_that_leave_the_image_folder_are_refused(capsys, tmp_path):
    data = tmp_path / "d"
    (data / "lines").mkdir(parents=True)
    shutil.copy(GOOD[0], tmp_path / "outside.png")
    shutil.copy(GOOD[1], data / "lines" / "inside.png")
    (data / "test.tsv").write_text("inside\tx\n../../outside\ty\n", encoding="utf-8")
    code, out, err = run(capsys, "decode", data / "test.tsv")
    assert code == 1 and "line id '../../outside' names a file outside the image folder" in err and out == ""
    (data / "abs.tsv").write_text(f"{tmp_path / 'outside'}\tz\n", encoding="utf-8")
    code, _, err = run(capsys, "features", data / "abs.tsv", "-o", tmp_path / "f.npz")
    assert code == 1 and "outside the image folder" in err
    code, out, err = run(capsys, "decode", "--allow-outside-paths", data / "test.tsv")
    assert code == 0 and [r.split("\t")[0] for r in out.splitlines()] == ["inside", "../../outside"]


def test_a_page_image_outside_the_page_folder_is_refused(capsys, tmp_path):
    from hybrid_hwr.data import allow_outside_paths
    from hybrid_hwr.pages import PageLayout, find_page_image

    (tmp_path / "pages").mkdir()
    shutil.copy(GOOD[0], tmp_path / "secret.png")
    layout = PageLayout(tmp_path / "pages" / "p.xml", "page", "../secret.png", None, None)
    with pytest.raises(Exception, match="--allow-outside-paths"):
        find_page_image(layout)
    allow_outside_paths(True)
    try:
        assert find_page_image(layout).resolve() == (tmp_path / "secret.png").resolve()
    finally:
        allow_outside_paths(False)


def test_decode_resume_skips_finished_lines_and_records_skipped_ones(capsys, tmp_path):
    tsv = tmp_path / "d" / "test.tsv"
    (tmp_path / "d" / "lines").mkdir(parents=True)
    for image in GOOD:
        shutil.copy(image, tmp_path / "d" / "lines" / image.name)
    (tmp_path / "d" / "lines" / "broken.png").write_bytes(b"not a png")
    tsv.write_text("".join(f"{name}\tx\n" for name in (GOOD[0].stem, "broken", GOOD[1].stem)), encoding="utf-8")
    out, details = tmp_path / "hyp.tsv", tmp_path / "details.jsonl"
    assert run(capsys, "decode", tsv, "-o", out, "--details", details)[0] == 0
    full = out.read_text(encoding="utf-8")
    records = [json.loads(r) for r in details.read_text(encoding="utf-8").splitlines()]
    assert {r["id"]: r.get("skipped", "") for r in records}["broken"].startswith(str(tmp_path))
    # an interrupted run: the first line written, the second cut short
    first, second = full.splitlines(True)
    out.write_text(first + second[:8], encoding="utf-8")
    code, _, err = run(capsys, "decode", tsv, "-o", out, "--resume")
    assert code == 0 and "resumed: 1 lines were already in" in err and "1 decoded now" in err
    assert out.read_text(encoding="utf-8") == full
    code, _, err = run(capsys, "decode", tsv, "--resume")
    assert code == 1 and "--resume continues the output file" in err


def test_a_second_writer_of_a_model_directory_is_refused(capsys, tmp_path):
    from hybrid_hwr.fileio import directory_lock

    model = tmp_path / "m"
    model.mkdir()
    (model / "model.json.abc123.tmp").write_text("left by a killed run")
    with directory_lock(model, "model directory"):
        assert not (model / "model.json.abc123.tmp").exists()      # stale temporaries cleaned
        code, _, err = run(capsys, "train", "--train", sample_dir() / "train.tsv", "--limit", 4, "--states", 2,
                           "--mixtures", 1, "--iterations", 1, "-o", model)
        assert code == 1 and f"model directory {model} is being written by another run" in err
        assert not (model / "model.json").exists()
    code, _, err = run(capsys, "train", "--train", sample_dir() / "train.tsv", "--limit", 4, "--states", 2,
                       "--mixtures", 1, "--iterations", 1, "-o", model)
    assert code == 0, err
    assert not list(model.glob("*.tmp"))
