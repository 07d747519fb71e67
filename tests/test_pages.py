"""PAGE / ALTO import on a real page (tests/data/pages, CC-BY copiste) and on planted pages."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from conftest import TEST_DATA, write_png
from hybrid_hwr.data import load_image, read_split, read_transcriptions
from hybrid_hwr.errors import HwrError
from hybrid_hwr.pages import cut_line, import_pages, read_layout

PAGES = TEST_DATA / "pages"
ALTO_XML = PAGES / "imp_wikitexte_0022.xml"
PAGE_XML = PAGES / "page" / "imp_wikitexte_0022.xml"

# Counted by hand in imp_wikitexte_0022.xml: `grep -c '<TextLine'` = 23, `grep -c '<String'` = 23
# (one String per line); the first line is the printed page label.
N_LINES = 23
SOME_TEXTS = {
    "imp_wikitexte_0022_eSc_line_cdf3d480": "imp_wikitexte_0022",
    "imp_wikitexte_0022_eSc_line_efb730a7": "l'AFC depuis 1980.",  # &#x27; entity in the XML
    "imp_wikitexte_0022_eSc_line_7bbc4d4d": "Aquitaine.",
    "imp_wikitexte_0022_eSc_line_e0a7dc2a": "L'Oeil du Kraken est un jeu vidéo d'aventure en 2D gratuit",
}


def test_fixture_counts_by_grep():
    text = ALTO_XML.read_text(encoding="utf-8")
    assert text.count("<TextLine") == N_LINES and text.count("<String") == N_LINES
    assert PAGE_XML.read_text(encoding="utf-8").count("<TextLine") == N_LINES


@pytest.mark.parametrize("xml, kind", [(ALTO_XML, "alto"), (PAGE_XML, "page")])
def test_read_layout_real_page(xml, kind):
    layout = read_layout(xml)
    assert layout.format == kind
    assert len(layout.lines) == N_LINES
    assert all(len(line.polygon) >= 4 for line in layout.lines)
    texts = {f"imp_wikitexte_0022_{line.id}": line.text for line in layout.lines}
    assert {k: texts[k] for k in SOME_TEXTS} == SOME_TEXTS
    assert (layout.width, layout.height) == (1275, 1650)


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("imported")
    n_alto = import_pages(PAGES, out / "alto", "test")  # the directory holds the ALTO file
    n_page = import_pages(PAGES / "page", out / "page")  # image named "../imp_wikitexte_0022.jpg"
    return n_alto, n_page, out


def test_import_alto_and_page_give_same_lines(imported):
    n_alto, n_page, out = imported
    assert n_alto == n_page == N_LINES
    alto = read_split(out / "alto" / "test.tsv")
    page = read_split(out / "page" / "all.tsv")
    assert [(l.id, l.text) for l in alto] == [(l.id, l.text) for l in page]
    assert {l.id: l.text for l in alto if l.id in SOME_TEXTS} == SOME_TEXTS
    for a, p in zip(alto, page):
        image = Image.open(a.image_path)
        assert image.mode == "L"
        # PAGE coordinates are the ALTO ones rounded to integers: at most one pixel apart
        assert abs(image.size[0] - Image.open(p.image_path).size[0]) <= 1
        assert abs(image.size[1] - Image.open(p.image_path).size[1]) <= 1


def test_import_matches_bundled_sample_lines(imported, sample):
    """The bundled test lines of this page were cut from the full-size scan by the dataset authors."""
    _, _, out = imported
    imported_lines = {l.id: l for l in read_split(out / "alto" / "test.tsv")}
    sample_lines = [l for l in read_split(sample / "test.tsv") if l.id.startswith("imp_wikitexte_0022_")]
    assert len(sample_lines) == 22  # every line but the page label
    for line in sample_lines:
        assert imported_lines[line.id].text == line.text
    # each sample line image matches the imported line with the same id, and no other
    cuts = {k: load_image(v.image_path) for k, v in imported_lines.items()}
    for line in sample_lines:
        reference = load_image(line.image_path)
        h, w = reference.shape
        assert abs(cuts[line.id].shape[0] - h) <= 1 and abs(cuts[line.id].shape[1] - w) <= 1
        # best over one-pixel shifts: the half-size coordinates round either way
        shifts = [(0, 0), (0, 1), (1, 0), (1, 1)]
        same = max(_correlation(reference, cuts[line.id], a, b) for a in shifts for b in shifts)
        assert same > 0.8, line.id
        others = [_correlation(reference, cut) for k, cut in cuts.items() if k != line.id]
        assert max(others) < 0.5, line.id


def _correlation(a, b, shift_a=(0, 0), shift_b=(0, 0)):
    h = min(a.shape[0] - shift_a[0], b.shape[0] - shift_b[0])
    w = min(a.shape[1] - shift_a[1], b.shape[1] - shift_b[1])
    x = a[shift_a[0] : shift_a[0] + h, shift_a[1] : shift_a[1] + w].astype(float).ravel()
    y = b[shift_b[0] : shift_b[0] + h, shift_b[1] : shift_b[1] + w].astype(float).ravel()
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else 0.0


def test_import_outside_polygon_is_white(imported):
    _, _, out = imported
    layout = read_layout(ALTO_XML)
    line = next(l for l in layout.lines if l.id == "eSc_line_3bd0f280")
    cut = load_image(out / "alto" / "lines" / "imp_wikitexte_0022_eSc_line_3bd0f280.png")
    x0, y0 = np.floor(line.polygon.min(axis=0)).astype(int)
    mask = Image.new("L", cut.shape[::-1], 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in line.polygon], fill=255, outline=255)
    inside = np.asarray(mask) > 0
    assert (cut[~inside] == 255).all() and (~inside).sum() > 1000  # the polygon is far from a box
    assert (cut[inside] < 100).sum() > 500  # and there is ink inside


# --- planted pages -----------------------------------------------------------------------


def _black_page(path, width=200, height=100, dpi=None):
    image = Image.fromarray(np.zeros((height, width), np.uint8))
    image.save(path, dpi=dpi) if dpi else image.save(path)
    return path


def test_cut_line_triangle():
    page = np.zeros((50, 60), np.uint8)
    triangle = np.array([[10, 10], [50, 10], [10, 40]], float)
    cut = cut_line(page, triangle)
    assert cut.shape == (30, 40)
    ink = (cut == 0).sum()
    assert abs(ink - 0.5 * 40 * 30) < 0.1 * 40 * 30  # about half of the box
    assert cut[0, 0] == 0 and cut[-1, -1] == 255  # right-angle corner inked, far corner white
    assert cut_line(page, np.array([[100, 100], [120, 100], [120, 120]], float)) is None


PAGE_2013 = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2013-07-15">
 <Page imageFilename="scan.png" imageWidth="400" imageHeight="200">
  <TextRegion id="r1"><Coords points="0,0 399,0 399,199 0,199"/>
   <TextLine id="l1"><Coords points="10,10 110,10 110,30 10,30"/>
    <Word id="w1"><Coords points="10,10 50,10 50,30 10,30"/><TextEquiv><Unicode>word</Unicode></TextEquiv></Word>
    <TextEquiv index="2"><Unicode>second choice</Unicode></TextEquiv>
    <TextEquiv index="1"><Unicode>  first\tchoice </Unicode></TextEquiv>
   </TextLine>
   <TextLine id="l2"><Coords points="10,40 110,40 110,60 10,60"/>
    <Word id="w2"><TextEquiv><Unicode>only</Unicode></TextEquiv></Word>
    <Word id="w3"><TextEquiv><Unicode>words</Unicode></TextEquiv></Word>
   </TextLine>
   <TextLine id="l3"><Coords points="10,70 110,70 110,90 10,90"/></TextLine>
  </TextRegion>
 </Page>
</PcGts>
"""

PAGE_2010 = """<?xml version="1.0" encoding="UTF-8"?>
<PcGts xmlns="http://schema.primaresearch.org/PAGE/gts/pagecontent/2010-03-19">
 <Page imageFilename="C:\\\\scans\\\\old.png" imageWidth="200" imageHeight="100">
  <TextRegion id="r1"><Coords><Point x="0" y="0"/><Point x="199" y="0"/><Point x="199" y="99"/></Coords>
   <TextLine id="a"><Coords><Point x="20" y="20"/><Point x="80" y="20"/><Point x="80" y="44"/><Point x="20" y="44"/></Coords>
    <TextEquiv><Unicode>old format</Unicode></TextEquiv></TextLine>
  </TextRegion>
 </Page>
</PcGts>
"""

ALTO_V2 = """<?xml version="1.0" encoding="UTF-8"?>
<alto xmlns="http://www.loc.gov/standards/alto/ns-v2#">
 <Description><MeasurementUnit>mm10</MeasurementUnit></Description>
 <Layout><Page ID="p1" WIDTH="508" HEIGHT="254"><PrintSpace>
  <TextBlock ID="b1">
   <TextLine ID="t1" HPOS="20" VPOS="20" WIDTH="100" HEIGHT="40">
    <Shape><Polygon POINTS="20,20 120,20 120,60 20,60"/></Shape>
    <String CONTENT="hyphen"/><SP/><String CONTENT="ated"/><HYP CONTENT="-"/>
   </TextLine>
   <TextLine ID="t2" HPOS="20" VPOS="100" WIDTH="60" HEIGHT="30">
    <String CONTENT="box"/><SP/><String CONTENT="only"/>
   </TextLine>
  </TextBlock>
 </PrintSpace></Page></Layout>
</alto>
"""


def test_planted_page_2013_texts(tmp_path):
    (tmp_path / "p.xml").write_text(PAGE_2013, encoding="utf-8")
    _black_page(tmp_path / "scan.png", 400, 200)
    warnings = []
    n = import_pages(tmp_path, tmp_path / "out", on_error=warnings.append)
    assert n == 2 and warnings == []  # l3 has no text: not written
    assert read_transcriptions(tmp_path / "out" / "all.tsv") == [("p_l1", "first choice"), ("p_l2", "only words")]
    assert load_image(tmp_path / "out" / "lines" / "p_l1.png").shape == (20, 100)
    assert import_pages(tmp_path, tmp_path / "out2", keep_empty=True, on_error=warnings.append) == 3
    assert read_transcriptions(tmp_path / "out2" / "all.tsv")[2] == ("p_l3", "")


def test_planted_page_2010_points_and_same_stem_image(tmp_path):
    (tmp_path / "old.xml").write_text(PAGE_2010, encoding="utf-8")
    _black_page(tmp_path / "old.png")  # the named Windows path does not exist: found by file name
    assert import_pages(tmp_path, tmp_path / "out") == 1
    assert load_image(tmp_path / "out" / "lines" / "old_a.png").shape == (24, 60)


def test_planted_alto_v2_units_hyphen_and_box(tmp_path):
    (tmp_path / "v2.xml").write_text(ALTO_V2, encoding="utf-8")
    _black_page(tmp_path / "v2.png", 200, 100, dpi=(127, 127))  # mm10 at 127 dpi: 1/20 px per unit
    assert import_pages(tmp_path, tmp_path / "out") == 2
    assert read_transcriptions(tmp_path / "out" / "all.tsv") == [("v2_t1", "hyphen ated-"), ("v2_t2", "box only")]
    assert load_image(tmp_path / "out" / "lines" / "v2_t1.png").shape == (20, 50)
    assert load_image(tmp_path / "out" / "lines" / "v2_t2.png").shape == (15, 30)


def test_page_size_mismatch_and_scale(tmp_path):
    # the XML describes a 400x200 page but the image was saved at half size
    (tmp_path / "p.xml").write_text(PAGE_2013, encoding="utf-8")
    _black_page(tmp_path / "scan.png", 200, 100)
    import_pages(tmp_path, tmp_path / "out")
    assert load_image(tmp_path / "out" / "lines" / "p_l1.png").shape == (10, 50)
    import_pages(tmp_path, tmp_path / "out2", scale=0.5)
    # x 10..110 -> 2.5..27.5 -> columns 2..27; y 10..30 -> 2.5..7.5 -> rows 2..7
    assert load_image(tmp_path / "out2" / "lines" / "p_l1.png").shape == (6, 26)


def test_bad_pages_are_reported_and_skipped(tmp_path):
    (tmp_path / "good.xml").write_text(PAGE_2013.replace("scan.png", "good.png"), encoding="utf-8")
    _black_page(tmp_path / "good.png", 400, 200)
    (tmp_path / "broken.xml").write_text("<PcGts><Page>", encoding="utf-8")
    (tmp_path / "noimage.xml").write_text(PAGE_2013.replace("scan.png", "lost.tif"), encoding="utf-8")
    (tmp_path / "other.xml").write_text("<html/>", encoding="utf-8")
    warnings = []
    assert import_pages(tmp_path, tmp_path / "out", on_error=warnings.append) == 2
    assert len(warnings) == 3
    assert any("broken.xml" in w and "not well-formed XML" in w for w in warnings)
    assert any("noimage.xml" in w and "page image 'lost.tif' not found" in w for w in warnings)
    assert any("other.xml" in w and "neither PAGE" in w for w in warnings)
    with pytest.raises(HwrError, match="not well-formed"):
        import_pages(tmp_path, tmp_path / "out3", on_error=None)


def test_nothing_to_import(tmp_path):
    with pytest.raises(HwrError, match="no .xml file"):
        import_pages(tmp_path, tmp_path / "out")
    with pytest.raises(HwrError, match="no such directory"):
        import_pages(tmp_path / "missing", tmp_path / "out")
    write_png(tmp_path / "x.png", np.zeros((200, 400), np.uint8))
    untranscribed = PAGE_2013.replace("scan.png", "x.png").split("<TextLine")[0] + "</TextRegion></Page></PcGts>"
    (tmp_path / "x.xml").write_text(untranscribed, encoding="utf-8")
    with pytest.raises(HwrError, match="no text line could be imported"):
        import_pages(tmp_path, tmp_path / "out")
