"""The decoder against brute force: every word sequence scored by forced alignment + LM.

A tiny planted model (4 symbols, 2 states each), a 6-word lexicon and hand-written
ARPA models. With at most 7 frames no line holds more than 3 words (a word needs
2 frames), so enumerating all sequences of up to 3 words is exhaustive.
"""

import itertools
import json
import math

import kenlm
import numpy as np
import pytest

from hybrid_hwr.align import path_units, viterbi
from hybrid_hwr.data import Alphabet, normalize_text
from hybrid_hwr.decode import Recognizer, read_emissions, words_from_units
from hybrid_hwr.errors import HwrError
from hybrid_hwr.features import FrontEnd, Normalizer
from hybrid_hwr.gmm import GmmSet
from hybrid_hwr.hmm import HmmTopology, Transitions, build_line_graph, build_loop_graph
from hybrid_hwr.lm import LN10, LmScorer, char_lm_symbols, load_lm
from hybrid_hwr.model import HwrModel
from hybrid_hwr.search import C_STAT_TOKENS, lattice_posteriors

SYMBOLS = [" ", "a", "b", "c"]
LEXICON = ["a", "ab", "ba", "cab", "b", "c"]
EXHAUSTIVE = dict(beam=math.inf, max_active=10**8, unk_beam=math.inf, unk_max_active=10**8)

WORD_ARPA = """
\\data\\
ngram 1=9
ngram 2=8

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.7\t</s>\t0
-0.8\ta\t-0.2
-1.1\tab\t-0.25
-0.9\tba\t-0.3
-1.3\tcab\t-0.1
-0.6\tb\t-0.4
-1.0\tc\t-0.2

\\2-grams:
-0.3\t<s> b
-0.5\t<s> cab
-0.2\tb c
-0.4\tc a
-0.3\ta </s>
-0.6\tba ab
-0.1\tcab </s>
-0.5\tb </s>

\\end\\
"""

CHAR_ARPA = """
\\data\\
ngram 1=7
ngram 2=5

\\1-grams:
-1.5\t<unk>\t0
-99\t<s>\t-0.2
-1.0\t</s>\t0
-0.5\ta\t-0.1
-0.7\tb\t-0.2
-0.9\tc\t-0.3
-0.6\t<sp>\t-0.1

\\2-grams:
-0.2\ta b
-0.3\tb <sp>
-0.4\t<sp> c
-0.5\tc a
-0.1\tc c

\\end\\
"""


@pytest.fixture(scope="module")
def model():
    alphabet = Alphabet(SYMBOLS)
    topology = HmmTopology(alphabet.symbols, 2)
    transitions = Transitions(topology, self_prob=0.6, space_prob=0.4, blank_prob=0.3)
    S = topology.n_emitting
    gmms = GmmSet(np.zeros((S, 1, 2)), np.ones((S, 1, 2)), np.zeros((S, 1)))
    return HwrModel(alphabet, FrontEnd(), Normalizer(), topology, transitions, gmms)


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "words.arpa").write_text(WORD_ARPA)
    (root / "chars.arpa").write_text(CHAR_ARPA)
    return root / "words.arpa", root / "chars.arpa"


def random_lines(model, n, max_frames=7, seed=0):
    rng = np.random.default_rng(seed)
    return [2.0 * rng.normal(size=(int(rng.integers(2, max_frames + 1)), model.topology.n_emitting))
            for _ in range(n)]


def optical(model, loglik, text):
    graph = build_line_graph(model.topology, model.transitions, model.alphabet.encode(text))
    return viterbi(loglik, graph)[0]


def kenlm_ln(lm: kenlm.Model, text: str) -> float:
    return sum(p for p, _, _ in lm.full_scores(text)) * LN10


def brute_force(model, loglik, lm_weight, word_penalty, scorer=None, items=None, unk_penalty=0.0, spell=None):
    """{text: best score} over every sequence of up to 3 items (lexicon words, or
    (spelling, -1) out-of-lexicon items) that fits in 3 characters."""
    items = items if items is not None else [(w, i) for i, w in enumerate(LEXICON)]
    best = {}
    for n in range(4):
        for seq in itertools.product(items, repeat=n):
            if sum(len(w) for w, _ in seq) > 3:
                continue
            text = " ".join(w for w, _ in seq)
            lm = 0.0
            if scorer is not None:
                lm = scorer.sequence_score([i for _, i in seq])
                lm += sum(spell(w) for w, i in seq if i == -1)
            n_unk = sum(1 for _, i in seq if i == -1)
            score = optical(model, loglik, text) + lm_weight * lm + word_penalty * n + unk_penalty * n_unk
            if score > best.get(text, -np.inf):
                best[text] = score
    return best


def check_nbest(hyp, exact):
    texts = [a.text for a in hyp.nbest]
    scores = [a.score for a in hyp.nbest]
    assert len(set(texts)) == len(texts)
    assert scores == sorted(scores, reverse=True)
    assert texts[0] == hyp.text and scores[0] == hyp.score
    for alt in hyp.nbest:
        # every entry is the score of a real path of its word sequence
        assert alt.score <= exact[alt.text] + 1e-9


# ----------------------------------------------------------------------------- one search, every mode

@pytest.mark.parametrize("char_penalty", [0.0, 1.5])
def test_character_loop_is_viterbi_on_the_loop_graph(model, char_penalty):
    graph = build_loop_graph(model.topology, model.transitions, char_penalty=char_penalty)
    recognizer = Recognizer(model, char_penalty=char_penalty, nbest=4)
    for loglik in random_lines(model, 6, max_frames=40, seed=1):
        score, path, arcs = viterbi(loglik, graph, return_arcs=True)
        words = words_from_units(path_units(path, graph, arcs), SYMBOLS, model.topology.space_id)
        hyp = recognizer.decode_loglik(loglik)
        assert hyp.score == pytest.approx(score, abs=1e-9)
        assert hyp.text == normalize_text(" ".join(w.text for w in words))
        assert [(w.text, w.first_frame, w.last_frame) for w in hyp.words] == \
            [(w.text, w.first_frame, w.last_frame) for w in words]
        texts = [a.text for a in hyp.nbest]
        assert len(set(texts)) == len(texts) and texts[0] == hyp.text
        assert [a.score for a in hyp.nbest] == sorted((a.score for a in hyp.nbest), reverse=True)
        # optical part = emissions + HMM transitions along the path (no symbol prior, no penalty)
        emissions = loglik[np.arange(len(path)), graph.emit_state[path]].sum()
        transitions = graph.init_logp[path[0]] + graph.arc_logp[arcs].sum() + graph.final_logp[path[-1]]
        n_symbols = len(path_units(path, graph, arcs))
        prior = n_symbols * (-math.log(len(SYMBOLS)) - char_penalty)
        assert hyp.optical_score == pytest.approx(emissions + transitions - prior, abs=1e-9)


@pytest.mark.parametrize("lm_weight, word_penalty", [(1.0, -0.5), (3.0, 0.7)])
def test_lexicon_and_lm_decoder_finds_the_brute_force_best(model, lm_files, lm_weight, word_penalty):
    lm = load_lm(lm_files[0])
    scorer = LmScorer(lm, LEXICON)
    recognizer = Recognizer(model, lexicon=LEXICON, lm=lm_files[0], lm_weight=lm_weight,
                            word_penalty=word_penalty, nbest=5, **EXHAUSTIVE)
    for loglik in random_lines(model, 6, seed=2):
        exact = brute_force(model, loglik, lm_weight, word_penalty, scorer)
        best_text = max(exact, key=exact.get)
        hyp = recognizer.decode_loglik(loglik)
        if not np.isfinite(exact[best_text]):
            assert hyp.text == "" and hyp.score == -math.inf
            continue
        assert hyp.text == best_text
        assert hyp.score == pytest.approx(exact[best_text], abs=1e-9)
        assert hyp.optical_score == pytest.approx(optical(model, loglik, hyp.text), abs=1e-9)
        n_words = len(hyp.text.split())
        assert hyp.score == pytest.approx(hyp.optical_score + lm_weight * hyp.lm_score + word_penalty * n_words)
        for alt in hyp.nbest:   # the LM part of every entry is KenLM's, in natural log
            assert alt.lm_score == pytest.approx(kenlm_ln(lm, alt.text), abs=1e-9)
        check_nbest(hyp, exact)
        assert all(0.0 < w.confidence <= 1.0 + 1e-12 for w in hyp.words)


def test_lm_weight_zero_is_the_lexicon_constrained_viterbi(model, lm_files):
    with_lm = Recognizer(model, lexicon=LEXICON, lm=lm_files[0], lm_weight=0.0, word_penalty=-0.3, **EXHAUSTIVE)
    lexicon_only = Recognizer(model, lexicon=LEXICON, word_penalty=-0.3, nbest=3, **EXHAUSTIVE)
    lm = load_lm(lm_files[0])
    for loglik in random_lines(model, 6, seed=3):
        exact = brute_force(model, loglik, 0.0, -0.3)
        best_text = max(exact, key=exact.get)
        a, b = with_lm.decode_loglik(loglik), lexicon_only.decode_loglik(loglik)
        if not np.isfinite(exact[best_text]):
            continue
        assert a.text == b.text == best_text
        assert a.score == pytest.approx(exact[best_text], abs=1e-9) and b.score == pytest.approx(a.score)
        assert a.lm_score == pytest.approx(kenlm_ln(lm, a.text))   # reported, not used
        assert b.lm_score == 0.0
        check_nbest(b, exact)


def test_open_vocabulary_finds_the_brute_force_best(model, lm_files):
    lm_weight, word_penalty, unk_penalty = 1.0, -0.5, 1.5
    scorer = LmScorer(load_lm(lm_files[0]), LEXICON)
    chars = LmScorer(load_lm(lm_files[1]), char_lm_symbols(SYMBOLS))
    start = chars.score(chars.NULL, 0)[1]   # after <sp>

    def spell(word):
        state, total = start, 0.0
        for ch in word:
            lp, state = chars.score(state, SYMBOLS.index(ch))
            total += lp
        return total + chars.score(state, 0)[0]

    items = [(w, i) for i, w in enumerate(LEXICON)]
    items += [("".join(p), -1) for n in (1, 2, 3) for p in itertools.product("abc", repeat=n)]
    recognizer = Recognizer(model, lexicon=LEXICON, lm=lm_files[0], char_lm=lm_files[1], lm_weight=lm_weight,
                            word_penalty=word_penalty, unk_penalty=unk_penalty, nbest=4, **EXHAUSTIVE)
    for loglik in random_lines(model, 4, seed=4):
        exact = brute_force(model, loglik, lm_weight, word_penalty, scorer, items, unk_penalty, spell)
        best_text = max(exact, key=exact.get)
        hyp = recognizer.decode_loglik(loglik)
        assert hyp.text == best_text
        assert hyp.score == pytest.approx(exact[best_text], abs=1e-9)
        check_nbest(hyp, exact)


def planted(model, text, frames_per_state=2, seed=0):
    """Emissions that favour the states of ``text`` (a few frames per state) by 6 nats."""
    rng = np.random.default_rng(seed)
    states = [s for k in model.alphabet.encode(text) for s in model.topology.states_of(k)
              for _ in range(frames_per_state)]
    loglik = rng.normal(scale=0.5, size=(len(states), model.topology.n_emitting)) - 6.0
    loglik[np.arange(len(states)), states] = 0.0
    return loglik


def test_a_planted_line_is_read_with_default_pruning(model, lm_files):
    recognizer = Recognizer(model, lexicon=LEXICON, lm=lm_files[0], nbest=3)
    loglik = planted(model, " cab ba ")
    hyp = recognizer.decode_loglik(loglik)
    assert hyp.text == "cab ba"
    # " " = 4 frames, "cab" = 12 frames, then " ", then "ba"
    assert [(w.text, w.first_frame, w.last_frame) for w in hyp.words] == [("cab", 4, 15), ("ba", 20, 27)]
    # "cab b a" (no space needed between words) is the runner-up, about 1 nat behind
    assert all(w.confidence > 0.5 and not w.oov for w in hyp.words)
    assert hyp.words[0].confidence > 0.9
    json.dumps(hyp.to_dict())


def brute_force_glued(model, loglik, lm_weight, word_penalty, glue_penalty, scorer):
    """{text: best score} like :func:`brute_force`, every join either spaced (the space
    model forced) or glued (no space: the two words' models in a row, + glue_penalty)."""
    import copy

    forced = copy.copy(model.transitions)
    forced.space_prob = 1.0     # the space between words is no longer optional
    log_space = math.log(model.transitions.space_prob)
    items = [(w, i) for i, w in enumerate(LEXICON)]
    best = {}
    for n in range(4):
        for seq in itertools.product(items, repeat=n):
            if sum(len(w) for w, _ in seq) > 3:
                continue
            lm = lm_weight * scorer.sequence_score([i for _, i in seq]) + word_penalty * n
            for glued in itertools.product((False, True), repeat=max(n - 1, 0)):
                text = seq[0][0] if n else ""
                for (w, _), g in zip(seq[1:], glued):
                    text += ("" if g else " ") + w
                graph = build_line_graph(model.topology, forced, model.alphabet.encode(text))
                score = (viterbi(loglik, graph)[0] + log_space * glued.count(False)
                         + glue_penalty * sum(glued) + lm)
                key = " ".join(w for w, _ in seq)
                if score > best.get(key, -np.inf):
                    best[key] = score
    return best


@pytest.mark.parametrize("glue_penalty", [-0.8, -3.0])
def test_glue_penalty_decoder_finds_the_brute_force_best(model, lm_files, glue_penalty):
    scorer = LmScorer(load_lm(lm_files[0]), LEXICON)
    recognizer = Recognizer(model, lexicon=LEXICON, lm=lm_files[0], lm_weight=1.0, word_penalty=0.4,
                            glue_penalty=glue_penalty, nbest=5, **EXHAUSTIVE)
    found = 0
    for loglik in random_lines(model, 8, seed=9):
        exact = brute_force_glued(model, loglik, 1.0, 0.4, glue_penalty, scorer)
        best_text = max(exact, key=exact.get)
        hyp = recognizer.decode_loglik(loglik)
        if not np.isfinite(exact[best_text]):
            continue
        found += 1
        assert hyp.text == best_text
        assert hyp.score == pytest.approx(exact[best_text], abs=1e-9)
        words = hyp.words
        n_glued = sum(1 for a, b in zip(words, words[1:]) if b.first_frame == a.last_frame + 1)
        assert hyp.score == pytest.approx(hyp.optical_score + hyp.lm_score + 0.4 * len(words)
                                          + glue_penalty * n_glued)
        check_nbest(hyp, exact)
    assert found >= 6


def test_glue_penalty_stops_one_letter_words_glued_together(model, lm_files):
    """Single letters in the lexicon and a word bonus: without the glue penalty the line is
    read as one-letter words with no space between them; with it, as the planted words."""
    loglik = planted(model, " cab ba ")
    kw = dict(lexicon=LEXICON, lm=lm_files[0], lm_weight=1.0, word_penalty=2.0)
    tiled = Recognizer(model, **kw).decode_loglik(loglik)
    assert tiled.text == "cab b a"
    assert tiled.words[2].first_frame == tiled.words[1].last_frame + 1    # "b" and "a" glued
    hyp = Recognizer(model, glue_penalty=-5.0, **kw).decode_loglik(loglik)
    assert hyp.text == "cab ba"
    # punctuation joins stay free: a glued "," costs nothing
    comma = Alphabet([" ", "a", "b", ","])
    topology = HmmTopology(comma.symbols, 2)
    punct_model = HwrModel(comma, FrontEnd(), Normalizer(), topology, model.transitions.__class__(
        topology, self_prob=0.6, space_prob=0.4, blank_prob=0.3), model.emission)
    line = planted(punct_model, " ab, ba ")
    for glue in (0.0, -50.0):
        out = Recognizer(punct_model, lexicon=["ab", "ba", ","], glue_penalty=glue).decode_loglik(line)
        assert out.text == "ab , ba"
        assert out.words[1].first_frame == out.words[0].last_frame + 1   # no space before the comma


def test_strict_lexicon_by_default_and_unknown_words_when_allowed(model, lm_files):
    lexicon = [w for w in LEXICON if w != "c"]
    loglik = planted(model, "cc")   # cannot be spelled with lexicon words
    strict = Recognizer(model, lexicon=lexicon, lm=lm_files[0]).decode_loglik(loglik)
    assert strict.text and all(w in lexicon for w in strict.text.split())
    hybrid = Recognizer(model, lexicon=lexicon, lm=lm_files[0], char_lm=lm_files[1], unk_penalty=-1.0)
    hyp = hybrid.decode_loglik(loglik)
    assert hyp.text == "cc" and hyp.words[0].oov


def test_unk_pruning_thins_spelled_words_only(model, lm_files):
    kw = dict(lexicon=LEXICON[:4], lm=lm_files[0], char_lm=lm_files[1], unk_penalty=-0.5, beam=math.inf,
              max_active=10**8)
    full = Recognizer(model, unk_beam=math.inf, unk_max_active=10**8, **kw)
    tight = Recognizer(model, unk_beam=0.5, unk_max_active=2, **kw)
    fewer = 0
    for loglik in random_lines(model, 6, max_frames=12, seed=6):
        a, b = full.decode_loglik(loglik), tight.decode_loglik(loglik)
        if not np.isfinite(a.score):
            continue
        # pruning only: a real hypothesis, never better than the exhaustive search
        assert np.isfinite(b.score) and b.score <= a.score + 1e-9
        assert b.optical_score <= optical(model, loglik, b.text) + 1e-9
        fewer += int(tight.search.cnt[C_STAT_TOKENS] < full.search.cnt[C_STAT_TOKENS])
    assert fewer >= 4
    # set_pruning changes them in place; bad values are clear errors
    tight.set_pruning(unk_beam=math.inf, unk_max_active=10**8)
    assert tight.decode_loglik(loglik).score == full.decode_loglik(loglik).score
    for bad in (dict(unk_beam=0.0), dict(unk_max_active=0)):
        with pytest.raises(HwrError):
            Recognizer(model, **kw, **bad)
        with pytest.raises(HwrError):
            tight.set_pruning(**bad)


def test_lattice_posteriors_match_path_enumeration():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n_nodes = int(rng.integers(2, 7))
        pairs = [(a, b) for a in range(n_nodes) for b in range(a + 1, n_nodes) if rng.random() < 0.6]
        pairs += [pairs[0]] if pairs else []              # parallel arcs too
        if not pairs:
            continue
        start = np.array([a for a, _ in pairs], dtype=np.int64)
        end = np.array([b for _, b in pairs], dtype=np.int64)
        order = np.argsort(start, kind="stable")
        start, end = start[order], end[order]
        score = rng.normal(scale=3.0, size=len(start))
        tail = np.where(rng.random(n_nodes) < 0.5, rng.normal(size=n_nodes), -np.inf)
        scale = float(rng.uniform(0.1, 2.0))
        weight, total = np.zeros(len(start)), 0.0

        def walk(node, arcs, acc):
            nonlocal total
            if np.isfinite(tail[node]):
                w = math.exp(scale * (acc + tail[node]))
                total += w
                weight[list(arcs)] += w
            for a in np.flatnonzero(start == node):
                walk(int(end[a]), arcs + (int(a),), acc + score[a])

        walk(0, (), 0.0)
        post, log_total = lattice_posteriors(start, end, score, tail, scale)
        if total == 0.0:
            assert log_total == -np.inf and np.all(post == 0.0)
            continue
        assert log_total == pytest.approx(math.log(total))
        np.testing.assert_allclose(post, weight / total, rtol=1e-9, atol=1e-12)


def test_character_lm_mode_reads_a_planted_line(model, lm_files):
    recognizer = Recognizer(model, char_lm=lm_files[1], lm_weight=1.0)
    hyp = recognizer.decode_loglik(planted(model, "ab c"))
    assert hyp.text == "ab c"
    lm = load_lm(lm_files[1])
    assert hyp.lm_score == pytest.approx(kenlm_ln(lm, "a b <sp> c"), abs=1e-9)


def test_finished_lines_survive_pruning(model, lm_files):
    # "c" ends early; the tokens reading "cab" beat it until the line stops inside "b":
    # the trailing blank kept "c" apart from the beam, so the line still has a full answer
    loglik = planted(model, "cab", frames_per_state=3)[:-4]
    hyp = Recognizer(model, lexicon=LEXICON, lm=lm_files[0], beam=1e-3, max_active=1).decode_loglik(loglik)
    assert hyp.text == "c" and hyp.words[0].confidence == 1.0
    # a real path of "c" (pruning chose where "c" ends, so not necessarily its best)
    assert hyp.optical_score <= optical(model, loglik, "c") + 1e-9
    lm = load_lm(lm_files[0])
    assert hyp.score == pytest.approx(hyp.optical_score + kenlm_ln(lm, "c"))


def test_pruning_keeps_a_real_hypothesis(model, lm_files):
    exact = Recognizer(model, lexicon=LEXICON, lm=lm_files[0], **EXHAUSTIVE)
    for kw in (dict(beam=1e-3), dict(max_active=2), dict(beam=2.0, max_active=3)):
        pruned = Recognizer(model, lexicon=LEXICON, lm=lm_files[0], **kw)
        for loglik in random_lines(model, 4, seed=5):
            best, hyp = exact.decode_loglik(loglik), pruned.decode_loglik(loglik)
            if not np.isfinite(best.score):
                continue
            # a narrow beam is widened until the line has a hypothesis; never better than exact
            assert np.isfinite(hyp.score) and hyp.score <= best.score + 1e-9
            assert hyp.optical_score <= optical(model, loglik, hyp.text) + 1e-9


# ----------------------------------------------------------------------------- edge cases and errors

def test_zero_frame_and_impossible_lines_give_the_empty_result(model, lm_files):
    S = model.topology.n_emitting
    for recognizer in (Recognizer(model), Recognizer(model, lexicon=LEXICON, lm=lm_files[0])):
        for loglik in (np.zeros((0, S)), np.zeros((1, S))):   # 1 frame < 2 states of any model
            hyp = recognizer.decode_loglik(loglik)
            assert (hyp.text, hyp.score, hyp.words, hyp.nbest) == ("", -math.inf, [], [])
            assert hyp.n_frames == len(loglik)
            assert json.loads(json.dumps(hyp.to_dict()))["score"] is None
        nan = np.full((5, S), np.nan)
        assert recognizer.decode_loglik(nan).text == ""


def test_out_of_alphabet_words_are_reported(model):
    recognizer = Recognizer(model, lexicon=["a", "xyz", "b"])
    assert recognizer.rejected_words == {"xyz": "xyz"}
    assert "1 of 3 words" in recognizer.lexicon_message
    assert recognizer.words == ["a", "b"]


@pytest.mark.parametrize("case", ["missing lm", "corrupt lm", "missing lexicon", "empty lexicon file",
                                  "empty lexicon", "unspellable lexicon", "lm misses the lexicon",
                                  "lm without lexicon", "unk without char lm", "negative lm weight",
                                  "zero beam"])
def test_bad_input_raises_one_clear_error(model, lm_files, tmp_path, case):
    corrupt = tmp_path / "corrupt.arpa"
    corrupt.write_bytes(b"\\data\\\nngram 1=zz\n\x00\x01garbage")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    kwargs = {
        "missing lm": dict(lexicon=LEXICON, lm=tmp_path / "nope.arpa"),
        "corrupt lm": dict(lexicon=LEXICON, lm=corrupt),
        "missing lexicon": dict(lexicon=tmp_path / "nope.txt"),
        "empty lexicon file": dict(lexicon=empty),
        "empty lexicon": dict(lexicon=[]),
        "unspellable lexicon": dict(lexicon=["xyz", "q"]),
        "lm misses the lexicon": dict(lexicon=["aa", "bb", "cc", "a"], lm=lm_files[0]),
        "lm without lexicon": dict(lm=lm_files[0]),
        "unk without char lm": dict(lexicon=LEXICON, unk_penalty=-1.0),
        "negative lm weight": dict(lm_weight=-1.0),
        "zero beam": dict(beam=0.0),
    }[case]
    with pytest.raises(HwrError) as info:
        Recognizer(model, **kwargs)
    assert "\n" not in str(info.value)


def test_emissions_file_decodes_like_the_matrices(model, lm_files, tmp_path):
    S = model.topology.n_emitting
    lines = {"l1": planted(model, "cab ba"), "l2": np.zeros((0, S), np.float32), "l3": planted(model, "b c")}
    path = tmp_path / "emissions.npz"
    np.savez(path, **lines)
    recognizer = Recognizer(model, lexicon=LEXICON, lm=lm_files[0])
    decoded = list(recognizer.decode_emissions(path))
    assert [i for i, _ in decoded] == ["l1", "l2", "l3"]
    assert [h.text for _, h in decoded] == ["cab ba", "", "b c"]
    assert decoded[0][1].score == recognizer.decode_loglik(lines["l1"]).score

    np.savez(tmp_path / "wrong.npz", l1=np.zeros((4, S + 1)))
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 not a zip")
    for bad in ("wrong.npz", "corrupt.npz", "missing.npz"):
        with pytest.raises(HwrError):
            list(read_emissions(tmp_path / bad, S))
    with pytest.raises(HwrError):
        recognizer.decode_loglik(np.zeros((4, S + 1)))


def test_a_line_that_loses_every_hypothesis_gets_its_partial_traceback(model, lm_files):
    # the emissions stop in the middle of the last letter's states: with one token per frame
    # no word ends before the last frame, so the word being read is completed and aligned
    loglik = planted(model, "cab", frames_per_state=3)[:-4]
    recognizer = Recognizer(model, lexicon=["cab", "ba"], lm=lm_files[0], beam=1e-3, max_active=1)
    hyp = recognizer.decode_loglik(loglik)
    assert hyp.text == "cab"
    assert hyp.optical_score == pytest.approx(optical(model, loglik, "cab"), abs=1e-9)
    assert hyp.score == pytest.approx(hyp.optical_score + hyp.lm_score)
    assert [(w.text, w.first_frame, w.last_frame) for w in hyp.words] == [("cab", 0, len(loglik) - 1)]
    assert math.isnan(hyp.words[0].confidence)


# ----------------------------------------------------------------------------- word confidences

def test_word_confidences_on_the_bundled_lines_are_informative():
    """The default model on the bundled test lines: confidences are posteriors in [0, 1]
    that separate correct from wrong words (not ~1 for everything)."""
    import difflib

    from hybrid_hwr.data import load_image, read_split, sample_dir
    from hybrid_hwr.demo import load_default_recognizer
    from hybrid_hwr.text import tokenize

    recognizer, settings = load_default_recognizer()
    assert recognizer.confidence_scale == pytest.approx(1.0 / recognizer.lm_weight)
    confidences, correct = [], []
    for line in read_split(sample_dir() / "test.tsv", limit=25):
        hyp = recognizer.decode_image(load_image(line.image_path))
        words = [w.text for w in hyp.words]
        assert " ".join(words) == hyp.text
        ok = [False] * len(words)
        matcher = difflib.SequenceMatcher(a=tokenize(line.text, settings.lang), b=words, autojunk=False)
        for block in matcher.get_matching_blocks():
            ok[block.b:block.b + block.size] = [True] * block.size
        confidences += [w.confidence for w in hyp.words]
        correct += ok
    c, ok = np.array(confidences), np.array(correct)
    assert len(c) > 150 and 0.2 < ok.mean() < 0.9           # both kinds of words are there
    assert np.all((c >= 0.0) & (c <= 1.0))
    # lines with competing hypotheses give confidences strictly between 0 and 1
    assert np.mean((c > 0.0) & (c < 0.999)) > 0.5
    assert c[ok].mean() > c[~ok].mean() + 0.15
    # ranking: a correct word is more confident than a wrong one most of the time
    pairs = c[ok][:, None] - c[~ok][None, :]
    assert np.mean(pairs > 0) + 0.5 * np.mean(pairs == 0) > 0.7


def test_one_bad_array_of_an_emissions_file_is_skipped_and_the_others_decoded(model, lm_files, tmp_path):
    S = model.topology.n_emitting
    path = tmp_path / "mixed.npz"
    np.savez(path, good1=planted(model, "cab"), wide=np.zeros((4, S + 1)),
             cplx=planted(model, "ba").astype(np.complex64), good2=planted(model, "b c"))
    recognizer = Recognizer(model, lexicon=LEXICON, lm=lm_files[0])
    bad = []
    decoded = list(recognizer.decode_emissions(path, on_bad=lambda name, msg: bad.append((name, msg))))
    assert [(i, h.text) for i, h in decoded] == [("good1", "cab"), ("good2", "b c")]
    assert [name for name, _ in bad] == ["wide", "cplx"]
    assert "has %d states" % (S + 1) in bad[0][1] and "real numbers" in bad[1][1]
    with pytest.raises(HwrError, match="'wide'"):    # without a handler the first bad array stops the file
        list(recognizer.decode_emissions(path))


def reference_nbest(lattices, lat, n):
    """The n-best search of ``WordLattices.nbest_search`` in plain Python, as the module
    docstring of hybrid_hwr.decode describes it: boundaries in order, at each the ``n + 2``
    best hypotheses with distinct word sequences (stable sort) end the line or take every
    arc starting there. Returns [(score, lattice arcs)] in the order found."""
    near = np.flatnonzero(lat.near)
    scorer, lmw, extend = lattices.lm_scorer, lattices.objective.lm_weight, lattices.objective.extend
    pending, finals = {-1: [(0.0, scorer.BOS, (), ())]}, []
    nodes = sorted(set(lat.start[near].tolist()) | {-1} | {int(t) - 1 for t in np.flatnonzero(lat.tail_near)})
    for node in nodes:
        hyps = sorted(pending.pop(node, []), key=lambda h: -h[0])
        seen, top = set(), []
        for h in hyps:
            if h[2] not in seen and len(top) < n + 2:
                seen.add(h[2])
                top.append(h)
        if lat.tail_near[node + 1] and np.isfinite(lat.tail[node + 1]):
            finals += [(score + lat.tail[node + 1] + lmw * scorer.end_score(state), path)
                       for score, state, _, path in top]
        for k in near[lat.start[near] == node].tolist():
            unk = bool(lat.is_unk[k])
            key = lat.unk_items[int(lat.ids[k])].text if unk else int(lat.token[k])
            for score, state, words, path in top:
                lp, nxt = scorer.score(state, int(lat.token[k]))
                glued = bool(lat.glue_head[k] and path and lat.glue_tail[path[-1]])
                pending.setdefault(int(lat.end[k]), []).append(
                    (extend(score, lat.sigma[k], lp + lat.extra[k], unk, glued), nxt, words + (key,), path + (k,)))
    return finals


@pytest.mark.parametrize("mode", ["lexicon + LM + glue", "open vocabulary", "character LM"])
def test_the_nbest_kernel_is_the_plain_python_search(model, lm_files, mode):
    knobs = {"lexicon + LM + glue": dict(lexicon=LEXICON, lm=lm_files[0], glue_penalty=-1.0),
             "open vocabulary": dict(lexicon=LEXICON, lm=lm_files[0], char_lm=lm_files[1], unk_penalty=1.5),
             "character LM": dict(char_lm=lm_files[1])}[mode]
    recognizer = Recognizer(model, lm_weight=1.5, word_penalty=-0.5, beam=30.0, **knobs)
    lattices, n_compared = recognizer.lattices, 0
    for loglik in random_lines(model, 12, max_frames=14, seed=9):
        out = recognizer.search.run(loglik)
        lat = lattices.build(out, 50.0)
        if lat is None:
            continue
        for n in (1, 3, 8):
            found = lattices.nbest_search(lat, n)
            expected = reference_nbest(lattices, lat, n)
            assert [s for s, _ in expected] == found.score.tolist()      # same floats, same order
            assert [list(p) for _, p in expected] == [found.path(i) for i in range(len(found.score))]
            n_compared += len(expected)
    assert n_compared > 50


def test_distinct_arcs_keep_the_best_of_each_span_and_word_in_lattice_order():
    from hybrid_hwr.search.lattice import distinct_arcs

    rng = np.random.default_rng(5)
    for _ in range(20):
        n = int(rng.integers(1, 400))
        b = rng.integers(-1, 6, size=n)
        end = b + 1 + rng.integers(0, 4, size=n)
        is_unk = rng.random(n) < 0.2
        token = np.where(is_unk, -1, rng.integers(0, 5, size=n))
        sigma = rng.integers(-3, 1, size=n).astype(float)      # ties on purpose
        # the definition: sort by (start, end, word, out-of-lexicon index, -sigma), stably; keep each key's first
        unk_key = np.where(is_unk, np.arange(n), -1)
        order = np.lexsort((-sigma, unk_key, token, end, b))
        key = np.stack([b, end, token, unk_key], 1)[order]
        first = np.ones(n, dtype=bool)
        first[1:] = np.any(key[1:] != key[:-1], axis=1)
        assert distinct_arcs(b, end, token, is_unk, sigma).tolist() == order[first].tolist()
