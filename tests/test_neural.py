"""The CRNN-CTC reference network: training, determinism, its outputs through decode --ctc.

PyTorch is an optional extra (hybrid_hwr[neural]): the tests that train or run the network
are skipped without it; the error a user without it gets is tested either way.
"""

import json
import sys

import numpy as np
import pytest

from hybrid_hwr.cli import main
from hybrid_hwr.ctc import BLANK_SYMBOL, read_alphabet
from hybrid_hwr.data import read_split
from hybrid_hwr.neural import (ALPHABET_FILE, CrnnConfig, TrainSettings, alphabet_lines, greedy_decode, needed_frames,
                               write_alphabet)

# small enough to train in seconds, the default input height (narrower lines would be too short)
TINY = CrnnConfig(height=32, channels=(4, 8, 8, 8), hidden=16, dropout=0.1)


def needs_torch():
    return pytest.importorskip("torch", reason="PyTorch (the optional hybrid_hwr[neural] extra) is not installed")


@pytest.fixture
def few_lines(sample):
    lines = read_split(sample / "train.tsv")
    return lines[:8], lines[8:11]


def test_alphabet_file_round_trip(tmp_path):
    chars = [" ", "'", "a", "é", "É", "<", "1"]
    path = tmp_path / "alphabet.txt"
    write_alphabet(path, chars)
    assert path.read_text(encoding="utf-8").splitlines() == alphabet_lines(chars)
    assert path.read_text(encoding="utf-8").splitlines()[:2] == ["<blank>", "<space>"]
    assert read_alphabet(path) == [BLANK_SYMBOL] + chars


def test_greedy_decoding_merges_repeats_and_drops_blanks():
    chars = ["a", "b", " "]
    best = [0, 1, 1, 0, 1, 2, 2, 3, 0, 2]       # - a a - a b b _ - b
    logp = np.log(np.full((len(best), 4), 0.01))
    logp[np.arange(len(best)), best] = 0.0
    assert greedy_decode(logp, chars) == "aab b"
    assert needed_frames(np.array([1, 1, 2, 2, 2])) == 8
    assert needed_frames(np.array([1, 2, 3])) == 3


def test_without_torch_one_clear_error_line(monkeypatch, capsys, sample):
    monkeypatch.setitem(sys.modules, "torch", None)      # import torch now raises ImportError
    code = main(["crnn", "train", str(sample / "train.tsv"), "--valid", str(sample / "test.tsv"), "-o", "/nonexistent/x"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and "pip install 'hybrid_hwr[neural]'" in err[0] and err[0].startswith("hybrid-hwr: error:")


def test_bad_height_and_missing_model_are_one_line_errors(tmp_path, capsys, sample):
    needs_torch()
    code = main(["crnn", "train", str(sample / "train.tsv"), "--valid", str(sample / "test.tsv"), "--height", "30",
                 "-o", str(tmp_path / "m")])
    assert code == 1 and "multiple of 16" in capsys.readouterr().err
    code = main(["crnn", "logits", str(tmp_path / "nothing"), str(sample / "test.tsv"), "-o", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "no such CRNN model folder" in err[0]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "crnn.pt").write_bytes(b"not a model")
    code = main(["crnn", "logits", str(tmp_path / "junk"), str(sample / "test.tsv"), "-o", str(tmp_path / "x.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "cannot read the CRNN model" in err[0]


def test_training_lowers_the_loss_and_is_deterministic_for_a_seed(tmp_path, few_lines):
    needs_torch()
    from hybrid_hwr.neural import load_crnn, train_crnn

    train, valid = few_lines
    settings = TrainSettings(max_epochs=8, batch_size=4, learning_rate=3e-3, patience=100, seed=3)

    def run(name, seed, epochs=8):
        out = tmp_path / name
        train_crnn(train, valid, out, TINY, TrainSettings(**{**settings.__dict__, "seed": seed, "max_epochs": epochs}),
                   log=lambda _: None)
        info = json.loads((out / "crnn.json").read_text())
        return [r["train_loss"] for r in info["history"]], load_crnn(out)

    losses, model = run("a", 3)
    assert len(losses) == 8 and all(np.isfinite(losses))
    assert losses[-1] < 0.8 * losses[0]
    again, model_again = run("b", 3)
    assert again == losses
    weights, weights_again = model.network.state_dict(), model_again.network.state_dict()
    assert all(np.array_equal(weights[k].numpy(), weights_again[k].numpy()) for k in weights)
    other, _ = run("c", 4, epochs=2)
    assert other != losses[:2]


def test_resume_continues_the_same_run(tmp_path, few_lines):
    needs_torch()
    from hybrid_hwr.neural import train_crnn

    train, valid = few_lines
    quiet = lambda _: None  # noqa: E731
    whole = TrainSettings(max_epochs=4, batch_size=4, patience=100, seed=1)
    train_crnn(train, valid, tmp_path / "whole", TINY, whole, log=quiet)
    train_crnn(train, valid, tmp_path / "parts", TINY, TrainSettings(**{**whole.__dict__, "max_epochs": 2}), log=quiet)
    train_crnn(train, valid, tmp_path / "parts", TINY, whole, resume=True, log=quiet)
    history = [json.loads((tmp_path / d / "crnn.json").read_text())["history"] for d in ("whole", "parts")]
    assert [r["train_loss"] for r in history[0]] == [r["train_loss"] for r in history[1]]


def test_cli_train_logits_then_decode_ctc(tmp_path, sample, capsys):
    needs_torch()
    model = tmp_path / "crnn"
    code = main(["crnn", "train", str(sample / "train.tsv"), "--limit", "6", "--valid", str(sample / "test.tsv"),
                 "--epochs", "2", "--hidden", "16", "-o", str(model)])
    assert code == 0
    assert (model / "crnn.pt").is_file() and (model / "checkpoint.pt").is_file()
    info = json.loads((model / "crnn.json").read_text())
    assert len(info["history"]) == 2 and info["parameters"] > 0
    (model / ALPHABET_FILE).unlink()
    logits = tmp_path / "test.npz"
    greedy = tmp_path / "greedy.tsv"
    assert main(["crnn", "logits", str(model), str(sample / "test.tsv"), "--limit", "3", "-o", str(logits),
                 "--greedy", str(greedy)]) == 0
    columns = read_alphabet(model / ALPHABET_FILE)              # written again by logits
    arrays = dict(np.load(logits))
    assert sorted(arrays) == sorted(line.id for line in read_split(sample / "test.tsv", limit=3))
    for x in arrays.values():
        assert x.dtype == np.float32 and x.ndim == 2 and x.shape[1] == len(columns)
        assert np.allclose(np.exp(x).sum(axis=1), 1.0, atol=1e-4)    # log-probabilities
    capsys.readouterr()
    hyp = tmp_path / "hyp.tsv"
    assert main(["decode", "--emissions", str(logits), "--ctc", str(model / ALPHABET_FILE), "-o", str(hyp)]) == 0
    decoded = dict(row.split("\t", 1) for row in hyp.read_text(encoding="utf-8").splitlines())
    assert sorted(decoded) == sorted(arrays)
    chars = [" " if c == "<space>" else c for c in (model / ALPHABET_FILE).read_text(encoding="utf-8").splitlines()[1:]]
    for line_id, x in arrays.items():      # the search's character loop without LM is greedy decoding
        assert decoded[line_id] == " ".join(greedy_decode(x, chars).split())
    assert greedy.read_text(encoding="utf-8") == hyp.read_text(encoding="utf-8")
