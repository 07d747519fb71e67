"""The search network: flat arrays of a prefix tree of character HMMs and the optional units.

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
"""

from __future__ import annotations

import numpy as np

from .kernel import K_BLANK_END, K_BLANK_START, K_EMPTY, K_ROOT, K_SPACE, K_TREE, K_UNK, Network


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
