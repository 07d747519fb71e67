"""Recognised text as PAGE 2019 / ALTO v4: import -> decode --page-xml/--alto -> import again.

The PAGE files are validated against the official PAGE 2019-07-15 schema, which OCR-D's
`ocrd` package ships (`make install` installs it without its dependencies: only the file is
read); no installable package holds the ALTO v4 schema, so the element order and attribute
types it requires are checked here.
"""

import importlib.util
import json
import math
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_DATA
from hybrid_hwr import cli
from hybrid_hwr.data import read_transcriptions
from hybrid_hwr.decode import Hypothesis, WordBox
from hybrid_hwr.errors import HwrError
from hybrid_hwr.page_output import ALTO_NS, PAGE_NS, place_words, write_pages
from hybrid_hwr.pages import LAYOUT_FILE, import_pages, load_locations, read_layout

PAGES = TEST_DATA / "pages"
STEM = "imp_wikitexte_0022"
N_DECODED = 3
P = {"p": PAGE_NS}
A = {"a": ALTO_NS}


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


@pytest.fixture(scope="module")
def round_trip(tmp_path_factory):
    """Pages in tmp/pages (ALTO, as exported), imported, the first lines decoded to tmp/pages/page and tmp/alto."""
    tmp = tmp_path_factory.mktemp("page_output")
    pages = tmp / "pages"
    pages.mkdir()
    for name in (f"{STEM}.jpg", f"{STEM}.xml"):
        shutil.copy(PAGES / name, pages / name)
    data = tmp / "data"
    assert import_pages(pages, data, "test") == 23
    code = cli.main([str(a) for a in ("decode", data / "test.tsv", "--images", data / "lines", "--limit", N_DECODED,
                                      "-o", tmp / "hyp.tsv", "--page-xml", pages / "page", "--alto", tmp / "alto")])
    assert code == 0
    return tmp, data


def _hypotheses(tmp):
    return dict(read_transcriptions(tmp / "hyp.tsv"))


def _points(text):
    return np.array([[float(v) for v in p.split(",")] for p in text.split()])


# --- the layout file written by import ------------------------------------------------------


def test_layout_maps_line_pixels_to_the_page(round_trip):
    _, data = round_trip
    raw = json.loads((data / LAYOUT_FILE).read_text(encoding="utf-8"))
    assert raw["pages"][STEM]["image"] == f"../pages/{STEM}.jpg"  # relative to the dataset
    locations = load_locations(data / LAYOUT_FILE)
    assert len(locations) == 23
    xml_lines = {f"{STEM}_{line.id}": line for line in read_layout(PAGES / f"{STEM}.xml").lines}
    for line_id, loc in locations.items():
        assert loc.page.width == 1275 and loc.page.height == 1650 and loc.scale == 1.0
        np.testing.assert_allclose(loc.polygon, xml_lines[line_id].polygon)
        # the line image's top-left pixel is the polygon's bounding box corner on the page
        x, y = loc.to_page(0, 0)
        assert (x, y) == (math.floor(loc.polygon[:, 0].min()), math.floor(loc.polygon[:, 1].min()))
    first = locations[f"{STEM}_eSc_line_cdf3d480"]
    np.testing.assert_allclose(first.baseline, [[818, 149], [1169.5, 151]])  # ALTO BASELINE
    assert first.region == "eSc_textblock_357d9da2"


def test_layout_with_scale_and_a_second_import(tmp_path):
    pages = tmp_path / "pages"
    pages.mkdir()
    for name in (f"{STEM}.jpg", f"{STEM}.xml"):
        shutil.copy(PAGES / name, pages / name)
    import_pages(pages, tmp_path / "data", "test", scale=0.5)
    loc = load_locations(tmp_path / "data" / LAYOUT_FILE)[f"{STEM}_eSc_line_cdf3d480"]
    # polygons stay in pixels of the page image on disk; the crop offset is in the half-size page
    assert loc.scale == 0.5 and loc.polygon[:, 0].min() == 817
    assert loc.to_page(0, 0) == (816.0, 122.0)   # floor(408.5) / 0.5, floor(61.25) / 0.5
    # a second import into the same folder (another split) keeps the other pages' lines
    other = tmp_path / "other"
    other.mkdir()
    (other / "p.xml").write_text(PAGE_2019, encoding="utf-8")
    shutil.copy(PAGES / f"{STEM}.jpg", other / "scan.jpg")
    import_pages(other, tmp_path / "data", "train")
    locations = load_locations(tmp_path / "data" / LAYOUT_FILE)
    assert len(locations) == 24 and locations["p_l1"].page.key == "p"


def test_locations_found_through_split_and_layout_option(round_trip, tmp_path, capsys):
    from hybrid_hwr.page_output import find_locations
    from hybrid_hwr.split import split_dataset

    _, data = round_trip
    split_dataset(data / "test.tsv", tmp_path / "s", valid=0.0, test=0.5)  # s/lines links to data/lines
    splits = [p for p in (tmp_path / "s" / "train.tsv", tmp_path / "s" / "test.tsv") if p.is_file()]
    ids = [line_id for split in splits for line_id, _ in read_transcriptions(split)]
    assert len(ids) == 23  # one page: one group, in one of the two
    assert set(find_locations(splits, ids=ids)) == set(load_locations(data / LAYOUT_FILE))
    # an image given by itself needs --layout
    image = data / "lines" / f"{ids[0]}.png"
    with pytest.raises(HwrError, match=f"line {ids[0]} was not imported from a page"):
        find_locations([image], ids=[ids[0]])
    assert ids[0] in find_locations([image], layout=data / LAYOUT_FILE, ids=[ids[0]])
    code, _, err = run(capsys, "decode", image, "--page-xml", tmp_path / "o", "--alto", tmp_path / "o")
    assert code == 1 and "different folders" in err


# --- PAGE 2019 ------------------------------------------------------------------------------

NCNAME = re.compile(r"^[A-Za-z_][\w.-]*$")
PAGE_POINTS = re.compile(r"^([0-9]+,[0-9]+ )+([0-9]+,[0-9]+)$")


def _local(element):
    return element.tag.rsplit("}", 1)[-1]


def _names(element):
    return [_local(child) for child in element]


def _check_conf(element):
    conf = element.get("conf")
    if conf is not None:
        assert 0.0 <= float(conf) <= 1.0


def test_page_xml_structure(round_trip):
    """What the PAGE 2019 schema requires of the parts written (order of children, types)."""
    tmp, _ = round_trip
    root = ET.parse(tmp / "pages" / "page" / f"{STEM}.xml").getroot()
    assert root.tag == f"{{{PAGE_NS}}}PcGts"
    assert _names(root) == ["Metadata", "Page"]
    assert _names(root[0]) == ["Creator", "Created", "LastChange"]
    page = root[1]
    assert page.get("imageFilename") == f"../{STEM}.jpg"
    assert (page.get("imageWidth"), page.get("imageHeight")) == ("1275", "1650")
    names = _names(page)
    assert names[0] == "ReadingOrder" and set(names[1:]) == {"TextRegion"}
    ids = [e.get("id") for e in root.iter() if e.get("id") is not None]
    assert len(ids) == len(set(ids)) and all(NCNAME.match(i) for i in ids)
    refs = [r.get("regionRef") for r in page.iterfind("p:ReadingOrder/p:OrderedGroup/p:RegionRefIndexed", P)]
    assert refs == [r.get("id") for r in page.iterfind("p:TextRegion", P)]
    for region in page.iterfind("p:TextRegion", P):
        assert _names(region)[0] == "Coords" and set(_names(region)[1:]) == {"TextLine"}
    for element in root.iter():
        if _local(element) in ("Coords", "Baseline"):
            assert PAGE_POINTS.match(element.get("points")), element.get("points")
        if _local(element) == "TextEquiv":
            assert _names(element) == ["Unicode"]
            _check_conf(element)
    lines = list(page.iterfind(".//p:TextLine", P))
    assert len(lines) == N_DECODED
    for line in lines:
        names = _names(line)
        # TextLine: Coords, Baseline?, Word*, TextEquiv (last)
        assert names[0] == "Coords" and names[-1] == "TextEquiv"
        middle = names[1:-1]
        assert middle == ["Baseline"] * middle.count("Baseline") + ["Word"] * middle.count("Word")
        for word in line.iterfind("p:Word", P):
            assert _names(word) == ["Coords", "TextEquiv"]


def test_page_xml_lines_words_and_texts(round_trip):
    tmp, data = round_trip
    hypotheses = _hypotheses(tmp)
    assert len(hypotheses) == N_DECODED
    locations = load_locations(data / LAYOUT_FILE)
    root = ET.parse(tmp / "pages" / "page" / f"{STEM}.xml").getroot()
    lines = list(root.iterfind(".//p:TextLine", P))
    # one TextLine per decoded line, with its id and polygon (rounded to whole pixels)
    assert [f"{STEM}_{line.get('id')}" for line in lines] == list(hypotheses)
    for line in lines:
        line_id = f"{STEM}_{line.get('id')}"
        polygon = _points(line.find("p:Coords", P).get("points"))
        np.testing.assert_allclose(polygon, locations[line_id].polygon, atol=0.5)
        text = line.find("p:TextEquiv/p:Unicode", P).text
        assert text == hypotheses[line_id]
        words = list(line.iterfind("p:Word", P))
        assert " ".join(w.find("p:TextEquiv/p:Unicode", P).text for w in words) == text
        lo, hi = polygon.min(axis=0), polygon.max(axis=0)
        starts = []
        for word in words:
            box = _points(word.find("p:Coords", P).get("points"))
            assert len(box) == 4 and (box.min(axis=0) >= lo).all() and (box.max(axis=0) <= hi).all()
            assert box[:, 0].max() > box[:, 0].min()  # every word has a width
            starts.append(box[:, 0].min())
        assert starts == sorted(starts) and len(set(starts)) == len(starts)  # left to right
        # some words are confident, and the line's confidence is between its words'
        confs = [float(w.find("p:TextEquiv", P).get("conf")) for w in words]
        line_conf = float(line.find("p:TextEquiv", P).get("conf"))
        assert min(confs) <= line_conf <= max(confs)
    assert lines[0].find("p:Baseline", P).get("points") == "818,149 1170,151"


def test_page_xml_imports_back(round_trip):
    tmp, _ = round_trip
    again = tmp / "again"
    # tmp/pages/page/<stem>.xml names its image "../<stem>.jpg": the folder's parent, as in exports
    assert import_pages(tmp / "pages" / "page", again, "test") == N_DECODED
    assert dict(read_transcriptions(again / "test.tsv")) == _hypotheses(tmp)


def _page_schema():
    spec = importlib.util.find_spec("ocrd_validators")    # found, not imported: only its data is read
    path = spec and spec.submodule_search_locations and Path(spec.submodule_search_locations[0]) / "page.xsd"
    if not path or not path.is_file():
        pytest.skip("the PAGE 2019 schema comes with `pip install --no-deps ocrd` (make install)")
    etree = pytest.importorskip("lxml.etree")
    return etree, etree.XMLSchema(etree.parse(str(path)))


def test_page_xml_is_valid_against_the_official_schema(round_trip):
    etree, schema = _page_schema()
    tmp, _ = round_trip
    document = etree.parse(str(tmp / "pages" / "page" / f"{STEM}.xml"))
    assert "2019-07-15" in document.getroot().tag
    assert schema.validate(document), schema.error_log
    # the schema does see order: a line whose text comes before its coordinates is refused
    line = document.find(".//{%s}TextLine" % PAGE_NS)
    line.insert(0, line.find("{%s}TextEquiv" % PAGE_NS))
    assert not schema.validate(document)


# --- ALTO v4 --------------------------------------------------------------------------------


def test_alto_structure_and_texts(round_trip):
    tmp, data = round_trip
    root = ET.parse(tmp / "alto" / f"{STEM}.xml").getroot()
    assert root.tag == f"{{{ALTO_NS}}}alto"
    assert _names(root) == ["Description", "Layout"]
    assert _names(root[0]) == ["MeasurementUnit", "sourceImageInformation", "Processing"]
    assert root[0][0].text == "pixel"
    page = root.find("a:Layout/a:Page", A)
    assert (page.get("WIDTH"), page.get("HEIGHT"), page.get("PHYSICAL_IMG_NR")) == ("1275", "1650", "1")
    assert _names(page) == ["PrintSpace"]
    hypotheses = _hypotheses(tmp)
    locations = load_locations(data / LAYOUT_FILE)
    lines = list(page.iterfind("a:PrintSpace/a:TextBlock/a:TextLine", A))
    assert [f"{STEM}_{line.get('ID')}" for line in lines] == list(hypotheses)
    for line in lines:
        line_id = f"{STEM}_{line.get('ID')}"
        names = _names(line)
        # TextLine: Shape, then String (SP String)*
        assert names[0] == "Shape" and names[1::2] == ["String"] * len(names[1::2])
        assert set(names[2::2]) <= {"SP"} and names[-1] == "String"
        polygon = np.array([float(v) for v in line.find("a:Shape/a:Polygon", A).get("POINTS").split()]).reshape(-1, 2)
        np.testing.assert_allclose(polygon, locations[line_id].polygon, atol=0.01)
        x, y, w, h = (float(line.get(k)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))
        strings = list(line.iterfind("a:String", A))
        assert " ".join(s.get("CONTENT") for s in strings) == hypotheses[line_id]
        starts = []
        for s in strings:
            sx, sy, sw, sh = (float(s.get(k)) for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT"))
            assert x - 0.01 <= sx and sx + sw <= x + w + 0.01 and y - 0.01 <= sy and sy + sh <= y + h + 0.01
            assert sw > 0 and sh > 0 and 0.0 <= float(s.get("WC")) <= 1.0
            starts.append(sx)
        assert starts == sorted(starts)
    # the ALTO file imports back too (it names its image by a path outside its folder: allowed here)
    from hybrid_hwr.data import allow_outside_paths

    allow_outside_paths(True)
    try:
        assert import_pages(tmp / "alto", tmp / "again_alto", "test") == N_DECODED
    finally:
        allow_outside_paths(False)
    assert dict(read_transcriptions(tmp / "again_alto" / "test.tsv")) == hypotheses


# --- errors and the word mapping on planted lines -------------------------------------------


def test_page_xml_without_layout_is_one_error(tmp_path, capsys, sample):
    # the bundled sample lines were not imported from pages: no layout.json
    code, _, err = run(capsys, "decode", sample / "test.tsv", "--limit", 1, "--page-xml", tmp_path / "out")
    errors = [line for line in err.splitlines() if line.startswith("hybrid-hwr: error:")]
    assert code == 1 and len(errors) == 1 and "was not imported from a page" in errors[0]
    assert not (tmp_path / "out").exists()
    code, _, err = run(capsys, "decode", "--emissions", tmp_path / "e.npz", "--alto", tmp_path / "out")
    assert code == 1 and "need --layout FILE" in err


PAGE_2019 = f"""<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="{PAGE_NS}">
 <Page imageFilename="scan.jpg" imageWidth="1275" imageHeight="1650">
  <TextRegion id="r1"><Coords points="0,0 400,0 400,200 0,200"/>
   <TextLine id="l1"><Coords points="100,100 300,100 300,150 100,150"/>
    <TextEquiv><Unicode>planted</Unicode></TextEquiv></TextLine>
  </TextRegion>
 </Page>
</PcGts>
"""


def test_place_words_on_a_triangle_and_glued_tokens(tmp_path):
    (tmp_path / "p.xml").write_text(PAGE_2019.replace("100,100 300,100 300,150 100,150", "100,100 300,100 100,150"),
                                    encoding="utf-8")
    shutil.copy(PAGES / f"{STEM}.jpg", tmp_path / "scan.jpg")
    import_pages(tmp_path, tmp_path / "data", scale=0.5)
    loc = load_locations(tmp_path / "data" / LAYOUT_FILE)["p_l1"]
    # line image x 0..100 is page x 100..300; tokens "l'" "État" "," display as one word
    hyp = Hypothesis("l' État , oui", 0.0, 0.0,
                     words=[WordBox("l'", 0, 1, 0.0, 10.0, 0.9), WordBox("État", 2, 3, 10.0, 40.0, 0.5),
                            WordBox(",", 4, 4, 40.0, 45.0, 0.8), WordBox("oui", 5, 6, 50.0, 100.0, math.nan)])
    placed = place_words(loc, "l'État, oui", hyp)
    assert [w.text for w in placed.words] == ["l'État,", "oui"]
    assert placed.words[0].confidence == 0.5 and math.isnan(placed.words[1].confidence)
    assert placed.confidence == 0.5
    np.testing.assert_allclose(placed.words[0].box, (100, 100, 190, 150))
    # right half of the triangle: below the hypotenuse from (200, 100) to (300, 100) it is 25 px high at x=200
    np.testing.assert_allclose(placed.words[1].box, (200, 100, 300, 125))
    with pytest.raises(HwrError, match="was not imported from a page"):
        write_pages([("nope", "x", hyp)], {"p_l1": loc}, tmp_path / "out")


def test_an_empty_line(tmp_path):
    (tmp_path / "p.xml").write_text(PAGE_2019, encoding="utf-8")
    shutil.copy(PAGES / f"{STEM}.jpg", tmp_path / "scan.jpg")
    import_pages(tmp_path, tmp_path / "data")
    locations = load_locations(tmp_path / "data" / LAYOUT_FILE)
    empty = [("p_l1", "", Hypothesis("", 0.0, 0.0))]
    (page,) = write_pages(empty, locations, tmp_path / "page", "page")
    line = ET.parse(page).getroot().find(".//p:TextLine", P)
    assert _names(line) == ["Coords", "TextEquiv"] and line.find("p:TextEquiv", P).get("conf") is None
    # ALTO's TextLine needs a String: the empty line is left out of its block
    (alto,) = write_pages(empty, locations, tmp_path / "alto", "alto")
    assert ET.parse(alto).getroot().find(".//a:TextLine", A) is None
    with pytest.raises(HwrError, match="unknown page format"):
        write_pages(empty, locations, tmp_path / "x", "hocr")
