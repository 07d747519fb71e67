"""Recognition of line images: emission scores -> beam search -> words, spans, scores, n-best.

One search (:mod:`hybrid_hwr.search`, token passing over a prefix tree) serves every mode:

=====================  ==================================  ===========================
mode                   "words" of the search               language model
=====================  ==================================  ===========================
character loop         every symbol, the space included    none (uniform symbol prior)
character LM           every symbol, the space included    character n-gram (``char_lm``)
lexicon                lexicon words, optional space       none, or word n-gram (``lm``)
open vocabulary        lexicon words + spelled unknowns    word n-gram + character n-gram
=====================  ==================================  ===========================

The score of a word sequence ``W = w_1 .. w_n`` (natural log), maximised by the search::

    score(W) = log p(x | W)  +  lm_weight * log P_LM(W)  +  word_penalty * |W|
               +  glue_penalty * #glued joins  (+ unk_penalty * #out-of-lexicon words)

* ``log p(x | W)``: the Viterbi score of the best state path through the line model of
  ``W`` -- emission log-likelihoods plus HMM transitions, including the optional-model
  terms of :func:`hybrid_hwr.hmm.build_line_graph` (``log space_prob`` or
  ``log(1 - space_prob)`` between words, ``log blank_prob`` or ``log(1 - blank_prob)``
  at each line end).  It is what ``align.viterbi`` gives on ``build_line_graph`` of
  ``" ".join(W)``: the decoder's best score equals the brute-force maximum over ``W``.
* ``log P_LM(W)``: KenLM's natural-log probability of ``<s> w_1 .. w_n </s>`` (an
  out-of-lexicon word ``v`` counts as ``log P(<unk> | history) + log P_char(v <sp> | <sp>)``
  under the character LM).  No LM: 0.
* a *glued join*: two consecutive words of the path with no space frame between them,
  the first ending and the second starting with a letter or digit (``str.isalnum``).
  Joins at punctuation (``l'`` + ``État``, ``mot`` + ``,``) are free.  The optional
  space makes every join possible, so without this term a lexicon holding single letters
  spells any text as glued one-letter words.  Lexicon modes only.
* knobs: ``lm_weight`` (>= 0), ``word_penalty`` (added per word: negative values give
  fewer words), ``beam`` (tokens more than ``beam`` below the frame's best are pruned),
  ``max_active`` (at most that many tokens per frame), ``nbest`` (length of the n-best
  list), ``unk_penalty`` (None: strict lexicon), ``glue_penalty`` (per glued join,
  negative: a cost), ``char_penalty`` (lexicon-free modes).
  Open vocabulary only: ``unk_beam`` and ``unk_max_active``, the tighter beam and token
  budget of the tokens inside spelled words (every character-LM context is a token of
  its own, so without them the speller dominates the search's work).

Lexicon-free modes: the "words" are the characters, and the per-word term becomes
``-char_penalty`` per character, plus the uniform symbol prior ``-log K`` in the
character loop without LM (so the character loop is exactly
:func:`hybrid_hwr.hmm.build_loop_graph` decoded by ``align.viterbi``).  With a
character LM, optional blanks at the line ends are allowed (the space symbol inside the
line is the LM's ``<sp>``).  The space model covers blank margins, so leading/trailing
spaces are dropped and runs of spaces collapse to one.

Output (:class:`Hypothesis`): text (lexicon words joined by single spaces: the
tokeniser's form, e.g. ``Mr . Foot``; ``text.detokenize`` gives running text), total
score, its optical and LM parts (``score = optical_score + lm_weight * lm_score +
penalties``, the glue penalty included), words with their frames and pixels, an n-best list (sorted, distinct
texts) and a confidence per word.  In the character-LM mode ``lm_score`` is that of the
decoded symbols, a leading or trailing space symbol included.
A line with no frames, or too few frames for any word sequence, gives the empty result
``text == ""``, ``score == -inf``, no words, empty n-best list.

Settings and decoder directories: :class:`DecoderSettings` is the one list of these knobs
(what :class:`Recognizer` takes). A *decoder directory* is a model directory
(:mod:`hybrid_hwr.model`) that may also hold ``decoder.json``, the settings that go with
the model, and the lexicon and LM files it names (relative names are read next to it)::

    hybrid_hwr/models/default/
        model.json, arrays-<sha8>.npz     the optical model
        decoder.json                      {"lexicon": "fr-50k.txt", "lm": "fr-3gram.arpa.gz",
                                           "lm_weight": 4.0, "word_penalty": -5.0, ..., "lang": "fr"}
        fr-50k.txt, fr-3gram.arpa.gz

Its keys are :class:`DecoderSettings`' fields, all optional (a directory without it decodes
with a character loop); unset weights and penalties take the calibrated values of
:data:`CALIBRATED` for the model's emission type and the mode. :func:`load_recognizer`
reads a decoder directory, :meth:`DecoderSettings.save` writes one.

Search details that change which paths survive pruning, never a complete hypothesis's
score: the word (and unknown-word) penalty is paid when a word starts; tokens pay a
unigram LM look-ahead down the prefix tree; finished lines (tokens in the trailing
blank) are pruned apart from the others, so a line keeps complete hypotheses.  If
pruning still loses every complete hypothesis, the line is searched again with 4x the
beams and 2x the max-active limits; then, with a lexicon, the best token's words (the word it
was reading completed by the first word below its tree node) are force-aligned with
``align.viterbi`` and scored by the formula above (word confidences NaN); lexicon-free
modes retry once more without beam.

N-best lists come from a word lattice (:class:`hybrid_hwr.search.lattice.WordLattices`, which
also gives the confidences below): every word end the search recorded is an arc
from the frame where its predecessor ended, carrying the optical score it had there
(the word-pair approximation: a word's segment score is taken from its best recorded
predecessor ending at the same frame).  The lattice is pruned around the best path
and searched for the ``n`` best distinct word sequences with the exact LM.  Every entry
is the score of a real path of its word sequence, so entries may score lower than the
sequence's own best path, never higher.  ``RESCORE_NBEST`` entries are searched even for
``nbest=1``: one of them may beat the path the pruned search ended with, and then is the
answer.

Word confidences are lattice posteriors: paths weigh ``exp(score / lm_weight)`` (the
optical scale ``1 / lm_weight`` that gives the LM weight 1, as Kaldi's lattice posteriors
use acoustic scale = 1 / LM weight; scale 1 without an LM, ``confidence_scale``), arc
posteriors come from a forward-backward pass over the lattice (arcs within
``CONFIDENCE_BEAM`` scaled nats of the best path), and a word's confidence is the largest,
over the frames of its span, of the posterior mass of the arcs of the same word covering
that frame (Wessel et al.'s C_max; paths cross a frame once, so it is a probability).  In
lexicon-free modes the arcs are characters and a word gets its least sure character's.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from .align import viterbi
from .data import normalize_text
from .errors import HwrError
from .fileio import atomic_write_text
from .lexicon import PrefixTree, build_prefix_tree, describe_rejected, lexicon_tree, load_lexicon
from .model import HwrModel
from .search import LATTICE_BEAM, Objective, TokenSearch, WordLattices, build_network, unigram_lookahead
from .search.lattice import Item as _Item
from .search.objective import glues as _glues
from .text import LANGUAGES

__all__ = ["DecoderSettings", "WordBox", "Alternative", "Hypothesis", "Recognizer", "frames_to_pixels",
           "words_from_units", "read_emissions", "load_recognizer", "load_default_recognizer", "resolve_model_dir",
           "default_model_dir", "CALIBRATED", "DECODER_FILE", "DEFAULT_BEAM", "DEFAULT_MAX_ACTIVE",
           "DEFAULT_UNK_BEAM", "DEFAULT_UNK_MAX_ACTIVE"]

DEFAULT_BEAM = 500.0
DEFAULT_MAX_ACTIVE = 2000
DEFAULT_UNK_BEAM = 100.0
DEFAULT_UNK_MAX_ACTIVE = 200
RESCORE_NBEST = 5            # n-best entries searched even for nbest=1 (they may beat the search's best)
CONFIDENCE_BEAM = 12.0       # posteriors: arcs this far below the best path, in scaled nats, are left out
# a line whose pruning lost every complete hypothesis is redone with wider pruning,
# (beam factor, max_active factor); then, with a lexicon, the best partial traceback is
# completed and force-aligned (lexicon-free modes retry once more with no beam)
RETRIES = ((4.0, 2),)


# ----------------------------------------------------------------------------- settings

DECODER_FILE = "decoder.json"
_FILE_KEYS = ("lexicon", "lm", "char_lm")

# Settings used when neither decoder.json nor an option gives them, by emission type and by
# mode: the optima found on the validation splits of IAM-OnDB and Copiste (see the README's
# results), rounded. GMM log-likelihoods are several times sharper than an MLP's scaled
# likelihoods, so the LM weight and the penalties scale with them. `hybrid-hwr tune`
# replaces them with values tuned for the model (written to decoder.json).
CALIBRATED = {
    # (emission type, mode): {knob: value}
    ("mlp", "lexicon + LM"): {"lm_weight": 6.0, "word_penalty": -10.0, "glue_penalty": -10.0},
    ("mlp", "lexicon"): {"lm_weight": 0.0, "word_penalty": -40.0, "glue_penalty": -10.0},
    ("gmm", "lexicon + LM"): {"lm_weight": 16.0, "word_penalty": -40.0, "glue_penalty": -30.0},
    ("gmm", "lexicon"): {"lm_weight": 0.0, "word_penalty": -200.0, "glue_penalty": -30.0},
}
_CALIBRATED_KNOBS = ("lm_weight", "word_penalty", "glue_penalty")
# the values of the formula's knobs that leave it unweighted (Recognizer's keyword form)
_NEUTRAL = {"lm_weight": 1.0, "word_penalty": 0.0, "glue_penalty": 0.0}
# decoder defaults of the pruning knobs
_PRUNING_DEFAULTS = {"beam": DEFAULT_BEAM, "max_active": DEFAULT_MAX_ACTIVE, "unk_beam": DEFAULT_UNK_BEAM,
                     "unk_max_active": DEFAULT_UNK_MAX_ACTIVE}


def default_model_dir() -> Path:
    """Where the shipped default model lives (``hybrid_hwr/models/default``); it may be absent."""
    return Path(__file__).resolve().parent / "models" / "default"


@dataclass(frozen=True)
class DecoderSettings:
    """The decoder's knobs, the one list of them: what a :class:`Recognizer` takes and what
    ``decoder.json`` stores (see the module docstring for the score they parametrise).

    ``lexicon``, ``lm``, ``char_lm``: files (decoder.json's relative names resolved), or
    in Python a word list / a ``kenlm.Model``. A knob left None takes the calibrated value
    of the model's emission type and mode (:data:`CALIBRATED`: LM weight, word and glue
    penalties) or the decoder's default (pruning); ``unk_penalty`` None is a strict
    lexicon and ``prior_scale`` None the network's own kappa. ``lang`` only acts on
    :meth:`display_text`.
    """

    lexicon: Path | None = None
    lm: Path | None = None
    char_lm: Path | None = None
    lm_weight: float | None = None     # None: the calibrated default of the model's kind (CALIBRATED)
    word_penalty: float | None = None
    glue_penalty: float | None = None
    char_penalty: float = 0.0
    unk_penalty: float | None = None
    beam: float | None = None          # None: the decoder's default
    max_active: int | None = None
    unk_beam: float | None = None      # pruning inside out-of-lexicon words (None: the decoder's default)
    unk_max_active: int | None = None
    prior_scale: float | None = None   # hybrid models: kappa of the scaled likelihoods (None: the model's)
    nbest: int = 1                     # n-best list length
    lang: str = "generic"              # tokeniser conventions (hybrid_hwr.text): en, fr or generic

    @classmethod
    def load(cls, model_dir: str | os.PathLike, keys: tuple[str, ...] | None = None) -> "DecoderSettings":
        """Settings of ``model_dir/decoder.json`` (defaults, i.e. a character loop, when it is absent).

        ``keys`` reads and checks only those settings (``emissions`` needs ``prior_scale``, not
        the lexicon and LM files).
        """
        model_dir = Path(model_dir)
        path = model_dir / DECODER_FILE
        if not path.is_file():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HwrError(f"{path}: not a readable JSON file ({exc})") from None
        if not isinstance(raw, dict):
            raise HwrError(f"{path}: expected a JSON object of decoding settings")
        if keys is not None:
            raw = {key: raw[key] for key in keys if key in raw}
        return cls.from_dict(raw, model_dir, where=str(path))

    @classmethod
    def from_dict(cls, raw: dict, base_dir: str | os.PathLike, where: str = DECODER_FILE) -> "DecoderSettings":
        """Checked settings; relative file names are read in ``base_dir``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise HwrError(f"{where}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
        values = {}
        for key, value in raw.items():
            if key in _FILE_KEYS:
                if value is None:
                    continue
                if not isinstance(value, str) or not value:
                    raise HwrError(f"{where}: {key} must be a file name or null, got {value!r}")
                file = Path(base_dir) / value
                if not file.is_file():
                    raise HwrError(f"{where}: {key} file {file} is missing")
                values[key] = file
            elif key == "lang":
                if value not in LANGUAGES:
                    raise HwrError(f"{where}: lang must be one of {', '.join(LANGUAGES)}, got {value!r}")
                values[key] = value
            elif value is None and key in ("unk_penalty", "beam", "max_active", "unk_beam", "unk_max_active",
                                           "prior_scale"):
                continue
            else:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise HwrError(f"{where}: {key} must be a finite number, got {value!r}")
                if key == "prior_scale" and value < 0:
                    raise HwrError(f"{where}: prior_scale must be >= 0, got {value!r}")
                values[key] = int(value) if key in ("max_active", "unk_max_active", "nbest") else float(value)
        return cls(**values)

    def save(self, model_dir: str | os.PathLike, keys: tuple[str, ...] | None = None) -> Path:
        """Write these settings to ``model_dir/decoder.json`` (atomically) and return its path.

        Files inside ``model_dir`` are written relative to it, others absolute; ``keys``
        (default: the file keys, every knob that is set, and ``lang``) are written and the
        other keys of an existing decoder.json kept.
        """
        model_dir = Path(model_dir)
        path = model_dir / DECODER_FILE
        raw = {}
        if path.is_file():
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                raw = {}
        if keys is None:
            keys = tuple(f.name for f in fields(self)
                         if f.name in _FILE_KEYS or f.name == "lang" or getattr(self, f.name) is not None)
        inside = model_dir.resolve()
        for key in keys:
            value = getattr(self, key)
            if key in _FILE_KEYS and value is not None:
                if not isinstance(value, (str, os.PathLike)):
                    raise HwrError(f"decoder.json stores files: {key} is a {type(value).__name__}, not a path")
                value = Path(value).resolve()
                value = str(value.relative_to(inside)) if value.is_relative_to(inside) else str(value)
            raw[key] = value
        atomic_write_text(path, json.dumps(raw, indent=1, ensure_ascii=False) + "\n")
        return path

    def replace(self, **changes) -> "DecoderSettings":
        """A copy with ``changes`` (HwrError naming an unknown knob); string paths become Paths."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise HwrError(f"unknown decoder setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
        return replace(self, **{k: Path(v) if k in _FILE_KEYS and isinstance(v, (str, os.PathLike)) else v
                                for k, v in changes.items()})

    @property
    def mode(self) -> str:
        """The decoding mode these settings select."""
        if self.lexicon is None:
            return "character LM" if self.char_lm is not None else "character loop"
        if self.unk_penalty is not None and self.char_lm is not None:
            return "open vocabulary"
        return "lexicon + LM" if self.lm is not None else "lexicon"

    def calibrated(self, emission_type: str) -> "DecoderSettings":
        """These settings with every unset LM weight / word / glue penalty filled in from
        :data:`CALIBRATED` for the model's emission type and the decoding mode."""
        mode = "lexicon + LM" if self.mode == "open vocabulary" else self.mode
        table = CALIBRATED.get((emission_type, mode), {})
        fill = {k: table.get(k, 0.0 if k != "lm_weight" else 1.0) for k in _CALIBRATED_KNOBS
                if getattr(self, k) is None}
        return replace(self, **fill) if fill else self

    def resolved(self, emission_type: str) -> "DecoderSettings":
        """Every knob explicit: :meth:`calibrated`, and the decoder's pruning defaults."""
        full = self.calibrated(emission_type)
        fill = {k: v for k, v in _PRUNING_DEFAULTS.items() if getattr(full, k) is None}
        return replace(full, **fill) if fill else full

    def recognizer(self, model, nbest: int | None = None, loaded: dict | None = None) -> "Recognizer":
        """A :class:`Recognizer` (or the model's own kind of recogniser, e.g. for CTC outputs)
        for ``model`` with these settings; ``nbest`` replaces theirs. ``loaded`` maps file
        paths to their loaded content (lexicon word lists, kenlm models) to share between
        recognisers."""
        settings = self if nbest is None else replace(self, nbest=nbest)
        return model.recognizer_class(model, settings, loaded=loaded)

    def display_text(self, hypothesis) -> str:
        """The hypothesis as running text: lexicon tokens (``l' État ,``) joined back (``l'État,``)."""
        from .text import detokenize

        if self.lexicon is None:
            return hypothesis.text
        return detokenize(hypothesis.text.split(), self.lang)

    def describe(self, emission_type: str | None = None) -> str:
        """One line for logs: the decoding mode and its knobs (with ``emission_type``, the
        calibrated values of unset knobs, marked "default")."""
        full = self.calibrated(emission_type) if emission_type else self

        def knob(name):
            value = getattr(full, name)
            mark = " (default)" if getattr(self, name) is None and value is not None else ""
            return f"{value:g}{mark}" if value is not None else "default"

        def name(value):
            return value.name if isinstance(value, Path) else type(value).__name__

        if self.lexicon is None:
            mode = (f"character LM {name(self.char_lm)} (weight {knob('lm_weight')})" if self.char_lm
                    else "character loop")
            text = f"{mode}, char penalty {self.char_penalty:g}"
        else:
            text = f"lexicon {name(self.lexicon)}"
            if self.lm is not None:
                text += f" + LM {name(self.lm)} (weight {knob('lm_weight')})"
            if self.unk_penalty is not None and self.char_lm is not None:
                text += f" + out-of-lexicon words ({name(self.char_lm)}, penalty {self.unk_penalty:g})"
            text += f", word penalty {knob('word_penalty')}, glue penalty {knob('glue_penalty')}"
        return text + (f", prior scale {self.prior_scale:g}" if self.prior_scale is not None else "")


def resolve_model_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """``model_dir``, or the default model's directory when None; HwrError if it is not there."""
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    if model_dir == default_model_dir() and not (model_dir / "model.json").is_file():
        raise HwrError(f"no default model in {model_dir} (the package was installed without it); "
                       "pass a model directory with --model DIR")
    if not model_dir.is_dir():
        raise HwrError(f"model {model_dir}: not a directory")
    return model_dir


def settings_line(model_dir: str | os.PathLike | None, recognizer, settings: DecoderSettings) -> str:
    """One line naming the model, its kind and the decoding settings in use (for stderr)."""
    path = resolve_model_dir(model_dir)
    which = " (the bundled default model)" if path.resolve() == default_model_dir() else ""
    kind = recognizer.model.emission_type
    return f"model {path}{which}, {kind.upper()}-HMM; decoding: {settings.describe(kind)}"


def load_recognizer(model_dir: str | os.PathLike | None = None, nbest: int = 1, **overrides):
    """``(Recognizer, DecoderSettings)`` of a decoder directory (default: :func:`default_model_dir`).

    ``overrides`` replace settings of ``decoder.json`` (e.g. ``lm_weight=4.0``, or
    ``lexicon=Path(...)``); a None value means "not given" and keeps the stored setting.
    """
    from .model import load_model

    model = load_model(resolve_model_dir(model_dir))
    settings = model.decoder_settings().replace(**{k: v for k, v in overrides.items() if v is not None})
    return settings.recognizer(model, nbest=nbest), settings


def image_decoder(model_dir: str | os.PathLike | None, nbest: int, overrides: dict, built=None):
    """``decode_image`` of :func:`load_recognizer`'s recognizer, wrapped to be built once per
    process (a cluster worker loads the model, lexicon and LMs once for all its lines).
    Paths are made absolute (a worker's working directory is not the caller's); ``built``:
    this process's recognizer's ``decode_image``, if it is loaded already."""
    from .cluster import PerProcess

    return PerProcess(_build_image_decoder, None if model_dir is None else str(Path(model_dir).absolute()), nbest,
                      {k: str(Path(v).absolute()) if k in _FILE_KEYS and v is not None else v
                       for k, v in overrides.items()}, built=built)


def _build_image_decoder(model_dir, nbest, overrides):
    return load_recognizer(model_dir, nbest=nbest, **overrides)[0].decode_image


def load_default_recognizer(nbest: int = 1, **overrides):
    """``(Recognizer, DecoderSettings)`` of the shipped default model (HwrError if it is missing)."""
    return load_recognizer(None, nbest=nbest, **overrides)


@dataclass
class WordBox:
    """One recognised word and where it lies: frames of the features, pixels of the original image."""

    text: str
    first_frame: int
    last_frame: int
    x_start: float = float("nan")
    x_end: float = float("nan")
    confidence: float = 1.0
    oov: bool = False       # spelled by the character LM (open vocabulary), not a lexicon word


@dataclass
class Alternative:
    """One entry of an n-best list."""

    text: str
    score: float
    optical_score: float
    lm_score: float


def _json_float(x):
    return float(x) if np.isfinite(x) else None


@dataclass
class Hypothesis:
    """Result of decoding one line (scores in natural log; see the module docstring)."""

    text: str
    score: float            # total search score
    optical_score: float    # log p(x | W) along the best path
    lm_score: float = 0.0   # log P_LM(W), unweighted
    n_frames: int = 0
    words: list = field(default_factory=list)
    nbest: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-safe form (non-finite scores become None)."""
        return {"text": self.text, "score": _json_float(self.score),
                "optical_score": _json_float(self.optical_score), "lm_score": _json_float(self.lm_score),
                "n_frames": self.n_frames,
                "words": [{k: (_json_float(v) if isinstance(v, float) else v) for k, v in vars(w).items()}
                          for w in self.words],
                "nbest": [{"text": a.text, "score": _json_float(a.score),
                           "optical_score": _json_float(a.optical_score), "lm_score": _json_float(a.lm_score)}
                          for a in self.nbest]}


def frames_to_pixels(model: HwrModel, preprocessed, n_frames: int, first: int, last: int):
    """Horizontal extent in the original image of frames ``first..last`` (inclusive)."""
    from .features import frame_positions

    centres = frame_positions(n_frames, model.frontend.features)
    half = model.frontend.features.width / 2.0
    lo, hi = centres[first] - half, centres[last] + half
    to_original = preprocessed.x_to_original
    return float(to_original(lo)), float(to_original(hi))


def words_from_units(units, symbols, space_id: int) -> list[WordBox]:
    """Group consecutive non-space model visits (``.symbol``, frames) into words."""
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


# ----------------------------------------------------------------------------- inputs

def _load_lm_arg(value, what):
    from .lm import load_lm

    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return load_lm(value)
    if hasattr(value, "BaseScore"):
        return value
    raise HwrError(f"{what}: expected a path or a kenlm.Model, got {type(value).__name__}")


def _lexicon_words(value) -> list[str]:
    if isinstance(value, (str, os.PathLike)):
        return load_lexicon(value)
    words = [str(w) for w in value]
    if not words:
        raise HwrError("empty lexicon (no words)")
    for w in words:
        if not w or any(ch.isspace() for ch in w):
            raise HwrError(f"lexicon: a word holds no whitespace, got {w!r}")
    return list(dict.fromkeys(words))


class _NoLm:
    """Scorer of the empty LM: every token has probability 1, one state."""

    BOS = 0

    def score(self, state, token):
        return 0.0, 0

    def score_pairs(self, states, tokens):
        return np.zeros(len(states)), np.zeros(len(states), dtype=np.int64)

    def end_score(self, state):
        return 0.0


# ----------------------------------------------------------------------------- recognizer

class Recognizer:
    """Decodes lines with a trained model; build once, call per line.

    ``Recognizer(model, settings)`` takes a :class:`DecoderSettings`: its unset weights and
    penalties take the calibrated values of the model's emission type and mode, its unset
    pruning knobs the decoder's defaults, and a ``prior_scale`` rescales a hybrid's
    likelihoods. ``Recognizer(model, lexicon=..., lm_weight=..., ...)`` takes the same knobs
    as keywords (they replace those of ``settings`` when both are given); without
    ``settings``, unset weights and penalties are the formula's neutral values (LM weight
    1, penalties 0), not the calibrated ones. ``loaded`` maps file paths to their loaded
    content (word lists, kenlm models) to share between recognisers.

    The knobs (see the module docstring for the score):

    lexicon : path of a lexicon file, or a sequence of words, or None
        None: lexicon-free decoding (character loop, or character LM if ``char_lm``).
        Words whose characters are outside the model's alphabet are left out and
        reported in ``rejected_words`` / ``lexicon_message``.
    lm : path of an ARPA (.arpa, .arpa.gz) or binary KenLM model, or a kenlm.Model
        Word n-gram over the lexicon's words (needs ``lexicon``).
    lm_weight, word_penalty, glue_penalty, beam, max_active, nbest, unk_penalty
        The knobs of the score formula in the module docstring.
    unk_beam, unk_max_active : float, int
        Open vocabulary: tokens inside out-of-lexicon words are kept only within
        ``unk_beam`` of the frame's best token, and at most ``unk_max_active`` of them per
        frame (both also bounded by ``beam`` and ``max_active``).
    char_penalty : float
        Character insertion penalty of the lexicon-free modes (positive: fewer characters).
    char_lm : path or kenlm.Model
        Character n-gram (tokens from ``text.char_tokens``): the LM of lexicon-free
        decoding, or the speller of out-of-lexicon words when ``unk_penalty`` is set.
    """

    def __init__(self, model: HwrModel, settings: DecoderSettings | None = None, *, loaded: dict | None = None,
                 **knobs):
        if settings is None:
            settings = DecoderSettings(**_NEUTRAL).replace(**knobs)
        elif knobs:
            settings = settings.replace(**knobs)
        if settings.prior_scale is not None:
            model = model.with_prior_scale(settings.prior_scale)
        self.settings = settings
        full = settings.resolved(model.emission_type)
        loaded = loaded or {}
        lexicon, lm, char_lm = (loaded.get(f, f) if isinstance(f, (str, os.PathLike)) else f
                                for f in (full.lexicon, full.lm, full.char_lm))
        from .lm import SPACE_TOKEN, LmScorer, char_lm_symbols, check_vocabulary

        self.model = model
        self.lm_weight = float(full.lm_weight)
        self.word_penalty = float(full.word_penalty)
        self.beam = float(full.beam)
        self.max_active = int(full.max_active)
        self.nbest = int(full.nbest)
        self.char_penalty = float(full.char_penalty)
        self.glue_penalty = float(full.glue_penalty)
        self.unk_penalty = None if full.unk_penalty is None else float(full.unk_penalty)
        self.unk_beam = float(full.unk_beam)
        self.unk_max_active = int(full.unk_max_active)
        if not (math.isfinite(self.lm_weight) and self.lm_weight >= 0):
            raise HwrError(f"LM weight must be a finite number >= 0, got {full.lm_weight}")
        for name, v in (("word penalty", self.word_penalty), ("character penalty", self.char_penalty),
                        ("glue penalty", self.glue_penalty)):
            if not math.isfinite(v):
                raise HwrError(f"{name} must be finite, got {v}")
        if not self.beam > 0:
            raise HwrError(f"beam must be > 0, got {full.beam}")
        if not self.unk_beam > 0:
            raise HwrError(f"unk beam must be > 0, got {full.unk_beam}")
        if self.max_active < 1 or self.nbest < 1 or self.unk_max_active < 1:
            raise HwrError("max_active, unk_max_active and nbest must be >= 1")
        if self.unk_penalty is not None and not math.isfinite(self.unk_penalty):
            raise HwrError(f"unk penalty must be finite, got {full.unk_penalty}")
        if lm is not None and lexicon is None:
            raise HwrError("a word language model needs a lexicon")
        if self.unk_penalty is not None and (lexicon is None or char_lm is None):
            raise HwrError("out-of-lexicon words (unk_penalty) need a lexicon and a character LM")

        topology, transitions = model.topology, model.transitions
        symbols = list(model.alphabet.symbols)
        K = len(symbols)
        space = topology.space_id
        self.rejected_words: dict = {}
        self.lexicon_message: str | None = None
        self.lm_model = _load_lm_arg(lm, "lm")
        self.char_lm_model = _load_lm_arg(char_lm, "char_lm")
        if self.char_lm_model is not None and SPACE_TOKEN not in self.char_lm_model:
            # a word LM here would score every character as <unk>: refuse it rather than decode nonsense
            name = char_lm if isinstance(char_lm, (str, os.PathLike)) else _lm_name(char_lm)
            raise HwrError(f"character LM {name}: no {SPACE_TOKEN} token, so not a character LM "
                           "(build one with `hybrid-hwr build-lm --unit char`)")
        char_tokens = char_lm_symbols(symbols)
        if space < 0:
            char_tokens.append("<sp>")
        self._sp_token = space if space >= 0 else K

        if lexicon is None:
            self.mode = "char-lm" if self.char_lm_model is not None else "char"
            tree = build_prefix_tree([[k] for k in range(K)])
            self.words = symbols
            flags = dict(word_gaps=False, line_blanks=self.mode == "char-lm", allow_empty=self.mode == "char-lm")
            prior = math.log(K) if self.mode == "char" and self.uniform_symbol_prior else 0.0
            self._penalty = -self.char_penalty - prior
            word_lm = self.char_lm_model
            lm_tokens = char_tokens
            unk_symbols = ()
        else:
            self.mode = "lexicon"
            all_words = _lexicon_words(lexicon)
            tree, self.words, self.rejected_words = lexicon_tree(all_words, model.alphabet)
            if self.rejected_words:
                self.lexicon_message = describe_rejected(self.rejected_words, len(all_words))
            flags = dict(word_gaps=True, line_blanks=True, allow_empty=True)
            self._penalty = self.word_penalty
            word_lm = self.lm_model
            lm_tokens = self.words
            if word_lm is not None:
                check_vocabulary(word_lm, self.words, str(lm))
            unk_symbols = [k for k in range(K) if k != space] if self.unk_penalty is not None else ()
        # the glue penalty acts between lexicon words only (the lexicon-free "words" are characters)
        self._glue = self.glue_penalty if self.mode == "lexicon" else 0.0
        self._glue_symbol = np.array([_glues(ch) for ch in symbols] + [False], dtype=bool)  # [-1]: no symbol
        self._glue_first = np.array([_glues(w[0]) for w in self.words], dtype=bool)
        self._glue_last = np.array([_glues(w[-1]) for w in self.words], dtype=bool)
        self.tree: PrefixTree = tree
        # the LM is left out of the search when its weight is 0 (scores unchanged, fewer tokens)
        self.scorer = LmScorer(word_lm, lm_tokens) if word_lm is not None else None
        search_scorer = self.scorer if (self.scorer is not None and (self.lm_weight > 0 or unk_symbols)) else None
        self.char_scorer = None
        unk_start = 0
        if unk_symbols:
            self.char_scorer = LmScorer(self.char_lm_model, char_tokens)
            unk_start = self.char_scorer.score(self.char_scorer.NULL, self._sp_token)[1]
        self._unk_start = unk_start
        lookahead = None
        if search_scorer is not None and self.lm_weight > 0:
            unigram = [search_scorer.score(search_scorer.NULL, w)[0] for w in range(len(tree.word_node))]
            lookahead = unigram_lookahead(tree, unigram, self.lm_weight)
        self._lm_scorer = self.scorer if self.scorer is not None else _NoLm()
        net, unit_ids, search_scorer, n_words, options = self._search_network(
            tree, flags, unk_symbols, lookahead, search_scorer, len(lm_tokens))
        # the score's weights (a CTC character loop without LM weighs its empty LM by 1: set above)
        self.objective = Objective(self.lm_weight, self._penalty, self.unk_penalty or 0.0, self._glue)
        self.search = TokenSearch(
            net, unit_ids, objective=self.objective, beam=self.beam,
            max_active=self.max_active, space_prob=transitions.space_prob, blank_prob=transitions.blank_prob,
            word_scorer=search_scorer, n_words=n_words, char_scorer=self.char_scorer,
            n_chars=len(char_tokens), unk_beam=self.unk_beam,
            unk_max_active=self.unk_max_active, unk_start_state=unk_start,
            unk_end_token=self._sp_token, **dict(flags, **options))
        # word posteriors weigh paths by exp(score / lm_weight): the optical scale 1/lm_weight
        # that makes the LM's weight 1 (Kaldi's acoustic scale); 1 without an LM
        self.confidence_scale = 1.0 / self.lm_weight if search_scorer is not None and self.lm_weight > 0 else 1.0
        # lattices, n-best lists and confidences of the search's records
        self.lattices = WordLattices(self.objective, self._lm_scorer, self.words, symbols, net.unk_tok,
                                     self._glue_symbol, self._glue_first, self._glue_last, self._spelling_logp,
                                     self.confidence_scale,
                                     lm_table=self.search.words if search_scorer is self._lm_scorer else None)
        self._spell_cache: dict = {}

    # the character loop's per-symbol term includes the uniform prior -log K
    uniform_symbol_prior = True

    def _search_network(self, tree, flags, unk_symbols, lookahead, search_scorer, n_words):
        """``(network, unit ids, word scorer, word count, TokenSearch options)`` of the search:
        here the HMM network of ``tree`` (another topology may build its own, see
        :mod:`hybrid_hwr.ctc`)."""
        K = len(self.model.alphabet.symbols)
        net, unit_ids = build_network(self.model.topology, self.model.transitions, tree, unk_symbols=unk_symbols,
                                      lookahead=lookahead, glue_symbols=np.flatnonzero(self._glue_symbol[:K]),
                                      **flags)
        return net, unit_ids, search_scorer, n_words, {}

    def _token_symbol(self, token: int) -> int:
        """Symbol id of a search token in the lexicon-free modes."""
        return token

    # ------------------------------------------------------------------ scoring helpers

    def _spelling_logp(self, spelling: str) -> float:
        """ln P_char(spelling <sp> | <sp>) of an out-of-lexicon word."""
        hit = self._spell_cache.get(spelling)
        if hit is None:
            index = self.model.alphabet
            state, hit = self._unk_start, 0.0
            for ch in spelling:
                lp, state = self.char_scorer.score(state, index.index(ch))
                hit += lp
            hit += self.char_scorer.score(state, self._sp_token)[0]
            self._spell_cache[spelling] = hit
        return hit

    def _lm_logp(self, items) -> float:
        """Exact log P_LM of a hypothesis (0 without LM)."""
        scorer = self._lm_scorer
        state, total = scorer.BOS, 0.0
        for it in items:
            lp, state = scorer.score(state, it.token)
            total += lp
            if it.token == -1:
                total += self._spelling_logp(it.text)
        return total + scorer.end_score(state)

    def _n_glued(self, items) -> int:
        """Glued joins of a hypothesis: consecutive words with no frame between them, a
        letter or digit on both sides (0 outside lexicon modes)."""
        if self._glue == 0.0:
            return 0
        return sum(1 for a, b in zip(items, items[1:])
                   if b.start == a.end + 1 and _glues(a.text[-1]) and _glues(b.text[0]))

    def _counts(self, items) -> tuple[int, int, int]:
        """(words, out-of-lexicon words, glued joins) of a hypothesis: the counts of the score's terms."""
        return len(items), sum(1 for it in items if it.token == -1), self._n_glued(items)

    def _alternative(self, items, score) -> Alternative:
        lm = self._lm_logp(items)
        optical = self.objective.optical(score, lm, *self._counts(items))
        return Alternative(self._text(items), float(score), float(optical), float(lm))

    def _text(self, items) -> str:
        if self.mode == "lexicon":
            return " ".join(it.text for it in items)
        return normalize_text("".join(it.text for it in items))

    def _word_boxes(self, items, confidences) -> list[WordBox]:
        if self.mode == "lexicon":
            return [WordBox(it.text, it.start, it.end, confidence=c, oov=it.token == -1)
                    for it, c in zip(items, confidences)]
        space = self.model.topology.space_id
        units = [_Unit(self._token_symbol(it.token), it.start, it.end) for it in items]
        words = words_from_units(units, self.model.alphabet.symbols, space)
        for w in words:     # a spelled word is as sure as its least sure character
            w.confidence = min((c for u, c in zip(units, confidences)
                                if u.symbol != space and w.first_frame <= u.first_frame and u.last_frame <= w.last_frame),
                               default=1.0)
        return words

    # ------------------------------------------------------------------ results

    def _result(self, out, loglik_frames: int) -> Hypothesis:
        fin = out.finals
        if len(fin.score) == 0 or not np.isfinite(fin.score.max()):
            return Hypothesis("", -math.inf, -math.inf, 0.0, n_frames=loglik_frames)
        i = int(np.argmax(fin.score))
        best_items = self.lattices.record_items(out.records, int(fin.rec[i]))
        lattice = self.lattices.build(out, max(LATTICE_BEAM, CONFIDENCE_BEAM / self.confidence_scale))
        # the n-best search rescores the lattice with the exact LM: it may find a better
        # path than the one the pruned search ended with
        found = self.lattices.nbest_search(lattice, max(self.nbest, RESCORE_NBEST))
        scores = np.concatenate([[float(fin.score[i])], found.score])
        alternatives, top_items, seen = [], None, set()
        for j in np.argsort(-scores, kind="stable").tolist():    # the search's best first among equals
            score = float(scores[j])
            items = best_items if j == 0 else self.lattices.path_items(out, lattice, found, j - 1)
            alt = self._alternative(list(items), score)
            if alt.text in seen:
                continue
            seen.add(alt.text)
            alternatives.append(alt)
            if top_items is None:
                top_items = list(items)
            if len(alternatives) == self.nbest:
                break
        top = alternatives[0]
        words = self._word_boxes(top_items, self.lattices.confidences(lattice, top_items))
        return Hypothesis(top.text, top.score, top.optical_score, top.lm_score, n_frames=loglik_frames,
                          words=words, nbest=alternatives)

    # ------------------------------------------------------------------ public

    def decode_loglik(self, loglik: np.ndarray) -> Hypothesis:
        """Best word sequence for an emission matrix (frames x states, natural log)."""
        loglik = np.asarray(loglik, dtype=np.float64)
        S = self.model.topology.n_emitting
        if loglik.ndim != 2 or loglik.shape[1] != S:
            raise HwrError(f"emission scores must have shape (frames, {S}), got {loglik.shape}")
        if len(loglik) == 0:
            return Hypothesis("", -math.inf, -math.inf, 0.0, n_frames=0)
        if not np.all(np.isfinite(loglik)):
            # NaN means "no evidence this state fits": impossible, never propagated
            loglik = np.nan_to_num(loglik, nan=-np.inf, posinf=1e30, neginf=-np.inf)
        out = self.search.run(loglik)
        # pruning may lose every complete hypothesis (e.g. all tokens mid-word at the line end)
        retries = RETRIES if self.mode == "lexicon" else RETRIES + ((math.inf, 8),)
        for beam_factor, active_factor in retries:
            if len(out.finals.score) or out.last is None or len(out.last.score) == 0:
                break
            out = self.search.run(loglik, beam=self.beam * beam_factor, max_active=self.max_active * active_factor,
                                  unk_beam=self.unk_beam * beam_factor,
                                  unk_max_active=self.unk_max_active * active_factor)
        if len(out.finals.score) == 0 and self.mode == "lexicon":
            partial = self._partial(out, loglik)
            if partial is not None:
                return partial
        return self._result(out, len(loglik))

    def _partial(self, out, loglik) -> Hypothesis | None:
        """Best partial traceback, force-aligned: the words of the best token alive at the
        last frame, the word it is reading completed by the first word below its tree node."""
        from .align import path_to_segments, word_spans
        from .hmm import build_line_graph

        last = out.last
        if last is None or len(last.score) == 0:
            return None
        i = int(np.argmax(last.score))
        items = self.lattices.record_items(out.records, int(last.bp[i]))
        net, tree = self.search.net, self.tree
        node = int(net.net_unit[last.net[i]])
        if node < tree.n_nodes:
            while tree.node_word[node] < 0 and tree.first_child[node] >= 0:
                node = int(tree.first_child[node])
            w = int(tree.node_word[node])
            if w >= 0:
                items.append(_Item(self.words[w], w, int(last.start[i]), len(loglik) - 1))
        topology = self.model.topology
        sep = " " if topology.space_id >= 0 else ""
        for candidate in (items, items[:-1]):
            text = sep.join(it.text for it in candidate)
            graph = build_line_graph(topology, self.model.transitions, self.model.alphabet.encode(text))
            optical, path = viterbi(loglik, graph)
            if not np.isfinite(optical):
                continue
            spans = word_spans(path_to_segments(path, graph), graph)
            words = [WordBox(it.text, sp.first_frame, sp.last_frame, confidence=math.nan, oov=it.token == -1)
                     for it, sp in zip(candidate, spans)]
            lm = self._lm_logp(candidate)
            aligned = [_Item(it.text, it.token, sp.first_frame, sp.last_frame) for it, sp in zip(candidate, spans)]
            score = self.objective.total(optical, lm, *self._counts(aligned))
            alt = Alternative(self._text(candidate), float(score), float(optical), float(lm))
            return Hypothesis(alt.text, alt.score, alt.optical_score, alt.lm_score, n_frames=len(loglik),
                              words=words, nbest=[alt])
        return None

    def set_pruning(self, beam: float | None = None, max_active: int | None = None,
                    unk_beam: float | None = None, unk_max_active: int | None = None) -> None:
        """Change the pruning knobs given (None: unchanged) without rebuilding the network or LM caches."""
        for name, value in (("beam", beam), ("unk beam", unk_beam)):
            if value is not None and not value > 0:
                raise HwrError(f"{name} must be > 0, got {value}")
        for name, value in (("max_active", max_active), ("unk_max_active", unk_max_active)):
            if value is not None and int(value) < 1:
                raise HwrError(f"{name} must be >= 1, got {value}")
        if beam is not None:
            self.beam = float(beam)
        if max_active is not None:
            self.max_active = int(max_active)
        if unk_beam is not None:
            self.unk_beam = float(unk_beam)
        if unk_max_active is not None:
            self.unk_max_active = int(unk_max_active)
        self.search.set_pruning(self.beam, self.max_active, self.unk_beam, self.unk_max_active)

    def display_text(self, hypothesis: Hypothesis) -> str:
        """The hypothesis as running text (:meth:`DecoderSettings.display_text` of the settings)."""
        return self.settings.display_text(hypothesis)

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

    def decode_emissions(self, path, on_bad=None, skip=frozenset()):
        """``(line id, Hypothesis)`` for every matrix of an emissions file (:func:`read_emissions`;
        ``on_bad(line id, message)`` gets the arrays that cannot be decoded, which are skipped,
        as are the ids in ``skip``). A hybrid's scores written with another prior scale than
        this recogniser's (the file records it, see :data:`PRIOR_SCALE_ARRAY`) are moved to
        this one, so a file computed before ``tune`` decodes as the images would."""
        shift = self.prior_shift(emissions_prior_scale(path))
        for line_id, loglik in read_emissions(path, self.model.topology.n_emitting, on_bad):
            if line_id in skip:
                continue
            yield line_id, self.decode_loglik(loglik if shift is None else loglik + shift)

    def prior_shift(self, recorded: float | None):
        """(S,) what turns scores of prior scale ``recorded`` (:func:`emissions_prior_scale`)
        into this recogniser's: ``(recorded - kappa) * log p(s)``; None when nothing is to
        change (no recorded scale, the same scale, or a model without state priors)."""
        emission = getattr(self.model, "emission", None)   # a CTC model has none
        kappa = getattr(emission, "prior_scale", None)
        priors = getattr(emission, "log_priors_", None)
        if recorded is None or kappa is None or priors is None or recorded == kappa:
            return None
        return (recorded - kappa) * np.asarray(priors, dtype=np.float64)


@dataclass
class _Unit:
    symbol: int
    first_frame: int
    last_frame: int


# ----------------------------------------------------------------------------- external emissions

# the prior scale a hybrid's scores were written with (`hybrid-hwr emissions`): a (1,) array
# under this name; names starting with "__" are never line ids of an emissions file
PRIOR_SCALE_ARRAY = "__prior_scale__"


def emissions_prior_scale(path) -> float | None:
    """The prior scale recorded in emissions file ``path`` (None: none recorded, or a folder)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            if PRIOR_SCALE_ARRAY not in npz.files:
                return None
            value = np.asarray(npz[PRIOR_SCALE_ARRAY], dtype=np.float64).ravel()
    except (OSError, ValueError, TypeError, zipfile.BadZipFile, EOFError, AttributeError):
        return None     # the readers below report an unreadable file
    if value.shape != (1,) or not math.isfinite(value[0]) or value[0] < 0:
        raise HwrError(f"{path}: its {PRIOR_SCALE_ARRAY} array is not a prior scale (one number >= 0)")
    return float(value[0])


def emission_arrays(path):
    """``(name, array or None, problem or None)`` for every array of an emissions ``.npz``
    archive, or of a folder of ``<name>.npy`` files (sorted by name), in order.

    A missing or unreadable file or folder is an HwrError; an array that cannot be read,
    or is not a 2-d number matrix, comes with its ``problem`` (one line) instead. Names
    starting with ``__`` hold facts about the file (:data:`PRIOR_SCALE_ARRAY`), not lines.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise HwrError(f"{path}: no .npy emission files in this folder")
        for file in files:
            try:
                x = np.load(file, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                yield file.stem, None, f"{file}: unreadable array ({exc})"
                continue
            yield (file.stem, *_matrix(x, f"{file}"))
        return
    if not path.is_file():
        raise HwrError(f"{path}: no such emissions file")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise HwrError(f"{path}: not a readable .npz emissions file ({exc})") from None
    if not hasattr(npz, "files"):
        raise HwrError(f"{path}: not an .npz archive (a single array; save one array per line id)")
    with npz:
        for name in npz.files:
            if name.startswith("__"):
                continue
            try:
                x = npz[name]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
                yield name, None, f"{path}: array {name!r} is unreadable ({exc})"
                continue
            yield (name, *_matrix(x, f"{path}: array {name!r}"))


def _matrix(x, where):
    if x.ndim != 2 or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        return None, (f"{where} must be a (frames, states) matrix of real numbers, got shape {x.shape} "
                      f"dtype {x.dtype}")
    return x.astype(np.float64), None


def read_emissions(path, n_states: int | None = None, on_bad=None):
    """Frame-by-state emission matrices from an ``.npz`` file, in file order.

    Format: a NumPy ``.npz`` archive (``np.savez``/``np.savez_compressed``, no pickled
    objects) holding one array per line, named by the line id, of shape ``(T, S)``:
    ``T`` frames by the model's ``S`` emitting HMM states in the model's state order
    (``HmmTopology.state_offset[k] + j`` is state ``j`` of symbol ``k``). Values are
    natural-log emission scores, e.g. a GMM's log-likelihoods or a network's scaled
    log-likelihoods ``log p(s | x) - prior_scale * log p(s)``; NaN counts as impossible.
    A ``(0, S)`` array is a line with no frames (the empty result).
    Yields ``(line id, float64 array)``; HwrError for a missing or unreadable file, and for
    an unreadable, badly shaped or complex array unless ``on_bad(line id, message)`` is
    given: that array is then reported to it and skipped, and the others are still read.
    """
    for name, x, problem in emission_arrays(path):
        if problem is None and n_states is not None and x.shape[1] != n_states:
            problem = f"{path}: array {name!r} has {x.shape[1]} states, the model has {n_states}"
        if problem is None:
            yield name, x
        elif on_bad is None:
            raise HwrError(problem)
        else:
            on_bad(name, problem)


def _lm_name(lm) -> str:
    """The file a loaded KenLM model was read from (for messages)."""
    path = getattr(lm, "path", None)
    return path.decode("utf-8", "replace") if isinstance(path, bytes) else str(path or lm)
