"""Import whole pages (page image + PAGE XML or ALTO XML) as a line dataset.

Each text line is cut along its polygon: the polygon's bounding box is cropped from
the page and every pixel outside the polygon is set to white, then written as an
8-bit gray PNG. The result is the split layout every other command reads::

    <out>/lines/<page stem>_<line id>.png
    <out>/<split>.tsv                       id<TAB>text, UTF-8, NFC
    <out>/layout.json                       where each line lies on its page (:func:`load_locations`)

The layout file lets ``decode --page-xml/--alto`` put recognised words back on the
page: x in a line image maps to ``(x0 + x) / scale`` on the page image.

Formats (namespaces are ignored, so every schema version reads the same way):

* PAGE (PcGts, 2010 .. 2019): ``Page@imageFilename``, ``TextLine/Coords@points``
  (``x,y x,y ...``, or the 2010 ``<Point x= y=/>`` children), the line's own
  ``TextEquiv/Unicode`` (lowest ``@index`` first), else its words' texts joined by spaces;
  ``Baseline@points`` and the enclosing ``TextRegion@id`` are kept for the layout file.
* ALTO (v2 .. v4): ``sourceImageInformation/fileName``, ``TextLine/Shape/Polygon@POINTS``
  (else the HPOS/VPOS/WIDTH/HEIGHT box), the line's ``CONTENT`` if it has one, else its
  ``String@CONTENT`` joined by spaces (``HYP`` appended to the last word); a polyline
  ``BASELINE`` (ALTO 4.2) and the enclosing ``TextBlock@ID`` are kept.
  ``MeasurementUnit`` mm10 and inch1200 are converted with the image's resolution.

The page image is the file the XML names (relative to the XML file), else a file with
the XML's stem and an image suffix next to it. When the XML declares a page size
different from the image's, coordinates are scaled to the image.
"""

from __future__ import annotations

import math
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .data import IMAGE_SUFFIXES, inside_folder, load_image, normalize_text
from .errors import HwrError
from .fileio import atomic_write_text


@dataclass
class PageLine:
    id: str
    text: str
    polygon: np.ndarray  # (N, 2) float64, x then y, in the XML's coordinates
    baseline: np.ndarray | None = None  # (N, 2), same coordinates, when the XML gives one
    region: str | None = None  # id of the enclosing TextRegion / TextBlock


@dataclass
class PageLayout:
    """What an XML file says about one page."""

    xml_path: Path
    format: str  # 'page' or 'alto'
    image_name: str | None
    width: float | None  # page size declared by the XML, if any
    height: float | None
    unit: str = "pixel"
    lines: list[PageLine] = field(default_factory=list)


def _local(tag) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _children(element, name: str):
    return [child for child in element if _local(child.tag) == name]


def _descendants(element, name: str):
    return [node for node in element.iter() if _local(node.tag) == name]


_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def _parse_points(text: str | None, where: str) -> np.ndarray:
    """``x,y x,y`` (PAGE) or ``x y x y`` / ``x,y x,y`` (ALTO) -> (N, 2) array."""
    values = [float(v) for v in _NUMBER.findall(text or "")]
    if len(values) % 2:
        raise HwrError(f"{where}: odd number of coordinates in points {text[:40]!r}")
    return np.asarray(values, dtype=np.float64).reshape(-1, 2)


def _float_attr(element, name: str) -> float | None:
    value = element.get(name) if element is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def read_layout(xml_path: str | Path) -> PageLayout:
    """Parse a PAGE or ALTO file into its image name, page size and text lines."""
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as exc:
        raise HwrError(f"{xml_path}: not well-formed XML ({exc})") from None
    except OSError as exc:
        raise HwrError(f"{xml_path}: cannot read ({exc.strerror or exc})") from None
    kind = _local(root.tag)
    if kind == "PcGts":
        return _read_page_xml(root, xml_path)
    if kind.lower() == "alto":
        return _read_alto(root, xml_path)
    raise HwrError(f"{xml_path}: neither PAGE (PcGts) nor ALTO XML (root element <{kind}>)")


def _read_page_xml(root, xml_path: Path) -> PageLayout:
    pages = _children(root, "Page")
    if not pages:
        raise HwrError(f"{xml_path}: PAGE file without a <Page> element")
    page = pages[0]
    layout = PageLayout(
        xml_path, "page", page.get("imageFilename"), _float_attr(page, "imageWidth"), _float_attr(page, "imageHeight")
    )
    regions = _regions(page, "TextRegion", "id")
    for number, line in enumerate(_descendants(page, "TextLine"), start=1):
        line_id = line.get("id") or f"l{number:04d}"
        where = f"{xml_path}: line {line_id}"
        coords = _children(line, "Coords")
        if not coords:
            raise HwrError(f"{where}: no <Coords>")
        if coords[0].get("points") is not None:
            polygon = _parse_points(coords[0].get("points"), where)
        else:  # PAGE 2010: <Point x= y=/> children
            points = [(_float_attr(p, "x"), _float_attr(p, "y")) for p in _children(coords[0], "Point")]
            polygon = np.asarray([p for p in points if None not in p], dtype=np.float64).reshape(-1, 2)
        baseline = None
        for node in _children(line, "Baseline"):
            baseline = _parse_points(node.get("points"), where)
        layout.lines.append(PageLine(line_id, _page_text(line), polygon, _baseline(baseline), regions.get(line)))
    return layout


def _regions(root, name: str, id_attr: str) -> dict:
    """TextLine element -> id of the innermost enclosing ``name`` element."""
    regions = {}
    for region in _descendants(root, name):
        for line in _descendants(region, "TextLine"):
            regions[line] = region.get(id_attr)  # inner regions come later in document order and win
    return regions


def _baseline(points: np.ndarray | None) -> np.ndarray | None:
    return points if points is not None and len(points) >= 2 else None


def _text_equiv(element) -> str | None:
    """The element's own TextEquiv text, lowest @index first (None if it has none)."""
    equivs = _children(element, "TextEquiv")
    if not equivs:
        return None

    def rank(equiv):
        index = equiv.get("index")
        return int(index) if index is not None and index.lstrip("-").isdigit() else 1_000_000

    for equiv in sorted(equivs, key=rank):
        unicode_nodes = _children(equiv, "Unicode")
        if unicode_nodes:
            return unicode_nodes[0].text or ""
    return None


def _page_text(line) -> str:
    text = _text_equiv(line)
    if text is None:
        words = [_text_equiv(word) for word in _children(line, "Word")]
        text = " ".join(w for w in words if w)
    return normalize_text(text)


def _read_alto(root, xml_path: Path) -> PageLayout:
    unit_nodes = _descendants(root, "MeasurementUnit")
    unit = (unit_nodes[0].text or "pixel").strip().lower() if unit_nodes else "pixel"
    file_nodes = _descendants(root, "fileName")
    image_name = (file_nodes[0].text or "").strip() if file_nodes else None
    pages = _descendants(root, "Page")
    page = pages[0] if pages else None
    layout = PageLayout(
        xml_path, "alto", image_name or None, _float_attr(page, "WIDTH"), _float_attr(page, "HEIGHT"), unit
    )
    regions = _regions(root, "TextBlock", "ID")
    for number, line in enumerate(_descendants(root, "TextLine"), start=1):
        line_id = line.get("ID") or f"l{number:04d}"
        where = f"{xml_path}: line {line_id}"
        polygon = None
        for shape in _children(line, "Shape"):
            for poly in _children(shape, "Polygon"):
                polygon = _parse_points(poly.get("POINTS"), where)
        if polygon is None or len(polygon) < 3:
            box = [_float_attr(line, name) for name in ("HPOS", "VPOS", "WIDTH", "HEIGHT")]
            if None in box:
                raise HwrError(f"{where}: neither a Shape/Polygon nor HPOS/VPOS/WIDTH/HEIGHT")
            x, y, w, h = box
            polygon = np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], dtype=np.float64)
        if line.get("CONTENT") is not None:
            text = line.get("CONTENT")
        else:
            words: list[str] = []
            for child in line:
                name = _local(child.tag)
                if name == "String":
                    words.append(child.get("CONTENT") or "")
                elif name == "HYP" and words:
                    words[-1] += child.get("CONTENT") or ""
            text = " ".join(w for w in words if w)
        # ALTO 4.2 BASELINE is a polyline; older versions give a single y, not kept
        try:
            baseline = _baseline(_parse_points(line.get("BASELINE"), where))
        except HwrError:
            baseline = None
        layout.lines.append(PageLine(line_id, normalize_text(text), polygon, baseline, regions.get(line)))
    return layout


def find_page_image(layout: PageLayout, root: str | Path | None = None) -> Path:
    """The page image: the file the XML names (relative to the XML), else ``<xml stem>.<image suffix>``.

    A named file outside ``root`` (the folder being imported; default: the XML's folder;
    for a ``page/`` or ``alto/`` folder its parent, where exports keep the images) is not
    read unless outside paths are allowed (:func:`hybrid_hwr.data.allow_outside_paths`).
    """
    folder = layout.xml_path.parent
    root = Path(root) if root is not None else folder
    if root.resolve().name.lower() in ("page", "alto"):
        root = root.resolve().parent
    candidates: list[Path] = []
    if layout.image_name:
        named = Path(layout.image_name.replace("\\", "/"))
        if named.is_absolute():
            candidates.append(named)
        candidates += [folder / named, folder / named.name]
        # a page names its image next to it: other folders only when the user allows them
        candidates = [c for c in candidates if inside_folder(c, root)]
    candidates += [layout.xml_path.with_suffix(suffix) for suffix in IMAGE_SUFFIXES]
    candidates += [layout.xml_path.with_suffix(suffix.upper()) for suffix in IMAGE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    named = f" {layout.image_name!r}" if layout.image_name else ""
    raise HwrError(f"{layout.xml_path}: page image{named} not found (looked next to the XML file; a path outside "
                   "the imported folder is read only with --allow-outside-paths)")


def _image_dpi(path: Path) -> float:
    from PIL import Image

    try:
        with Image.open(path) as image:
            dpi = image.info.get("dpi")
    except OSError:
        dpi = None
    return float(dpi[0]) if dpi and dpi[0] else 300.0


def crop_box(polygon: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """``x0, y0, x1, y1``: the pixels :func:`cut_line` crops from a page of ``shape`` (empty if x1 <= x0 or y1 <= y0)."""
    height, width = shape[:2]
    x0 = max(int(math.floor(polygon[:, 0].min())), 0)
    y0 = max(int(math.floor(polygon[:, 1].min())), 0)
    # coordinates are pixel corners: a box from x=10 to x=20 covers 10 columns (at least one)
    x1 = min(max(int(math.ceil(polygon[:, 0].max())), x0 + 1), width)
    y1 = min(max(int(math.ceil(polygon[:, 1].max())), y0 + 1), height)
    return x0, y0, x1, y1


def cut_line(page: np.ndarray, polygon: np.ndarray) -> np.ndarray | None:
    """Crop the polygon's bounding box from a gray page, white outside the polygon (None if empty)."""
    from PIL import Image, ImageDraw

    x0, y0, x1, y1 = crop_box(polygon, page.shape)
    if x1 <= x0 or y1 <= y0:
        return None
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(float(x - x0), float(y - y0)) for x, y in polygon], fill=255, outline=255)
    inside = np.asarray(mask) > 0
    if not inside.any():
        return None
    crop = page[y0:y1, x0:x1]
    return np.where(inside, crop, np.uint8(255)).astype(np.uint8)


_UNSAFE_ID = re.compile(r"[^0-9A-Za-z._-]+")


def _line_id(page_stem: str, line_id: str) -> str:
    return _UNSAFE_ID.sub("_", f"{page_stem}_{line_id}")


def _report(message: str) -> None:
    print(f"hybrid-hwr: warning: {message}", file=sys.stderr, flush=True)


def find_page_files(pages_dir: str | Path) -> list[Path]:
    """The XML files to import: ``pages_dir`` itself if it is a file, else its ``*.xml`` (sorted, not recursive)."""
    pages_dir = Path(pages_dir)
    if pages_dir.is_file():
        return [pages_dir]
    if not pages_dir.is_dir():
        raise HwrError(f"{pages_dir}: no such directory")
    files = sorted(p for p in pages_dir.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    if not files:
        raise HwrError(f"{pages_dir}: no .xml file (PAGE or ALTO) in this directory")
    return files


def import_pages(
    pages_dir: str | Path,
    out_dir: str | Path,
    split_name: str = "all",
    *,
    scale: float = 1.0,
    keep_empty: bool = False,
    on_error: Callable[[str], None] | None = _report,
    progress: bool = False,
) -> int:
    """Cut every text line of every page in ``pages_dir`` and write the split layout; returns the line count.

    ``scale`` resizes the pages (and polygons) before cutting, e.g. 0.5 for 300 dpi
    scans -> 150 dpi lines. Lines without text are skipped unless ``keep_empty``. A page
    or line that cannot be imported is reported through ``on_error`` and skipped
    (``on_error=None``: the first problem raises HwrError).
    """
    from PIL import Image

    if not scale > 0:
        raise HwrError(f"scale must be positive, got {scale}")
    out_dir = Path(out_dir)
    xml_files = find_page_files(pages_dir)
    lines_dir = out_dir / "lines"
    lines_dir.mkdir(parents=True, exist_ok=True)

    def problem(message: str) -> None:
        if on_error is None:
            raise HwrError(message)
        on_error(message)

    records: list[tuple[str, str]] = []
    locations: list[LineLocation] = []
    seen: dict[str, Path] = {}
    iterator = xml_files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(xml_files, desc="import", unit="page", file=sys.stderr, disable=None)
    for xml_path in iterator:
        try:
            layout = read_layout(xml_path)
            image_path = find_page_image(layout, pages_dir)
            page = load_image(image_path)
        except HwrError as exc:
            problem(f"skipped page {xml_path.name}: {exc}")
            continue
        # map XML coordinates to pixels of the (rescaled) page image
        factor = np.array([1.0, 1.0])
        if layout.unit in ("mm10", "inch1200"):
            dpi = _image_dpi(image_path)
            factor *= dpi / 254.0 if layout.unit == "mm10" else dpi / 1200.0
        elif layout.width and layout.height and (layout.width, layout.height) != (page.shape[1], page.shape[0]):
            factor = np.array([page.shape[1] / layout.width, page.shape[0] / layout.height])
        info = PageInfo(xml_path.stem, image_path, xml_path, layout.format, page.shape[1], page.shape[0])
        pixels = factor.copy()  # XML coordinates -> pixels of the page image as it is on disk
        if scale != 1.0:
            size = (max(round(page.shape[1] * scale), 1), max(round(page.shape[0] * scale), 1))
            page = np.asarray(Image.fromarray(page).resize(size, Image.LANCZOS), dtype=np.uint8)
            factor = factor * scale
        for line in layout.lines:
            line_id = _line_id(xml_path.stem, line.id)
            if not line.text and not keep_empty:
                continue
            if line_id in seen:
                problem(f"skipped line {line_id} of {xml_path.name}: duplicate id (also in {seen[line_id].name})")
                continue
            if len(line.polygon) < 3:
                problem(f"skipped line {line_id} of {xml_path.name}: polygon has fewer than 3 points")
                continue
            gray = cut_line(page, line.polygon * factor)
            if gray is None:
                problem(f"skipped line {line_id} of {xml_path.name}: polygon lies outside the page image")
                continue
            Image.fromarray(gray).save(lines_dir / f"{line_id}.png", optimize=False)
            seen[line_id] = xml_path
            records.append((line_id, line.text))
            x0, y0, _, _ = crop_box(line.polygon * factor, page.shape)
            baseline = line.baseline * pixels if line.baseline is not None else None
            locations.append(LineLocation(line_id, info, line.id, line.region, line.polygon * pixels, baseline,
                                          x0, y0, scale))
    if not records:
        raise HwrError(f"{pages_dir}: no text line could be imported")
    _write_split(out_dir / f"{split_name}.tsv", records)
    save_locations(out_dir, locations)
    return len(records)


def _write_split(path: Path, records: list[tuple[str, str]]) -> None:
    """Write ``id<TAB>text`` lines atomically (a crash leaves the old file or the new one)."""
    atomic_write_text(path, "".join(f"{line_id}\t{text}\n" for line_id, text in records))


# ---------------------------------------------------------------------------------------
# Where each imported line lies on its page (DATA/layout.json)

LAYOUT_FILE = "layout.json"


@dataclass
class PageInfo:
    """One imported page: its key (the XML file's stem), files and size in pixels of the image on disk."""

    key: str
    image: Path
    xml: Path
    format: str
    width: int
    height: int


@dataclass
class LineLocation:
    """Where a line image came from: ``(x0 + x) / scale, (y0 + y) / scale`` on the page image is its pixel (x, y)."""

    id: str                 # dataset line id
    page: PageInfo
    line_id: str            # the line's id in the page XML
    region: str | None
    polygon: np.ndarray     # (N, 2) in pixels of the page image on disk
    baseline: np.ndarray | None
    x0: int                 # crop offset in the page resized by ``scale``
    y0: int
    scale: float

    def to_page(self, x, y):
        return (self.x0 + np.asarray(x, float)) / self.scale, (self.y0 + np.asarray(y, float)) / self.scale


def _points(array) -> list | None:
    return None if array is None else [[round(float(x), 3), round(float(y), 3)] for x, y in array]


def save_locations(out_dir: str | Path, locations: list[LineLocation]) -> Path:
    """Write (atomically) ``out_dir/layout.json``; pages imported before into the same folder keep their lines.

    Paths are stored relative to ``out_dir``, so the dataset and the pages can move together.
    """
    import json
    import os

    out_dir = Path(out_dir)
    path = out_dir / LAYOUT_FILE
    try:
        previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        previous = {}  # unreadable: rewritten from this import alone
    pages = previous.get("pages", {}) if isinstance(previous.get("pages"), dict) else {}
    lines = previous.get("lines", {}) if isinstance(previous.get("lines"), dict) else {}
    imported = {loc.page.key for loc in locations}
    lines = {k: v for k, v in lines.items() if isinstance(v, dict) and v.get("page") not in imported}

    def relative(p: Path) -> str:
        return Path(os.path.relpath(p.resolve(), out_dir.resolve())).as_posix()

    for loc in locations:
        pages[loc.page.key] = {"image": relative(loc.page.image), "xml": relative(loc.page.xml),
                               "format": loc.page.format, "width": loc.page.width, "height": loc.page.height}
        lines[loc.id] = {"page": loc.page.key, "line": loc.line_id, "region": loc.region,
                         "polygon": _points(loc.polygon), "baseline": _points(loc.baseline),
                         "x0": loc.x0, "y0": loc.y0, "scale": loc.scale}
    # one line per entry: readable, and a diff of two imports shows the lines that moved
    def entries(d):
        return ",\n".join(f" {json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}" for k, v in d.items())

    text = f'{{"pages": {{\n{entries(pages)}\n}},\n"lines": {{\n{entries(lines)}\n}}}}\n'
    atomic_write_text(path, text)
    return path


def load_locations(path: str | Path) -> dict[str, LineLocation]:
    """Dataset line id -> :class:`LineLocation`, from a ``layout.json`` written by :func:`import_pages`."""
    import json
    import os

    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        def resolve(name):
            return Path(os.path.normpath(path.parent / name))

        pages = {key: PageInfo(key, resolve(p["image"]), resolve(p["xml"]), str(p["format"]),
                               int(p["width"]), int(p["height"])) for key, p in raw["pages"].items()}
        out = {}
        for line_id, v in raw["lines"].items():
            baseline = np.asarray(v["baseline"], float).reshape(-1, 2) if v.get("baseline") else None
            out[line_id] = LineLocation(line_id, pages[v["page"]], str(v["line"]), v.get("region"),
                                        np.asarray(v["polygon"], float).reshape(-1, 2), baseline,
                                        int(v["x0"]), int(v["y0"]), float(v["scale"]))
        return out
    except OSError as exc:
        raise HwrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise HwrError(f"{path}: not a layout file written by `hybrid-hwr import` ({exc!r})") from None
