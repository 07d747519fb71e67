"""Bad input on the command line, case by case: each gives one error line (or one warning
per skipped line) and the expected exit status, never a traceback, and keeps the good lines.

``CASES`` is the corpus: argv (with ``{name}`` standing for a file the ``files`` fixture
makes), the exit status, and a fragment of stderr. Every case runs through the real entry
point (``hybrid_hwr.cli.main``). The tests after the table need more setup than argv.
"""

import errno
import hashlib
import json
import re
import shutil

import numpy as np
import pytest

from hybrid_hwr import cli
from hybrid_hwr.data import sample_dir
from hybrid_hwr.demo import default_model_dir

LINES = sample_dir() / "lines"
GOOD = sorted(LINES.glob("*.png"))[:2]
MODEL = default_model_dir()
TRAIN = sample_dir() / "train.tsv"


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every file the table's cases name: ``{name}`` in a case is ``files[name]``."""
    root = tmp_path_factory.mktemp("bad")
    f = {"img": GOOD[0], "img2": GOOD[1], "model": MODEL, "train": TRAIN, "tmp": root}
    (root / "dir.png").mkdir()
    f["dir"] = root / "dir.png"
    # the default model with its arrays file cut short and the checksum recomputed to match
    truncated = root / "truncated"
    truncated.mkdir()
    description = json.loads((MODEL / "model.json").read_text())
    payload = (MODEL / description["arrays_file"]).read_bytes()[:50_000]
    (truncated / description["arrays_file"]).write_bytes(payload)
    description["arrays_sha256"] = hashlib.sha256(payload).hexdigest()
    (truncated / "model.json").write_text(json.dumps(description))
    f["truncated"] = truncated
    # the default model without its decoder.json: a character loop, quick to load
    (root / "plain").mkdir()
    for item in MODEL.iterdir():
        if item.name == "model.json" or item.name.startswith("arrays-"):
            shutil.copy(item, root / "plain" / item.name)
    f["plain"] = root / "plain"
    (root / "not_a_model").mkdir()
    f["not_a_model"] = root / "not_a_model"
    # emissions: good arrays around a complex one and one of the wrong width
    assert cli.main(["emissions", "--model", str(MODEL), str(GOOD[0]), "-o", str(root / "e.npz")]) == 0
    with np.load(root / "e.npz") as npz:
        good = npz[GOOD[0].stem]
    np.savez(root / "mixed.npz", first=good, cplx=good.astype(np.complex64), narrow=good[:, :5], last=good)
    f["mixed"] = root / "mixed.npz"
    (root / "garbage.npz").write_bytes(b"not a zip archive")
    f["garbage_npz"] = root / "garbage.npz"
    # text files
    f["corpus"] = root / "corpus.txt"
    f["corpus"].write_text("le chat dort\nle chien dort\nun chat court\n", encoding="utf-8")
    f["empty"] = root / "empty.txt"
    f["empty"].write_text("")
    f["no_tab"] = root / "no_tab.tsv"
    f["no_tab"].write_text("an id without text\n", encoding="utf-8")
    f["latin1"] = root / "latin1.tsv"
    f["latin1"].write_bytes("line\tcaf\xe9\n".encode("latin-1"))
    assert cli.main(["build-lm", "--order", "2", str(f["corpus"]), "-o", str(root / "words.arpa")]) == 0
    f["word_lm"] = root / "words.arpa"
    # a dataset whose ids leave its image folder, by a relative and by an absolute path
    data = root / "data"
    (data / "lines").mkdir(parents=True)
    shutil.copy(GOOD[0], root / "outside.png")
    shutil.copy(GOOD[1], data / "lines" / "inside.png")
    (data / "test.tsv").write_text("inside\tx\n../../outside\ty\n", encoding="utf-8")
    (data / "abs.tsv").write_text(f"{root / 'outside'}\tz\n", encoding="utf-8")
    f["outside"], f["absolute"] = data / "test.tsv", data / "abs.tsv"
    (data / "no_images.tsv").write_text("absent\tab\nalso_absent\tcd\n", encoding="utf-8")
    f["no_images"] = data / "no_images.tsv"
    return f


TRAIN_ARGS = ["train", "--train", "{train}", "-o", "{tmp}/m"]
MLP_ARGS = ["train", "--emission", "mlp", "--init-model", "{model}", "--train", "{train}", "-o", "{tmp}/mlp"]

# name: (argv, exit status, fragment of stderr). Status 2: refused by the parser.
CASES = {
    # numbers: non-finite, absurd or of the wrong kind, refused before any work
    "huge LM weight": (["decode", "--lm-weight", "1e308", "{img}"], 2, "magnitude at most"),
    "NaN word penalty": (["decode", "--word-penalty", "nan", "{img}"], 2, "finite number"),
    "infinite beam": (["decode", "--beam", "inf", "{img}"], 2, "positive number"),
    "minus infinite glue": (["decode", "--glue-penalty=-inf", "{img}"], 2, "finite number"),
    "zero jobs": (["decode", "--jobs", "0", "{img}"], 2, "integer from 1 to 256"),
    "a fork bomb of jobs": (["features", "--jobs", "100000", "{img}", "-o", "{tmp}/f.npz"], 2, "from 1 to 256"),
    "huge n-best": (["decode", "--nbest", "1000000000", "{img}"], 2, "from 1 to 1000"),
    "huge max active": (["decode", "--max-active", "99999999999", "{img}"], 2, "from 1 to 100000"),
    "mixtures as text": ([*TRAIN_ARGS, "--mixtures", "x"], 2, "expected an integer, got 'x'"),
    "mixtures beyond memory": ([*TRAIN_ARGS, "--mixtures", "100000000"], 2, "from 1 to 1024"),
    "states beyond any line": ([*TRAIN_ARGS, "--states", "100000"], 2, "from 1 to 100"),
    "negative context": ([*TRAIN_ARGS, "--context", "-1"], 2, "from 0 to 100"),
    "infinite dropout": ([*TRAIN_ARGS, "--dropout", "inf"], 2, "finite number >= 0"),
    "zero resamples": (["evaluate", "--resamples", "0", "{train}", "{train}"], 2, "from 1 to 1000000"),
    "no subcommand": ([], 2, "a subcommand is required"),
    "unknown subcommand": (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    # inputs that are not what they claim
    "missing image": (["decode", "--model", "{plain}", "{tmp}/missing.png"], 1, "no line could be decoded"),
    "training split without images": (["train", "--train", "{no_images}", "-o", "{tmp}/noimg"], 1,
                                      "none of the 2 line images could be read"),
    "split file without TAB": (["decode", "{no_tab}"], 1, "no_tab.tsv:1: missing TAB"),
    "split file not UTF-8": (["features", "{latin1}", "-o", "{tmp}/f.npz"], 1, "latin1.tsv:1: not UTF-8"),
    "missing hypotheses": (["evaluate", "{train}", "{tmp}/missing.tsv"], 1, "missing.tsv: no such file"),
    "missing page folder": (["import", "{tmp}/no_pages", "-o", "{tmp}/imported"], 1, "no such directory"),
    "truncated arrays, matching checksum": (["decode", "--model", "{truncated}", "{img}"], 1, "is corrupt"),
    "not a model directory": (["decode", "--model", "{not_a_model}", "{img}"], 1, "no model.json"),
    "emissions not an npz": (["decode", "--model", "{plain}", "--emissions", "{garbage_npz}"], 1, "not a readable .npz"),
    "text as an LM": (["decode", "--lm", "{corpus}", "{img}"], 1, "not a readable KenLM language model"),
    "empty lexicon": (["decode", "--lexicon", "{empty}", "{img}"], 1, "empty lexicon"),
    "missing lexicon": (["decode", "--lexicon", "{tmp}/none.txt", "{img}"], 1, "no such lexicon file"),
    "word LM as character LM": (["decode", "--char-lm", "{word_lm}", "{img}"], 1, "words.arpa: no <sp> token"),
    "unigram LM": (["build-lm", "--order", "1", "{corpus}", "-o", "{tmp}/lm1.arpa"], 1, "between 2 and"),
    "LM named .txt": (["build-lm", "--order", "2", "{corpus}", "-o", "{tmp}/lm.txt"], 1, "must end in .arpa.gz"),
    "split shares above 1": (["split", "{train}", "--valid", "0.9", "--test", "0.9", "-o", "{tmp}/s"], 1,
                             "valid + test < 1"),
    # paths that leave their folder
    "relative id outside": (["decode", "{outside}"], 1, "line id '../../outside' names a file outside"),
    "absolute id outside": (["features", "{absolute}", "-o", "{tmp}/f.npz"], 1, "outside the image folder"),
    "id outside, tune": (["tune", "--model", "{model}", "--valid", "{outside}"], 1, "outside the image folder"),
    "id outside, train": ([*TRAIN_ARGS[:2], "{outside}", *TRAIN_ARGS[3:]], 1, "outside the image folder"),
    # options that would be ignored: refused, or a warning when the run can go on
    "MLP options for a GMM": ([*TRAIN_ARGS, "--hidden", "512", "--prior-scale", "0.5"], 1,
                              "--hidden, --prior-scale: options of --emission mlp"),
    "GMM options for an MLP": ([*MLP_ARGS, "--states", "5", "--mixtures", "4"], 1,
                               "--states, --mixtures: options of --emission gmm"),
    "front end with an initial model": ([*MLP_ARGS, "--kind", "pixels"], 1, "--kind: the front end is --init-model's"),
    "resume of a realigned hybrid": ([*MLP_ARGS, "--resume", "--realign"], 1,
                                     "a --realign run cannot be resumed"),
    "hybrid as GMM initial model": ([*TRAIN_ARGS, "--init-model", "{model}"], 1, "is an MLP-HMM"),
    "MLP without initial model": (["train", "--emission", "mlp", "--train", "{train}", "-o", "{tmp}/x"], 1,
                                  "needs --init-model"),
    "MLP beyond memory": ([*MLP_ARGS, "--hidden", "100000000"], 1, "at most 32 hidden layers of at most 65536"),
    "emissions with images": (["decode", "--emissions", "{mixed}", "{img}"], 1, "give no images or split files"),
    "prior scale with emissions": (["decode", "--emissions", "{mixed}", "--prior-scale", "0.5"], 1,
                                   "does not record the prior scale of its scores"),
    "resume without output": (["decode", "--resume", "{img}"], 1, "--resume continues the output file"),
    "CTC flags without CTC": (["decode", "--blank", "1", "{img}"], 1, "they need --ctc"),
    "CTC without emissions": (["decode", "--ctc", "{corpus}"], 1, "give them with --emissions"),
    "PAGE and ALTO in one folder": (["decode", "--page-xml", "{tmp}/p", "--alto", "{tmp}/p", "{img}"], 1,
                                    "give them different folders"),
    "unknown words without character LM": (["decode", "--model", "{plain}", "--lexicon", "{corpus}",
                                            "--unk-penalty", "-5", "{img}"], 1,
                                           "need a lexicon and a character LM"),
    # a bad item of a batch: reported and skipped, the others done
    "directory among images": (["decode", "--model", "{plain}", "{img}", "{dir}", "{img2}"], 0, "skipped line dir: "),
    "directory among feature images": (["features", "{dir}", "{img}", "-o", "{tmp}/f.npz"], 0, "is a directory"),
    "bad arrays of an emissions file": (["decode", "--model", "{plain}", "--emissions", "{mixed}"], 0, "skipped line cplx"),
    "n-best without details": (["decode", "--model", "{plain}", "--nbest", "3", "{img}"], 0, "written to --details FILE only"),
    "jobs with emissions": (["decode", "--model", "{plain}", "--emissions", "{mixed}", "--jobs", "2"], 0, "--jobs ignored"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_corpus(case, files, capsys):
    argv, status, fragment = CASES[case]
    argv = [arg.format(**files) for arg in argv]
    code, out, err = run(capsys, *argv)
    assert code == status, err
    assert fragment in err
    errors = [line for line in err.splitlines() if re.match(r"hybrid-hwr( [a-z-]+)?: error: ", line)]
    assert len(errors) == (1 if status else 0), err     # one error line, or none when the run went on
    assert "internal error" not in err


def test_the_corpus_is_large():
    assert len(CASES) >= 30


def test_skipped_items_do_not_cost_the_good_ones(files, capsys):
    code, out, err = run(capsys, "decode", "--model", files["plain"], files["img"], files["dir"], files["img2"])
    assert code == 0 and [row.split("\t")[0] for row in out.splitlines()] == [GOOD[0].stem, GOOD[1].stem]
    assert f"skipped line dir: {files['dir']}: is a directory" in err
    assert run(capsys, "features", files["img"], files["dir"], files["img2"], "-o", files["tmp"] / "f.npz")[0] == 0
    with np.load(files["tmp"] / "f.npz") as npz:
        assert sorted(npz.files) == sorted([GOOD[0].stem, GOOD[1].stem])
    code, _, err = run(capsys, "decode", "--model", files["plain"], "--emissions", files["mixed"],
                       "-o", files["tmp"] / "hyp.tsv")
    assert code == 0 and "skipped line narrow" in err
    rows = (files["tmp"] / "hyp.tsv").read_text(encoding="utf-8").splitlines()
    assert [r.split("\t")[0] for r in rows] == ["first", "last"] and rows[0].split("\t")[1] == rows[1].split("\t")[1]


def test_allow_outside_paths_reads_them(files, capsys):
    code, out, err = run(capsys, "decode", "--model", files["plain"], "--allow-outside-paths", files["outside"])
    assert code == 0 and [r.split("\t")[0] for r in out.splitlines()] == ["inside", "../../outside"]


def test_resume_with_other_settings_warns_and_keeps_the_saved_run(capsys, tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("".join(TRAIN.read_text(encoding="utf-8").splitlines(True)[:6]), encoding="utf-8")
    shutil.copytree(LINES, tmp_path / "lines")
    common = ["train", "--train", train, "--states", "3", "--mixtures", "1", "--iterations", "1", "-o", tmp_path / "m"]
    assert run(capsys, *common)[0] == 0
    code, _, err = run(capsys, *common[:-2], "--states", "4", "--resume", "--init-model", tmp_path / "m",
                       "-o", tmp_path / "m")
    assert code == 0 and "--resume continues with the saved settings; ignored: states 4 (saved: 3)" in err
    assert "--init-model" in err and "ignored: --resume continues the model saved in" in err


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


def _dataset_with_a_broken_line(tmp_path):
    tsv = tmp_path / "d" / "test.tsv"
    (tmp_path / "d" / "lines").mkdir(parents=True)
    for image in GOOD:
        shutil.copy(image, tmp_path / "d" / "lines" / image.name)
    (tmp_path / "d" / "lines" / "broken.png").write_bytes(b"not a png")
    tsv.write_text("".join(f"{name}\tx\n" for name in (GOOD[0].stem, "broken", GOOD[1].stem)), encoding="utf-8")
    return tsv


def test_decode_resume_skips_finished_lines_and_records_skipped_ones(files, capsys, tmp_path):
    tsv = _dataset_with_a_broken_line(tmp_path)
    out, details = tmp_path / "hyp.tsv", tmp_path / "details.jsonl"
    assert run(capsys, "decode", "--model", files["plain"], tsv, "-o", out, "--details", details)[0] == 0
    full, full_details = out.read_text(encoding="utf-8"), details.read_text(encoding="utf-8")
    records = [json.loads(r) for r in full_details.splitlines()]
    assert [r["id"] for r in records] == [GOOD[0].stem, "broken", GOOD[1].stem]
    assert records[1]["skipped"].startswith(str(tmp_path))
    # an interrupted run: the first line written, the second cut short; the details of the
    # first line whole, then half of a record
    first, second = full.splitlines(True)
    out.write_text(first + second[:8], encoding="utf-8")
    details_lines = full_details.splitlines(True)
    details.write_text(details_lines[0] + details_lines[1][:10], encoding="utf-8")
    code, _, err = run(capsys, "decode", "--model", files["plain"], tsv, "-o", out, "--details", details, "--resume")
    assert code == 0 and "resumed: 1 lines were already in" in err and "1 decoded now" in err
    assert out.read_text(encoding="utf-8") == full
    # every line has exactly one whole record again, the skipped one tried again
    assert details.read_text(encoding="utf-8") == full_details


def test_a_full_disk_keeps_the_records_written_and_says_so(files, capsys, tmp_path, monkeypatch):
    """The third record of decode -o hits a full disk: one error line naming the file, the
    first two records kept whole, no partial record."""
    import os

    from hybrid_hwr import fileio

    tsv = tmp_path / "d" / "test.tsv"
    (tmp_path / "d" / "lines").mkdir(parents=True)
    names = [image.stem for image in sorted(LINES.glob("*.png"))[:3]]
    for name in names:
        shutil.copy(LINES / f"{name}.png", tmp_path / "d" / "lines")
    tsv.write_text("".join(f"{n}\tx\n" for n in names), encoding="utf-8")
    out = tmp_path / "hyp.tsv"
    real_write, calls = os.write, []

    def full_after_two(fd, data):
        if os.path.realpath(f"/proc/self/fd/{fd}") == str(out.resolve()):
            calls.append(len(data))
            if len(calls) == 3:   # a short write, then ENOSPC, as a real full disk does
                real_write(fd, bytes(data[:5]))
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(fileio.os, "write", full_after_two)
    code, _, err = run(capsys, "decode", "--model", files["plain"], tsv, "-o", out)
    assert code == 1
    assert f"hybrid-hwr: error: {out}: disk full (No space left on device)" in err
    rows = out.read_text(encoding="utf-8").split("\n")
    assert rows[-1] == "" and [r.split("\t")[0] for r in rows[:-1]] == names[:2]


def test_a_full_disk_while_writing_features_keeps_the_previous_file(capsys, tmp_path, monkeypatch):
    from hybrid_hwr import fileio

    output = tmp_path / "f.npz"
    assert run(capsys, "features", GOOD[0], "-o", output)[0] == 0
    before = output.read_bytes()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.np.lib.format, "write_array", full)
    code, _, err = run(capsys, "features", GOOD[0], GOOD[1], "-o", output)
    assert code == 1 and f"{output}: disk full" in err and "the previous f.npz is kept" in err
    assert output.read_bytes() == before and not list(tmp_path.glob("*.tmp"))


def test_a_second_writer_of_a_model_directory_is_refused(capsys, tmp_path):
    from hybrid_hwr.fileio import directory_lock

    model = tmp_path / "m"
    model.mkdir()
    (model / "model.json.abc123.tmp").write_text("left by a killed run")
    with directory_lock(model, "model directory"):
        assert not (model / "model.json.abc123.tmp").exists()      # stale temporaries cleaned
        code, _, err = run(capsys, "train", "--train", TRAIN, "--limit", 4, "--states", 2,
                           "--mixtures", 1, "--iterations", 1, "-o", model)
        assert code == 1 and f"model directory {model} is being written by another run" in err
        assert not (model / "model.json").exists()
    code, _, err = run(capsys, "train", "--train", TRAIN, "--limit", 4, "--states", 2,
                       "--mixtures", 1, "--iterations", 1, "-o", model)
    assert code == 0, err
    assert not list(model.glob("*.tmp"))


def test_temporaries_of_killed_writers_are_removed_by_the_next_write(capsys, tmp_path, monkeypatch):
    """Left by kill -9: an npz temporary, a partial LM of an older build, build-lm's work
    folder; a live writer's are kept."""
    import fcntl
    import os

    stale = tmp_path / "f.npz.k1ll3d.tmp"
    stale.write_bytes(b"PK half an archive")
    live = tmp_path / "f.npz.l1v3.tmp"
    live.write_bytes(b"PK being written")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)           # as a running writer holds it
    try:
        assert run(capsys, "features", GOOD[0], "-o", tmp_path / "f.npz")[0] == 0
        assert not stale.exists() and live.exists()
    finally:
        os.close(fd)
    # and the work folder of a killed build-lm (its lock free) beside a running one's
    import tempfile

    work_root = tmp_path / "tmp"
    (work_root / "hwr-lm-dead").mkdir(parents=True)
    (work_root / "hwr-lm-dead" / ".lock").write_text("")
    (work_root / "hwr-lm-dead" / "corpus.txt").write_text("a large tokenised corpus")
    (work_root / "hwr-lm-live").mkdir()
    live_fd = os.open(work_root / "hwr-lm-live" / ".lock", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(live_fd, fcntl.LOCK_EX)
    monkeypatch.setattr(tempfile, "tempdir", str(work_root))
    (tmp_path / "lm.arpa.part").write_text("\\data\\\nngram 1=")
    (tmp_path / "lm.arpa.x1.tmp").write_text("\\data\\\n")
    corpus = tmp_path / "c.txt"
    corpus.write_text("le chat dort\nle chien dort\n", encoding="utf-8")
    try:
        assert run(capsys, "build-lm", "--order", "2", corpus, "-o", tmp_path / "lm.arpa")[0] == 0
    finally:
        os.close(live_fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "f.npz", "f.npz.l1v3.tmp", "lm.arpa", "tmp"]
    assert sorted(p.name for p in work_root.iterdir()) == ["hwr-lm-live"]
