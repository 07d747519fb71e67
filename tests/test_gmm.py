"""Diagonal GMM emissions: exact densities, EM on planted data, additive statistics, floors, storage."""

import pickle

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from hybrid_hwr.errors import HwrError
from hybrid_hwr.gmm import (MIN_VARIANCE, GmmAccumulator, GmmSet, _exp_nonpositive,
                            log_likelihoods_numpy)


def random_gmms(rng, n_states, n_components, n_dims, ragged=True):
    """Random set where (if ragged) states have 1..M live components in scattered slots."""
    means = rng.normal(scale=2.0, size=(n_states, n_components, n_dims))
    variances = rng.uniform(0.2, 3.0, size=(n_states, n_components, n_dims))
    weights = rng.uniform(0.1, 1.0, size=(n_states, n_components))
    if ragged:
        for s in range(n_states):
            n_live = 1 + s % n_components
            weights[s, rng.permutation(n_components)[n_live:]] = 0.0
    weights /= weights.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        return GmmSet(means, variances, np.log(weights))


def scipy_log_likelihoods(gmms, X):
    out = np.empty((len(X), gmms.n_states))
    for s in range(gmms.n_states):
        terms = [gmms.log_weights[s, m]
                 + multivariate_normal(gmms.means[s, m], np.diag(gmms.variances[s, m])).logpdf(X)
                 for m in np.flatnonzero(gmms.live[s])]
        out[:, s] = logsumexp(np.reshape(terms, (len(terms), len(X))), axis=0)
    return out


def em(gmms, X, states, iterations, var_floor):
    """Plain EM with every frame assigned to its known state; returns model and log-likelihoods."""
    history = []
    for _ in range(iterations):
        acc = GmmAccumulator.like(gmms)
        acc.accumulate(gmms, X, np.arange(len(X)), states)
        history.append(acc.log_likelihood / acc.n_frames)
        gmms = GmmSet.from_summaries(acc, var_floor)
    return gmms, history


def assert_sane(gmms):
    assert np.isfinite(gmms.means).all()
    assert np.isfinite(gmms.variances).all() and (gmms.variances >= MIN_VARIANCE).all()
    assert not np.isnan(gmms.log_weights).any()
    np.testing.assert_allclose(gmms.weights.sum(axis=1), 1.0, rtol=1e-12)


# ----------------------------------------------------------------------------- densities


@pytest.mark.parametrize("n_dims", [7, 56])
def test_log_likelihoods_equal_scipy(n_dims):
    rng = np.random.default_rng(n_dims)
    gmms = random_gmms(rng, n_states=9, n_components=4, n_dims=n_dims)
    X = rng.normal(scale=2.0, size=(37, n_dims))
    ours = gmms.log_likelihoods(X)
    assert ours.shape == (37, 9) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, scipy_log_likelihoods(gmms, X), rtol=1e-9)
    # float32 features are accepted, and the NumPy reference agrees
    np.testing.assert_allclose(gmms.log_likelihoods(X.astype(np.float32)),
                               scipy_log_likelihoods(gmms, X.astype(np.float32).astype(np.float64)), rtol=1e-9)
    np.testing.assert_allclose(log_likelihoods_numpy(gmms, X), ours, rtol=1e-9)
    # a subset of states, in any order and with repeats, gives the same columns
    subset = [8, 2, 2, 5]
    np.testing.assert_array_equal(gmms.log_likelihoods(X, states=subset), ours[:, subset])


def test_log_likelihoods_far_from_the_means():
    rng = np.random.default_rng(1)
    gmms = random_gmms(rng, n_states=4, n_components=3, n_dims=5)
    far = rng.normal(scale=1e3, size=(6, 5))  # components differ by ~1e5 nats: log-sum-exp must not underflow
    np.testing.assert_allclose(gmms.log_likelihoods(far), scipy_log_likelihoods(gmms, far), rtol=1e-9)
    huge = np.full((3, 5), 1e200)  # squares overflow: -inf, never NaN
    ll = gmms.log_likelihoods(huge)
    assert not np.isnan(ll).any() and (ll == -np.inf).all()
    assert gmms.log_likelihoods(np.empty((0, 5))).shape == (0, 4)


def test_fast_exp_is_accurate():
    x = np.concatenate([-np.geomspace(1e-300, 64, 5000), np.linspace(-64, 0, 5001)])
    ours = np.array([_exp_nonpositive(v) for v in x])
    np.testing.assert_allclose(ours, np.exp(x), rtol=1e-14)
    assert _exp_nonpositive(0.0) == 1.0
    assert 0 < _exp_nonpositive(-np.inf) < 1e-27


def test_bad_features_raise_hwr_error():
    gmms = random_gmms(np.random.default_rng(2), 2, 2, 3)
    with pytest.raises(HwrError, match="NaN or infinite"):
        gmms.log_likelihoods(np.array([[0.0, np.nan, 1.0]]))
    with pytest.raises(HwrError, match="expect"):
        gmms.log_likelihoods(np.zeros((4, 5)))


# ----------------------------------------------------------------------------- training


def test_em_recovers_planted_mixture():
    rng = np.random.default_rng(3)
    true_means = np.array([[-2.0, 1.0, 0.0], [2.0, -1.0, 0.5]])
    true_vars = np.array([[0.5, 1.5, 1.0], [1.0, 0.25, 2.0]])
    true_weights = np.array([0.3, 0.7])
    n = 4000
    which = rng.random(n) < true_weights[0]
    component = np.where(which, 0, 1)
    X = true_means[component] + rng.normal(size=(n, 3)) * np.sqrt(true_vars[component])
    # a second state with its own single Gaussian, to check states do not mix
    Y = rng.normal(loc=5.0, scale=0.5, size=(500, 3))
    data = np.vstack([X, Y])
    states = np.r_[np.zeros(n, int), np.ones(500, int)]

    gmms = GmmSet.flat_start(2, data)
    gmms, history1 = em(gmms, data, states, 3, 0.01 * data.var(0))
    gmms, history2 = em(gmms.split(2), data, states, 40, 0.01 * data.var(0))
    history = np.array(history1 + history2)
    # EM never lowers the likelihood (within one model size)
    assert (np.diff(history1) >= -1e-9).all() and (np.diff(history2) >= -1e-9).all()
    assert history[-1] > history[0] + 0.5

    order = np.argsort(gmms.means[0, :, 0])
    np.testing.assert_allclose(gmms.means[0, order], true_means, atol=0.1)
    np.testing.assert_allclose(gmms.variances[0, order], true_vars, rtol=0.15)
    np.testing.assert_allclose(gmms.weights[0, order], true_weights, atol=0.03)
    # state 1 is one tight Gaussian: split halves converge near the same place
    np.testing.assert_allclose(gmms.means[1], 5.0, atol=0.2)


def test_accumulators_add_up():
    rng = np.random.default_rng(4)
    gmms = random_gmms(rng, n_states=6, n_components=3, n_dims=5)
    X1, X2 = rng.normal(size=(20, 5)), rng.normal(size=(30, 5))

    def pairs(T, seed):
        r = np.random.default_rng(seed)
        return r.integers(0, T, 60), r.integers(0, 6, 60), r.random(60)

    f1, s1, w1 = pairs(20, 5)
    f2, s2, w2 = pairs(30, 6)
    a1 = GmmAccumulator.like(gmms)
    a1.accumulate(gmms, X1, f1, s1, w1)
    a2 = GmmAccumulator.like(gmms)
    a2.accumulate(gmms, X2, f2, s2, w2)
    both = GmmAccumulator(6, 3, 5)
    both.accumulate(gmms, np.vstack([X1, X2]), np.r_[f1, f2 + 20], np.r_[s1, s2], np.r_[w1, w2])
    for total in (a1 + a2, sum([a1, a2])):
        np.testing.assert_allclose(total.occupancy, both.occupancy, rtol=1e-12)
        np.testing.assert_allclose(total.first_order, both.first_order, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(total.second_order, both.second_order, rtol=1e-10, atol=1e-12)
        assert total.log_likelihood == pytest.approx(both.log_likelihood, rel=1e-12)
        assert total.n_frames == pytest.approx(w1.sum() + w2.sum(), rel=1e-12)
    assert a1.n_frames == pytest.approx(w1.sum())  # + did not modify its operands
    a1 += a2
    np.testing.assert_allclose(a1.occupancy, both.occupancy, rtol=1e-12)
    # statistics collected under another model cannot be mixed in
    other = GmmAccumulator.like(gmms)
    moved = GmmSet(gmms.means + 1.0, gmms.variances, gmms.log_weights)
    other.accumulate(moved, X1, f1, s1, w1)
    with pytest.raises(ValueError, match="different GMMs"):
        a1 + other


def test_accumulated_statistics_equal_brute_force():
    rng = np.random.default_rng(7)
    gmms = random_gmms(rng, n_states=3, n_components=4, n_dims=4)
    X = rng.normal(size=(10, 4))
    frames = np.array([0, 3, 3, 9, 5, 0])
    states = np.array([2, 1, 1, 2, 0, 2])  # (3, 1) and (0, 2) repeat: weights merge
    weights = np.array([0.5, 0.25, 0.5, 1.0, 0.0, 0.25])
    acc = GmmAccumulator.like(gmms)
    added = acc.accumulate(gmms, X, frames, states, weights)

    occ = np.zeros((3, 4))
    first = np.zeros((3, 4, 4))
    second = np.zeros((3, 4, 4))
    loglik = 0.0
    for t, s, w in zip(frames, states, weights):
        logp = np.array([gmms.log_weights[s, m] + multivariate_normal(
            gmms.means[s, m], np.diag(gmms.variances[s, m])).logpdf(X[t]) for m in range(4)])
        resp = np.exp(logp - logsumexp(logp))
        loglik += w * logsumexp(logp)
        occ[s] += w * resp
        first[s] += w * resp[:, None] * (X[t] - gmms.means[s])
        second[s] += w * resp[:, None] * (X[t] - gmms.means[s]) ** 2
    np.testing.assert_allclose(acc.occupancy, occ, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(acc.first_order, first, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(acc.second_order, second, rtol=1e-9, atol=1e-15)
    assert added == pytest.approx(loglik, rel=1e-9) and acc.log_likelihood == added
    assert acc.n_frames == pytest.approx(weights.sum())


def test_viterbi_path_accumulation_uses_weight_one():
    rng = np.random.default_rng(8)
    gmms = random_gmms(rng, 3, 2, 4)
    X = rng.normal(size=(8, 4))
    path = np.array([0, 0, 1, 1, 1, -1, 2, 2])
    hard = GmmAccumulator.like(gmms)
    hard.accumulate_path(gmms, X, path)
    explicit = GmmAccumulator.like(gmms)
    explicit.accumulate(gmms, X, [0, 1, 2, 3, 4, 6, 7], [0, 0, 1, 1, 1, 2, 2], np.ones(7))
    np.testing.assert_array_equal(hard.occupancy, explicit.occupancy)
    assert hard.n_frames == 7.0
    np.testing.assert_allclose(hard.occupancy.sum(axis=1), [2, 3, 2])


# ----------------------------------------------------------------------------- floors: no NaN, whatever the data


def reestimate(X, n_states=2, n_components=2, states=None, var_floor_fraction=0.05):
    gmms = GmmSet.flat_start(n_states, X).split(n_components)
    acc = GmmAccumulator.like(gmms)
    states = np.zeros(len(X), int) if states is None else states
    acc.accumulate(gmms, X, np.arange(len(X)), states)
    return gmms, GmmSet.from_summaries(acc, var_floor_fraction * X.var(axis=0))


def test_state_without_data_keeps_its_parameters():
    X = np.random.default_rng(9).normal(size=(200, 3))
    old, new = reestimate(X, n_states=3)  # states 1 and 2 see no frame
    assert_sane(new)
    for s in (1, 2):
        np.testing.assert_array_equal(new.means[s], old.means[s])
        np.testing.assert_array_equal(new.variances[s], old.variances[s])
        np.testing.assert_array_equal(new.log_weights[s], old.log_weights[s])
    assert not np.array_equal(new.means[0], old.means[0])


def test_repeated_point_hits_the_variance_floor():
    X = np.random.default_rng(10).normal(size=(100, 3))
    point = np.tile([[0.3, -1.0, 2.0]], (50, 1))
    gmms = GmmSet.flat_start(2, X)
    acc = GmmAccumulator.like(gmms)
    acc.accumulate(gmms, point, np.arange(50), np.ones(50, int))
    floor = 0.05 * X.var(axis=0)
    new = GmmSet.from_summaries(acc, floor)
    assert_sane(new)
    np.testing.assert_allclose(new.means[1, 0], point[0], rtol=1e-12)
    np.testing.assert_allclose(new.variances[1, 0], floor, rtol=1e-12)
    assert np.isfinite(new.log_likelihoods(point)).all()


@pytest.mark.parametrize("offset,scale", [(1e8, 1.0), (1e12, 1e6), (0.0, 1e150)])
def test_huge_values_stay_finite(offset, scale):
    X = offset + scale * np.random.default_rng(11).normal(size=(300, 4))
    old, new = reestimate(X, n_components=4)
    assert_sane(new)
    assert not np.isnan(new.log_likelihoods(X)).any()
    if scale < 1e100:  # centred statistics keep the variance accurate despite the offset
        np.testing.assert_allclose(np.einsum("m,md->d", new.weights[0], new.variances[0]
                                             + (new.means[0] - X.mean(0)) ** 2), X.var(0), rtol=1e-6)


def test_constant_dimension_gets_a_positive_variance():
    X = np.random.default_rng(12).normal(size=(300, 4))
    X[:, 2] = 7.0
    _, new = reestimate(X, n_components=4)
    assert_sane(new)
    np.testing.assert_allclose(new.means[0, :, 2], 7.0)
    assert (new.variances[:, :, 2] >= MIN_VARIANCE).all()
    assert np.isfinite(new.log_likelihoods(X)).all()


def test_component_without_data_is_replaced_by_a_split():
    # one component sits on the data, the other far away: it receives no responsibility
    means = np.array([[[0.0, 0.0], [1e3, 1e3]]])
    gmms = GmmSet(means, np.ones((1, 2, 2)), np.log([[0.5, 0.5]]))
    X = np.random.default_rng(13).normal(loc=[1.0, -1.0], scale=[2.0, 0.5], size=(400, 2))
    acc = GmmAccumulator.like(gmms)
    acc.accumulate(gmms, X, np.arange(400), np.zeros(400, int))
    assert acc.occupancy[0, 1] < 1e-100
    new = GmmSet.from_summaries(acc, 0.01 * X.var(0), weight_floor=1e-3)
    assert_sane(new)
    np.testing.assert_allclose(new.weights[0], [0.5, 0.5])
    # the two halves straddle the data mean by +-0.2 standard deviations
    np.testing.assert_allclose(new.means[0].mean(axis=0), X.mean(axis=0), atol=1e-9)
    np.testing.assert_allclose(new.means[0, 0] - new.means[0, 1], 0.4 * X.std(axis=0), rtol=1e-9)


def test_weight_floor():
    gmms = GmmSet(np.array([[[0.0], [1.0]]]), np.ones((1, 2, 1)), np.log([[0.5, 0.5]]))
    acc = GmmAccumulator.like(gmms)
    acc.occupancy[:] = [[1000.0, 3.5]]  # the weak component has just enough data to be estimated
    acc.first_order[:] = 0.0
    acc.second_order[:] = [[[1000.0], [3.5]]]
    acc.reference = gmms
    new = GmmSet.from_summaries(acc, 0.01, weight_floor=0.01)
    strong = 1000.0 / 1003.5  # the weak weight 3.5 / 1003.5 is raised to the floor, then all renormalised
    np.testing.assert_allclose(new.weights[0], np.array([strong, 0.01]) / (strong + 0.01), rtol=1e-12)


# ----------------------------------------------------------------------------- splitting


def test_split_doubles_components():
    X = np.random.default_rng(14).normal(size=(500, 3)) * [1.0, 2.0, 0.5]
    one = GmmSet.flat_start(4, X)
    two = one.split(2)
    four = two.split(4)
    assert (one.n_components, two.n_components, four.n_components) == (1, 2, 4)
    assert (four.n_live == 4).all()
    np.testing.assert_allclose(four.weights, 0.25)
    np.testing.assert_allclose(two.means[0, 0] - two.means[0, 1], 0.4 * X.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(two.variances, one.variances.repeat(2, axis=1))
    for g in (two, four):
        assert_sane(g)
        ll = g.log_likelihoods(X)
        assert np.isfinite(ll).all()
    # splitting leaves the total mean unchanged
    np.testing.assert_allclose(np.einsum("sm,smd->sd", four.weights, four.means), one.means[:, 0], atol=1e-12)


def test_split_fills_states_that_have_fewer_components():
    # state 0 has weights 0.7 / 0.3 in slots 0 and 2 (slot 1 unused); state 1 has one component
    means = np.array([[[0.0], [0.0], [10.0]], [[5.0], [0.0], [0.0]]])
    log_w = np.log([[0.7, 0.0, 0.3], [1.0, 0.0, 0.0]], where=np.array([[1, 0, 1], [1, 0, 0]], bool),
                   out=np.full((2, 3), -np.inf))
    gmms = GmmSet(means, np.ones((2, 3, 1)), log_w)
    three = gmms.split(3)
    np.testing.assert_array_equal(three.n_live, [3, 3])
    np.testing.assert_allclose(three.weights[0], [0.35, 0.35, 0.3])  # the heaviest (0.7) was split
    np.testing.assert_allclose(three.means[0, :, 0], [0.2, -0.2, 10.0])
    np.testing.assert_allclose(np.sort(three.weights[1]), [0.25, 0.25, 0.5])
    assert gmms.split(1).n_live.tolist() == [2, 1]  # never removes components


# ----------------------------------------------------------------------------- storage


def test_arrays_round_trip(tmp_path):
    gmms = random_gmms(np.random.default_rng(15), 5, 3, 4)
    np.savez(tmp_path / "model.npz", **gmms.to_arrays(prefix="gmm_"), other=np.arange(3))
    with np.load(tmp_path / "model.npz") as npz:
        back = GmmSet.from_arrays(npz, prefix="gmm_")
    for name in ("means", "variances", "log_weights"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gmms, name))
    X = np.random.default_rng(16).normal(size=(11, 4))
    np.testing.assert_array_equal(back.log_likelihoods(X), gmms.log_likelihoods(X))
    # pickling (for worker processes) keeps the model read-only
    clone = pickle.loads(pickle.dumps(gmms))
    np.testing.assert_array_equal(clone.log_likelihoods(X), gmms.log_likelihoods(X))
    with pytest.raises(ValueError):
        clone.means[0, 0, 0] = 1.0


def corrupt(arrays, name, value):
    bad = dict(arrays)
    if value is None:
        del bad[name]
    else:
        bad[name] = value
    return bad


@pytest.mark.parametrize("name,make_bad,message", [
    ("means", lambda a: None, "missing array 'means'"),
    ("means", lambda a: a[0], "must be a non-empty"),
    ("variances", lambda a: a[:, :1], "'variances' has shape"),
    ("log_weights", lambda a: a.T, "'log_weights' has shape"),
    ("means", lambda a: np.where(a > 0, np.nan, a), "'means' contains NaN"),
    ("variances", lambda a: -a, "finite and positive"),
    ("variances", lambda a: np.where(a > 1, np.inf, a), "finite and positive"),
    ("log_weights", lambda a: a + 0.1, "sum to"),
    ("log_weights", lambda a: np.full_like(a, -np.inf), "no component with a finite log weight"),
    ("log_weights", lambda a: np.full_like(a, np.nan), "NaN"),
    ("means", lambda a: a.astype(str), "non-numeric"),
])
def test_corrupt_arrays_raise_hwr_error(name, make_bad, message):
    arrays = random_gmms(np.random.default_rng(17), 3, 2, 4, ragged=False).to_arrays()
    with pytest.raises(HwrError, match=message) as info:
        GmmSet.from_arrays(corrupt(arrays, name, make_bad(arrays[name])), source="model/gmm.npz")
    assert str(info.value).startswith("model/gmm.npz: ")
