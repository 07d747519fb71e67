"""Decoder settings fitted to a model on validation lines: ``hybrid-hwr tune``.

The emission scores of the validation lines are computed once; every setting tried is
then a search over them.  For each decoding mode that the given files allow (character
loop; character LM with ``char_lm``; lexicon; lexicon + LM; open vocabulary with lexicon,
LM and character LM) a coordinate search starts from the calibrated defaults
(:data:`hybrid_hwr.decode.CALIBRATED`) and tries, one knob at a time, a few values around
the best so far; when the best lies on the edge of those values the range moves on in
that direction.  Knobs: the LM weight, word, glue, unknown-word and character penalties,
and for a hybrid MLP model the prior scale (its scores are shifted, not recomputed:
``log p(s|x) - k log p(s)`` is linear in ``k``).  The objective is the corpus WER, then
the CER, under the tokeniser of ``lang`` (``objective="cer"``: the CER first, for a system judged
by its characters).  The best mode and its settings are written to ``MODEL/decoder.json``; every point decoded is kept in
``MODEL/tune/points.jsonl``, so an interrupted run resumes where it stopped.  The scores
can also come from a file (``emissions``: ``hybrid-hwr emissions`` of the model, or the
frame average of several networks over the same states); a hybrid's file records the prior
scale of its scores, from which each point's is reached.

A CTC network's outputs (:func:`tune_ctc`: the ``--emissions`` arrays of the validation
lines and the ``--ctc`` alphabet) are tuned the same way for the modes CTC decoding has
(character loop, character LM, lexicon, lexicon + LM): from LM weight 1 and penalties 0,
in steps of 1 for the penalties (log-probabilities of one network output per frame are on
a smaller scale than an HMM's summed state scores), without the glue penalty (the space is
a symbol of the network, so words are never glued).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from .decode import DECODER_FILE, DecoderSettings
from .errors import HwrError
from .fileio import RecordFile

POINTS_FILE = "points.jsonl"
DEFAULT_TUNE_BEAM = 150.0
# GMM log-likelihoods spread far more per frame than an MLP's scaled likelihoods or CTC
# log-probabilities: a beam of 150 prunes the right path of a GMM-HMM (IAM-OnDB test, per-
# character GMM-HMM, lexicon + LM: CER 22.89 % at beam 150 against 18.32 % at 500).
TUNE_BEAMS = {"gmm": 500.0}
OBJECTIVES = ("wer", "cer")   # the corpus error rate that the search minimises first
# knob -> (additive step, or None for a multiplicative one, smallest value)
_STEPS = {"lm_weight": (None, 0.0), "word_penalty": (5.0, -math.inf), "glue_penalty": (5.0, -math.inf),
          "unk_penalty": (5.0, -math.inf), "char_penalty": (1.0, -math.inf), "prior_scale": (0.2, 0.0)}
_MODE_KNOBS = {
    "character loop": ("char_penalty",),
    "character LM": ("lm_weight", "char_penalty"),
    "lexicon": ("word_penalty", "glue_penalty"),
    "lexicon + LM": ("lm_weight", "word_penalty", "glue_penalty"),
    "open vocabulary": ("unk_penalty", "lm_weight", "word_penalty"),
}


@dataclasses.dataclass
class Point:
    settings: DecoderSettings
    cer: float
    wer: float
    metric: str = "wer"     # what the search minimises first (OBJECTIVES); the other breaks ties

    @property
    def objective(self):
        return (self.cer, self.wer) if self.metric == "cer" else (self.wer, self.cer)


def _candidates(knob: str, value: float, width: int, fine: bool = False) -> list[float]:
    """Values around ``value``, ``width`` steps on each side (``fine``: penalty steps of 1)."""
    step, lowest = _STEPS[knob]
    if step is None:   # multiplicative (LM weight): 0 stays reachable through small values
        base = max(value, 0.5 if not fine else 0.1)
        values = [base * 1.5 ** k for k in range(-width, width + 1)]
    else:
        step = min(step, 1.0) if fine else step
        size = max(step, abs(value) / 2) if knob != "prior_scale" else step
        values = [value + size * k for k in range(-width, width + 1)]
    return sorted({round(max(v, lowest), 4) for v in values})


class Tuner:
    """Decodes validation emissions under given settings and remembers every result."""

    def __init__(self, model, lines, scores, lang: str, points_path: Path, jobs: int = 1,
                 log: Callable[[str], None] = print, model_digest: str = "", model_dir: Path | None = None,
                 scores_prior_scale: float | None = None, objective: str = "wer"):
        if objective not in OBJECTIVES:
            raise HwrError(f"the tuning objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
        self.model, self.lines, self.lang, self.jobs, self.log = model, lines, lang, jobs, log
        self.objective = objective
        self.model_dir = model_dir               # a cluster's workers load the model from there
        # {line id: float64 (T, S)} at the model's prior scale, or at scores_prior_scale (a file's)
        self.scores = scores
        emission = getattr(model, "emission", None)     # CTC outputs have no emission model
        kappa = emission.prior_scale if emission is not None else None
        self.base_kappa = float(scores_prior_scale if scores_prior_scale is not None else kappa or 0.0)
        # a model with state priors (prior_scale not None) keeps them in log_priors_
        self.log_priors = emission.log_priors_ if kappa is not None else None
        self.fine = model.emission_type == "ctc"
        self.points_path = points_path
        digest = hashlib.sha256("\n".join(line.id for line in lines).encode()).hexdigest()[:16]
        self._context = {"lines": digest, "model": model_digest}
        self.cache: dict[str, tuple[float, float]] = {}
        if points_path.is_file():
            for row in points_path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(row)
                    self.cache[record["key"]] = (record["cer"], record["wer"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue    # a record cut short by an interruption
        self.decoded = 0
        self.loaded: dict = {}    # lexicon and LM files, read once for every point

    def load_files(self, lexicon, lm, char_lm) -> None:
        from .lexicon import load_lexicon
        from .lm import load_lm

        if lexicon is not None:
            self.loaded[lexicon] = load_lexicon(lexicon)
        for path in (lm, char_lm):
            if path is not None:
                self.loaded[path] = load_lm(path)

    def _key(self, settings: DecoderSettings) -> str:
        # nbest is not part of the key: tuning decodes 1-best, and older points files lack it
        fields = {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(settings).items()
                  if k != "nbest"}
        return json.dumps({**fields, **self._context}, sort_keys=True)

    def _shards(self, size: int = 8) -> list:
        """Items of the decoding tasks: lists of line ids, or on a cluster the shards' scores,
        sent once for the whole search and kept there."""
        from . import cluster

        ids = [line.id for line in self.lines]
        bounds = [ids[a:a + size] for a in range(0, len(ids), size)]
        if cluster.active() is None:
            return bounds
        if self.model_dir is None:
            raise HwrError("tuning on a cluster needs the model directory")
        return cluster.held(self, lambda: [{i: self.scores[i] for i in part} for part in bounds])

    def evaluate(self, settings: DecoderSettings) -> Point:
        from . import cluster
        from .batch import ordered_map
        from .metrics import score_corpus

        key = self._key(settings)
        if key not in self.cache:
            if cluster.active() is None:
                decode = settings.recognizer(self.model, loaded=self.loaded).decode_loglik
            else:   # each worker builds it from the model folder and files, loaded once per process
                decode = cluster.PerProcess(_decoder_of, str(Path(self.model_dir).absolute()), settings)
            shift = None
            if settings.prior_scale is not None and self.log_priors is not None:
                shift = (settings.prior_scale - self.base_kappa) * np.asarray(self.log_priors, dtype=np.float64)
            ids = [line.id for line in self.lines]
            local_scores = self.scores if cluster.active() is None else None   # a cluster holds its own
            parts = ordered_map(_decode_shard, self._shards(), self.jobs, _set_task, (decode, local_scores, shift))
            texts = [h for part in parts for h in part]      # read to the end: the pool closes
            hyps = {i: settings.display_text(h) for i, h in zip(ids, texts)}
            score = score_corpus([(line.id, line.text) for line in self.lines], hyps, self.lang)
            self.cache[key] = (score.cer, score.wer)
            with RecordFile(self.points_path, append=True) as handle:   # one whole record per write
                handle.write(json.dumps({"key": key, "cer": score.cer, "wer": score.wer}))
            self.decoded += 1
        cer, wer = self.cache[key]
        return Point(settings, cer, wer, self.objective)

    def coordinate_search(self, start: DecoderSettings, knobs, rounds: int = 2) -> Point:
        best = self.evaluate(start)
        for _ in range(rounds):
            improved = False
            for knob in knobs:
                value = getattr(best.settings, knob)
                for _extension in range(4):      # the range moves on while the best is on its edge
                    values = _candidates(knob, value, 2, self.fine)
                    points = [self.evaluate(dataclasses.replace(best.settings, **{knob: v})) for v in values]
                    top = min(points, key=lambda p: p.objective)
                    if top.objective < best.objective:
                        best, improved = top, True
                    value = getattr(best.settings, knob)
                    if value not in (values[0], values[-1]) or (value == values[0] and value <= _STEPS[knob][1]):
                        break
            if not improved:
                break
        return best


_TASK = None
_WORKER_FILES: dict = {}     # lexicon and LM files a worker process has loaded, by path


def _set_task(decode, scores, shift):
    global _TASK
    _TASK = (decode, scores, shift)


def _decode_shard(item) -> list:
    """Hypotheses of a shard: line ids into the scores of the forked parent, or (on a cluster) the
    shard's own {id: scores}."""
    decode, scores, shift = _TASK
    shard = item if isinstance(item, dict) else {i: scores[i] for i in item}
    return [decode(x if shift is None else x - shift) for x in shard.values()]


def _decoder_of(model_dir: str, settings: DecoderSettings):
    """``decode_loglik`` of ``settings`` for the model in ``model_dir``, its files loaded once per process."""
    from .lexicon import load_lexicon
    from .lm import load_lm
    from .model import load_model

    key = ("model", model_dir)
    if key not in _WORKER_FILES:
        _WORKER_FILES[key] = load_model(model_dir)
    for path, load in ((settings.lexicon, load_lexicon), (settings.lm, load_lm), (settings.char_lm, load_lm)):
        if path is not None and path not in _WORKER_FILES:
            _WORKER_FILES[path] = load(path)
    return settings.recognizer(_WORKER_FILES[key], loaded=_WORKER_FILES).decode_loglik


def available_modes(lexicon, lm, char_lm) -> list[str]:
    modes = ["character loop"]
    if char_lm is not None:
        modes.append("character LM")
    if lexicon is not None:
        modes.append("lexicon")
        if lm is not None:
            modes.append("lexicon + LM")
            if char_lm is not None:
                modes.append("open vocabulary")
    return modes


def _mode_settings(mode: str, base: DecoderSettings, lexicon, lm, char_lm) -> DecoderSettings:
    files = {"character loop": (None, None, None), "character LM": (None, None, char_lm),
             "lexicon": (lexicon, None, None), "lexicon + LM": (lexicon, lm, None),
             "open vocabulary": (lexicon, lm, char_lm)}[mode]
    settings = dataclasses.replace(base, lexicon=files[0], lm=files[1], char_lm=files[2],
                                   unk_penalty=-20.0 if mode == "open vocabulary" else None)
    if mode == "character LM" and settings.lm_weight is None:
        settings = dataclasses.replace(settings, lm_weight=1.0)
    return settings


def tune(model_dir, valid_lines, lexicon=None, lm=None, char_lm=None, lang: str | None = None,
         modes=None, beam: float | None = None, jobs: int = 1, rounds: int = 2,
         log: Callable[[str], None] = print, emissions=None, objective: str = "wer") -> dict:
    """Tune, write ``model_dir/decoder.json``, and return ``{"mode", "settings", "table"}``.

    ``emissions``: a file of the validation lines' emission scores over the model's states
    (``hybrid-hwr emissions``, or e.g. the frame average of several networks' files) used
    instead of scoring the lines' images; then the lines need no images."""
    from .batch import map_line_images
    from .model import load_model

    model_dir = Path(model_dir)
    model = load_model(model_dir)
    stored = DecoderSettings.load(model_dir)
    lang = lang or stored.lang
    files = _checked_files(lexicon, lm, char_lm)
    modes = _checked_modes(modes, available_modes(files["lexicon"], files["lm"], files["char_lm"]))
    mlp = model.emission_type == "mlp"
    base = DecoderSettings(beam=beam or stored.beam or TUNE_BEAMS.get(model.emission_type, DEFAULT_TUNE_BEAM),
                           lang=lang, prior_scale=(stored.prior_scale if stored.prior_scale is not None
                                        else float(model.emission.prior_scale)) if mlp else None)

    digest = json.loads((model_dir / "model.json").read_text(encoding="utf-8")).get("arrays_sha256", "")
    scores_kappa, tune_prior = None, mlp
    if emissions is not None:
        scores, kept, scores_kappa = _file_scores(model, emissions, valid_lines, log)
        if mlp and scores_kappa is None:   # taken as they are, as `decode --emissions` does
            log(f"the prior scale is not tuned: {emissions} does not record the prior scale of its scores")
            scores_kappa, tune_prior = base.prior_scale, False
        # the same arrays at another prior scale are other scores
        digest = _scores_digest(f"{digest} {scores_kappa}".encode(), kept, scores)
    else:
        log(f"emission scores of {len(valid_lines)} validation lines")
        scores, kept = {}, []
        for line, x in map_line_images(valid_lines, _EmissionScores(model), jobs, "emission scoring", "emissions"):
            scores[line.id] = x
            kept.append(line)
        if not kept:
            raise HwrError("no validation line could be scored")
    return _search_modes(model, model_dir, kept, scores, files, modes, base, lang, digest, jobs, rounds, log,
                         scores_kappa, tune_prior, objective)


def _file_scores(model, emissions, valid_lines, log):
    """``(scores, lines kept, recorded prior scale)`` of the validation lines from an emissions file."""
    from .decode import emissions_prior_scale, read_emissions

    wanted = {line.id for line in valid_lines}
    scores = {}

    def skipped(line_id, problem):
        if line_id in wanted:
            log(f"hybrid-hwr: warning: skipped line {line_id}: {problem}")

    for line_id, x in read_emissions(emissions, model.topology.n_emitting, on_bad=skipped):
        if line_id in wanted:
            scores[line_id] = x
    kept = _lines_with_arrays(valid_lines, scores, emissions, log)
    log(f"emission scores of {len(kept)} validation lines from {emissions}")
    return scores, kept, emissions_prior_scale(emissions)


def _lines_with_arrays(valid_lines, scores, emissions, log):
    kept = [line for line in valid_lines if line.id in scores]
    if not kept:
        raise HwrError(f"{emissions}: no array for any of the {len(valid_lines)} validation lines")
    if len(kept) < len(valid_lines):
        log(f"{len(valid_lines) - len(kept)} validation lines have no array in {emissions} (left out)")
    return kept


def _scores_digest(prefix: bytes, lines, scores) -> str:
    """What identifies scores read from a file in the points file (another file: other points)."""
    digest = hashlib.sha256(prefix)
    for line in lines:
        digest.update(line.id.encode())
        digest.update(np.ascontiguousarray(scores[line.id]).tobytes())
    return digest.hexdigest()[:16]


def _search_modes(model, model_dir, lines, scores, files, modes, base, lang, digest, jobs, rounds, log,
                  scores_kappa=None, tune_prior=True, objective="wer") -> dict:
    """The coordinate search of every mode; writes ``model_dir/decoder.json`` with the best."""
    work = model_dir / "tune"
    work.mkdir(exist_ok=True)
    tuner = Tuner(model, lines, scores, lang, work / POINTS_FILE, jobs=jobs, log=log, model_digest=digest,
                  model_dir=model_dir, scores_prior_scale=scores_kappa, objective=objective)
    mlp = model.emission_type == "mlp"
    ctc = model.emission_type == "ctc"

    tuner.load_files(files["lexicon"], files["lm"], files["char_lm"])
    table = {}
    for mode in modes:
        start = _mode_settings(mode, base, files["lexicon"], files["lm"], files["char_lm"])
        if mode == "open vocabulary" and "lexicon + LM" in table:   # from the word LM's best weights
            best_lm = table["lexicon + LM"].settings
            start = dataclasses.replace(start, lm_weight=best_lm.lm_weight, word_penalty=best_lm.word_penalty,
                                        glue_penalty=best_lm.glue_penalty, prior_scale=best_lm.prior_scale)
        start = start.calibrated(model.emission_type)
        knobs = _MODE_KNOBS[mode] + (("prior_scale",) if mlp and tune_prior else ())
        if ctc:
            knobs = tuple(k for k in knobs if k != "glue_penalty")
        table[mode] = tuner.coordinate_search(start, knobs, rounds)
        point = table[mode]
        log(f"{mode:<16} CER {100 * point.cer:6.2f} %  WER {100 * point.wer:6.2f} %  {point.settings.describe()}")
    best_mode = min(table, key=lambda m: table[m].objective)
    best = table[best_mode].settings
    best.save(model_dir, keys=TUNED_KEYS)
    log(f"best on validation: {best_mode}; {tuner.decoded} settings decoded "
        f"({len(tuner.cache) - tuner.decoded} reused); wrote {model_dir / DECODER_FILE}")
    return {"mode": best_mode, "settings": best, "table": table}


def tune_ctc(alphabet, emissions, valid_lines, out_dir=None, blank: int = 0, log_softmax: bool = False,
             lexicon=None, lm=None, char_lm=None, lang: str | None = None, modes=None, beam: float | None = None,
             jobs: int = 1, rounds: int = 2, log: Callable[[str], None] = print, objective: str = "wer") -> dict:
    """Tune the decoding of a CTC network's outputs (``emissions``: arrays of the validation lines'
    ids, ``alphabet``: its ``--ctc`` file); writes ``out_dir/decoder.json`` (default: the
    alphabet's folder), which ``decode --ctc ... --model out_dir`` uses."""
    from .ctc import CtcModel
    from .decode import emission_arrays

    model = CtcModel.from_file(alphabet, blank, log_softmax)
    out_dir = Path(out_dir) if out_dir is not None else Path(alphabet).resolve().parent
    if not out_dir.is_dir():
        raise HwrError(f"{out_dir}: not a directory")
    stored = DecoderSettings.load(out_dir)
    lang = lang or stored.lang
    files = _checked_files(lexicon, lm, char_lm)
    allowed = [m for m in available_modes(files["lexicon"], files["lm"], files["char_lm"]) if m != "open vocabulary"]
    modes = _checked_modes(modes, allowed)
    base = DecoderSettings(beam=beam or stored.beam or DEFAULT_TUNE_BEAM, lang=lang)
    wanted = {line.id for line in valid_lines}
    scores = {}
    for line_id, x, problem in emission_arrays(emissions):
        if line_id not in wanted:
            continue
        try:
            if problem is not None:
                raise HwrError(problem)
            model.log_likelihoods(x)         # the shape and kind are checked once, here
            scores[line_id] = x
        except HwrError as exc:
            log(f"hybrid-hwr: warning: skipped line {line_id}: {exc}")
    kept = _lines_with_arrays(valid_lines, scores, emissions, log)
    log(f"CTC outputs of {len(kept)} validation lines, {model.n_columns} columns")
    digest = _scores_digest(Path(alphabet).read_bytes(), kept, scores)
    return _search_modes(model, out_dir, kept, scores, files, modes, base, lang, digest, jobs, rounds, log,
                         objective=objective)


def _checked_files(lexicon, lm, char_lm) -> dict:
    files = {k: (Path(v).resolve() if v is not None else None) for k, v in
             (("lexicon", lexicon), ("lm", lm), ("char_lm", char_lm))}
    for name, path in files.items():
        if path is not None and not path.is_file():
            raise HwrError(f"{name} {path}: no such file")
    return files


def _checked_modes(modes, allowed) -> list[str]:
    modes = list(modes) if modes else allowed
    for mode in modes:
        if mode not in allowed:
            raise HwrError(f"mode {mode!r} needs files that were not given (possible: {', '.join(allowed)})")
    return modes


class _EmissionScores:
    """Emission scores of one line image (a picklable callable for the forked workers)."""

    def __init__(self, model):
        self.model = model

    def __call__(self, gray):
        feats, _ = self.model.features(gray)
        return self.model.log_likelihoods(feats)


# the keys tune writes to decoder.json (every knob explicit; others of an existing file are kept)
TUNED_KEYS = ("lexicon", "lm", "char_lm", "lm_weight", "word_penalty", "glue_penalty", "unk_penalty", "char_penalty",
              "prior_scale", "beam", "lang")
