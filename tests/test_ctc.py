"""CTC decoding through the search: brute force, greedy decoding, pyctcdecode, the CLI."""

import itertools
import math
import subprocess
import sys

import kenlm
import numpy as np
import pytest

from hybrid_hwr.ctc import CtcModel, CtcRecognizer, read_alphabet, to_log_probs
from hybrid_hwr.errors import HwrError

LN10 = math.log(10.0)
COLUMNS = ["<blank>", "a", "b", "<space>"]     # an alphabet file's lines
SYMBOLS = ["<blank>", "a", "b", " "]           # as read_alphabet gives them


def ctc_viterbi(logp, labels):
    """Best alignment score of a label sequence (columns), blank = column 0."""
    ext = [0]
    for c in labels:
        ext += [c, 0]
    T, S = len(logp), len(ext)
    a = np.full(S, -np.inf)
    a[0] = logp[0, ext[0]]
    if S > 1:
        a[1] = logp[0, ext[1]]
    for t in range(1, T):
        b = a.copy()
        for s in range(S):
            best = a[s]
            if s >= 1:
                best = max(best, a[s - 1])
            if s >= 2 and ext[s] != 0 and ext[s] != ext[s - 2]:
                best = max(best, a[s - 2])
            b[s] = best + logp[t, ext[s]]
        a = b
    return max(a[-1], a[-2]) if S > 1 else a[-1]


def greedy(logp, columns):
    out, prev = [], -1
    for c in logp.argmax(1):
        if c != prev and c != 0:
            out.append(" " if columns[c] == "<space>" else columns[c])
        prev = c
    return " ".join("".join(out).split())


def random_outputs(n, seed, n_cols=4, max_frames=5):
    rng = np.random.default_rng(seed)
    return [rng.dirichlet(np.full(n_cols, 0.7), size=int(rng.integers(1, max_frames + 1))) for _ in range(n)]


@pytest.mark.parametrize("char_penalty", [0.0, 0.7, -0.4])
def test_character_loop_is_the_brute_force_best_label_sequence(char_penalty):
    rec = CtcRecognizer(CtcModel(SYMBOLS), char_penalty=char_penalty, beam=1e9)
    for probs in random_outputs(40, seed=1):
        logp = np.log(probs)
        best, best_labels = -np.inf, None
        for n in range(len(logp) + 1):
            for labels in itertools.product(range(1, 4), repeat=n):
                v = ctc_viterbi(logp, labels) - char_penalty * n
                if v > best + 1e-12:
                    best, best_labels = v, labels
        hyp = rec.decode_loglik(probs)
        assert hyp.score == pytest.approx(best, abs=1e-9)
        text = " ".join("".join("ab "[c - 1] for c in best_labels).split())
        assert hyp.text == text
        if char_penalty == 0.0:
            assert hyp.text == greedy(logp, COLUMNS)
            assert hyp.score == pytest.approx(logp.max(1).sum())


def test_alphabet_file_space_and_blank(tmp_path):
    path = tmp_path / "alphabet.txt"
    path.write_text("a\n<space>\n-\nb\n")
    assert read_alphabet(path, blank=2) == ["a", " ", "<blank>", "b"]
    path.write_text("a\nab\n-\n")
    with pytest.raises(HwrError, match="line 2"):
        read_alphabet(path, blank=2)
    with pytest.raises(HwrError, match="--blank 5"):
        read_alphabet(path, blank=5)


def test_inputs_are_recognised_by_their_rows():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4))
    logp = to_log_probs(logits, log_softmax=True)
    assert np.allclose(np.exp(logp).sum(1), 1)
    assert np.allclose(to_log_probs(np.exp(logp)), logp)
    assert np.allclose(to_log_probs(logp), logp)
    with pytest.raises(HwrError, match="log-softmax"):
        to_log_probs(logits)


# ----------------------------------------------------------------------------- lexicon + LM

LEXICON = ["the", "cat", "sat", "on", "mat", "a", "hat", "at", "tea", "eat", "ate", "to", "toe", "hot", "tot"]
SENTENCES = ["the cat sat on the mat", "a cat ate the tea", "the hat sat on a cat", "eat the hot tea",
             "the toe at the mat", "a tot sat on the hat", "the cat ate a hat", "to eat hot tea"]
LETTERS = sorted(set("".join(LEXICON)))


def write_arpa(path):
    """A bigram LM: every word pair of the sentences 0.5, the rest backed off to unigrams."""
    vocab = LEXICON + ["</s>"]
    pairs = sorted({(a, b) for s in SENTENCES for a, b in zip(["<s>"] + s.split(), s.split() + ["</s>"])})
    uni = math.log10(1.0 / (len(vocab) + 1))
    lines = ["\\data\\", f"ngram 1={len(vocab) + 2}", f"ngram 2={len(pairs)}", "", "\\1-grams:",
             f"{uni:.6f}\t<unk>\t0", f"-99\t<s>\t-0.5"]
    lines += [f"{uni:.6f}\t{w}\t-0.5" if w != "</s>" else f"{uni:.6f}\t</s>" for w in vocab]
    lines += ["", "\\2-grams:"] + [f"{math.log10(0.5):.6f}\t{a} {b}" for a, b in pairs] + ["", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return path


def planted_logits(text, columns, rng, noise=1.6):
    """Logits of a CTC network that read ``text``: runs of 1-3 frames per character, blanks between
    (always between equal characters), the right column 4 above the others, Gaussian noise."""
    col = {s: i for i, s in enumerate(columns)}
    frames, prev = [], None
    for ch in text:
        c = col[ch]
        if c == prev or rng.random() < 0.5:
            frames += [0] * int(rng.integers(1, 3))
        frames += [c] * int(rng.integers(1, 4))
        prev = c
    frames += [0] * int(rng.integers(0, 3))
    x = rng.normal(scale=noise, size=(len(frames), len(columns)))
    x[np.arange(len(frames)), frames] += 4.0
    return x


def our_objective(logp, columns, text, lm, lm_weight, word_penalty):
    """The documented objective of a text (-inf for a word out of the lexicon)."""
    words = text.split()
    if any(w not in LEXICON for w in words):
        return -np.inf
    col = {s: i for i, s in enumerate(columns)}
    labels = [col[ch] for ch in " ".join(words)]
    lm_ln = sum(p for p, _, _ in lm.full_scores(" ".join(words))) * LN10
    return ctc_viterbi(logp, labels) + lm_weight * lm_ln + word_penalty * len(words)


def test_lexicon_and_lm_against_pyctcdecode(tmp_path):
    pyctcdecode = pytest.importorskip("pyctcdecode")   # the test extra
    columns = ["<blank>", " "] + LETTERS
    arpa = write_arpa(tmp_path / "words.arpa")
    lm = kenlm.Model(str(arpa))
    lm_weight, word_penalty = 0.8, -1.0
    model = CtcModel(columns, log_softmax=True)
    ours = CtcRecognizer(model, lexicon=LEXICON, lm=arpa, lm_weight=lm_weight, word_penalty=word_penalty)
    theirs = pyctcdecode.build_ctcdecoder([""] + columns[1:], kenlm_model_path=str(arpa), unigrams=LEXICON,
                                          alpha=lm_weight, beta=word_penalty)
    rng = np.random.default_rng(7)
    ours_right = theirs_right = 0
    for text in SENTENCES + ["the mat", "a tea at the toe"]:
        logits = planted_logits(text, columns, rng)
        logp = to_log_probs(logits, log_softmax=True)
        hyp = ours.decode_loglik(logits)
        other = " ".join(theirs.decode(logp, beam_width=50).split())
        mine = our_objective(logp, columns, hyp.text, lm, lm_weight, word_penalty)
        assert hyp.score == pytest.approx(mine, abs=1e-6)      # the reported score is the objective
        if hyp.text != other:
            assert mine >= our_objective(logp, columns, other, lm, lm_weight, word_penalty) - 1e-9
        ours_right += hyp.text == text
        theirs_right += other == text
    assert ours_right >= 8


def test_lexicon_mode_is_the_brute_force_best_word_sequence():
    columns = ["<blank>", " "] + sorted(set("abt"))
    lexicon = ["a", "at", "tab", "bat", "aa"]
    rec = CtcRecognizer(CtcModel(columns), lexicon=lexicon, word_penalty=-0.5, beam=1e9)
    rng = np.random.default_rng(3)
    col = {s: i for i, s in enumerate(columns)}
    for _ in range(15):
        probs = rng.dirichlet(np.full(len(columns), 0.6), size=int(rng.integers(2, 8)))
        logp = np.log(probs)
        best, best_text = -np.inf, ""
        for n in range(1, 4):
            for words in itertools.product(lexicon, repeat=n):
                text = " ".join(words)
                v = ctc_viterbi(logp, [col[c] for c in text]) - 0.5 * n
                if v > best + 1e-12:
                    best, best_text = v, text
        empty = logp[:, 0].sum()
        hyp = rec.decode_loglik(probs)
        assert hyp.score == pytest.approx(max(best, empty), abs=1e-9)
        assert hyp.text == (best_text if best > empty else "")
        for w in hyp.words:
            assert 0 <= w.first_frame <= w.last_frame < len(probs) and 0 <= w.confidence <= 1 + 1e-9


def test_nbest_entries_are_distinct_and_sorted():
    rec = CtcRecognizer(CtcModel(SYMBOLS), nbest=5)
    hyp = rec.decode_loglik(random_outputs(1, seed=4, max_frames=8)[0])
    texts = [a.text for a in hyp.nbest]
    assert len(texts) == len(set(texts)) > 1
    assert all(x.score >= y.score for x, y in zip(hyp.nbest, hyp.nbest[1:]))


# ----------------------------------------------------------------------------- command line

def test_cli_reads_a_folder_and_skips_a_malformed_array(tmp_path):
    (tmp_path / "alphabet.txt").write_text("\n".join(COLUMNS) + "\n")
    folder = tmp_path / "logits"
    folder.mkdir()
    outputs = random_outputs(2, seed=5, max_frames=9)
    for name, probs in zip(("l1", "l2"), outputs):
        np.save(folder / f"{name}.npy", np.log(probs) + 3.0)    # logits
    np.save(folder / "l0.npy", np.zeros((3, 5)))              # one column too many
    run = subprocess.run([sys.executable, "-m", "hybrid_hwr", "decode", "--emissions", str(folder), "--ctc",
                          str(tmp_path / "alphabet.txt"), "--log-softmax", "-o", str(tmp_path / "hyp.tsv")],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "skipped line l0" in run.stderr and "(frames, 4)" in run.stderr and "Traceback" not in run.stderr
    rows = (tmp_path / "hyp.tsv").read_text().splitlines()
    assert rows == [f"{n}\t{greedy(np.log(p), COLUMNS)}" for n, p in zip(("l1", "l2"), outputs)]


def test_cli_refuses_ctc_options_without_ctc(tmp_path):
    run = subprocess.run([sys.executable, "-m", "hybrid_hwr", "decode", "--emissions", str(tmp_path / "x.npz"),
                          "--log-softmax"], capture_output=True, text=True)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith("hybrid-hwr: error: --blank and --log-softmax")


def test_character_lm_mode_is_the_brute_force_best(tmp_path):
    from test_decode import CHAR_ARPA

    (tmp_path / "chars.arpa").write_text(CHAR_ARPA)
    lm = kenlm.Model(str(tmp_path / "chars.arpa"))
    columns = ["<blank>", " ", "a", "b", "c"]
    rec = CtcRecognizer(CtcModel(columns), char_lm=tmp_path / "chars.arpa", lm_weight=0.7, beam=1e9)
    for probs in random_outputs(12, seed=6, n_cols=5, max_frames=4):
        logp = np.log(probs)
        best, best_text = -np.inf, None
        for n in range(len(logp) + 1):
            for labels in itertools.product(range(1, 5), repeat=n):
                tokens = " ".join("<sp>" if columns[c] == " " else columns[c] for c in labels)
                v = ctc_viterbi(logp, labels) + 0.7 * LN10 * sum(p for p, _, _ in lm.full_scores(tokens))
                if v > best + 1e-12:
                    best, best_text = v, " ".join("".join(columns[c] for c in labels).split())
        hyp = rec.decode_loglik(probs)
        assert hyp.score == pytest.approx(best, abs=1e-5)   # KenLM's float32 scores
        assert hyp.text == best_text


def test_collapse_scorer_pairs_are_its_scores_in_order(tmp_path):
    from test_decode import CHAR_ARPA

    from hybrid_hwr.ctc import _CollapseScorer
    from hybrid_hwr.lm import LmScorer, char_lm_symbols

    (tmp_path / "chars.arpa").write_text(CHAR_ARPA)
    lm = kenlm.Model(str(tmp_path / "chars.arpa"))
    one, many = (_CollapseScorer(LmScorer(lm, char_lm_symbols([" ", "a", "b", "c"]))) for _ in range(2))
    rng = np.random.default_rng(3)
    states = [one.BOS]
    for _ in range(6):      # batches of pairs from the states met so far, repeats included
        s = rng.choice(states, size=40)
        t = rng.integers(0, 8, size=40)
        expected = [one.score(a, b) for a, b in zip(s.tolist(), t.tolist())]
        logp, nxt = many.score_pairs(s, t)
        assert logp.tolist() == [p for p, _ in expected] and nxt.tolist() == [q for _, q in expected]
        assert many._states == one._states     # new states numbered in the same order
        states = list(range(len(one._states)))
    assert len(states) > 5      # batches met new states
