"""Viterbi, forward-backward and path segmentation against brute force and hmmlearn."""

import numpy as np
import pytest
from hmmlearn.base import BaseHMM
from scipy.special import logsumexp

from hybrid_hwr.align import (
    forward_backward, path_occupancies, path_symbols, path_to_segments, path_units,
    state_occupancies, viterbi, word_spans,
)
from hybrid_hwr.hmm import HmmTopology, Transitions, build_line_graph, build_loop_graph

SYMBOLS = [" ", "a", "b", "c", "d"]


def ids(text):
    return np.array([SYMBOLS.index(c) for c in text])


def brute_force(loglik, g):
    """Score every node sequence of length T: (log Z, best score, best path, gamma, arc counts)."""
    T, G = len(loglik), g.n_nodes
    paths = np.stack(np.unravel_index(np.arange(G ** T), (G,) * T), axis=1)
    trans = g.dense_logp()
    score = (g.init_logp[paths[:, 0]] + g.final_logp[paths[:, -1]]
             + loglik[np.arange(T), g.emit_state[paths]].sum(1)
             + trans[paths[:, :-1], paths[:, 1:]].sum(1))
    log_z = logsumexp(score)
    w = np.exp(score - log_z)
    gamma = np.stack([np.bincount(paths[:, t], w, G) for t in range(T)])
    pairs = sum(np.bincount(paths[:, t] * G + paths[:, t + 1], w, G * G) for t in range(T - 1))
    arc_occ = pairs.reshape(G, G)[g.arc_from, g.arc_to]
    best = int(np.argmax(score))
    return log_z, score[best], paths[best], gamma, arc_occ


class FixedEmissionHMM(BaseHMM):
    """hmmlearn's dense HMM code fed with our per-node log-likelihoods."""

    def __init__(self, framelogprob=None, startprob=None, transmat=None):
        super().__init__(n_components=len(startprob), implementation="log")
        self.framelogprob = framelogprob
        self.startprob_ = startprob
        self.transmat_ = transmat

    def _check(self):
        pass   # a line model's last state leaks its exit mass to the end of line: rows sum < 1

    def _compute_log_likelihood(self, X):
        return self.framelogprob


def hmmlearn_model(loglik, g):
    """The same left-to-right HMM for hmmlearn; final weights folded into the last frame."""
    frames = loglik[:, g.emit_state].copy()
    frames[-1] += g.final_logp
    return FixedEmissionHMM(frames, np.exp(g.init_logp), np.exp(g.dense_logp()))


@pytest.mark.parametrize("states, text, T", [
    ({" ": 1, "a": 2, "b": 2, "c": 1, "d": 1}, "a b", 6),
    ({" ": 1, "a": 2, "b": 2, "c": 1, "d": 1}, "a b", 7),
    ({" ": 2, "a": 2, "b": 1, "c": 1, "d": 1}, "ab", 6),
    ({" ": 1, "a": 1, "b": 1, "c": 1, "d": 1}, "a bc", 5),
])
def test_forward_backward_and_viterbi_equal_brute_force(states, text, T):
    rng = np.random.default_rng(T)
    top = HmmTopology(SYMBOLS, states)
    tr = Transitions(top, self_prob=0.55, space_prob=0.7, blank_prob=0.4)
    tr.log_self = np.log(rng.uniform(0.2, 0.9, top.n_emitting))
    tr.log_next = np.log1p(-np.exp(tr.log_self))
    g = build_line_graph(top, tr, ids(text))
    loglik = rng.normal(0, 2, (T, top.n_emitting))
    log_z, best_score, best_path, gamma_bf, occ_bf = brute_force(loglik, g)

    log_prob, gamma, occ = forward_backward(loglik, g)
    assert np.isclose(log_prob, log_z, rtol=0, atol=1e-9)
    assert gamma.dtype == np.float32 and gamma.shape == (T, g.n_nodes)
    np.testing.assert_allclose(gamma, gamma_bf, atol=1e-6)
    np.testing.assert_allclose(gamma.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(occ, occ_bf, atol=1e-9)
    assert np.isclose(occ.sum(), T - 1)

    score, path = viterbi(loglik, g)
    assert np.isclose(score, best_score, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(path, best_path)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_viterbi_and_forward_equal_hmmlearn(seed):
    rng = np.random.default_rng(seed)
    top = HmmTopology(SYMBOLS, {" ": 2, "a": 4, "b": 3, "c": 5, "d": 4})
    tr = Transitions(top, space_prob=0.6, blank_prob=0.3)
    tr.log_self = np.log(rng.uniform(0.3, 0.9, top.n_emitting))
    tr.log_next = np.log1p(-np.exp(tr.log_self))
    g = build_line_graph(top, tr, ids("bad cab dc"))
    T = 80
    loglik = rng.normal(0, 3, (T, top.n_emitting))
    ref = hmmlearn_model(loglik, g)
    X = np.zeros((T, 1))
    with np.errstate(divide="ignore"):
        ref_score, ref_path = ref.decode(X, algorithm="viterbi")
        ref_log_prob, ref_post = ref.score_samples(X)
    score, path = viterbi(loglik, g)
    np.testing.assert_array_equal(path, ref_path)
    assert np.isclose(score, ref_score, rtol=1e-12)
    log_prob, gamma, _ = forward_backward(loglik, g)
    assert np.isclose(log_prob, ref_log_prob, rtol=1e-12)
    np.testing.assert_allclose(gamma, ref_post, atol=1e-5)
    # loop graph (free decoding) too
    loop = build_loop_graph(top, tr, char_penalty=0.5)
    ref = hmmlearn_model(loglik, loop)
    with np.errstate(divide="ignore"):
        ref_score, ref_path = ref.decode(X, algorithm="viterbi")
    score, path = viterbi(loglik, loop)
    np.testing.assert_array_equal(path, ref_path)
    assert np.isclose(score, ref_score, rtol=1e-12)


def planted_line(top, units, rng):
    """Frames of a planted segmentation: units = [(symbol, taken)], random state durations."""
    states = []
    for k, taken in units:
        if taken:
            for s in top.states_of(k):
                states += [s] * rng.integers(1, 5)
    loglik = np.full((len(states), top.n_emitting), -50.0)
    loglik[np.arange(len(states)), states] = 0.0
    return np.array(states), loglik


def test_forced_alignment_recovers_a_planted_segmentation():
    rng = np.random.default_rng(7)
    top = HmmTopology(SYMBOLS, {" ": 2, "a": 3, "b": 4, "c": 2, "d": 5})
    tr = Transitions(top)
    text = "ab cab dd"
    g = build_line_graph(top, tr, ids(text))
    for trial in range(5):
        # leading blank taken, first space taken, second space skipped, trailing blank skipped
        taken = [True] + [True, True, True, True, True, True, False, True, True] + [False]
        units = [(0, True)] + [(SYMBOLS.index(c), t) for c, t in zip(text, taken[1:-1])] + [(0, False)]
        states, loglik = planted_line(top, units, rng)
        score, path = viterbi(loglik, g)
        np.testing.assert_array_equal(g.emit_state[path], states)
        assert np.isfinite(score)
        segs = path_to_segments(path, g, text)
        # expected: character spans from the planted durations
        expect, t = [], 0
        for (k, ok), pos in zip(units, [-1] + list(range(len(text))) + [-1]):
            if ok:
                length = 0
                for s in top.states_of(k):
                    while t + length < len(states) and states[t + length] == s:
                        length += 1
                if pos >= 0:
                    expect.append((pos, t, t + length - 1))
                t += length
        assert [tuple(s) for s in segs] == expect
        assert 6 not in [s.char_index for s in segs]             # the skipped space
        words = word_spans(segs, g)
        assert [(w.first_char, w.last_char) for w in words] == [(0, 1), (3, 5), (7, 8)]
        by_char = {s.char_index: s for s in segs}
        assert [(w.first_frame, w.last_frame) for w in words] == [
            (by_char[0].first_frame, by_char[1].last_frame),
            (by_char[3].first_frame, by_char[5].last_frame),
            (by_char[7].first_frame, by_char[8].last_frame)]
        # forward-backward is just as sure, and its triples point at the planted states
        log_prob, gamma, _ = forward_backward(loglik, g, beam=20.0)
        assert np.all(gamma[np.arange(len(path)), path] > 0.999)
        f, s, w = state_occupancies(gamma, g)
        assert np.isclose(w.sum(), len(path), atol=1e-3)
        np.testing.assert_array_equal(s[w > 0.5], states[f[w > 0.5]])
        f, s, w = path_occupancies(path, g)
        np.testing.assert_array_equal(s, states)


def test_optional_space_follows_the_emissions():
    top = HmmTopology(SYMBOLS, 2)
    tr = Transitions(top, space_prob=0.5)
    g = build_line_graph(top, tr, ids("a b"))
    a, b, sp = top.states_of(1), top.states_of(2), top.states_of(0)
    for with_space in (False, True):
        states = [a[0], a[0], a[1], b[0], b[1], b[1]]
        if with_space:
            states[3:3] = [sp[0], sp[1], sp[1]]
        loglik = np.full((len(states), top.n_emitting), -5.0)
        loglik[np.arange(len(states)), states] = 0.0
        _, path = viterbi(loglik, g)
        chars = [s.char_index for s in path_to_segments(path, g)]
        assert chars == ([0, 1, 2] if with_space else [0, 2])
        _, gamma, occ = forward_backward(loglik, g)
        space_nodes = g.node_pos == 1
        assert (gamma[:, space_nodes].sum() > 2.5) == with_space


def test_impossible_alignment_gives_minus_inf_without_nan():
    top = HmmTopology(SYMBOLS, 4)
    tr = Transitions(top)
    g = build_line_graph(top, tr, ids("abc"))
    assert g.min_frames == 12
    rng = np.random.default_rng(0)
    for loglik in (rng.normal(size=(11, top.n_emitting)),          # too short
                   np.zeros((0, top.n_emitting)),                    # empty
                   np.full((30, top.n_emitting), -np.inf),           # nothing fits
                   np.full((30, top.n_emitting), np.nan)):           # garbage in
        score, path = viterbi(loglik, g)
        assert score == -np.inf and len(path) == 0
        log_prob, gamma, occ = forward_backward(loglik, g, beam=10.0)
        assert log_prob == -np.inf
        assert not np.isnan(gamma).any() and not gamma.any() and not occ.any()
    # exactly min_frames is possible; a few NaN / -inf frames elsewhere only rule states out
    loglik = rng.normal(size=(12, top.n_emitting))
    assert np.isfinite(viterbi(loglik, g)[0])
    loglik = rng.normal(size=(40, top.n_emitting))
    loglik[5, :3] = np.nan
    loglik[9, 7] = -np.inf
    log_prob, gamma, occ = forward_backward(loglik, g)
    assert np.isfinite(log_prob) and np.all(np.isfinite(gamma)) and np.all(np.isfinite(occ))
    np.testing.assert_allclose(gamma.sum(1), 1.0, atol=1e-5)


def test_pruned_forward_backward_matches_exact():
    rng = np.random.default_rng(3)
    top = HmmTopology(SYMBOLS, 6)
    tr = Transitions(top)
    g = build_line_graph(top, tr, ids("dab cab bad cd"))
    loglik = rng.normal(0, 2, (200, top.n_emitting))
    exact = forward_backward(loglik, g)
    wide = forward_backward(loglik, g, beam=1e4)
    assert exact[0] == wide[0]
    np.testing.assert_array_equal(exact[1], wide[1])
    np.testing.assert_array_equal(exact[2], wide[2])
    # a realistic beam keeps the answer while dropping most cells
    states, planted = planted_line(top, [(0, True)] + [(SYMBOLS.index(c), True) for c in "dab cab bad cd"]
                                   + [(0, False)], rng)
    noisy = planted + rng.normal(0, 1, planted.shape)
    exact = forward_backward(noisy, g)
    pruned = forward_backward(noisy, g, beam=30.0)
    assert abs(exact[0] - pruned[0]) < 1e-6
    assert np.count_nonzero(pruned[1]) < 0.5 * np.count_nonzero(exact[1] > 0)
    np.testing.assert_allclose(pruned[1].sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(pruned[2].sum(), len(noisy) - 1)
    # a beam too tight to keep any complete path falls back to the exact answer
    # (a pruned lattice sums fewer paths, so its total can only be lower)
    log_z = forward_backward(loglik, g)[0]
    for beam in (1e-3, 0.5, 3.0):
        tight = forward_backward(loglik, g, beam=beam)
        assert np.isfinite(tight[0]) and tight[0] <= log_z + 1e-9
        np.testing.assert_allclose(tight[1].sum(1), 1.0, atol=1e-5)


def test_loop_graph_decodes_a_planted_sequence_with_repeated_characters():
    rng = np.random.default_rng(5)
    top = HmmTopology(SYMBOLS, {" ": 1, "a": 3, "b": 2, "c": 2, "d": 4})
    tr = Transitions(top)
    g = build_loop_graph(top, tr)
    text = "abba cdd bbb"
    states, loglik = planted_line(top, [(SYMBOLS.index(c), True) for c in text], rng)
    score, path, arcs = viterbi(loglik, g, return_arcs=True)
    np.testing.assert_array_equal(g.emit_state[path], states)
    assert "".join(SYMBOLS[k] for k in path_symbols(path, g, arcs)) == text
    units = path_units(path, g, arcs)
    assert units[0].first_frame == 0 and units[-1].last_frame == len(path) - 1
    assert all(u.char_index == -1 for u in units)


def test_arcs_tell_a_repeated_one_state_model_from_a_self_loop():
    top = HmmTopology(SYMBOLS, 1)
    g = build_loop_graph(top, Transitions(top), char_penalty=-5.0)   # cheap characters
    b = SYMBOLS.index("b")
    loglik = np.full((4, top.n_emitting), -50.0)
    loglik[:, b] = 0.0
    score, path, arcs = viterbi(loglik, g, return_arcs=True)
    assert list(path) == [b] * 4
    assert "".join(SYMBOLS[k] for k in path_symbols(path, g, arcs)) == "bbbb"   # re-entered each frame
    assert len(path_symbols(path, g)) == 1                                       # nodes alone cannot tell
