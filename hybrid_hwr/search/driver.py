"""The driver of the kernel: one line at a time, the LM tables filled on the kernel's requests.

:class:`TokenSearch` runs :func:`hybrid_hwr.search.kernel.search_kernel` on a line, serves
its LM requests from the scorers (:class:`LmTable`), grows its arrays when they are full,
and returns the records and complete hypotheses (:class:`SearchOutput`).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from ..errors import HwrError
from .kernel import (C_ACTIVE, C_FINALS, C_MISSING, C_RECORDS, F_BEAM, F_BLANK_ENTER, F_BLANK_SKIP,
                     F_GLUE_PENALTY, F_LM_WEIGHT, F_SPACE_ENTER, F_SPACE_SKIP, F_UNK_BEAM, F_UNK_PENALTY,
                     F_WORD_PENALTY, H_NET, I_ALLOW_EMPTY, I_BOS, I_END_HI, I_END_LO, I_HAS_LM, I_HAS_UNK,
                     I_LINE_BLANKS, I_MAX_ACTIVE, I_N_CTOK, I_N_WTOK, I_U_BLANK_END, I_U_BLANK_START,
                     I_U_EMPTY, I_U_SPACE, I_UNK_END_TOK, I_UNK_LO, I_UNK_MAX_ACTIVE, I_UNK_START,
                     I_WORD_GAPS, M_CHAR, M_EOS, M_WORD, N_COUNTERS, N_FPARAMS, N_IPARAMS, S_DONE, S_GROW_RECORDS,
                     S_GROW_TOKENS, S_NEED_LM, Events, Finals, Hash, Missing, Records, Table, Tokens,
                     _table_find, search_kernel, table_put)
from .objective import Objective


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

    def add_requested(self, states, tokens):
        """Score and store the requested (state, token) pairs, duplicates allowed."""
        keys = np.unique(states.astype(np.int64) * self.n_tokens + tokens.astype(np.int64) + 1)
        self.add(keys // self.n_tokens, keys % self.n_tokens - 1)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.table)


def fill_end_scores(eos, scorer, states) -> np.ndarray:
    """``eos`` (ln p(</s> | state) by state id, NaN where unknown) with ``states`` filled in
    from ``scorer``, grown when a state lies beyond its end."""
    if len(states) == 0:
        return eos
    states = np.unique(states)
    top = int(states[-1])
    if top >= len(eos):
        grown = np.full(max(2 * len(eos), top + 1), np.nan)
        grown[:len(eos)] = eos
        eos = grown
    for st in states.tolist():
        eos[st] = scorer.end_score(st)
    return eos


class SearchOutput(namedtuple("SearchOutput", ["records", "finals", "n_frames", "last"])):
    """Records (word ends, out-of-lexicon letters) and complete hypotheses of one line.

    ``finals.score[i]`` is the total score of a complete hypothesis whose last record is
    ``finals.rec[i]`` (-1: no word, the blank-only line); follow ``records.prev``.
    ``last``: when there is no complete hypothesis, the tokens alive at the last frame
    (for a partial traceback), else None.
    """


class TokenSearch:
    """Runs :func:`search_kernel` on one line at a time, serving its LM requests.

    ``objective`` gives the weights of the score (:class:`hybrid_hwr.search.objective.Objective`).
    ``word_scorer`` (an :class:`hybrid_hwr.lm.LmScorer` over the tree's word ids, or None
    for no LM) and ``char_scorer`` (over symbol ids, for out-of-lexicon words) are only
    called for (state, token) pairs the tables have not seen yet.
    """

    def __init__(self, network, unit_ids, *, objective: Objective, beam, max_active,
                 space_prob, blank_prob, word_scorer=None, n_words=0, char_scorer=None,
                 n_chars=0, unk_beam=math.inf, unk_max_active=1 << 62, unk_start_state=0,
                 unk_end_token=0,
                 word_gaps=True, line_blanks=True, allow_empty=True, optional_logp=None):
        self.net = network
        self.word_scorer = word_scorer
        self.char_scorer = char_scorer
        has_unk = len(network.unk_units) > 0
        if has_unk and (char_scorer is None or word_scorer is None):
            raise HwrError("out-of-lexicon words need a word LM and a character LM")
        fp = np.zeros(N_FPARAMS)
        self.objective = objective
        fp[F_LM_WEIGHT] = objective.lm_weight
        fp[F_WORD_PENALTY] = objective.word_penalty
        fp[F_BEAM] = beam
        fp[F_SPACE_ENTER] = math.log(space_prob)
        fp[F_SPACE_SKIP] = math.log1p(-space_prob)
        fp[F_BLANK_ENTER] = math.log(blank_prob)
        fp[F_BLANK_SKIP] = math.log1p(-blank_prob)
        if optional_logp is not None:   # (space enter, space skip, blank enter, blank skip), log weights
            fp[[F_SPACE_ENTER, F_SPACE_SKIP, F_BLANK_ENTER, F_BLANK_SKIP]] = optional_logp
        fp[F_UNK_PENALTY] = objective.unk_penalty
        fp[F_UNK_BEAM] = unk_beam
        fp[F_GLUE_PENALTY] = objective.glue_penalty
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
        self.cnt = np.zeros(N_COUNTERS, dtype=np.int64)
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
                         np.zeros(max(int(self.ip[I_END_HI] - self.ip[I_END_LO]), 1)),
                         np.full(2 * capacity, -1, np.int64), np.zeros(2 * capacity), np.zeros(capacity, np.int64))
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
            if sel.any():
                table.add_requested(state[sel], token[sel])
        self.eos = fill_end_scores(self.eos, self.word_scorer, state[kind == M_EOS])

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
        self.hash.exit_keys[:] = -1     # the kernel clears it by its count, just reset
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
