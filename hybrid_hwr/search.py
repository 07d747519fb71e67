"""Token-passing Viterbi beam search over a lexicon prefix tree (numba kernel + driver).

The search network
------------------
Every node of a :class:`hybrid_hwr.lexicon.PrefixTree` (except the root) is one
character HMM: the left-to-right emitting states of its symbol in the
:class:`~hybrid_hwr.hmm.HmmTopology`.  Leaving the last state of a node enters the
first state of each child; at a node where words end, each word ends there too.
Besides the tree the network holds copies of the space model (units):

* ``BLANK_START``: optional leading blank (entered with ``blank_prob``, else skipped);
* ``SPACE``: optional space between words (``space_prob``), when ``word_gaps``;
* ``BLANK_END``: optional trailing blank (``blank_prob``);
* ``EMPTY``: the blank-only line (no word), when ``allow_empty``;
* ``UNK``: one unit per symbol for out-of-lexicon words spelled by a character LM.

These are exactly the conventions of :func:`hybrid_hwr.hmm.build_line_graph`, so the
search score of a word sequence ``W`` along a path equals the score of the same path in
the line graph of ``" ".join(W)``, plus ``glue_penalty`` for every join that skips the
optional space between a word ending with a *glue symbol* (a letter or digit, see
``glue_symbols`` of :func:`build_network`) and a word starting with one: without it
the search could tile any text with one-letter words glued together.  A lexicon of single characters with no optional
units is the character loop of :func:`hybrid_hwr.hmm.build_loop_graph`.

Tokens and language-model states
--------------------------------
A token is ``(network state, LM state, char-LM state)`` with a score, a back-pointer to
a *record* (one per word end, or per character of an out-of-lexicon word) and the
frame where its current word started.  Tokens with the same key recombine (Viterbi):
the LM state determines every future LM score, so recombination is exact.

LM look-ahead: every tree node carries ``lm_weight`` times the best unigram log
probability of the words below it (:func:`unigram_lookahead`); tokens pay it on the
way down the tree and get it back at the word end, where the real n-gram score is
added.  Only pruning sees it; scores of complete hypotheses are unchanged.

The kernel never calls Python: word-end LM transitions are read from open-addressing
hash tables ``(LM state, token) -> (ln p, next LM state)`` and an end-of-sentence
array.  Each frame runs in two phases: (1) every transition that needs no LM entry,
word ends queued; (2) the queued word ends.  Before phase 2 the kernel checks that the
tables hold every entry the queue needs; if not, it returns the missing keys with
phase 1 kept, the driver asks the cached :class:`hybrid_hwr.lm.LmScorer` for exactly
those ``(state, word)`` pairs, fills the tables and the kernel resumes at phase 2 of
the same frame.  Python work is therefore per distinct ``(LM state, word)`` pair ever
met (the tables persist across lines), never per frame or token.

Pruning, at every frame after the emission scores are added: tokens more than
``beam`` below the frame's best are dropped, then if more than ``max_active`` remain,
a histogram of scores gives the cut that keeps at most ``max_active`` (the best bin is
always kept).  While a frame is expanded, candidates are already dropped below the
best so far minus the previous frame's effective beam plus ``ADAPTIVE_MARGIN * beam``
(Kaldi's adaptive beam), the best token being expanded first.  Tokens inside
out-of-lexicon words get a tighter budget of their own, ``unk_beam`` and
``unk_max_active`` (adaptive too): a character LM creates one token per spelling context,
and every new context costs LM queries.  Tokens in the trailing
blank hold finished lines and are pruned apart, per blank state against the best of
that state, so that the line end finds complete hypotheses whenever a word could end
early enough.  The word penalty is paid when a word starts (not when it ends), so that
finished words are not pruned by tokens that have not paid it yet.
"""

from __future__ import annotations

import math
from collections import namedtuple

import numba
import numpy as np

from .errors import HwrError

NEG_INF = -np.inf
# The kernels take no memory from numba's runtime: without it, passing arrays between
# them costs no atomic reference counting (which made a hash insertion 10x slower).
_KERNEL = dict(cache=True, _nrt=False)
# on-the-fly pruning while a frame is expanded uses the previous frame's effective beam
# plus this fraction of the beam (Kaldi's adaptive beam); the frame's own pruning follows
ADAPTIVE_MARGIN = 0.1
# typed constants: numba compiles a function once per literal argument value otherwise
ZERO = np.int64(0)
MINUS1 = np.int64(-1)

# unit kinds
K_ROOT, K_TREE, K_BLANK_START, K_SPACE, K_BLANK_END, K_EMPTY, K_UNK = 0, 1, 2, 3, 4, 5, 6
# record kinds
R_WORD, R_UNK_CHAR, R_UNK_WORD = 0, 1, 2
# kernel statuses
S_DONE, S_NEED_LM, S_GROW_TOKENS, S_GROW_RECORDS = 0, 1, 2, 3
# missing-entry kinds
M_WORD, M_CHAR, M_EOS = 0, 1, 2

# float parameters
F_LM_WEIGHT, F_WORD_PENALTY, F_BEAM, F_SPACE_ENTER, F_SPACE_SKIP, F_BLANK_ENTER, F_BLANK_SKIP, \
    F_UNK_PENALTY, F_UNK_BEAM, F_GLUE_PENALTY = range(10)
N_FPARAMS = 10
# int parameters
(I_MAX_ACTIVE, I_HAS_LM, I_HAS_UNK, I_WORD_GAPS, I_LINE_BLANKS, I_ALLOW_EMPTY, I_BOS, I_UNK_START,
 I_UNK_END_TOK, I_N_WTOK, I_N_CTOK, I_U_BLANK_START, I_U_SPACE, I_U_BLANK_END, I_U_EMPTY,
 I_END_LO, I_END_HI, I_UNK_LO, I_UNK_MAX_ACTIVE) = range(19)
N_IPARAMS = 19
# counters shared by driver and kernel
(C_ACTIVE, C_RECORDS, C_MISSING, C_FINALS, C_USED, C_EVENTS, C_PHASE, C_FRAME_RECORDS,
 C_STAT_PUSHES, C_STAT_TOKENS, C_STAT_EVENTS) = range(11)
# queued word-end events
EV_WORD, EV_UNK = 0, 1

UNK_TOKEN = -1   # word-table token of the LM's <unk> (lm.UNK_ID)

Network = namedtuple("Network", [
    "unit_kind", "unit_state0", "unit_la", "first_child", "n_children", "word_start", "word_ids",
    "net_emit", "net_self", "net_next", "net_unit", "net_last", "unk_units", "unk_tok", "sym_first", "unit_glue"])
Tokens = namedtuple("Tokens", ["net", "lm", "aux", "score", "bp", "start"])
# next-frame tokens: one row per slot (one cache line per insertion), columns H_*;
# ``score`` is a float64 view of the same memory, read at column H_SCORE
Hash = namedtuple("Hash", ["slots", "score", "used", "hist", "best_end"])
H_NET, H_LM, H_AUX, H_BP, H_START, H_SCORE = range(6)
Records = namedtuple("Records", ["prev", "kind", "token", "start", "end", "score", "lmlp", "lm_state"])
Table = namedtuple("Table", ["keys", "logp", "next"])
Finals = namedtuple("Finals", ["score", "rec", "lm_state"])
Missing = namedtuple("Missing", ["kind", "state", "token"])
Events = namedtuple("Events", ["kind", "score", "lm", "aux", "bp", "start", "unit", "word"])


# ----------------------------------------------------------------------------- kernel helpers

@numba.njit(**_KERNEL)
def _mix(a, b, c):
    h = np.uint64(a) * np.uint64(0x9E3779B97F4A7C15)
    h ^= np.uint64(b) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= np.uint64(c) * np.uint64(0x165667B19E3779F9)
    return h ^ (h >> np.uint64(29))


@numba.njit(**_KERNEL)
def _table_find(table, key):
    """Slot of ``key`` in an open-addressing table, -1 if absent."""
    mask = table.keys.shape[0] - 1
    i = np.int64(_mix(key, ZERO, ZERO) & np.uint64(mask))
    while True:
        k = table.keys[i]
        if k == key:
            return i
        if k == -1:
            return -1
        i = (i + 1) & mask


@numba.njit(**_KERNEL)
def table_put(table, keys, logp, nxt):
    """Insert entries (the driver keeps the load below one half)."""
    mask = table.keys.shape[0] - 1
    for j in range(keys.shape[0]):
        key = keys[j]
        i = np.int64(_mix(key, ZERO, ZERO) & np.uint64(mask))
        while table.keys[i] != -1 and table.keys[i] != key:
            i = (i + 1) & mask
        table.keys[i] = key
        table.logp[i] = logp[j]
        table.next[i] = nxt[j]


@numba.njit(**_KERNEL)
def _request(miss, cnt, kind, state, token):
    n = cnt[C_MISSING]
    if n < miss.kind.shape[0]:
        miss.kind[n] = kind
        miss.state[n] = state
        miss.token[n] = token
        cnt[C_MISSING] = n + 1
    else:
        cnt[C_MISSING] = n   # full: the rest is asked for on the next try


@numba.njit(**_KERNEL)
def _push(h, cnt, s, lm, aux, score, bp, start):
    """Viterbi recombination into the next frame's hash. Returns False when the hash is too full."""
    slots = h.slots
    mask = slots.shape[0] - 1
    i = np.int64(_mix(s, lm, aux) & np.uint64(mask))
    cnt[C_STAT_PUSHES] += 1
    while True:
        k = slots[i, H_NET]
        if k == -1:
            n = cnt[C_USED]
            if 2 * (n + 1) > slots.shape[0]:
                return False
            slots[i, H_NET] = s
            slots[i, H_LM] = lm
            slots[i, H_AUX] = aux
            slots[i, H_BP] = bp
            slots[i, H_START] = start
            h.score[i, H_SCORE] = score
            h.used[n] = i
            cnt[C_USED] = n + 1
            return True
        if k == s and slots[i, H_LM] == lm and slots[i, H_AUX] == aux:
            if score > h.score[i, H_SCORE]:
                h.score[i, H_SCORE] = score
                slots[i, H_BP] = bp
                slots[i, H_START] = start
            return True
        i = (i + 1) & mask


@numba.njit(**_KERNEL)
def _new_record(rec, cnt, prev, kind, token, start, end, score, lmlp, lm_state):
    n = cnt[C_RECORDS]
    if n >= rec.prev.shape[0]:
        return -1
    rec.prev[n] = prev
    rec.kind[n] = kind
    rec.token[n] = token
    rec.start[n] = start
    rec.end[n] = end
    rec.score[n] = score
    rec.lmlp[n] = lmlp
    rec.lm_state[n] = lm_state
    cnt[C_RECORDS] = n + 1
    return n


@numba.njit(**_KERNEL)
def _clear_hash(h, cnt):
    for j in range(cnt[C_USED]):
        h.slots[h.used[j], H_NET] = -1
    cnt[C_USED] = 0


@numba.njit(**_KERNEL)
def _word_lookup(wt, ip, miss, cnt, state, token):
    """(ln p, next state, found) of a word-LM transition; requests it when absent."""
    if ip[I_HAS_LM] == 0:
        return 0.0, 0, True
    slot = _table_find(wt, np.int64(state) * ip[I_N_WTOK] + token + 1)
    if slot < 0:
        _request(miss, cnt, np.int64(M_WORD), state, token)
        return 0.0, 0, False
    return wt.logp[slot], wt.next[slot], True


@numba.njit(**_KERNEL)
def _char_lookup(ct, ip, miss, cnt, state, token):
    slot = _table_find(ct, np.int64(state) * ip[I_N_CTOK] + token + 1)
    if slot < 0:
        _request(miss, cnt, np.int64(M_CHAR), state, token)
        return 0.0, 0, False
    return ct.logp[slot], ct.next[slot], True


@numba.njit(**_KERNEL)
def _eos_lookup(eos, ip, miss, cnt, state):
    if ip[I_HAS_LM] == 0:
        return 0.0, True
    if state < eos.shape[0] and not np.isnan(eos[state]):
        return eos[state], True
    _request(miss, cnt, np.int64(M_EOS), state, ZERO)
    return 0.0, False


@numba.njit(**_KERNEL)
def _enter_words(t, loglik, net, fp, ip, h, cnt, ct, miss, score, lm, bp, cutoff, best, ubeam, glue):
    """Start a word at frame ``t``: every child of the root (and the first letter of an
    out-of-lexicon word, kept within ``ubeam`` of the best); ``glue`` is added to the
    words that start with a glue symbol (the previous word touches them). Returns (best, ok)."""
    score += fp[F_WORD_PENALTY]    # paid when a word starts, so that finished words compete fairly
    root_first = net.first_child[0]
    for c in range(root_first, root_first + net.n_children[0]):
        s = net.unit_state0[c]
        v = score + net.unit_la[c] + loglik[t, net.net_emit[s]]
        if net.unit_glue[c]:
            v += glue
        if v > cutoff and v > NEG_INF:
            if not _push(h, cnt, s, lm, ZERO, v, bp, t):
                return best, False
            if v > best:
                best = v
    if ip[I_HAS_UNK] != 0:
        lmw = fp[F_LM_WEIGHT]
        for j in range(net.unk_units.shape[0]):
            u = net.unk_units[j]
            s = net.unit_state0[u]
            ucut = max(cutoff, best - ubeam)
            v0 = score + fp[F_UNK_PENALTY] + loglik[t, net.net_emit[s]]
            if net.unit_glue[u]:
                v0 += glue
            if not (v0 > ucut):
                continue
            lp, q, found = _char_lookup(ct, ip, miss, cnt, ip[I_UNK_START], net.unk_tok[j])
            if not found:
                continue
            v = v0 + lmw * lp
            if v > ucut and v > NEG_INF:
                if not _push(h, cnt, s, lm, q, v, bp, t):
                    return best, False
                if v > best:
                    best = v
    return best, True


@numba.njit(**_KERNEL)
def _after_word(t, loglik, net, fp, ip, h, cnt, ct, miss, y, lm, bp, cutoff, best, ubeam, u):
    """Successors of a word end of score ``y`` (LM state ``lm``, record ``bp``, last unit ``u``)
    into frame ``t``."""
    # a next word that touches this one without a space pays the glue penalty at letters/digits
    glue = fp[F_GLUE_PENALTY] if ip[I_WORD_GAPS] != 0 and net.unit_glue[u] else 0.0
    if ip[I_WORD_GAPS] != 0 and ip[I_U_SPACE] >= 0:
        s = net.unit_state0[ip[I_U_SPACE]]
        v = y + fp[F_SPACE_ENTER] + loglik[t, net.net_emit[s]]
        if v > cutoff and v > NEG_INF:
            if not _push(h, cnt, s, lm, ZERO, v, bp, t):
                return best, False
            best = max(best, v)
        best, ok = _enter_words(t, loglik, net, fp, ip, h, cnt, ct, miss, y + fp[F_SPACE_SKIP], lm, bp,
                                cutoff, best, ubeam, glue)
    else:
        best, ok = _enter_words(t, loglik, net, fp, ip, h, cnt, ct, miss, y, lm, bp, cutoff, best, ubeam, glue)
    if not ok:
        return best, False
    if ip[I_LINE_BLANKS] != 0 and ip[I_U_BLANK_END] >= 0:
        # the trailing blank ignores the cutoff: see _prune (finished lines are kept apart)
        s = net.unit_state0[ip[I_U_BLANK_END]]
        v = y + fp[F_BLANK_ENTER] + loglik[t, net.net_emit[s]]
        if v > NEG_INF:
            if not _push(h, cnt, s, lm, ZERO, v, bp, t):
                return best, False
    return best, True


@numba.njit(**_KERNEL)
def _histogram_cut(h, cnt, top, lowest, thresh, unk_thresh, limit, unk_lo, unk_only, end_lo, end_hi):
    """Score cut that keeps at most ``limit`` of the tokens above their threshold (all
    tokens outside the trailing blank, or only those inside out-of-lexicon words), from
    a histogram of scores between ``lowest`` and ``top`` (the best bin is always kept)."""
    n_bins = h.hist.shape[0] - 1
    width = (top - lowest) / n_bins
    if not width > 0.0:
        return NEG_INF
    counts = h.hist
    counts[:] = 0
    for j in range(cnt[C_USED]):
        i = h.used[j]
        v = h.score[i, H_SCORE]
        g = h.slots[i, H_NET]
        if end_lo <= g < end_hi or (unk_only and g < unk_lo):
            continue
        if v >= (unk_thresh if g >= unk_lo else thresh):
            counts[min(int((top - v) / width), n_bins)] += 1
    total = counts[0]
    b = 1
    while b <= n_bins and total + counts[b] <= limit:
        total += counts[b]
        b += 1
    return top - b * width    # keeps bins 0 .. b-1


@numba.njit(**_KERNEL)
def _prune(h, cnt, cur, ip, beam, unk_beam, best):
    """Beam and histogram pruning of the next frame's hash into ``cur``; clears the hash.
    Returns the effective beams (best minus the lowest score kept) of all tokens and of
    those inside out-of-lexicon words.

    Tokens in the trailing blank (network states ``end_lo .. end_hi - 1``) hold finished
    lines: they compete only with the tokens of their own state (``beam`` below the best
    of them, outside ``max_active``), so that every blank state keeps its best finished
    line, whatever the tokens in the middle of words (whose LM cost is not fully paid
    yet) score, and the line end finds complete hypotheses.

    Tokens inside out-of-lexicon words (network states from ``unk_lo`` on) must also lie
    within ``unk_beam`` of the best, and at most ``unk_max_active`` of them are kept:
    spelling by a character LM multiplies the tokens (one per character context), so
    they get a tighter budget than the lexicon's.
    """
    end_lo, end_hi, unk_lo = ip[I_END_LO], ip[I_END_HI], ip[I_UNK_LO]
    n_used = cnt[C_USED]
    thresh = best - beam
    unk_thresh = best - min(beam, unk_beam)
    n_in = n_unk = 0
    lowest = lowest_unk = best
    best_unk = NEG_INF
    best_end = h.best_end
    for k in range(end_hi - end_lo):
        best_end[k] = NEG_INF
    for j in range(n_used):
        i = h.used[j]
        v = h.score[i, H_SCORE]
        g = h.slots[i, H_NET]
        if end_lo <= g < end_hi:
            best_end[g - end_lo] = max(best_end[g - end_lo], v)
        elif g >= unk_lo:
            if v >= unk_thresh:
                n_in += 1
                n_unk += 1
                lowest = min(lowest, v)
                lowest_unk = min(lowest_unk, v)
                best_unk = max(best_unk, v)
        elif v >= thresh:
            n_in += 1
            lowest = min(lowest, v)
    if n_in > ip[I_MAX_ACTIVE]:
        thresh = max(thresh, _histogram_cut(h, cnt, best, lowest, thresh, unk_thresh, ip[I_MAX_ACTIVE], unk_lo,
                                            False, end_lo, end_hi))
        unk_thresh = max(unk_thresh, thresh)
    if n_unk > ip[I_UNK_MAX_ACTIVE]:
        unk_thresh = max(unk_thresh, _histogram_cut(h, cnt, best_unk, lowest_unk, thresh, unk_thresh,
                                                    ip[I_UNK_MAX_ACTIVE], unk_lo, True, end_lo, end_hi))
    n = 0
    for j in range(n_used):
        i = h.used[j]
        v = h.score[i, H_SCORE]
        g = h.slots[i, H_NET]
        if end_lo <= g < end_hi:
            keep = v >= best_end[g - end_lo] - beam
        else:
            keep = v >= (unk_thresh if g >= unk_lo else thresh)
        if keep and v > NEG_INF:
            cur.net[n] = h.slots[i, H_NET]
            cur.lm[n] = h.slots[i, H_LM]
            cur.aux[n] = h.slots[i, H_AUX]
            cur.score[n] = v
            cur.bp[n] = h.slots[i, H_BP]
            cur.start[n] = h.slots[i, H_START]
            n += 1
        h.slots[i, H_NET] = -1
    cnt[C_USED] = 0
    cnt[C_ACTIVE] = n
    return best - thresh, best - unk_thresh


@numba.njit(**_KERNEL)
def _final_step(T, net, fp, ip, cur, rec, cnt, wt, ct, eos, miss, fin):
    """Line end: the complete hypotheses of the last frame's tokens into ``fin``."""
    lmw = fp[F_LM_WEIGHT]
    end_skip = fp[F_BLANK_SKIP] if (ip[I_LINE_BLANKS] != 0 and ip[I_U_BLANK_END] >= 0) else 0.0
    n_fin = 0
    for i in range(cnt[C_ACTIVE]):
        s = cur.net[i]
        if not net.net_last[s]:
            continue
        u = net.net_unit[s]
        kind = net.unit_kind[u]
        x = cur.score[i] + net.net_next[s]
        if kind == K_TREE:
            for k in range(net.word_start[u], net.word_start[u + 1]):
                w = net.word_ids[k]
                lp, ns, ok1 = _word_lookup(wt, ip, miss, cnt, cur.lm[i], w)
                if not ok1:
                    continue
                e, ok2 = _eos_lookup(eos, ip, miss, cnt, ns)
                if not ok2:
                    continue
                y = x - net.unit_la[u] + lmw * lp
                r = _new_record(rec, cnt, cur.bp[i], np.int64(R_WORD), w, cur.start[i], T - 1, y, lp, ns)
                if r < 0:
                    return S_GROW_RECORDS
                if n_fin >= fin.score.shape[0]:
                    return S_GROW_TOKENS
                fin.score[n_fin] = y + end_skip + lmw * e
                fin.rec[n_fin] = r
                fin.lm_state[n_fin] = ns
                n_fin += 1
        elif kind == K_UNK:
            status, n_fin = _unk_word_end(T, T - 1, x, i, net, fp, ip, cur, rec, cnt, wt, ct, eos, miss,
                                          fin, n_fin, end_skip)
            if status != S_DONE:
                return status
        elif kind == K_BLANK_END or kind == K_EMPTY:
            e, ok = _eos_lookup(eos, ip, miss, cnt, cur.lm[i])
            if not ok:
                continue
            if n_fin >= fin.score.shape[0]:
                return S_GROW_TOKENS
            fin.score[n_fin] = x + lmw * e
            fin.rec[n_fin] = cur.bp[i]
            fin.lm_state[n_fin] = cur.lm[i]
            n_fin += 1
    cnt[C_FINALS] = n_fin
    return S_DONE


@numba.njit(**_KERNEL)
def _unk_word_end(T, end, x, i, net, fp, ip, cur, rec, cnt, wt, ct, eos, miss, fin, n_fin, end_skip):
    """Final step for a token leaving the last letter of an out-of-lexicon word."""
    lmw = fp[F_LM_WEIGHT]
    lp_sp, q2, ok0 = _char_lookup(ct, ip, miss, cnt, cur.aux[i], ip[I_UNK_END_TOK])
    lp, ns, ok1 = _word_lookup(wt, ip, miss, cnt, cur.lm[i], np.int64(UNK_TOKEN))
    if not (ok0 and ok1):
        return S_DONE, n_fin
    e, ok2 = _eos_lookup(eos, ip, miss, cnt, ns)
    if not ok2:
        return S_DONE, n_fin
    u = net.net_unit[cur.net[i]]
    c = _new_record(rec, cnt, cur.bp[i], np.int64(R_UNK_CHAR), _unk_symbol(net, u), cur.start[i], end, x, 0.0,
                    cur.aux[i])
    if c < 0:
        return S_GROW_RECORDS, n_fin
    y = x + lmw * (lp + lp_sp)
    r = _new_record(rec, cnt, c, np.int64(R_UNK_WORD), np.int64(UNK_TOKEN), MINUS1, end, y, lp, ns)
    if r < 0:
        return S_GROW_RECORDS, n_fin
    if n_fin >= fin.score.shape[0]:
        return S_GROW_TOKENS, n_fin
    fin.score[n_fin] = y + end_skip + lmw * e
    fin.rec[n_fin] = r
    fin.lm_state[n_fin] = ns
    return S_DONE, n_fin + 1


@numba.njit(**_KERNEL)
def _unk_symbol(net, u):
    """Symbol index (into net.unk_units) of an UNK unit."""
    for j in range(net.unk_units.shape[0]):
        if net.unk_units[j] == u:
            return j
    return -1


# ----------------------------------------------------------------------------- the kernel

@numba.njit(**_KERNEL)
def _word_end_lookups(t, loglik, ev, e, net, ip, wt, ct, miss, cnt, unk_cutoff):
    """True when every LM entry that event ``e`` may need is in the tables (else requests
    them); a next out-of-lexicon letter whose emission alone falls below ``unk_cutoff``
    needs none."""
    ok = True
    if ev.kind[e] == EV_WORD:
        _, _, ok = _word_lookup(wt, ip, miss, cnt, ev.lm[e], ev.word[e])
    else:
        aux = ev.aux[e]
        for j in range(net.unk_units.shape[0]):
            if not (ev.score[e] + loglik[t, net.net_emit[net.unit_state0[net.unk_units[j]]]] > unk_cutoff):
                continue
            _, _, found = _char_lookup(ct, ip, miss, cnt, aux, net.unk_tok[j])
            ok = ok and found
        _, _, found = _char_lookup(ct, ip, miss, cnt, aux, ip[I_UNK_END_TOK])
        ok = ok and found
        _, _, found = _word_lookup(wt, ip, miss, cnt, ev.lm[e], UNK_TOKEN)
        ok = ok and found
    return ok


@numba.njit(**_KERNEL)
def _word_end_events(t, loglik, net, fp, ip, h, cnt, rec, ev, wt, ct, miss, best, succ_bound, beam, ubeam):
    """Phase 2 of a frame: the word ends (and out-of-lexicon letters) of phase 1, whose LM
    entries are all in the tables. Returns (status, best)."""
    lmw = fp[F_LM_WEIGHT]
    cutoff = best - beam
    end_kept = ip[I_LINE_BLANKS] != 0 and ip[I_U_BLANK_END] >= 0
    for e in range(cnt[C_EVENTS]):
        x = ev.score[e]
        lm = ev.lm[e]
        bp = ev.bp[e]
        u = ev.unit[e]
        if ev.kind[e] == EV_WORD:
            w = ev.word[e]
            lp, ns, _ = _word_lookup(wt, ip, miss, cnt, lm, w)
            y = x - net.unit_la[u] + lmw * lp
            # skip word ends none of whose successors can survive
            if not (y + succ_bound > cutoff or end_kept):
                continue
            r = _new_record(rec, cnt, bp, np.int64(R_WORD), w, ev.start[e], t - 1, y, lp, ns)
            if r < 0:
                return S_GROW_RECORDS, best
            best, ok = _after_word(t, loglik, net, fp, ip, h, cnt, ct, miss, y, ns, r, cutoff, best, ubeam, u)
            if not ok:
                return S_GROW_TOKENS, best
            cutoff = best - beam
        else:
            # an out-of-lexicon letter ends: a letter record, then the next letter or the word end
            aux = ev.aux[e]
            c = _new_record(rec, cnt, bp, np.int64(R_UNK_CHAR), ev.word[e], ev.start[e], t - 1, x, 0.0, aux)
            if c < 0:
                return S_GROW_RECORDS, best
            for j in range(net.unk_units.shape[0]):
                s2 = net.unit_state0[net.unk_units[j]]
                ucut = best - ubeam
                if not (x + loglik[t, net.net_emit[s2]] > ucut):
                    continue    # (its LM entry may be missing: it was not needed)
                lp, q, _ = _char_lookup(ct, ip, miss, cnt, aux, net.unk_tok[j])
                v = x + lmw * lp + loglik[t, net.net_emit[s2]]
                if v > ucut and v > NEG_INF:
                    if not _push(h, cnt, s2, lm, q, v, c, t):
                        return S_GROW_TOKENS, best
                    if v > best:
                        best = v
                        cutoff = best - beam
            lp_sp, _, _ = _char_lookup(ct, ip, miss, cnt, aux, ip[I_UNK_END_TOK])
            lp, ns, _ = _word_lookup(wt, ip, miss, cnt, lm, np.int64(UNK_TOKEN))
            y = x + lmw * (lp + lp_sp)
            if not (y + succ_bound > cutoff or end_kept):
                continue
            r = _new_record(rec, cnt, c, np.int64(R_UNK_WORD), np.int64(UNK_TOKEN), MINUS1, t - 1, y, lp, ns)
            if r < 0:
                return S_GROW_RECORDS, best
            best, ok = _after_word(t, loglik, net, fp, ip, h, cnt, ct, miss, y, ns, r, cutoff, best, ubeam, u)
            if not ok:
                return S_GROW_TOKENS, best
            cutoff = best - beam
    return S_DONE, best


@numba.njit(**_KERNEL)
def _add_event(ev, cnt, kind, x, lm, aux, bp, start, unit, word):
    n = cnt[C_EVENTS]
    if n >= ev.kind.shape[0]:
        return False
    ev.kind[n] = kind
    ev.score[n] = x
    ev.lm[n] = lm
    ev.aux[n] = aux
    ev.bp[n] = bp
    ev.start[n] = start
    ev.unit[n] = unit
    ev.word[n] = word
    cnt[C_EVENTS] = n + 1
    return True


@numba.njit(**_KERNEL)
def _expand_frame(t, loglik, net, fp, ip, cur, h, cnt, ev, ct, miss, succ_bound, beam, ubeam):
    """Phase 1 of a frame: every transition that needs no LM entry; word ends and
    out-of-lexicon letter ends go to ``ev``. ``beam``, ``ubeam``: the widths of the
    on-the-fly cutoff (tokens inside out-of-lexicon words: ``ubeam``). Returns (status, best)."""
    best = NEG_INF
    cutoff = NEG_INF
    if t == 0:
        start = 0.0
        if ip[I_LINE_BLANKS] != 0 and ip[I_U_BLANK_START] >= 0:
            s = net.unit_state0[ip[I_U_BLANK_START]]
            v = fp[F_BLANK_ENTER] + loglik[0, net.net_emit[s]]
            if v > NEG_INF:
                if not _push(h, cnt, s, ip[I_BOS], ZERO, v, MINUS1, ZERO):
                    return S_GROW_TOKENS, best
                best = max(best, v)
            start = fp[F_BLANK_SKIP]
        best, ok = _enter_words(0, loglik, net, fp, ip, h, cnt, ct, miss, start, ip[I_BOS], MINUS1, NEG_INF, best,
                                ubeam, 0.0)
        if not ok:
            return S_GROW_TOKENS, best
        if ip[I_ALLOW_EMPTY] != 0 and ip[I_U_EMPTY] >= 0:
            s = net.unit_state0[ip[I_U_EMPTY]]
            v = loglik[0, net.net_emit[s]]
            if v > NEG_INF:
                if not _push(h, cnt, s, ip[I_BOS], ZERO, v, MINUS1, ZERO):
                    return S_GROW_TOKENS, best
                best = max(best, v)
        return S_DONE, best
    has_unk = ip[I_HAS_UNK] != 0
    # the best token's self-loop first: a score the frame's best will reach, so a cutoff
    for i in range(cnt[C_ACTIVE]):
        v = cur.score[i] + net.net_self[cur.net[i]] + loglik[t, net.net_emit[cur.net[i]]]
        if v > best:
            best = v
    cutoff = best - beam
    for i in range(cnt[C_ACTIVE]):
        s = cur.net[i]
        lm = cur.lm[i]
        aux = cur.aux[i]
        sc = cur.score[i]
        bp = cur.bp[i]
        st = cur.start[i]
        if ip[I_END_LO] <= s < ip[I_END_HI]:
            # the trailing blank: pruned apart (see _prune)
            v = sc + net.net_self[s] + loglik[t, net.net_emit[s]]
            if v > NEG_INF and not _push(h, cnt, s, lm, aux, v, bp, st):
                return S_GROW_TOKENS, best
            if not net.net_last[s]:
                v = sc + net.net_next[s] + loglik[t, net.net_emit[s + 1]]
                if v > NEG_INF and not _push(h, cnt, s + 1, lm, aux, v, bp, st):
                    return S_GROW_TOKENS, best
            continue
        in_unk = s >= ip[I_UNK_LO]
        own_cut = max(cutoff, best - ubeam) if in_unk else cutoff
        v = sc + net.net_self[s] + loglik[t, net.net_emit[s]]
        if v > own_cut and v > NEG_INF:
            if not _push(h, cnt, s, lm, aux, v, bp, st):
                return S_GROW_TOKENS, best
            if v > best:
                best = v
                cutoff = best - beam
        if not net.net_last[s]:
            own_cut = max(cutoff, best - ubeam) if in_unk else cutoff
            v = sc + net.net_next[s] + loglik[t, net.net_emit[s + 1]]
            if v > own_cut and v > NEG_INF:
                if not _push(h, cnt, s + 1, lm, aux, v, bp, st):
                    return S_GROW_TOKENS, best
                if v > best:
                    best = v
                    cutoff = best - beam
            continue
        x = sc + net.net_next[s]
        if not (x + succ_bound > cutoff):
            continue    # no successor of this exit can survive
        u = net.net_unit[s]
        kind = net.unit_kind[u]
        if kind == K_TREE:
            fc = net.first_child[u]
            for c in range(fc, fc + net.n_children[u]):
                s2 = net.unit_state0[c]
                v = x + (net.unit_la[c] - net.unit_la[u]) + loglik[t, net.net_emit[s2]]
                if v > cutoff and v > NEG_INF:
                    if not _push(h, cnt, s2, lm, aux, v, bp, st):
                        return S_GROW_TOKENS, best
                    if v > best:
                        best = v
                        cutoff = best - beam
            for k in range(net.word_start[u], net.word_start[u + 1]):
                if not _add_event(ev, cnt, EV_WORD, x, lm, aux, bp, st, u, net.word_ids[k]):
                    return S_GROW_TOKENS, best
        elif kind == K_SPACE or kind == K_BLANK_START:
            best, ok = _enter_words(t, loglik, net, fp, ip, h, cnt, ct, miss, x, lm, bp, cutoff, best, ubeam, 0.0)
            if not ok:
                return S_GROW_TOKENS, best
            cutoff = best - beam
        elif kind == K_UNK and has_unk:
            if not _add_event(ev, cnt, EV_UNK, x, lm, aux, bp, st, u, _unk_symbol(net, u)):
                return S_GROW_TOKENS, best
    return S_DONE, best


@numba.njit(**_KERNEL)
def search_kernel(loglik, t0, net, fp, ip, cur, h, rec, ev, wt, ct, eos, miss, fin, cnt, best_state):
    """Frame-synchronous token passing from frame ``t0`` to the end of the line.

    ``cur`` holds the active tokens after frame ``t0 - 1`` (scores include its emission).
    Each frame runs in two phases: (1) every transition that needs no LM entry, word
    ends queued in ``ev``; (2) once the tables hold every entry the queued word ends
    need, their records and successors.  Returns ``(status, t)``: ``S_DONE`` (finals in
    ``fin``), or the frame ``t`` to resume at after the driver filled the missing LM
    entries (``S_NEED_LM``: phase 1 is kept, ``cnt[C_PHASE] == 1``), or grew the token
    (``S_GROW_TOKENS``) or record (``S_GROW_RECORDS``) arrays (frame ``t`` rolled back).
    ``t == T`` stands for the line-end step.
    """
    T = loglik.shape[0]
    for t in range(t0, T + 1):
        cnt[C_MISSING] = 0
        if t == T:
            n_rec0 = cnt[C_RECORDS]
            status = _final_step(T, net, fp, ip, cur, rec, cnt, wt, ct, eos, miss, fin)
            if status == S_DONE and cnt[C_MISSING] > 0:
                status = S_NEED_LM
            if status != S_DONE:
                cnt[C_RECORDS] = n_rec0
                cnt[C_FINALS] = 0
            return status, t
        # best emission of the first state of any model: a bound to skip dead model exits
        succ_emit_max = NEG_INF
        for k in range(net.sym_first.shape[0]):
            succ_emit_max = max(succ_emit_max, loglik[t, net.sym_first[k]])
        # a successor of a model exit adds terms <= 0, an entry emission and perhaps a bonus
        succ_bound = succ_emit_max + max(fp[F_WORD_PENALTY], 0.0) + max(fp[F_GLUE_PENALTY], 0.0)
        if ip[I_HAS_UNK] != 0:
            succ_bound += max(fp[F_UNK_PENALTY], 0.0)
        if cnt[C_PHASE] == 0:
            cnt[C_EVENTS] = 0
            cnt[C_FRAME_RECORDS] = cnt[C_RECORDS]
            # on-the-fly cutoff: the previous frame's effective beam (after histogram
            # pruning) plus a margin, never wider than the beam
            best_state[1] = min(fp[F_BEAM], best_state[2] + ADAPTIVE_MARGIN * fp[F_BEAM]) if t > 1 else fp[F_BEAM]
            ubeam = min(fp[F_UNK_BEAM], best_state[4] + ADAPTIVE_MARGIN * fp[F_UNK_BEAM]) if t > 1 \
                else fp[F_UNK_BEAM]
            best_state[3] = min(best_state[1], ubeam)
            status, best = _expand_frame(t, loglik, net, fp, ip, cur, h, cnt, ev, ct, miss, succ_bound,
                                         best_state[1], best_state[3])
            if status != S_DONE:
                _clear_hash(h, cnt)
                return status, t
            best_state[0] = best
            cnt[C_PHASE] = 1
        # phase 2: all LM entries of the queued word ends, or ask for them
        for e in range(cnt[C_EVENTS]):
            _word_end_lookups(t, loglik, ev, e, net, ip, wt, ct, miss, cnt, best_state[0] - best_state[3])
        if cnt[C_MISSING] > 0:
            return S_NEED_LM, t
        status, best = _word_end_events(t, loglik, net, fp, ip, h, cnt, rec, ev, wt, ct, miss, best_state[0],
                                        succ_bound, best_state[1], best_state[3])
        cnt[C_PHASE] = 0
        if status == S_DONE and cnt[C_MISSING] > 0:
            status = S_GROW_TOKENS   # cannot happen (entries checked above); redo the frame safely
        if status != S_DONE:
            _clear_hash(h, cnt)
            cnt[C_RECORDS] = cnt[C_FRAME_RECORDS]
            return status, t
        cnt[C_STAT_EVENTS] += cnt[C_EVENTS]
        best_state[2], best_state[4] = _prune(h, cnt, cur, ip, fp[F_BEAM], fp[F_UNK_BEAM], best)
        cnt[C_STAT_TOKENS] += cnt[C_ACTIVE]
        if cnt[C_ACTIVE] == 0:
            cnt[C_FINALS] = 0
            return S_DONE, T      # nothing can be reached: the line is impossible
    return S_DONE, T


# ----------------------------------------------------------------------------- network

UNIT_NAMES = ("blank_start", "space", "blank_end", "empty")


def build_network(topology, transitions, tree, word_gaps=True, line_blanks=True, allow_empty=True,
                  unk_symbols=(), lookahead=None, glue_symbols=(), unit_symbols=None):
    """Flat arrays of the search network of ``tree`` (see the module docstring).

    ``word_gaps``: optional space model between words; ``line_blanks``: optional blank at
    the line ends; ``allow_empty``: a line may be blank only; ``unk_symbols``: symbol ids
    that out-of-lexicon words may use (empty: strict lexicon); ``lookahead`` (tree nodes,)
    the LM look-ahead score of each tree node (see :func:`unigram_lookahead`; None: none);
    ``glue_symbols``: symbol ids (letters, digits) where two words that touch without a
    space pay the search's ``glue_penalty``. The optional units need
    the topology's space model and are left out without it; ``unit_symbols`` ({unit
    name: symbol id}) gives some of them another model (CTC's blank, :mod:`hybrid_hwr.ctc`).
    ``tree`` may be any network of the tree's form: its nodes' child ranges may overlap.
    Returns ``(Network, {unit name: unit id or -1})``.
    """
    space = topology.space_id
    n_tree = tree.n_nodes
    extra_kind, extra_sym = [], []
    unit_ids = dict.fromkeys(UNIT_NAMES, -1)
    wanted = {"blank_start": line_blanks, "space": word_gaps, "blank_end": line_blanks, "empty": allow_empty}
    kinds = {"blank_start": K_BLANK_START, "space": K_SPACE, "blank_end": K_BLANK_END, "empty": K_EMPTY}
    if space >= 0:
        for name in UNIT_NAMES:
            if wanted[name]:
                unit_ids[name] = n_tree + len(extra_kind)
                extra_kind.append(kinds[name])
                extra_sym.append((unit_symbols or {}).get(name, space))
    unk_symbols = np.asarray(list(unk_symbols), dtype=np.int64)
    unk_units = np.arange(n_tree + len(extra_kind), n_tree + len(extra_kind) + len(unk_symbols), dtype=np.int64)
    extra_kind += [K_UNK] * len(unk_symbols)
    extra_sym += list(unk_symbols)

    unit_sym = np.concatenate([tree.char, np.asarray(extra_sym, dtype=np.int64)]).astype(np.int64)
    unit_kind = np.concatenate([[K_ROOT], np.full(n_tree - 1, K_TREE), extra_kind]).astype(np.int8)
    n_units = len(unit_sym)
    n_states = np.where(unit_sym >= 0, topology.n_states_of[np.maximum(unit_sym, 0)], 0).astype(np.int64)
    state0 = np.cumsum(n_states) - n_states
    net_unit = np.repeat(np.arange(n_units), n_states)
    pos = np.arange(len(net_unit)) - state0[net_unit]
    net_emit = (topology.state_offset[unit_sym[net_unit]] + pos).astype(np.int64)
    first_child = np.zeros(n_units, dtype=np.int64)
    n_children = np.zeros(n_units, dtype=np.int64)
    first_child[:n_tree] = np.maximum(tree.first_child, 0)
    n_children[:n_tree] = tree.n_children
    word_start = np.concatenate([tree.word_start, np.full(n_units - n_tree, tree.word_start[-1])])
    unit_la = np.zeros(n_units)
    if lookahead is not None:
        unit_la[:n_tree] = lookahead
        unit_la[0] = 0.0
        if not np.all(np.isfinite(unit_la) & (unit_la <= 0)):
            raise ValueError("LM look-ahead scores must be finite and <= 0")
    net = Network(
        unit_kind=unit_kind,
        unit_state0=np.where(n_states > 0, state0, -1).astype(np.int64),
        unit_la=unit_la,
        first_child=first_child,
        n_children=n_children,
        word_start=word_start.astype(np.int64),
        word_ids=np.ascontiguousarray(tree.word_ids, dtype=np.int64),
        net_emit=net_emit,
        net_self=np.ascontiguousarray(transitions.log_self[net_emit], dtype=np.float64),
        net_next=np.ascontiguousarray(transitions.log_next[net_emit], dtype=np.float64),
        net_unit=net_unit.astype(np.int64),
        net_last=(pos == n_states[net_unit] - 1),
        unk_units=unk_units,
        unk_tok=unk_symbols.copy(),
        sym_first=topology.state_offset.astype(np.int64),
        unit_glue=np.isin(unit_sym, np.asarray(list(glue_symbols), dtype=np.int64))
        & ((unit_kind == K_TREE) | (unit_kind == K_UNK)),
    )
    return net, unit_ids


def unigram_lookahead(tree, word_logp, lm_weight: float) -> np.ndarray:
    """LM look-ahead of every tree node: ``lm_weight * max ln P(w)`` over the words below it.

    Entering node ``c`` from its parent ``n`` adds ``la[c] - la[n]`` (<= 0), and a word
    ending at ``n`` first takes ``la[n]`` back before its real LM score is added: final
    scores are unchanged, but a token pays its likely LM cost as soon as the tree narrows,
    so that word ends compete fairly with tokens in the middle of long words.
    """
    best = np.full(tree.n_nodes, -np.inf)
    np.maximum.at(best, tree.word_node, np.asarray(word_logp, dtype=np.float64))
    for d in range(int(tree.depth.max()), 0, -1):
        nodes = np.flatnonzero(tree.depth == d)
        np.maximum.at(best, tree.parent[nodes], best[nodes])
    best[0] = 0.0
    return np.where(np.isfinite(best), lm_weight * np.minimum(best, 0.0), 0.0)


# ----------------------------------------------------------------------------- driver

class LmTable:
    """Open-addressing table ``(LM state, token) -> (ln p, next state)`` filled from a scorer.

    Keys are ``state * n_tokens + token + 1`` (token -1 is <unk>). Kept below half full.
    """

    def __init__(self, scorer, n_tokens: int, capacity: int = 1 << 12):
        self.scorer = scorer
        self.n_tokens = int(n_tokens) + 1
        self.size = 0
        self.table = self._empty(capacity)

    @staticmethod
    def _empty(capacity):
        return Table(np.full(capacity, -1, dtype=np.int64), np.zeros(capacity), np.zeros(capacity, dtype=np.int64))

    def add(self, states, tokens, missing_only=False):
        """Score the (state, token) pairs (unique; absent unless ``missing_only``) and store them."""
        keys = states.astype(np.int64) * self.n_tokens + tokens.astype(np.int64) + 1
        if missing_only:
            absent = np.array([_table_find(self.table, k) < 0 for k in keys.tolist()], dtype=bool)
            states, tokens, keys = states[absent], tokens[absent], keys[absent]
        if len(keys) == 0:
            return
        logp, nxt = self.scorer.score_pairs(states, tokens)
        if 2 * (self.size + len(keys)) > len(self.table.keys):
            capacity = len(self.table.keys)
            while 2 * (self.size + len(keys)) > capacity:
                capacity *= 2
            old = self.table
            self.table = self._empty(capacity)
            live = old.keys >= 0
            table_put(self.table, old.keys[live], old.logp[live], old.next[live])
        table_put(self.table, keys, logp, nxt)
        self.size += len(keys)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.table)


class SearchOutput(namedtuple("SearchOutput", ["records", "finals", "n_frames", "last"])):
    """Records (word ends, out-of-lexicon letters) and complete hypotheses of one line.

    ``finals.score[i]`` is the total score of a complete hypothesis whose last record is
    ``finals.rec[i]`` (-1: no word, the blank-only line); follow ``records.prev``.
    ``last``: when there is no complete hypothesis, the tokens alive at the last frame
    (for a partial traceback), else None.
    """


class TokenSearch:
    """Runs :func:`search_kernel` on one line at a time, serving its LM requests.

    ``word_scorer`` (an :class:`hybrid_hwr.lm.LmScorer` over the tree's word ids, or None
    for no LM) and ``char_scorer`` (over symbol ids, for out-of-lexicon words) are only
    called for (state, token) pairs the tables have not seen yet.
    """

    def __init__(self, network, unit_ids, *, lm_weight, word_penalty, beam, max_active,
                 space_prob, blank_prob, word_scorer=None, n_words=0, char_scorer=None,
                 n_chars=0, unk_penalty=0.0, glue_penalty=0.0, unk_beam=math.inf, unk_max_active=1 << 62, unk_start_state=0,
                 unk_end_token=0,
                 word_gaps=True, line_blanks=True, allow_empty=True, optional_logp=None):
        self.net = network
        self.word_scorer = word_scorer
        self.char_scorer = char_scorer
        has_unk = len(network.unk_units) > 0
        if has_unk and (char_scorer is None or word_scorer is None):
            raise HwrError("out-of-lexicon words need a word LM and a character LM")
        fp = np.zeros(N_FPARAMS)
        fp[F_LM_WEIGHT] = lm_weight
        fp[F_WORD_PENALTY] = word_penalty
        fp[F_BEAM] = beam
        fp[F_SPACE_ENTER] = math.log(space_prob)
        fp[F_SPACE_SKIP] = math.log1p(-space_prob)
        fp[F_BLANK_ENTER] = math.log(blank_prob)
        fp[F_BLANK_SKIP] = math.log1p(-blank_prob)
        if optional_logp is not None:   # (space enter, space skip, blank enter, blank skip), log weights
            fp[[F_SPACE_ENTER, F_SPACE_SKIP, F_BLANK_ENTER, F_BLANK_SKIP]] = optional_logp
        fp[F_UNK_PENALTY] = unk_penalty
        fp[F_UNK_BEAM] = unk_beam
        fp[F_GLUE_PENALTY] = glue_penalty
        ip = np.zeros(N_IPARAMS, dtype=np.int64)
        ip[I_MAX_ACTIVE] = max_active
        ip[I_HAS_LM] = word_scorer is not None
        ip[I_HAS_UNK] = has_unk
        ip[I_WORD_GAPS] = word_gaps
        ip[I_LINE_BLANKS] = line_blanks
        ip[I_ALLOW_EMPTY] = allow_empty
        ip[I_BOS] = word_scorer.BOS if word_scorer is not None else 0
        ip[I_UNK_START] = unk_start_state
        ip[I_UNK_END_TOK] = unk_end_token
        ip[I_N_WTOK] = n_words + 1
        ip[I_N_CTOK] = n_chars + 1
        ip[I_U_BLANK_START] = unit_ids["blank_start"]
        ip[I_U_SPACE] = unit_ids["space"]
        ip[I_U_BLANK_END] = unit_ids["blank_end"]
        ip[I_U_EMPTY] = unit_ids["empty"]
        ip[I_END_LO] = ip[I_END_HI] = -1
        # the UNK units come last in the network: their states are those from I_UNK_LO on
        ip[I_UNK_LO] = network.unit_state0[network.unk_units[0]] if has_unk else len(network.net_emit)
        ip[I_UNK_MAX_ACTIVE] = unk_max_active
        if line_blanks and unit_ids["blank_end"] >= 0:
            ip[I_END_LO] = network.unit_state0[unit_ids["blank_end"]]
            ip[I_END_HI] = ip[I_END_LO] + int(np.sum(network.net_unit == unit_ids["blank_end"]))
        self.fp, self.ip = fp, ip
        self.words = LmTable(word_scorer, n_words)
        self.chars = LmTable(char_scorer, n_chars)
        self.eos = np.full(16, np.nan)
        self.missing = Missing(np.zeros(4096, np.int8), np.zeros(4096, np.int64), np.zeros(4096, np.int64))
        self.cnt = np.zeros(11, dtype=np.int64)
        self.best_state = np.zeros(5)
        self._alloc_tokens(1 << 12)
        self._alloc_records(1 << 14)
        self.n_lm_requests = 0
        if has_unk:   # the first letter of an out-of-lexicon word: always from the same state
            row = np.append(network.unk_tok, unk_end_token).astype(np.int64)
            self.chars.add(np.full(len(row), unk_start_state, dtype=np.int64), row)

    def _alloc_tokens(self, capacity, keep=0):
        old = getattr(self, "cur", None)
        self.cur = Tokens(np.zeros(capacity, np.int64), np.zeros(capacity, np.int64), np.zeros(capacity, np.int64),
                          np.zeros(capacity), np.zeros(capacity, np.int64), np.zeros(capacity, np.int64))
        if keep:
            for new, prev in zip(self.cur, old):
                new[:keep] = prev[:keep]
        slots = np.zeros((capacity, 6), np.int64)
        slots[:, H_NET] = -1
        self.hash = Hash(slots, slots.view(np.float64), np.zeros(capacity, np.int64), np.zeros(257, np.int64),
                         np.zeros(max(int(self.ip[I_END_HI] - self.ip[I_END_LO]), 1)))
        self.fin = Finals(np.zeros(capacity), np.zeros(capacity, np.int64), np.zeros(capacity, np.int64))
        self.ev = Events(np.zeros(capacity, np.int8), np.zeros(capacity), np.zeros(capacity, np.int64),
                         np.zeros(capacity, np.int64), np.zeros(capacity, np.int64), np.zeros(capacity, np.int64),
                         np.zeros(capacity, np.int64), np.zeros(capacity, np.int64))

    def _alloc_records(self, capacity, keep=0):
        old = getattr(self, "rec", None)
        self.rec = Records(np.zeros(capacity, np.int64), np.zeros(capacity, np.int8), np.zeros(capacity, np.int64),
                           np.zeros(capacity, np.int64), np.zeros(capacity, np.int64), np.zeros(capacity),
                           np.zeros(capacity), np.zeros(capacity, np.int64))
        if keep:
            for new, prev in zip(self.rec, old):
                new[:keep] = prev[:keep]

    def _serve(self):
        """Fill the tables with the entries the kernel asked for."""
        n = int(self.cnt[C_MISSING])
        self.n_lm_requests += n
        kind, state, token = (a[:n] for a in self.missing)
        for wanted, table in ((M_WORD, self.words), (M_CHAR, self.chars)):
            sel = kind == wanted
            if sel.any():    # distinct (state, token) pairs, through their table keys
                keys = np.unique(state[sel] * table.n_tokens + token[sel] + 1)
                table.add(keys // table.n_tokens, keys % table.n_tokens - 1)
        sel = kind == M_EOS
        if sel.any():
            states = np.unique(state[sel])
            top = int(states[-1])
            if top >= len(self.eos):
                grown = np.full(max(2 * len(self.eos), top + 1), np.nan)
                grown[:len(self.eos)] = self.eos
                self.eos = grown
            for st in states.tolist():
                self.eos[st] = self.word_scorer.end_score(st)

    def pruning(self) -> dict:
        """The pruning knobs in force (keyword arguments of ``set_pruning``)."""
        return dict(beam=float(self.fp[F_BEAM]), max_active=int(self.ip[I_MAX_ACTIVE]),
                    unk_beam=float(self.fp[F_UNK_BEAM]), unk_max_active=int(self.ip[I_UNK_MAX_ACTIVE]))

    def set_pruning(self, beam: float | None = None, max_active: int | None = None,
                    unk_beam: float | None = None, unk_max_active: int | None = None) -> None:
        """Change the pruning knobs given (None: unchanged)."""
        if beam is not None:
            self.fp[F_BEAM] = beam
        if max_active is not None:
            self.ip[I_MAX_ACTIVE] = max_active
        if unk_beam is not None:
            self.fp[F_UNK_BEAM] = unk_beam
        if unk_max_active is not None:
            self.ip[I_UNK_MAX_ACTIVE] = unk_max_active

    def run(self, loglik: np.ndarray, **pruning) -> SearchOutput:
        """Search one line of emission scores (T, S), natural log; ``pruning``: knobs of
        ``set_pruning`` for this line only."""
        loglik = np.ascontiguousarray(loglik, dtype=np.float64)
        if any(v is not None for v in pruning.values()):
            saved = self.pruning()
            self.set_pruning(**pruning)
            try:
                return self.run(loglik)
            finally:
                self.set_pruning(**saved)
        self.cnt[:] = 0
        t = 0
        while True:
            status, t = search_kernel(loglik, t, self.net, self.fp, self.ip, self.cur, self.hash, self.rec,
                                      self.ev, self.words.table, self.chars.table, self.eos, self.missing,
                                      self.fin, self.cnt, self.best_state)
            if status == S_DONE:
                break
            if status == S_NEED_LM:
                self._serve()
            elif status == S_GROW_TOKENS:
                self._alloc_tokens(2 * len(self.cur.net), keep=int(self.cnt[C_ACTIVE]))
            elif status == S_GROW_RECORDS:
                self._alloc_records(2 * len(self.rec.prev), keep=int(self.cnt[C_RECORDS]))
        n_rec, n_fin = int(self.cnt[C_RECORDS]), int(self.cnt[C_FINALS])
        records = Records(*(a[:n_rec].copy() for a in self.rec))
        finals = Finals(*(a[:n_fin].copy() for a in self.fin))
        last = None
        if n_fin == 0:
            n_act = int(self.cnt[C_ACTIVE]) if t == len(loglik) else 0
            last = Tokens(*(a[:n_act].copy() for a in self.cur))
        return SearchOutput(records, finals, len(loglik), last)

    @property
    def nbytes(self) -> int:
        """Memory held by the search arrays and LM tables."""
        arrays = list(self.cur) + list(self.hash) + list(self.rec) + list(self.fin) + list(self.net) + [self.eos]
        return sum(a.nbytes for a in arrays) + self.words.nbytes + self.chars.nbytes


# ----------------------------------------------------------------------------- lattice

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
