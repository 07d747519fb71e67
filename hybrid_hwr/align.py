"""Viterbi and forward-backward over line graphs (numba kernels + thin wrappers).

The kernels walk the arc list of a :class:`hybrid_hwr.hmm.LineGraph` (arcs sorted by
destination), so their cost is O(T x arcs) instead of the O(T x G^2) of a dense
HMM.  Everything is in natural-log space with float64 accumulation; -inf marks
impossible states and never turns into NaN.

``loglik`` is the (T, S) matrix of per-frame emission log-likelihoods of the S
emission states (a GMM's log densities, or an MLP's scaled log-likelihoods); node
``g`` of the graph reads column ``graph.emit_state[g]``.
"""

from __future__ import annotations

from typing import NamedTuple

import numba
import numpy as np

from .hmm import ARC_NEXT, LineGraph

__all__ = [
    "viterbi", "forward_backward", "CharSegment", "WordSpan", "PathUnit",
    "path_units", "path_to_segments", "word_spans", "path_symbols",
    "state_occupancies", "path_occupancies",
]

NEG_INF = -np.inf


# ----------------------------------------------------------------------------- kernels

@numba.njit(cache=True)
def _viterbi_kernel(loglik, emit_state, in_ptr, arc_from, arc_logp, init_logp, final_logp):
    """Best path. Returns (score, node path (T,), arc path (T-1,)); score -inf if none."""
    T = loglik.shape[0]
    G = emit_state.shape[0]
    prev = np.empty(G)
    cur = np.empty(G)
    back = np.empty((T, G), dtype=np.int32)
    for g in range(G):
        prev[g] = init_logp[g] + loglik[0, emit_state[g]]
    for t in range(1, T):
        for g in range(G):
            best = NEG_INF
            best_arc = -1
            for a in range(in_ptr[g], in_ptr[g + 1]):
                v = prev[arc_from[a]] + arc_logp[a]
                if v > best:           # strict: ties keep the lowest source, like hmmlearn
                    best = v
                    best_arc = a
            back[t, g] = best_arc
            cur[g] = best + loglik[t, emit_state[g]] if best > NEG_INF else NEG_INF
        prev, cur = cur, prev
    score = NEG_INF
    end = -1
    for g in range(G):
        v = prev[g] + final_logp[g]
        if v > score:
            score = v
            end = g
    if end < 0:
        return NEG_INF, np.empty(0, dtype=np.int32), np.empty(0, dtype=np.int32)
    path = np.empty(T, dtype=np.int32)
    arcs = np.empty(max(T - 1, 0), dtype=np.int32)
    path[T - 1] = end
    for t in range(T - 1, 0, -1):
        a = back[t, path[t]]
        arcs[t - 1] = a
        path[t - 1] = arc_from[a]
    return score, path, arcs


@numba.njit(cache=True)
def _out_range(arc_from, arc_to, n_nodes):
    """Lowest and highest destination of each node's outgoing arcs."""
    out_lo = np.full(n_nodes, n_nodes, dtype=np.int64)
    out_hi = np.full(n_nodes, -1, dtype=np.int64)
    for a in range(arc_from.shape[0]):
        i = arc_from[a]
        j = arc_to[a]
        if j < out_lo[i]:
            out_lo[i] = j
        if j > out_hi[i]:
            out_hi[i] = j
    return out_lo, out_hi


@numba.njit(cache=True)
def _forward_kernel(loglik, emit_state, in_ptr, arc_from, arc_to, arc_logp, init_logp, final_logp, beam):
    """Log alphas with per-frame beam pruning (pruned cells are -inf).

    Only the band of nodes reachable from the previous frame's survivors is visited,
    which is what makes the beam pay off on left-to-right line graphs.
    Returns (log_prob, alpha (T, G), lo (T,), hi (T,)) with lo/hi the survivor band.
    """
    T = loglik.shape[0]
    G = emit_state.shape[0]
    alpha = np.full((T, G), NEG_INF)
    lo = np.zeros(T, dtype=np.int64)
    hi = np.full(T, -1, dtype=np.int64)
    out_lo, out_hi = _out_range(arc_from, arc_to, G)
    max_in = 1
    for g in range(G):
        max_in = max(max_in, in_ptr[g + 1] - in_ptr[g])
    vals = np.empty(max_in)
    for t in range(T):
        if t == 0:
            dlo, dhi = 0, G - 1
        else:
            dlo, dhi = G, -1
            for i in range(lo[t - 1], hi[t - 1] + 1):
                if alpha[t - 1, i] > NEG_INF:
                    dlo = min(dlo, out_lo[i])
                    dhi = max(dhi, out_hi[i])
        top = NEG_INF
        for g in range(dlo, dhi + 1):
            if t == 0:
                x = init_logp[g]
            else:
                m = NEG_INF
                n = 0
                best = 0
                for a in range(in_ptr[g], in_ptr[g + 1]):
                    v = alpha[t - 1, arc_from[a]] + arc_logp[a]
                    vals[n] = v
                    if v > m:
                        m = v
                        best = n
                    n += 1
                if m == NEG_INF:
                    x = NEG_INF
                else:
                    # logsumexp without exp(0) for the best arc; most nodes have 1-2 live arcs
                    s = 0.0
                    for k in range(n):
                        if k != best and vals[k] > NEG_INF:
                            s += np.exp(vals[k] - m)
                    x = m + np.log1p(s) if s > 0.0 else m
            if x > NEG_INF:
                x += loglik[t, emit_state[g]]
            alpha[t, g] = x
            if x > top:
                top = x
        if top == NEG_INF:
            return NEG_INF, alpha, lo, hi    # nothing reachable: the rest is impossible too
        thresh = top - beam
        first, last = G, -1
        for g in range(dlo, dhi + 1):
            if alpha[t, g] < thresh:
                alpha[t, g] = NEG_INF
            elif alpha[t, g] > NEG_INF:
                first = min(first, g)
                last = g
        lo[t], hi[t] = first, last
    m = NEG_INF
    for g in range(lo[T - 1], hi[T - 1] + 1):
        v = alpha[T - 1, g] + final_logp[g]
        if v > m:
            m = v
    if m == NEG_INF:
        return NEG_INF, alpha, lo, hi
    s = 0.0
    for g in range(lo[T - 1], hi[T - 1] + 1):
        s += np.exp(alpha[T - 1, g] + final_logp[g] - m)
    return m + np.log(s), alpha, lo, hi


@numba.njit(cache=True)
def _backward_kernel(loglik, emit_state, in_ptr, arc_from, arc_to, arc_logp, final_logp,
                     alpha, lo, hi, log_prob):
    """Betas on the cells that survived the forward beam, node posteriors and arc counts.

    Returns (gamma (T, G) float32, arc_occupancy (A,) float64).
    """
    T = loglik.shape[0]
    G = emit_state.shape[0]
    A = arc_from.shape[0]
    gamma = np.zeros((T, G), dtype=np.float32)
    occ = np.zeros(A)
    out_lo, out_hi = _out_range(arc_from, arc_to, G)
    beta_next = np.full(G, NEG_INF)
    beta = np.full(G, NEG_INF)
    mx = np.empty(G)
    acc = np.empty(G)
    arg = np.empty(G, dtype=np.int64)
    vals = np.empty(A)
    for g in range(lo[T - 1], hi[T - 1] + 1):
        beta_next[g] = final_logp[g] if alpha[T - 1, g] > NEG_INF else NEG_INF
        x = alpha[T - 1, g] + beta_next[g] - log_prob
        gamma[T - 1, g] = np.exp(x) if x > NEG_INF else 0.0
    for t in range(T - 2, -1, -1):
        # arcs from this frame's survivors into the next frame's survivors
        dlo, dhi = G, -1
        for i in range(lo[t], hi[t] + 1):
            mx[i] = NEG_INF
            acc[i] = 0.0
            if alpha[t, i] > NEG_INF:
                dlo = min(dlo, out_lo[i])
                dhi = max(dhi, out_hi[i])
        dlo = max(dlo, lo[t + 1])
        dhi = min(dhi, hi[t + 1])
        a0 = in_ptr[dlo] if dlo <= dhi else 0
        a1 = in_ptr[dhi + 1] if dlo <= dhi else 0
        # pass 1: value of every arc into a surviving cell, max (and its arc) per source
        for a in range(a0, a1):
            i = arc_from[a]
            j = arc_to[a]
            if i < lo[t] or i > hi[t] or alpha[t, i] == NEG_INF or beta_next[j] == NEG_INF:
                vals[a] = NEG_INF
                continue
            v = arc_logp[a] + loglik[t + 1, emit_state[j]] + beta_next[j]
            vals[a] = v
            if v > mx[i]:
                mx[i] = v
                arg[i] = a
        # pass 2: sum of exps per source (kept per arc for the arc counts)
        for a in range(a0, a1):
            v = vals[a]
            if v > NEG_INF:
                i = arc_from[a]
                e = 1.0 if a == arg[i] else np.exp(v - mx[i])
                vals[a] = e
                acc[i] += e
            else:
                vals[a] = 0.0
        for g in range(lo[t], hi[t] + 1):
            if mx[g] > NEG_INF and alpha[t, g] > NEG_INF:
                beta[g] = mx[g] + np.log(acc[g])
                # with scale = exp(alpha + mx - log_prob):  gamma = scale * acc  and
                # xi(arc) = exp(alpha + v - log_prob) = exp(v - mx) * scale
                scale = np.exp(alpha[t, g] + mx[g] - log_prob)
                gamma[t, g] = scale * acc[g]
                mx[g] = scale
            else:
                beta[g] = NEG_INF
                mx[g] = 0.0
        for a in range(a0, a1):
            if vals[a] > 0.0:       # sources outside the band hold stale scratch values
                occ[a] += vals[a] * mx[arc_from[a]]
        beta_next, beta = beta, beta_next
    return gamma, occ


# ----------------------------------------------------------------------------- wrappers

def _clean_loglik(loglik, graph: LineGraph) -> np.ndarray:
    x = np.ascontiguousarray(loglik, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"loglik must be (frames, states), got shape {x.shape}")
    if x.shape[1] <= int(graph.emit_state.max(initial=-1)):
        raise ValueError(f"loglik has {x.shape[1]} states, the graph uses state "
                         f"{int(graph.emit_state.max())}")
    if not np.all(np.isfinite(x)):
        # NaN means "no evidence this state fits": impossible, never propagated
        x = np.nan_to_num(x, nan=-np.inf, posinf=1e30, neginf=-np.inf)
    return x


def viterbi(loglik, graph: LineGraph, return_arcs=False):
    """Best node path through ``graph``.

    Returns ``(score, path)`` with ``path`` (T,) int32 node ids, or ``(-inf, empty)``
    when no complete path fits (e.g. fewer frames than ``graph.min_frames``).
    With ``return_arcs=True`` also the (T-1,) arc ids taken between frames.
    """
    x = _clean_loglik(loglik, graph)
    if x.shape[0] == 0:
        score, path, arcs = NEG_INF, np.empty(0, np.int32), np.empty(0, np.int32)
    else:
        score, path, arcs = _viterbi_kernel(x, graph.emit_state, graph.in_ptr(), graph.arc_from,
                                            graph.arc_logp, graph.init_logp, graph.final_logp)
    score = float(score)
    return (score, path, arcs) if return_arcs else (score, path)


def forward_backward(loglik, graph: LineGraph, beam=None):
    """Posteriors of one line.

    ``beam`` (natural log): at every frame, forward cells more than ``beam`` below the
    frame's best are dropped, and the backward pass only visits the survivors
    (None = exact); if the beam loses every complete path the line is redone
    without pruning, so a beam never makes a possible line impossible.

    Returns ``(log_prob, gamma, arc_occupancy)``: total log probability of the line
    (-inf if impossible), gamma (T, G) float32 node posteriors (rows sum to 1; zeros
    if impossible), arc_occupancy (A,) float64 expected uses of each arc summed over
    frames (they sum to T - 1).
    """
    x = _clean_loglik(loglik, graph)
    T, G = x.shape[0], graph.n_nodes
    b = np.inf if beam is None else float(beam)
    if not b > 0:
        raise ValueError(f"beam must be positive, got {beam}")
    if T == 0:
        return NEG_INF, np.zeros((0, G), np.float32), np.zeros(graph.n_arcs)
    in_ptr = graph.in_ptr()
    args = (x, graph.emit_state, in_ptr, graph.arc_from, graph.arc_to, graph.arc_logp,
            graph.init_logp, graph.final_logp)
    log_prob, alpha, lo, hi = _forward_kernel(*args, b)
    if log_prob == NEG_INF and b < np.inf:
        # the beam lost every complete path: redo the line exactly rather than drop it
        log_prob, alpha, lo, hi = _forward_kernel(*args, np.inf)
    if log_prob == NEG_INF:
        return NEG_INF, np.zeros((T, G), np.float32), np.zeros(graph.n_arcs)
    gamma, occ = _backward_kernel(x, graph.emit_state, in_ptr, graph.arc_from, graph.arc_to,
                                  graph.arc_logp, graph.final_logp, alpha, lo, hi, log_prob)
    return float(log_prob), gamma, occ


# ----------------------------------------------------------------------------- paths

class PathUnit(NamedTuple):
    """One visit of a model along a path."""
    symbol: int        # model (alphabet) id
    char_index: int    # index in the transcription, -1 for inserted blanks / loop graphs
    first_frame: int
    last_frame: int


class CharSegment(NamedTuple):
    char_index: int
    first_frame: int
    last_frame: int


class WordSpan(NamedTuple):
    word_index: int
    first_char: int    # transcription indices, inclusive
    last_char: int
    first_frame: int
    last_frame: int


def path_units(path, graph: LineGraph, arc_path=None) -> list[PathUnit]:
    """Split a node path into model visits.

    A new visit starts where the path enters a model's first state by an exit arc.
    Without ``arc_path`` a 1-state model repeated in a loop graph ("ll") reads as one
    visit; pass the arcs from ``viterbi(..., return_arcs=True)`` to tell them apart.
    """
    path = np.asarray(path, dtype=np.int64)
    T = len(path)
    if T == 0:
        return []
    if arc_path is not None:
        arc_path = np.asarray(arc_path, dtype=np.int64)
        starts = (graph.arc_kind[arc_path] == ARC_NEXT) & graph.node_first[path[1:]]
    else:
        starts = (path[1:] != path[:-1]) & graph.node_first[path[1:]]
    begin = np.concatenate([[0], np.flatnonzero(starts) + 1])
    end = np.concatenate([begin[1:] - 1, [T - 1]])
    nodes = path[begin]
    return [PathUnit(int(graph.node_symbol[g]), int(graph.node_pos[g]), int(b), int(e))
            for g, b, e in zip(nodes, begin, end)]


def path_to_segments(path, graph: LineGraph, text=None) -> list[CharSegment]:
    """Frames of every transcription character along a line-graph path.

    One ``CharSegment(char_index, first_frame, last_frame)`` per character of the
    transcription the path visits, in order; optional spaces that the path skipped
    and the inserted leading/trailing blanks do not appear.  ``text`` (optional) is
    checked against the graph's transcription length.
    """
    if text is not None and len(text) != len(graph.text_ids):
        raise ValueError(f"text has {len(text)} characters, the graph {len(graph.text_ids)}")
    return [CharSegment(u.char_index, u.first_frame, u.last_frame)
            for u in path_units(path, graph) if u.char_index >= 0]


def word_spans(segments, graph: LineGraph) -> list[WordSpan]:
    """Words (maximal runs of non-space symbols of the transcription) with their frames."""
    frames = {s.char_index: (s.first_frame, s.last_frame) for s in segments}
    spans = []
    start = None
    ids = list(graph.text_ids) + [graph.space_id if graph.space_id >= 0 else -2]
    for i, k in enumerate(ids):
        is_space = (k == graph.space_id) or i == len(graph.text_ids)
        if not is_space and start is None:
            start = i
        elif is_space and start is not None:
            chars = [c for c in range(start, i) if c in frames]
            if chars:
                spans.append(WordSpan(len(spans), start, i - 1,
                                      frames[chars[0]][0], frames[chars[-1]][1]))
            start = None
    return spans


def path_symbols(path, graph: LineGraph, arc_path=None) -> np.ndarray:
    """Model ids visited along a path (e.g. the characters of a loop-graph decoding)."""
    return np.array([u.symbol for u in path_units(path, graph, arc_path)], dtype=np.int32)


def state_occupancies(gamma, graph: LineGraph, min_weight=1e-4):
    """Sparse (frame_ids, state_ids, weights) of node posteriors above ``min_weight``.

    The triples feed ``GmmAccumulator.accumulate``; nodes sharing an emission state
    (a repeated character) give separate triples, which accumulators simply add.
    """
    gamma = np.asarray(gamma)
    t, g = np.nonzero(gamma > min_weight)
    return t.astype(np.int32), graph.emit_state[g].astype(np.int32), gamma[t, g].astype(np.float64)


def path_occupancies(path, graph: LineGraph):
    """(frame_ids, state_ids, weights) of a Viterbi path: weight 1 per frame."""
    path = np.asarray(path, dtype=np.int64)
    return (np.arange(len(path), dtype=np.int32), graph.emit_state[path].astype(np.int32),
            np.ones(len(path)))


# ----------------------------------------------------------------------------- forced alignment

class ForcedAlignment(NamedTuple):
    """Viterbi alignment of one line with its transcription."""
    score: float             # log p(x, best path | transcription)
    states: np.ndarray       # (T,) emission state of every frame
    chars: list              # CharSegment per transcription character the path visits
    words: list              # WordSpan per word


def graph_log_likelihoods(emission, X, graph: LineGraph) -> np.ndarray:
    """(T, S) emission scores of ``X``, computed only for the states ``graph`` uses (others -inf).

    ``emission`` is any model with ``n_states`` and ``log_likelihoods(X, states=...)``
    (GMM or MLP); a line graph touches a few dozen of the hundreds of states.
    """
    states = np.unique(graph.emit_state)
    full = np.full((len(X), emission.n_states), -np.inf)
    full[:, states] = emission.log_likelihoods(X, states=states)
    return full


def force_align(emission, topology, transitions, X, text_ids) -> ForcedAlignment | None:
    """Best path of the line graph of ``text_ids`` through features ``X``; None if no path fits."""
    from .hmm import build_line_graph

    graph = build_line_graph(topology, transitions, text_ids)
    score, path = viterbi(graph_log_likelihoods(emission, X, graph), graph)
    if len(path) == 0 or not np.isfinite(score):
        return None
    chars = path_to_segments(path, graph)
    return ForcedAlignment(float(score), graph.emit_state[path].astype(np.int32), chars,
                           word_spans(chars, graph))
