"""hybrid-hwr tune on bundled lines: it writes decoder.json, decode with it reproduces the
validation figure tune reported, it is not worse than the character loop, and it resumes."""

import json
import re
import shutil

import numpy as np
import pytest

from hybrid_hwr import cli
from hybrid_hwr.data import read_split, sample_dir
from hybrid_hwr.demo import DecoderSettings, default_model_dir
from hybrid_hwr.errors import HwrError
from hybrid_hwr.lexicon import count_tokens, most_frequent, save_lexicon
from hybrid_hwr.lm import build_lm
from hybrid_hwr.metrics import score_corpus
from hybrid_hwr.tune import _candidates, tune

N_LINES = 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    model = root / "model"
    model.mkdir()
    source = default_model_dir()
    for name in ("model.json", json.loads((source / "model.json").read_text())["arrays_file"]):
        shutil.copy(source / name, model / name)
    corpus = [sample_dir() / "train.tsv", sample_dir() / "test.tsv"]
    lexicon = root / "lex.txt"
    save_lexicon(most_frequent(count_tokens(corpus, "fr")), lexicon)
    lm = root / "lm.arpa"
    build_lm(corpus, 2, lm, lang="fr", vocab=lexicon)
    return model, lexicon, lm


def test_tune_writes_settings_that_decode_reproduces(setup, tmp_path, capsys):
    model, lexicon, lm = setup
    lines = read_split(sample_dir() / "test.tsv", limit=N_LINES)
    logs = []
    result = tune(model, lines, lexicon=lexicon, lm=lm, lang="fr", modes=["character loop", "lexicon + LM"],
                  rounds=1, log=logs.append)
    table = result["table"]
    assert result["mode"] == "lexicon + LM"
    assert table["lexicon + LM"].wer <= table["character loop"].wer
    assert any(line.startswith("best on validation: lexicon + LM") for line in logs)
    written = json.loads((model / "decoder.json").read_text())
    assert written["lexicon"] == str(lexicon) and written["lang"] == "fr" and written["lm_weight"] is not None
    settings = DecoderSettings.load(model)
    assert settings.lm_weight == table["lexicon + LM"].settings.lm_weight

    code = cli.main(["decode", "--model", str(model), "--limit", str(N_LINES), str(sample_dir() / "test.tsv"),
                     "-o", str(tmp_path / "hyp.tsv")])
    assert code == 0
    err = capsys.readouterr().err
    assert "(default)" not in err.split("decoding:")[1]       # every knob comes from decoder.json now
    hyps = dict(row.split("\t", 1) for row in (tmp_path / "hyp.tsv").read_text(encoding="utf-8").splitlines())
    score = score_corpus([(l.id, l.text) for l in lines], hyps, "fr")
    assert score.wer == pytest.approx(table["lexicon + LM"].wer) and score.cer == pytest.approx(table["lexicon + LM"].cer)

    again = []
    tune(model, lines, lexicon=lexicon, lm=lm, lang="fr", modes=["character loop", "lexicon + LM"], rounds=1,
         log=again.append)
    assert re.search(r"; 0 settings decoded \(\d+ reused\)", again[-1])


def test_the_search_follows_the_rate_it_is_told_to_minimise(tmp_path):
    # a planted surface: the CER is lowest at word penalty -20, the WER at -5; the coordinate
    # search walks to the minimum of the rate it minimises first
    from hybrid_hwr.tune import Point, Tuner

    class Planted(Tuner):
        def __init__(self, objective):
            self.objective, self.fine = objective, False

        def evaluate(self, settings):
            x = settings.word_penalty
            return Point(settings, 0.1 + 1e-4 * (x + 20) ** 2, 0.3 + 1e-4 * (x + 5) ** 2, self.objective)

    start = DecoderSettings(lm_weight=1.0, word_penalty=-10.0, glue_penalty=0.0)
    for objective, optimum in (("cer", -20.0), ("wer", -5.0)):
        best = Planted(objective).coordinate_search(start, ("word_penalty",), rounds=2)
        assert best.settings.word_penalty == optimum


@pytest.mark.parametrize("objective", ["cer", "wer"])
def test_the_objective_rate_is_the_lowest_of_every_point_the_search_decoded(setup, tmp_path, objective):
    model, lexicon, lm = setup
    fresh = tmp_path / "model"
    shutil.copytree(model, fresh, ignore=shutil.ignore_patterns("decoder.json", "tune"))
    lines = read_split(sample_dir() / "test.tsv", limit=N_LINES)
    best = tune(fresh, lines, lexicon=lexicon, lm=lm, lang="fr", modes=["lexicon + LM"], rounds=1,
                log=lambda _: None, objective=objective)["table"]["lexicon + LM"]
    points = [json.loads(row) for row in (fresh / "tune" / "points.jsonl").read_text().splitlines()]
    assert len(points) > 5
    assert getattr(best, objective) == min(p[objective] for p in points)
    with pytest.raises(HwrError, match="objective must be one of wer, cer"):
        tune(fresh, lines, lexicon=lexicon, lm=lm, lang="fr", modes=["lexicon + LM"], objective="ser")


def test_tune_refuses_a_mode_without_its_files(setup, capsys):
    model, lexicon, _ = setup
    code = cli.main(["tune", "--model", str(model), "--valid", str(sample_dir() / "test.tsv"), "--limit", "2",
                     "--lexicon", str(lexicon), "--modes", "lexicon_lm"])
    assert code == 1 and "mode 'lexicon + LM' needs files" in capsys.readouterr().err


def test_candidates_move_around_the_value():
    assert _candidates("lm_weight", 6.0, 2) == [2.6667, 4.0, 6.0, 9.0, 13.5]
    assert _candidates("word_penalty", -10.0, 1) == [-15.0, -10.0, -5.0]
    assert _candidates("prior_scale", 0.2, 2) == [0.0, 0.2, 0.4, 0.6]


def _planted_ctc_outputs(texts, chars, seed=0):
    """Log-probabilities with the right character on top for most frames, a wrong one on the
    others (the right one second there): errors a lexicon can mend."""
    rng = np.random.default_rng(seed)
    outputs = {}
    for line_id, text in texts.items():
        rows = []
        for char in text:
            for column in (1 + chars.index(char), 0):        # the character, then a blank
                row = np.full(len(chars) + 1, -8.0)
                row[column] = -0.1
                if column and rng.uniform() < 0.15:            # a confusion: another character wins
                    row[1 + int(rng.integers(len(chars)))] = -0.05
                rows.append(row)
        x = np.array(rows)
        outputs[line_id] = (x - np.log(np.exp(x).sum(axis=1, keepdims=True))).astype(np.float32)
    return outputs


def test_tune_ctc_outputs_writes_settings_that_decode_reproduces(setup, tmp_path, capsys):
    from hybrid_hwr.neural import greedy_decode

    _, lexicon, lm = setup
    lines = read_split(sample_dir() / "test.tsv", limit=3)
    texts = {line.id: line.text for line in lines}
    chars = sorted(set("".join(texts.values())))
    alphabet = tmp_path / "alphabet.txt"
    alphabet.write_text("\n".join(["<blank>"] + ["<space>" if c == " " else c for c in chars]) + "\n", encoding="utf-8")
    emissions = tmp_path / "valid.npz"
    outputs = _planted_ctc_outputs(texts, chars)
    np.savez(emissions, **outputs)
    greedy = score_corpus(list(texts.items()), {i: greedy_decode(x, chars) for i, x in outputs.items()}, "fr")
    assert greedy.wer > 0.3           # the confusions are real errors
    code = cli.main(["tune", "--ctc", str(alphabet), "--emissions", str(emissions), "--valid",
                     str(sample_dir() / "test.tsv"), "--limit", "3", "--lexicon", str(lexicon),
                     "--lm", str(lm), "--lang", "fr", "--modes", "lexicon_lm", "--rounds", "1"])
    assert code == 0
    out = capsys.readouterr().out
    cer, wer = map(float, re.search(r"^lexicon \+ LM\s+CER\s+([\d.]+) %\s+WER\s+([\d.]+) %", out, re.M).groups())
    assert wer < 100 * greedy.wer / 2
    written = json.loads((tmp_path / "decoder.json").read_text())
    assert written["lexicon"] == str(lexicon) and written["glue_penalty"] == 0.0

    code = cli.main(["decode", "--emissions", str(emissions), "--ctc", str(alphabet), "--model", str(tmp_path),
                     "-o", str(tmp_path / "hyp.tsv")])
    assert code == 0
    hyps = dict(row.split("\t", 1) for row in (tmp_path / "hyp.tsv").read_text(encoding="utf-8").splitlines())
    score = score_corpus(list(texts.items()), hyps, "fr")
    assert 100 * score.wer == pytest.approx(wer, abs=0.006) and 100 * score.cer == pytest.approx(cer, abs=0.006)


def test_tune_ctc_options_go_together(setup, tmp_path, capsys):
    code = cli.main(["tune", "--ctc", str(tmp_path / "a.txt"), "--valid", str(sample_dir() / "test.tsv")])
    assert code == 1 and "--ctc ALPHABET.txt and --emissions FILE.npz go together" in capsys.readouterr().err
    code = cli.main(["tune", "--valid", str(sample_dir() / "test.tsv")])
    assert code == 1 and "tune needs --model DIR" in capsys.readouterr().err


def test_default_tuning_beam_follows_the_emission_type(setup, tmp_path):
    # GMM log-likelihoods need a wider beam than scaled likelihoods: tune's default (and so the
    # beam it writes for decode) is 500 for a GMM-HMM, 150 for the MLP-HMM
    from hybrid_hwr.train import TrainConfig, train_gmm_hmm
    from hybrid_hwr.tune import DEFAULT_TUNE_BEAM, TUNE_BEAMS

    _, lexicon, lm = setup
    gmm = tmp_path / "gmm"
    train_gmm_hmm(read_split(sample_dir() / "train.tsv", limit=24), gmm,
                  TrainConfig(states=4, mixtures=2, iterations=2), log=lambda _: None)
    lines = read_split(sample_dir() / "test.tsv", limit=2)
    tune(gmm, lines, lexicon=lexicon, lm=lm, lang="fr", modes=["lexicon + LM"], rounds=1, log=lambda _: None)
    assert json.loads((gmm / "decoder.json").read_text())["beam"] == TUNE_BEAMS["gmm"] == 500
    mlp = tmp_path / "mlp"
    shutil.copytree(setup[0], mlp, ignore=shutil.ignore_patterns("decoder.json"))
    tune(mlp, lines, lexicon=lexicon, lm=lm, lang="fr", modes=["lexicon + LM"], rounds=1, log=lambda _: None)
    assert json.loads((mlp / "decoder.json").read_text())["beam"] == DEFAULT_TUNE_BEAM == 150


def test_tune_from_an_emissions_file_finds_what_tuning_from_images_finds(setup, tmp_path, capsys):
    # scores written at another prior scale than the model's are moved to each point's own, so
    # the search over a file (e.g. an ensemble's average) is the search over the images
    model, lexicon, lm = setup
    from_images, from_file = tmp_path / "images", tmp_path / "file"
    for copy in (from_images, from_file):
        shutil.copytree(model, copy, ignore=shutil.ignore_patterns("decoder.json", "tune"))
    lines = read_split(sample_dir() / "test.tsv", limit=N_LINES)
    reference = tune(from_images, lines, lexicon=lexicon, lm=lm, lang="fr", modes=["lexicon + LM"], rounds=1,
                     log=lambda _: None)["table"]["lexicon + LM"]
    emissions = tmp_path / "valid.npz"
    assert cli.main(["emissions", "--model", str(from_file), "--prior-scale", "0.4", "--limit", str(N_LINES),
                     str(sample_dir() / "test.tsv"), "-o", str(emissions)]) == 0
    args = ["tune", "--model", str(from_file), "--emissions", str(emissions), "--valid", str(sample_dir() / "test.tsv"),
            "--limit", str(N_LINES), "--lexicon", str(lexicon), "--lm", str(lm), "--lang", "fr", "--modes",
            "lexicon_lm", "--rounds", "1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert f"emission scores of {N_LINES} validation lines from {emissions}" in out
    cer, wer = map(float, re.search(r"^lexicon \+ LM\s+CER\s+([\d.]+) %\s+WER\s+([\d.]+) %", out, re.M).groups())
    assert (cer, wer) == (round(100 * reference.cer, 2), round(100 * reference.wer, 2))
    written = DecoderSettings.load(from_file)
    assert (written.lm_weight, written.word_penalty, written.prior_scale) == (
        reference.settings.lm_weight, reference.settings.word_penalty, reference.settings.prior_scale)

    # a file that does not say which prior scale its scores have: taken as they are, kappa not searched
    with np.load(emissions) as npz:
        arrays = {name: npz[name] for name in npz.files if not name.startswith("__")}
    bare = tmp_path / "bare.npz"
    np.savez(bare, **arrays)
    (from_file / "decoder.json").unlink()
    assert cli.main(args[:4] + [str(bare)] + args[5:]) == 0
    out = capsys.readouterr().out
    assert f"the prior scale is not tuned: {bare} does not record" in out
    # the scores were written at 0.4: taken as they are, the search finds other points than above
    from hybrid_hwr.model import load_model
    assert DecoderSettings.load(from_file).prior_scale == load_model(from_file).emission.prior_scale
    points = (from_file / "tune" / "points.jsonl").read_text().splitlines()
    contexts = {json.loads(json.loads(row)["key"])["model"] for row in points}
    assert len(contexts) == 2          # two files, two sets of points: none reused across them


def test_tune_from_emissions_checks_the_states_and_the_lines(setup, tmp_path, capsys):
    model, lexicon, _ = setup
    wrong = tmp_path / "wrong.npz"
    ids = [line.id for line in read_split(sample_dir() / "test.tsv", limit=2)]
    np.savez(wrong, **{i: np.zeros((30, 7), np.float32) for i in ids})
    args = ["tune", "--model", str(model), "--valid", str(sample_dir() / "test.tsv"), "--limit", "2",
            "--lexicon", str(lexicon), "--modes", "lexicon", "--emissions"]
    assert cli.main(args + [str(wrong)]) == 1
    captured = capsys.readouterr()
    assert "has 7 states, the model has" in captured.out and "no array for any of the 2 validation lines" in captured.err
    assert cli.main(args + [str(tmp_path / "missing.npz")]) == 1
    assert "no such emissions file" in capsys.readouterr().err


def test_averaged_emissions_keep_the_mean_prior_scale_only_when_every_file_records_one(setup, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    model, _, _ = setup
    files = []
    for kappa in ("0.4", "1"):
        files.append(tmp_path / f"k{kappa}.npz")
        assert cli.main(["emissions", "--model", str(model), "--prior-scale", kappa, "--limit", "2",
                         str(sample_dir() / "test.tsv"), "-o", str(files[-1])]) == 0
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "average_emissions.py"
    average = tmp_path / "avg.npz"
    done = subprocess.run([sys.executable, str(recipe), *map(str, files), "-o", str(average)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with np.load(average) as avg, np.load(files[0]) as a, np.load(files[1]) as b:
        assert avg["__prior_scale__"][0] == pytest.approx(0.7)
        line = [name for name in a.files if not name.startswith("__")][0]
        assert np.allclose(avg[line], (a[line].astype(np.float64) + b[line]) / 2, atol=1e-5)
        bare = {name: a[name] for name in a.files if not name.startswith("__")}
    np.savez(tmp_path / "bare.npz", **bare)
    done = subprocess.run([sys.executable, str(recipe), str(files[1]), str(tmp_path / "bare.npz"), "-o",
                           str(average)], capture_output=True, text=True)
    assert done.returncode == 0 and "__prior_scale__ is not in every file" in done.stderr
    with np.load(average) as avg:
        assert "__prior_scale__" not in avg.files and len(avg.files) == 2
