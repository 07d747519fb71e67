"""Word-lattice kernels: word-level links of the search's records, arc posteriors, best completions.

The lattice itself (arcs from the records, pruning, n-best, confidences) is built in
:mod:`hybrid_hwr.decode`; these are its array kernels.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .kernel import R_UNK_CHAR, R_WORD


def word_level_links(prev, kind):
    """Word-level predecessor of every record (out-of-lexicon letters followed back).

    For a word record it is ``prev``; for an out-of-lexicon letter or word record, the
    record before the first letter of that word. Records point to earlier ones only, so
    one forward pass suffices.
    """
    out = np.empty(prev.shape[0], dtype=np.int64)
    for r in range(prev.shape[0]):
        p = prev[r]
        if kind[r] != R_WORD and p >= 0 and kind[p] == R_UNK_CHAR:
            out[r] = out[p]
        else:
            out[r] = p
    return out


@numba.njit(cache=True)
def _log_add(a, b):
    if a < b:
        a, b = b, a
    if b == -np.inf:
        return a
    return a + math.log1p(math.exp(b - a))


@numba.njit(cache=True)
def lattice_posteriors(start, end, score, tail, scale):
    """Posterior of every arc of a word lattice (forward-backward in the log semiring).

    Nodes ``0 .. N-1``, node 0 the line start; arcs ``start[a] -> end[a]`` (``end >
    start``) sorted by increasing start, of score ``score[a]``; ``tail[node]`` is the
    score of ending the line at ``node`` (-inf where it may not). A path's probability
    is proportional to ``exp(scale * its score)``. Returns (posteriors (A,), log of the
    scaled total).
    """
    n_nodes = tail.shape[0]
    alpha = np.full(n_nodes, -np.inf)
    alpha[0] = 0.0
    for a in range(start.shape[0]):
        alpha[end[a]] = _log_add(alpha[end[a]], alpha[start[a]] + scale * score[a])
    beta = np.empty(n_nodes)
    log_total = -np.inf
    for node in range(n_nodes):
        beta[node] = scale * tail[node] if tail[node] > -np.inf else -np.inf
        log_total = _log_add(log_total, alpha[node] + beta[node])
    for a in range(start.shape[0] - 1, -1, -1):
        beta[start[a]] = _log_add(beta[start[a]], scale * score[a] + beta[end[a]])
    post = np.zeros(start.shape[0])
    if log_total > -np.inf:
        for a in range(start.shape[0]):
            post[a] = math.exp(min(alpha[start[a]] + scale * score[a] + beta[end[a]] - log_total, 0.0))
    return post, log_total


@numba.njit(cache=True)
def lattice_backward(start, end, gain, tail):
    """Best completion score from every boundary node of a word lattice.

    Arcs ``start[a] -> end[a]`` (node ids, ``end > start``) sorted by decreasing start,
    adding ``gain[a]``; ``tail[node]`` is the score of ending the line at ``node``
    (-inf where it may not). Returns ``beta`` with ``beta[node] = max(tail[node],
    max over arcs from node of gain + beta[end])``.
    """
    beta = tail.copy()
    for a in range(start.shape[0]):
        v = gain[a] + beta[end[a]]
        if v > beta[start[a]]:
            beta[start[a]] = v
    return beta
