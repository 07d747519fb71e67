"""A user's own dataset from the command line: split, lexicon, build-lm, decode and evaluate
on a dataset assembled at test time from the bundled lines, and the language-neutral tokeniser."""

import json
import re
import shutil

import pytest

from hybrid_hwr import cli
from hybrid_hwr.data import read_split, sample_dir
from hybrid_hwr.lexicon import load_lexicon
from hybrid_hwr.lm import lm_tokens
from hybrid_hwr.split import line_group, split_lines
from hybrid_hwr.text import detokenize, tokenize


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """all.tsv of every bundled line, with its lines/ folder, as `hybrid-hwr import` would write it."""
    root = tmp_path_factory.mktemp("own")
    rows = [f"{l.id}\t{l.text}\n" for name in ("train", "test") for l in read_split(sample_dir() / f"{name}.tsv")]
    (root / "all.tsv").write_text("".join(rows), encoding="utf-8")
    (root / "lines").symlink_to(sample_dir() / "lines", target_is_directory=True)
    return root


def test_split_keeps_pages_whole_and_is_deterministic(dataset, capsys, tmp_path):
    code, out, _ = run(capsys, "split", dataset / "all.tsv", "-o", tmp_path / "a", "--valid", 0.15, "--test", 0.15)
    assert code == 0 and re.search(r"train \d+ lines, valid \d+ lines, test \d+ lines", out)
    parts = {name: read_split(tmp_path / "a" / f"{name}.tsv") for name in ("train", "valid", "test")}
    pages = {name: {line_group(l.id) for l in lines} for name, lines in parts.items()}
    assert not (pages["train"] & pages["valid"] or pages["train"] & pages["test"] or pages["valid"] & pages["test"])
    total = sum(len(v) for v in parts.values())
    assert total == len(read_split(dataset / "all.tsv"))
    assert 0.05 * total < len(parts["test"]) < 0.3 * total and 0.05 * total < len(parts["valid"]) < 0.3 * total
    assert all(l.image_path.is_file() for lines in parts.values() for l in lines)   # lines/ is linked
    run(capsys, "split", dataset / "all.tsv", "-o", tmp_path / "b", "--valid", 0.15, "--test", 0.15)
    for name in ("train", "valid", "test"):
        assert (tmp_path / "a" / f"{name}.tsv").read_bytes() == (tmp_path / "b" / f"{name}.tsv").read_bytes()
    other = split_lines([l.id for l in read_split(dataset / "all.tsv")], 0.15, 0.15, seed=1)
    assert other["test"] != [l.id for l in parts["test"]]   # the seed matters


def test_split_by_writer_regex():
    ids = ["wikitexte_0001_1_a", "wikitexte_0001_2_b", "wikitexte_0002_1_c", "wikitexte_0003_1_d"] * 1
    parts = split_lines(ids, 0.25, 0.25, group_by=r"^(wikitexte_\d+)")
    owner = {i: name for name, members in parts.items() for i in members}
    assert owner["wikitexte_0001_1_a"] == owner["wikitexte_0001_2_b"]
    assert sorted(i for members in parts.values() for i in members) == sorted(ids)


def test_lexicon_uses_the_tokeniser_of_the_lms(dataset, capsys, tmp_path):
    lexicon = tmp_path / "lex.txt"
    code, out, _ = run(capsys, "lexicon", dataset / "all.tsv", "--lang", "fr", "-o", lexicon)
    assert code == 0 and "wrote" in out
    words = load_lexicon(lexicon)
    lm_vocab = {tok for l in read_split(dataset / "all.tsv") for tok in lm_tokens(l.text, "fr")}
    assert set(words) == lm_vocab
    assert "l'" in words and "," in words and not any(" " in w for w in words)
    counts = {}
    for l in read_split(dataset / "all.tsv"):
        for tok in tokenize(l.text, "fr"):
            counts[tok] = counts.get(tok, 0) + 1
    assert [counts[w] for w in words] == sorted((counts[w] for w in words), reverse=True)
    code, _, _ = run(capsys, "lexicon", dataset / "all.tsv", "--lang", "fr", "--size", 10, "-o", tmp_path / "ten.txt")
    assert load_lexicon(tmp_path / "ten.txt") == words[:10]


def test_own_dataset_split_lexicon_lm_decode_evaluate(dataset, capsys, tmp_path):
    """The chain of commands of the README's own-data guide after training, on a model with no
    decoder.json: lexicon and LM of the training split, calibrated default weights; the
    decode beats the model's character loop."""
    source = sample_dir().parent / "models" / "default"
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.json", json.loads((source / "model.json").read_text())["arrays_file"]):
        shutil.copy(source / name, model / name)
    run(capsys, "split", dataset / "all.tsv", "-o", tmp_path / "d")
    lexicon, lm = tmp_path / "lex.txt", tmp_path / "lm.arpa.gz"
    assert run(capsys, "lexicon", tmp_path / "d" / "train.tsv", dataset / "all.tsv", "--lang", "fr",
               "--alphabet-of", model, "-o", lexicon)[0] == 0
    assert run(capsys, "build-lm", "--order", 3, "--lang", "fr", "--vocab", lexicon, tmp_path / "d" / "train.tsv",
               "-o", lm)[0] == 0
    test = tmp_path / "d" / "test.tsv"
    common = ["decode", "--model", model, "--limit", 8, "--lang", "fr", test]
    code, _, err = run(capsys, *common, "--lexicon", lexicon, "--lm", lm, "-o", tmp_path / "lm.tsv")
    assert code == 0 and "lexicon lex.txt + LM lm.arpa.gz (weight 6 (default))" in err
    assert run(capsys, *common, "-o", tmp_path / "loop.tsv")[0] == 0
    rates = {}
    for name in ("lm", "loop"):
        code, out, _ = run(capsys, "evaluate", "--lang", "fr", test, tmp_path / f"{name}.tsv")
        assert code == 0
        rates[name] = [float(x) for x in re.findall(r"(?:CER|WER)\s+([\d.]+)", out)[:2]]
    assert rates["lm"][0] < rates["loop"][0] and rates["lm"][1] < rates["loop"][1] < 200


@pytest.mark.parametrize("text, tokens, display", [
    ("Η Αθήνα, η πρωτεύουσα; «Ναι»!", ["Η", "Αθήνα", ",", "η", "πρωτεύουσα", ";", "«", "Ναι", "»", "!"],
     "Η Αθήνα, η πρωτεύουσα; «Ναι»!"),
    ("Москва — столица (России).", ["Москва", "-", "столица", "(", "России", ")", "."],
     "Москва - столица (России)."),
    ("भारत एक देश है। यह बड़ा है।", ["भारत", "एक", "देश", "है", "।", "यह", "बड़ा", "है", "।"],
     "भारत एक देश है। यह बड़ा है।"),
    ("l'État, c'est", ["l'État", ",", "c'est"], "l'État, c'est"),   # no French elision rule
])
def test_generic_tokeniser_on_other_scripts(text, tokens, display):
    assert tokenize(text, "generic") == tokens
    assert detokenize(tokens, "generic") == display
    assert tokenize(" ".join(tokens), "generic") == tokens   # idempotent
