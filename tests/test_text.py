"""The tokeniser shared by LM text, lexicon and WER, on both datasets' conventions."""

import unicodedata
from pathlib import Path

import pytest

from hybrid_hwr.errors import HwrError
from hybrid_hwr.text import char_tokens, detokenize, fold_text, tokenize, tokenized_line

SAMPLE = Path(__file__).resolve().parents[1] / "hybrid_hwr" / "sample"


@pytest.mark.parametrize("spaced, plain", [
    # IAM-OnDB writes the same text both ways; both must give the same tokens.
    ("Mr . Foot ' s line will be that", "Mr. Foot's line will be that"),
    ("its and don ' t take it", "its and don't take it"),
    ("Left-wing support , a large majority", "Left-wing support, a large majority"),
    ('appear to " prop up " a', 'appear to "prop up" a'),
    ("Ghana ' s Strong man", "Ghana's Strong man"),
])
def test_iamondb_spacing_variants_give_the_same_tokens(spaced, plain):
    assert tokenize(spaced, "en") == tokenize(plain, "en")


@pytest.mark.parametrize("text, tokens", [
    ("Mr. Gaitskell", ["Mr", ".", "Gaitskell"]),
    ("Mr . Foot ' s line", ["Mr", ".", "Foot's", "line"]),
    ("turn down the Foot - Griffiths resolution .",
     ["turn", "down", "the", "Foot", "-", "Griffiths", "resolution", "."]),
    ("But represen-", ["But", "represen", "-"]),           # line-end hyphenation
    ("at the week-end for talks", ["at", "the", "week-end", "for", "talks"]),
    ("the Germans' claim", ["the", "Germans", "'", "claim"]),
    ("yesterday: \"I have", ["yesterday", ":", '"', "I", "have"]),
    ("Peers into # existence", ["Peers", "into", "#", "existence"]),
    ("(1996) cost 3.5 or 1,000?", ["(", "1996", ")", "cost", "3.5", "or", "1,000", "?"]),
    ("Wait...", ["Wait", ".", ".", "."]),
    ("Roy\u2019s \u201cgross\u201d", ["Roy's", '"', "gross", '"']),    # typographic quotes folded
    ("a\u2014b", ["a", "-", "b"]),
])
def test_english_tokens(text, tokens):
    assert tokenize(text, "en") == tokens


@pytest.mark.parametrize("text, tokens", [
    ("de l'État de Californie", ["de", "l'", "État", "de", "Californie"]),
    ("L\u2019Orchestre philharmonique", ["L'", "Orchestre", "philharmonique"]),
    ("existe aujourd'hui encore", ["existe", "aujourd'hui", "encore"]),
    ("qu'aujourd'hui", ["qu'", "aujourd'hui"]),
    ("jusqu'à Prague", ["jusqu'", "à", "Prague"]),
    ("une presqu'île", ["une", "presqu'île"]),
    ("Michael O'Donnell", ["Michael", "O'Donnell"]),
    ("les Américains d'« Asio-Indiens »", ["les", "Américains", "d'", "«", "Asio-Indiens", "»"]),
    ("Puisse-t-il voir !", ["Puisse-t-il", "voir", "!"]),
    ("(en anglais : Indian Americans)", ["(", "en", "anglais", ":", "Indian", "Americans", ")"]),
    ("que 1 % de la", ["que", "1", "%", "de", "la"]),
    ("fondé en 1996 par Chris Roberts,", ["fondé", "en", "1996", "par", "Chris", "Roberts", ","]),
])
def test_french_tokens(text, tokens):
    assert tokenize(text, "fr") == tokens


def test_english_keeps_elided_words_whole():
    assert tokenize("l'État", "en") == ["l'État"]


def test_nfc_and_invisible_characters():
    decomposed = unicodedata.normalize("NFD", "Les États-Unis")
    assert decomposed != "Les États-Unis"
    assert tokenize(decomposed, "fr") == ["Les", "États-Unis"]
    assert tokenize("co\u00adop\u00e9\u200bration\u00a0!", "fr") == ["coopération", "!"]
    assert fold_text("l\u2019an") == "l'an"


def test_tokenize_is_idempotent_on_real_lines():
    lines = [ln.split("\t", 1)[1] for ln in
             (SAMPLE / "train.tsv").read_text(encoding="utf-8").splitlines()]
    assert len(lines) > 100
    for text in lines:
        for lang in ("fr", "en"):
            tokens = tokenize(text, lang)
            assert tokenize(tokenized_line(text, lang), lang) == tokens
            assert tokenize(detokenize(tokens, lang), lang) == tokens
            assert all(tok and not any(ch.isspace() for ch in tok) for tok in tokens)


@pytest.mark.parametrize("tokens, lang, text", [
    (["Mr", ".", "Foot's", "line", ",", '"', "prop", "up", '"', "(", "1996", ")"], "en",
     'Mr. Foot\'s line, "prop up" (1996)'),
    (["L'", "Orchestre", "(", "en", "tchèque", ")", ":", "«", "Praha", "»", "."], "fr",
     "L'Orchestre (en tchèque) : « Praha »."),
])
def test_detokenize(tokens, lang, text):
    assert detokenize(tokens, lang) == text


def test_char_tokens_mark_spaces():
    assert char_tokens("l'État, oui", "fr") == ["l", "'", "<sp>", "É", "t", "a", "t", "<sp>", ",",
                                               "<sp>", "o", "u", "i"]
    assert char_tokens("  ", "en") == []


def test_unknown_language_is_a_clear_error():
    with pytest.raises(HwrError, match="language"):
        tokenize("x", "de")
