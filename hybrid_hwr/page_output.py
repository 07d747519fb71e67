"""Recognised text back on its pages: PAGE 2019 and ALTO v4 files from decoded lines.

Lines imported by ``hybrid-hwr import`` know where they lie on their page
(:class:`hybrid_hwr.pages.LineLocation`); a decoded word spans ``x_start..x_end`` in
its line image, so on the page it spans ``(x0 + x) / scale``. Its box is the part of the
line polygon between those two x, so a word never leaves its line::

    write_pages(decoded, locations, "out/", "page")   # out/<page>.xml, one per page

``decoded`` holds ``(line id, text, Hypothesis)`` in any order; the lines of a page are
written in the order the page XML gave them, grouped by their text region (block).
Confidences are the decoder's word posteriors (``TextEquiv@conf``, ``String@WC``); a
line's confidence is the mean of its words'.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from . import __version__
from .errors import HwrError
from .fileio import atomic_write_text
from .pages import LAYOUT_FILE, LineLocation, load_locations

__all__ = ["PAGE_NS", "ALTO_NS", "FORMATS", "PageWord", "PageText", "find_locations", "place_words", "page_xml",
           "alto_xml", "write_pages"]

PAGE_NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
ALTO_NS = "http://www.loc.gov/standards/alto/ns-v4#"
FORMATS = ("page", "alto")


@dataclass
class PageWord:
    text: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in page pixels
    confidence: float  # NaN when the decoder gave none


@dataclass
class PageText:
    """One decoded line placed on its page."""

    location: LineLocation
    text: str
    words: list[PageWord]

    @property
    def confidence(self) -> float:
        known = [w.confidence for w in self.words if math.isfinite(w.confidence)]
        return float(np.mean(known)) if known else math.nan


def _clip_strip(polygon: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The polygon cut to lo <= x <= hi (Sutherland-Hodgman against the two edges of the strip)."""
    points = [tuple(p) for p in polygon]
    for inside, edge in ((lambda x: x >= lo, lo), (lambda x: x <= hi, hi)):
        out = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            if inside(current[0]) != inside(previous[0]):
                t = (edge - previous[0]) / (current[0] - previous[0])
                out.append((edge, previous[1] + t * (current[1] - previous[1])))
            if inside(current[0]):
                out.append(current)
        points = out
        if not points:
            break
    return np.asarray(points, float).reshape(-1, 2)


def _group_words(text: str, words) -> list[tuple[str, list]]:
    """Display words of ``text`` with the decoder words (tokens) each is made of.

    ``l' État ,`` is displayed ``l'État,``: one word on the page, so that the words joined
    by spaces give the line's text. Tokens that do not add up keep their own words.
    """
    groups, k = [], 0
    tokens = [w for w in words if w.text]
    for shown in text.split():
        taken, spelled = [], ""
        while k < len(tokens) and len(spelled) < len(shown):
            taken.append(tokens[k])
            spelled += tokens[k].text
            k += 1
        if spelled != shown:
            return [(w.text, [w]) for w in tokens]
        groups.append((shown, taken))
    return groups if k == len(tokens) else [(w.text, [w]) for w in tokens]


def place_words(location: LineLocation, text: str, hypothesis) -> PageText:
    """Map a line's decoded words (line-image x extents) to boxes on its page."""
    polygon = location.polygon
    line_x0, line_y0 = polygon.min(axis=0)
    line_x1, line_y1 = polygon.max(axis=0)
    placed = []
    for shown, tokens in _group_words(text, hypothesis.words):
        starts = [t.x_start for t in tokens if math.isfinite(t.x_start)]
        ends = [t.x_end for t in tokens if math.isfinite(t.x_end)]
        if starts and ends:
            (lo, hi), _ = location.to_page([min(starts), max(ends)], [0.0, 0.0])
            lo, hi = sorted((min(max(float(lo), line_x0), line_x1), min(max(float(hi), line_x0), line_x1)))
        else:  # no extent (e.g. a partial result): the whole line
            lo, hi = line_x0, line_x1
        piece = _clip_strip(polygon, lo, hi)
        y0, y1 = (piece[:, 1].min(), piece[:, 1].max()) if len(piece) else (line_y0, line_y1)
        confidences = [t.confidence for t in tokens if math.isfinite(t.confidence)]
        placed.append(PageWord(shown, (lo, float(y0), hi, float(y1)), min(confidences) if confidences else math.nan))
    return PageText(location, text, placed)


def find_locations(inputs, images: str | Path | None = None, layout: str | Path | None = None,
                   ids=None) -> dict[str, LineLocation]:
    """The line locations of a decode's inputs: ``layout`` if given, else the ``layout.json`` of
    every split file's folder and of its image folder's parent (``split`` links ``lines/`` to
    the imported one). With ``ids``, every one must be found (HwrError naming the first that is not).
    """
    if layout is not None:
        found = load_locations(layout)
    else:
        files: list[Path] = []
        for item in inputs:
            path = Path(item)
            if path.suffix.lower() != ".tsv":
                continue
            folder = Path(images) if images is not None else path.parent / "lines"
            for candidate in (path.parent / LAYOUT_FILE, folder.resolve().parent / LAYOUT_FILE):
                if candidate.is_file() and candidate.resolve() not in {f.resolve() for f in files}:
                    files.append(candidate)
        found = {}
        for path in files:
            found.update(load_locations(path))
    for line_id in ids or ():
        if line_id not in found:
            where = f"not in {layout}" if layout is not None else f"no {LAYOUT_FILE} next to the split file or its images"
            raise HwrError(f"line {line_id} was not imported from a page ({where}): page output needs lines "
                           "cut by `hybrid-hwr import`")
    return found


# ------------------------------------------------------------------------------- writers

def _int_points(points) -> str:
    # PAGE points are non-negative integers
    return " ".join(f"{max(int(round(x)), 0)},{max(int(round(y)), 0)}" for x, y in points)


def _box_points(box) -> str:
    x0, y0, x1, y1 = box
    return _int_points([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])


def _conf(value: float) -> str:
    return f" conf=\"{min(max(value, 0.0), 1.0):.4f}\"" if math.isfinite(value) else ""


def _image_name(location: LineLocation, out_dir: Path) -> str:
    """The page image relative to the folder of the written file (where readers look for it)."""
    try:
        return Path(os.path.relpath(location.page.image.resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # another drive (Windows): no relative path
        return location.page.image.resolve().as_posix()


def _regions(lines: list[PageText]) -> list[tuple[str, list[PageText]]]:
    groups: dict[str, list[PageText]] = {}
    for line in lines:
        groups.setdefault(line.location.region or "r1", []).append(line)
    return list(groups.items())


def _bbox(lines: list[PageText]):
    points = np.concatenate([line.location.polygon for line in lines])
    return (*points.min(axis=0), *points.max(axis=0))


def _timestamp() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def page_xml(lines: list[PageText], out_dir: str | Path = ".") -> str:
    """A PAGE 2019 document (PcGts) with the lines of one page, in reading order."""
    page = lines[0].location.page
    stamp = _timestamp()
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<PcGts xmlns="{PAGE_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           f'xsi:schemaLocation="{PAGE_NS} {PAGE_NS}/pagecontent.xsd">',
           f" <Metadata><Creator>hybrid_hwr {escape(__version__)}</Creator><Created>{stamp}</Created>"
           f"<LastChange>{stamp}</LastChange></Metadata>",
           f" <Page imageFilename={quoteattr(_image_name(lines[0].location, Path(out_dir)))} "
           f'imageWidth="{page.width}" imageHeight="{page.height}">']
    regions = _regions(lines)
    # schema order: ReadingOrder before the regions; TextLine: Coords, Baseline, Word..., TextEquiv
    out.append('  <ReadingOrder><OrderedGroup id="ro_1" caption="reading order">')
    out += [f'   <RegionRefIndexed index="{i}" regionRef={quoteattr(rid)}/>' for i, (rid, _) in enumerate(regions)]
    out.append("  </OrderedGroup></ReadingOrder>")
    for region_id, members in regions:
        out.append(f"  <TextRegion id={quoteattr(region_id)}>")
        out.append(f'   <Coords points="{_box_points(_bbox(members))}"/>')
        for line in members:
            loc = line.location
            out.append(f"   <TextLine id={quoteattr(loc.line_id)}>")
            out.append(f'    <Coords points="{_int_points(loc.polygon)}"/>')
            if loc.baseline is not None:
                out.append(f'    <Baseline points="{_int_points(loc.baseline)}"/>')
            for n, word in enumerate(line.words, start=1):
                out.append(f'    <Word id={quoteattr(f"{loc.line_id}_w{n}")}><Coords points="{_box_points(word.box)}"/>'
                           f"<TextEquiv{_conf(word.confidence)}><Unicode>{escape(word.text)}</Unicode></TextEquiv></Word>")
            out.append(f"    <TextEquiv{_conf(line.confidence)}><Unicode>{escape(line.text)}</Unicode></TextEquiv>")
            out.append("   </TextLine>")
        out.append("  </TextRegion>")
    out += [" </Page>", "</PcGts>", ""]
    return "\n".join(out)


def _num(value: float) -> str:
    return f"{float(value):.2f}".rstrip("0").rstrip(".")


def _alto_box(box) -> str:
    x0, y0, x1, y1 = box
    return f'HPOS="{_num(x0)}" VPOS="{_num(y0)}" WIDTH="{_num(x1 - x0)}" HEIGHT="{_num(y1 - y0)}"'


def _alto_points(points) -> str:
    return " ".join(f"{_num(x)} {_num(y)}" for x, y in points)


def alto_xml(lines: list[PageText], out_dir: str | Path = ".") -> str:
    """An ALTO v4 document (pixel units) with the lines of one page, in reading order."""
    page = lines[0].location.page
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<alto xmlns="{ALTO_NS}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
           f'xsi:schemaLocation="{ALTO_NS} http://www.loc.gov/standards/alto/v4/alto-4-2.xsd">',
           " <Description>",
           "  <MeasurementUnit>pixel</MeasurementUnit>",
           f"  <sourceImageInformation><fileName>{escape(_image_name(lines[0].location, Path(out_dir)))}"
           "</fileName></sourceImageInformation>",
           f"  <Processing ID=\"proc_1\"><processingDateTime>{_timestamp()}</processingDateTime>"
           f"<processingSoftware><softwareName>hybrid_hwr</softwareName><softwareVersion>{escape(__version__)}"
           "</softwareVersion></processingSoftware></Processing>",
           " </Description>",
           " <Layout>",
           f'  <Page ID={quoteattr("page_" + page.key)} PHYSICAL_IMG_NR="1" WIDTH="{page.width}" HEIGHT="{page.height}">',
           f'   <PrintSpace HPOS="0" VPOS="0" WIDTH="{page.width}" HEIGHT="{page.height}">']
    for region_id, members in _regions(lines):
        out.append(f"    <TextBlock ID={quoteattr(region_id)} {_alto_box(_bbox(members))}>")
        for line in members:
            if not line.words:  # ALTO's TextLine holds at least one String: an empty line is left out
                continue
            loc = line.location
            x0, y0 = loc.polygon.min(axis=0)
            x1, y1 = loc.polygon.max(axis=0)
            baseline = f' BASELINE="{_alto_points(loc.baseline)}"' if loc.baseline is not None else ""
            out.append(f"     <TextLine ID={quoteattr(loc.line_id)} {_alto_box((x0, y0, x1, y1))}{baseline}>")
            out.append(f'      <Shape><Polygon POINTS="{_alto_points(loc.polygon)}"/></Shape>')
            for n, word in enumerate(line.words):
                if n:
                    gap = (line.words[n - 1].box[2], word.box[0])
                    out.append(f'      <SP HPOS="{_num(gap[0])}" WIDTH="{_num(max(gap[1] - gap[0], 0.0))}"/>')
                wc = f' WC="{min(max(word.confidence, 0.0), 1.0):.4f}"' if math.isfinite(word.confidence) else ""
                out.append(f'      <String ID={quoteattr(f"{loc.line_id}_w{n + 1}")} {_alto_box(word.box)} '
                           f"CONTENT={quoteattr(word.text)}{wc}/>")
            out.append("     </TextLine>")
        out.append("    </TextBlock>")
    out += ["   </PrintSpace>", "  </Page>", " </Layout>", "</alto>", ""]
    return "\n".join(out)


def write_pages(decoded, locations: dict[str, LineLocation], out_dir: str | Path, fmt: str = "page") -> list[Path]:
    """Write ``out_dir/<page>.xml`` (``fmt`` 'page' or 'alto') for every page with a decoded line; returns the files.

    ``decoded``: ``(line id, text, Hypothesis)``; every id must be in ``locations``.
    Each file is written atomically.
    """
    if fmt not in FORMATS:
        raise HwrError(f"unknown page format {fmt!r} (expected one of {', '.join(FORMATS)})")
    out_dir = Path(out_dir)
    order = {line_id: n for n, line_id in enumerate(locations)}
    pages: dict[str, list[PageText]] = {}
    for line_id, text, hypothesis in decoded:
        if line_id not in locations:
            raise HwrError(f"line {line_id} was not imported from a page: no position to write it at")
        location = locations[line_id]
        pages.setdefault(location.page.key, []).append(place_words(location, text, hypothesis))
    render = page_xml if fmt == "page" else alto_xml
    written = []
    for key, lines in pages.items():
        lines.sort(key=lambda line: order[line.location.id])
        path = out_dir / f"{key}.xml"
        atomic_write_text(path, render(lines, out_dir))
        written.append(path)
    return written
