"""Token-passing Viterbi beam search over a lexicon prefix tree: kernel, network, driver, lattice.

One module per part:

* :mod:`~hybrid_hwr.search.network` -- the search network: a prefix tree of character HMMs
  and the optional units (blanks, space, out-of-lexicon letters), as flat arrays;
* :mod:`~hybrid_hwr.search.kernel` -- the Numba kernel: frame-synchronous token passing,
  LM tables, pruning (how tokens, LM states and pruning work is documented there);
* :mod:`~hybrid_hwr.search.driver` -- :class:`TokenSearch`: runs the kernel on a line and
  serves its LM requests;
* :mod:`~hybrid_hwr.search.lattice` -- :class:`WordLattices`: the word lattice of a line's records,
  its n-best search and word confidences (and their kernels);
* :mod:`~hybrid_hwr.search.objective` -- :class:`Objective`, the score the search maximises.

Every name is importable from ``hybrid_hwr.search``.
"""

from __future__ import annotations

from ..errors import HwrError  # noqa: F401
from .kernel import (ADAPTIVE_MARGIN, C_ACTIVE, C_EVENTS, C_FINALS, C_FRAME_RECORDS, C_MISSING,
                     C_PHASE, C_RECORDS, C_STAT_EVENTS, C_STAT_PUSHES, C_STAT_TOKENS, C_USED,
                     EV_UNK, EV_WORD, Events, F_BEAM, F_BLANK_ENTER, F_BLANK_SKIP, F_GLUE_PENALTY,
                     F_LM_WEIGHT, F_SPACE_ENTER, F_SPACE_SKIP, F_UNK_BEAM, F_UNK_PENALTY,
                     F_WORD_PENALTY, Finals, H_AUX, H_BP, H_LM, H_NET, H_SCORE, H_START, Hash,
                     I_ALLOW_EMPTY, I_BOS, I_END_HI, I_END_LO, I_HAS_LM, I_HAS_UNK, I_LINE_BLANKS,
                     I_MAX_ACTIVE, I_N_CTOK, I_N_WTOK, I_UNK_END_TOK, I_UNK_LO, I_UNK_MAX_ACTIVE,
                     I_UNK_START, I_U_BLANK_END, I_U_BLANK_START, I_U_EMPTY, I_U_SPACE, I_WORD_GAPS,
                     K_BLANK_END, K_BLANK_START, K_EMPTY, K_ROOT, K_SPACE, K_TREE, K_UNK, MINUS1,
                     M_CHAR, M_EOS, M_WORD, Missing, NEG_INF, N_FPARAMS, N_IPARAMS, Network,
                     R_UNK_CHAR, R_UNK_WORD, R_WORD, Records, S_DONE, S_GROW_RECORDS, S_GROW_TOKENS,
                     S_NEED_LM, Table, Tokens, UNK_TOKEN, ZERO, search_kernel, table_put, _KERNEL,
                     _add_event, _after_word, _char_lookup, _clear_hash, _enter_words, _eos_lookup,
                     _expand_frame, _final_step, _histogram_cut, _mix, _new_record, _prune, _push,
                     _request, _table_find, _unk_symbol, _unk_word_end, _word_end_events,
                     _word_end_lookups, _word_lookup)  # noqa: F401
from .network import UNIT_NAMES, build_network, unigram_lookahead  # noqa: F401
from .driver import LmTable, SearchOutput, TokenSearch  # noqa: F401
from .lattice import (LATTICE_BEAM, Item, Lattice, WordLattices, _log_add, lattice_backward,  # noqa: F401
                      lattice_posteriors, word_level_links)  # noqa: F401
from .objective import Objective, glues  # noqa: F401
