"""The emission interface: GMM and MLP emissions are Emissions, CTC outputs EmissionScores."""

import numpy as np
import pytest

from hybrid_hwr.ctc import CtcModel
from hybrid_hwr.emission import EMISSION_TYPES, Emission, EmissionScores, emission_class
from hybrid_hwr.errors import HwrError
from hybrid_hwr.gmm import GmmSet
from hybrid_hwr.mlp import MlpEmission


def _gmms():
    rng = np.random.default_rng(3)
    return GmmSet(rng.normal(size=(4, 2, 3)), rng.uniform(0.5, 2, size=(4, 2, 3)), np.log(np.full((4, 2), 0.5)))


def test_gmm_is_an_emission_and_round_trips():
    gmms = _gmms()
    assert isinstance(gmms, Emission) and gmms.emission_type == "gmm" and gmms.prior_scale is None
    arrays, meta = gmms.save()
    back = emission_class("gmm").load(arrays, meta)
    X = np.random.default_rng(4).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(back.log_likelihoods(X), gmms.log_likelihoods(X))
    assert back.log_likelihoods(X).shape == (7, gmms.n_states)


def test_mlp_is_an_emission_and_round_trips():
    rng = np.random.default_rng(5)
    feats = [rng.normal(size=(40, 3)).astype(np.float32) for _ in range(3)]
    targets = [rng.integers(0, 4, size=40).astype(np.int32) for _ in range(3)]
    mlp = MlpEmission(hidden_layers=(8,), context=1, max_epochs=1, seed=1).fit(feats, targets, n_states=4)
    assert isinstance(mlp, Emission) and mlp.emission_type == "mlp" and mlp.prior_scale == 1.0
    back = emission_class("mlp").load(*mlp.save())
    np.testing.assert_array_equal(back.log_likelihoods(feats[0]), mlp.log_likelihoods(feats[0]))
    assert back.n_states == 4


def test_ctc_outputs_are_emission_scores_only():
    model = CtcModel(["<blank>", " ", "a", "b"])
    assert isinstance(model, EmissionScores) and not isinstance(model, Emission)
    assert model.n_states == 4 and model.log_likelihoods(np.full((2, 4), 0.25)).shape == (2, 4)   # a, b, space, blank


def test_unknown_emission_type_is_one_error():
    assert set(EMISSION_TYPES) == {"gmm", "mlp"}
    with pytest.raises(HwrError, match="unknown emission type 'svm'"):
        emission_class("svm")
