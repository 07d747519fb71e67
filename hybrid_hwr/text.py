"""The one tokeniser of the project: LM text, lexicon entries and WER all use it.

A *token* is what the lexicon lists, the word LM counts and the WER compares.
``tokenize(text, lang)`` turns a transcription or a corpus line into tokens:

1. Unicode NFC; typographic variants folded to the ASCII forms the datasets use:
   ``’ ‘ ‛ ` ´ ′`` -> ``'``, ``“ ” „ ‟ ″`` -> ``"``, dashes ``— – ‒ ―`` -> `` - ``
   (a separate token), hyphens ``‐ ‑ −`` -> ``-``,
   ``…`` -> ``...``, no-break / thin spaces -> space, soft hyphen and zero-width
   characters removed.
2. A *word* is a run of letters/digits, possibly joined by a word-internal
   apostrophe or hyphen (``l'État``, ``aujourd'hui``, ``week-end``, ``Roy's``,
   ``Puisse-t-il``), or by ``.``/``,`` between digits (``3.5``, ``1,000``).
3. Every other non-space character is a token of its own: ``Mr. Gaitskell,`` ->
   ``Mr . Gaitskell ,`` (the IAM-OnDB convention: punctuation separated by spaces),
   ``"prop up"`` -> ``" prop up "``, ``represen-`` -> ``represen -``, ``...`` ->
   ``. . .``, ``(1996)`` -> ``( 1996 )``. An apostrophe that is not between two
   letters is punctuation too: ``Germans'`` -> ``Germans '``.
4. ``lang='en'``: IAM-OnDB sometimes spaces clitics (``Foot ' s``, ``don ' t``);
   ``word ' s|t|d|m|ll|re|ve`` is joined back into one word (``Foot's``, ``don't``),
   so both spellings of a line give the same tokens.
5. ``lang='fr'``: an elided article, pronoun or conjunction is split off after its
   apostrophe, which it keeps: ``l'État`` -> ``l' État``, ``qu'aujourd'hui`` ->
   ``qu' aujourd'hui``, ``jusqu'à`` -> ``jusqu' à``. Words that merely contain an
   apostrophe stay whole (``aujourd'hui``, ``presqu'île``, ``O'Donnell``). This keeps
   the lexicon to ``État`` plus ``l'``/``d'``/... instead of every ``l'X``/``d'X``
   pair, and the decoder can still read ``l'État`` written without a gap because
   spaces between words are optional there.

6. ``lang='generic'``: steps 1-3 only, for any other language or script (Greek,
   Cyrillic, Devanagari, ...): letters and digits of every script make words, every
   punctuation mark is a token, and no clitic or elision rule applies.

Case is kept (it is visible in handwriting). ``tokenize`` is idempotent:
``tokenize(" ".join(tokenize(s, lang)), lang) == tokenize(s, lang)``.
``detokenize`` joins tokens back into running text for display; WER compares token
lists, so it never depends on ``detokenize``.

Character LMs use ``char_tokens``: the characters of the tokenised line, with the
word separator written ``<sp>`` (KenLM reserves whitespace).
"""

from __future__ import annotations

import re
import unicodedata

from .errors import HwrError

LANGUAGES = ("en", "fr", "generic")
SPACE_TOKEN = "<sp>"

_FOLD = str.maketrans({
    "\u2019": "'", "\u2018": "'", "\u201b": "'", "`": "'", "\u00b4": "'", "\u2032": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
    # Dashes separate words ("a—b" -> "a - b"); hyphen variants may join them.
    "\u2014": " - ", "\u2013": " - ", "\u2012": " - ", "\u2015": " - ",
    "\u2010": "-", "\u2011": "-", "\u2212": "-",
    "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u2007": " ", "\u200a": " ", "\t": " ",
    "\u00ad": None, "\u200b": None, "\u200c": None, "\u200d": None, "\u2060": None,
    "\ufeff": None,
})



def _mark_class() -> str:
    """A regex character class of every combining mark (categories Mn, Mc, Me): vowel
    signs and viramas of Indic scripts, diacritics left over by NFC, ..."""
    import sys

    ranges, start = [], None
    for cp in range(sys.maxunicode + 1):
        is_mark = unicodedata.category(chr(cp)).startswith("M")
        if is_mark and start is None:
            start = cp
        elif not is_mark and start is not None:
            ranges.append((start, cp - 1))
            start = None
    return "[" + "".join(re.escape(chr(a)) + ("-" + re.escape(chr(b)) if b > a else "") for a, b in ranges) + "]"


# A word: letters/digits ([^\W_]) and the combining marks that follow them, joined by an
# apostrophe or hyphen, or by . or , between two digits. Anything else that is not a
# space is one token per character.
_LETTERS = r"[^\W_](?:[^\W_]|" + _mark_class() + r")*"
_WORD = _LETTERS + r"(?:(?:['\-]|(?<=\d)[.,](?=\d))" + _LETTERS + r")*"
_TOKEN_RE = re.compile(_WORD + r"|\S")

_EN_CLITICS = frozenset({"s", "t", "d", "m", "ll", "re", "ve"})
_FR_ELISIONS = frozenset({
    "l", "d", "j", "m", "n", "s", "t", "c", "ç", "qu",
    "jusqu", "lorsqu", "puisqu", "quoiqu",
})


def fold_text(text: str) -> str:
    """NFC, then the typographic folding of step 1 (no tokenisation)."""
    text = unicodedata.normalize("NFC", text).translate(_FOLD)
    return text.replace("\u2026", "...")


def _is_word(token: str) -> bool:
    return token[:1].isalnum()


def _join_en_clitics(tokens: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if (tok == "'" and out and _is_word(out[-1]) and i + 1 < len(tokens)
                and tokens[i + 1].lower() in _EN_CLITICS):
            out[-1] = out[-1] + "'" + tokens[i + 1]
            i += 2
            continue
        out.append(tok)
        i += 1
    return out


def _split_fr_elisions(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for tok in tokens:
        if tok == "'" and out and out[-1].lower() in _FR_ELISIONS:
            out[-1] += "'"  # "d'« X »" and the re-tokenised "l' État"
            continue
        while "'" in tok:
            head, rest = tok.split("'", 1)
            if head.lower() not in _FR_ELISIONS:
                break
            out.append(head + "'")
            tok = rest
        out.append(tok)
    return out


def tokenize(text: str, lang: str = "en") -> list[str]:
    """Tokens of ``text`` by the rules in the module docstring (``lang``: 'en', 'fr' or 'generic')."""
    if lang not in LANGUAGES:
        raise HwrError(f"unknown language {lang!r} (expected one of {', '.join(LANGUAGES)})")
    tokens = _TOKEN_RE.findall(fold_text(text))
    if lang == "en":
        return _join_en_clitics(tokens)
    if lang == "fr":
        return _split_fr_elisions(tokens)
    return tokens


def tokenized_line(text: str, lang: str = "en") -> str:
    """``tokenize`` joined by single spaces: the form written to LM training text."""
    return " ".join(tokenize(text, lang))


_NO_SPACE_BEFORE = {"en": frozenset(".,;:!?)]}%"), "fr": frozenset(".,)]}")}
_NO_SPACE_AFTER = frozenset("([{")
# generic: closing marks of any script attach to the previous token, opening ones to the next
_GENERIC_BEFORE = frozenset(".,;:!?)]}%\u0964\u0965\u3001\u3002\u060c\u061b\u061f\u0387\u037e")


def _attaches_before(tok: str, lang: str) -> bool:
    if lang != "generic":
        return tok in _NO_SPACE_BEFORE.get(lang, _NO_SPACE_BEFORE["en"])
    return tok in _GENERIC_BEFORE or (len(tok) == 1 and unicodedata.category(tok) in ("Pe", "Pf"))


def _attaches_after(tok: str, lang: str) -> bool:
    if tok in _NO_SPACE_AFTER:
        return True
    return lang == "generic" and len(tok) == 1 and unicodedata.category(tok) in ("Ps", "Pi")


def detokenize(tokens: list[str], lang: str = "en") -> str:
    """Running text for display: ``Mr . Foot's`` -> ``Mr. Foot's``, ``l' État`` -> ``l'État``.

    English attaches ``. , ; : ! ? ) ] } %`` to the previous token; French attaches only
    ``. , ) ] }`` (French typography spaces ``; : ! ? %`` and ``« »``); ``generic`` attaches
    those of English, closing brackets and quotes of any script and the full stops and
    commas of other scripts (``।``, ``。``, ``،``, ...), and opening brackets and quotes to the next token. Straight double
    quotes alternate between opening (attached to the next token) and closing (attached
    to the previous one).
    """
    out: list[str] = []
    glue_next = False
    quote_open = False
    for tok in tokens:
        glue = glue_next or not out
        glue_next = False
        if tok == '"':
            if quote_open:
                glue = True
            else:
                glue_next = True
            quote_open = not quote_open
        elif _attaches_before(tok, lang):
            glue = True
        if _attaches_after(tok, lang) or (lang == "fr" and tok.endswith("'") and len(tok) > 1):
            glue_next = True
        out.append(tok if glue else " " + tok)
    return "".join(out)


def char_tokens(text: str, lang: str = "en") -> list[str]:
    """Character-LM tokens: characters of the tokenised line, ``<sp>`` between tokens."""
    chars: list[str] = []
    for i, tok in enumerate(tokenize(text, lang)):
        if i:
            chars.append(SPACE_TOKEN)
        chars.extend(tok)
    return chars
