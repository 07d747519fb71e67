"""The bundled default recogniser and the demo that decodes the bundled test lines.

A *decoder directory* is a model directory (:mod:`hybrid_hwr.model`) that may also hold
``decoder.json``, the decoding settings that go with the model, and the lexicon and LM
files it names (relative names are read next to ``decoder.json``)::

    hybrid_hwr/models/default/
        model.json, arrays-<sha8>.npz     the optical model
        decoder.json                      {"lexicon": "fr-50k.txt", "lm": "fr-3gram.arpa.gz",
                                           "lm_weight": 8.0, "word_penalty": 0.0,
                                           "char_penalty": 0.0, "lang": "fr"}
        fr-50k.txt, fr-3gram.arpa.gz

Keys of ``decoder.json`` (all optional; a directory without it decodes with a character
loop): ``lexicon``, ``lm``, ``char_lm`` (file names or null), ``lm_weight``,
``word_penalty``, ``glue_penalty`` (unset: the calibrated defaults of :data:`CALIBRATED`
for the model's emission type and the mode), ``char_penalty``, ``unk_penalty`` (null:
strict lexicon), ``beam``, ``max_active``, ``unk_beam``, ``unk_max_active``, ``prior_scale``
(hybrid MLP models: kappa of log p(s|x) - kappa log p(s); null: the value stored with the
network) and ``lang`` (``en``/``fr``: how lexicon tokens are joined back into text, see
:func:`hybrid_hwr.text.detokenize`).

Python use of the shipped model::

    from hybrid_hwr.data import load_image
    from hybrid_hwr.demo import load_default_recognizer

    recognizer, settings = load_default_recognizer()
    hypothesis = recognizer.decode_image(load_image("line.png"))
    print(settings.display_text(hypothesis), [(w.text, w.x_start, w.x_end) for w in hypothesis.words])

:func:`run_demo` decodes the bundled test lines (``sample/test.tsv``: writers not seen
in training), prints reference and hypothesis of every line, then corpus CER/WER and the
time taken; with ``output`` it also writes an HTML page (:func:`write_html`).
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from .errors import HwrError
from .fileio import atomic_write_text
from .text import LANGUAGES

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


def default_model_dir() -> Path:
    """Where the shipped default model lives (``hybrid_hwr/models/default``); it may be absent."""
    return Path(__file__).resolve().parent / "models" / "default"


@dataclass(frozen=True)
class DecoderSettings:
    """Decoding settings of a decoder directory (``decoder.json``); file paths are resolved."""

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
                values[key] = int(value) if key in ("max_active", "unk_max_active") else float(value)
        return cls(**values)

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

    def recognizer(self, model, nbest: int = 1, loaded: dict | None = None):
        """A :class:`hybrid_hwr.decode.Recognizer` for ``model`` with these settings (unset
        knobs: :meth:`calibrated` for the model's emission type). ``loaded`` maps file paths
        to their loaded content (lexicon word lists, kenlm models) to share between recognisers."""
        from .decode import DEFAULT_BEAM, DEFAULT_MAX_ACTIVE, DEFAULT_UNK_BEAM, DEFAULT_UNK_MAX_ACTIVE, Recognizer

        def given(value, default):  # None: not set; 0 is a value (and the Recognizer rejects it)
            return default if value is None else value

        if self.prior_scale is not None:
            model = model.with_prior_scale(self.prior_scale)
        full = self.calibrated(model.emission_type)
        # a model may bring its own recogniser (CTC outputs: hybrid_hwr.ctc.CtcRecognizer)
        recognizer_class = getattr(model, "recognizer_class", Recognizer)
        loaded = loaded or {}
        lexicon, lm, char_lm = (loaded.get(f, f) for f in (self.lexicon, self.lm, self.char_lm))
        return recognizer_class(model, lexicon=lexicon, lm=lm, lm_weight=full.lm_weight,
                          word_penalty=full.word_penalty, glue_penalty=full.glue_penalty,
                          beam=given(self.beam, DEFAULT_BEAM),
                          max_active=given(self.max_active, DEFAULT_MAX_ACTIVE), nbest=nbest,
                          char_penalty=self.char_penalty, unk_penalty=self.unk_penalty, char_lm=char_lm,
                          unk_beam=given(self.unk_beam, DEFAULT_UNK_BEAM),
                          unk_max_active=given(self.unk_max_active, DEFAULT_UNK_MAX_ACTIVE))

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

        if self.lexicon is None:
            mode = f"character LM {self.char_lm.name} (weight {knob('lm_weight')})" if self.char_lm else "character loop"
            text = f"{mode}, char penalty {self.char_penalty:g}"
        else:
            text = f"lexicon {self.lexicon.name}"
            if self.lm is not None:
                text += f" + LM {self.lm.name} (weight {knob('lm_weight')})"
            if self.unk_penalty is not None and self.char_lm is not None:
                text += f" + out-of-lexicon words ({self.char_lm.name}, penalty {self.unk_penalty:g})"
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

    model_dir = resolve_model_dir(model_dir)
    model = load_model(model_dir)
    settings = DecoderSettings.load(model_dir)
    given = {k: Path(v) if k in _FILE_KEYS and isinstance(v, (str, os.PathLike)) else v
             for k, v in overrides.items() if v is not None}
    if given:
        try:
            settings = replace(settings, **given)
        except TypeError as exc:
            raise HwrError(f"unknown decoder setting ({exc})") from None
    return settings.recognizer(model, nbest=nbest), settings


def load_default_recognizer(nbest: int = 1, **overrides):
    """``(Recognizer, DecoderSettings)`` of the shipped default model (HwrError if it is missing)."""
    return load_recognizer(None, nbest=nbest, **overrides)


# ----------------------------------------------------------------------------- the demo

@dataclass
class LineResult:
    """One decoded demo line (``hypothesis`` None and ``error`` set when it failed)."""

    id: str
    reference: str
    image_path: Path
    text: str = ""
    hypothesis: object = None
    width: int = 0
    height: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class DemoResult:
    lines: list = field(default_factory=list)
    cer: float = math.nan
    wer: float = math.nan
    seconds: float = 0.0          # decoding time (all lines)
    load_seconds: float = 0.0     # model, lexicon and LM loading
    model_dir: Path | None = None
    settings: DecoderSettings | None = None
    emission_type: str | None = None


_WORKER = None


def _set_worker(recognizer, settings) -> None:
    global _WORKER
    _WORKER = (recognizer, settings)


def _decode_one(line) -> LineResult:
    """Decode one line; never raises for a bad line (the error is kept in the result)."""
    from .batch import LINE_ERRORS, line_error
    from .data import load_image

    recognizer, settings = _WORKER
    result = LineResult(line.id, line.text, Path(line.image_path))
    t0 = time.perf_counter()
    try:
        gray = load_image(line.image_path)
        result.height, result.width = gray.shape
        result.hypothesis = recognizer.decode_image(gray)
        result.text = settings.display_text(result.hypothesis)
    except LINE_ERRORS as exc:
        result.error = line_error(line, exc, "decoding")
    result.seconds = time.perf_counter() - t0
    return result


def default_jobs() -> int:
    """Processes for the demo: the two cores it is specified for, fewer on a smaller machine."""
    return max(1, min(2, os.cpu_count() or 1))


def run_demo(model_dir: str | os.PathLike | None = None, output: str | os.PathLike | None = None,
             limit: int | None = None, jobs: int | None = None,
             echo: Callable[[str], None] | None = None) -> DemoResult:
    """Decode the bundled test lines, print every line and the corpus CER/WER; see the module docstring."""
    from tqdm import tqdm

    from .batch import ordered_map, progress, warn
    from .data import read_split, sample_dir
    from .metrics import score_corpus

    if echo is None:
        def echo(text):  # keeps a progress bar on the terminal intact
            tqdm.write(text, file=sys.stdout)
    model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
    lines = read_split(sample_dir() / "test.tsv", limit=limit)
    if not lines:
        raise HwrError("the bundled test sample holds no line")
    t0 = time.perf_counter()
    recognizer, settings = load_recognizer(model_dir)
    load_seconds = time.perf_counter() - t0
    echo(settings_line(model_dir, recognizer, settings))
    if getattr(recognizer, "lexicon_message", None):
        warn(recognizer.lexicon_message)
    echo(f"decoding {len(lines)} bundled test lines (writers not seen in training)")

    t0 = time.perf_counter()
    results = []
    jobs = default_jobs() if jobs is None else jobs
    for result in progress(ordered_map(_decode_one, lines, jobs, _set_worker, (recognizer, settings)),
                           total=len(lines), desc="demo"):
        results.append(result)
        if result.error is not None:
            warn(f"line {result.id}: {result.error}")
            continue
        echo(f"{result.id}\n  ref: {result.reference}\n  hyp: {result.text}")
    seconds = time.perf_counter() - t0

    decoded = [r for r in results if r.error is None]
    score = score_corpus([(r.id, r.reference) for r in results], [(r.id, r.text) for r in decoded], settings.lang)
    demo = DemoResult(results, score.cer, score.wer, seconds, load_seconds, model_dir, settings,
                      recognizer.model.emission_type)
    failed = len(results) - len(decoded)
    echo("")
    echo(f"CER {100 * score.cer:6.2f} %  ({score.chars.errors} errors / {score.chars.ref_len} characters)")
    echo(f"WER {100 * score.wer:6.2f} %  ({score.words.errors} errors / {score.words.ref_len} words)"
         + (f"  ({failed} lines failed, scored as empty)" if failed else ""))
    echo(f"time: {seconds:.1f} s to decode {len(results)} lines ({len(results) / max(seconds, 1e-9):.2f} lines/s, "
         f"{jobs} process{'es' if jobs > 1 else ''}), {load_seconds:.1f} s to load the model")
    if output is not None:
        page = write_html(demo, output)
        echo(f"wrote {page}")
    return demo


# ----------------------------------------------------------------------------- HTML page

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
.summary td, .summary th { padding: 0 1em 0 0; text-align: left; }
.line { margin: 1.6em 0; border-top: 1px solid #ddd; padding-top: .6em; }
.id { font-size: 80%; color: #777; }
.image { position: relative; display: inline-block; max-width: 100%; }
.image img { display: block; max-width: 100%; height: auto; }
.word { position: absolute; top: 0; bottom: 0; box-sizing: border-box; border: 2px solid;
        border-radius: 3px; }
.word span { position: absolute; top: 100%; left: 0; font-size: 75%; white-space: nowrap;
             background: rgba(255,255,255,.85); padding: 0 2px; }
.word.odd span { top: calc(100% + 1.3em); }  /* labels of neighbouring words on two rows */
.good { border-color: rgba(0,150,0,.8); background: rgba(0,150,0,.07); }
.fair { border-color: rgba(230,140,0,.85); background: rgba(230,140,0,.08); }
.poor { border-color: rgba(210,0,0,.8); background: rgba(210,0,0,.08); }
.texts { margin-top: 2.8em; }
.texts div { margin: .15em 0; }
.label { display: inline-block; width: 3em; color: #777; }
.error { color: #b00; }
"""


def _confidence_class(confidence: float) -> str:
    if not math.isfinite(confidence) or confidence >= 0.8:
        return "good" if math.isfinite(confidence) else "fair"
    return "fair" if confidence >= 0.5 else "poor"


def _percent(x: float) -> str:
    return f"{x:.3f}%"


def _word_boxes_html(result: LineResult) -> list[str]:
    """One absolutely positioned div per hypothesis word, in percent of the image width."""
    boxes = []
    width = max(result.width, 1)
    for index, word in enumerate(result.hypothesis.words):
        x0 = word.x_start if math.isfinite(word.x_start) else 0.0
        x1 = word.x_end if math.isfinite(word.x_end) else x0
        x0, x1 = sorted((min(max(x0, 0.0), width), min(max(x1, 0.0), width)))
        conf = float(word.confidence)
        title = f"{word.text}  confidence {conf:.2f}" if math.isfinite(conf) else word.text
        if getattr(word, "oov", False):
            title += " (out of lexicon)"
        boxes.append(
            f'<div class="word {_confidence_class(conf)}{" odd" if index % 2 else ""}" data-word="{html.escape(word.text)}" '
            f'style="left:{_percent(100 * x0 / width)};width:{_percent(100 * (x1 - x0) / width)}" '
            f'title="{html.escape(title)}"><span>{html.escape(word.text)}</span></div>')
    return boxes


def write_html(demo: DemoResult, output: str | os.PathLike) -> Path:
    """``output/index.html`` with every line image (copied to ``output/lines/``), its word boxes,
    hypothesis and reference; self-contained (no scripts, no network), viewable offline."""
    from .metrics import score_line

    output = Path(output)
    (output / "lines").mkdir(parents=True, exist_ok=True)
    parts = [
        "<!DOCTYPE html>", f'<html lang="{demo.settings.lang if demo.settings else "en"}"><head><meta charset="utf-8">',
        "<title>hybrid-hwr demo</title>", f"<style>{_STYLE}</style></head><body>",
        "<h1>hybrid-hwr demo: bundled test lines</h1>",
        '<table class="summary">',
        f"<tr><th>model</th><td>{html.escape(str(demo.model_dir))}</td></tr>",
        f"<tr><th>decoding</th><td>{html.escape(demo.settings.describe(demo.emission_type) if demo.settings else '')}</td></tr>",
        f"<tr><th>lines</th><td>{len(demo.lines)}</td></tr>",
        f"<tr><th>CER</th><td>{100 * demo.cer:.2f} %</td></tr>",
        f"<tr><th>WER</th><td>{100 * demo.wer:.2f} %</td></tr>",
        f"<tr><th>time</th><td>{demo.seconds:.1f} s</td></tr>",
        "</table>",
        "<p>Boxes: the horizontal extent of every recognised word, from its frames in the "
        "decoding; green: confidence &ge; 0.8, orange &ge; 0.5, red below (hover for the value).</p>",
    ]
    for result in demo.lines:
        image_name = f"lines/{result.id}{result.image_path.suffix or '.png'}"
        shutil.copyfile(result.image_path, output / image_name)
        parts.append(f'<div class="line" id="{html.escape(result.id)}">')
        parts.append(f'<div class="id">{html.escape(result.id)}</div>')
        parts.append('<div class="image">'
                     f'<img src="{html.escape(image_name)}" alt="{html.escape(result.id)}"'
                     + (f' width="{result.width}" height="{result.height}"' if result.width else "") + ">")
        if result.hypothesis is not None:
            parts.extend(_word_boxes_html(result))
        parts.append("</div>")
        parts.append('<div class="texts">')
        if result.error is not None:
            parts.append(f'<div class="error">not decoded: {html.escape(result.error)}</div>')
        else:
            line_score = score_line(result.id, result.reference, result.text, demo.settings.lang if demo.settings else None)
            parts.append(f'<div class="hyp"><span class="label">hyp</span>{html.escape(result.text)}</div>')
            parts.append(f'<div class="ref"><span class="label">ref</span>{html.escape(result.reference)}</div>')
            parts.append(f'<div class="id">{line_score.chars.errors} character errors / {line_score.chars.ref_len}, '
                         f'{line_score.words.errors} word errors / {line_score.words.ref_len}; '
                         f'{result.seconds:.2f} s</div>')
        parts.append("</div></div>")
    parts.append("</body></html>")
    page = output / "index.html"
    atomic_write_text(page, "\n".join(parts) + "\n")
    return page
