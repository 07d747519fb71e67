"""Word lattices of the search's records: arcs, pruning, n-best lists and word confidences.

:class:`WordLattices` turns the records of one line (:class:`hybrid_hwr.search.SearchOutput`)
into a lattice (:class:`Lattice`), searches its n best word sequences with the exact LM and
gives word confidences from arc posteriors; the kernels below are its array work: the
word-level links and the pruning of the records (:func:`near_arcs`), the n-best search
(:func:`nbest_kernel`, which reads LM transitions from a table as the search kernel
does, the driver filling what it asks for) and the posteriors.
How the lattice is defined (the word-pair approximation, the posteriors' scale, C_max) is
documented in :mod:`hybrid_hwr.decode`.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass

import numba
import numpy as np
from numba import types
from numba.typed import Dict

from .driver import LmTable, fill_end_scores
from .kernel import C_MISSING, M_EOS, M_WORD, R_UNK_CHAR, R_UNK_WORD, R_WORD, Missing, _mix, _request, _table_find
from .objective import glues


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def near_arcs(prev, kind, end, score, tail_eos, best_total, beam):
    """The arcs of a line's records within ``beam`` of the best path ``best_total``.

    Every word-level record ``r`` (a word, or an out-of-lexicon word's end) is an arc from
    the boundary after its word-level predecessor ``p`` (:func:`word_level_links`) to
    ``end[r]``, adding ``score[r] - score[p]``; its margin is the best recorded score
    reaching its start (``alpha``, by boundary ``end + 1``; 0 at the line start), plus its
    gain, plus the best completion after it (:func:`lattice_backward` down to the line
    ends ``tail_eos``), minus ``best_total``. Returns, for the arcs of margin ``>= -beam``
    in record order: (records, predecessors (-1: none), start boundaries (predecessor's
    end, -1 at the line start), gains, margins), and ``alpha``.
    """
    pred = word_level_links(prev, kind)
    n = 0
    for r in range(prev.shape[0]):
        if kind[r] != R_UNK_CHAR:
            n += 1
    ids = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    gain = np.empty(n)
    alpha = np.full(tail_eos.shape[0], -np.inf)
    alpha[0] = 0.0
    j = 0
    for r in range(prev.shape[0]):
        if kind[r] == R_UNK_CHAR:
            continue
        p = pred[r]
        ids[j] = r
        b[j] = end[p] if p >= 0 else -1
        gain[j] = score[r] - (score[p] if p >= 0 else 0.0)
        alpha[end[r] + 1] = max(alpha[end[r] + 1], score[r])
        j += 1
    # arcs by decreasing start boundary (counting sort), for the backward pass
    n_bounds = tail_eos.shape[0]
    first = np.zeros(n_bounds + 1, dtype=np.int64)
    for j in range(n):
        first[n_bounds - 1 - (b[j] + 1) + 1] += 1
    for k in range(n_bounds):
        first[k + 1] += first[k]
    order = np.empty(n, dtype=np.int64)
    for j in range(n):
        k = n_bounds - 1 - (b[j] + 1)
        order[first[k]] = j
        first[k] += 1
    starts = np.empty(n, dtype=np.int64)
    ends = np.empty(n, dtype=np.int64)
    gains = np.empty(n)
    for i in range(n):
        starts[i] = b[order[i]] + 1
        ends[i] = end[ids[order[i]]] + 1
        gains[i] = gain[order[i]]
    beta = lattice_backward(starts, ends, gains, tail_eos.copy())
    margin = np.empty(n)
    n_keep = 0
    for j in range(n):
        margin[j] = alpha[b[j] + 1] + gain[j] + beta[end[ids[j]] + 1] - best_total
        if margin[j] >= -beam:
            n_keep += 1
    out_ids = np.empty(n_keep, dtype=np.int64)
    out_pred = np.empty(n_keep, dtype=np.int64)
    out_b = np.empty(n_keep, dtype=np.int64)
    out_gain = np.empty(n_keep)
    out_margin = np.empty(n_keep)
    k = 0
    for j in range(n):
        if margin[j] >= -beam:
            out_ids[k], out_pred[k], out_b[k] = ids[j], pred[ids[j]], b[j]
            out_gain[k], out_margin[k] = gain[j], margin[j]
            k += 1
    return out_ids, out_pred, out_b, out_gain, out_margin, alpha


@numba.njit(cache=True)
def distinct_arcs(b, end, token, is_unk, sigma):
    """The arcs a lattice keeps, in its order: of the arcs with the same start ``b``, end
    and word, the one of the best ``sigma`` (the first of them on ties); every
    out-of-lexicon word (``is_unk``). Sorted by start, end, then word id (out-of-lexicon
    words first, by index)."""
    n = b.shape[0]
    size = 2
    while size < 2 * n:
        size *= 2
    mask = size - 1
    slots = np.full(size, -1, dtype=np.int64)    # open addressing: index into ``rep``
    rep = np.empty(n, dtype=np.int64)
    n_rep = 0
    for j in range(n):
        if is_unk[j]:
            rep[n_rep] = j
            n_rep += 1
            continue
        i = np.int64(_mix(b[j] + 1, end[j], token[j]) & np.uint64(mask))
        while True:
            k = slots[i]
            if k == -1:
                slots[i] = n_rep
                rep[n_rep] = j
                n_rep += 1
                break
            r = rep[k]
            if b[r] == b[j] and end[r] == end[j] and token[r] == token[j]:
                if sigma[j] > sigma[r]:
                    rep[k] = j
                break
            i = (i + 1) & mask
    rep = rep[:n_rep]
    span = np.int64(1)
    for j in range(n):
        span = max(span, end[j] + 2)
    word = np.empty(n_rep, dtype=np.int64)
    where = np.empty(n_rep, dtype=np.int64)
    for k in range(n_rep):
        j = rep[k]
        word[k] = (token[j] + 1) * (n + 1) + (j + 1 if is_unk[j] else 0)
        where[k] = (b[j] + 1) * span + end[j]
    order = np.argsort(word, kind="mergesort")
    order = order[np.argsort(where[order], kind="mergesort")]     # stable: by word within a span
    return rep[order]


# ----------------------------------------------------------------------------- the n-best search kernel

# statuses of nbest_kernel
NB_DONE, NB_NEED_LM, NB_GROW = 0, 1, 2
# its counters: hypotheses, complete ones, LM requests (the search kernel's slot, for
# _request), word sequences, top-list visits
NB_HYPS, NB_FINALS, NB_MISSING, NB_WORDSEQS, NB_VISIT = 0, 1, C_MISSING, 3, 4
# the arcs of the n-best search (those near the best path), sorted by start boundary
NbestArcs = namedtuple("NbestArcs", ["end", "token", "sigma", "extra", "unk", "key", "lat"])
# hypotheses: score, LM state, word sequence id (given when the hypothesis is looked at),
# predecessor, last arc (lattice index) and its word key, next hypothesis waiting at the
# same boundary; ``stamp`` marks the word sequences of a top list
Hyps = namedtuple("Hyps", ["score", "state", "words", "parent", "arc", "key", "next", "stamp"])


@numba.njit(cache=True)
def nbest_kernel(pos, nodes, lo, hi, arcs, glue_head, glue_tail, tail, tail_near, width, weights, table,
                 n_tokens, eos, hyps, head, last, fin_score, fin_hyp, seqs, miss, cnt):
    """The n-best search of :meth:`WordLattices.nbest` over boundaries ``nodes[pos:]``.

    At every boundary the ``width`` best hypotheses waiting there with distinct word
    sequences (the first in a stable sort by decreasing score) end the line if it may end
    there, and are extended by the arcs ``lo[p] .. hi[p] - 1`` starting there, in order.
    ``weights``: (LM weight, word, unknown-word and glue penalties); LM transitions are
    read from ``table`` (keys ``state * n_tokens + token + 1``), ends of sentence from
    ``eos`` (NaN: unknown). Hypotheses waiting at boundary ``b`` are the list from
    ``head[b + 1]`` (``last``: its end) through ``hyps.next``; ``seqs`` maps (word
    sequence id, word key) to the id of the longer sequence.

    Returns (status, position): NB_NEED_LM when the boundary at ``position`` needs LM
    entries (asked for in ``miss``), NB_GROW when the hypothesis or final arrays are too
    small for it; nothing of that boundary is changed then, so the call resumes there.
    """
    lmw, word_penalty, unk_penalty, glue_penalty = weights[0], weights[1], weights[2], weights[3]
    for p in range(pos, nodes.shape[0]):
        node = nodes[p]
        h = head[node + 1]
        if h < 0:
            continue
        n = 0
        while h >= 0:
            n += 1
            h = hyps.next[h]
        members = np.empty(n, dtype=np.int64)
        neg = np.empty(n)
        h = head[node + 1]
        for i in range(n):
            members[i] = h
            neg[i] = -hyps.score[h]
            h = hyps.next[h]
        order = np.argsort(neg, kind="mergesort")     # stable, like list.sort
        cnt[NB_VISIT] += 1
        stamp = cnt[NB_VISIT]
        top = np.empty(min(n, width), dtype=np.int64)
        n_top = 0
        for i in range(n):
            m = members[order[i]]
            if hyps.parent[m] >= 0:     # its word sequence: the predecessor's and one word
                pair = (hyps.words[hyps.parent[m]], hyps.key[m])
                seq = seqs.get(pair, -1)
                if seq < 0:
                    seq = cnt[NB_WORDSEQS]
                    seqs[pair] = seq
                    cnt[NB_WORDSEQS] = seq + 1
                hyps.words[m] = seq
            if hyps.stamp[hyps.words[m]] != stamp:
                hyps.stamp[hyps.words[m]] = stamp
                top[n_top] = m
                n_top += 1
                if n_top == width:
                    break
        ends = tail_near[node + 1] and np.isfinite(tail[node + 1])
        # every LM entry of this boundary, before anything changes
        complete = True
        if ends:
            for j in range(n_top):
                st = hyps.state[top[j]]
                if st >= eos.shape[0] or np.isnan(eos[st]):
                    _request(miss, cnt, np.int64(M_EOS), st, np.int64(0))
                    complete = False
        for k in range(lo[p], hi[p]):
            for j in range(n_top):
                st = hyps.state[top[j]]
                if _table_find(table, st * n_tokens + arcs.token[k] + 1) < 0:
                    _request(miss, cnt, np.int64(M_WORD), st, arcs.token[k])
                    complete = False
        if not complete:
            return NB_NEED_LM, p
        if (cnt[NB_HYPS] + (hi[p] - lo[p]) * n_top > hyps.score.shape[0]
                or cnt[NB_FINALS] + n_top > fin_score.shape[0]):
            return NB_GROW, p
        if ends:
            for j in range(n_top):
                m = top[j]
                f = cnt[NB_FINALS]
                fin_score[f] = hyps.score[m] + tail[node + 1] + lmw * eos[hyps.state[m]]
                fin_hyp[f] = m
                cnt[NB_FINALS] = f + 1
        for k in range(lo[p], hi[p]):
            target = arcs.end[k] + 1
            unk_term = unk_penalty if arcs.unk[k] else 0.0
            lm_extra = arcs.extra[k]
            for j in range(n_top):
                m = top[j]
                slot = _table_find(table, hyps.state[m] * n_tokens + arcs.token[k] + 1)
                glued = glue_head[arcs.lat[k]] and hyps.arc[m] >= 0 and glue_tail[hyps.arc[m]]
                # Objective.extend, term by term in its order
                v = hyps.score[m] + (arcs.sigma[k] + word_penalty + unk_term)
                v = v + (glue_penalty if glued else 0.0)
                v = v + lmw * (table.logp[slot] + lm_extra)
                q = cnt[NB_HYPS]
                cnt[NB_HYPS] = q + 1
                hyps.score[q] = v
                hyps.state[q] = table.next[slot]
                hyps.parent[q] = m
                hyps.arc[q] = arcs.lat[k]
                hyps.key[q] = arcs.key[k]
                hyps.next[q] = -1
                if head[target] < 0:
                    head[target] = q
                else:
                    hyps.next[last[target]] = q
                last[target] = q
    return NB_DONE, nodes.shape[0]


def _empty_hyps(capacity):
    return Hyps(np.zeros(capacity), *(np.zeros(capacity, np.int64) for _ in range(7)))


def _grown(arrays, capacity, used):
    """Copies of ``arrays`` (a namedtuple of arrays) with ``capacity`` entries, the first ``used`` kept."""
    out = []
    for a in arrays:
        b = np.zeros(capacity, dtype=a.dtype)
        b[:used] = a[:used]
        out.append(b)
    return type(arrays)(*out)


# ----------------------------------------------------------------------------- the lattice of a line

LATTICE_BEAM = 50.0          # n-best lists come from the lattice arcs this close to the best path


def _take(values, index, default):
    """``values[index]``, ``default`` where ``index < 0``."""
    out = np.full(len(index), default, dtype=values.dtype)
    ok = index >= 0
    out[ok] = values[index[ok]]
    return out


@dataclass
class Lattice:
    """Word lattice of a line: arcs sorted by start boundary (-1: the line start)."""

    ids: np.ndarray         # word-level record of each arc
    start: np.ndarray       # boundary: last frame of the previous word (-1 at the line start)
    end: np.ndarray         # last frame of the word
    first: np.ndarray       # first frame of the word itself (after any space)
    token: np.ndarray       # word id (symbol id in lexicon-free modes), -1 out-of-lexicon
    gain: np.ndarray        # score the arc adds, as recorded by the search
    sigma: np.ndarray       # its optical part
    extra: np.ndarray       # ln P_char of an out-of-lexicon word's spelling, else 0
    is_unk: np.ndarray
    near: np.ndarray        # within LATTICE_BEAM of the best path (the n-best search's arcs)
    glue_head: np.ndarray   # glued to its boundary (no space) and starts with a letter/digit
    glue_tail: np.ndarray   # ends with a letter/digit
    unk_items: dict         # record id -> Item of out-of-lexicon words
    tail: np.ndarray        # (T + 1,) score of ending the line after boundary - 1, LM end excluded
    tail_eos: np.ndarray    # the same with the recorded ln p(</s> | state)
    tail_near: np.ndarray   # line ends within LATTICE_BEAM of the best path


@dataclass
class NbestPaths:
    """Complete hypotheses of the n-best search, in the order found: their scores, and
    their lattice arcs through the hypotheses' predecessors."""

    score: np.ndarray
    hyp: np.ndarray         # the hypothesis that ended the line
    parent: np.ndarray      # of every hypothesis: its predecessor (-1: the empty one)
    arc: np.ndarray         # and its last arc (lattice index; -1: none)

    def path(self, i: int) -> list[int]:
        """Lattice arcs of hypothesis ``i``, in order."""
        h, arcs = int(self.hyp[i]), []
        while self.arc[h] >= 0:
            arcs.append(int(self.arc[h]))
            h = int(self.parent[h])
        return arcs[::-1]


@dataclass
class Item:
    """A word (or character) of a hypothesis."""

    text: str
    token: int      # word id (lexicon modes), symbol id (character modes), -1 out-of-lexicon
    start: int
    end: int


class WordLattices:
    """Word lattices of the search's records (see :mod:`hybrid_hwr.decode`): arcs pruned
    around the best path, the n-best search over them with the exact LM, and word
    confidences from arc posteriors.

    ``objective``: the score's weights; ``lm_scorer``: the word LM's scorer (or one of the
    empty LM); ``words``: the search's words (lexicon words, or symbols); ``symbols`` and
    ``unk_tok``: the alphabet and the symbol of each out-of-lexicon unit; ``glue_symbol``
    (per symbol, and a last entry False), ``glue_first`` / ``glue_last`` (per word): which
    joins are glued; ``spelling_logp(text)``: ln P_char of a spelled word;
    ``confidence_scale``: the scale of the scores in the posteriors; ``lm_table``: a table
    of ``lm_scorer``'s transitions to share (the search's), else one of its own.
    """

    def __init__(self, objective, lm_scorer, words, symbols, unk_tok, glue_symbol, glue_first, glue_last,
                 spelling_logp, confidence_scale: float, lm_table: LmTable | None = None):
        self.objective, self.lm_scorer, self.words, self.symbols = objective, lm_scorer, words, symbols
        self.unk_tok, self.glue_symbol, self.glue_first, self.glue_last = unk_tok, glue_symbol, glue_first, glue_last
        self.spelling_logp, self.confidence_scale = spelling_logp, confidence_scale
        self._lm_table = lm_table  # the n-best search's LM entries and ends of sentence, kept across lines
        self._eos = np.full(16, np.nan)
        self._missing = Missing(np.zeros(4096, np.int8), np.zeros(4096, np.int64), np.zeros(4096, np.int64))

    def unk_item(self, rec, r):
        """(item, word-level predecessor) of out-of-lexicon word record ``r``."""
        end = int(rec.end[r])
        p = int(rec.prev[r])
        letters, start = [], end
        while p >= 0 and rec.kind[p] == R_UNK_CHAR:
            letters.append(self.symbols[int(self.unk_tok[int(rec.token[p])])])
            start = int(rec.start[p])
            p = int(rec.prev[p])
        return Item("".join(reversed(letters)), -1, start, end), p

    def record_items(self, rec, r) -> list[Item]:
        """Words of the record chain ending at record ``r``."""
        items = []
        while r >= 0:
            if rec.kind[r] == R_WORD:
                w = int(rec.token[r])
                items.append(Item(self.words[w], w, int(rec.start[r]), int(rec.end[r])))
                r = int(rec.prev[r])
            else:
                item, r = self.unk_item(rec, r)
                items.append(item)
        return items[::-1]

    def build(self, out, beam: float) -> Lattice | None:
        """The word lattice of the search's records, pruned to ``beam`` around the best path."""
        rec, fin = out.records, out.finals
        lmw = self.objective.lm_weight
        if len(fin.score) == 0:
            return None
        T = out.n_frames
        # trailing part after the last word (finals), per end frame: with the recorded
        # ln p(</s> | state) (posteriors), and without it (the n-best search adds its own)
        fr = fin.rec.astype(np.int64)
        f_end = _take(rec.end, fr, -1)
        f_gain = fin.score - _take(rec.score, fr, 0.0)
        eos = self._end_scores(fin.lm_state.astype(np.int64)) if lmw > 0 else 0.0
        tail, tail_eos = np.full(T + 1, -np.inf), np.full(T + 1, -np.inf)
        np.maximum.at(tail, f_end + 1, f_gain - lmw * eos)
        np.maximum.at(tail_eos, f_end + 1, f_gain)
        best_total = float(fin.score.max())
        # arcs: word-level record r from boundary end[pred[r]] (-1 at the line start) to end[r],
        # kept when the best path through them is within the beam
        ids, pr, b, gain, margin, alpha = near_arcs(rec.prev.astype(np.int64), rec.kind, rec.end.astype(np.int64),
                                                    rec.score, tail_eos, best_total, float(beam))
        # optical part of each arc = recorded gain minus its recorded LM / penalty terms
        token = rec.token[ids].astype(np.int64)
        end = rec.end[ids].astype(np.int64)
        is_unk = rec.kind[ids] == R_UNK_WORD
        # spelled words of the pruned lattice only (the search records one per letter end)
        unk_items = {r: self.unk_item(rec, r)[0] for r in ids[is_unk].tolist()}
        extra = np.zeros(len(ids))
        first = rec.start[ids].astype(np.int64)
        for j in np.flatnonzero(is_unk).tolist():
            item = unk_items[int(ids[j])]
            extra[j] = self.spelling_logp(item.text)
            first[j] = item.start
        # glued joins: the arc starts right after its boundary with a letter/digit (head), and
        # the word before it ends with one (tail); the n-best search pairs arcs anew
        glue_head = np.zeros(len(ids), dtype=bool)
        glue_tail = np.zeros(len(ids), dtype=bool)
        if self.objective.glue_penalty != 0.0:
            lex = ~is_unk
            glue_head[lex] = self.glue_first[token[lex]]
            glue_tail[lex] = self.glue_last[token[lex]]
            for j in np.flatnonzero(is_unk).tolist():
                text = unk_items[int(ids[j])].text
                glue_head[j], glue_tail[j] = glues(text[0]), glues(text[-1])
            glue_head &= (first == b + 1) & (pr >= 0)
        recorded_glue = glue_head.copy()     # glued to the predecessor the search recorded
        if recorded_glue.any():
            recorded_glue[recorded_glue] = self._record_glue_tail(rec, pr[recorded_glue])
        sigma = self.objective.word_optical(gain, rec.lmlp[ids] + extra, is_unk, recorded_glue)
        # duplicates (same span, same lexicon word) keep the best sigma; unknown words stay apart
        arcs = distinct_arcs(b, end, token, is_unk, sigma)
        return Lattice(ids=ids[arcs], start=b[arcs], end=end[arcs], first=first[arcs], token=token[arcs],
                        gain=gain[arcs], sigma=sigma[arcs], extra=extra[arcs], is_unk=is_unk[arcs],
                        near=margin[arcs] >= -LATTICE_BEAM, glue_head=glue_head[arcs],
                        glue_tail=glue_tail[arcs], unk_items=unk_items, tail=tail, tail_eos=tail_eos,
                        tail_near=alpha + tail_eos - best_total >= -LATTICE_BEAM)

    def _record_glue_tail(self, rec, records) -> np.ndarray:
        """Whether each word-level record (-1: none) ends with a letter or digit."""
        out = np.zeros(len(records), dtype=bool)
        for j, r in enumerate(records.tolist()):
            if r < 0:
                continue
            if rec.kind[r] == R_WORD:
                out[j] = self.glue_last[int(rec.token[r])]
            else:   # a spelled word: its last letter record
                out[j] = self.glue_symbol[int(self.unk_tok[int(rec.token[int(rec.prev[r])])])]
        return out

    def arc_item(self, rec, lat, k) -> Item:
        r = int(lat.ids[k])
        if lat.is_unk[k]:
            return lat.unk_items[r]
        w = int(rec.token[r])
        return Item(self.words[w], w, int(rec.start[r]), int(rec.end[r]))

    def nbest_search(self, lat: Lattice, n: int) -> "NbestPaths":
        """Complete hypotheses of the n-best search over the lattice's arcs near the best path.

        Boundaries are visited in order; at each, the ``n + 2`` best hypotheses waiting there
        with distinct word sequences end the line (if it may end there) and are extended by
        every arc starting there, with the exact LM (:func:`nbest_kernel`). Hypotheses come
        in the order found, their arcs on demand (:meth:`path_items`).
        """
        near = np.flatnonzero(lat.near)
        starts = lat.start[near]
        nodes = np.array(sorted(set(starts.tolist()) | {-1} | {int(t) - 1 for t in np.flatnonzero(lat.tail_near)}),
                         dtype=np.int64)
        lo = np.searchsorted(starts, nodes, side="left").astype(np.int64)
        hi = np.searchsorted(starts, nodes, side="right").astype(np.int64)
        # word keys: the word id, or for a spelled word its text (interned to ids below -1)
        key = lat.token[near].astype(np.int64)
        texts: dict = {}
        for j in np.flatnonzero(lat.is_unk[near]).tolist():
            key[j] = -2 - texts.setdefault(lat.unk_items[int(lat.ids[near[j]])].text, len(texts))
        arcs = NbestArcs(lat.end[near].astype(np.int64), lat.token[near].astype(np.int64),
                         lat.sigma[near].astype(np.float64), lat.extra[near].astype(np.float64),
                         lat.is_unk[near].copy(), key, near.astype(np.int64))
        obj = self.objective
        weights = np.array([obj.lm_weight, obj.word_penalty, obj.unk_penalty, obj.glue_penalty], dtype=np.float64)
        table = self._table()
        hyps = _empty_hyps(max(64, 4 * len(near)))
        fin_score, fin_hyp = np.zeros(64), np.zeros(64, np.int64)
        head = np.full(len(lat.tail) + 1, -1, dtype=np.int64)
        last = np.full(len(lat.tail) + 1, -1, dtype=np.int64)
        hyps.state[0] = self.lm_scorer.BOS      # the empty hypothesis at the line start
        hyps.arc[0] = hyps.parent[0] = hyps.next[0] = -1
        head[0] = last[0] = 0
        cnt = np.zeros(5, dtype=np.int64)
        cnt[NB_HYPS] = cnt[NB_WORDSEQS] = 1
        seqs = Dict.empty(key_type=types.UniTuple(types.int64, 2), value_type=types.int64)
        pos = 0
        while True:
            status, pos = nbest_kernel(pos, nodes, lo, hi, arcs, lat.glue_head, lat.glue_tail, lat.tail,
                                       lat.tail_near, n + 2, weights, table.table, table.n_tokens, self._eos,
                                       hyps, head, last, fin_score, fin_hyp, seqs, self._missing, cnt)
            if status == NB_DONE:
                break
            if status == NB_NEED_LM:
                m = int(cnt[NB_MISSING])
                kind, state, token = (a[:m] for a in self._missing)
                if (kind == M_WORD).any():
                    table.add_requested(state[kind == M_WORD], token[kind == M_WORD])
                self._eos = fill_end_scores(self._eos, self.lm_scorer, state[kind == M_EOS])
                cnt[NB_MISSING] = 0
            else:
                hyps = _grown(hyps, 2 * len(hyps.score), int(cnt[NB_HYPS]))
                f = int(cnt[NB_FINALS])
                fin_score, fin_hyp = (np.concatenate([a[:f], np.zeros(max(f, 64), a.dtype)]) for a in (fin_score, fin_hyp))
        f = int(cnt[NB_FINALS])
        return NbestPaths(fin_score[:f].copy(), fin_hyp[:f].copy(), hyps.parent, hyps.arc)

    def _end_scores(self, states) -> np.ndarray:
        """ln p(</s> | state) of LM states (kept across lines)."""
        known = np.zeros(len(states), dtype=bool)
        inside = states < len(self._eos)
        known[inside] = ~np.isnan(self._eos[states[inside]])
        self._eos = fill_end_scores(self._eos, self.lm_scorer, states[~known])
        return self._eos[states]

    def _table(self) -> LmTable:
        """The table of the LM's transitions for the n-best search (kept across lines)."""
        if self._lm_table is None:
            self._lm_table = LmTable(self.lm_scorer, len(self.words))
        return self._lm_table

    def path_items(self, out, lat: Lattice, found: "NbestPaths", i: int) -> list[Item]:
        """Words of the ``i``-th hypothesis of :meth:`nbest_search`."""
        return [self.arc_item(out.records, lat, k) for k in found.path(i)]

    def confidences(self, lat: Lattice | None, items) -> list[float]:
        """Posterior probability of each item of the best path (see the module docstring)."""
        if lat is None or not len(lat.ids):
            return [1.0] * len(items)
        post, log_total = lattice_posteriors(lat.start + 1, lat.end + 1, lat.gain, lat.tail_eos,
                                             self.confidence_scale)
        if not np.isfinite(log_total):
            return [math.nan] * len(items)
        unk_text = ([lat.unk_items[r].text if u else None for r, u in zip(lat.ids.tolist(), lat.is_unk.tolist())]
                    if any(it.token == -1 for it in items) else [])
        out = []
        for it in items:
            if it.token == -1:
                same = np.array([t == it.text for t in unk_text], dtype=bool)
            else:
                same = ~lat.is_unk & (lat.token == it.token)
            same &= (lat.first <= it.end) & (lat.end >= it.start)
            # paths through frame t hold one arc there: the mass of the word at each frame
            # of its span is a probability; the word's confidence is its maximum (C_max)
            mass = np.zeros(it.end - it.start + 1)
            for k in np.flatnonzero(same).tolist():
                mass[max(lat.first[k], it.start) - it.start:min(lat.end[k], it.end) - it.start + 1] += post[k]
            out.append(float(min(mass.max(), 1.0)) if len(mass) else 1.0)
        return out
