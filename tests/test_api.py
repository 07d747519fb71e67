"""The notebook face: hybrid_hwr.train -> model.align / model.recognizer / model.save -> load_model,
on the bundled sample, and the top-level names."""

import numpy as np
import pytest

import hybrid_hwr
from hybrid_hwr.data import load_image, read_split, sample_dir
from hybrid_hwr.errors import HwrError
from hybrid_hwr.metrics import score_corpus
from hybrid_hwr.text import tokenize
from hybrid_hwr.train import TrainConfig, train_gmm_hmm

OPTIONS = dict(states=4, mixtures=2, iterations=2)


@pytest.fixture(scope="module")
def lines():
    return read_split(sample_dir() / "train.tsv", limit=24)


@pytest.fixture(scope="module")
def model(lines):
    # the README's notebook example, on fewer lines
    return hybrid_hwr.train(lines, **OPTIONS, log=lambda _: None)


def test_train_needs_no_directory_and_trains_what_the_command_line_trains(model, lines, tmp_path):
    assert isinstance(model, hybrid_hwr.HwrModel) and model.directory is None
    on_disk = train_gmm_hmm(lines, tmp_path / "run", TrainConfig(**OPTIONS), log=lambda _: None)
    for name, value in model.emission.save()[0].items():
        np.testing.assert_array_equal(value, on_disk.emission.save()[0][name])
    np.testing.assert_array_equal(model.transitions.log_next, on_disk.transitions.log_next)


def test_notebook_example_decodes_its_training_lines_better_with_a_lexicon(model, lines, tmp_path):
    words = sorted({w for line in lines for w in tokenize(line.text, "fr")})
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    recognizer = model.recognizer(hybrid_hwr.DecoderSettings(lexicon=tmp_path / "words.txt", lang="fr", nbest=3))
    loop = model.recognizer()     # no decoder.json: the character loop
    sample = lines[:4]
    hyps = [recognizer.decode_image(load_image(line.image_path)) for line in sample]
    loop_hyps = [loop.decode_image(load_image(line.image_path)) for line in sample]
    refs = [(line.id, line.text) for line in sample]
    with_lexicon = score_corpus(refs, [(line.id, recognizer.display_text(h)) for line, h in zip(sample, hyps)], "fr")
    without = score_corpus(refs, [(line.id, loop.display_text(h)) for line, h in zip(sample, loop_hyps)], "fr")
    assert with_lexicon.cer < without.cer and with_lexicon.wer < 1.0
    assert all(1 <= len(h.nbest) <= 3 and all(w.text in words for w in h.words) for h in hyps)


def test_save_and_load_model_keep_model_and_decoder_settings(model, lines, tmp_path):
    words = sorted({w for line in lines for w in tokenize(line.text, "fr")})
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    settings = hybrid_hwr.DecoderSettings(lexicon=tmp_path / "m" / "words.txt", word_penalty=-20.0, lang="fr")
    model.save(tmp_path / "m", settings)
    assert (tmp_path / "m" / "decoder.json").read_text(encoding="utf-8").count('"words.txt"') == 1  # relative
    loaded = hybrid_hwr.load_model(tmp_path / "m")
    assert loaded.decoder_settings() == settings
    gray = load_image(lines[1].image_path)
    a = model.recognizer(settings).decode_image(gray)
    b = loaded.recognizer().decode_image(gray)
    assert (a.text, a.score) == (b.text, b.score) and a.text


def test_align_places_the_words_of_the_transcription_in_order(model, lines):
    line = lines[2]
    gray = load_image(line.image_path)
    result = model.align(gray, line.text)
    assert [w.text for w in result.words] == line.text.split()
    assert np.isfinite(result.score) and len(result.states) == result.n_frames
    starts = [w.first_frame for w in result.words]
    assert starts == sorted(starts) and all(w.first_frame <= w.last_frame for w in result.words)
    assert all(0 <= w.x_start < w.x_end <= gray.shape[1] + model.frontend.features.width for w in result.words)
    assert model.align(line.image_path, line.text).score == result.score     # a path works too
    with pytest.raises(HwrError):
        model.align(gray, "Ω")      # not in the model's alphabet


def test_top_level_names_and_the_default_recognizer():
    assert callable(hybrid_hwr.train) and hybrid_hwr.train.TrainConfig is TrainConfig
    recognizer, settings = hybrid_hwr.load_default_recognizer()
    assert isinstance(recognizer, hybrid_hwr.Recognizer) and recognizer.settings.lexicon == settings.lexicon
    line = read_split(sample_dir() / "test.tsv", limit=1)[0]
    gray = load_image(line.image_path)
    direct = hybrid_hwr.load_model(hybrid_hwr.decode.default_model_dir()).recognizer()
    assert direct.display_text(direct.decode_image(gray)) == settings.display_text(recognizer.decode_image(gray))
    with pytest.raises(AttributeError):
        hybrid_hwr.no_such_name


def test_fit_reads_split_files_and_checks_its_options(tmp_path):
    with pytest.raises(HwrError, match="GMM-HMM training"):
        hybrid_hwr.HwrModel.fit(sample_dir() / "train.tsv", mixtures_per_state=3)
    with pytest.raises(HwrError, match="init_model"):
        hybrid_hwr.train(sample_dir() / "train.tsv", emission="mlp")


def test_the_readme_notebook_example_runs(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").splitlines()
    blocks, block = [], []        # the indented code blocks of the README
    for row in readme + ["end"]:
        if row and not row.startswith("    "):
            if block:
                blocks.append("\n".join(r[4:] for r in block).strip())
            block = []
        else:
            block.append(row)
    code = next(b for b in blocks if "hybrid_hwr.train(" in b)
    assert "hybrid_hwr.train(" in code and "model.recognizer(" in code and "model.save(" in code
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)      # noqa: S102 (the README's own example)
    hyp, recognizer = namespace["hyp"], namespace["recognizer"]
    assert hyp.words and all(w.text in recognizer.words for w in hyp.words)
    printed = capsys.readouterr().out
    assert recognizer.display_text(hyp) in printed
    saved = hybrid_hwr.load_model(tmp_path / "sample_gmm")
    for name, value in namespace["model"].emission.save()[0].items():
        np.testing.assert_array_equal(saved.emission.save()[0][name], value)
