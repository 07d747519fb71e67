"""Diagonal-covariance Gaussian mixture emissions for the character HMMs.

Every emitting HMM state ``s`` owns a mixture of up to ``M`` diagonal Gaussians in
``D`` feature dimensions; all states are stored together in one :class:`GmmSet`::

    log p(x | s) = logsumexp_m [ log w_sm - 1/2 sum_d ( log(2 pi v_smd) + (x_d - mu_smd)^2 / v_smd ) ]

States may use different numbers of components: an unused slot has ``log w = -inf``.

Training follows pomegranate's summarize / from_summaries split. A
:class:`GmmAccumulator` collects zero-, first- and second-order statistics of
weighted (frame, state) pairs -- state posteriors from forward-backward, or
weight 1 along a Viterbi path -- and accumulators add up with ``+``, so they can be
filled in separate processes (or machines) and summed. :meth:`GmmSet.from_summaries`
is the M-step, with a variance floor, a mixture-weight floor and a rule for
components that received no data, so that no input yields NaN, inf or a collapsed
Gaussian. :meth:`GmmSet.split` grows mixtures 1 -> 2 -> 4 ... as HTK's ``HHEd MU``.

A GmmSet is immutable (its arrays are read-only): ``split`` and ``from_summaries``
return new sets. This lets it cache the per-component constants of the kernel.
"""

from __future__ import annotations

from typing import Mapping

import numba
import numpy as np

from hybrid_hwr.errors import HwrError

LOG_2PI = float(np.log(2.0 * np.pi))
# Absolute variance floor, on top of the relative one: a dimension that is constant in
# the training data (global variance 0) must still give a finite density.
MIN_VARIANCE = 1e-6
# Split offset in standard deviations (HTK HHEd MU uses 0.2).
SPLIT_OFFSET = 0.2

# Reassociation lets LLVM vectorise the sums; no 'nnan'/'ninf' because -inf is a real value here.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp"}


# ----------------------------------------------------------------------------- kernels


@numba.njit(cache=True, fastmath=_FASTMATH)
def _exp_nonpositive(x):
    """exp(x) for x <= 0, to ~3e-15 relative, vectorisable (libm's exp is not).

    Inputs below -64 are clamped: exp(-64) = 1.6e-28 cannot change a sum that contains
    exp(0) = 1, which is the only use here (log-sum-exp after subtracting the max).
    """
    x = max(x, -64.0)
    k = np.floor(x * 1.4426950408889634 + 0.5)  # round(x / ln 2)
    r = x - k * 6.93147180369123816490e-01 - k * 1.90821492927058770002e-10  # |r| <= ln2 / 2
    p = 1.0 + r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (
        1.0 / 120 + r * (1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (
            1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600))))))))))))
    # times 2**k, k in [-93, 0], built from the bits of -k (exact, branch-free).
    e = np.int64(-k)
    p *= 0.5 if e & 1 else 1.0
    p *= 0.25 if e & 2 else 1.0
    p *= 0.0625 if e & 4 else 1.0
    p *= 0.00390625 if e & 8 else 1.0
    p *= 1.52587890625e-05 if e & 16 else 1.0
    p *= 2.3283064365386963e-10 if e & 32 else 1.0
    p *= 5.421010862427522e-20 if e & 64 else 1.0
    return p


@numba.njit(cache=True, fastmath=_FASTMATH)
def _log_likelihoods_kernel(XT, scale, offset, log_const, states, out):
    """out[t, j] = log p(x_t | states[j]).

    XT (D, T) is the transposed feature matrix; per component, z_d = x_d * scale_d - offset_d
    with scale = sqrt(1 / (2 v)), offset = mu * scale, so that log N = log_const - sum_d z_d^2
    (two FMAs per element). Loops run component by component over all frames at once: the
    innermost loop is over frames (vectorised, no horizontal sums) and each component's
    parameters are read once, which keeps a 600-state x 16-component model out of the way
    of the cache.
    """
    D, T = XT.shape
    M = scale.shape[1]
    D4 = D - D % 4
    comp = np.empty((M, T))
    peak = np.empty(T)
    total = np.empty(T)
    for j in range(states.shape[0]):
        s = states[j]
        n = 0
        for m in range(M):
            c = log_const[s, m]
            if c == -np.inf:  # unused component
                continue
            row = comp[n]
            for t in range(T):
                row[t] = c
            for d in range(0, D4, 4):  # four dimensions per sweep: fewer loads/stores of row
                a0 = scale[s, m, d]
                a1 = scale[s, m, d + 1]
                a2 = scale[s, m, d + 2]
                a3 = scale[s, m, d + 3]
                b0 = offset[s, m, d]
                b1 = offset[s, m, d + 1]
                b2 = offset[s, m, d + 2]
                b3 = offset[s, m, d + 3]
                for t in range(T):
                    z0 = XT[d, t] * a0 - b0
                    z1 = XT[d + 1, t] * a1 - b1
                    z2 = XT[d + 2, t] * a2 - b2
                    z3 = XT[d + 3, t] * a3 - b3
                    row[t] -= (z0 * z0 + z1 * z1) + (z2 * z2 + z3 * z3)
            for d in range(D4, D):
                a0 = scale[s, m, d]
                b0 = offset[s, m, d]
                for t in range(T):
                    z0 = XT[d, t] * a0 - b0
                    row[t] -= z0 * z0
            n += 1
        if n == 1:
            for t in range(T):
                out[t, j] = comp[0, t]
            continue
        for t in range(T):
            peak[t] = comp[0, t]
        for k in range(1, n):
            for t in range(T):
                peak[t] = max(peak[t], comp[k, t])
        for t in range(T):
            total[t] = 0.0
        for k in range(n):
            for t in range(T):
                total[t] += _exp_nonpositive(comp[k, t] - peak[t])
        for t in range(T):
            # All components -inf (features overflowing the model): the answer is -inf, not NaN.
            out[t, j] = peak[t] + np.log(total[t]) if peak[t] > -np.inf else -np.inf


@numba.njit(cache=True, fastmath=_FASTMATH)
def _accumulate_kernel(X, frames, states, weights, means, inv_var, log_const,
                       occupancy, first, second):
    """Adds weight * responsibility statistics of (frame, state) pairs; returns sum of w log p.

    Statistics are centred on the model's own means (first = sum r (x - mu), second =
    sum r (x - mu)^2): no cancellation in the M-step even for features far from zero.
    """
    D = X.shape[1]
    M = means.shape[1]
    logp = np.empty(M)
    total_loglik = 0.0
    for i in range(frames.shape[0]):
        t = frames[i]
        s = states[i]
        w = weights[i]
        x = X[t]
        peak = -np.inf
        for m in range(M):
            c = log_const[s, m]
            if c == -np.inf:
                logp[m] = -np.inf
                continue
            quad = 0.0
            for d in range(D):
                z = x[d] - means[s, m, d]
                quad += z * z * inv_var[s, m, d]
            logp[m] = c - 0.5 * quad
            peak = max(peak, logp[m])
        if peak == -np.inf:  # frame beyond the reach of every component: no statistics
            total_loglik += -np.inf
            continue
        total = 0.0
        for m in range(M):
            logp[m] = np.exp(logp[m] - peak)
            total += logp[m]
        total_loglik += w * (peak + np.log(total))
        for m in range(M):
            r = w * logp[m] / total
            if r == 0.0:
                continue
            occupancy[s, m] += r
            for d in range(D):
                z = x[d] - means[s, m, d]
                first[s, m, d] += r * z
                second[s, m, d] += r * z * z
    return total_loglik


# ----------------------------------------------------------------------------- model


def _check_features(X, n_dims):
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_dims:
        raise HwrError(f"features have shape {X.shape}, the GMMs expect (frames, {n_dims})")
    X = np.ascontiguousarray(X, dtype=np.float64)
    if not np.isfinite(X).all():
        raise HwrError("features contain NaN or infinite values")
    return X


def _readonly(a):
    a.flags.writeable = False
    return a


class GmmSet:
    """Diagonal GMMs of all S emitting states: means, variances (S, M, D), log_weights (S, M).

    ``log_weights[s, m] = -inf`` marks an unused slot, so states may have fewer live
    components than M. Arrays are validated (HwrError on bad shapes or values) and
    stored read-only; every method that changes parameters returns a new GmmSet.
    """

    emission_type = "gmm"    # the hybrid_hwr.emission.Emission interface
    prior_scale = None       # likelihoods, no state priors to scale

    def __init__(self, means, variances, log_weights, *, source="GMM"):
        means, variances, log_weights = _validated(means, variances, log_weights, source)
        self.means = _readonly(means)
        self.variances = _readonly(variances)
        self.log_weights = _readonly(log_weights)
        self._cache = None

    # -- shape and views
    @property
    def n_states(self) -> int:
        return self.means.shape[0]

    @property
    def n_components(self) -> int:
        """Number of component slots M (the largest number of live components of any state)."""
        return self.means.shape[1]

    @property
    def n_dims(self) -> int:
        return self.means.shape[2]

    @property
    def live(self) -> np.ndarray:
        """(S, M) bool: components in use."""
        return np.isfinite(self.log_weights)

    @property
    def n_live(self) -> np.ndarray:
        """(S,) number of live components per state."""
        return self.live.sum(axis=1)

    @property
    def weights(self) -> np.ndarray:
        return np.exp(self.log_weights)

    def __repr__(self):
        return (f"GmmSet(n_states={self.n_states}, n_components={self.n_components}, "
                f"n_dims={self.n_dims}, live={int(self.n_live.sum())})")

    def __getstate__(self):  # the cache is cheap to rebuild, not worth pickling to workers
        return {"means": self.means, "variances": self.variances, "log_weights": self.log_weights}

    def __setstate__(self, state):
        self.means = _readonly(np.array(state["means"]))
        self.variances = _readonly(np.array(state["variances"]))
        self.log_weights = _readonly(np.array(state["log_weights"]))
        self._cache = None

    def _kernel_params(self):
        """Per-component constants, computed once per (immutable) set."""
        if self._cache is None:
            inv_var = 1.0 / self.variances
            scale = np.sqrt(0.5 * inv_var)
            offset = self.means * scale
            log_const = self.log_weights - 0.5 * (
                self.n_dims * LOG_2PI + np.log(self.variances).sum(axis=2))
            self._cache = (inv_var, scale, offset, log_const)
        return self._cache

    # -- construction
    @classmethod
    def flat_start(cls, n_states: int, data) -> "GmmSet":
        """Every state gets one Gaussian with the global mean and variance.

        ``data`` is either all training frames (N, D) or a pair (mean (D,), variance (D,)).
        """
        if isinstance(data, tuple):
            mean, var = (np.asarray(a, dtype=np.float64) for a in data)
        else:
            X = np.asarray(data, dtype=np.float64)
            if X.ndim != 2 or X.shape[0] == 0:
                raise HwrError(f"flat start needs a non-empty (frames, dims) array, got shape {X.shape}")
            if not np.isfinite(X).all():
                raise HwrError("features contain NaN or infinite values")
            mean, var = X.mean(axis=0), X.var(axis=0)
        if mean.ndim != 1 or var.shape != mean.shape or not (np.isfinite(mean).all() and np.isfinite(var).all()):
            raise HwrError("flat start needs a finite mean and variance of the same length")
        if n_states < 1:
            raise ValueError("n_states must be positive")
        var = np.maximum(var, MIN_VARIANCE)
        D = mean.shape[0]
        return cls(np.broadcast_to(mean, (n_states, 1, D)).copy(),
                   np.broadcast_to(var, (n_states, 1, D)).copy(),
                   np.zeros((n_states, 1)))

    # -- evaluation
    def log_likelihoods(self, X, states=None) -> np.ndarray:
        """(T, S) float64 log-densities log p(x_t | s) of frames X (T, D). Never NaN.

        With ``states`` (indices), only those columns: (T, len(states)), e.g. the states of
        one line's graph during training.
        """
        X = _check_features(X, self.n_dims)
        if states is None:
            states = np.arange(self.n_states)
        else:
            states = np.asarray(states, dtype=np.int64).ravel()
            if states.size and (states.min() < 0 or states.max() >= self.n_states):
                raise ValueError(f"state ids must lie in [0, {self.n_states})")
        out = np.empty((X.shape[0], states.shape[0]))
        if X.shape[0] and states.shape[0]:
            _, scale, offset, log_const = self._kernel_params()
            _log_likelihoods_kernel(np.ascontiguousarray(X.T), scale, offset, log_const, states, out)
        return out

    # -- mixture growth
    def split(self, target_m: int) -> "GmmSet":
        """New set where every state has ``target_m`` live components (states with more keep theirs).

        As HTK's HHEd MU: repeatedly split the heaviest component in two, with means moved by
        +-0.2 standard deviations along every dimension, the same variances and half the weight.
        With equal weights this doubles 1 -> 2 -> 4 ...
        """
        if target_m < 1:
            raise ValueError("target_m must be positive")
        S, M, D = self.means.shape
        new_m = max(M, target_m)
        means = np.empty((S, new_m, D))
        variances = np.empty((S, new_m, D))
        weights = np.zeros((S, new_m))
        means[:, :M], variances[:, :M], weights[:, :M] = self.means, self.variances, self.weights
        means[:, M:], variances[:, M:] = self.means[:, :1], self.variances[:, :1]
        live = np.zeros((S, new_m), dtype=bool)
        live[:, :M] = self.live
        for s in np.flatnonzero(live.sum(axis=1) < target_m):
            for slot in np.flatnonzero(~live[s])[: target_m - live[s].sum()]:
                _split_heaviest(means, variances, weights, live, s, slot)
        return GmmSet(means, variances, _log_weights(weights, live))

    # -- M-step
    @classmethod
    def from_summaries(cls, acc: "GmmAccumulator", var_floor, weight_floor: float = 1e-3,
                       min_count: float = 3.0, previous: "GmmSet | None" = None) -> "GmmSet":
        """Re-estimated GMMs from accumulated statistics (the M-step).

        var_floor: absolute variance floor, scalar or (D,), usually ``fraction * global_var``
            with fraction 0.01..0.1 (``MIN_VARIANCE`` applies on top of it).
        weight_floor: smallest mixture weight of a live component (then renormalised).
        min_count: a component with less occupancy than this is not re-estimated; it is
            replaced by a split of its state's heaviest re-estimated component. A state whose
            components all fall below it keeps its previous parameters unchanged.
        previous: the model the statistics were collected with (default: ``acc.reference``).
        """
        prev = acc.reference if previous is None else previous
        if prev is None:
            raise ValueError("from_summaries needs the previous GmmSet: the accumulator is empty")
        if prev.means.shape != acc.first_order.shape:
            raise ValueError(f"accumulator shape {acc.first_order.shape} does not match the GMMs {prev.means.shape}")
        floor = np.asarray(var_floor, dtype=np.float64)
        if floor.shape not in ((), (prev.n_dims,)) or not np.isfinite(floor).all() or (floor < 0).any():
            raise HwrError(f"variance floor must be a finite non-negative scalar or {prev.n_dims} values")
        floor = np.maximum(floor, MIN_VARIANCE)

        occ = acc.occupancy
        live = prev.live
        with np.errstate(all="ignore"):
            shift = acc.first_order / occ[:, :, None]
            means = prev.means + shift
            variances = acc.second_order / occ[:, :, None] - shift * shift
        estimated = (live & (occ >= min_count)
                     & np.isfinite(means).all(axis=2) & np.isfinite(variances).all(axis=2))
        variances = np.where(estimated[:, :, None], np.maximum(variances, floor), prev.variances)
        means = np.where(estimated[:, :, None], means, prev.means)
        weights = np.where(estimated, occ, 0.0)
        updated = estimated.any(axis=1)
        weights[updated] /= weights[updated].sum(axis=1, keepdims=True)
        weights[~updated] = prev.weights[~updated]

        new_live = np.where(updated[:, None], estimated, live)
        for s in np.flatnonzero(updated & (estimated != live).any(axis=1)):
            for slot in np.flatnonzero(live[s] & ~estimated[s]):
                _split_heaviest(means, variances, weights, new_live, s, slot)
        # Weight floor (never more than an equal share), then renormalise.
        share = np.minimum(weight_floor, 1.0 / np.maximum(new_live.sum(axis=1, keepdims=True), 1))
        weights = np.where(new_live, np.maximum(weights, share), 0.0)
        weights /= weights.sum(axis=1, keepdims=True)
        return cls(means, variances, _log_weights(weights, new_live))

    # -- storage
    def to_arrays(self, prefix: str = "") -> dict:
        """Plain arrays for ``np.savez`` (no pickle needed)."""
        return {prefix + "means": np.array(self.means), prefix + "variances": np.array(self.variances),
                prefix + "log_weights": np.array(self.log_weights)}

    def save(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` of :class:`hybrid_hwr.emission.Emission` (a GMM needs no description)."""
        return self.to_arrays(), {}

    @classmethod
    def load(cls, arrays: Mapping, meta: Mapping | None = None) -> "GmmSet":
        """Inverse of :meth:`save`."""
        return cls.from_arrays(arrays)

    @classmethod
    def from_arrays(cls, arrays: Mapping, prefix: str = "", source: str = "GMM arrays") -> "GmmSet":
        """Inverse of :meth:`to_arrays`; HwrError naming ``source`` if anything is missing or corrupt."""
        values = []
        for name in ("means", "variances", "log_weights"):
            key = prefix + name
            try:
                values.append(np.asarray(arrays[key]))
            except KeyError:
                raise HwrError(f"{source}: missing array '{key}'") from None
            except Exception as exc:  # e.g. a truncated member of an .npz file
                raise HwrError(f"{source}: cannot read array '{key}': {exc}") from None
        return cls(*values, source=source)


def _validated(means, variances, log_weights, source):
    arrays = {"means": means, "variances": variances, "log_weights": log_weights}
    for name, a in arrays.items():
        a = np.asarray(a)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise HwrError(f"{source}: array '{name}' has non-numeric type {a.dtype}")
        arrays[name] = np.array(a, dtype=np.float64, order="C")
    means, variances, log_weights = arrays["means"], arrays["variances"], arrays["log_weights"]
    if means.ndim != 3 or 0 in means.shape:
        raise HwrError(f"{source}: 'means' must be a non-empty (states, components, dims) array, "
                       f"got shape {means.shape}")
    if variances.shape != means.shape:
        raise HwrError(f"{source}: 'variances' has shape {variances.shape}, 'means' {means.shape}")
    if log_weights.shape != means.shape[:2]:
        raise HwrError(f"{source}: 'log_weights' has shape {log_weights.shape}, expected {means.shape[:2]}")
    if not np.isfinite(means).all():
        raise HwrError(f"{source}: 'means' contains NaN or infinite values")
    bad = ~(np.isfinite(variances) & (variances > 0))
    if bad.any():
        s, m, d = np.argwhere(bad)[0]
        raise HwrError(f"{source}: 'variances' must be finite and positive "
                       f"({int(bad.sum())} bad values, first at state {s} component {m} dim {d})")
    if np.isnan(log_weights).any() or (log_weights == np.inf).any():
        raise HwrError(f"{source}: 'log_weights' contains NaN or +inf")
    live = np.isfinite(log_weights)
    if not live.any(axis=1).all():
        s = int(np.flatnonzero(~live.any(axis=1))[0])
        raise HwrError(f"{source}: state {s} has no component with a finite log weight")
    with np.errstate(under="ignore"):
        total = np.exp(log_weights).sum(axis=1)
    if np.abs(total - 1.0).max() > 1e-6:
        s = int(np.argmax(np.abs(total - 1.0)))
        raise HwrError(f"{source}: mixture weights of state {s} sum to {total[s]:.6g}, not 1")
    return means, variances, log_weights


def _log_weights(weights, live):
    # A live weight that underflowed to 0 stays live (log of the smallest normal double).
    return np.where(live, np.log(np.maximum(np.where(live, weights, 1.0), np.finfo(np.float64).tiny)), -np.inf)


def _split_heaviest(means, variances, weights, live, s, slot):
    """In place: split state s's heaviest live component into itself and the empty ``slot``."""
    h = int(np.argmax(np.where(live[s], weights[s], -1.0)))
    step = SPLIT_OFFSET * np.sqrt(variances[s, h])
    means[s, slot] = means[s, h] - step
    means[s, h] = means[s, h] + step
    variances[s, slot] = variances[s, h]
    weights[s, h] *= 0.5
    weights[s, slot] = weights[s, h]
    live[s, slot] = True


# ----------------------------------------------------------------------------- statistics


class GmmAccumulator:
    """Sufficient statistics for re-estimating a GmmSet; accumulators add up with ``+``.

    occupancy (S, M): sum of w * r over (frame, state) pairs, r = component responsibility
    first_order, second_order (S, M, D): sum of w * r * (x - mu) and w * r * (x - mu)^2,
        centred on the means of ``reference``, the GmmSet the statistics were collected with
    log_likelihood: sum of w * log p(x_t | s);  n_frames: sum of w (the weighted frame count)
    """

    def __init__(self, n_states: int, n_components: int, n_dims: int):
        self.occupancy = np.zeros((n_states, n_components))
        self.first_order = np.zeros((n_states, n_components, n_dims))
        self.second_order = np.zeros((n_states, n_components, n_dims))
        self.log_likelihood = 0.0
        self.n_frames = 0.0
        self.reference: GmmSet | None = None

    @classmethod
    def like(cls, gmms: GmmSet) -> "GmmAccumulator":
        return cls(*gmms.means.shape)

    def _adopt(self, gmms):
        if gmms.means.shape != self.first_order.shape:
            raise ValueError(f"GMMs of shape {gmms.means.shape} do not fit an accumulator of "
                             f"shape {self.first_order.shape}")
        if self.reference is None:
            self.reference = gmms
        elif not _same_model(self.reference, gmms):
            raise ValueError("statistics collected with different GMMs cannot be combined")

    def accumulate(self, gmms: GmmSet, X, frame_ids, state_ids, weights=None) -> float:
        """Adds the frames X[frame_ids[i]] to states state_ids[i] with weight weights[i].

        Weights are state posteriors (Baum-Welch) or 1 (Viterbi training; default);
        repeated (frame, state) pairs are merged first. Returns the added sum of
        w * log p(x | s).
        """
        self._adopt(gmms)
        X = _check_features(X, gmms.n_dims)
        frames = np.asarray(frame_ids, dtype=np.int64).ravel()
        states = np.asarray(state_ids, dtype=np.int64).ravel()
        w = np.ones(frames.shape) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
        if not frames.shape == states.shape == w.shape:
            raise ValueError("frame_ids, state_ids and weights must have the same length")
        if frames.size and (frames.min() < 0 or frames.max() >= X.shape[0]):
            raise ValueError(f"frame ids must lie in [0, {X.shape[0]})")
        if states.size and (states.min() < 0 or states.max() >= gmms.n_states):
            raise ValueError(f"state ids must lie in [0, {gmms.n_states})")
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise ValueError("weights must be finite and non-negative")
        keep = w > 0
        key = states[keep] * X.shape[0] + frames[keep]
        key, where = np.unique(key, return_inverse=True)  # sorted by state: parameters stay in cache
        w = np.bincount(where.ravel(), weights=w[keep], minlength=key.size)
        inv_var, _, _, log_const = gmms._kernel_params()
        loglik = _accumulate_kernel(X, key % X.shape[0], key // X.shape[0], w, gmms.means, inv_var,
                                    log_const, self.occupancy, self.first_order, self.second_order)
        self.log_likelihood += loglik
        self.n_frames += float(w.sum())
        return float(loglik)

    def accumulate_path(self, gmms: GmmSet, X, state_path) -> float:
        """Viterbi training: frame t belongs to state state_path[t] with weight 1 (-1 = skip frame)."""
        path = np.asarray(state_path, dtype=np.int64).ravel()
        if path.shape[0] != np.shape(X)[0]:
            raise ValueError("state_path must have one state per frame")
        frames = np.flatnonzero(path >= 0)
        return self.accumulate(gmms, X, frames, path[frames])

    def copy(self) -> "GmmAccumulator":
        new = GmmAccumulator(*self.first_order.shape)
        new += self
        return new

    def __iadd__(self, other: "GmmAccumulator") -> "GmmAccumulator":
        if not isinstance(other, GmmAccumulator):
            return NotImplemented
        if other.reference is not None:
            self._adopt(other.reference)
        elif other.first_order.shape != self.first_order.shape:
            raise ValueError("accumulators of different shapes cannot be combined")
        self.occupancy += other.occupancy
        self.first_order += other.first_order
        self.second_order += other.second_order
        self.log_likelihood += other.log_likelihood
        self.n_frames += other.n_frames
        return self

    def __add__(self, other: "GmmAccumulator") -> "GmmAccumulator":
        if not isinstance(other, GmmAccumulator):
            return NotImplemented
        return self.copy().__iadd__(other)

    def __radd__(self, other):  # lets sum(list_of_accumulators) work
        if isinstance(other, int) and other == 0:
            return self.copy()
        return NotImplemented


def _same_model(a: GmmSet, b: GmmSet) -> bool:
    return a is b or (np.array_equal(a.means, b.means) and np.array_equal(a.variances, b.variances)
                      and np.array_equal(a.log_weights, b.log_weights))


# ----------------------------------------------------------------------------- reference


def log_likelihoods_numpy(gmms: GmmSet, X) -> np.ndarray:
    """Plain-NumPy log_likelihoods (the scikit-learn formulation: expanded square as matrix
    products). Used by the benchmark as the speed reference; less accurate far from the means.
    """
    X = _check_features(X, gmms.n_dims)
    S, M, D = gmms.means.shape
    inv_var = (1.0 / gmms.variances).reshape(S * M, D)
    mu = gmms.means.reshape(S * M, D)
    const = (gmms.log_weights.reshape(-1) - 0.5 * (D * LOG_2PI + np.log(gmms.variances).reshape(S * M, D).sum(1))
             - 0.5 * (mu * mu * inv_var).sum(1))
    comp = const + X @ (mu * inv_var).T - 0.5 * ((X * X) @ inv_var.T)
    comp = comp.reshape(-1, S, M)
    peak = comp.max(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", under="ignore"):
        out = peak[:, :, 0] + np.log(np.exp(comp - peak).sum(axis=2))
    return np.where(np.isfinite(peak[:, :, 0]), out, -np.inf)
