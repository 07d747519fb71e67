"""The token-passing kernel (Numba): one line of emission scores through the search network.

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

Word ends of a frame that lead to the same next LM state (and glue the same way) have
the same successors: each is recorded (the lattice needs every word end), but one is only
expanded when it scores more than every earlier one of that key, since an earlier one's
pushes reached the same tokens with at least its score or failed a cutoff that has only
risen since.  The tokens, and so the records, are exactly those of expanding them all
(in the CTC character loop, where a frame has thousands of character ends and a few
hundred next states, it saves 90 % of the pushes).

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

from collections import namedtuple

import numba
import numpy as np


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
 C_STAT_PUSHES, C_STAT_TOKENS, C_STAT_EVENTS, C_EXITS) = range(12)
N_COUNTERS = 12
# queued word-end events
EV_WORD, EV_UNK = 0, 1

UNK_TOKEN = -1   # word-table token of the LM's <unk> (lm.UNK_ID)

Network = namedtuple("Network", [
    "unit_kind", "unit_state0", "unit_la", "first_child", "n_children", "word_start", "word_ids",
    "net_emit", "net_self", "net_next", "net_unit", "net_last", "unk_units", "unk_tok", "sym_first", "unit_glue"])
Tokens = namedtuple("Tokens", ["net", "lm", "aux", "score", "bp", "start"])
# next-frame tokens: one row per slot (one cache line per insertion), columns H_*;
# ``score`` is a float64 view of the same memory, read at column H_SCORE; ``exit_*``: the
# best word end of the frame so far per successor key (see _dominated), an open-addressing
# table of twice the events' capacity and its used slots
Hash = namedtuple("Hash", ["slots", "score", "used", "hist", "best_end", "exit_keys", "exit_best", "exit_used"])
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
def _glues_next(net, ip, u):
    """1 when a word ending at unit ``u`` glues to a next word that touches it, else 0."""
    return 1 if ip[I_WORD_GAPS] != 0 and net.unit_glue[u] else 0


@numba.njit(**_KERNEL)
def _after_word(t, loglik, net, fp, ip, h, cnt, ct, miss, y, lm, bp, cutoff, best, ubeam, u):
    """Successors of a word end of score ``y`` (LM state ``lm``, record ``bp``, last unit ``u``)
    into frame ``t``."""
    # a next word that touches this one without a space pays the glue penalty at letters/digits
    glue = fp[F_GLUE_PENALTY] if _glues_next(net, ip, u) else 0.0
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
def _clear_exits(h, cnt):
    for j in range(cnt[C_EXITS]):
        h.exit_keys[h.exit_used[j]] = -1
    cnt[C_EXITS] = 0


@numba.njit(**_KERNEL)
def _dominated(h, cnt, key, y):
    """Whether a word end of score ``y`` whose successors are those of ``key`` (its next LM
    state and whether it glues) adds nothing: an earlier word end of the frame with the same
    key scored at least ``y``, so each of its pushes reached the same tokens with at least
    the same score, or failed a cutoff that has only risen since.  Else it becomes the key's best."""
    mask = h.exit_keys.shape[0] - 1
    i = np.int64(_mix(key, ZERO, ZERO) & np.uint64(mask))
    while True:
        k = h.exit_keys[i]
        if k == key:
            if y <= h.exit_best[i]:
                return True
            h.exit_best[i] = y
            return False
        if k == -1:
            h.exit_keys[i] = key
            h.exit_best[i] = y
            h.exit_used[cnt[C_EXITS]] = i
            cnt[C_EXITS] += 1
            return False
        i = (i + 1) & mask


@numba.njit(**_KERNEL)
def _word_end_events(t, loglik, net, fp, ip, h, cnt, rec, ev, wt, ct, miss, best, succ_bound, beam, ubeam):
    """Phase 2 of a frame: the word ends (and out-of-lexicon letters) of phase 1, whose LM
    entries are all in the tables. Returns (status, best)."""
    lmw = fp[F_LM_WEIGHT]
    cutoff = best - beam
    end_kept = ip[I_LINE_BLANKS] != 0 and ip[I_U_BLANK_END] >= 0
    _clear_exits(h, cnt)
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
            if _dominated(h, cnt, 2 * ns + _glues_next(net, ip, u), y):
                continue
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
            if _dominated(h, cnt, 2 * ns + _glues_next(net, ip, u), y):
                continue
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
