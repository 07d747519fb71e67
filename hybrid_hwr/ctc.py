"""CTC decoding: a neural network's per-frame character posteriors through the same search.

A CTC network gives, for every frame, a distribution over its output symbols: the
characters of an alphabet and the blank.  Its topology, written as a network of the
search (:func:`hybrid_hwr.search.build_network`), has one state per character with a
self-loop (a run of frames of ``c`` is one ``c``) and an optional blank between
characters; two equal characters in a row need the blank between them.  Each node ``n``
of the lexicon prefix tree becomes two units: ``C_n`` (its character) and ``B_n`` (a
blank after it); ``C_n`` leads to ``B_n`` and to the children of ``n`` whose character
differs, ``B_n`` to every child.  Words end at ``C_n`` and at ``B_n``.  The root has a
blank unit too (a blank after the space before a word).  Between words the space symbol
is mandatory (``[blank] <space> [blank]``); at the line ends the optional blank units of
the search are the CTC blank, as is the blank-only line.  Transitions carry no weight.

So every decoding mode of :class:`hybrid_hwr.decode.Recognizer` runs on CTC outputs:

* character loop: the "words" are the characters, glued; with no LM and no character
  penalty the result is best-path (greedy) decoding, ``argmax`` per frame with repeats
  merged and blanks removed.  A character may not follow a "word" that ended on the same
  character without a blank: the search's word scorer refuses that pair (the tokens of
  the character loop record whether a character ended on its blank);
* character LM, lexicon, lexicon + word LM, n-best, word spans, confidences: as for HMMs.

The objective, maximised by the search (natural log)::

    score(W) = max over CTC alignments pi of W of  sum_t log y_t(pi_t)
               + lm_weight * log P_LM(W) + word_penalty * |W|        (-char_penalty * |W| without lexicon)

It is the Viterbi (best alignment) score, not CTC's sum over alignments: prefix beam
search decoders such as pyctcdecode add the probabilities of a prefix's alignments, and
score words with ``alpha * log10-based KenLM score * ln 10`` plus ``beta`` per word and
a partial-word (unigram) term; ``log P_LM`` here is the natural-log KenLM score of
``<s> W </s>``.  Both objectives agree on the text when one alignment dominates.
Out-of-lexicon words (``unk_penalty``) are not offered for CTC outputs.

Inputs (:func:`read_alphabet`, :meth:`CtcRecognizer.decode_loglik`): ``(T, C)`` arrays
with one column per line of the alphabet file, the blank included; probabilities,
log-probabilities, or logits with ``log_softmax=True``.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import Alphabet
from .decode import Recognizer, _NoLm
from .errors import HwrError
from .hmm import HmmTopology, Transitions
from .search import build_network

__all__ = ["SPACE_NAME", "read_alphabet", "CtcModel", "CtcRecognizer", "ctc_network_tree", "to_log_probs"]

SPACE_NAME = "<space>"       # an alphabet line that stands for the space character (so does a line " ")
BLANK_SYMBOL = "<blank>"     # name of the blank in the topology (never a text character)
# log probability of a refused pair: finite, so that no score becomes NaN, and below any real score
FORBIDDEN_LOGP = -1e10
# tolerance of the probability / log-probability row checks
ROW_TOLERANCE = 1e-3


def read_alphabet(path, blank: int = 0) -> list[str]:
    """Symbols of an alphabet file, one per line in output-column order.

    The line of index ``blank`` is the blank (its text is ignored); the others are single
    characters (NFC), ``<space>`` or a line holding one space meaning the space.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise HwrError(f"{path}: cannot read the CTC alphabet ({exc})") from None
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not 0 <= blank < len(lines):
        raise HwrError(f"{path}: --blank {blank} is not a line of the alphabet ({len(lines)} lines)")
    symbols = []
    for i, line in enumerate(lines):
        if i == blank:
            symbols.append(BLANK_SYMBOL)
            continue
        symbol = " " if line in (SPACE_NAME, " ") else unicodedata.normalize("NFC", line)
        if len(symbol) != 1:
            raise HwrError(f"{path}: line {i + 1} must be one character or {SPACE_NAME}, got {line!r}")
        if symbol in symbols:
            raise HwrError(f"{path}: line {i + 1}: symbol {line!r} appears twice")
        symbols.append(symbol)
    if len(symbols) < 2:
        raise HwrError(f"{path}: the alphabet needs the blank and at least one character")
    return symbols


def to_log_probs(scores: np.ndarray, log_softmax: bool = False) -> np.ndarray:
    """Per-frame log-posteriors of a ``(T, C)`` network output.

    ``log_softmax``: the rows are logits (log-softmax applied).  Otherwise rows summing to
    1 with values in [0, 1] are probabilities (log taken), rows whose exponentials sum to
    1 are log-probabilities (kept); anything else is refused (pass ``log_softmax``).
    """
    x = np.asarray(scores, dtype=np.float64)
    if not np.all(np.isfinite(x) | (x == -np.inf)):
        raise HwrError("NaN or +inf in the network outputs")
    if len(x) == 0:
        return x
    if log_softmax:
        top = np.max(x, axis=1, keepdims=True)
        return x - top - np.log(np.sum(np.exp(x - top), axis=1, keepdims=True))
    if x.min() >= 0 and x.max() <= 1 + ROW_TOLERANCE and np.all(np.abs(x.sum(axis=1) - 1) <= ROW_TOLERANCE):
        with np.errstate(divide="ignore"):
            return np.log(x)
    if x.max() <= ROW_TOLERANCE and np.all(np.abs(np.exp(x).sum(axis=1) - 1) <= ROW_TOLERANCE):
        return x
    raise HwrError("rows are neither probabilities nor log-probabilities (logits? pass --log-softmax)")


class CtcModel:
    """What the :class:`Recognizer` needs of a model, for a CTC network's outputs.

    ``symbols``: from :func:`read_alphabet` (output-column order, the blank marked).  The
    topology holds the characters in :class:`Alphabet` order, one state each, then the
    blank; ``columns`` maps its states to the network's output columns.
    """

    # the scoring half of hybrid_hwr.emission (EmissionScores); not stored in a model directory
    emission_type = "ctc"   # no calibrated decoder defaults: LM weight 1, penalties 0 unless given

    def __init__(self, symbols, log_softmax: bool = False):
        symbols = list(symbols)
        if symbols.count(BLANK_SYMBOL) != 1:
            raise HwrError("CTC alphabet: exactly one blank is needed")
        chars = [s for s in symbols if s != BLANK_SYMBOL]
        self.alphabet = Alphabet(chars)
        self.topology = HmmTopology(self.alphabet.symbols + [BLANK_SYMBOL], 1, space_symbol=" ")
        self.blank_id = len(self.alphabet)
        self.columns = np.array([symbols.index(s) for s in self.topology.symbols], dtype=np.int64)
        self.n_columns = len(symbols)
        self.log_softmax = bool(log_softmax)
        # CTC has no transition probabilities: every self-loop and move weighs 1
        self.transitions = Transitions(self.topology)
        self.transitions.log_self[:] = 0.0
        self.transitions.log_next[:] = 0.0

    @classmethod
    def from_file(cls, path, blank: int = 0, log_softmax: bool = False) -> "CtcModel":
        return cls(read_alphabet(path, blank), log_softmax)

    @property
    def n_states(self) -> int:
        """One state per character and the blank."""
        return self.topology.n_emitting

    def with_prior_scale(self, prior_scale):
        raise HwrError("a prior scale (--prior-scale or decoder.json's prior_scale) does not apply to CTC outputs")

    def log_likelihoods(self, scores: np.ndarray) -> np.ndarray:
        """The search's emission scores of one ``(T, C)`` network output."""
        x = np.asarray(scores)
        if x.ndim != 2 or x.shape[1] != self.n_columns:
            raise HwrError(f"CTC outputs must have shape (frames, {self.n_columns}) for the alphabet, "
                           f"got {x.shape}")
        return to_log_probs(x, self.log_softmax)[:, self.columns]

    @property
    def recognizer_class(self) -> type:
        return CtcRecognizer


@dataclass
class _Network:
    """Nodes of the CTC search network in the form of a prefix tree (child ranges may overlap)."""

    char: np.ndarray
    first_child: np.ndarray
    n_children: np.ndarray
    word_start: np.ndarray
    word_ids: np.ndarray
    lookahead: np.ndarray

    @property
    def n_nodes(self) -> int:
        return len(self.char)


def ctc_network_tree(tree, blank: int, root_blank: bool, split_ends: bool, lookahead=None) -> _Network:
    """The CTC form of a prefix tree (see the module docstring).

    ``root_blank``: a blank unit before the first character; ``split_ends``: a word ``w``
    ending on its character is token ``2 w``, on its blank ``2 w + 1`` (else ``w`` both).
    Node ``n``'s children block is ``[B_n, C_m (other characters)..., C_m (same character)]``:
    ``C_n`` takes its first entries, ``B_n`` all but the first.
    """
    la = np.zeros(tree.n_nodes) if lookahead is None else np.asarray(lookahead, dtype=np.float64)
    char, first, count, words, unit_la = [-1], [0], [0], [[]], [0.0]

    def unit(symbol, node, end):
        ids = tree.word_ids[tree.word_start[node]:tree.word_start[node + 1]].tolist() if node > 0 else []
        char.append(int(symbol))
        first.append(0)
        count.append(0)
        words.append([2 * w + end for w in ids] if split_ends else ids)
        unit_la.append(float(la[node]) if node > 0 else 0.0)
        return len(char) - 1

    def children(node):
        fc = int(tree.first_child[node])
        kids = list(range(fc, fc + int(tree.n_children[node]))) if fc >= 0 else []
        return sorted(kids, key=lambda m: tree.char[m] == tree.char[node])   # the same character last

    kids = children(0)
    first[0], count[0] = len(char), len(kids) + root_blank
    if root_blank:
        b = unit(blank, 0, 0)
        first[b], count[b] = b + 1, len(kids)
    queue = [(unit(tree.char[m], m, 0), m) for m in kids]
    for u, node in queue:           # the list grows while iterating: breadth-first
        kids = children(node)
        b = unit(blank, node, 1)
        same = sum(1 for m in kids if tree.char[m] == tree.char[node])
        first[u], count[u] = b, 1 + len(kids) - same
        first[b], count[b] = b + 1, len(kids)
        queue += [(unit(tree.char[m], m, 0), m) for m in kids]
    sizes = np.array([len(w) for w in words], dtype=np.int64)
    return _Network(char=np.array(char, dtype=np.int64), first_child=np.array(first, dtype=np.int64),
                    n_children=np.array(count, dtype=np.int64),
                    word_start=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
                    word_ids=np.array([w for ws in words for w in ws], dtype=np.int64), lookahead=np.array(unit_la))


def _distinct(keys: np.ndarray):
    """(index of the first occurrence of each distinct key, the distinct key of each entry)."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    return first, inverse.reshape(-1)


class _CollapseScorer:
    """Word scorer of the CTC character loop: ``inner``'s scores over symbols, tokens
    ``2 k + ended_on_blank``, and a character right after the same character without a
    blank refused (``FORBIDDEN_LOGP``).  States pair ``inner``'s with that character."""

    def __init__(self, inner):
        self.inner = inner
        self._states, self._ids = [], {}
        self._inner_of, self._last_of = np.zeros(64, dtype=np.int64), np.zeros(64, dtype=np.int64)
        self.BOS = self._state(inner.BOS, -1)
        self.NULL = self._state(getattr(inner, "NULL", inner.BOS), -1)

    def _state(self, inner_state, last):
        key = (int(inner_state), int(last))
        sid = self._ids.get(key)
        if sid is None:
            sid = self._ids[key] = len(self._states)
            self._states.append(key)
            if sid >= len(self._inner_of):
                self._inner_of, self._last_of = (np.concatenate([a, np.zeros_like(a)])
                                                 for a in (self._inner_of, self._last_of))
            self._inner_of[sid], self._last_of[sid] = key
        return sid

    def score(self, state_id, token_id):
        inner_state, last = self._states[int(state_id)]
        symbol, on_blank = divmod(int(token_id), 2)
        if symbol == last:
            return FORBIDDEN_LOGP, int(state_id)
        lp, nxt = self.inner.score(inner_state, symbol)
        return lp, self._state(nxt, -1 if on_blank else symbol)

    def score_pairs(self, state_ids, token_ids):
        """``score`` of many pairs: the inner scorer asked once per distinct (state, symbol)
        pair, new states numbered in the order ``score`` would meet them."""
        states = np.asarray(state_ids, dtype=np.int64).reshape(-1)
        tokens = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        symbol, on_blank = tokens // 2, tokens % 2
        inner, last = self._inner_of[states], self._last_of[states]
        logp = np.full(len(states), FORBIDDEN_LOGP)
        nxt = states.copy()
        ok = np.flatnonzero(symbol != last)
        if len(ok) == 0:
            return logp, nxt
        pairs = inner[ok] * (int(symbol.max()) + 1) + symbol[ok]
        first, inverse = _distinct(pairs)
        lp_u, next_u = np.empty(len(first)), np.empty(len(first), dtype=np.int64)
        for u in np.argsort(first).tolist():
            j = int(ok[first[u]])
            lp_u[u], next_u[u] = self.inner.score(int(inner[j]), int(symbol[j]))
        logp[ok], inner_next = lp_u[inverse], next_u[inverse]
        after = np.where(on_blank[ok] == 1, -1, symbol[ok])
        first, inverse = _distinct(inner_next * (int(after.max()) + 2) + after + 1)
        state_u = np.empty(len(first), dtype=np.int64)
        for u in np.argsort(first).tolist():
            state_u[u] = self._state(inner_next[first[u]], after[first[u]])
        nxt[ok] = state_u[inverse]
        return logp, nxt

    def end_score(self, state_id):
        return self.inner.end_score(self._states[int(state_id)][0])


class CtcRecognizer(Recognizer):
    """:class:`Recognizer` over a :class:`CtcModel`: the same settings, checks and modes.

    ``decode_loglik`` takes the network's ``(T, C)`` outputs (see :class:`CtcModel`).
    """

    uniform_symbol_prior = False     # greedy decoding: no per-character prior

    def __init__(self, model: CtcModel, settings=None, *, loaded=None, **knobs):
        unk_penalty = knobs.get("unk_penalty", settings.unk_penalty if settings is not None else None)
        if unk_penalty is not None:
            raise HwrError("out-of-lexicon words (--unk-penalty) are not available for CTC outputs")
        super().__init__(model, settings, loaded=loaded, **knobs)

    def _search_network(self, tree, flags, unk_symbols, lookahead, search_scorer, n_words):
        model = self.model
        lexicon = self.mode == "lexicon"
        if not lexicon:
            # the character loop's tokens tell whether a character ended on its blank
            self.words = [w for w in self.words for _ in (0, 1)]
            n_words *= 2
            if search_scorer is None:    # no LM in the search: weight 1 on the empty LM
                self.lm_weight, self.scorer = 1.0, None
                search_scorer = _NoLm()
            search_scorer = _CollapseScorer(search_scorer)
            self._lm_scorer = search_scorer
            flags = dict(flags, line_blanks=True, allow_empty=True)
        graph = ctc_network_tree(tree, model.blank_id, root_blank=lexicon, split_ends=not lexicon,
                                 lookahead=lookahead)
        blank = model.blank_id
        net, unit_ids = build_network(model.topology, model.transitions, graph, lookahead=graph.lookahead,
                                      unit_symbols={"blank_start": blank, "blank_end": blank, "empty": blank},
                                      **flags)
        # no weights on the optional units; between words the space is not optional
        options = dict(optional_logp=(0.0, -math.inf, 0.0, 0.0), line_blanks=flags["line_blanks"],
                       allow_empty=flags["allow_empty"])
        return net, unit_ids, search_scorer, n_words, options

    def _token_symbol(self, token: int) -> int:
        return token // 2

    def _partial(self, out, loglik):
        return None     # no forced-alignment fallback for CTC outputs: the empty result

    def decode_loglik(self, scores: np.ndarray):
        """Best word sequence for one ``(T, C)`` network output (probabilities, log-probabilities,
        or logits with the model's ``log_softmax``)."""
        return super().decode_loglik(self.model.log_likelihoods(scores))

    def decode_emissions(self, path):
        from .decode import emission_arrays

        for line_id, x, problem in emission_arrays(path):
            if problem is not None:
                raise HwrError(problem)
            yield line_id, self.decode_loglik(x)
