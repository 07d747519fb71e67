"""hybrid-hwr tune on bundled lines: it writes decoder.json, decode with it reproduces the
validation figure tune reported, it is not worse than the character loop, and it resumes."""

import json
import re
import shutil

import pytest

from hybrid_hwr import cli
from hybrid_hwr.data import read_split, sample_dir
from hybrid_hwr.demo import DecoderSettings, default_model_dir
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


def test_tune_refuses_a_mode_without_its_files(setup, capsys):
    model, lexicon, _ = setup
    code = cli.main(["tune", "--model", str(model), "--valid", str(sample_dir() / "test.tsv"), "--limit", "2",
                     "--lexicon", str(lexicon), "--modes", "lexicon_lm"])
    assert code == 1 and "mode 'lexicon + LM' needs files" in capsys.readouterr().err


def test_candidates_move_around_the_value():
    assert _candidates("lm_weight", 6.0, 2) == [2.6667, 4.0, 6.0, 9.0, 13.5]
    assert _candidates("word_penalty", -10.0, 1) == [-15.0, -10.0, -5.0]
    assert _candidates("prior_scale", 0.2, 2) == [0.0, 0.2, 0.4, 0.6]
