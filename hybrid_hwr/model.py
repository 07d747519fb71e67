"""A trained recogniser on disk: one directory, a JSON description plus NumPy arrays.

Layout of a model directory::

    model.json            format version, alphabet, HMM topology, front-end configuration,
                          feature normalisation, emission type, training history, and the
                          name and SHA-256 of the arrays file
    arrays-<sha8>.npz     transition and emission parameters (no pickle)

Saving is atomic: the arrays go to a new content-named file, then ``model.json`` is
replaced in one ``os.replace``; a crash at any moment leaves either the old model or
the new one, never a mixture. Loading checks the version, the checksum, every shape
and every value, and reports any problem as one :class:`HwrError` line.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .data import Alphabet
from .errors import HwrError
from .features import FrontEnd, Normalizer
from .emission import Emission, emission_class
from .fileio import atomic_write_bytes
from .hmm import HmmTopology, Transitions

FORMAT_VERSION = 1
MODEL_FILE = "model.json"


@dataclass
class AlignedSpan:
    """A character or word of a forced alignment: its frames and its pixels in the image."""

    text: str
    first_frame: int
    last_frame: int
    x_start: float
    x_end: float


@dataclass
class LineAlignment:
    """Forced alignment of one line image with its transcription (:meth:`HwrModel.align`)."""

    text: str
    score: float            # log p(x, best path | text)
    n_frames: int
    states: np.ndarray      # (T,) emitting HMM state of every frame
    chars: list             # AlignedSpan per character (the spaces the path visits included)
    words: list             # AlignedSpan per word


@dataclass
class HwrModel:
    """Everything needed to turn a line image into per-state emission scores.

    The object a notebook works with: ``HwrModel.fit(lines)`` (or ``hybrid_hwr.train``)
    trains one, ``load_model(dir)`` / ``model.save(dir)`` read and write a model directory,
    ``model.recognizer(settings)`` decodes with it, ``model.align(image, text)`` aligns.
    """

    alphabet: Alphabet
    frontend: FrontEnd
    normalizer: Normalizer
    topology: HmmTopology
    transitions: Transitions
    emission: Emission  # GmmSet, MlpEmission or MlpEnsemble (hybrid_hwr.emission)
    history: dict = field(default_factory=dict)
    # the directory it was loaded from or saved to (its decoder.json gives recognizer()'s defaults)
    directory: Path | None = field(default=None, compare=False, repr=False)

    @classmethod
    def fit(cls, lines, valid=None, **options) -> "HwrModel":
        """Train a model on ``lines`` (:class:`hybrid_hwr.data.Line` list, or a split file's
        path): see :func:`hybrid_hwr.train.fit` for the options."""
        from .train import fit

        return fit(lines, valid, **options)

    def save(self, directory: str | os.PathLike, settings=None) -> Path:
        """Write the model into ``directory`` (atomically), and ``settings`` (a
        :class:`hybrid_hwr.decode.DecoderSettings`) as its decoder.json; returns the directory."""
        directory = save_model(self, directory)
        if settings is not None:
            settings.save(directory)
        self.directory = directory
        return directory

    @property
    def recognizer_class(self) -> type:
        from .decode import Recognizer

        return Recognizer

    def decoder_settings(self):
        """The :class:`hybrid_hwr.decode.DecoderSettings` of the model's decoder.json (a
        character loop when there is none, or the model has no directory)."""
        from .decode import DecoderSettings

        return DecoderSettings.load(self.directory) if self.directory is not None else DecoderSettings()

    def recognizer(self, settings=None, **knobs):
        """A :class:`hybrid_hwr.decode.Recognizer` for this model: ``settings`` (default:
        :meth:`decoder_settings`) with ``knobs`` (e.g. ``lexicon=..., lm=..., nbest=5``)
        replaced; unset weights and penalties take the calibrated values of the model's kind."""
        settings = self.decoder_settings() if settings is None else settings
        return self.recognizer_class(self, settings.replace(**knobs) if knobs else settings)

    def align(self, image, text: str) -> LineAlignment:
        """Forced alignment of a line image (a gray/RGB array, or an image file's path) with
        its transcription; HwrError if ``text`` holds characters the model does not know or
        the line has too few frames for it."""
        from .align import force_align
        from .data import load_image
        from .decode import frames_to_pixels

        gray = load_image(image) if isinstance(image, (str, os.PathLike)) else image
        ids = self.alphabet.encode(text)
        feats, line = self.features(gray)
        result = force_align(self.emission, self.topology, self.transitions, feats, ids)
        if result is None:
            raise HwrError(f"{len(feats)} frames cannot hold the transcription {text!r}")

        def span(piece, first, last):
            return AlignedSpan(piece, int(first), int(last), *frames_to_pixels(self, line, len(feats), first, last))

        chars = [span(text[c.char_index], c.first_frame, c.last_frame) for c in result.chars]
        words = [span(text[w.first_char:w.last_char + 1], w.first_frame, w.last_frame) for w in result.words]
        return LineAlignment(text, result.score, len(feats), result.states, chars, words)

    @property
    def emission_type(self) -> str:
        return self.emission.emission_type

    def features(self, gray: np.ndarray):
        """Normalised features (T, D) and the preprocessed line of one gray image."""
        feats, line = self.frontend.line_features(gray)
        return self.normalizer.transform(feats).astype(np.float32), line

    def log_likelihoods(self, feats: np.ndarray) -> np.ndarray:
        """Emission log-likelihoods (T, S) of normalised features for every HMM state."""
        return self.emission.log_likelihoods(feats)

    def with_prior_scale(self, prior_scale: float) -> "HwrModel":
        """This model with the hybrid's scaled likelihoods log p(s|x) - prior_scale * log p(s).

        kappa (``prior_scale``) is a decoding knob, tuned on validation lines like the LM
        weight: 1 divides by the priors fully, 0 keeps the plain posteriors. The copy shares
        the network weights. HwrError for a GMM model, whose likelihoods have no priors.
        """
        if self.emission.prior_scale is None:
            raise HwrError(f"prior scale {prior_scale!r} (--prior-scale or decoder.json's prior_scale) applies to "
                           f"hybrid MLP models only; this model has {self.emission_type} emissions")
        if isinstance(prior_scale, bool) or not isinstance(prior_scale, (int, float)) \
                or not math.isfinite(prior_scale) or prior_scale < 0:
            raise HwrError(f"the prior scale must be a finite number >= 0, got {prior_scale!r}")
        emission = copy.copy(self.emission)
        emission.prior_scale = float(prior_scale)
        return replace(self, emission=emission)


def ensemble_model(models: list[HwrModel], names: list[str] | None = None) -> HwrModel:
    """One hybrid whose emission is the mean of these hybrids' scaled likelihoods
    (:class:`hybrid_hwr.mlp.MlpEnsemble`); the first model gives the transitions.

    The networks must score the same states of the same front end: the same alphabet,
    topology, features and feature normalisation, i.e. networks trained on the alignments of
    one HMM (``train --emission mlp --init-model`` of the same model, with another seed, data
    or shape). An ensemble given as a member adds its networks. HwrError names the first
    model that differs.
    """
    from .mlp import MlpEnsemble

    names = names or [f"model {k + 1}" for k in range(len(models))]
    if len(models) < 2:
        raise HwrError(f"an ensemble needs at least 2 models, got {len(models)}")
    first = models[0]
    members = []
    for model, name in zip(models, names):
        if model.emission.prior_scale is None:
            raise HwrError(f"{name}: a {model.emission_type.upper()}-HMM; an ensemble averages hybrid MLP-HMMs")
        for what, mine, theirs in (
                ("alphabet", model.alphabet.to_json(), first.alphabet.to_json()),
                ("HMM topology", model.topology.to_dict(), first.topology.to_dict()),
                ("front end", model.frontend.to_dict(), first.frontend.to_dict()),
                ("feature normalisation", model.normalizer.to_dict(), first.normalizer.to_dict())):
            if mine != theirs:
                raise HwrError(f"{name}: its {what} is not the one of {names[0]}; the networks of an ensemble "
                               f"must be trained on the alignments of the same HMM")
        members.extend(getattr(model.emission, "members", [model.emission]))
    history = {"ensemble": [{"model": name, "history": model.history} for model, name in zip(models, names)]}
    return replace(first, emission=MlpEnsemble(members, prior_scale=first.emission.prior_scale),
                   history=history, directory=None)


def save_model(model: HwrModel, directory: str | os.PathLike) -> Path:
    """Write ``model`` into ``directory`` atomically; return the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"transitions/{k}": v for k, v in model.transitions.to_arrays().items()}
    emission_arrays, emission_meta = model.emission.save()
    arrays.update({f"emission/{k}": v for k, v in emission_arrays.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    arrays_name = f"arrays-{digest[:8]}.npz"
    existed = (directory / MODEL_FILE).is_file()
    kept = "the model saved before is kept" if existed else "no model saved"
    fresh = not (directory / arrays_name).exists()
    atomic_write_bytes(directory / arrays_name, payload, kept)
    description = {
        "format": "hybrid_hwr-model",
        "format_version": FORMAT_VERSION,
        "alphabet": model.alphabet.to_json(),
        "frontend": model.frontend.to_dict(),
        "normalizer": model.normalizer.to_dict(),
        "topology": model.topology.to_dict(),
        "emission_type": model.emission_type,
        "emission_meta": emission_meta,
        "history": model.history,
        "arrays_file": arrays_name,
        "arrays_sha256": digest,
    }
    text = json.dumps(description, indent=1, ensure_ascii=False, allow_nan=False)
    try:
        atomic_write_bytes(directory / MODEL_FILE, text.encode("utf-8"), kept)
    except BaseException:
        if fresh:   # the new arrays belong to no description: free their room
            (directory / arrays_name).unlink(missing_ok=True)
        raise
    for stale in directory.glob("arrays-*.npz"):
        if stale.name != arrays_name:
            stale.unlink(missing_ok=True)
    return directory


def load_model(directory: str | os.PathLike, _retried: bool = False) -> HwrModel:
    """Read and check a model directory written by :func:`save_model`."""
    directory = Path(directory)
    where = f"model {directory}"
    if not directory.is_dir():
        raise HwrError(f"{where}: not a directory")
    try:
        description = json.loads((directory / MODEL_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise HwrError(f"{where}: no {MODEL_FILE} (not a hybrid_hwr model directory)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HwrError(f"{where}: {MODEL_FILE} is corrupt ({exc})") from None
    if not isinstance(description, dict) or description.get("format") != "hybrid_hwr-model":
        raise HwrError(f"{where}: {MODEL_FILE} is not a hybrid_hwr model description")
    version = description.get("format_version")
    if version != FORMAT_VERSION:
        raise HwrError(f"{where}: format version {version!r}, this hybrid_hwr reads version {FORMAT_VERSION}")
    try:
        arrays_path = directory / description["arrays_file"]
        payload = arrays_path.read_bytes()
    except KeyError as exc:
        raise HwrError(f"{where}: {MODEL_FILE} lacks the field {exc}") from None
    except OSError:
        # a training run may have replaced the model between our two reads: read it again once
        if not _retried:
            return load_model(directory, _retried=True)
        raise HwrError(f"{where}: arrays file {description['arrays_file']} is missing") from None
    if hashlib.sha256(payload).hexdigest() != description.get("arrays_sha256"):
        raise HwrError(f"{where}: {arrays_path.name} does not match its checksum (truncated or modified)")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        transitions = Transitions.from_arrays(_strip_prefix(arrays, "transitions/"))
        emission = emission_class(description["emission_type"]).load(
            _strip_prefix(arrays, "emission/"), description.get("emission_meta", {}))
        model = HwrModel(
            alphabet=Alphabet.from_json(description["alphabet"]),
            frontend=FrontEnd.from_dict(description["frontend"]),
            normalizer=Normalizer.from_dict(description["normalizer"]),
            topology=HmmTopology.from_dict(description["topology"]),
            transitions=transitions,
            emission=emission,
            history=description.get("history", {}),
        )
    except HwrError as exc:
        raise HwrError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise HwrError(f"{where}: inconsistent model ({type(exc).__name__}: {exc})") from None
    except (zipfile.BadZipFile, EOFError, OSError) as exc:   # a damaged file whose checksum was recomputed
        raise HwrError(f"{where}: {arrays_path.name} is corrupt ({exc})") from None
    _check_consistency(model, where)
    model.directory = directory
    return model


def _strip_prefix(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _check_consistency(model: HwrModel, where: str) -> None:
    n_states = model.topology.n_emitting
    if len(model.transitions.log_self) != n_states:
        raise HwrError(f"{where}: {len(model.transitions.log_self)} transition states, topology has {n_states}")
    emission_states = model.emission.n_states
    if emission_states != n_states:
        raise HwrError(f"{where}: emission model has {emission_states} states, topology has {n_states}")
    if list(model.topology.symbols) != list(model.alphabet.symbols):
        raise HwrError(f"{where}: HMM symbols do not match the alphabet")
