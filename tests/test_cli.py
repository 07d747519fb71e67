"""The command line run in-process: exit codes, one-line errors, batches that skip bad lines."""

import subprocess
import sys

import numpy as np
import pytest

from conftest import TEST_DATA, planted_line, write_png
from hybrid_hwr import cli
from hybrid_hwr.data import load_image


class StubFrontEnd:
    """Stands in for features.FrontEnd: 3 features per 3-pixel frame, easy to recompute."""

    def line_features(self, gray):
        ink = 1.0 - gray.astype(np.float32) / 255.0
        frames = ink[:, : (ink.shape[1] // 3) * 3].reshape(ink.shape[0], -1, 3).mean(axis=(0, 2))
        return np.stack([frames, frames ** 2, np.full_like(frames, ink.shape[0])], axis=1), None


@pytest.fixture
def stub_frontend(monkeypatch):
    monkeypatch.setattr(cli, "_make_frontend", lambda args: StubFrontEnd())


def run(capsys, *argv):
    """main(argv) -> (exit code, stdout, stderr); checks that stderr never holds a traceback."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    for line in err.splitlines():
        assert line.startswith("hybrid-hwr") or line.startswith("usage:") or line.startswith(" "), line
    return code, out, err


def write_tsv(path, rows, raw: bytes | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw if raw is not None else "".join(f"{k}\t{v}\n" for k, v in rows.items()).encode())
    return path


def one_error(err: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("hybrid-hwr: error:")]
    assert len(errors) == 1, err
    return errors[0]


# --- evaluate ----------------------------------------------------------------------------


def test_evaluate_one_system(tmp_path, capsys):
    ref = write_tsv(tmp_path / "ref.tsv", {"a": "hello world", "b": "foo"})
    hyp = write_tsv(tmp_path / "hyp.tsv", {"b": "fox", "a": "helo world"})
    code, out, err = run(capsys, "evaluate", ref, hyp)
    assert code == 0 and err == ""
    # characters: 1 deletion + 1 substitution over 14; words: 2 substitutions over 3
    cer_row = next(l for l in out.splitlines() if l.startswith("CER")).split()
    wer_row = next(l for l in out.splitlines() if l.startswith("WER")).split()
    assert cer_row == ["CER", "14.29", "%", "2", "14", "1", "1", "0"]
    assert wer_row == ["WER", "66.67", "%", "2", "3", "2", "0", "0"]


def test_evaluate_tokenises_both_sides_unless_told_not_to(tmp_path, capsys):
    ref = write_tsv(tmp_path / "ref.tsv", {"a": "Mr . Gaitskell , said"})
    hyp = write_tsv(tmp_path / "hyp.tsv", {"a": "Mr. Gaitskell, sad"})
    _, out, _ = run(capsys, "evaluate", ref, hyp)
    wer_row = next(l for l in out.splitlines() if l.startswith("WER")).split()
    assert wer_row[1:5] == ["20.00", "%", "1", "5"]  # only said -> sad, over 5 tokens
    _, out, _ = run(capsys, "evaluate", "--lang", "none", ref, hyp)
    wer_row = next(l for l in out.splitlines() if l.startswith("WER")).split()
    assert wer_row[3:5] == ["5", "5"]  # raw white-space words: nothing matches


def test_evaluate_two_systems_with_details(tmp_path, capsys):
    ref = write_tsv(tmp_path / "ref.tsv", {f"l{i}": f"line number {i} of the test" for i in range(30)})
    bad = write_tsv(tmp_path / "a.tsv", {f"l{i}": f"lime nunber {i} of teh tset" for i in range(30)})
    good = write_tsv(tmp_path / "b.tsv", {f"l{i}": f"line number {i} of teh test" for i in range(30)})
    details = tmp_path / "out" / "details.tsv"
    code, out, err = run(capsys, "evaluate", ref, bad, good, "--details", details, "--resamples", 200)
    assert code == 0
    cer_diff = next(l for l in out.splitlines() if l.startswith("CER") and "CI" in l)
    assert cer_diff.split()[1].startswith("-")  # B is better
    rows = details.read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("system\tid\tref_chars\tchar_errors") and len(rows) == 1 + 2 * 30
    assert rows[1].split("\t")[:4] == ["A", "l0", "25", "6"]


def test_evaluate_missing_hypotheses_warned(tmp_path, capsys):
    ref = write_tsv(tmp_path / "ref.tsv", {"a": "abc", "b": "def"})
    hyp = write_tsv(tmp_path / "hyp.tsv", {"a": "abc"})
    code, out, err = run(capsys, "evaluate", ref, hyp)
    assert code == 0 and "1 of 2 reference lines have no hypothesis" in err
    assert next(l for l in out.splitlines() if l.startswith("CER")).split()[1] == "50.00"


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"a\tabc\nb\tde\xff\n", "ref.tsv:2: not UTF-8"),
        (b"a\tabc\nb\tok\nno-tab-here\n", "ref.tsv:3: missing TAB between id and text"),
    ],
)
def test_evaluate_bad_tsv(tmp_path, capsys, raw, message):
    ref = write_tsv(tmp_path / "ref.tsv", None, raw)
    hyp = write_tsv(tmp_path / "hyp.tsv", {"a": "abc"})
    code, _, err = run(capsys, "evaluate", ref, hyp)
    assert code == 1 and message in one_error(err)


def test_evaluate_missing_file(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", tmp_path / "nope.tsv", tmp_path / "nope2.tsv")
    assert code == 1 and "nope.tsv: no such file" in one_error(err)


# --- features ----------------------------------------------------------------------------


def _dataset_with_bad_lines(make_dataset):
    tsv = make_dataset({"g1": "one", "empty": "two", "g2": "three", "gone": "four", "junk": "five"})
    (tsv.parent / "lines" / "empty.png").write_bytes(b"")
    (tsv.parent / "lines" / "gone.png").unlink()
    (tsv.parent / "lines" / "junk.png").write_bytes(b"GIF89a but not really")
    return tsv


def test_features_batch_skips_bad_lines(make_dataset, tmp_path, capsys, stub_frontend):
    tsv = _dataset_with_bad_lines(make_dataset)
    out_npz = tmp_path / "feats.npz"
    code, out, err = run(capsys, "features", tsv, "-o", out_npz)
    assert code == 0
    warnings = err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("hybrid-hwr: warning: skipped line") for w in warnings)
    assert "empty.png: cannot read image (empty file)" in warnings[0]
    assert "gone.png: image not found" in warnings[1]
    assert "junk.png: cannot read image" in warnings[2]
    assert "wrote features of 2 lines" in out and "(3 skipped)" in out
    with np.load(out_npz) as npz:
        assert npz.files == ["g1", "g2"]
        expected = StubFrontEnd().line_features(load_image(tsv.parent / "lines" / "g2.png"))[0]
        assert npz["g2"].dtype == np.float32 and np.array_equal(npz["g2"], expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "feats.npz"]  # no temporary left


def test_features_parallel_same_as_serial(make_dataset, tmp_path, capsys, stub_frontend):
    tsv = make_dataset({f"l{i}": "x" for i in range(6)})
    assert run(capsys, "features", tsv, "-o", tmp_path / "one.npz")[0] == 0
    assert run(capsys, "features", tsv, "-o", tmp_path / "two.npz", "--jobs", 2)[0] == 0
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "two.npz") as two:
        assert one.files == two.files == [f"l{i}" for i in range(6)]
        assert all(np.array_equal(one[k], two[k]) for k in one.files)


def test_features_images_and_limit(tmp_path, capsys, stub_frontend):
    a = write_png(tmp_path / "img" / "alpha.png", planted_line(90, 30))
    b = write_png(tmp_path / "img" / "beta.png", planted_line(60, 30))
    assert run(capsys, "features", a, b, "-o", tmp_path / "f.npz")[0] == 0
    with np.load(tmp_path / "f.npz") as npz:
        assert npz.files == ["alpha", "beta"] and npz["alpha"].shape == (30, 3) and npz["beta"].shape == (20, 3)
    assert run(capsys, "features", a, b, "-o", tmp_path / "g.npz", "--limit", 1)[0] == 0
    with np.load(tmp_path / "g.npz") as npz:
        assert npz.files == ["alpha"]


def test_features_only_bad_image_fails_cleanly(tmp_path, capsys, stub_frontend):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    code, _, err = run(capsys, "features", empty, "-o", tmp_path / "f.npz")
    assert code == 1
    assert "empty.png: cannot read image (empty file)" in err
    assert "no line could be processed" in one_error(err)
    assert not (tmp_path / "f.npz").exists() and [p.name for p in tmp_path.iterdir()] == ["empty.png"]


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"l1\tok\nl2\t\xe9t\xe9\n", "train.tsv:2: not UTF-8"),
        (b"l1\tok\nl2 no tab\n", "train.tsv:2: missing TAB between id and text"),
    ],
)
def test_features_bad_tsv(make_dataset, tmp_path, capsys, stub_frontend, raw, message):
    tsv = make_dataset({"l1": "ok", "l2": "x"})
    tsv.write_bytes(raw)
    code, _, err = run(capsys, "features", tsv, "-o", tmp_path / "f.npz")
    assert code == 1 and message in one_error(err) and str(tsv) in one_error(err)


def test_features_unwritable_output(make_dataset, tmp_path, capsys, stub_frontend):
    tsv = make_dataset({"l1": "ok"})
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code, _, err = run(capsys, "features", tsv, "-o", blocker / "f.npz")
    assert code == 1 and str(blocker) in one_error(err)


# --- emissions ---------------------------------------------------------------------------


def test_emissions_are_the_models_scores_and_decode_like_images(make_dataset, tmp_path, capsys):
    from hybrid_hwr.decode import Recognizer
    from hybrid_hwr.demo import default_model_dir
    from hybrid_hwr.model import load_model

    tsv = _dataset_with_bad_lines(make_dataset)
    out_npz = tmp_path / "em.npz"
    code, out, err = run(capsys, "emissions", tsv, "-o", out_npz, "--jobs", 2)
    assert code == 0 and len(err.strip().splitlines()) == 3 and "(3 skipped)" in out
    model = load_model(default_model_dir())
    recognizer = Recognizer(model)  # character loop: no LM to load
    with np.load(out_npz) as npz:
        assert npz.files == ["g1", "g2", "__prior_scale__"] and npz["__prior_scale__"].tolist() == [1.0]
        for line_id in npz.files[:2]:
            gray = load_image(tsv.parent / "lines" / f"{line_id}.png")
            expected = model.log_likelihoods(model.features(gray)[0])
            assert npz[line_id].dtype == np.float32
            assert npz[line_id].shape == (expected.shape[0], model.topology.n_emitting)
            np.testing.assert_allclose(npz[line_id], expected, rtol=1e-6, atol=1e-4)
            assert recognizer.decode_loglik(npz[line_id].astype(np.float64)).text == recognizer.decode_image(gray).text


def test_prior_scale_is_chosen_when_scoring(make_dataset, tmp_path, capsys):
    """kappa: emissions --prior-scale, decoder.json's prior_scale, decode --prior-scale all agree."""
    import json

    from hybrid_hwr.demo import default_model_dir
    from hybrid_hwr.model import MODEL_FILE, load_model

    model = load_model(default_model_dir())  # the bundled model is a hybrid: log p(s|x) - 1.0 log p(s)
    assert model.emission_type == "mlp" and model.emission.prior_scale == 1.0
    tsv = make_dataset({"g1": "one"})
    gray = load_image(tsv.parent / "lines" / "g1.png")
    feats = model.features(gray)[0]
    posteriors = model.emission.predict_log_proba(feats)
    for kappa in (0, 0.5):
        code, _, _ = run(capsys, "emissions", tsv, "--prior-scale", kappa, "-o", tmp_path / f"k{kappa}.npz")
        assert code == 0
        with np.load(tmp_path / f"k{kappa}.npz") as npz:
            np.testing.assert_allclose(npz["g1"], posteriors - kappa * model.emission.log_priors_, atol=1e-4)
    # a model directory whose decoder.json sets kappa scores with it by default
    tuned = tmp_path / "tuned"
    tuned.mkdir()
    for file in default_model_dir().iterdir():
        if file.name == MODEL_FILE or file.name.startswith("arrays-"):
            (tuned / file.name).symlink_to(file)
    (tuned / "decoder.json").write_text(json.dumps({"prior_scale": 0.5}))
    code, _, _ = run(capsys, "emissions", tsv, "--model", tuned, "-o", tmp_path / "tuned.npz")
    assert code == 0
    with np.load(tmp_path / "tuned.npz") as a, np.load(tmp_path / "k0.5.npz") as b:
        np.testing.assert_array_equal(a["g1"], b["g1"])
    # decoding the image scores like decoding its emissions at the same kappa: --prior-scale
    # wins over decoder.json (0.5), which wins over the network's own 1.0; a file records the
    # kappa of its scores, and decode moves them to its own (a file written before tuning
    # decodes like the images after it)
    scores, moved = {}, {}
    for name, extra in (("image k0", [tsv, "--prior-scale", 0]), ("file k0", ["--emissions", tmp_path / "k0.npz"]),
                        ("image k0.5", [tsv]), ("file k0.5", ["--emissions", tmp_path / "k0.5.npz"]),
                        ("file k0 at 0", ["--emissions", tmp_path / "k0.npz", "--prior-scale", 0]),
                        ("file k0.5 at 0", ["--emissions", tmp_path / "k0.5.npz", "--prior-scale", 0])):
        details = tmp_path / "details.jsonl"
        code, _, err = run(capsys, "decode", "--model", tuned, *extra, "-o", tmp_path / "hyp.tsv", "--details", details)
        assert code == 0
        scores[name] = json.loads(details.read_text())["optical_score"]
        moved[name] = "holds scores of prior scale" in err
    assert scores["image k0"] == pytest.approx(scores["file k0 at 0"], abs=1e-2)
    assert scores["image k0"] == pytest.approx(scores["file k0.5 at 0"], abs=1e-2)
    assert scores["image k0.5"] == pytest.approx(scores["file k0.5"], abs=1e-2)
    assert scores["image k0.5"] == pytest.approx(scores["file k0"], abs=1e-2)
    assert abs(scores["image k0"] - scores["image k0.5"]) > 1.0
    assert moved == {"image k0": False, "file k0": True, "image k0.5": False, "file k0.5": False,
                     "file k0 at 0": False, "file k0.5 at 0": True}
    # a file that does not say which kappa its scores have: --prior-scale cannot act on it
    with np.load(tmp_path / "k0.npz") as npz:
        np.savez(tmp_path / "bare.npz", g1=npz["g1"])
    code, _, err = run(capsys, "decode", "--model", tuned, "--emissions", tmp_path / "bare.npz",
                       "--prior-scale", 0.5, "-o", tmp_path / "x.tsv")
    assert code == 1 and "does not record the prior scale" in one_error(err)
    code, _, err = run(capsys, "emissions", tsv, "--prior-scale", -1, "-o", tmp_path / "bad.npz")
    assert code == 2 and "finite number >= 0" in err and not (tmp_path / "bad.npz").exists()


def test_emissions_missing_model_is_one_error(make_dataset, tmp_path, capsys):
    tsv = make_dataset({"g1": "one"})
    code, _, err = run(capsys, "emissions", tsv, "--model", tmp_path / "nope", "-o", tmp_path / "em.npz")
    assert code == 1 and "nope: not a directory" in one_error(err)
    assert not (tmp_path / "em.npz").exists()


def test_internal_errors_and_interrupts_are_one_line(make_dataset, tmp_path, capsys, monkeypatch):
    tsv = make_dataset({"l1": "ok"})

    def broken(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli, "_make_frontend", broken)
    code, _, err = run(capsys, "features", tsv, "-o", tmp_path / "f.npz")
    assert code == 1 and "internal error (RuntimeError: something unexpected)" in one_error(err)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_make_frontend", interrupted)
    code, _, err = run(capsys, "features", tsv, "-o", tmp_path / "f.npz")
    assert code == 130 and one_error(err) == "hybrid-hwr: error: interrupted"


# --- import, usage, entry points ---------------------------------------------------------


def test_import_command(tmp_path, capsys):
    code, out, _ = run(capsys, "import", TEST_DATA / "pages", "-o", tmp_path / "ds", "--split", "test")
    assert code == 0 and out.startswith("imported 23 lines into")
    assert len((tmp_path / "ds" / "test.tsv").read_text(encoding="utf-8").splitlines()) == 23
    code, _, err = run(capsys, "import", tmp_path / "nothing", "-o", tmp_path / "ds2")
    assert code == 1 and "nothing: no such directory" in one_error(err)


@pytest.mark.parametrize(
    "argv",
    [[], ["bogus"], ["features"], ["features", "x.tsv"], ["features", "x.tsv", "-o", "f.npz", "--limit", "0"],
     ["evaluate", "ref.tsv"], ["import", "pages", "-o", "ds", "--scale", "-1"]],
)
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = run(capsys, *argv)
    assert code == 2 and "usage:" in err


def test_python_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "hybrid_hwr", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("hybrid-hwr ")


def test_build_lm_writes_a_kenlm_model_of_the_corpus(tmp_path, capsys):
    import kenlm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat\nthe dog sat on the cat\n", encoding="utf-8")
    out = tmp_path / "lm.arpa.gz"
    assert cli.main(["build-lm", "--order", "2", str(corpus), "-o", str(out)]) == 0
    model = kenlm.Model(str(out))
    assert model.order == 2
    # a bigram of the corpus is more probable than one that never occurs
    assert model.score("the cat", bos=False, eos=False) > model.score("cat the", bos=False, eos=False)
    assert cli.main(["build-lm", "--order", "2", str(tmp_path / "missing.txt"), "-o", str(out)]) == 1
    assert capsys.readouterr().err.count("\n") == 1
