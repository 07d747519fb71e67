"""KenLM building (the lmplz that `make install` builds), loading, scoring and evaluation."""

import gzip
import lzma
import math
import os
from pathlib import Path

import numpy as np
import pytest

import kenlm

from hybrid_hwr.errors import HwrError
from hybrid_hwr.lexicon import load_lexicon
from hybrid_hwr.lm import (LN10, UNK_ID, LmScorer, build_lm, char_lm_symbols, check_vocabulary,
                           evaluate_lm, find_kenlm_binary, load_lm, missing_tokens)

# A planted corpus: "the cat sat" and "the dog ran" patterns, with punctuation that the
# tokeniser separates. Deterministic, and rich enough for Kneser-Ney discounts.
WORDS = ["the", "cat", "dog", "sat", "ran", "a", "mat", "on", "big", "red"]


def planted_lines(n=300, seed=0):
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(n):
        subject = rng.choice(["cat", "dog"])
        verb = "sat" if subject == "cat" else "ran"
        adj = rng.choice(["big", "red", ""], p=[0.3, 0.2, 0.5])
        tail = rng.choice(["on a mat.", "on the mat,", "", "a mat!"])
        lines.append(" ".join(w for w in ["the", adj, subject, verb, tail] if w))
    return lines


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "planted.txt"
    path.write_text("\n".join(planted_lines()) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def arpa(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "planted.arpa.gz"
    build_lm([corpus], 3, out, memory="64M")
    return out


def arpa_counts(path):
    counts = {}
    with gzip.open(path, "rt") if str(path).endswith(".gz") else open(path) as handle:
        for line in handle:
            if line.startswith("ngram "):
                order, count = line[6:].split("=")
                counts[int(order)] = int(count)
            elif line.startswith("\\1-grams"):
                break
    return counts


def test_kenlm_programs_are_built():
    # `make install` builds them (hybrid_hwr/scripts/build_kenlm.sh): missing means a broken install.
    for name in ("lmplz", "build_binary"):
        assert find_kenlm_binary(name).is_file()


def test_build_lm_learns_the_planted_statistics(arpa):
    model = load_lm(arpa)
    assert model.order == 3
    # <s> </s> <unk> + 10 words + 3 punctuation tokens
    assert arpa_counts(arpa)[1] == 3 + len(WORDS) + 3
    # "cat" is always followed by "sat", never by "ran"
    assert model.score("the cat sat", bos=True, eos=False) > model.score("the cat ran", bos=True, eos=False) + 1
    assert all(w in model for w in WORDS + [".", ",", "!"])
    assert "mat." not in model  # punctuation was split off by the tokeniser


def test_scorer_matches_kenlm_full_scores(arpa):
    model = load_lm(arpa)
    tokens = WORDS + [".", ",", "!", "zebra"]
    scorer = LmScorer(model, tokens)
    rng = np.random.default_rng(1)
    for _ in range(50):
        ids = rng.integers(0, len(tokens), rng.integers(1, 8)).tolist()
        sentence = " ".join(tokens[i] for i in ids)
        expected = [s for s, _, _ in model.full_scores(sentence)]
        state, got = scorer.BOS, []
        for i in ids:
            logp, state = scorer.score(state, i)
            got.append(logp)
        got.append(scorer.end_score(state))
        np.testing.assert_allclose(got, np.array(expected) * LN10, rtol=1e-6, atol=1e-9)
        assert math.isclose(scorer.sequence_score(ids), sum(expected) * LN10, rel_tol=1e-6)
    # "zebra" is out of vocabulary: scored like <unk>
    assert scorer.score(scorer.BOS, len(tokens) - 1)[0] == scorer.score(scorer.BOS, UNK_ID)[0]
    assert list(scorer.in_vocabulary()) == [True] * (len(tokens) - 1) + [False]
    with pytest.raises(IndexError):
        scorer.score(scorer.BOS, len(tokens))


def test_state_cache_gives_direct_query_scores(arpa):
    model = load_lm(arpa)
    scorer = LmScorer(model, WORDS)
    rng = np.random.default_rng(2)
    state_ids = np.zeros(200, dtype=np.int32)
    for step in range(4):      # expand random hypotheses through the cache, batch-wise
        words = rng.integers(0, len(WORDS), len(state_ids))
        logp, new_states = scorer.score_many(state_ids, words)
        for s, w, lp, ns in zip(state_ids, words, logp, new_states):
            direct = kenlm.State()
            assert math.isclose(model.BaseScore(scorer._states[s], WORDS[w], direct) * LN10, lp)
            assert direct == scorer._states[ns]          # the id maps back to the same state
        again, again_states = scorer.score_many(state_ids, words)   # cache hits
        assert np.array_equal(again, logp) and np.array_equal(again_states, new_states)
        state_ids = new_states
    # a trigram model has at most one state per (w1, w2) context plus a few shorter ones
    assert scorer.n_states <= 2 + len(WORDS) + len(WORDS) ** 2


def test_score_pairs_equals_score(arpa):
    model = load_lm(arpa)
    tokens = WORDS + ["zebra"]
    cached, direct = LmScorer(model, tokens), LmScorer(model, tokens)
    rng = np.random.default_rng(4)
    states = np.zeros(300, dtype=np.int64)
    for _ in range(3):
        words = rng.integers(-1, len(tokens), len(states))
        logp, nxt = direct.score_pairs(states, words)
        expected = [cached.score(s, w) for s, w in zip(states.tolist(), words.tolist())]
        assert logp.tolist() == [e[0] for e in expected]          # bit-identical
        # the same states, numbered the same way
        assert [direct._states[i] for i in nxt] == [cached._states[e[1]] for e in expected]
        states = nxt
    with pytest.raises(IndexError):
        direct.score_pairs(np.array([0]), np.array([len(tokens)]))


def test_binary_and_plain_arpa_give_the_same_scores(corpus, tmp_path):
    binary = tmp_path / "lm.binary"
    arpa = build_lm([corpus], 3, tmp_path / "lm.arpa", memory="64M", binary_path=binary)
    plain, fast = load_lm(arpa), load_lm(binary)
    for text in ["the cat sat on a mat .", "dog the red", "the zebra ran"]:
        a, b = list(plain.full_scores(text)), list(fast.full_scores(text))
        assert [x[1:] for x in a] == [x[1:] for x in b]             # n-gram lengths, OOV flags
        np.testing.assert_allclose([x[0] for x in a], [x[0] for x in b], atol=1e-5)


def test_xz_corpus_vocab_limit_and_pruning(tmp_path):
    rng = np.random.default_rng(3)
    # the planted lines, plus a few random word orders whose trigrams occur once
    lines = planted_lines(400, seed=3) + [" ".join(rng.permutation(WORDS)) for _ in range(5)]
    corpus = tmp_path / "corpus.txt.xz"
    with lzma.open(corpus, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    full = build_lm([corpus], 3, tmp_path / "full.arpa.gz", memory="64M")
    pruned = build_lm([corpus], 3, tmp_path / "pruned.arpa.gz", memory="64M", prune=[0, 1, 1])
    limited = build_lm([corpus], 3, tmp_path / "limited.arpa.gz", memory="64M",
                       vocab=["the", "cat", "sat", "dog", "ran"])
    n_full, n_pruned = arpa_counts(full), arpa_counts(pruned)
    assert n_pruned[1] == n_full[1] and n_pruned[3] < n_full[3]
    model = load_lm(limited)
    assert "cat" in model and "mat" not in model and "big" not in model
    assert arpa_counts(limited)[1] == 3 + 5


def test_tsv_corpus_gives_its_text_column(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("".join(f"line{i}\t{text}\n" for i, text in enumerate(planted_lines(200))),
                   encoding="utf-8")
    model = load_lm(build_lm([tsv], 2, tmp_path / "lm.arpa.gz", memory="64M"))
    assert "cat" in model and "line0" not in model


def test_discount_fallback_for_tiny_corpora(tmp_path):
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("a b c\n", encoding="utf-8")
    with pytest.raises(HwrError, match="lmplz failed: Could not calculate Kneser-Ney discounts"):
        build_lm([corpus], 3, tmp_path / "no.arpa.gz", memory="32M", discount_fallback=False)
    model = load_lm(build_lm([corpus], 3, tmp_path / "auto.arpa.gz", memory="32M"))
    assert "b" in model


def test_character_lm(tmp_path, corpus):
    out = build_lm([corpus], 5, tmp_path / "chars.arpa.gz", unit="char", memory="64M")
    model = load_lm(out)
    symbols = sorted(set("".join(planted_lines())) | {"z"})
    assert " " in symbols
    tokens = char_lm_symbols(symbols)
    assert "<sp>" in tokens and " " not in tokens
    scorer = LmScorer(model, tokens)
    ids = [symbols.index(c) for c in "the cat"]
    assert math.isclose(scorer.sequence_score(ids),
                        model.score("t h e <sp> c a t") * LN10, rel_tol=1e-6)
    assert missing_tokens(model, tokens) == ["z"]


def test_evaluate_lm_counts_oov_and_matches_kenlm_perplexity(arpa):
    model = load_lm(arpa)
    ev = evaluate_lm(model, ["the cat sat.", "", "the zebra ran"])
    assert (ev.n_lines, ev.n_tokens, ev.n_oov) == (2, 7, 1)
    assert ev.oov_rate == pytest.approx(1 / 7)
    single = evaluate_lm(model, ["the dog ran on a mat"])
    assert single.perplexity == pytest.approx(model.perplexity("the dog ran on a mat"))
    assert ev.perplexity_with_oov > ev.perplexity
    with pytest.raises(HwrError, match="no text"):
        evaluate_lm(model, ["", "  "])


def test_lm_vocabulary_check(arpa):
    model = load_lm(arpa)
    assert check_vocabulary(model, ["the", "cat", "zebra"], "planted") == 1
    with pytest.raises(HwrError, match="planted: the LM knows only 1 of 3 lexicon words"):
        check_vocabulary(model, ["le", "chat", "cat"], "planted")


def test_bad_language_model_files(tmp_path, arpa):
    with pytest.raises(HwrError, match="no such language model"):
        load_lm(tmp_path / "missing.arpa")
    empty = tmp_path / "empty.arpa"
    empty.write_bytes(b"")
    with pytest.raises(HwrError, match="empty language model"):
        load_lm(empty)
    garbage = tmp_path / "garbage.arpa"
    garbage.write_text("this is not an ARPA file\n")
    with pytest.raises(HwrError, match=r"garbage.arpa: not a readable KenLM language model \(first"):
        load_lm(garbage)
    truncated = tmp_path / "truncated.arpa"
    truncated.write_bytes(gzip.open(arpa).read()[:400])
    with pytest.raises(HwrError, match="truncated.arpa: not a readable KenLM"):
        load_lm(truncated)
    corrupt_gz = tmp_path / "corrupt.arpa.gz"
    corrupt_gz.write_bytes(arpa.read_bytes()[:200])
    with pytest.raises(HwrError, match="not a readable KenLM"):
        load_lm(corrupt_gz)


def test_loading_prints_nothing_and_restores_stderr(arpa, tmp_path, capfd):
    # KenLM writes "Loading the LM will be faster if you build a binary file." (and a
    # progress bar) to file descriptor 2 when it reads an ARPA file
    plain = tmp_path / "plain.arpa"
    plain.write_bytes(gzip.open(arpa).read())
    capfd.readouterr()
    assert load_lm(plain).order == 3 and load_lm(arpa).order == 3
    garbage = tmp_path / "garbage.arpa"
    garbage.write_text("\\data\\\nngram 1=zz\n")
    with pytest.raises(HwrError) as info:
        load_lm(garbage)
    assert "\n" not in str(info.value)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    # descriptor 2 is back where it was, after a failed load too
    os.write(2, b"still here\n")
    assert capfd.readouterr().err == "still here\n"


def test_bad_build_inputs(tmp_path, corpus):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    with pytest.raises(HwrError, match="no text in"):
        build_lm([empty], 3, tmp_path / "lm.arpa.gz")
    with pytest.raises(HwrError, match="no such corpus"):
        build_lm([tmp_path / "missing.txt"], 3, tmp_path / "lm.arpa.gz")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("ok\nÉtat\n".encode("latin-1"))
    with pytest.raises(HwrError, match="latin1.txt:2: not UTF-8"):
        build_lm([latin1], 3, tmp_path / "lm.arpa.gz")
    with pytest.raises(HwrError, match="order"):
        build_lm([corpus], 9, tmp_path / "lm.arpa.gz")
    with pytest.raises(HwrError, match="prune"):
        build_lm([corpus], 3, tmp_path / "lm.arpa.gz", prune=[0, 2, 1])
    with pytest.raises(HwrError, match="must end in"):
        build_lm([corpus], 3, tmp_path / "lm.txt")
    assert not (tmp_path / "lm.arpa.gz").exists()


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_shipped_lms_cover_their_lexicons(lang):
    root = Path(__file__).resolve().parents[1]
    words = load_lexicon(root / "lexicons" / f"{lang}-50k.txt")
    model = load_lm(root / "lm" / f"{lang}-3gram.arpa.gz")
    assert model.order == 3
    assert missing_tokens(model, words) == []
    for order in (6, 4):
        chars = load_lm(root / "lm" / f"{lang}-char{order}gram.arpa.gz")
        assert chars.order == order and "<sp>" in chars and "e" in chars
