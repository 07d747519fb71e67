"""Hybrid MLP/HMM emissions: a multilayer perceptron that turns frames into HMM-state scores.

The network is a frame classifier trained on forced alignments (targets q_t from the
GMM-HMM): its input is frame t with its context, the normalised features of frames
t-k .. t+k (the first and last frame of a line repeated at the edges), and its output
a softmax over all S emitting HMM states, trained to minimise -log p(q_t | x_t)::

    h_0 = [x_{t-k}; ...; x_{t+k}]             (2k+1) D inputs, each x normalised and clipped
    h_l = f(h_{l-1} W_l + b_l)                f = relu | sigmoid | tanh, l = 1 .. L hidden layers
    p(s | x_t) = softmax(h_L W_out + b_out)_s

In the HMM the posteriors become scaled likelihoods (Bourlard & Morgan), with state
priors p(s) from the alignment's state counts (floored) and a prior scale kappa::

    log_likelihoods(x_t)[s] = log p(s | x_t) - kappa log p(s)

so :class:`MlpEmission` replaces a :class:`~hybrid_hwr.gmm.GmmSet` in alignment and
decoding unchanged: both are :class:`hybrid_hwr.emission.Emission` (``emission_type``,
``n_states``, ``log_likelihoods(X, states)``, ``prior_scale``, ``save()``/``load()``).

Training is mini-batch SGD with momentum, or Adam, on float32 with BLAS matrix
products, an optional L2 weight decay, and He (ReLU) or Glorot (sigmoid/tanh)
initialisation from a seeded generator, so that a seed gives the same weights.
Regularisation: inverted dropout on the hidden layers and Gaussian noise on the
normalised inputs, both drawn from the training generator (a seed gives the same run),
and neither used at inference. After
every epoch the frame error rate (FER) on the validation frames decides: the best
epoch's weights are kept, the learning rate is halved when the FER did not improve by
``min_improvement`` (newbob), and training stops after ``patience`` such epochs (or
``max_epochs``, or the ``max_seconds`` budget). Train and validation loss and FER of
every epoch are kept in ``history_`` and saved with the model.

Why NumPy code of our own rather than scikit-learn's MLPClassifier: MLPClassifier needs
the whole (N, (2k+1) D) input matrix in memory (1.5 M frames x 504 inputs = 3 GB in
float32, far more for pixel windows) where the context windows here are gathered per
mini-batch from the (N, D) frames; its early stopping watches the validation accuracy
of a random split of frames, not of whole held-out lines, and it has no learning-rate
halving on a stalled validation FER; and it does not expose the per-epoch validation
FER or store the model without pickle. The network itself is ~150 lines here.

Memory while training on N frames of D features: the normalised frames once, padded per
line (N D float32: 336 MB for 1.5 M x 56), the frame positions (8 N bytes) and the
parameters with their optimiser state (4 copies of ~1 M floats); never the context matrix.
One epoch over 1.5 M frames (504 inputs, 1024 hidden units, 600 states) takes about
2 minutes on one core with 1.1 GB peak memory (``benchmarks/mlp.py``).
"""

from __future__ import annotations

import math
import time
from typing import Callable, Mapping, Sequence

import numba
import numpy as np

from hybrid_hwr.errors import HwrError

ACTIVATIONS = ("relu", "sigmoid", "tanh")
SOLVERS = ("adam", "sgd")
MAX_LAYER, MAX_LAYERS, MAX_CONTEXT = 65536, 32, 100   # far above useful sizes: larger would exhaust memory
# Rows per forward pass at evaluation time: big enough for BLAS, small enough for memory.
EVAL_CHUNK = 4096
# Adam's constants (Kingma & Ba defaults).
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.9, 0.999, 1e-8
# Training keeps subnormal floats out of its arithmetic: on many CPUs each operation on one
# costs ~100 times a normal one, and a network that grows confident makes more of them
# (softmax outputs below 1e-38; the Adam moments of weights whose gradient is zero decay
# through that range): without this, training the default model fell from 11.9k to 5.0k
# frames/s between its first and sixth epoch.
# Softmax outputs below PROB_FLOOR count as 0 in the gradient; optimiser moments below
# STATE_FLOOR are set to 0 and gradients below GRAD_FLOOR read as 0 (their Adam steps are
# under 1e-7 of the learning rate, as ADAM_EPS dominates the denominator).
PROB_FLOOR, STATE_FLOOR, GRAD_FLOOR = 1e-30, 1e-30, 1e-16
LOG_PROB_FLOOR = math.log(PROB_FLOOR)
# Per-dimension standard deviations below this fraction of the mean one are floored: a
# feature (or pixel) that is constant in training must not blow up at test time.
SCALE_FLOOR = 1e-3


# ----------------------------------------------------------------------------- network


def _activate(z, activation):
    """f(z) in place; returns z."""
    if activation == "relu":
        np.maximum(z, 0, out=z)
    elif activation == "sigmoid":
        # 1 / (1 + exp(-z)); exp overflow to inf gives 0, the right limit.
        with np.errstate(over="ignore"):
            np.negative(z, out=z)
            np.exp(z, out=z)
        z += 1
        np.reciprocal(z, out=z)
    else:
        np.tanh(z, out=z)
    return z


def _activation_grad(delta, h, activation):
    """delta * f'(z), written into delta, with f' expressed through the output h = f(z)."""
    if activation == "relu":
        np.multiply(delta, h > 0, out=delta)
    elif activation == "sigmoid":
        delta *= h * (1 - h)
    else:
        delta *= 1 - h * h
    return delta


def forward(weights, biases, X, activation, masks=None):
    """Hidden outputs [X, h_1, ..., h_L] and the output logits of a batch X (B, inputs).

    ``masks`` (training only): one (B, units) array per hidden layer, 0 for a dropped unit
    and 1/(1-p) for a kept one (inverted dropout: inference needs no rescaling); the
    outputs are then the masked ones.
    """
    outputs = [X]
    for layer, (W, b) in enumerate(zip(weights[:-1], biases[:-1])):
        z = outputs[-1] @ W
        z += b
        h = _activate(z, activation)
        if masks is not None:
            h *= masks[layer]
        outputs.append(h)
    logits = outputs[-1] @ weights[-1]
    logits += biases[-1]
    return outputs, logits


def log_softmax(logits):
    """Row-wise log-softmax, stable for any finite logits (new array)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    with np.errstate(under="ignore"):
        shifted -= np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted


def backward(weights, biases, X, targets, activation, weight_decay=0.0, masks=None):
    """Loss and gradients of one batch: mean_t -log p(targets_t | X_t) + weight_decay/2 sum ||W||^2.

    ``masks``: dropout masks of the hidden layers, as in :func:`forward` (the gradients
    are those of the masked network). Returns (loss, n_errors, grad_weights, grad_biases)
    in the dtype of the parameters (float32 in training; the gradient check runs it in float64).
    """
    outputs, logits = forward(weights, biases, X, activation, masks)
    B = X.shape[0]
    rows = np.arange(B)
    n_errors = int(np.count_nonzero(logits.argmax(axis=1) != targets))
    logits -= logits.max(axis=1, keepdims=True)
    target_logits = logits[rows, targets]
    np.maximum(logits, LOG_PROB_FLOOR, out=logits)   # exp stays a normal float (see PROB_FLOOR)
    np.exp(logits, out=logits)
    total = logits.sum(axis=1, keepdims=True)
    loss = float((np.log(total[:, 0]) - target_logits).mean(dtype=np.float64))
    # d loss / d logits = (softmax - onehot) / B
    delta = logits
    delta /= total
    np.multiply(delta, delta > PROB_FLOOR, out=delta)
    delta[rows, targets] -= 1
    delta *= 1.0 / B
    grad_w = [None] * len(weights)
    grad_b = [None] * len(biases)
    for layer in range(len(weights) - 1, -1, -1):
        h = outputs[layer]
        grad_w[layer] = h.T @ delta
        grad_b[layer] = delta.sum(axis=0)
        if weight_decay:
            grad_w[layer] += weight_decay * weights[layer]
            loss += 0.5 * weight_decay * float(np.square(weights[layer], dtype=np.float64).sum())
        if layer > 0:  # no gradient needed for the inputs
            delta = delta @ weights[layer].T
            if masks is not None:
                mask = masks[layer - 1]
                delta *= mask
                if activation != "relu":  # f' needs f(z) itself: undo the kept units' scaling
                    h = np.divide(h, mask, out=np.zeros_like(h), where=mask != 0)
            delta = _activation_grad(delta, h, activation)
    return loss, n_errors, grad_w, grad_b


@numba.njit(cache=True, fastmath=True)
def _adam_update(w, g, m, v, step_size, beta1, one_minus_beta1, beta2, one_minus_beta2, eps,
                 grad_floor, state_floor):
    """One fused Adam step on flat float32 arrays (bias correction folded into step_size).

    All constants come in as float32: a Python literal in the loop would promote it to float64.
    Gradients below ``grad_floor`` and moments below ``state_floor`` become 0, so that no
    operation meets a subnormal number (see STATE_FLOOR).
    """
    zero = grad_floor - grad_floor
    for i in range(w.shape[0]):
        gi = g[i]
        if abs(gi) < grad_floor:
            gi = zero
        mi = beta1 * m[i] + one_minus_beta1 * gi
        vi = beta2 * v[i] + one_minus_beta2 * gi * gi
        if abs(mi) < state_floor:
            mi = zero
        if vi < state_floor:
            vi = zero
        m[i] = mi
        v[i] = vi
        w[i] -= step_size * mi / (np.sqrt(vi) + eps)


@numba.njit(cache=True, fastmath=True)
def _momentum_update(w, g, velocity, learning_rate, momentum, state_floor):
    """One fused SGD-with-momentum step on flat arrays (velocities below ``state_floor`` become 0)."""
    for i in range(w.shape[0]):
        vi = momentum * velocity[i] - learning_rate * g[i]
        if abs(vi) < state_floor:
            vi = state_floor - state_floor
        velocity[i] = vi
        w[i] += vi


class _Optimizer:
    """Adam or momentum SGD over a list of parameter arrays (updated in place).

    The fused kernels read and write every parameter once per step, where NumPy
    expressions would make ~10 passes: this matters next to the matrix products.
    """

    def __init__(self, params, solver, momentum):
        self.params = params
        self.solver = solver
        self.momentum = momentum
        self.steps = 0
        self.state = [[np.zeros(p.size, dtype=p.dtype) for p in params]
                      for _ in range(2 if solver == "adam" else 1)]

    def step(self, grads, learning_rate):
        self.steps += 1
        if self.solver == "adam":
            t = self.steps
            step_size = learning_rate * math.sqrt(1 - ADAM_BETA2 ** t) / (1 - ADAM_BETA1 ** t)
            for p, g, m, v in zip(self.params, grads, *self.state):
                dt = p.dtype.type
                _adam_update(p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1), m, v,
                             dt(step_size), dt(ADAM_BETA1), dt(1 - ADAM_BETA1), dt(ADAM_BETA2),
                             dt(1 - ADAM_BETA2), dt(ADAM_EPS), dt(GRAD_FLOOR), dt(STATE_FLOOR))
        else:
            for p, g, velocity in zip(self.params, grads, self.state[0]):
                dt = p.dtype.type
                _momentum_update(p.reshape(-1), np.ascontiguousarray(g, dtype=p.dtype).reshape(-1), velocity,
                                 dt(learning_rate), dt(self.momentum), dt(STATE_FLOOR))


# ----------------------------------------------------------------------------- context windows


class ContextFrames:
    """All frames of a set of lines, ready for gathering context windows batch by batch.

    Each line is stored with ``context`` copies of its first and last frame around it in
    one padded float32 matrix, so that the window of any frame is a plain row range:
    ``batch(ids)`` gathers (B, (2k+1) D) rows for frame ids in [0, n_frames) without ever
    building the context matrix of the whole set.
    """

    def __init__(self, feats: Sequence[np.ndarray], context: int, mean=None, scale=None, clip=None):
        self.context = int(context)
        lengths = np.array([len(f) for f in feats], dtype=np.int64)
        self.n_frames = int(lengths.sum())
        self.n_dims = int(feats[0].shape[1]) if len(feats) else 0
        k = self.context
        padded = np.empty((self.n_frames + 2 * k * len(feats), self.n_dims), dtype=np.float32)
        centres = np.empty(self.n_frames, dtype=np.int64)
        row = frame = 0
        for f, T in zip(feats, lengths):
            if T == 0:
                row += 2 * k
                continue
            block = padded[row: row + T + 2 * k]
            block[k: k + T] = f
            if mean is not None:
                block[k: k + T] -= mean
                block[k: k + T] *= scale
            if clip is not None:
                np.clip(block[k: k + T], -clip, clip, out=block[k: k + T])
            block[:k] = block[k]
            block[k + T:] = block[k + T - 1]
            centres[frame: frame + T] = np.arange(row + k, row + k + T)
            row += T + 2 * k
            frame += T
        self.padded = padded
        self.centres = centres
        self._offsets = np.arange(-k, k + 1, dtype=np.int64)

    @property
    def n_inputs(self) -> int:
        return (2 * self.context + 1) * self.n_dims

    def batch(self, frame_ids, out=None) -> np.ndarray:
        """(B, (2k+1) D) float32 inputs of frames ``frame_ids``: rows t-k .. t+k side by side."""
        rows = self.centres[frame_ids][:, None] + self._offsets
        if out is None:
            out = np.empty((len(rows), self.n_inputs), dtype=np.float32)
        # mode="clip": rows are valid by construction, and "raise" would buffer the output.
        np.take(self.padded, rows, axis=0, out=out.reshape(len(rows), len(self._offsets), self.n_dims), mode="clip")
        return out


# ----------------------------------------------------------------------------- model


def _check_line(X, n_dims, what="features"):
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != n_dims:
        raise HwrError(f"{what} have shape {X.shape}, the MLP expects (frames, {n_dims})")
    if not np.isfinite(X).all():
        raise HwrError(f"{what} contain NaN or infinite values")
    return X


class MlpEmission:
    """MLP state posteriors as HMM emission scores (scaled likelihoods).

    Parameters (stored as given; checked by ``fit``):

    hidden_layers: sizes of the hidden layers, e.g. (1024,) shallow or (512, 512, 512) deep
    context: k, frames on each side of the centre frame in the input window
    activation: "relu", "sigmoid" or "tanh" for the hidden layers
    solver: "adam" or "sgd" (with ``momentum``)
    learning_rate: initial step size (halved by newbob, see ``lr_decay``)
    weight_decay: L2 penalty weight_decay/2 sum ||W||^2 on the weight matrices (not biases)
    batch_size: frames per mini-batch (shuffled over all training frames every epoch)
    max_epochs, patience: stop after ``max_epochs``, or after ``patience`` epochs whose
        validation FER did not improve on the best by ``min_improvement`` (absolute)
    lr_decay: learning-rate factor after each such epoch (0.5: newbob halving)
    max_seconds: time budget; no new epoch starts if it would end after the budget
    prior_scale: kappa in log p(s|x) - kappa log p(s) (0 gives plain log-posteriors)
    prior_floor: smallest state prior (states rare or absent in the alignment), then renormalised
    normalize_inputs: standardise every input dimension with the training frames' mean
        and standard deviation (a no-op on features that are already normalised)
    input_clip: normalised inputs are clipped to +-input_clip (outliers cannot overflow)
    validation_fraction: share of training lines held out when ``fit`` gets no validation set
    warm_start: ``fit`` continues from the current weights and history (resume, retraining
        after realignment) instead of a fresh initialisation
    threads: BLAS threads during ``fit`` (None: the BLAS default). 1 by default: on a machine
        whose other core is busy, two OpenBLAS threads wait for each other and run ~5x
        slower than one; with both cores free, 2 is ~1.7x faster than 1
    dropout: share p of hidden units dropped in every training batch (inverted dropout:
        kept units are scaled by 1/(1-p), so inference uses the network as it is)
    input_noise: standard deviation of Gaussian noise added to the normalised inputs of
        every training batch (0: none)
    epoch_frames: train each epoch on a fresh random sample of this many training frames
        (None: all of them), so validation, newbob, checkpoints and the time budget act
        every ``epoch_frames`` frames on large data
    seed: seeds initialisation, shuffling, dropout masks, input noise and the held-out split

    Fitted attributes: ``weights_``/``biases_`` (float32, input layer first), ``log_priors_`` (S,),
    ``input_mean_``/``input_scale_`` (D,), ``history_`` (one dict per epoch), ``best_epoch_``.
    """

    emission_type = "mlp"

    def __init__(self, hidden_layers=(1024,), context=4, activation="relu", solver="adam",
                 learning_rate=1e-3, momentum=0.9, weight_decay=0.0, batch_size=256, max_epochs=30,
                 patience=3, min_improvement=0.002, lr_decay=0.5, max_seconds=None, prior_scale=1.0,
                 prior_floor=1e-5, normalize_inputs=True, input_clip=30.0, validation_fraction=0.1,
                 warm_start=False, threads=1, dropout=0.0, input_noise=0.0, epoch_frames=None, seed=0):
        self.hidden_layers = hidden_layers
        self.context = context
        self.activation = activation
        self.solver = solver
        self.learning_rate = learning_rate
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.min_improvement = min_improvement
        self.lr_decay = lr_decay
        self.max_seconds = max_seconds
        self.prior_scale = prior_scale
        self.prior_floor = prior_floor
        self.normalize_inputs = normalize_inputs
        self.input_clip = input_clip
        self.validation_fraction = validation_fraction
        self.warm_start = warm_start
        self.threads = threads
        self.dropout = dropout
        self.input_noise = input_noise
        self.epoch_frames = epoch_frames
        self.seed = seed

    _PARAMS = ("hidden_layers", "context", "activation", "solver", "learning_rate", "momentum", "weight_decay",
               "batch_size", "max_epochs", "patience", "min_improvement", "lr_decay", "max_seconds",
               "prior_scale", "prior_floor", "normalize_inputs", "input_clip", "validation_fraction",
               "warm_start", "threads", "dropout", "input_noise", "epoch_frames", "seed")

    def get_params(self) -> dict:
        params = {name: getattr(self, name) for name in self._PARAMS}
        params = {k: v.item() if isinstance(v, np.generic) else v for k, v in params.items()}  # JSON-safe
        params["hidden_layers"] = [int(n) for n in params["hidden_layers"]]
        return params

    def check_params(self) -> list[int]:
        """The hidden layer sizes; a one-line HwrError on any bad setting (call before costly work)."""
        def bad(msg):
            raise HwrError(f"MLP: {msg}")

        try:
            hidden = [int(n) for n in self.hidden_layers]
        except (TypeError, ValueError):
            bad(f"hidden_layers must be a list of layer sizes, got {self.hidden_layers!r}")
        if any(n < 1 for n in hidden):
            bad(f"hidden layer sizes must be positive, got {hidden}")
        if any(n > MAX_LAYER for n in hidden) or len(hidden) > MAX_LAYERS:   # would exhaust memory, not train
            bad(f"at most {MAX_LAYERS} hidden layers of at most {MAX_LAYER} units, got {hidden}")
        if not (isinstance(self.context, (int, np.integer)) and 0 <= self.context <= MAX_CONTEXT):
            bad(f"context must be an integer from 0 to {MAX_CONTEXT}, got {self.context!r}")
        if self.activation not in ACTIVATIONS:
            bad(f"unknown activation {self.activation!r} (one of {', '.join(ACTIVATIONS)})")
        if self.solver not in SOLVERS:
            bad(f"unknown solver {self.solver!r} (one of {', '.join(SOLVERS)})")
        for name in ("learning_rate", "batch_size", "max_epochs", "prior_floor", "input_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value > 0):
                bad(f"{name} must be a positive number, got {value!r}")
        for name in ("momentum", "weight_decay", "min_improvement", "prior_scale", "patience", "input_noise"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.number)) and math.isfinite(value) and value >= 0):
                bad(f"{name} must be a non-negative number, got {value!r}")
        if not (isinstance(self.dropout, (int, float, np.number)) and 0 <= self.dropout < 1):
            bad(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.epoch_frames is not None and not (isinstance(self.epoch_frames, (int, np.integer))
                                                  and not isinstance(self.epoch_frames, bool) and self.epoch_frames >= 1):
            bad(f"epoch_frames must be a positive integer or None, got {self.epoch_frames!r}")
        if not 0 < self.lr_decay <= 1:
            bad(f"lr_decay must lie in (0, 1], got {self.lr_decay!r}")
        if not 0 <= self.validation_fraction < 1:
            bad(f"validation_fraction must lie in [0, 1), got {self.validation_fraction!r}")
        if self.prior_floor >= 1:
            bad("prior_floor must be below 1")
        if self.threads is not None and not (isinstance(self.threads, (int, np.integer)) and self.threads >= 1):
            bad(f"threads must be a positive integer or None, got {self.threads!r}")
        return hidden

    # -- shape
    @property
    def n_states(self) -> int:
        return int(self.log_priors_.shape[0])

    @property
    def n_dims(self) -> int:
        """Features per frame D (the input layer has (2 context + 1) D units)."""
        return int(self.input_mean_.shape[0])

    @property
    def layer_sizes(self) -> list[int]:
        return [int(self.weights_[0].shape[0])] + [int(W.shape[1]) for W in self.weights_]

    @property
    def n_parameters(self) -> int:
        return int(sum(W.size + b.size for W, b in zip(self.weights_, self.biases_)))

    def __repr__(self):
        if hasattr(self, "weights_"):
            return (f"MlpEmission(layers={self.layer_sizes}, context={self.context}, activation={self.activation!r}, "
                    f"parameters={self.n_parameters})")
        return f"MlpEmission(hidden_layers={list(self.hidden_layers)}, context={self.context}, unfitted)"

    # -- evaluation
    def _frames(self, feats) -> ContextFrames:
        return ContextFrames(feats, self.context, self.input_mean_, self.input_scale_, float(self.input_clip))

    def _logit_chunks(self, frames: ContextFrames, ids=None):
        """Yields (frame ids, float32 output logits) for frames ``ids`` (default all), chunk by chunk."""
        ids = np.arange(frames.n_frames) if ids is None else ids
        buffer = np.empty((min(EVAL_CHUNK, len(ids)), frames.n_inputs), dtype=np.float32)
        for start in range(0, len(ids), EVAL_CHUNK):
            chunk = ids[start: start + EVAL_CHUNK]
            X = frames.batch(chunk, out=buffer[: len(chunk)])
            yield chunk, forward(self.weights_, self.biases_, X, self.activation)[1]

    def predict_log_proba(self, X) -> np.ndarray:
        """(T, S) float64 log-posteriors log p(s | x_t) of one line's frames X (T, D)."""
        self._check_fitted()
        X = _check_line(X, self.n_dims)
        if len(X) == 0:
            return np.empty((0, self.n_states))
        logits = np.concatenate([z for _, z in self._logit_chunks(self._frames([X]))]).astype(np.float64)
        # Logits are finite (clipped inputs, checked weights); an overflow to inf would be
        # a model far outside anything training produces: saturate rather than give NaN.
        np.clip(logits, -1e30, 1e30, out=logits)
        if np.isnan(logits).any():  # only reachable with absurd (yet finite) weights
            raise HwrError("the MLP's outputs overflow: its weights are out of range")
        return log_softmax(logits)

    def log_likelihoods(self, X, states=None) -> np.ndarray:
        """(T, S) float64 scaled log-likelihoods log p(s|x_t) - prior_scale log p(s). Never NaN.

        With ``states`` (indices), only those columns: (T, len(states)), as GmmSet.
        """
        if states is not None:
            states = np.asarray(states, dtype=np.int64).ravel()
            if states.size and (states.min() < 0 or states.max() >= self.n_states):
                raise ValueError(f"state ids must lie in [0, {self.n_states})")
        scores = self.predict_log_proba(X)
        scores -= float(self.prior_scale) * self.log_priors_
        return scores if states is None else scores[:, states]

    def frame_error_rate(self, feats_list, targets_list) -> float:
        """Share of frames (targets >= 0) whose most probable state is not the target."""
        self._check_fitted()
        feats_list = [_check_line(f, self.n_dims) for f in feats_list]
        targets = _check_targets(feats_list, targets_list, self.n_states)
        keep = np.flatnonzero(targets >= 0)
        if keep.size == 0:
            raise HwrError("frame error rate: no frame has a target state")
        return self._evaluate(self._frames(feats_list), targets, keep)[1]

    def _evaluate(self, frames, targets, ids):
        """(mean cross-entropy, FER) on frames ``ids``."""
        loss, errors = 0.0, 0
        for chunk, logits in self._logit_chunks(frames, ids):
            y = targets[chunk]
            errors += int(np.count_nonzero(logits.argmax(axis=1) != y))
            loss -= float(log_softmax(logits.astype(np.float64))[np.arange(len(chunk)), y].sum())
        return loss / len(ids), errors / len(ids)

    def _check_fitted(self):
        if not hasattr(self, "weights_"):
            raise HwrError("the MLP has not been trained (call fit or load a model)")

    # -- training
    def fit(self, train_feats, train_targets, valid_feats=None, valid_targets=None, n_states=None,
            log: Callable[[str], None] | None = None,
            on_epoch: Callable[["MlpEmission", dict], None] | None = None) -> "MlpEmission":
        """Train on lines of frames (T, D) and their state ids (T,) (-1 = frame without target).

        ``n_states``: size of the softmax (default: largest target + 1). Without a
        validation set, ``validation_fraction`` of the training lines are held out.
        ``log`` gets one progress line per epoch; ``on_epoch(self, record)`` runs after each
        epoch with the best weights so far in place (e.g. to save a checkpoint).
        """
        self.check_params()
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=self.threads, user_api="blas"):
            return self._fit(train_feats, train_targets, valid_feats, valid_targets, n_states, log, on_epoch)

    def _fit(self, train_feats, train_targets, valid_feats, valid_targets, n_states, log, on_epoch):
        hidden = self.check_params()
        t_start = time.time()
        train_feats = list(train_feats)
        if not train_feats:
            raise HwrError("MLP training needs at least one line")
        n_dims = np.shape(train_feats[0])[1] if np.ndim(train_feats[0]) == 2 else -1
        train_feats = [_check_line(f, n_dims, "training features") for f in train_feats]
        y_train = _check_targets(train_feats, train_targets, n_states)
        if valid_feats is None:
            train_feats, y_train, valid_feats, y_valid = self._hold_out(train_feats, y_train)
        else:
            valid_feats = [_check_line(f, n_dims, "validation features") for f in valid_feats]
            y_valid = _check_targets(valid_feats, valid_targets, n_states)
        S = int(n_states) if n_states is not None else int(max(y_train.max(), y_valid.max(initial=-1)) + 1)
        if S < 1:
            raise HwrError("MLP training: no frame has a target state")

        resume = self.warm_start and hasattr(self, "weights_")
        if resume:
            if self.n_dims != n_dims or self.n_states != S:
                raise HwrError(f"warm start: the MLP has {self.n_dims} features and {self.n_states} states, "
                               f"the data {n_dims} and {S}")
        else:
            self._initialise(train_feats, n_dims, hidden, S)
            self.history_ = []
            self.best_epoch_ = 0
        self.log_priors_ = state_log_priors(y_train, S, self.prior_floor)

        train = self._frames(train_feats)
        train_ids = np.flatnonzero(y_train >= 0)
        valid_ids = np.flatnonzero(y_valid >= 0)
        if valid_ids.size:
            valid = self._frames(valid_feats)
        else:  # too few lines to hold any out: early stopping watches the training frames
            valid, y_valid, valid_ids = train, y_train, train_ids
        if train_ids.size == 0:
            raise HwrError("MLP training: no training frame has a target state")
        del train_feats, valid_feats

        rng = np.random.default_rng([int(self.seed), len(self.history_)])
        params = self.weights_ + self.biases_
        optimizer = _Optimizer(params, self.solver, float(self.momentum))
        lr = float(self.history_[-1]["next_learning_rate"]) if self.history_ else float(self.learning_rate)
        best_fer = min((r["valid_fer"] for r in self.history_), default=math.inf)
        best = [p.copy() for p in params]
        stalled = 0
        for r in self.history_:
            stalled = 0 if r.get("improved") else stalled + 1
        batch = int(self.batch_size)
        buffer = np.empty((batch, train.n_inputs), dtype=np.float32)
        dropout, noise = float(self.dropout), float(self.input_noise)
        first_epoch = len(self.history_) + 1
        last_epoch = int(self.max_epochs)
        if resume and 0 < int(self.patience) <= stalled:   # the saved run had already converged
            if log is not None:
                log(f"no epoch to add: the last {stalled} epochs did not improve the best validation FER")
            last_epoch = 0
        elif resume and first_epoch > last_epoch and log is not None:
            log(f"no epoch to add: {first_epoch - 1} epochs already trained (at most {last_epoch} in all)")
        for epoch in range(first_epoch, last_epoch + 1):
            t0 = time.time()
            order = epoch_sample(rng, train_ids, self.epoch_frames)
            loss_sum, errors = 0.0, 0
            for start in range(0, len(order), batch):
                ids = order[start: start + batch]
                X = train.batch(ids, out=buffer[: len(ids)])
                if noise:
                    X += noise * rng.standard_normal(X.shape, dtype=np.float32)
                masks = dropout_masks(rng, len(ids), hidden, dropout) if dropout else None
                loss, n_err, gw, gb = backward(self.weights_, self.biases_, X, y_train[ids], self.activation,
                                               float(self.weight_decay), masks)
                optimizer.step(gw + gb, lr)
                loss_sum += loss * len(ids)
                errors += n_err
            train_seconds = time.time() - t0
            diverged = not (math.isfinite(loss_sum) and all(np.isfinite(p).all() for p in params))
            if diverged:  # back to the best weights, smaller steps
                for p, b in zip(params, best):
                    p[...] = b
                optimizer = _Optimizer(params, self.solver, float(self.momentum))
                valid_loss, valid_fer = math.inf, 1.0
            else:
                valid_loss, valid_fer = self._evaluate(valid, y_valid, valid_ids)
            improved = valid_fer < best_fer - float(self.min_improvement)
            if valid_fer < best_fer:
                best_fer = valid_fer
                self.best_epoch_ = epoch
                best = [p.copy() for p in params]
            stalled = 0 if improved else stalled + 1
            next_lr = lr if improved else lr * float(self.lr_decay)
            seconds = time.time() - t0
            record = {
                "epoch": epoch, "learning_rate": lr, "next_learning_rate": next_lr,
                "train_loss": _finite_or_none(loss_sum / len(order)), "train_fer": errors / len(order),
                "valid_loss": _finite_or_none(valid_loss), "valid_fer": valid_fer, "improved": bool(improved),
                "best": self.best_epoch_ == epoch, "diverged": diverged, "train_frames": int(len(order)),
                "seconds": round(seconds, 2),
                "train_frames_per_second": round(len(order) / max(train_seconds, 1e-9)),
            }
            self.history_.append(record)
            lr = next_lr
            # Leave the best weights in place between epochs only for the callback's view.
            current = [p.copy() for p in params] if on_epoch is not None else None
            if on_epoch is not None:
                for p, b in zip(params, best):
                    p[...] = b
                on_epoch(self, record)
                for p, c in zip(params, current):
                    p[...] = c
            if log is not None:
                log(f"epoch {epoch:3d}/{self.max_epochs}  lr {record['learning_rate']:.2e}  "
                    f"train loss {record['train_loss'] if record['train_loss'] is not None else float('nan'):.4f} "
                    f"FER {100 * record['train_fer']:.2f}%  valid loss "
                    f"{record['valid_loss'] if record['valid_loss'] is not None else float('nan'):.4f} "
                    f"FER {100 * valid_fer:.2f}%{' *' if record['best'] else '  '}  "
                    f"({seconds:.1f}s, {record['train_frames_per_second']} frames/s"
                    + (", diverged: restarted from the best weights" if diverged else "") + ")")
            if stalled >= int(self.patience) and self.patience > 0:
                break
            elapsed = time.time() - t_start
            if self.max_seconds is not None and elapsed + seconds > float(self.max_seconds):
                if log is not None:
                    log(f"stopping: the next epoch would exceed the budget of {self.max_seconds}s")
                break
        for p, b in zip(params, best):
            p[...] = b
        return self

    def _hold_out(self, feats, targets):
        """Split whole lines off the training set for validation (deterministic for the seed)."""
        n = len(feats)
        n_valid = int(round(self.validation_fraction * n))
        if n < 2 or n_valid == 0:
            return feats, targets, [], np.empty(0, dtype=np.int64)
        bounds = np.concatenate([[0], np.cumsum([len(f) for f in feats])])
        pick = np.zeros(n, dtype=bool)
        pick[np.random.default_rng([int(self.seed), 7]).choice(n, size=min(n_valid, n - 1), replace=False)] = True
        split = lambda keep: ([f for f, k in zip(feats, keep) if k],  # noqa: E731
                              np.concatenate([targets[bounds[i]: bounds[i + 1]] for i in np.flatnonzero(keep)]))
        train_f, train_y = split(~pick)
        valid_f, valid_y = split(pick)
        return train_f, train_y, valid_f, valid_y

    def _initialise(self, feats, n_dims, hidden, n_states):
        """Input normalisation from the training frames, then He / Glorot weights, zero biases."""
        if self.normalize_inputs:
            n = sum(len(f) for f in feats)
            total = np.zeros(n_dims)
            for f in feats:
                total += f.sum(axis=0, dtype=np.float64)
            mean = total / max(n, 1)
            sq = np.zeros(n_dims)
            for f in feats:
                sq += np.square(f - mean, dtype=np.float64).sum(axis=0)
            std = np.sqrt(sq / max(n, 1))
            std = np.maximum(std, max(SCALE_FLOOR * float(std.mean()), 1e-12))
            self.input_mean_ = mean.astype(np.float32)
            self.input_scale_ = (1.0 / std).astype(np.float32)
        else:
            self.input_mean_ = np.zeros(n_dims, dtype=np.float32)
            self.input_scale_ = np.ones(n_dims, dtype=np.float32)
        rng = np.random.default_rng(int(self.seed))
        sizes = [(2 * int(self.context) + 1) * n_dims] + hidden + [n_states]
        self.weights_, self.biases_ = [], []
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            if self.activation == "relu" and layer < len(sizes) - 2:
                W = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_in, fan_out))  # He
            else:
                limit = math.sqrt(6.0 / (fan_in + fan_out))  # Glorot
                W = rng.uniform(-limit, limit, size=(fan_in, fan_out))
            self.weights_.append(W.astype(np.float32))
            self.biases_.append(np.zeros(fan_out, dtype=np.float32))

    # -- storage
    def to_arrays(self) -> dict:
        """Plain arrays for ``np.savez``: weights_<l>, biases_<l>, log_priors, input_mean, input_scale."""
        self._check_fitted()
        arrays = {"log_priors": np.array(self.log_priors_), "input_mean": np.array(self.input_mean_),
                  "input_scale": np.array(self.input_scale_)}
        for layer, (W, b) in enumerate(zip(self.weights_, self.biases_)):
            arrays[f"weights_{layer}"] = np.array(W)
            arrays[f"biases_{layer}"] = np.array(b)
        return arrays

    def meta(self) -> dict:
        """JSON-safe description: parameters, layer sizes, training history."""
        self._check_fitted()
        params = {**self.get_params(), "warm_start": False}   # how one fit started, not the network's
        return {"format": "hybrid_hwr-mlp", "params": params, "layer_sizes": self.layer_sizes,
                "n_dims": self.n_dims, "best_epoch": int(self.best_epoch_), "history": list(self.history_)}

    def save(self) -> tuple[dict, dict]:
        """``(arrays, meta)`` of :class:`hybrid_hwr.emission.Emission`: :meth:`to_arrays` and :meth:`meta`."""
        return self.to_arrays(), self.meta()

    @classmethod
    def load(cls, arrays: Mapping, meta: Mapping) -> "MlpEmission | MlpEnsemble":
        """Inverse of :meth:`save` (and of :meth:`MlpEnsemble.save`: an ensemble is stored as
        emission type "mlp", since every decoding knob and default of a hybrid applies to it)."""
        if isinstance(meta, Mapping) and meta.get("format") == MlpEnsemble.FORMAT:
            return MlpEnsemble.load(arrays, meta)
        return cls.from_arrays(arrays, meta)

    @classmethod
    def from_arrays(cls, arrays: Mapping, meta: Mapping, source: str = "MLP arrays") -> "MlpEmission":
        """Inverse of :meth:`to_arrays` + :meth:`meta`; one-line HwrError on anything missing or corrupt."""
        if not isinstance(meta, Mapping) or meta.get("format") != "hybrid_hwr-mlp":
            raise HwrError(f"{source}: the emission description is not an MLP description")
        try:
            params = dict(meta["params"])
            sizes = [int(n) for n in meta["layer_sizes"]]
            n_dims = int(meta["n_dims"])
            history = list(meta.get("history", []))
            best_epoch = int(meta.get("best_epoch", 0))
        except (KeyError, TypeError, ValueError) as exc:
            raise HwrError(f"{source}: MLP description lacks or garbles {exc}") from None
        unknown = set(params) - set(cls._PARAMS)
        if unknown:
            raise HwrError(f"{source}: unknown MLP parameters {sorted(unknown)}")
        model = cls(**params)
        hidden = model.check_params()
        if len(sizes) != len(hidden) + 2 or sizes[1:-1] != hidden:
            raise HwrError(f"{source}: layer sizes {sizes} do not match hidden layers {hidden}")
        if n_dims < 1 or sizes[0] != (2 * int(model.context) + 1) * n_dims:
            raise HwrError(f"{source}: {sizes[0]} inputs, but context {model.context} x {n_dims} features "
                           f"needs {(2 * int(model.context) + 1) * n_dims}")

        def get(name, shape):
            try:
                a = np.asarray(arrays[name])
            except KeyError:
                raise HwrError(f"{source}: missing array '{name}'") from None
            except Exception as exc:  # e.g. a truncated member of an .npz file
                raise HwrError(f"{source}: cannot read array '{name}': {exc}") from None
            if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
                raise HwrError(f"{source}: array '{name}' has non-numeric type {a.dtype}")
            if a.shape != shape:
                raise HwrError(f"{source}: array '{name}' has shape {a.shape}, expected {shape}")
            if not np.isfinite(a).all():
                raise HwrError(f"{source}: array '{name}' contains NaN or infinite values")
            return a

        model.weights_ = [get(f"weights_{l}", (a, b)).astype(np.float32) for l, (a, b) in
                          enumerate(zip(sizes[:-1], sizes[1:]))]
        model.biases_ = [get(f"biases_{l}", (b,)).astype(np.float32) for l, b in enumerate(sizes[1:])]
        extra = sorted(k for k in arrays if k.startswith("weights_") and k not in
                       {f"weights_{l}" for l in range(len(sizes) - 1)})
        if extra:
            raise HwrError(f"{source}: unexpected array '{extra[0]}' for {len(sizes) - 1} layers")
        log_priors = get("log_priors", (sizes[-1],)).astype(np.float64)
        if (log_priors > 0).any() or abs(np.exp(log_priors).sum() - 1.0) > 1e-4:
            raise HwrError(f"{source}: 'log_priors' are not the logarithms of a probability distribution")
        model.log_priors_ = log_priors
        model.input_mean_ = get("input_mean", (n_dims,)).astype(np.float32)
        scale = get("input_scale", (n_dims,)).astype(np.float32)
        if (scale <= 0).any():
            raise HwrError(f"{source}: 'input_scale' must be positive")
        model.input_scale_ = scale
        if not all(isinstance(r, Mapping) for r in history):
            raise HwrError(f"{source}: MLP training history is corrupt")
        model.history_ = [dict(r) for r in history]
        model.best_epoch_ = best_epoch
        return model


class MlpEnsemble:
    """Several hybrid networks over the same HMM states, scored as one emission model.

    The score of a frame is the mean of the members' scaled likelihoods::

        log_likelihoods(x_t)[s] = mean_k log p_k(s | x_t) - kappa mean_k log p_k(s)

    a product of experts (the geometric mean of their posteriors over the geometric mean of
    their priors), the frame-level combination that ``recipes/average_emissions.py`` does on
    emission files. One prior scale kappa applies to every member, so ``tune`` and
    ``--prior-scale`` work as for one network. Networks trained with other seeds or data on
    the same alignment targets make different errors; the mean cancels some of them.
    """

    emission_type = "mlp"
    FORMAT = "hybrid_hwr-mlp-ensemble"

    def __init__(self, members: Sequence[MlpEmission], prior_scale: float | None = None):
        members = list(members)
        if len(members) < 2:
            raise HwrError(f"an ensemble needs at least 2 networks, got {len(members)}")
        states = {m.n_states for m in members}
        if len(states) != 1:
            raise HwrError(f"the networks score different numbers of states: {sorted(states)}")
        self.members = members
        self.prior_scale = float(members[0].prior_scale if prior_scale is None else prior_scale)
        self.log_priors_ = np.mean([m.log_priors_ for m in members], axis=0)   # the tuner's prior shift
        self.history_ = []   # not trained as a whole: the members keep their own histories

    @property
    def n_states(self) -> int:
        return self.members[0].n_states

    @property
    def n_parameters(self) -> int:
        return sum(m.n_parameters for m in self.members)

    def __repr__(self):
        return f"MlpEnsemble({len(self.members)} networks, parameters={self.n_parameters})"

    def predict_log_proba(self, X) -> np.ndarray:
        """(T, S) mean of the members' log-posteriors (unnormalised: a product of experts)."""
        return np.mean([m.predict_log_proba(X) for m in self.members], axis=0)

    def log_likelihoods(self, X, states=None) -> np.ndarray:
        """(T, S) float64 mean scaled log-likelihoods at this ensemble's prior scale; never NaN.
        With ``states``, only those columns, as :meth:`MlpEmission.log_likelihoods`."""
        if states is not None:
            states = np.asarray(states, dtype=np.int64).ravel()
            if states.size and (states.min() < 0 or states.max() >= self.n_states):
                raise ValueError(f"state ids must lie in [0, {self.n_states})")
        scores = self.predict_log_proba(X)
        scores -= self.prior_scale * self.log_priors_
        return scores if states is None else scores[:, states]

    def save(self) -> tuple[dict, dict]:
        """Arrays ``member<k>/<name>`` and the members' descriptions."""
        arrays = {f"member{k}/{name}": a for k, m in enumerate(self.members) for name, a in m.to_arrays().items()}
        return arrays, {"format": self.FORMAT, "prior_scale": self.prior_scale,
                        "members": [m.meta() for m in self.members]}

    @classmethod
    def load(cls, arrays: Mapping, meta: Mapping) -> "MlpEnsemble":
        """Inverse of :meth:`save`; one-line HwrError on anything missing or corrupt."""
        descriptions = meta.get("members")
        if not isinstance(descriptions, list) or len(descriptions) < 2:
            raise HwrError("the ensemble description lacks its list of networks")
        members = []
        for k, description in enumerate(descriptions):
            prefix = f"member{k}/"
            own = {name[len(prefix):]: a for name, a in arrays.items() if name.startswith(prefix)}
            members.append(MlpEmission.from_arrays(own, description, source=f"ensemble network {k + 1}"))
        kappa = meta.get("prior_scale")
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)) or not math.isfinite(kappa) or kappa < 0:
            raise HwrError(f"the ensemble's prior scale must be a finite number >= 0, got {kappa!r}")
        return cls(members, prior_scale=float(kappa))


# ----------------------------------------------------------------------------- helpers


def dropout_masks(rng, n_rows: int, hidden: Sequence[int], rate: float) -> list[np.ndarray]:
    """Inverted-dropout masks of one batch: per hidden layer (n_rows, units), 0 with probability
    ``rate``, else 1/(1-rate) (float32)."""
    masks = []
    for units in hidden:
        mask = (rng.random((n_rows, units), dtype=np.float32) >= rate).astype(np.float32)
        mask *= np.float32(1.0 / (1.0 - rate))
        masks.append(mask)
    return masks


def epoch_sample(rng, ids: np.ndarray, n_frames: int | None) -> np.ndarray:
    """The frame ids of one epoch in training order: all of ``ids`` shuffled, or a fresh random
    sample of ``n_frames`` of them (without repetition) when there are more."""
    if n_frames is None or n_frames >= len(ids):
        return rng.permutation(ids)
    return rng.choice(ids, size=int(n_frames), replace=False, shuffle=True)


def state_log_priors(targets, n_states: int, floor: float = 1e-5) -> np.ndarray:
    """log p(s) from aligned state counts: relative frequencies, floored at ``floor``, renormalised."""
    targets = np.asarray(targets).ravel()
    counts = np.bincount(targets[targets >= 0], minlength=n_states).astype(np.float64)[:n_states]
    total = counts.sum()
    priors = counts / total if total > 0 else np.full(n_states, 1.0 / n_states)
    priors = np.maximum(priors, floor)
    return np.log(priors / priors.sum())


def _check_targets(feats, targets, n_states) -> np.ndarray:
    """Concatenated int64 targets, one per frame of ``feats``, in [-1, n_states)."""
    targets = list(targets)
    if len(targets) != len(feats):
        raise HwrError(f"{len(feats)} feature arrays but {len(targets)} target arrays")
    for i, (f, y) in enumerate(zip(feats, targets)):
        if np.ndim(y) != 1 or len(y) != len(f):
            raise HwrError(f"line {i}: {len(f)} frames but targets of shape {np.shape(y)}")
    y = np.concatenate([np.asarray(t).astype(np.int64, copy=False) for t in targets]) if targets else np.empty(0, np.int64)
    if y.size and (y.min() < -1 or (n_states is not None and y.max() >= n_states)):
        raise HwrError(f"target state ids must lie in [0, {n_states}) (or -1 for no target), "
                       f"got {y.min()} .. {y.max()}")
    return y


def _finite_or_none(x):
    return float(x) if math.isfinite(x) else None
