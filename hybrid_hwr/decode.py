"""Recognition of line images: emission scores -> Viterbi search -> words, spans and scores.

Character-loop decoding (no lexicon, no language model) searches the loop graph of
:func:`hybrid_hwr.hmm.build_loop_graph`, every character model free to follow any
other. Its score is

    score(w) = log p(x | w) - char_penalty * |w|  (+ the uniform symbol prior -log K per symbol)

``char_penalty`` is the character insertion penalty: larger values give fewer, longer
characters. The space model also covers blank margins, so leading/trailing spaces are
dropped and runs of spaces collapse to one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .align import path_units, viterbi
from .data import normalize_text
from .hmm import build_loop_graph
from .model import HwrModel


@dataclass
class WordBox:
    """One recognised word and where it lies: frames of the features, pixels of the original image."""

    text: str
    first_frame: int
    last_frame: int
    x_start: float = float("nan")
    x_end: float = float("nan")


@dataclass
class Hypothesis:
    """Result of decoding one line."""

    text: str
    score: float            # total search score (natural log)
    optical_score: float    # log p(x | w) along the best path
    lm_score: float = 0.0
    n_frames: int = 0
    words: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"text": self.text, "score": self.score, "optical_score": self.optical_score,
                "lm_score": self.lm_score, "n_frames": self.n_frames,
                "words": [vars(w) for w in self.words]}


def frames_to_pixels(model: HwrModel, preprocessed, n_frames: int, first: int, last: int):
    """Horizontal extent in the original image of frames ``first..last`` (inclusive)."""
    from .features import frame_positions

    centres = frame_positions(n_frames, model.frontend.features)
    half = model.frontend.features.width / 2.0
    lo, hi = centres[first] - half, centres[last] + half
    to_original = preprocessed.x_to_original
    return float(to_original(lo)), float(to_original(hi))


def words_from_units(units, symbols, space_id: int) -> list[WordBox]:
    """Group consecutive non-space model visits into words."""
    words, current = [], []
    for unit in list(units) + [None]:
        if unit is None or unit.symbol == space_id:
            if current:
                words.append(WordBox("".join(symbols[u.symbol] for u in current),
                                     current[0].first_frame, current[-1].last_frame))
            current = []
        else:
            current.append(unit)
    return words


class Recognizer:
    """Decodes lines with a trained model; build once, call per line.

    Parameters
    ----------
    model : HwrModel
    char_penalty : float
        Character insertion penalty of the loop graph (see the module docstring).
    """

    def __init__(self, model: HwrModel, char_penalty: float = 0.0):
        self.model = model
        self.char_penalty = float(char_penalty)
        self.graph = build_loop_graph(model.topology, model.transitions, char_penalty=self.char_penalty)

    def decode_loglik(self, loglik: np.ndarray) -> Hypothesis:
        """Best character sequence for an emission matrix (frames x states, natural log)."""
        loglik = np.asarray(loglik, dtype=np.float64)
        score, path, arcs = viterbi(loglik, self.graph, return_arcs=True)
        if len(path) == 0:
            return Hypothesis("", float(score), float("-inf"), n_frames=len(loglik))
        units = path_units(path, self.graph, arcs)
        optical = float(loglik[np.arange(len(path)), self.graph.emit_state[path]].sum())
        symbols = self.model.alphabet.symbols
        space_id = self.model.topology.space_id
        words = words_from_units(units, symbols, space_id)
        text = normalize_text(" ".join(w.text for w in words))
        return Hypothesis(text, float(score), optical, n_frames=len(loglik), words=words)

    def decode_features(self, feats: np.ndarray) -> Hypothesis:
        """Decode normalised features (T, D)."""
        return self.decode_loglik(self.model.log_likelihoods(feats))

    def decode_image(self, gray: np.ndarray) -> Hypothesis:
        """Decode one gray line image; word boxes get their pixel extent in the image."""
        feats, preprocessed = self.model.features(gray)
        hyp = self.decode_features(feats)
        for word in hyp.words:
            word.x_start, word.x_end = frames_to_pixels(self.model, preprocessed, len(feats),
                                                        word.first_frame, word.last_frame)
        return hyp
