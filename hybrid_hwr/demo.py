"""The demo: the bundled test lines decoded with the bundled default recogniser.

:func:`run_demo` decodes the bundled test lines (``sample/test.tsv``: writers not seen
in training), prints reference and hypothesis of every line, then corpus CER/WER and the
time taken; with ``output`` it also writes an HTML page (:func:`write_html`).

Decoder directories (``decoder.json``), :class:`DecoderSettings`, :func:`load_recognizer`
and :func:`load_default_recognizer` live in :mod:`hybrid_hwr.decode` (and at the top
level, ``hybrid_hwr.load_default_recognizer``); they are importable from here too.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .decode import (CALIBRATED, DECODER_FILE, DecoderSettings, default_model_dir, load_default_recognizer,  # noqa: F401
                     load_recognizer, resolve_model_dir, settings_line)
from .errors import HwrError
from .fileio import atomic_write_text


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
    model_dir = resolve_model_dir(model_dir)
    lines = read_split(sample_dir() / "test.tsv", limit=limit)
    if not lines:
        raise HwrError("the bundled test sample holds no line")
    t0 = time.perf_counter()
    recognizer, settings = load_recognizer(model_dir)
    load_seconds = time.perf_counter() - t0
    echo(settings_line(model_dir, recognizer, settings))
    if recognizer.lexicon_message:
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
