"""Character HMMs: topology, transition parameters and line graphs.

Every symbol of the alphabet has one left-to-right model of ``N`` emitting states
(self-loop and forward arc, no skips inside a character).  A *line graph* unrolls
the models of one transcription into a flat graph whose nodes are emitting states
and whose arcs already contain every entry/exit probability, so that the numba
kernels in :mod:`hybrid_hwr.align` never see epsilon (non-emitting) states::

    [blank]? c1 c2 ... cn [space]? c1 ... cm [blank]?

The space symbol's model doubles as the optional inter-word space and as the
optional leading/trailing blank.  An optional model is entered with probability
``p`` and skipped with ``1 - p`` (``space_prob`` between words, ``blank_prob`` at
the line ends); both are trained like the other transitions.

Arc weights (natural log):

* self-loop of state ``s``:            ``log_self[s]``
* forward arc ``s -> s+1`` in a model: ``log_next[s]``
* last state ``s`` of a model -> first state of the next model:
  ``log_next[s]`` (exit) ``+ log enter`` (if the next model is optional)
  ``+ log skip`` (for each optional model jumped over)
* final weight of a model's last state: ``log_next[s]`` (the exit to the end of line).

Each arc records which parameter produced it (``arc_kind``/``arc_state``/
``arc_optional``) so that expected arc counts from forward-backward turn into
:class:`TransitionAccumulator` statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import HwrError

__all__ = [
    "ARC_SELF", "ARC_NEXT",
    "OPT_NONE", "OPT_SPACE_ENTER", "OPT_SPACE_SKIP", "OPT_BLANK_ENTER", "OPT_BLANK_SKIP",
    "HmmTopology", "Transitions", "TransitionAccumulator", "LineGraph",
    "build_line_graph", "build_loop_graph", "min_frames", "estimate_state_counts",
]

# arc_kind: which transition of arc_state the arc uses
ARC_SELF = 0
ARC_NEXT = 1
# arc_optional / init_optional / final_optional: optional-model decision taken on the arc
OPT_NONE = 0
OPT_SPACE_ENTER = 1
OPT_SPACE_SKIP = 2
OPT_BLANK_ENTER = 3
OPT_BLANK_SKIP = 4

_UNIT_MANDATORY, _UNIT_SPACE, _UNIT_BLANK = 0, 1, 2


def _log(p: float) -> float:
    return math.log(p) if p > 0 else -math.inf


class HmmTopology:
    """One left-to-right model per symbol.

    Parameters
    ----------
    symbols : list of str
        The alphabet (``Alphabet.symbols``); the model of ``symbols[k]`` is model ``k``.
    n_states : int or dict
        Emitting states per model, the same for all symbols or one count per symbol
        (a dict must name every symbol).
    space_symbol : str
        Symbol whose model is the optional inter-word space and leading/trailing blank.
        It may be absent from ``symbols`` (then lines have neither).

    Attributes
    ----------
    n_states_of : (K,) int32      states of each model
    state_offset : (K,) int32     emission-state id of each model's first state
    n_emitting : int              total emitting states S
    state_symbol : (S,) int32     model of each emitting state
    space_id : int                index of the space symbol, -1 if absent
    """

    def __init__(self, symbols, n_states=6, space_symbol=" "):
        self.symbols = [str(s) for s in symbols]
        if not self.symbols:
            raise HwrError("HMM topology: the alphabet is empty")
        if len(set(self.symbols)) != len(self.symbols):
            raise HwrError("HMM topology: the alphabet has duplicate symbols")
        if isinstance(n_states, dict):
            missing = [s for s in self.symbols if s not in n_states]
            if missing:
                raise HwrError(f"HMM topology: no state count for symbol(s) {missing[:5]!r}")
            counts = [n_states[s] for s in self.symbols]
        else:
            counts = [n_states] * len(self.symbols)
        try:
            counts = [int(c) for c in counts]
        except (TypeError, ValueError):
            raise HwrError(f"HMM topology: state counts must be integers, got {n_states!r}") from None
        if min(counts) < 1:
            raise HwrError("HMM topology: every model needs at least 1 state")
        self.n_states = n_states if not isinstance(n_states, dict) else dict(n_states)
        self.space_symbol = space_symbol
        self.space_id = self.symbols.index(space_symbol) if space_symbol in self.symbols else -1
        self.n_states_of = np.asarray(counts, dtype=np.int32)
        self.state_offset = np.concatenate([[0], np.cumsum(self.n_states_of)[:-1]]).astype(np.int32)
        self.n_emitting = int(self.n_states_of.sum())
        self.state_symbol = np.repeat(np.arange(len(self.symbols), dtype=np.int32), self.n_states_of)

    @property
    def n_models(self) -> int:
        return len(self.symbols)

    def states_of(self, k: int) -> np.ndarray:
        """Emission-state ids of model ``k`` in left-to-right order."""
        return np.arange(self.state_offset[k], self.state_offset[k] + self.n_states_of[k], dtype=np.int32)

    def to_dict(self) -> dict:
        return {
            "symbols": list(self.symbols),
            "n_states": {s: int(n) for s, n in zip(self.symbols, self.n_states_of)},
            "space_symbol": self.space_symbol,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "HmmTopology":
        try:
            return cls(d["symbols"], d["n_states"], d.get("space_symbol", " "))
        except (KeyError, TypeError) as e:
            raise HwrError(f"HMM topology: malformed description ({e})") from None

    def __eq__(self, other):
        return (isinstance(other, HmmTopology) and self.symbols == other.symbols
                and np.array_equal(self.n_states_of, other.n_states_of)
                and self.space_symbol == other.space_symbol)

    def __repr__(self):
        return (f"HmmTopology({len(self.symbols)} models, {self.n_emitting} states, "
                f"space={self.space_symbol!r})")


def estimate_state_counts(mean_frames: dict, frames_per_state=2.0, min_states=2, max_states=12,
                          default=None) -> dict:
    """States per symbol from its mean length in frames (e.g. measured on forced alignments).

    ``N = round(mean_frames / frames_per_state)`` clipped to ``[min_states, max_states]``:
    a model of N states needs at least N frames, so ``frames_per_state`` near 2 keeps
    most instances of a character long enough.  Symbols whose mean is missing or not
    finite get ``default`` (or ``min_states``).
    """
    if frames_per_state <= 0 or not 1 <= min_states <= max_states:
        raise HwrError("estimate_state_counts: need frames_per_state > 0 and 1 <= min_states <= max_states")
    out = {}
    for sym, mean in mean_frames.items():
        if mean is None or not np.isfinite(mean) or mean <= 0:
            out[sym] = int(default if default is not None else min_states)
        else:
            out[sym] = int(np.clip(round(mean / frames_per_state), min_states, max_states))
    return out


class Transitions:
    """Transition parameters of all models, in log space.

    ``Transitions(topology_or_S, self_prob=0.6)`` gives every emitting state a
    self-loop probability ``self_prob`` and a leave probability ``1 - self_prob``.

    Attributes
    ----------
    log_self, log_next : (S,) float64
        Log probability of staying in / leaving each emitting state (they sum to 1
        in probability).  Leaving the last state of a model is its exit.
    space_prob, blank_prob : float
        Probability that the optional inter-word space / leading-trailing blank
        model is entered rather than skipped.

    Free decoding (:func:`build_loop_graph`) adds no trained parameter: entering a
    model there costs ``-log(K) - char_penalty``, a knob of the decoder stored on the
    graph (``LineGraph.char_penalty``), never in these transitions.
    """

    def __init__(self, n_states, self_prob=0.6, space_prob=0.5, blank_prob=0.5):
        S = n_states.n_emitting if isinstance(n_states, HmmTopology) else int(n_states)
        for name, p in (("self_prob", self_prob), ("space_prob", space_prob), ("blank_prob", blank_prob)):
            if not 0.0 < p < 1.0:
                raise HwrError(f"transitions: {name} must be in (0, 1), got {p}")
        self.log_self = np.full(S, math.log(self_prob))
        self.log_next = np.full(S, math.log1p(-self_prob))
        self.space_prob = float(space_prob)
        self.blank_prob = float(blank_prob)

    @property
    def n_states(self) -> int:
        return len(self.log_self)

    def optional_logp(self) -> np.ndarray:
        """Log weights indexed by the OPT_* codes (OPT_NONE -> 0)."""
        return np.array([0.0, _log(self.space_prob), _log(1 - self.space_prob),
                         _log(self.blank_prob), _log(1 - self.blank_prob)])

    def to_arrays(self) -> dict:
        return {"log_self": self.log_self.copy(), "log_next": self.log_next.copy(),
                "optional_prob": np.array([self.space_prob, self.blank_prob])}

    @classmethod
    def from_arrays(cls, arrays) -> "Transitions":
        try:
            log_self = np.asarray(arrays["log_self"], dtype=np.float64)
            log_next = np.asarray(arrays["log_next"], dtype=np.float64)
            space_prob, blank_prob = (float(p) for p in np.asarray(arrays["optional_prob"]))
        except (KeyError, ValueError, TypeError) as e:
            raise HwrError(f"transitions: malformed arrays ({e})") from None
        if (log_self.ndim != 1 or log_self.shape != log_next.shape
                or not np.all(np.isfinite(log_self)) or not np.all(np.isfinite(log_next))
                or np.any(np.abs(np.exp(log_self) + np.exp(log_next) - 1) > 1e-6)
                or not (0 < space_prob < 1 and 0 < blank_prob < 1)):
            raise HwrError("transitions: arrays are inconsistent (shapes, NaN or probabilities not summing to 1)")
        t = cls(len(log_self), space_prob=space_prob, blank_prob=blank_prob)
        t.log_self, t.log_next = log_self, log_next
        return t

    def to_dict(self) -> dict:
        """JSON-safe form (probabilities as plain floats)."""
        return {"self_prob": np.exp(self.log_self).tolist(),
                "space_prob": self.space_prob, "blank_prob": self.blank_prob}

    @classmethod
    def from_dict(cls, d: dict) -> "Transitions":
        try:
            p = np.asarray(d["self_prob"], dtype=np.float64)
            if p.ndim != 1 or not np.all((p > 0) & (p < 1)):
                raise ValueError("self_prob must be a list of probabilities in (0, 1)")
            t = cls(len(p), space_prob=float(d["space_prob"]), blank_prob=float(d["blank_prob"]))
        except (KeyError, TypeError, ValueError) as e:
            raise HwrError(f"transitions: malformed description ({e})") from None
        t.log_self, t.log_next = np.log(p), np.log1p(-p)
        return t

    @classmethod
    def from_summaries(cls, acc: "TransitionAccumulator", floor=1e-3, previous: "Transitions | None" = None):
        """M-step: relative frequencies, clipped to ``[floor, 1 - floor]``.

        States (and optional-model decisions) that saw no data keep the values of
        ``previous`` (or the defaults of ``Transitions(S)``), so the result never holds NaN.
        """
        if not 0 < floor < 0.5:
            raise HwrError(f"transitions: floor must be in (0, 0.5), got {floor}")
        S = len(acc.self_counts)
        new = cls(S) if previous is None else previous.copy()
        if new.n_states != S:
            raise HwrError(f"transitions: accumulator has {S} states, previous model {new.n_states}")
        total = acc.self_counts + acc.next_counts
        seen = total > 0
        p_self = np.clip(acc.self_counts[seen] / total[seen], floor, 1 - floor)
        new.log_self[seen] = np.log(p_self)
        new.log_next[seen] = np.log1p(-p_self)
        c = acc.optional_counts
        if c[OPT_SPACE_ENTER] + c[OPT_SPACE_SKIP] > 0:
            p = c[OPT_SPACE_ENTER] / (c[OPT_SPACE_ENTER] + c[OPT_SPACE_SKIP])
            new.space_prob = float(np.clip(p, floor, 1 - floor))
        if c[OPT_BLANK_ENTER] + c[OPT_BLANK_SKIP] > 0:
            p = c[OPT_BLANK_ENTER] / (c[OPT_BLANK_ENTER] + c[OPT_BLANK_SKIP])
            new.blank_prob = float(np.clip(p, floor, 1 - floor))
        return new

    def copy(self) -> "Transitions":
        return Transitions.from_arrays(self.to_arrays())

    def __repr__(self):
        return (f"Transitions({self.n_states} states, mean self-loop "
                f"{float(np.exp(self.log_self).mean()):.3f}, space {self.space_prob:.3f}, "
                f"blank {self.blank_prob:.3f})")


class TransitionAccumulator:
    """Expected transition counts (E-step statistics); accumulators add up with ``+``.

    ``self_counts[s]`` / ``next_counts[s]``: expected number of self-loops / leaves of
    state ``s`` (leaving a model's last state, including the final exit, counts as next).
    ``optional_counts[code]``: expected decisions per OPT_* code.
    """

    def __init__(self, n_states):
        S = n_states.n_emitting if isinstance(n_states, HmmTopology) else int(n_states)
        self.self_counts = np.zeros(S)
        self.next_counts = np.zeros(S)
        self.optional_counts = np.zeros(5)

    def accumulate(self, graph: "LineGraph", arc_occupancy, gamma=None):
        """Add the expected arc counts of one line (from ``align.forward_backward``).

        ``gamma`` (T, G) adds the first/last-frame decisions that are not arcs: the
        final exit of the last model and skipping or entering the leading/trailing blank.
        """
        occ = np.asarray(arc_occupancy, dtype=np.float64)
        if occ.shape != graph.arc_from.shape:
            raise ValueError("arc_occupancy does not match the graph's arcs")
        is_self = graph.arc_kind == ARC_SELF
        self.self_counts += np.bincount(graph.arc_state[is_self], occ[is_self], len(self.self_counts))
        self.next_counts += np.bincount(graph.arc_state[~is_self], occ[~is_self], len(self.next_counts))
        self.optional_counts += np.bincount(graph.arc_optional, occ, 5)
        if gamma is not None and len(gamma):
            first = np.asarray(gamma[0], dtype=np.float64)
            last = np.asarray(gamma[-1], dtype=np.float64)
            self._add_ends(graph, first, last)
        return self

    def accumulate_path(self, graph: "LineGraph", path, arc_path=None):
        """Add the counts of one Viterbi path (Viterbi training).

        ``arc_path`` (T-1,) from ``viterbi(..., return_arcs=True)``; without it arcs are
        looked up from consecutive nodes (ambiguous only for a 1-state model repeated
        in the loop graph).
        """
        path = np.asarray(path, dtype=np.int64)
        if len(path) == 0:
            return self
        if arc_path is None:
            arc_path = graph.find_arcs(path[:-1], path[1:])
        occ = np.bincount(np.asarray(arc_path, dtype=np.int64), minlength=graph.n_arcs).astype(np.float64)
        self.accumulate(graph, occ)
        G = graph.n_nodes
        self._add_ends(graph, np.bincount(path[:1], minlength=G).astype(float),
                       np.bincount(path[-1:], minlength=G).astype(float))
        return self

    def _add_ends(self, graph, first, last):
        final_ok = np.isfinite(graph.final_logp)
        self.next_counts += np.bincount(graph.emit_state[final_ok], last[final_ok], len(self.next_counts))
        self.optional_counts += np.bincount(graph.init_optional, first, 5)
        self.optional_counts += np.bincount(graph.final_optional, last, 5)

    def __add__(self, other: "TransitionAccumulator") -> "TransitionAccumulator":
        if len(self.self_counts) != len(other.self_counts):
            raise ValueError("cannot add transition accumulators of different sizes")
        out = TransitionAccumulator(len(self.self_counts))
        out.self_counts = self.self_counts + other.self_counts
        out.next_counts = self.next_counts + other.next_counts
        out.optional_counts = self.optional_counts + other.optional_counts
        return out

    def __radd__(self, other):
        return self if other == 0 else self.__add__(other)   # lets sum() work

    def to_arrays(self) -> dict:
        return {"self_counts": self.self_counts.copy(), "next_counts": self.next_counts.copy(),
                "optional_counts": self.optional_counts.copy()}

    @classmethod
    def from_arrays(cls, arrays) -> "TransitionAccumulator":
        acc = cls(len(arrays["self_counts"]))
        acc.self_counts = np.asarray(arrays["self_counts"], dtype=np.float64).copy()
        acc.next_counts = np.asarray(arrays["next_counts"], dtype=np.float64).copy()
        acc.optional_counts = np.asarray(arrays["optional_counts"], dtype=np.float64).copy()
        return acc


@dataclass
class LineGraph:
    """A flat HMM over emitting states; arcs sorted by destination (then source).

    Nodes: ``emit_state`` (G,) emission-state id, ``node_symbol`` (G,) model id,
    ``node_pos`` (G,) index in the transcription (-1 for inserted blanks, and in loop
    graphs), ``node_first``/``node_last`` (G,) bool: first/last state of its model.
    Arcs: ``arc_from``, ``arc_to`` (A,) int32, ``arc_logp`` (A,) float64,
    ``arc_kind`` (ARC_SELF|ARC_NEXT) and ``arc_state`` (the emission state whose
    parameter the arc uses), ``arc_optional`` (OPT_* decision the arc takes).
    ``init_logp``/``final_logp`` (G,), -inf where a path may not start/end;
    ``init_optional``/``final_optional`` (G,) OPT_* decisions taken there.
    ``text_ids``: the transcription (empty for loop graphs); ``min_frames``: the
    fewest frames of any complete path; ``char_penalty``: see :func:`build_loop_graph`.
    """
    emit_state: np.ndarray
    node_symbol: np.ndarray
    node_pos: np.ndarray
    node_first: np.ndarray
    node_last: np.ndarray
    arc_from: np.ndarray
    arc_to: np.ndarray
    arc_logp: np.ndarray
    arc_kind: np.ndarray
    arc_state: np.ndarray
    arc_optional: np.ndarray
    init_logp: np.ndarray
    final_logp: np.ndarray
    init_optional: np.ndarray
    final_optional: np.ndarray
    text_ids: np.ndarray
    space_id: int
    min_frames: int
    char_penalty: float = 0.0

    @property
    def n_nodes(self) -> int:
        return len(self.emit_state)

    @property
    def n_arcs(self) -> int:
        return len(self.arc_from)

    def in_ptr(self) -> np.ndarray:
        """CSR pointer: arcs into node g are ``in_ptr[g]:in_ptr[g+1]``."""
        return np.searchsorted(self.arc_to, np.arange(self.n_nodes + 1)).astype(np.int64)

    def find_arcs(self, src, dst) -> np.ndarray:
        """Index of the arc ``src[i] -> dst[i]`` (first one if several); ValueError if none."""
        src = np.asarray(src, dtype=np.int64)
        dst = np.asarray(dst, dtype=np.int64)
        key = self.arc_to.astype(np.int64) * self.n_nodes + self.arc_from
        want = dst * self.n_nodes + src
        idx = np.searchsorted(key, want)
        idx = np.minimum(idx, len(key) - 1)
        if len(want) and not np.all(key[idx] == want):
            raise ValueError("path uses a transition that is not in the graph")
        return idx.astype(np.int32)

    def dense_logp(self) -> np.ndarray:
        """(G, G) log transition matrix (for tests and comparisons with dense HMM code)."""
        m = np.full((self.n_nodes, self.n_nodes), -np.inf)
        m[self.arc_from, self.arc_to] = self.arc_logp
        return m


def min_frames(graph: LineGraph) -> int:
    """Fewest frames a complete path through ``graph`` needs (a longer line is impossible)."""
    return graph.min_frames


def _finish_graph(emit, symbol, pos, first, last, arcs, init, final, init_opt, final_opt,
                  text_ids, space_id, n_min, char_penalty=0.0) -> LineGraph:
    a_from, a_to, a_logp, a_kind, a_state, a_opt = (np.asarray(x) for x in zip(*arcs))
    order = np.lexsort((a_from, a_to))
    return LineGraph(
        emit_state=np.asarray(emit, dtype=np.int32),
        node_symbol=np.asarray(symbol, dtype=np.int32),
        node_pos=np.asarray(pos, dtype=np.int32),
        node_first=np.asarray(first, dtype=bool),
        node_last=np.asarray(last, dtype=bool),
        arc_from=a_from[order].astype(np.int32),
        arc_to=a_to[order].astype(np.int32),
        arc_logp=a_logp[order].astype(np.float64),
        arc_kind=a_kind[order].astype(np.int8),
        arc_state=a_state[order].astype(np.int32),
        arc_optional=a_opt[order].astype(np.int8),
        init_logp=np.asarray(init, dtype=np.float64),
        final_logp=np.asarray(final, dtype=np.float64),
        init_optional=np.asarray(init_opt, dtype=np.int8),
        final_optional=np.asarray(final_opt, dtype=np.int8),
        text_ids=np.asarray(text_ids, dtype=np.int32),
        space_id=int(space_id),
        min_frames=int(n_min),
        char_penalty=float(char_penalty),
    )


def _check_transitions(topology: HmmTopology, transitions: Transitions):
    if transitions.n_states != topology.n_emitting:
        raise HwrError(f"transitions have {transitions.n_states} states, topology {topology.n_emitting}")


def _line_units(topology: HmmTopology, text_ids: np.ndarray):
    """(symbol, node_pos, unit kind) for each model of the line, optional ones marked."""
    space = topology.space_id
    units = []
    for i, k in enumerate(text_ids):
        if k == space:
            if units and units[-1][2] != _UNIT_MANDATORY:
                continue                     # a run of spaces is one optional space
            units.append((k, i, _UNIT_BLANK if not units else _UNIT_SPACE))
        else:
            units.append((k, i, _UNIT_MANDATORY))
    if space >= 0:
        if not units or units[0][2] == _UNIT_MANDATORY:
            units.insert(0, (space, -1, _UNIT_BLANK))
        if units[-1][2] == _UNIT_MANDATORY:
            units.append((space, -1, _UNIT_BLANK))
        elif units[-1][2] == _UNIT_SPACE:      # a trailing space in the text is the trailing blank
            units[-1] = (units[-1][0], units[-1][1], _UNIT_BLANK)
    if all(kind != _UNIT_MANDATORY for _, _, kind in units):
        # nothing but blank: the blank model itself becomes mandatory, once
        units = [(space, units[0][1], _UNIT_MANDATORY)] if units else []
    if not units:
        raise HwrError("cannot build a line model: empty transcription and no space model")
    return units


def build_line_graph(topology: HmmTopology, transitions: Transitions, text_ids) -> LineGraph:
    """Unroll the models of one transcription (ids from ``Alphabet.encode``).

    Spaces become optional space models (a run of spaces counts once); an optional
    blank is added at each end when the topology has a space model.
    """
    _check_transitions(topology, transitions)
    text_ids = np.asarray(text_ids, dtype=np.int64).ravel()
    K = topology.n_models
    bad = (text_ids < 0) | (text_ids >= K)
    if np.any(bad):
        raise HwrError(f"transcription holds symbol id {int(text_ids[bad][0])} outside the "
                       f"alphabet of {K} symbols")
    units = _line_units(topology, text_ids)
    opt_lp = transitions.optional_logp()
    enter_code = {_UNIT_MANDATORY: OPT_NONE, _UNIT_SPACE: OPT_SPACE_ENTER, _UNIT_BLANK: OPT_BLANK_ENTER}
    skip_code = {_UNIT_SPACE: OPT_SPACE_SKIP, _UNIT_BLANK: OPT_BLANK_SKIP}

    emit, symbol, pos, first, last = [], [], [], [], []
    unit_first, unit_last = [], []
    for k, p, _ in units:
        states = topology.states_of(k)
        unit_first.append(len(emit))
        emit.extend(states)
        symbol.extend([k] * len(states))
        pos.extend([p] * len(states))
        first.extend([True] + [False] * (len(states) - 1))
        last.extend([False] * (len(states) - 1) + [True])
        unit_last.append(len(emit) - 1)
    G = len(emit)
    ls, ln = transitions.log_self, transitions.log_next

    arcs = []
    for g in range(G):
        s = emit[g]
        arcs.append((g, g, ls[s], ARC_SELF, s, OPT_NONE))
        if not last[g]:
            arcs.append((g, g + 1, ln[s], ARC_NEXT, s, OPT_NONE))
    n_units = len(units)
    for u in range(n_units - 1):
        g = unit_last[u]
        s = emit[g]
        # to the next unit, and over it when it is optional (optional units are never adjacent)
        v = u + 1
        arcs.append((g, unit_first[v], ln[s] + opt_lp[enter_code[units[v][2]]], ARC_NEXT, s,
                     enter_code[units[v][2]]))
        if units[v][2] != _UNIT_MANDATORY and v + 1 < n_units:
            arcs.append((g, unit_first[v + 1], ln[s] + opt_lp[skip_code[units[v][2]]], ARC_NEXT, s,
                         skip_code[units[v][2]]))

    init = np.full(G, -np.inf)
    init_opt = np.zeros(G, dtype=np.int8)
    kind0 = units[0][2]
    init[unit_first[0]] = opt_lp[enter_code[kind0]]
    init_opt[unit_first[0]] = enter_code[kind0]
    if kind0 != _UNIT_MANDATORY:
        init[unit_first[1]] = opt_lp[skip_code[kind0]]
        init_opt[unit_first[1]] = skip_code[kind0]

    final = np.full(G, -np.inf)
    final_opt = np.zeros(G, dtype=np.int8)
    g = unit_last[-1]
    final[g] = ln[emit[g]]
    kind_end = units[-1][2]
    if kind_end != _UNIT_MANDATORY:
        g = unit_last[-2]
        final[g] = ln[emit[g]] + opt_lp[skip_code[kind_end]]
        final_opt[g] = skip_code[kind_end]

    n_min = sum(int(topology.n_states_of[k]) for k, _, kind in units if kind == _UNIT_MANDATORY)
    return _finish_graph(emit, symbol, pos, first, last, arcs, init, final, init_opt, final_opt,
                         text_ids, topology.space_id, n_min)


def build_loop_graph(topology: HmmTopology, transitions: Transitions, char_penalty=0.0) -> LineGraph:
    """All models in a loop, for decoding without lexicon or LM.

    Node ``g`` is emission state ``g``.  Entering any model (at the start of the line
    or after the exit of the previous model) costs ``-log(K) - char_penalty``: a uniform
    symbol prior, and a per-character insertion penalty (positive values give fewer,
    longer characters; negative values more).  The space model is one of the K symbols.
    The line may end after any model; its final weight is that model's exit
    probability (so, unlike a line graph, the loop graph leaves the line length
    unmodelled: the arcs out of each state sum to one, the final weight comes on top).
    """
    _check_transitions(topology, transitions)
    K = topology.n_models
    S = topology.n_emitting
    ls, ln = transitions.log_self, transitions.log_next
    enter = -math.log(K) - float(char_penalty)
    first_states = topology.state_offset
    last_states = topology.state_offset + topology.n_states_of - 1
    emit = np.arange(S)
    first = np.zeros(S, dtype=bool)
    last = np.zeros(S, dtype=bool)
    first[first_states] = True
    last[last_states] = True
    arcs = []
    for s in range(S):
        arcs.append((s, s, ls[s], ARC_SELF, s, OPT_NONE))
        if not last[s]:
            arcs.append((s, s + 1, ln[s], ARC_NEXT, s, OPT_NONE))
    for s in last_states:
        for f in first_states:
            arcs.append((s, f, ln[s] + enter, ARC_NEXT, s, OPT_NONE))
    init = np.full(S, -np.inf)
    init[first_states] = enter
    final = np.full(S, -np.inf)
    final[last_states] = ln[last_states]
    zeros = np.zeros(S, dtype=np.int8)
    return _finish_graph(emit, topology.state_symbol, np.full(S, -1), first, last, arcs, init, final,
                         zeros, zeros, np.zeros(0), topology.space_id, int(topology.n_states_of.min()),
                         char_penalty)
