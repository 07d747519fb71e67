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

LANGUAGES = ("en", "fr")
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

# A word: letters/digits ([^\W_]), joined by an apostrophe or hyphen, or by . or ,
# between two digits. Anything else that is not a space is one token per character.
_WORD = r"[^\W_]+(?:(?:['\-]|(?<=\d)[.,](?=\d))[^\W_]+)*"
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
    """Tokens of ``text`` by the rules in the module docstring (``lang``: 'en' or 'fr')."""
    if lang not in LANGUAGES:
        raise HwrError(f"unknown language {lang!r} (expected one of {', '.join(LANGUAGES)})")
    tokens = _TOKEN_RE.findall(fold_text(text))
    if lang == "en":
        return _join_en_clitics(tokens)
    return _split_fr_elisions(tokens)


def tokenized_line(text: str, lang: str = "en") -> str:
    """``tokenize`` joined by single spaces: the form written to LM training text."""
    return " ".join(tokenize(text, lang))


_NO_SPACE_BEFORE = {"en": frozenset(".,;:!?)]}%"), "fr": frozenset(".,)]}")}
_NO_SPACE_AFTER = frozenset("([{")


def detokenize(tokens: list[str], lang: str = "en") -> str:
    """Running text for display: ``Mr . Foot's`` -> ``Mr. Foot's``, ``l' État`` -> ``l'État``.

    English attaches ``. , ; : ! ? ) ] } %`` to the previous token; French attaches only
    ``. , ) ] }`` (French typography spaces ``; : ! ? %`` and ``« »``). Straight double
    quotes alternate between opening (attached to the next token) and closing (attached
    to the previous one).
    """
    no_space_before = _NO_SPACE_BEFORE.get(lang, _NO_SPACE_BEFORE["en"])
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
        elif tok in no_space_before:
            glue = True
        if tok in _NO_SPACE_AFTER or (lang == "fr" and tok.endswith("'") and len(tok) > 1):
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
