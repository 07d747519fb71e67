"""What an emission model is: the interface the HMMs, the decoder and the model directory use.

An emission model turns the normalised features of a line, ``(T, D)``, into one score per
frame and emitting HMM state, ``(T, S)``, in natural-log space: ``log p(x_t | s)`` for a
GMM, the scaled likelihood ``log p(s | x_t) - kappa log p(s)`` for a hybrid network.
Alignment (:mod:`hybrid_hwr.align`), training and decoding only ever call
:meth:`EmissionScores.log_likelihoods`, so any object with these members works there.

Two levels:

* :class:`EmissionScores` -- scoring only: ``emission_type``, ``n_states``,
  ``log_likelihoods``. CTC network outputs (:class:`hybrid_hwr.ctc.CtcModel`) are this.
* :class:`Emission` -- a trained model stored in a model directory: also
  ``prior_scale`` (None for a model without state priors), ``save()`` and the class
  method ``load(arrays, meta)``. :class:`hybrid_hwr.gmm.GmmSet` and
  :class:`hybrid_hwr.mlp.MlpEmission` are this.

A new emission model: a class with these members, its ``emission_type`` added to
:data:`EMISSION_TYPES` (so ``load_model`` finds it), and, if it needs decoder defaults of
its own, an entry in :data:`hybrid_hwr.decode.CALIBRATED`.
"""

from __future__ import annotations

import importlib
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from .errors import HwrError

# emission_type (as written in model.json) -> "module:class" of its Emission
EMISSION_TYPES = {
    "gmm": "hybrid_hwr.gmm:GmmSet",
    "mlp": "hybrid_hwr.mlp:MlpEmission",   # imported when first needed: GMM-only users never load it
}


@runtime_checkable
class EmissionScores(Protocol):
    """Per-frame, per-state log-space scores of feature frames."""

    emission_type: str    # a key of EMISSION_TYPES (or "ctc"): model.json's emission_type, CALIBRATED's

    @property
    def n_states(self) -> int:
        """Number S of emitting HMM states scored (columns of :meth:`log_likelihoods`)."""

    def log_likelihoods(self, features: np.ndarray) -> np.ndarray:
        """(T, S) float64 natural-log scores of (T, D) features; never NaN."""


@runtime_checkable
class Emission(EmissionScores, Protocol):
    """An emission model that a model directory stores (see :mod:`hybrid_hwr.model`)."""

    prior_scale: float | None    # kappa of scaled likelihoods; None: the model has no state priors

    def log_likelihoods(self, features: np.ndarray, states=None) -> np.ndarray:
        """(T, S) scores, or (T, len(states)) of the given states only (what the aligner asks for)."""

    def save(self) -> tuple[dict, dict]:
        """``(arrays, meta)``: NumPy arrays for the model's ``.npz`` and a JSON-safe description."""

    @classmethod
    def load(cls, arrays: Mapping, meta: Mapping) -> "Emission":
        """Inverse of :meth:`save`; one-line HwrError for anything missing or corrupt."""


def emission_class(emission_type: str) -> type:
    """The :class:`Emission` class of ``emission_type`` (HwrError for an unknown type)."""
    try:
        module, name = EMISSION_TYPES[emission_type].split(":")
    except (KeyError, TypeError):
        raise HwrError(f"unknown emission type {emission_type!r} in model") from None
    return getattr(importlib.import_module(module), name)
