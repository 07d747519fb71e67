"""Embedded training of the GMM-HMM on whole lines (the HTK HERest / Kaldi gmm recipe, as code).

Schedule (one entry per re-estimation iteration)::

    init      uniform segmentation of every line over its character states (or flat start)
    M = 1     `iterations` x embedded Baum-Welch (or Viterbi) re-estimation
    M = 2     split every Gaussian (HHEd MU), `iterations` x re-estimation
    ...       up to `mixtures` components per state

Each iteration is an E-step that sums :class:`GmmAccumulator` and
:class:`TransitionAccumulator` objects over shards of lines (over ``jobs`` processes, or
on a Dask cluster while :func:`hybrid_hwr.cluster.connect` is open: accumulators add up,
in a tree fixed by the number of shards, so every way of running gives the same model),
then an M-step. The model directory is
rewritten atomically after every iteration and doubles as the checkpoint: ``resume``
reads it back and continues with the next iteration of the schedule.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .align import forward_backward, graph_log_likelihoods, path_occupancies, state_occupancies, viterbi
from .batch import line_features, ordered_map, summed_map, warn
from .data import Alphabet, Line
from .errors import HwrError
from .features import FrontEnd, Normalizer
from .fileio import AtomicNpzWriter
from .gmm import GmmAccumulator, GmmSet
from .hmm import HmmTopology, TransitionAccumulator, Transitions, build_line_graph, min_frames
from .model import MODEL_FILE, HwrModel, load_model, save_model


@dataclass
class TrainConfig:
    """Parameters of GMM-HMM training (saved in the model's history)."""

    states: int = 7                # emitting states per character model
    mixtures: int = 16             # Gaussians per state at the end of training (a power of 2 is reached by splits)
    iterations: int = 4            # re-estimation iterations per mixture stage
    init: str = "uniform"          # "uniform" segmentation or "flat" start
    method: str = "baum-welch"     # or "viterbi" (hard alignments)
    beam: float = 300.0            # forward-backward pruning, natural-log units
    var_floor: float = 0.05        # variance floor as a fraction of the global variance
    weight_floor: float = 1e-3     # smallest mixture weight
    transition_floor: float = 1e-3
    state_counts: dict | None = None   # per-symbol states (from alignments); others get `states`
    jobs: int = 1

    def __post_init__(self):
        if self.states < 1 or self.mixtures < 1 or self.iterations < 1:
            raise HwrError("--states, --mixtures and --iterations must be positive")
        if self.init not in ("uniform", "flat"):
            raise HwrError(f"unknown initialisation {self.init!r} (uniform or flat)")
        if self.method not in ("baum-welch", "viterbi"):
            raise HwrError(f"unknown training method {self.method!r} (baum-welch or viterbi)")
        if not 0 < self.var_floor < 1:
            raise HwrError("the variance floor is a fraction of the global variance, in (0, 1)")

    def schedule(self) -> list[int]:
        """Number of mixture components during each iteration: 1,1,..,2,2,..,4,.. up to ``mixtures``."""
        stages, m = [], 1
        while True:
            stages.append(min(m, self.mixtures))
            if m >= self.mixtures:
                break
            m *= 2
        return [m for m in stages for _ in range(self.iterations)]


@dataclass
class LineSet:
    """Encoded lines ready for training: ids, symbol ids and normalised features."""

    ids: list
    text_ids: list
    feats: list

    @property
    def n_frames(self) -> int:
        return int(sum(len(f) for f in self.feats))


# ----------------------------------------------------------------------------- data


def _cache_path(out_dir: Path, name: str, frontend: FrontEnd) -> Path:
    import hashlib
    import json

    key = hashlib.sha256(json.dumps(frontend.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    return out_dir / "cache" / f"features-{name}-{key}.npz"


def load_line_features(lines: list[Line], frontend: FrontEnd, jobs: int, cache: Path | None, desc: str):
    """(kept lines, raw features) of ``lines``; cached in ``cache`` so that a resumed run does not recompute."""
    by_id = {line.id: line for line in lines}
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as npz:
            kept = [by_id[i] for i in npz.files if i in by_id]
            if len(kept) == len(npz.files):
                return kept, [npz[line.id] for line in kept]
    kept, feats = [], []
    for line, f, _ in line_features(lines, frontend, jobs, desc=desc):
        kept.append(line)
        feats.append(f)
    if lines and not kept:   # else the first error would be about an empty alphabet
        raise HwrError(f"{desc}: none of the {len(lines)} line images could be read (see the warnings above)")
    if cache is not None and kept:
        with AtomicNpzWriter(cache) as writer:   # a full disk: one error line, no half archive left
            for line, f in zip(kept, feats):
                writer.add(line.id, f)
    return kept, feats


def encode_lines(lines, feats, alphabet: Alphabet, normalizer: Normalizer, topology: HmmTopology,
                 what: str) -> LineSet:
    """Normalise and encode; lines with unknown characters or too few frames are reported and skipped."""
    out = LineSet([], [], [])
    transitions = Transitions(topology)
    unknown = short = 0
    for line, f in zip(lines, feats):
        try:
            ids = alphabet.encode(line.text)
        except HwrError as exc:
            unknown += 1
            warn(f"{what}: skipped line {line.id}: {exc}")
            continue
        if len(ids) == 0:
            short += 1
            warn(f"{what}: skipped line {line.id}: empty transcription")
            continue
        needed = min_frames(build_line_graph(topology, transitions, ids))
        if len(f) < needed:
            short += 1
            warn(f"{what}: skipped line {line.id}: {len(f)} frames, its transcription needs {needed}")
            continue
        out.ids.append(line.id)
        out.text_ids.append(ids)
        out.feats.append(normalizer.transform(f).astype(np.float32))
    if not out.ids:
        raise HwrError(f"{what}: no usable line ({unknown} with unknown characters, {short} too short)")
    return out


# ----------------------------------------------------------------------------- E-step

SHARD_LINES = 32   # lines per shard of an E-step; shards depend on the number of lines only

# Set in the parent before the worker pool forks, so lines are shared, not pickled.
_LINES: LineSet | None = None
_MODEL: tuple | None = None


def shard_bounds(n_lines: int, size: int = SHARD_LINES) -> list[tuple[int, int]]:
    """(start, stop) of the shards of ``n_lines`` lines: the same for any number of jobs or workers,
    so that the shards' sums, added in :func:`hybrid_hwr.batch.tree_sum`'s tree, are too."""
    return [(a, min(a + size, n_lines)) for a in range(0, n_lines, size)]


def _slice(lines: LineSet, start: int, stop: int) -> LineSet:
    return LineSet(lines.ids[start:stop], lines.text_ids[start:stop], lines.feats[start:stop])


def _shards(lines: LineSet, size: int = SHARD_LINES) -> list:
    """Items naming the shards of ``lines``: bounds into the lines published to the forked
    workers, or, on a cluster, the shards themselves, sent once per LineSet and kept there."""
    from . import cluster

    bounds = shard_bounds(len(lines.ids), size)
    if cluster.active() is not None:
        return cluster.held(lines, lambda: [_slice(lines, a, b) for a, b in bounds], tag=size)
    global _LINES
    _LINES = lines
    return bounds


def _shard_lines(item) -> LineSet:
    return item if isinstance(item, LineSet) else _slice(_LINES, *item)


def _set_model(topology, transitions, gmms, method, beam, accumulate):
    global _MODEL
    _MODEL = (topology, transitions, gmms, method, beam, accumulate)


def _estep_chunk(item):
    """Statistics of one shard of lines: (gmm acc, transition acc, log-prob, frames, failed lines)."""
    topology, transitions, gmms, method, beam, accumulate = _MODEL
    lines = _shard_lines(item)
    gacc = GmmAccumulator.like(gmms) if accumulate else None
    tacc = TransitionAccumulator(topology) if accumulate else None
    total, frames, failed = 0.0, 0, 0
    for X, ids in zip(lines.feats, lines.text_ids):
        graph = build_line_graph(topology, transitions, ids)
        loglik = graph_log_likelihoods(gmms, X, graph)
        if method == "viterbi":
            score, path, arcs = viterbi(loglik, graph, return_arcs=True)
            if not math.isfinite(score):
                failed += 1
                continue
            if accumulate:
                gacc.accumulate(gmms, X, *path_occupancies(path, graph))
                tacc.accumulate_path(graph, path, arcs)
        else:
            score, gamma, occupancy = forward_backward(loglik, graph, beam=beam)
            if not math.isfinite(score):
                failed += 1
                continue
            if accumulate:
                gacc.accumulate(gmms, X, *state_occupancies(gamma, graph))
                tacc.accumulate(graph, occupancy, gamma)
        total += score
        frames += len(X)
    if gacc is not None:
        gacc.reference = None   # the iteration's GMMs: the caller has them, no need to ship them back
    return gacc, tacc, total, frames, failed


def _add_statistics(a, b):
    """Sum of two shards' (gmm acc, transition acc, log-prob, frames, failed lines)."""
    return tuple(x + y if x is not None else None for x, y in zip(a, b))


def expectation(lines: LineSet, topology, transitions, gmms, method="baum-welch", beam=None,
                jobs=1, accumulate=True):
    """Sum of per-line statistics over ``jobs`` processes or the open cluster:
    (gmm acc, transition acc, log-prob, frames, failed); the same sums for any of them."""
    args = (topology, transitions, gmms, method, beam, accumulate)
    sums = summed_map(_estep_chunk, _shards(lines), _add_statistics, jobs, _set_model, args)
    if sums is None:
        return None, None, 0.0, 0, 0
    return sums


# ----------------------------------------------------------------------------- initialisation


def uniform_segmentation(lines: LineSet, topology: HmmTopology, n_states: int, data_var, var_floor):
    """Single-Gaussian GMMs from an equal split of every line's frames over its states (spaces included)."""
    acc = None
    flat = GmmSet.flat_start(n_states, (np.zeros(len(data_var)), data_var))
    acc = GmmAccumulator.like(flat)
    for X, ids in zip(lines.feats, lines.text_ids):
        states = np.concatenate([topology.states_of(int(k)) for k in ids])
        if len(X) < len(states):
            continue
        path = states[(np.arange(len(X)) * len(states)) // len(X)]
        acc.accumulate(flat, X, np.arange(len(X)), path)
    return GmmSet.from_summaries(acc, var_floor=var_floor, min_count=1.0, previous=flat)


# ----------------------------------------------------------------------------- driver


def train_gmm_hmm(train_lines: list[Line], out_dir, config: TrainConfig, valid_lines: list[Line] | None = None,
                  frontend: FrontEnd | None = None, init_model=None, resume: bool = False,
                  log: Callable[[str], None] = print) -> HwrModel:
    """Train (or resume training of) a GMM-HMM; the model is saved in ``out_dir`` after every
    iteration (``out_dir`` None: kept in memory only, features not cached, no resuming)."""
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise HwrError("resuming a training run needs its model directory")
    model = None
    if resume and (out_dir / MODEL_FILE).exists():
        model = load_model(out_dir)
        saved = model.history.get("config")
        if saved is not None:
            kept = dataclasses.replace(TrainConfig(**saved), jobs=config.jobs)
            changed = [f"{f.name} {getattr(config, f.name)!r} (saved: {getattr(kept, f.name)!r})"
                       for f in dataclasses.fields(TrainConfig)
                       if f.name not in ("jobs", "state_counts") and getattr(config, f.name) != getattr(kept, f.name)]
            if changed:   # a resumed run is the saved run: other settings would mix two trainings
                warn(f"--resume continues with the saved settings; ignored: {', '.join(changed)}")
            config = kept
        if init_model is not None:
            warn(f"--init-model {init_model} ignored: --resume continues the model saved in {out_dir}")
        log(f"resuming from {out_dir} after iteration {len(model.history.get('iterations', []))}")
    elif init_model is not None:
        model = load_model(init_model) if not isinstance(init_model, HwrModel) else init_model
    if model is not None and model.emission_type != "gmm":   # GMM re-estimation needs GMMs to start from
        where = f"the model in {out_dir} (--resume)" if resume and (out_dir / MODEL_FILE).exists() \
            else f"initial model {init_model}"
        raise HwrError(f"{where} is an {model.emission_type.upper()}-HMM; GMM-HMM training continues a GMM-HMM "
                       "(a hybrid is trained with --emission mlp)")
    frontend = model.frontend if model is not None else (frontend or FrontEnd())

    t_start = time.time()
    cache = lambda name: _cache_path(out_dir, name, frontend) if out_dir is not None else None  # noqa: E731
    kept, raw = load_line_features(train_lines, frontend, config.jobs, cache("train"), "train features")
    if model is None:
        alphabet = Alphabet.from_texts(line.text for line in kept)
        counts = config.state_counts
        n_states = config.states if not counts else {k: int(counts.get(k, config.states)) for k in alphabet.symbols}
        topology = HmmTopology(alphabet.symbols, n_states=n_states)
        normalizer = Normalizer().fit(raw)
    else:
        alphabet, topology, normalizer = model.alphabet, model.topology, model.normalizer
    train = encode_lines(kept, raw, alphabet, normalizer, topology, "train")
    del raw
    valid = None
    if valid_lines:
        vkept, vraw = load_line_features(valid_lines, frontend, config.jobs, cache("valid"), "valid features")
        valid = encode_lines(vkept, vraw, alphabet, normalizer, topology, "valid")
    log(f"train: {len(train.ids)} lines, {train.n_frames} frames; "
        + (f"valid: {len(valid.ids)} lines, {valid.n_frames} frames; " if valid else "")
        + f"{len(alphabet)} symbols, {topology.n_emitting} states; features in {time.time() - t_start:.0f}s")

    if model is None:
        all_frames = np.concatenate(train.feats)
        global_var = all_frames.var(axis=0).astype(np.float64)
        transitions = Transitions(topology)
        if config.init == "uniform":
            gmms = uniform_segmentation(train, topology, topology.n_emitting, global_var,
                                        config.var_floor * global_var)
        else:
            gmms = GmmSet.flat_start(topology.n_emitting, all_frames)
        del all_frames
        history = {"config": dataclasses.asdict(config), "global_var": global_var.tolist(), "iterations": []}
        model = HwrModel(alphabet, frontend, normalizer, topology, transitions, gmms, history)
    else:
        model.history.setdefault("iterations", [])
        model.history.setdefault("config", dataclasses.asdict(config))
        if "global_var" not in model.history:
            model.history["global_var"] = np.concatenate(train.feats).var(axis=0).tolist()
    var_floor = config.var_floor * np.asarray(model.history["global_var"])

    schedule = config.schedule()
    done = len(model.history["iterations"]) if resume else 0
    if not resume:
        model.history["iterations"] = []
    for it in range(done, len(schedule)):
        t0 = time.time()
        gmms, transitions = model.emission, model.transitions
        if schedule[it] > gmms.n_components:
            gmms = gmms.split(schedule[it])
        gacc, tacc, total, frames, failed = expectation(
            train, model.topology, transitions, gmms, config.method, config.beam, config.jobs)
        if gacc is None or frames == 0:
            raise HwrError("no training line could be aligned with the current model")
        model.emission = GmmSet.from_summaries(gacc, var_floor=var_floor, weight_floor=config.weight_floor,
                                               previous=gmms)
        model.transitions = Transitions.from_summaries(tacc, floor=config.transition_floor, previous=transitions)
        record = {"iteration": it + 1, "mixtures": int(schedule[it]), "train_loglik_per_frame": total / frames,
                  "train_frames": frames, "failed_lines": failed}
        if valid is not None:
            _, _, vtotal, vframes, vfailed = expectation(
                valid, model.topology, model.transitions, model.emission, config.method, config.beam,
                config.jobs, accumulate=False)
            record["valid_loglik_per_frame"] = vtotal / max(vframes, 1)
            record["valid_failed_lines"] = vfailed
        record["seconds"] = round(time.time() - t0, 2)
        record["frames_per_second"] = round(frames / max(record["seconds"], 1e-9))
        model.history["iterations"].append(record)
        model.history["train_seconds"] = round(model.history.get("train_seconds", 0.0) + record["seconds"], 2)
        _checkpoint(model, out_dir)
        log(f"iteration {it + 1}/{len(schedule)}  M={schedule[it]:<3d} train LL/frame {record['train_loglik_per_frame']:.3f}"
            + (f"  valid LL/frame {record['valid_loglik_per_frame']:.3f}" if valid is not None else "")
            + f"  ({record['seconds']:.1f}s, {record['frames_per_second']} frames/s"
            + (f", {failed} lines failed" if failed else "") + ")")
    model.history["total_seconds"] = round(time.time() - t_start, 1)
    _checkpoint(model, out_dir)
    return model


def _checkpoint(model: HwrModel, out_dir: Path | None) -> None:
    """Save ``model`` in ``out_dir`` (the run's checkpoint), if the run has a directory."""
    if out_dir is not None:
        save_model(model, out_dir)
        model.directory = out_dir


# ----------------------------------------------------------------------------- hybrid MLP-HMM

def _align_chunk(item):
    """Per-frame target states of one shard of lines (all -1 where the alignment failed)."""
    from .align import force_align

    topology, transitions, emission = _MODEL
    lines = _shard_lines(item)
    out = []
    for X, ids in zip(lines.feats, lines.text_ids):
        result = force_align(emission, topology, transitions, X, ids)
        out.append(np.full(len(X), -1, np.int32) if result is None else result.states)
    return out


def _set_aligner(topology, transitions, emission):
    global _MODEL
    _MODEL = (topology, transitions, emission)


def forced_targets(lines: LineSet, model: HwrModel, jobs: int = 1) -> list:
    """State of every frame from the Viterbi alignment of ``model`` (-1 for lines it cannot align)."""
    targets = []
    for part in ordered_map(_align_chunk, _shards(lines, SHARD_LINES // 4), jobs, _set_aligner,
                            (model.topology, model.transitions, model.emission)):
        targets.extend(part)
    return targets


def mean_character_frames(model: HwrModel, states_per_line: list) -> dict:
    """Mean length in frames of every symbol's visits along forced alignments (per-frame states)."""
    topology = model.topology
    totals = np.zeros(topology.n_models)
    counts = np.zeros(topology.n_models)
    for states in states_per_line:
        states = states[states >= 0]
        if len(states) == 0:
            continue
        symbol = topology.state_symbol[states]
        # a new visit starts where the symbol changes or the state index jumps back (a repeated letter)
        starts = np.flatnonzero(np.r_[True, (symbol[1:] != symbol[:-1]) | (states[1:] < states[:-1])])
        lengths = np.diff(np.r_[starts, len(states)])
        np.add.at(totals, symbol[starts], lengths)
        np.add.at(counts, symbol[starts], 1)
    return {sym: (totals[k] / counts[k] if counts[k] else None) for k, sym in enumerate(topology.symbols)}


def state_counts_from_alignments(train_lines: list[Line], model_dir, jobs: int = 1, frames_per_state: float = 2.0,
                                 log: Callable[[str], None] = print) -> dict:
    """States per character, from the mean character lengths of a trained model's forced alignments.

    Narrow characters (i, l, punctuation) get fewer states than wide ones, so that lines
    written tightly still fit their models and wide characters get enough states.
    """
    from .hmm import estimate_state_counts

    model = load_model(model_dir)
    kept, raw = load_line_features(train_lines, model.frontend, jobs, None, "features for state counts")
    lines = encode_lines(kept, raw, model.alphabet, model.normalizer, model.topology, "state counts")
    del raw
    means = mean_character_frames(model, forced_targets(lines, model, jobs))
    counts = estimate_state_counts(means, frames_per_state=frames_per_state, default=None)
    log("states per character from alignments: " + ", ".join(f"{k!r}:{v}" for k, v in sorted(counts.items())))
    return counts


def train_mlp_hmm(train_lines: list[Line], init_model, out_dir, valid_lines: list[Line] | None = None,
                  mlp_params=None, input_kind: str | None = None, realign: bool = False,
                  jobs: int = 1, resume: bool = False, log: Callable[[str], None] = print) -> HwrModel:
    """Hybrid MLP-HMM: an MLP trained on the forced alignments of a GMM-HMM replaces its GMMs.

    The HMM topology and transitions stay those of ``init_model``; the targets are the
    Viterbi state of every frame. ``input_kind='pixels'`` feeds the MLP the raw pixels of
    the same sliding windows instead of the 56 features (same frames, so the same targets).
    ``realign`` runs one more round: realign with the hybrid model and train a new MLP on
    those targets; the second network is kept (frame error rates of the two rounds are
    measured against different targets, so only decoding on validation lines can tell
    whether realignment helped: the recipe does that).
    ``init_model`` may itself be a hybrid: its alignments then start a further realignment
    round without retraining the network that produced them.
    ``mlp_params``: the network, an unfitted :class:`hybrid_hwr.mlp.MlpEmission` or the
    dict of its parameters (its ``get_params()``).
    The model is saved in ``out_dir`` after every epoch (best weights so far; ``out_dir``
    None: kept in memory only).
    ``resume`` continues the run saved in ``out_dir`` (if there is one) with a new budget:
    ``max_epochs``, ``max_seconds`` and ``threads`` of ``mlp_params`` apply, the saved
    network's other settings are kept; training goes on from the best epoch's weights with
    the learning rate and newbob patience where the run stopped (the optimiser's moments
    start again from zero). The targets are realigned with ``init_model``, as at the start.
    """
    from .mlp import MlpEmission

    params = mlp_params.get_params() if isinstance(mlp_params, MlpEmission) else dict(mlp_params or {})
    try:  # bad settings are refused before any feature extraction or alignment
        MlpEmission(**params).check_params()
    except TypeError as exc:
        raise HwrError(f"MLP: {exc}") from None
    out_dir = Path(out_dir) if out_dir is not None else None
    if resume and out_dir is None:
        raise HwrError("resuming a training run needs its model directory")
    if resume and realign:
        raise HwrError("--resume continues a single training round: a --realign run cannot be resumed")
    saved = _saved_hybrid(out_dir, params, input_kind, log) if resume else None
    cache = lambda name, frontend: _cache_path(out_dir, name, frontend) if out_dir is not None else None  # noqa: E731
    t_start = time.time()
    gmm_model = load_model(init_model) if not isinstance(init_model, HwrModel) else init_model
    if saved is not None:   # refused before any feature extraction
        _check_resumable(saved, gmm_model, out_dir)
        input_kind = saved.frontend.features.kind   # the inputs the network was trained on
    gframe = gmm_model.frontend
    kept, raw = load_line_features(train_lines, gframe, jobs, cache("train", gframe), "train features")
    train = encode_lines(kept, raw, gmm_model.alphabet, gmm_model.normalizer, gmm_model.topology, "train")
    del raw
    valid = None
    if valid_lines:
        vkept, vraw = load_line_features(valid_lines, gframe, jobs, cache("valid", gframe), "valid features")
        valid = encode_lines(vkept, vraw, gmm_model.alphabet, gmm_model.normalizer, gmm_model.topology, "valid")
    log(f"aligning the training lines with the initial {gmm_model.emission_type.upper()}-HMM")
    targets = forced_targets(train, gmm_model, jobs)
    vtargets = forced_targets(valid, gmm_model, jobs) if valid is not None else None

    frontend, normalizer = gframe, gmm_model.normalizer
    if input_kind is not None and input_kind != gframe.features.kind:
        # Same windows, other input: recompute features of the kept lines only.
        frontend = dataclasses.replace(gframe, features=dataclasses.replace(gframe.features, kind=input_kind))
        by_id = {line.id: line for line in train_lines + (valid_lines or [])}
        ids = train.ids + (valid.ids if valid is not None else [])
        lines = [by_id[i] for i in ids]
        got, feats = load_line_features(lines, frontend, jobs, cache("mlp-input", frontend),
                                        f"{input_kind} features")
        if [line.id for line in got] != ids:
            raise HwrError(f"{input_kind} features could not be computed for every aligned line")
        normalizer = saved.normalizer if saved is not None else Normalizer().fit(feats[: len(train.ids)])
        feats = [normalizer.transform(f).astype(np.float32) for f in feats]
        for a, b in zip(feats, train.feats + (valid.feats if valid is not None else [])):
            if len(a) != len(b):
                raise HwrError(f"{input_kind} features have {len(a)} frames where the alignment has {len(b)}")
        train = LineSet(train.ids, train.text_ids, feats[: len(train.ids)])
        if valid is not None:
            valid = LineSet(valid.ids, valid.text_ids, feats[len(train.ids):])

    history = {"init_model": str(init_model) if not isinstance(init_model, HwrModel) else None,
               "input_kind": frontend.features.kind, "rounds": []}
    seconds_before = 0.0
    if saved is not None:   # a run killed between epochs has no total yet: its epochs' seconds
        seconds_before = float(saved.history.get("total_seconds")
                               or sum(r.get("seconds", 0.0) for r in saved.emission.history_))
    model = HwrModel(gmm_model.alphabet, frontend, normalizer, gmm_model.topology, gmm_model.transitions,
                     None, history)

    def elapsed():   # this run's seconds, and those of the run it resumes
        return round(seconds_before + time.time() - t_start, 1)

    def checkpoint(mlp, record):
        model.emission = mlp
        history["total_seconds"] = elapsed()
        _checkpoint(model, out_dir)

    for round_ in range(2 if realign else 1):
        if round_ == 1:
            log("realigning the training lines with the hybrid model")
            targets = forced_targets(train, model, jobs)
            vtargets = forced_targets(valid, model, jobs) if valid is not None else None
        if saved is not None:
            mlp, asked = saved.emission, MlpEmission(**params)
            for name in _RESUME_BUDGET:
                setattr(mlp, name, getattr(asked, name))
            mlp.warm_start = True
        else:
            mlp = MlpEmission(**params)
        mlp.fit(train.feats, targets, valid.feats if valid else None, vtargets,
                n_states=gmm_model.topology.n_emitting, log=log, on_epoch=checkpoint)
        mlp.warm_start = False   # a later fit of the saved network starts afresh unless asked
        fer = min(r.get("valid_fer", r.get("train_fer", 1.0)) for r in mlp.history_)
        history["rounds"].append({"round": round_ + 1, "best_valid_fer": fer, "epochs": len(mlp.history_),
                                  "seconds": elapsed()})
        log(f"round {round_ + 1}: best validation frame error rate {fer:.4f}")
        model.emission = mlp
    history["total_seconds"] = elapsed()
    _checkpoint(model, out_dir)
    return model


# the settings a resumed MLP training takes from the new call: its budget
_RESUME_BUDGET = ("max_epochs", "max_seconds", "threads")


def _saved_hybrid(out_dir: Path, params: dict, input_kind, log) -> HwrModel | None:
    """The hybrid saved in ``out_dir`` that a resumed run continues (None: nothing saved yet)."""
    from .mlp import MlpEmission

    if not (out_dir / MODEL_FILE).is_file():
        return None
    saved = load_model(out_dir)
    if saved.emission_type != "mlp":
        raise HwrError(f"--resume: {out_dir} holds a {saved.emission_type.upper()}-HMM, not a hybrid MLP-HMM")
    if not isinstance(saved.emission, MlpEmission):
        raise HwrError(f"--resume: {out_dir} holds an ensemble of networks (hybrid-hwr ensemble), which is not "
                       f"trained as a whole; resume its members")
    if len(saved.history.get("rounds", [])) > 1:
        raise HwrError(f"--resume continues a single training round: {out_dir} holds a --realign run")
    if input_kind is not None and input_kind != saved.frontend.features.kind:
        raise HwrError(f"--resume: the network in {out_dir} reads {saved.frontend.features.kind} inputs, "
                       f"not {input_kind}")
    kept, asked = saved.emission.get_params(), MlpEmission(**params).get_params()
    changed = [f"{name} {asked[name]!r} (saved: {kept[name]!r})" for name in kept
               if name not in _RESUME_BUDGET + ("warm_start",) and asked[name] != kept[name]]
    other_network = [c for c in changed if c.split()[0] in ("hidden_layers", "context", "activation")]
    if other_network:
        raise HwrError(f"--resume: {out_dir} holds another network ({', '.join(other_network)}); "
                       "give another output directory to train this one")
    if changed:   # a resumed run is the saved run: other settings would mix two trainings
        warn(f"--resume continues with the saved network's settings; ignored: {', '.join(changed)}")
    log(f"resuming the MLP training in {out_dir} after epoch {len(saved.emission.history_)}")
    return saved


def _check_resumable(saved: HwrModel, init: HwrModel, out_dir: Path) -> None:
    """A resumed network keeps its targets and inputs: ``init`` must be the model it was trained from."""
    kind = saved.frontend.features.kind   # a pixel hybrid reads the init model's windows as pixels
    as_trained = dataclasses.replace(init.frontend, features=dataclasses.replace(init.frontend.features, kind=kind))
    same_inputs = saved.frontend == as_trained and (
        kind != init.frontend.features.kind or saved.normalizer.to_dict() == init.normalizer.to_dict())
    if saved.alphabet != init.alphabet or saved.topology != init.topology or not same_inputs:
        raise HwrError(f"--resume: the network in {out_dir} was trained on the alignments of another model "
                       f"(its symbols, states or front end differ from --init-model's); "
                       f"resume with {saved.history.get('init_model') or 'the model it was trained from'}")


# ----------------------------------------------------------------------------- one call

def fit(lines, valid=None, *, emission: str = "gmm", init_model=None, frontend: FrontEnd | None = None,
        output=None, jobs: int = 1, log: Callable[[str], None] = print, input_kind: str | None = None,
        realign: bool = False, **params) -> HwrModel:
    """Train a model and return it: ``hybrid_hwr.train(lines)`` and ``HwrModel.fit(lines)``.

    ``lines`` and ``valid``: lists of :class:`hybrid_hwr.data.Line`, or split files
    (``<dir>/<split>.tsv``, images in ``<dir>/lines/``). ``emission="gmm"`` trains a
    GMM-HMM, ``params`` being :class:`TrainConfig`'s fields (``states``, ``mixtures``,
    ``iterations``, ...); ``emission="mlp"`` trains a hybrid on the alignments of
    ``init_model`` (a model or its directory), ``params`` being those of
    :class:`hybrid_hwr.mlp.MlpEmission` (``hidden_layers``, ``max_epochs``, ...).
    ``frontend``: a :class:`hybrid_hwr.features.FrontEnd` for a new GMM-HMM. ``output``:
    a directory to save the model in after every iteration (the command line's
    checkpoint, and a feature cache); None keeps it in memory (``model.save(dir)`` later).
    """
    from .data import read_split

    def as_lines(value):
        return read_split(value) if isinstance(value, (str, Path)) else list(value)

    train_lines = as_lines(lines)
    valid_lines = as_lines(valid) if valid is not None else None
    if emission == "gmm":
        if input_kind is not None or realign:
            raise HwrError("input_kind and realign are options of a hybrid MLP-HMM (emission='mlp')")
        try:
            config = TrainConfig(jobs=jobs, **params)
        except TypeError as exc:
            raise HwrError(f"GMM-HMM training: {exc}") from None
        return train_gmm_hmm(train_lines, output, config, valid_lines=valid_lines, frontend=frontend,
                             init_model=init_model, log=log)
    if emission == "mlp":
        if init_model is None:
            raise HwrError("a hybrid MLP-HMM trains on the alignments of init_model (a GMM-HMM)")
        if frontend is not None:
            raise HwrError("a hybrid MLP-HMM keeps init_model's front end (input_kind='pixels' for pixel windows)")
        return train_mlp_hmm(train_lines, init_model, output, valid_lines=valid_lines, mlp_params=params,
                             input_kind=input_kind, realign=realign, jobs=jobs, log=log)
    raise HwrError(f"unknown emission type {emission!r} (gmm or mlp)")


class _TrainModule(types.ModuleType):
    """``hybrid_hwr.train`` is this module and, called, :func:`fit`: ``hybrid_hwr.train(lines)``."""

    def __call__(self, lines, valid=None, **options) -> HwrModel:
        return fit(lines, valid, **options)


sys.modules[__name__].__class__ = _TrainModule
