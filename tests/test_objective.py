"""The score formula, written once: its total, its inverse and its one-word step agree with a
decoded hypothesis; the search package keeps the names of the single module it replaced."""

import math

import numpy as np
import pytest

from hybrid_hwr.search import Objective

ARPA = """
\\data\\
ngram 1=6
ngram 2=3

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.2
-0.5\t</s>\t0
-0.4\ta\t-0.1
-0.7\tab\t-0.2
-0.9\tb\t-0.3

\\2-grams:
-0.2\t<s> a
-0.3\ta b
-0.1\tb </s>

\\end\\
"""


def test_total_optical_and_extend_are_one_formula():
    objective = Objective(lm_weight=2.5, word_penalty=-3.0, unk_penalty=-7.0, glue_penalty=-11.0)
    optical, lm = -123.25, -9.5
    total = objective.total(optical, lm, n_words=3, n_unk=1, n_glued=2)
    assert total == optical + 2.5 * lm - 9.0 - 7.0 - 22.0
    assert objective.optical(total, lm, 3, 1, 2) == optical
    # word by word: three words (the second out of the lexicon, the last two glued)
    steps = [(-40.0, -3.0, False, False), (-50.25, -4.0, True, True), (-33.0, -2.5, False, True)]
    score = 0.0
    for word_optical, word_lm, unk, glued in steps:
        score = objective.extend(score, word_optical, word_lm, unk, glued)
    assert score == pytest.approx(total, abs=1e-9)
    gains = np.diff([0.0] + list(np.cumsum([objective.extend(0.0, *s) for s in steps])))
    back = objective.word_optical(gains, np.array([s[1] for s in steps]), np.array([s[2] for s in steps]),
                                  np.array([s[3] for s in steps]))
    np.testing.assert_allclose(back, [s[0] for s in steps], atol=1e-9)


def test_decoded_scores_follow_the_objective(tmp_path):
    from hybrid_hwr.data import Alphabet
    from hybrid_hwr.decode import Recognizer
    from hybrid_hwr.features import FrontEnd, Normalizer
    from hybrid_hwr.gmm import GmmSet
    from hybrid_hwr.hmm import HmmTopology, Transitions
    from hybrid_hwr.model import HwrModel

    alphabet = Alphabet([" ", "a", "b"])
    topology = HmmTopology(alphabet.symbols, 2)
    S = topology.n_emitting
    gmms = GmmSet(np.zeros((S, 1, 1)), np.ones((S, 1, 1)), np.zeros((S, 1)))
    model = HwrModel(alphabet, FrontEnd(), Normalizer(), topology, Transitions(topology), gmms)
    arpa = tmp_path / "words.arpa"
    arpa.write_text(ARPA, encoding="utf-8")
    recognizer = Recognizer(model, lexicon=["a", "ab", "b"], lm=arpa, lm_weight=2.0, word_penalty=-0.5,
                            glue_penalty=-1.5, nbest=4)
    rng = np.random.default_rng(1)
    hyp = recognizer.decode_loglik(rng.normal(-3.0, 2.0, size=(24, S)))
    assert hyp.nbest and recognizer.objective == Objective(2.0, -0.5, 0.0, -1.5)
    for alt in hyp.nbest:      # each entry's score splits into its optical part, LM and penalties
        n_words = len(alt.text.split())
        rest = alt.score - recognizer.objective.total(alt.optical_score, alt.lm_score, n_words)
        assert rest <= 1e-9 and math.isclose(rest / -1.5, round(rest / -1.5), abs_tol=1e-9)   # glued joins


def test_the_search_package_keeps_the_module_names():
    import hybrid_hwr.search as search

    for name in ("TokenSearch", "SearchOutput", "LmTable", "build_network", "unigram_lookahead", "search_kernel",
                 "lattice_posteriors", "lattice_backward", "word_level_links", "table_put", "Network", "Records",
                 "C_STAT_TOKENS", "R_WORD", "R_UNK_WORD", "R_UNK_CHAR", "UNIT_NAMES", "NEG_INF"):
        assert hasattr(search, name), name
