"""The score the search maximises, written once (the formula of :mod:`hybrid_hwr.decode`).

For a word sequence ``W`` along a path (natural log)::

    score(W) = log p(x | W) + lm_weight * log P_LM(W) + word_penalty * |W|
               + unk_penalty * #out-of-lexicon words + glue_penalty * #glued joins

``log p(x | W)`` is the optical score (emissions and HMM transitions), ``log P_LM(W)``
the LM's (an out-of-lexicon word counts its spelling under the character LM too). In the
lexicon-free modes the "words" are characters and ``word_penalty`` is the per-character
term. The kernel (:mod:`hybrid_hwr.search.kernel`) adds these terms word by word with the
weights :class:`Objective` gives the driver; the decoder's hypotheses, lattice arcs and
n-best lists use the same methods, so that a score means the same everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Objective:
    """The weights of the score; methods give it, its inverse, and its one-word step."""

    lm_weight: float = 1.0
    word_penalty: float = 0.0    # per word (lexicon-free modes: per character)
    unk_penalty: float = 0.0     # per out-of-lexicon word (0: strict lexicon)
    glue_penalty: float = 0.0    # per glued join (0 outside lexicon modes)

    def penalties(self, n_words, n_unk=0, n_glued=0):
        """The word, unknown-word and glue terms of a hypothesis."""
        return self.word_penalty * n_words + self.unk_penalty * n_unk + self.glue_penalty * n_glued

    def total(self, optical, lm_logp, n_words, n_unk=0, n_glued=0):
        """``score(W)`` of a hypothesis from its optical and (unweighted) LM scores."""
        return optical + self.lm_weight * lm_logp + self.penalties(n_words, n_unk, n_glued)

    def optical(self, total, lm_logp, n_words, n_unk=0, n_glued=0):
        """The optical part of a hypothesis' score (inverse of :meth:`total`)."""
        return total - self.lm_weight * lm_logp - self.penalties(n_words, n_unk, n_glued)

    def extend(self, score, optical, lm_logp, unk: bool = False, glued: bool = False):
        """The score after one more word of optical score ``optical`` and LM score ``lm_logp``
        (terms added in the kernel's order)."""
        return (score + (optical + self.word_penalty + (self.unk_penalty if unk else 0.0))
                + (self.glue_penalty if glued else 0.0) + self.lm_weight * lm_logp)

    def word_optical(self, gain, lm_logp, unk, glued):
        """Optical score of words (arrays) from the score ``gain`` each added (inverse of :meth:`extend`)."""
        return (gain - self.lm_weight * lm_logp - self.word_penalty - np.where(unk, self.unk_penalty, 0.0)
                - self.glue_penalty * glued)


def glues(ch: str) -> bool:
    """Whether two words touching at character ``ch`` (without a space) make a glued join:
    letters and digits do (``str.isalnum``), punctuation does not."""
    return ch.isalnum()
