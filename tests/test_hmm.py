"""Character HMM topology, transitions and line graphs."""

import json

import numpy as np
import pytest

from hybrid_hwr.align import forward_backward, viterbi
from hybrid_hwr.errors import HwrError
from hybrid_hwr.hmm import (
    ARC_SELF, OPT_BLANK_ENTER, OPT_BLANK_SKIP, OPT_SPACE_ENTER, OPT_SPACE_SKIP,
    HmmTopology, TransitionAccumulator, Transitions, build_line_graph, build_loop_graph,
    estimate_state_counts, min_frames,
)

SYMBOLS = [" ", "a", "b", "c"]


def ids(text):
    return np.array([SYMBOLS.index(c) for c in text])


def outgoing_mass(graph):
    """Per node: sum of exp(outgoing arc weights) + exp(final weight)."""
    return np.bincount(graph.arc_from, np.exp(graph.arc_logp), graph.n_nodes) + np.exp(graph.final_logp)


def sample_path(graph, rng):
    """Draw a node path from the graph's own probabilities."""
    g = rng.choice(graph.n_nodes, p=np.exp(graph.init_logp))
    path = [g]
    while True:
        out = np.flatnonzero(graph.arc_from == g)
        p = np.concatenate([np.exp(graph.arc_logp[out]), [np.exp(graph.final_logp[g])]])
        i = rng.choice(len(p), p=p / p.sum())
        if i == len(out):
            return np.array(path)
        g = graph.arc_to[out[i]]
        path.append(g)


def test_topology_offsets_and_json_roundtrip():
    top = HmmTopology(SYMBOLS, {" ": 2, "a": 3, "b": 1, "c": 4})
    assert top.n_emitting == 10 and top.space_id == 0
    np.testing.assert_array_equal(top.state_offset, [0, 2, 5, 6])
    np.testing.assert_array_equal(top.state_symbol, [0, 0, 1, 1, 1, 2, 3, 3, 3, 3])
    np.testing.assert_array_equal(top.states_of(3), [6, 7, 8, 9])
    again = HmmTopology.from_dict(json.loads(json.dumps(top.to_dict())))
    assert again == top
    assert HmmTopology(SYMBOLS, 6).n_emitting == 24
    with pytest.raises(HwrError, match="no state count"):
        HmmTopology(SYMBOLS, {"a": 3})
    with pytest.raises(HwrError):
        HmmTopology(SYMBOLS, 0)
    assert HmmTopology(["a", "b"]).space_id == -1


@pytest.mark.parametrize("text", ["abc", "a b", " ab  c ", "a", " ", "", "aa bb", "ab c  "])
def test_line_graph_is_a_normalised_left_to_right_model(text):
    top = HmmTopology(SYMBOLS, {" ": 1, "a": 3, "b": 2, "c": 4})
    tr = Transitions(top, self_prob=0.7, space_prob=0.8, blank_prob=0.3)
    g = build_line_graph(top, tr, ids(text))
    # arcs sorted by destination, then source
    key = g.arc_to.astype(np.int64) * g.n_nodes + g.arc_from
    assert np.all(np.diff(key) > 0)
    # probabilities leaving every node (and entering the line) sum to one
    np.testing.assert_allclose(outgoing_mass(g), 1.0, atol=1e-12)
    assert np.isclose(np.exp(g.init_logp).sum(), 1.0)
    # left to right: no arc goes back, no arc skips inside a model
    assert np.all(g.arc_to >= g.arc_from)
    moves = g.arc_to != g.arc_from
    src, dst = g.arc_from[moves], g.arc_to[moves]
    inner = ~g.node_last[src]
    assert np.all(dst[inner] == src[inner] + 1)
    assert np.all(g.node_pos[dst[inner]] == g.node_pos[src[inner]])
    assert np.all(g.node_first[dst[~inner]])
    # every non-space character is present exactly once, with its index
    chars = [i for i, c in enumerate(text) if c != " "]
    assert sorted(set(g.node_pos[(g.node_pos >= 0) & (g.node_symbol != 0)])) == chars
    # minimal length = states of the mandatory characters (or one blank for an empty line)
    expect = sum(top.n_states_of[SYMBOLS.index(c)] for c in text if c != " ") or 1
    assert min_frames(g) == expect
    rng = np.random.default_rng(0)
    assert min(len(sample_path(g, rng)) for _ in range(50)) >= expect
    flat = np.zeros((expect, top.n_emitting))
    assert np.isfinite(viterbi(flat, g)[0]) and np.isneginf(viterbi(flat[1:], g)[0])


def test_optional_models_and_their_weights():
    top = HmmTopology(SYMBOLS, 2)
    tr = Transitions(top, self_prob=0.6, space_prob=0.8, blank_prob=0.3)
    g = build_line_graph(top, tr, ids("a b"))
    assert list(g.node_pos) == [-1, -1, 0, 0, 1, 1, 2, 2, -1, -1]
    # the line may start in the blank or in 'a'
    np.testing.assert_allclose(np.exp(g.init_logp[[0, 2]]), [0.3, 0.7])
    assert g.init_optional[0] == OPT_BLANK_ENTER and g.init_optional[2] == OPT_BLANK_SKIP
    # after 'a': into the space (0.4 * 0.8) or over it into 'b' (0.4 * 0.2)
    lp = g.dense_logp()
    np.testing.assert_allclose(np.exp(lp[3, [4, 6]]), [0.4 * 0.8, 0.4 * 0.2])
    assert set(g.arc_optional[g.arc_from == 3]) == {0, OPT_SPACE_ENTER, OPT_SPACE_SKIP}
    # the line ends after 'b' (exit 0.4 * skip blank 0.7) or after the trailing blank (0.4)
    np.testing.assert_allclose(np.exp(g.final_logp[[7, 9]]), [0.4 * 0.7, 0.4])
    assert np.isneginf(g.final_logp[:7]).all()


def test_line_graph_rejects_bad_input():
    top = HmmTopology(SYMBOLS, 2)
    tr = Transitions(top)
    with pytest.raises(HwrError, match="outside the alphabet"):
        build_line_graph(top, tr, [1, 7])
    with pytest.raises(HwrError, match="transitions have"):
        build_line_graph(top, Transitions(5), [1])
    no_space = HmmTopology(["a", "b"], 2)
    g = build_line_graph(no_space, Transitions(no_space), [0, 1])
    assert g.n_nodes == 4 and min_frames(g) == 4
    with pytest.raises(HwrError, match="empty transcription"):
        build_line_graph(no_space, Transitions(no_space), [])


def test_loop_graph_penalty_semantics():
    top = HmmTopology(SYMBOLS, {" ": 1, "a": 3, "b": 2, "c": 2})
    tr = Transitions(top, self_prob=0.6)
    g = build_loop_graph(top, tr)
    assert g.n_nodes == top.n_emitting and min_frames(g) == 1
    # penalty 0: the arcs leaving every state sum to one (the line may end after any
    # model's exit, which the final weight scores with the same exit probability)
    arc_mass = np.bincount(g.arc_from, np.exp(g.arc_logp), g.n_nodes)
    np.testing.assert_allclose(arc_mass, 1.0, atol=1e-12)
    np.testing.assert_allclose(g.final_logp[g.node_last], tr.log_next[g.node_last])
    assert np.isclose(np.exp(g.init_logp).sum(), 1.0)
    pen = build_loop_graph(top, tr, char_penalty=2.0)
    entering = pen.node_first[pen.arc_to] & (pen.arc_kind != ARC_SELF)
    np.testing.assert_allclose(pen.arc_logp[entering], g.arc_logp[entering] - 2.0)
    np.testing.assert_allclose(pen.arc_logp[~entering], g.arc_logp[~entering])
    np.testing.assert_allclose(pen.init_logp, g.init_logp - 2.0)


def test_transitions_arrays_roundtrip_and_validation():
    tr = Transitions(7, self_prob=0.55, space_prob=0.9, blank_prob=0.2)
    tr.log_self[3], tr.log_next[3] = np.log(0.9), np.log(0.1)
    again = Transitions.from_arrays({k: v for k, v in tr.to_arrays().items()})
    np.testing.assert_array_equal(again.log_self, tr.log_self)
    assert (again.space_prob, again.blank_prob) == (0.9, 0.2)
    again = Transitions.from_dict(json.loads(json.dumps(tr.to_dict())))
    np.testing.assert_allclose(again.log_self, tr.log_self, rtol=1e-12)
    np.testing.assert_allclose(again.log_next, tr.log_next, rtol=1e-9)
    assert (again.space_prob, again.blank_prob) == (0.9, 0.2)
    with pytest.raises(HwrError):
        Transitions.from_dict({"self_prob": [0.5, 1.0], "space_prob": 0.5, "blank_prob": 0.5})
    bad = tr.to_arrays()
    bad["log_self"][0] = np.nan
    with pytest.raises(HwrError):
        Transitions.from_arrays(bad)
    with pytest.raises(HwrError):
        Transitions.from_arrays({"log_self": np.zeros(3)})


def test_from_summaries_frequencies_floor_and_unseen_states():
    acc = TransitionAccumulator(4)
    acc.self_counts[:] = [3, 0, 1000, 0]
    acc.next_counts[:] = [1, 5, 0, 0]
    acc.optional_counts[[OPT_SPACE_ENTER, OPT_SPACE_SKIP]] = [9, 1]
    prev = Transitions(4, self_prob=0.7, blank_prob=0.25)
    tr = Transitions.from_summaries(acc, floor=0.01, previous=prev)
    np.testing.assert_allclose(np.exp(tr.log_self), [0.75, 0.01, 0.99, 0.7])
    np.testing.assert_allclose(np.exp(tr.log_self) + np.exp(tr.log_next), 1.0)
    assert np.isclose(tr.space_prob, 0.9) and tr.blank_prob == 0.25
    # accumulators add up (the way jobs are combined) and survive a round trip
    total = sum([acc, TransitionAccumulator.from_arrays(acc.to_arrays())])
    np.testing.assert_array_equal(total.self_counts, 2 * acc.self_counts)
    fresh = Transitions.from_summaries(TransitionAccumulator(4))
    assert np.all(np.isfinite(fresh.log_self))


def test_reestimation_recovers_planted_transition_probabilities():
    """Lines drawn from known transitions, peaked emissions: the M-step recovers them."""
    rng = np.random.default_rng(1)
    top = HmmTopology(SYMBOLS, {" ": 2, "a": 3, "b": 3, "c": 2})
    true = Transitions(top, space_prob=0.8, blank_prob=0.3)
    p_self = rng.uniform(0.4, 0.85, top.n_emitting)
    true.log_self, true.log_next = np.log(p_self), np.log1p(-p_self)
    start = Transitions(top)            # 0.6 / 0.5 / 0.5 everywhere
    acc_fb, acc_vit = TransitionAccumulator(top), TransitionAccumulator(top)
    texts = ["ab ca", "cab", "a b c", "bca ab", "cc a"]
    for n in range(150):
        text_ids = ids(texts[n % len(texts)])
        path = sample_path(build_line_graph(top, true, text_ids), rng)
        g = build_line_graph(top, start, text_ids)
        loglik = np.full((len(path), top.n_emitting), -60.0)
        loglik[np.arange(len(path)), g.emit_state[path]] = 0.0
        lp, gamma, occ = forward_backward(loglik, g)
        acc_fb.accumulate(g, occ, gamma)
        score, vpath, arcs = viterbi(loglik, g, return_arcs=True)
        np.testing.assert_array_equal(vpath, path)
        acc_vit.accumulate_path(g, vpath)
        # every frame either loops or leaves its state (the last one exits the line)
        assert np.isclose(acc_fb.self_counts.sum() + acc_fb.next_counts.sum(),
                          acc_vit.self_counts.sum() + acc_vit.next_counts.sum())
    for acc in (acc_fb, acc_vit):
        est = Transitions.from_summaries(acc, floor=1e-3)
        n = acc.self_counts + acc.next_counts
        tol = 4 * np.sqrt(p_self * (1 - p_self) / n) + 1e-9
        assert np.all(np.abs(np.exp(est.log_self) - p_self) < tol)
        assert abs(est.space_prob - 0.8) < 0.1 and abs(est.blank_prob - 0.3) < 0.1
    np.testing.assert_allclose(acc_fb.self_counts, acc_vit.self_counts, atol=1e-6)
    np.testing.assert_allclose(acc_fb.optional_counts, acc_vit.optional_counts, atol=1e-6)


def test_state_counts_from_character_lengths():
    counts = estimate_state_counts({"i": 3.0, "m": 19.0, "w": 40.0, "a": float("nan")},
                                   frames_per_state=2.0, min_states=2, max_states=12, default=6)
    assert counts == {"i": 2, "m": 10, "w": 12, "a": 6}
    top = HmmTopology(["a", "i", "m", "w"], counts)
    assert list(top.n_states_of) == [6, 2, 10, 12]
