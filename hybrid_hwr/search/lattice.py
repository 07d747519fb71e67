"""Word lattices of the search's records: arcs, pruning, n-best lists and word confidences.

:class:`WordLattices` turns the records of one line (:class:`hybrid_hwr.search.SearchOutput`)
into a lattice (:class:`Lattice`), searches its n best word sequences with the exact LM and
gives word confidences from arc posteriors; the kernels below are its array work.
How the lattice is defined (the word-pair approximation, the posteriors' scale, C_max) is
documented in :mod:`hybrid_hwr.decode`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from .kernel import R_UNK_CHAR, R_UNK_WORD, R_WORD
from .objective import glues


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
    ``confidence_scale``: the scale of the scores in the posteriors.
    """

    def __init__(self, objective, lm_scorer, words, symbols, unk_tok, glue_symbol, glue_first, glue_last,
                 spelling_logp, confidence_scale: float):
        self.objective, self.lm_scorer, self.words, self.symbols = objective, lm_scorer, words, symbols
        self.unk_tok, self.glue_symbol, self.glue_first, self.glue_last = unk_tok, glue_symbol, glue_first, glue_last
        self.spelling_logp, self.confidence_scale = spelling_logp, confidence_scale

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

    @staticmethod
    def _word_level(rec):
        """Word-level record ids and the word-level predecessor of every record."""
        ids = np.flatnonzero((rec.kind == R_WORD) | (rec.kind == R_UNK_WORD))
        return ids, word_level_links(rec.prev.astype(np.int64), rec.kind)

    def build(self, out, beam: float) -> Lattice | None:
        """The word lattice of the search's records, pruned to ``beam`` around the best path."""
        rec, fin = out.records, out.finals
        lmw = self.objective.lm_weight
        ids, pred = self._word_level(rec)
        if len(fin.score) == 0:
            return None
        # arcs: word-level record r from boundary end[pred[r]] (-1 at the line start) to end[r]
        pr = pred[ids]
        b = _take(rec.end, pr, -1)
        gain = rec.score[ids] - _take(rec.score, pr, 0.0)     # score added by the arc as recorded
        T = out.n_frames
        # trailing part after the last word (finals), per end frame: with the recorded
        # ln p(</s> | state) (posteriors), and without it (the n-best search adds its own)
        fr = fin.rec.astype(np.int64)
        f_end = _take(rec.end, fr, -1)
        f_gain = fin.score - _take(rec.score, fr, 0.0)
        eos = np.array([self.lm_scorer.end_score(int(s)) for s in fin.lm_state]) if lmw > 0 else 0.0
        tail, tail_eos = np.full(T + 1, -np.inf), np.full(T + 1, -np.inf)
        np.maximum.at(tail, f_end + 1, f_gain - lmw * eos)
        np.maximum.at(tail_eos, f_end + 1, f_gain)
        best_total = float(fin.score.max())
        # forward best per boundary (recorded scores), backward best completion, then prune
        alpha = np.full(T + 1, -np.inf)
        alpha[0] = 0.0
        np.maximum.at(alpha, rec.end[ids].astype(np.int64) + 1, rec.score[ids])
        order = np.argsort(-b, kind="stable")
        beta = lattice_backward(b[order] + 1, rec.end[ids][order].astype(np.int64) + 1, gain[order],
                                tail_eos.copy())
        margin = alpha[b + 1] + gain + beta[rec.end[ids].astype(np.int64) + 1] - best_total
        keep = margin >= -beam
        ids, b, gain, margin = ids[keep], b[keep], gain[keep], margin[keep]
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
            glue_head &= (first == b + 1) & (pr[keep] >= 0)
        recorded_glue = glue_head.copy()     # glued to the predecessor the search recorded
        if recorded_glue.any():
            recorded_glue[recorded_glue] = self._record_glue_tail(rec, pr[keep][recorded_glue])
        sigma = self.objective.word_optical(gain, rec.lmlp[ids] + extra, is_unk, recorded_glue)
        # duplicates (same span, same lexicon word) keep the best sigma; unknown words stay apart
        order = np.lexsort((-sigma, np.where(is_unk, np.arange(len(ids)), -1), token, end, b))
        key = np.stack([b, end, token, np.where(is_unk, np.arange(len(ids)), -1)], 1)[order]
        unique = np.ones(len(order), dtype=bool)
        unique[1:] = np.any(key[1:] != key[:-1], axis=1)
        arcs = order[unique]
        arcs = arcs[np.argsort(b[arcs], kind="stable")]
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

    def nbest(self, out, lat: Lattice, n: int):
        """(score, items) of up to ``n`` best distinct hypotheses, from the arcs of the lattice
        within ``LATTICE_BEAM`` of the best path, with the exact LM."""
        lmw = self.objective.lm_weight
        near = np.flatnonzero(lat.near)
        starts = lat.start[near]
        scorer = self.lm_scorer
        width = n + 2
        extend = self.objective.extend
        pending = {-1: [(0.0, scorer.BOS, (), ())]}    # node -> (score, LM state, word keys, arc ids)
        finals = []
        tail, tail_near = lat.tail, lat.tail_near
        nodes = sorted(set(starts.tolist()) | {-1} | {int(t) - 1 for t in np.flatnonzero(tail_near)})
        lo = np.searchsorted(starts, nodes, side="left")
        hi = np.searchsorted(starts, nodes, side="right")
        arc_end, arc_tok, arc_sig = lat.end[near].tolist(), lat.token[near].tolist(), lat.sigma[near].tolist()
        arc_extra, arc_unk = lat.extra[near].tolist(), lat.is_unk[near].tolist()
        arc_ids = lat.ids[near].tolist()
        glue_head, glue_tail = lat.glue_head.tolist(), lat.glue_tail.tolist()
        for node, a0, a1 in zip(nodes, lo.tolist(), hi.tolist()):
            hyps = pending.pop(node, None)
            if not hyps:
                continue
            hyps.sort(key=lambda h: -h[0])
            seen, top = set(), []
            for h in hyps:
                if h[2] not in seen:
                    seen.add(h[2])
                    top.append(h)
                    if len(top) == width:
                        break
            if tail_near[node + 1] and np.isfinite(tail[node + 1]):
                for score, state, _, path in top:
                    finals.append((score + tail[node + 1] + lmw * scorer.end_score(state), path))
            for k in range(a0, a1):
                tok, unk = arc_tok[k], arc_unk[k]
                word_key = lat.unk_items[arc_ids[k]].text if unk else tok
                target = pending.setdefault(arc_end[k], [])
                head = glue_head[int(near[k])]
                for score, state, words, path in top:
                    lp, nxt = scorer.score(state, tok)
                    glued = bool(head and path and glue_tail[path[-1]])
                    target.append((extend(score, arc_sig[k], lp + arc_extra[k], unk, glued), nxt, words + (word_key,),
                                   path + (int(near[k]),)))
        return [(score, tuple(self.arc_item(out.records, lat, k) for k in path)) for score, path in finals]

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
