"""hybrid-hwr demo: end to end on a tiny model trained on the bundled sample, the HTML page,
the decoder.json layout of a model directory, and one-line errors."""

import json
import math
import re
import shutil
from html.parser import HTMLParser

import pytest

from hybrid_hwr import cli, decode, demo
from hybrid_hwr.data import load_image, read_split, sample_dir
from hybrid_hwr.errors import HwrError
from hybrid_hwr.decode import DEFAULT_UNK_BEAM, DEFAULT_UNK_MAX_ACTIVE
from hybrid_hwr.demo import DecoderSettings
from hybrid_hwr.metrics import score_corpus
from hybrid_hwr.text import detokenize, tokenize
from hybrid_hwr.train import TrainConfig, train_gmm_hmm

N_LINES = 3


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A GMM-HMM trained in a few seconds on 20 bundled training lines (no decoder.json)."""
    out = tmp_path_factory.mktemp("tiny") / "model"
    lines = read_split(sample_dir() / "train.tsv", limit=20)
    train_gmm_hmm(lines, out, TrainConfig(states=4, mixtures=2, iterations=2), log=lambda _: None)
    shutil.rmtree(out / "cache", ignore_errors=True)
    return out


@pytest.fixture(scope="module")
def test_lines():
    return read_split(sample_dir() / "test.tsv", limit=N_LINES)


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def printed_pairs(out: str) -> list[tuple[str, str, str]]:
    """(id, ref, hyp) of every line block the demo printed."""
    return re.findall(r"^(\S+)\n  ref: (.*)\n  hyp: (.*)$", out, flags=re.M)


def printed_rate(out: str, name: str) -> float:
    match = re.search(rf"^{name}\s+([0-9.]+) %", out, flags=re.M)
    assert match, out
    return float(match.group(1))


class PageParser(HTMLParser):
    """Images and word boxes (left/width in percent) of each line block of index.html."""

    def __init__(self):
        super().__init__()
        self.images, self.boxes, self.current = [], {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "div" and "line" in classes:
            self.current = attrs["id"]
            self.boxes[self.current] = []
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "div" and "word" in classes:
            style = dict(part.split(":") for part in attrs["style"].split(";"))
            self.boxes[self.current].append(
                (attrs["data-word"], float(style["left"].rstrip("%")), float(style["width"].rstrip("%"))))


def test_demo_end_to_end(tiny_model, test_lines, tmp_path, capsys):
    out_dir = tmp_path / "page"
    code, out, err = run(capsys, "demo", "--model", tiny_model, "--limit", N_LINES, "--jobs", 2,
                         "--output", out_dir)
    assert code == 0, err
    pairs = printed_pairs(out)
    assert [(i, r) for i, r, _ in pairs] == [(line.id, line.text) for line in test_lines]
    # the printed rates are the corpus rates of the printed lines (errors summed, not averaged),
    # tokenised with the model's language like `evaluate`
    lang = DecoderSettings.load(tiny_model).lang
    score = score_corpus([(i, r) for i, r, _ in pairs], [(i, h) for i, _, h in pairs], lang)
    assert printed_rate(out, "CER") == pytest.approx(100 * score.cer, abs=0.006)
    assert printed_rate(out, "WER") == pytest.approx(100 * score.wer, abs=0.006)
    assert 0 < score.cer  # a 20-line model does not read unseen writers perfectly
    assert re.search(r"^time: [0-9.]+ s to decode 3 lines", out, flags=re.M)

    # the page: every image copied and referenced, one box per hypothesis word, inside the image
    page = PageParser()
    page.feed((out_dir / "index.html").read_text(encoding="utf-8"))
    assert page.images == [f"lines/{line.id}.png" for line in test_lines]
    for line in test_lines:
        assert (out_dir / "lines" / f"{line.id}.png").read_bytes() == line.image_path.read_bytes()
    recognizer, _ = demo.load_recognizer(tiny_model)
    for line in test_lines:
        hyp = recognizer.decode_image(load_image(line.image_path))
        boxes = page.boxes[line.id]
        assert [word for word, _, _ in boxes] == [w.text for w in hyp.words]
        assert " ".join(w.text for w in hyp.words) == hyp.text
        width = load_image(line.image_path).shape[1]
        for (word, left, size), w in zip(boxes, hyp.words):
            assert 0 <= left and size >= 0 and left + size <= 100.001
            assert left == pytest.approx(100 * max(w.x_start, 0) / width, abs=0.01)
        lefts = [left for _, left, _ in boxes]
        assert lefts == sorted(lefts)  # words in reading order


def write_uniform_arpa(path, words):
    """A uniform unigram ARPA over ``words`` (plus <s>, </s>, <unk>), with the one bigram KenLM requires."""
    vocab = ["<unk>", "<s>", "</s>"] + list(words)
    logp = -math.log10(len(vocab) - 1)
    rows = [f"{-99.0 if w == '<s>' else logp:.6f}\t{w}\t0.0" for w in vocab]
    path.write_text("\\data\\\nngram 1=%d\nngram 2=1\n\n\\1-grams:\n%s\n\n\\2-grams:\n%.6f\t<s> %s\n\n\\end\\\n"
                    % (len(vocab), "\n".join(rows), logp, words[0]), encoding="utf-8")


def test_decoder_json_next_to_the_model(tiny_model, test_lines, tmp_path, capsys):
    """Lexicon and LM named by decoder.json are read next to it; lexicon tokens are joined back into text."""
    model_dir = tmp_path / "with_lexicon"
    shutil.copytree(tiny_model, model_dir)
    words = sorted({tok for line in read_split(sample_dir() / "test.tsv") for tok in tokenize(line.text, "fr")})
    (model_dir / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    write_uniform_arpa(model_dir / "words.arpa", words)
    (model_dir / "decoder.json").write_text(json.dumps(
        {"lexicon": "words.txt", "lm": "words.arpa", "lm_weight": 2.0, "word_penalty": -1.0,
         "char_penalty": 0.0, "lang": "fr"}), encoding="utf-8")

    settings = demo.DecoderSettings.load(model_dir)
    assert settings.lexicon == model_dir / "words.txt" and settings.lm == model_dir / "words.arpa"
    assert settings.lm_weight == 2.0 and settings.word_penalty == -1.0 and settings.lang == "fr"

    code, out, err = run(capsys, "demo", "--model", model_dir, "--limit", 2, "--jobs", 1)
    assert code == 0, err
    assert "lexicon words.txt + LM words.arpa (weight 2)" in out
    recognizer, _ = demo.load_recognizer(model_dir)
    assert recognizer.lm_weight == 2.0 and recognizer.word_penalty == -1.0
    for (line_id, _, hyp_text), line in zip(printed_pairs(out), test_lines):
        hyp = recognizer.decode_image(load_image(line.image_path))
        assert all(w.text in words for w in hyp.words)
        assert hyp_text == detokenize(hyp.text.split(), "fr")
    # overrides replace stored settings; None keeps them
    recognizer, settings = demo.load_recognizer(model_dir, lm_weight=0.5, word_penalty=None)
    assert recognizer.lm_weight == 0.5 and recognizer.word_penalty == -1.0
    # the open-vocabulary pruning knobs: decoder defaults unless given
    assert (recognizer.unk_beam, recognizer.unk_max_active) == (DEFAULT_UNK_BEAM, DEFAULT_UNK_MAX_ACTIVE)
    recognizer, _ = demo.load_recognizer(model_dir, unk_beam=40.0, unk_max_active=77)
    assert (recognizer.unk_beam, recognizer.unk_max_active) == (40.0, 77)


@pytest.mark.parametrize("content, message", [
    ('{"lexicon": "nowhere.txt"}', "lexicon file"),
    ('{"lm_wieght": 3}', "unknown setting 'lm_wieght'"),
    ('{"lm_weight": "high"}', "lm_weight must be a finite number"),
    ('{"lang": "de"}', "lang must be"),
    ('{"unk_max_active": "many"}', "unk_max_active must be a finite number"),
    ('{"unk_beam": 0}', "unk beam must be > 0"),
    ('{"prior_scale": -1}', "prior_scale must be >= 0"),
    ('{"prior_scale": 0.5}', "applies to hybrid MLP models only; this model has gmm emissions"),
    ("[1, 2", "not a readable JSON file"),
])
def test_bad_decoder_json_is_one_line(tiny_model, tmp_path, capsys, content, message):
    model_dir = tmp_path / "bad"
    shutil.copytree(tiny_model, model_dir)
    (model_dir / "decoder.json").write_text(content, encoding="utf-8")
    code, out, err = run(capsys, "demo", "--model", model_dir, "--limit", 1)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("hybrid-hwr: error: ") and message in err


def test_missing_default_model_is_one_line(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "models" / "default"
    monkeypatch.setattr(decode, "default_model_dir", lambda: missing)   # where the decoder directories live
    code, out, err = run(capsys, "demo", "--limit", 1)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("hybrid-hwr: error: no default model in ")
    assert str(missing) in err
    with pytest.raises(HwrError, match="no default model"):
        demo.load_default_recognizer()


def test_missing_model_dir_is_one_line(tmp_path, capsys):
    code, out, err = run(capsys, "demo", "--model", tmp_path / "nope", "--limit", 1)
    assert code == 1 and err.count("\n") == 1 and "not a directory" in err


def test_unset_weights_take_the_calibrated_values_of_the_model_kind(tiny_model, tmp_path):
    """A GMM model and an MLP model without decoder.json get the weights of their own kind."""
    from hybrid_hwr.model import load_model

    words = sorted({tok for line in read_split(sample_dir() / "test.tsv") for tok in tokenize(line.text, "fr")})
    (tmp_path / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    write_uniform_arpa(tmp_path / "words.arpa", words)
    gmm = load_model(tiny_model)
    with_lm = DecoderSettings(lexicon=tmp_path / "words.txt", lm=tmp_path / "words.arpa")
    lexicon_only = DecoderSettings(lexicon=tmp_path / "words.txt")
    assert with_lm.mode == "lexicon + LM" and lexicon_only.mode == "lexicon"
    for settings, mode in ((with_lm, "lexicon + LM"), (lexicon_only, "lexicon")):
        recognizer = settings.recognizer(gmm)
        expected = demo.CALIBRATED[("gmm", mode)]
        assert recognizer.word_penalty == expected["word_penalty"]
        assert recognizer.glue_penalty == expected["glue_penalty"]
        if mode == "lexicon + LM":
            assert recognizer.lm_weight == expected["lm_weight"]
    mlp = settings_mlp = with_lm.calibrated("mlp")
    assert (mlp.lm_weight, mlp.word_penalty) == (demo.CALIBRATED[("mlp", "lexicon + LM")]["lm_weight"],
                                                demo.CALIBRATED[("mlp", "lexicon + LM")]["word_penalty"])
    # a value that is given is kept, and the settings line says which values are defaults
    given = DecoderSettings(lexicon=tmp_path / "words.txt", lm=tmp_path / "words.arpa", lm_weight=3.0)
    assert given.calibrated("gmm").lm_weight == 3.0
    line = given.describe("gmm")
    assert "(weight 3)" in line and "word penalty -40 (default)" in line
    assert settings_mlp.describe() == settings_mlp.describe("mlp")   # nothing left to fill in


def test_default_model_without_decoder_json_gives_sensible_lm_decoding(tmp_path, capsys):
    """The shipped MLP model copied without decoder.json, decoded with the French lexicon and
    LM on default settings: far from the inserted-one-letter-word output of weight 1 / penalty 0,
    and better than its own character loop."""
    source = demo.default_model_dir()
    model_dir = tmp_path / "no_settings"
    model_dir.mkdir()
    for name in ("model.json", json.loads((source / "model.json").read_text())["arrays_file"]):
        shutil.copy(source / name, model_dir / name)
    from hybrid_hwr.resources import path

    lines = read_split(sample_dir() / "test.tsv", limit=12)
    refs = {line.id: line.text for line in lines}
    common = ["decode", "--model", model_dir, "--limit", 12, "--jobs", 1, sample_dir() / "test.tsv"]
    code, out_lm, err = run(capsys, *common, "--lexicon", path("fr-50k.txt"), "--lm", path("fr-3gram.arpa.gz"),
                            "--lang", "fr")
    assert code == 0, err
    assert "(weight 6 (default)), word penalty -10 (default)" in err
    code, out_loop, err = run(capsys, *common)
    assert code == 0, err
    with_lm = score_corpus(refs, dict(l.split("\t", 1) for l in out_lm.splitlines()), lang="fr")
    loop = score_corpus(refs, dict(l.split("\t", 1) for l in out_loop.splitlines()), lang="fr")
    assert with_lm.wer < 0.8 and with_lm.wer < loop.wer and with_lm.cer < loop.cer
