"""MLP emissions: learning planted mappings, backprop against finite differences, regularisation, priors, storage."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from hybrid_hwr.errors import HwrError
from hybrid_hwr.mlp import (ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ContextFrames, MlpEmission, _Optimizer, backward,
                             dropout_masks, epoch_sample, forward, log_softmax, state_log_priors)

SMALL = dict(hidden_layers=(32,), batch_size=64, learning_rate=3e-3, max_epochs=25, patience=3)


def cluster_lines(rng, n_lines, centres, noise=0.3, lengths=(20, 60)):
    """Lines of frames drawn around the centre of their state; states are random per frame."""
    feats, targets = [], []
    for _ in range(n_lines):
        y = rng.integers(0, len(centres), size=int(rng.integers(*lengths)))
        feats.append((centres[y] + noise * rng.normal(size=(len(y), centres.shape[1]))).astype(np.float32))
        targets.append(y)
    return feats, targets


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(1)
    centres = 3.0 * rng.normal(size=(6, 5))
    train = cluster_lines(rng, 50, centres)
    valid = cluster_lines(rng, 15, centres)
    return train, valid


@pytest.fixture(scope="module")
def fitted(planted):
    (tf, ty), (vf, vy) = planted
    return MlpEmission(context=1, **SMALL).fit(tf, ty, vf, vy, n_states=6)


def test_learns_planted_frame_to_state_mapping(fitted, planted):
    (_, _), (vf, vy) = planted
    assert fitted.frame_error_rate(vf, vy) < 0.02
    history = fitted.history_
    assert history[0]["valid_fer"] > history[fitted.best_epoch_ - 1]["valid_fer"]
    for record in history:
        assert 0 <= record["train_fer"] <= 1 and 0 <= record["valid_fer"] <= 1
        assert record["train_loss"] > 0 and record["valid_loss"] > 0
    # The weights kept are those of the best validation epoch.
    best = history[fitted.best_epoch_ - 1]["valid_fer"]
    assert fitted.frame_error_rate(vf, vy) == pytest.approx(best)
    assert best == min(r["valid_fer"] for r in history)


def test_newbob_halves_the_rate_and_stops_when_validation_fer_stalls(planted):
    (tf, ty), (vf, vy) = planted
    model = MlpEmission(context=0, **{**SMALL, "max_epochs": 60, "patience": 2, "min_improvement": 0.01})
    model.fit(tf, ty, vf, vy, n_states=6)
    history = model.history_
    assert len(history) < 60  # stopped early
    assert not history[-1]["improved"] and not history[-2]["improved"]
    for before, after in zip(history, history[1:]):
        expected = before["learning_rate"] * (1.0 if before["improved"] else 0.5)
        assert after["learning_rate"] == pytest.approx(expected)


def test_next_frame_mapping_needs_context():
    """Target of frame t = cluster of frame t+1 (the last frame: its own): learnt only with k >= 1."""
    rng = np.random.default_rng(2)
    centres = 3.0 * rng.normal(size=(4, 3))

    def lines(n):
        feats, targets = cluster_lines(rng, n, centres)
        shifted = []
        for f in feats:
            own = np.argmin(((f[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
            shifted.append(np.concatenate([own[1:], own[-1:]]))
        return feats, shifted

    (tf, ty), (vf, vy) = lines(50), lines(15)
    with_context = MlpEmission(context=1, **SMALL).fit(tf, ty, vf, vy, n_states=4)
    without = MlpEmission(context=0, **SMALL).fit(tf, ty, vf, vy, n_states=4)
    assert with_context.frame_error_rate(vf, vy) < 0.03
    assert without.frame_error_rate(vf, vy) > 0.5  # the next cluster is independent of this frame


def test_context_windows_repeat_edge_frames():
    a = np.arange(3 * 2, dtype=np.float32).reshape(3, 2)
    b = 100 + np.arange(2 * 2, dtype=np.float32).reshape(2, 2)
    frames = ContextFrames([a, b], context=2)
    X = frames.batch(np.arange(5))
    expected_a0 = np.concatenate([a[0], a[0], a[0], a[1], a[2]])
    expected_a2 = np.concatenate([a[0], a[1], a[2], a[2], a[2]])
    expected_b0 = np.concatenate([b[0], b[0], b[0], b[1], b[1]])
    np.testing.assert_array_equal(X[0], expected_a0)
    np.testing.assert_array_equal(X[2], expected_a2)
    np.testing.assert_array_equal(X[3], expected_b0)
    assert X.shape == (5, 10) and X.dtype == np.float32
    # Normalisation and clipping apply before stacking.
    frames = ContextFrames([b], context=1, mean=np.float32([100, 100]), scale=np.float32([1, 0.5]), clip=1.2)
    np.testing.assert_allclose(frames.batch(np.array([1])), [[0, 0.5, 1.2, 1.2, 1.2, 1.2]])


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_backprop_matches_finite_differences(activation):
    rng = np.random.default_rng(3)
    sizes = [7, 5, 4, 6]
    weights = [rng.normal(size=(a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.normal(size=b) for b in sizes[1:]]
    X = rng.normal(size=(9, sizes[0]))
    y = rng.integers(0, sizes[-1], size=9)
    decay = 0.01
    _, _, grad_w, grad_b = backward(weights, biases, X, y, activation, decay)
    eps = 1e-6
    for params, grads in ((weights, grad_w), (biases, grad_b)):
        for p, g in zip(params, grads):
            numeric = np.empty_like(p)
            for index in np.ndindex(p.shape):
                old = p[index]
                p[index] = old + eps
                up = backward(weights, biases, X, y, activation, decay)[0]
                p[index] = old - eps
                down = backward(weights, biases, X, y, activation, decay)[0]
                p[index] = old
                numeric[index] = (up - down) / (2 * eps)
            np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


def hand_made(prior_scale=1.0):
    """A 1-feature, no-hidden-layer-effect network whose posteriors are (0.5, 0.25, 0.25) everywhere."""
    arrays = {"weights_0": np.zeros((1, 2), np.float32), "biases_0": np.zeros(2, np.float32),
              "weights_1": np.zeros((2, 3), np.float32), "biases_1": np.log([0.5, 0.25, 0.25]).astype(np.float32),
              "log_priors": np.log([0.25, 0.25, 0.5]), "input_mean": np.zeros(1, np.float32),
              "input_scale": np.ones(1, np.float32)}
    params = {**MlpEmission().get_params(), "hidden_layers": [2], "context": 0, "prior_scale": prior_scale}
    meta = {"format": "hybrid_hwr-mlp", "params": params, "layer_sizes": [1, 2, 3], "n_dims": 1, "history": []}
    return arrays, meta


def test_dividing_by_priors_gives_scaled_likelihoods():
    arrays, meta = hand_made()
    model = MlpEmission.from_arrays(arrays, meta)
    X = np.array([[0.0], [5.0]])
    np.testing.assert_allclose(np.exp(model.predict_log_proba(X)), [[0.5, 0.25, 0.25]] * 2, rtol=1e-6)
    # p(s|x) / p(s) = 0.5/0.25, 0.25/0.25, 0.25/0.5
    np.testing.assert_allclose(model.log_likelihoods(X), np.log([[2.0, 1.0, 0.5]] * 2), atol=1e-6)
    np.testing.assert_allclose(model.log_likelihoods(X, states=[2, 0]), np.log([[0.5, 2.0]] * 2), atol=1e-6)
    model.prior_scale = 0.5  # p(s|x) / p(s)^0.5
    np.testing.assert_allclose(model.log_likelihoods(X)[0], np.log([0.5 / 0.5, 0.25 / 0.5, 0.25 / 0.5 ** 0.5]),
                               atol=1e-6)
    model.prior_scale = 0.0
    np.testing.assert_allclose(model.log_likelihoods(X), model.predict_log_proba(X))


def test_priors_are_alignment_frequencies_with_a_floor(planted):
    np.testing.assert_allclose(np.exp(state_log_priors(np.array([0] * 6 + [1] * 3 + [2]), 3)), [0.6, 0.3, 0.1])
    floored = np.exp(state_log_priors(np.array([0, 0, 1, 1, -1]), 3, floor=0.01))
    np.testing.assert_allclose(floored, np.array([0.5, 0.5, 0.01]) / 1.01)
    # fit takes them from the training targets (frames without target ignored)
    (tf, ty), (vf, vy) = planted
    ty = [t.copy() for t in ty]
    ty[0][:5] = -1
    model = MlpEmission(context=0, **{**SMALL, "max_epochs": 1}).fit(tf, ty, vf, vy, n_states=7)
    all_y = np.concatenate(ty)
    counts = np.bincount(all_y[all_y >= 0], minlength=7)
    expected = np.maximum(counts / counts.sum(), model.prior_floor)
    np.testing.assert_allclose(np.exp(model.log_priors_), expected / expected.sum())
    assert model.n_states == 7


def test_round_trip_gives_identical_scores(fitted, planted):
    (_, _), (vf, _) = planted
    arrays, meta = fitted.to_arrays(), fitted.meta()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as npz:
        loaded = MlpEmission.from_arrays(dict(npz), json.loads(json.dumps(meta, allow_nan=False)))
    assert loaded.emission_type == "mlp" and loaded.n_states == fitted.n_states
    assert loaded.history_ == fitted.history_ and loaded.best_epoch_ == fitted.best_epoch_
    for X in vf[:3]:
        np.testing.assert_array_equal(loaded.log_likelihoods(X), fitted.log_likelihoods(X))
    assert loaded.log_likelihoods(vf[0]).dtype == np.float64


@pytest.mark.parametrize("corrupt", [
    lambda a, m: a.pop("weights_1"),
    lambda a, m: a.update(weights_0=np.zeros((3, 2), np.float32)),
    lambda a, m: a["biases_1"].__setitem__(0, np.nan),
    lambda a, m: a.update(log_priors=np.log([0.5, 0.5, 0.5])),
    lambda a, m: a.update(input_scale=np.zeros(1, np.float32)),
    lambda a, m: a.update(weights_2=np.zeros((3, 3), np.float32)),
    lambda a, m: a.update(biases_0=np.array(["x", "y"])),
    lambda a, m: m.pop("layer_sizes"),
    lambda a, m: m.update(layer_sizes=[1, 4, 3]),
    lambda a, m: m.update(format="gmm"),
    lambda a, m: m["params"].update(activation="softsign"),
    lambda a, m: m["params"].update(context=2),
    lambda a, m: m["params"].update(bogus=1),
])
def test_corrupt_model_data_gives_one_clear_error(corrupt):
    arrays, meta = hand_made()
    corrupt(arrays, meta)
    with pytest.raises(HwrError) as error:
        MlpEmission.from_arrays(arrays, meta)
    assert "\n" not in str(error.value) and str(error.value)


def test_same_seed_same_weights_other_seed_other_weights(planted):
    (tf, ty), (vf, vy) = planted
    params = {**SMALL, "hidden_layers": (16, 16), "max_epochs": 2}
    a = MlpEmission(seed=5, **params).fit(tf, ty, vf, vy, n_states=6).to_arrays()
    b = MlpEmission(seed=5, **params).fit(tf, ty, vf, vy, n_states=6).to_arrays()
    c = MlpEmission(seed=6, **params).fit(tf, ty, vf, vy, n_states=6).to_arrays()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["weights_0"], c["weights_0"])


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_never_nan_on_extreme_inputs(planted, activation):
    (tf, ty), (vf, vy) = planted
    model = MlpEmission(context=2, activation=activation, **{**SMALL, "max_epochs": 2}).fit(tf, ty, vf, vy, n_states=6)
    X = np.array([[1e30] * 5, [-1e30] * 5, [0.0] * 5, [3e38, -3e38, 1e-40, 0, 7]], dtype=np.float32)
    scores = model.log_likelihoods(X)
    assert scores.shape == (4, 6) and np.isfinite(scores).all()
    assert np.isfinite(model.log_likelihoods(X[:1])).all()  # a one-frame line
    assert model.log_likelihoods(X[:0]).shape == (0, 6)
    with pytest.raises(HwrError):
        model.log_likelihoods(np.array([[np.nan] * 5]))
    with pytest.raises(HwrError):
        model.log_likelihoods(np.zeros((3, 4)))


def test_sgd_with_momentum_and_sigmoid_deep_net_learn(planted):
    (tf, ty), (vf, vy) = planted
    model = MlpEmission(hidden_layers=(24, 24, 24), context=0, activation="tanh", solver="sgd", learning_rate=0.05,
                        batch_size=32, max_epochs=15, weight_decay=1e-5).fit(tf, ty, vf, vy, n_states=6)
    assert model.layer_sizes == [5, 24, 24, 24, 6]
    assert model.frame_error_rate(vf, vy) < 0.05


def test_held_out_lines_and_warm_start(planted):
    (tf, ty), _ = planted
    model = MlpEmission(context=0, **{**SMALL, "max_epochs": 2, "patience": 0})
    records = []
    model.fit(tf, ty, n_states=6, on_epoch=lambda m, r: records.append(r["epoch"]))
    assert records == [1, 2] and len(model.history_) == 2
    assert model.history_[0]["train_frames"] < sum(len(t) for t in ty)  # lines were held out
    model.warm_start, model.max_epochs = True, 4
    model.fit(tf, ty, n_states=6)
    assert [r["epoch"] for r in model.history_] == [1, 2, 3, 4]


def test_too_few_lines_to_hold_out_validates_on_training_frames(planted):
    (tf, ty), _ = planted
    model = MlpEmission(context=1, **{**SMALL, "max_epochs": 3}).fit(tf[:3], ty[:3], n_states=6)
    assert model.history_[0]["train_frames"] == sum(len(t) for t in ty[:3])
    assert np.isfinite(model.log_likelihoods(tf[0])).all()


def test_bad_training_input_gives_clear_errors(planted):
    (tf, ty), (vf, vy) = planted
    with pytest.raises(HwrError, match="frames but targets"):
        MlpEmission(**SMALL).fit(tf, [t[:-1] for t in ty], vf, vy)
    with pytest.raises(HwrError, match="target state ids"):
        MlpEmission(**SMALL).fit(tf, ty, vf, vy, n_states=3)
    with pytest.raises(HwrError, match="activation"):
        MlpEmission(activation="softsign").fit(tf, ty, vf, vy)
    bad = [f.copy() for f in tf]
    bad[1][0, 0] = np.inf
    with pytest.raises(HwrError, match="NaN or infinite"):
        MlpEmission(**SMALL).fit(bad, ty, vf, vy)


def test_model_directory_holding_an_mlp_loads_and_rejects_corruption(tmp_path):
    from hybrid_hwr.data import Alphabet
    from hybrid_hwr.features import FrontEnd, Normalizer
    from hybrid_hwr.hmm import HmmTopology, Transitions
    from hybrid_hwr.model import MODEL_FILE, HwrModel, load_model, save_model

    rng = np.random.default_rng(4)
    alphabet = Alphabet.from_texts(["ab a"])
    topology = HmmTopology(alphabet.symbols, n_states=2)
    feats = [rng.normal(size=(30, 56)).astype(np.float32) for _ in range(4)]
    targets = [rng.integers(0, topology.n_emitting, size=30) for _ in feats]
    mlp = MlpEmission(hidden_layers=(8,), context=1, max_epochs=2).fit(feats, targets, n_states=topology.n_emitting)
    model = HwrModel(alphabet, FrontEnd(), Normalizer().fit(feats), topology, Transitions(topology), mlp)

    save_model(model, tmp_path / "good")
    loaded = load_model(tmp_path / "good")
    assert loaded.emission_type == "mlp"
    np.testing.assert_array_equal(loaded.log_likelihoods(feats[0]), mlp.log_likelihoods(feats[0]))

    mlp.weights_[0][0, 0] = np.nan  # saved as is: loading must refuse it
    save_model(model, tmp_path / "nan")
    with pytest.raises(HwrError, match="weights_0.*NaN") as error:
        load_model(tmp_path / "nan")
    assert "\n" not in str(error.value)

    description = json.loads((tmp_path / "good" / MODEL_FILE).read_text())
    description["emission_meta"]["layer_sizes"][1] = 9
    (tmp_path / "good" / MODEL_FILE).write_text(json.dumps(description))
    with pytest.raises(HwrError, match="layer sizes"):
        load_model(tmp_path / "good")


# --- regularisation ------------------------------------------------------------------------


def finite_difference_check(weights, biases, X, y, activation, decay, masks):
    _, _, grad_w, grad_b = backward(weights, biases, X, y, activation, decay, masks)
    eps = 1e-6
    for params, grads in ((weights, grad_w), (biases, grad_b)):
        for p, g in zip(params, grads):
            numeric = np.empty_like(p)
            for index in np.ndindex(p.shape):
                old = p[index]
                p[index] = old + eps
                up = backward(weights, biases, X, y, activation, decay, masks)[0]
                p[index] = old - eps
                down = backward(weights, biases, X, y, activation, decay, masks)[0]
                p[index] = old
                numeric[index] = (up - down) / (2 * eps)
            np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_backprop_with_fixed_dropout_masks_matches_finite_differences(activation):
    rng = np.random.default_rng(4)
    sizes = [7, 6, 5, 4]
    weights = [rng.normal(size=(a, b)) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.normal(size=b) for b in sizes[1:]]
    X = rng.normal(size=(9, sizes[0]))
    y = rng.integers(0, sizes[-1], size=9)
    masks = [m.astype(np.float64) for m in dropout_masks(rng, 9, sizes[1:-1], 0.4)]
    assert all((m == 0).any() and (m > 0).any() for m in masks)
    finite_difference_check(weights, biases, X, y, activation, 0.01, masks)
    # A dropped unit gets no gradient on its incoming weights from this batch.
    dropped_everywhere = np.flatnonzero((masks[0] == 0).all(axis=0))
    if dropped_everywhere.size:
        _, _, grad_w, _ = backward(weights, biases, X, y, activation, 0.0, masks)
        assert not grad_w[0][:, dropped_everywhere].any()
    # Masks change the loss: the masked network is another network.
    assert backward(weights, biases, X, y, activation, 0.0, masks)[0] != backward(weights, biases, X, y, activation)[0]


def test_dropout_masks_drop_the_given_share_and_keep_the_mean():
    rng = np.random.default_rng(5)
    masks = dropout_masks(rng, 4000, [50, 20], 0.3)
    assert [m.shape for m in masks] == [(4000, 50), (4000, 20)] and all(m.dtype == np.float32 for m in masks)
    for m in masks:
        assert abs(np.mean(m == 0) - 0.3) < 0.01
        np.testing.assert_allclose(np.unique(m), [0, 1 / 0.7], rtol=1e-6)
        assert abs(m.mean() - 1.0) < 0.02  # inverted dropout: expected activation unchanged
    again = dropout_masks(np.random.default_rng(5), 4000, [50, 20], 0.3)
    assert all(np.array_equal(a, b) for a, b in zip(masks, again))


REGULARISED = {**SMALL, "hidden_layers": (16, 16), "max_epochs": 3, "dropout": 0.3, "input_noise": 0.2,
               "epoch_frames": 1000}


def test_regularised_training_is_deterministic_for_a_seed(planted):
    (tf, ty), (vf, vy) = planted
    a = MlpEmission(seed=5, **REGULARISED).fit(tf, ty, vf, vy, n_states=6)
    b = MlpEmission(seed=5, **REGULARISED).fit(tf, ty, vf, vy, n_states=6)
    c = MlpEmission(seed=6, **REGULARISED).fit(tf, ty, vf, vy, n_states=6)
    for key, value in a.to_arrays().items():
        np.testing.assert_array_equal(value, b.to_arrays()[key])
    assert [r["train_loss"] for r in a.history_] == [r["train_loss"] for r in b.history_]
    assert not np.array_equal(a.weights_[0], c.weights_[0])
    # Dropout and noise do change training (same seed, same initialisation otherwise).
    plain = MlpEmission(seed=5, **{**REGULARISED, "dropout": 0.0, "input_noise": 0.0}).fit(tf, ty, vf, vy, n_states=6)
    assert not np.array_equal(a.weights_[0], plain.weights_[0])


def test_dropout_and_noise_are_not_used_at_inference(planted):
    (tf, ty), (vf, vy) = planted
    model = MlpEmission(context=0, **{**REGULARISED, "max_epochs": 10, "epoch_frames": None}).fit(
        tf, ty, vf, vy, n_states=6)
    assert model.frame_error_rate(vf, vy) < 0.05  # still learns the mapping
    X = vf[0]
    scores = model.predict_log_proba(X)
    np.testing.assert_array_equal(scores, model.predict_log_proba(X))  # no random masks
    inputs = np.clip((X - model.input_mean_) * model.input_scale_, -model.input_clip, model.input_clip)
    expected = log_softmax(forward(model.weights_, model.biases_, inputs, model.activation)[1].astype(np.float64))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)  # the plain, unscaled network


def test_weight_decay_shrinks_the_weights(planted):
    (tf, ty), (vf, vy) = planted
    params = {**SMALL, "max_epochs": 4, "patience": 0}
    norms = []
    for decay in (0.0, 0.05):
        model = MlpEmission(context=1, weight_decay=decay, **params).fit(tf, ty, vf, vy, n_states=6)
        norms.append([float(np.square(W).sum()) for W in model.weights_])
    assert all(decayed < 0.8 * free for free, decayed in zip(*norms)), norms


def test_the_best_validation_epoch_is_the_one_kept_and_checkpointed(planted):
    """Validation targets unrelated to the inputs make the FER wander: the last epoch is not the best."""
    (tf, ty), (vf, _) = planted
    noisy = [np.random.default_rng(i).integers(0, 6, size=len(f)) for i, f in enumerate(vf)]
    seen = {}
    model = MlpEmission(context=0, **{**SMALL, "max_epochs": 8, "patience": 0, "learning_rate": 1e-2})
    model.fit(tf, ty, vf, noisy, n_states=6,
              on_epoch=lambda m, r: seen.update({r["epoch"]: [W.copy() for W in m.weights_]}))
    history = model.history_
    best = model.best_epoch_
    assert len(history) == 8 and best < 8
    assert history[best - 1]["best"] and history[best - 1]["valid_fer"] == min(r["valid_fer"] for r in history)
    assert not history[-1]["best"] and history[-1]["valid_fer"] >= history[best - 1]["valid_fer"]
    assert model.frame_error_rate(vf, noisy) == pytest.approx(history[best - 1]["valid_fer"])
    for W, saved in zip(model.weights_, seen[best]):  # what the checkpoint of the best epoch held
        np.testing.assert_array_equal(W, saved)
    for W, saved in zip(model.weights_, seen[8]):  # later checkpoints keep the best weights too
        np.testing.assert_array_equal(W, saved)


def test_epoch_frames_sample_a_fresh_subset_every_epoch(planted):
    ids = np.arange(10, 510)
    first = epoch_sample(np.random.default_rng(3), ids, 120)
    assert len(first) == 120 and len(np.unique(first)) == 120 and np.isin(first, ids).all()
    np.testing.assert_array_equal(first, epoch_sample(np.random.default_rng(3), ids, 120))
    rng = np.random.default_rng(3)
    samples = [epoch_sample(rng, ids, 120) for _ in range(2)]
    assert not np.array_equal(np.sort(samples[0]), np.sort(samples[1]))
    whole = epoch_sample(rng, ids, 10_000)  # more than there are: every frame once
    np.testing.assert_array_equal(np.sort(whole), ids)
    (tf, ty), (vf, vy) = planted
    model = MlpEmission(context=0, **{**SMALL, "max_epochs": 3, "patience": 0, "epoch_frames": 300})
    model.fit(tf, ty, vf, vy, n_states=6)
    assert [r["train_frames"] for r in model.history_] == [300, 300, 300]


@pytest.mark.parametrize("setting", [{"dropout": 1.0}, {"dropout": -0.1}, {"dropout": float("nan")},
                                     {"input_noise": -1.0}, {"input_noise": float("inf")},
                                     {"epoch_frames": 0}, {"epoch_frames": 2.5}, {"weight_decay": -1e-4}])
def test_bad_regularisation_settings_are_refused_before_training(planted, setting):
    (tf, ty), _ = planted
    name = next(iter(setting))
    with pytest.raises(HwrError) as error:
        MlpEmission(**setting).fit(tf, ty, n_states=6)
    message = str(error.value)
    assert "\n" not in message and name in message


def subnormal_count(a) -> int:
    a = np.abs(np.asarray(a))
    return int(np.count_nonzero((a > 0) & (a < np.finfo(a.dtype).tiny)))


def test_confident_outputs_give_no_subnormal_gradients():
    # Output logits 60 .. 100 apart: softmax terms of 1e-27 .. 1e-44, which in float32 are
    # subnormal numbers, each ~100 times slower to multiply on many CPUs.
    rng = np.random.default_rng(4)
    weights = [rng.normal(size=(5, 8)).astype(np.float32), np.zeros((8, 40), np.float32)]
    biases = [np.zeros(8, np.float32), -np.linspace(0, 100, 40).astype(np.float32)]
    X = rng.normal(size=(16, 5)).astype(np.float32)
    y = rng.integers(0, 3, size=16)
    loss, _, grad_w, grad_b = backward(weights, biases, X, y, "relu")
    assert all(subnormal_count(g) == 0 for g in grad_w + grad_b)
    # still the gradient of the loss: the same as in float64 wherever it is not negligible
    exact = backward([w.astype(np.float64) for w in weights], [b.astype(np.float64) for b in biases],
                     X.astype(np.float64), y, "relu")
    assert loss == pytest.approx(exact[0], rel=1e-6)
    np.testing.assert_allclose(grad_b[1], exact[3][1], rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_optimiser_state_decays_to_zero_without_subnormal_values(solver):
    # Weights whose gradient is zero from some step on (a dead unit): their moments decay
    # geometrically and must reach 0 without lingering in the subnormal range.
    w = np.ones((4, 64), np.float32)
    opt = _Optimizer([w], solver, 0.9)
    grad = np.full_like(w, 1e-3)
    grad[:, 32:] = np.float32(3e-17)   # below the floor from the start
    opt.step([grad], 1e-3)
    zero = np.zeros_like(w)
    for _ in range(100_000 if solver == "adam" else 2_000):
        opt.step([zero], 1e-3)
    assert all(subnormal_count(s) == 0 for group in opt.state for s in group)
    assert all(np.count_nonzero(s) == 0 for group in opt.state for s in group)
    assert np.isfinite(w).all()


def test_adam_step_is_the_textbook_update_for_normal_gradients():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(3, 7))
    start = w.copy()
    opt = _Optimizer([w], "adam", 0.9)
    grads = [rng.normal(size=w.shape) for _ in range(5)]
    m = v = 0.0
    expected = start.copy()
    for t, g in enumerate(grads, 1):
        opt.step([g], 0.01)
        m = ADAM_BETA1 * m + (1 - ADAM_BETA1) * g
        v = ADAM_BETA2 * v + (1 - ADAM_BETA2) * g * g
        expected -= 0.01 * (m / (1 - ADAM_BETA1 ** t)) / (np.sqrt(v / (1 - ADAM_BETA2 ** t)) + ADAM_EPS)
    np.testing.assert_allclose(w, expected, rtol=1e-6, atol=1e-9)
