"""Lexicons: word lists and their prefix tree, as flat arrays for Numba decoders.

A lexicon file holds one word a line, UTF-8 (blank lines are ignored, a word holds
no whitespace). Its words are tokens of ``hybrid_hwr.text.tokenize`` — punctuation
marks are words of their own — so that lexicon, LM and WER agree.

The decoder can only spell words whose characters are in its optical model's
alphabet: ``split_by_alphabet`` returns those that are not, with the offending
characters, so they are reported rather than silently lost.

``build_prefix_tree`` shares common prefixes between words. Node 0 is the root
(no character). Nodes are numbered breadth-first, so the children of a node are the
contiguous ids ``first_child[n] .. first_child[n] + n_children[n] - 1`` (sorted by
character id); ``next_sibling`` links them too. A node where a word ends lists the
word ids ``word_ids[word_start[n]:word_start[n + 1]]`` — several when lexicon entries
share a spelling (e.g. two entries mapped to the same characters) — and ``node_word[n]``
is the first of them (-1 elsewhere).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import HwrError


def load_lexicon(path: str | os.PathLike) -> list[str]:
    """Words of a lexicon file, in file order, duplicates removed (first kept)."""
    path = Path(path)
    if not path.is_file():
        raise HwrError(f"{path}: no such lexicon file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        lineno = path.read_bytes()[:exc.start].count(b"\n") + 1
        raise HwrError(f"{path}:{lineno}: lexicon is not UTF-8 text") from None
    words: list[str] = []
    seen: set[str] = set()
    for lineno, line in enumerate(text.splitlines(), 1):
        word = line.strip()
        if not word:
            continue
        if any(ch.isspace() for ch in word) or "\0" in word:
            raise HwrError(f"{path}:{lineno}: a lexicon line holds one word, got {word[:40]!r}")
        if not word.isprintable():
            raise HwrError(f"{path}:{lineno}: control character in lexicon word {word[:40]!r}")
        if word not in seen:
            seen.add(word)
            words.append(word)
    if not words:
        raise HwrError(f"{path}: empty lexicon (no words)")
    return words


def save_lexicon(words: Sequence[str], path: str | os.PathLike) -> None:
    """Write one word a line (UTF-8), atomically."""
    from .fileio import atomic_write_text

    atomic_write_text(path, "".join(w + "\n" for w in words))


def _symbols_of(alphabet) -> list[str]:
    return list(getattr(alphabet, "symbols", alphabet))


def split_by_alphabet(words: Sequence[str], alphabet) -> tuple[list[str], dict[str, str]]:
    """(words spellable with ``alphabet``, {word: its characters outside it}).

    ``alphabet``: a ``data.Alphabet`` or a sequence of symbols. A word holding the
    space symbol is rejected too (the space separates words).
    """
    symbols = set(_symbols_of(alphabet)) - {" "}
    kept: list[str] = []
    rejected: dict[str, str] = {}
    for word in words:
        bad = "".join(sorted(set(word) - symbols))
        if bad:
            rejected[word] = bad
        else:
            kept.append(word)
    return kept, rejected


def describe_rejected(rejected: dict[str, str], n_words: int, lexicon_name: str = "lexicon") -> str:
    """One line for users: how many words cannot be spelled and why."""
    chars = "".join(sorted(set("".join(rejected.values()))))
    examples = ", ".join(list(rejected)[:5])
    return (f"{lexicon_name}: {len(rejected)} of {n_words} words use characters outside the "
            f"model's alphabet ({chars!r}), e.g. {examples}; they cannot be recognised")


@dataclass
class PrefixTree:
    """Lexicon prefix tree as flat arrays (see the module docstring). N nodes, W words."""

    char: np.ndarray          # (N,) int32 symbol id of the node's character, -1 at the root
    parent: np.ndarray        # (N,) int32, -1 at the root
    depth: np.ndarray         # (N,) int32 characters from the root
    first_child: np.ndarray   # (N,) int32, -1 for a leaf
    n_children: np.ndarray    # (N,) int32
    next_sibling: np.ndarray  # (N,) int32, -1 for the last child
    node_word: np.ndarray     # (N,) int32 first word id ending here, -1 if none
    word_start: np.ndarray    # (N+1,) int32 CSR offsets into word_ids
    word_ids: np.ndarray      # (W,) int32 word ids grouped by end node
    word_node: np.ndarray     # (W,) int32 end node of each word id

    @property
    def n_nodes(self) -> int:
        return len(self.char)

    def spelling(self, node: int) -> list[int]:
        """Symbol ids from the root to ``node``."""
        ids = []
        while node > 0:
            ids.append(int(self.char[node]))
            node = int(self.parent[node])
        return ids[::-1]

    def words(self) -> list[tuple[list[int], int]]:
        """(spelling, word id) for every word, walking the tree from the root."""
        out = []
        stack = [0]
        while stack:
            node = stack.pop()
            for k in range(self.word_start[node], self.word_start[node + 1]):
                out.append((self.spelling(node), int(self.word_ids[k])))
            child = int(self.first_child[node])
            while child != -1:
                stack.append(child)
                child = int(self.next_sibling[child])
        return out


def encode_words(words: Sequence[str], alphabet) -> list[np.ndarray]:
    """Symbol ids of each word; KeyError-free: call ``split_by_alphabet`` first."""
    index = {s: i for i, s in enumerate(_symbols_of(alphabet))}
    try:
        return [np.array([index[ch] for ch in word], dtype=np.int32) for word in words]
    except KeyError as exc:
        raise HwrError(f"lexicon character {exc.args[0]!r} is not in the model's alphabet") from None


def build_prefix_tree(spellings: Sequence[Sequence[int]]) -> PrefixTree:
    """Prefix tree of words given as symbol-id sequences; word id = index in ``spellings``."""
    if len(spellings) == 0:
        raise HwrError("cannot build a prefix tree from an empty lexicon")
    # Build with dicts, then renumber breadth-first so that siblings are contiguous.
    children: list[dict[int, int]] = [{}]
    ends: list[list[int]] = [[]]
    for word_id, spelling in enumerate(spellings):
        if len(spelling) == 0:
            raise HwrError(f"lexicon word {word_id} has an empty spelling")
        node = 0
        for c in spelling:
            c = int(c)
            nxt = children[node].get(c)
            if nxt is None:
                nxt = len(children)
                children[node][c] = nxt
                children.append({})
                ends.append([])
            node = nxt
        ends[node].append(word_id)

    n = len(children)
    order = [0]          # order[new id] = old id
    new_char = [-1]
    for old in order:  # the list grows while iterating: breadth-first
        for c in sorted(children[old]):
            order.append(children[old][c])
            new_char.append(c)
    new_id = np.empty(n, dtype=np.int64)
    new_id[np.array(order)] = np.arange(n)

    char = np.array(new_char, dtype=np.int32)
    parent = np.full(n, -1, dtype=np.int32)
    first_child = np.full(n, -1, dtype=np.int32)
    n_children = np.zeros(n, dtype=np.int32)
    next_sibling = np.full(n, -1, dtype=np.int32)
    depth = np.zeros(n, dtype=np.int32)
    counts = np.zeros(n + 1, dtype=np.int64)
    for old in order:
        new = new_id[old]
        kids = [new_id[children[old][c]] for c in sorted(children[old])]
        if kids:
            first_child[new] = kids[0]
            n_children[new] = len(kids)
            parent[kids] = new
            depth[kids] = depth[new] + 1
            next_sibling[kids[:-1]] = kids[1:]
        counts[new + 1] = len(ends[old])
    word_start = np.cumsum(counts).astype(np.int32)
    word_ids = np.empty(len(spellings), dtype=np.int32)
    word_node = np.empty(len(spellings), dtype=np.int32)
    node_word = np.full(n, -1, dtype=np.int32)
    for old in order:
        new = new_id[old]
        ids = ends[old]
        if ids:
            word_ids[word_start[new]:word_start[new] + len(ids)] = ids
            word_node[ids] = new
            node_word[new] = ids[0]
    return PrefixTree(char=char, parent=parent, depth=depth, first_child=first_child,
                      n_children=n_children, next_sibling=next_sibling, node_word=node_word,
                      word_start=word_start, word_ids=word_ids, word_node=word_node)


def lexicon_tree(words: Sequence[str], alphabet) -> tuple[PrefixTree, list[str], dict[str, str]]:
    """Prefix tree of the words spellable with ``alphabet``.

    Returns (tree, kept words — tree word id i is ``kept[i]``, rejected {word: bad chars}).
    HwrError when no word can be spelled.
    """
    kept, rejected = split_by_alphabet(words, alphabet)
    if not kept:
        raise HwrError(describe_rejected(rejected, len(words)) if rejected else "empty lexicon")
    return build_prefix_tree(encode_words(kept, alphabet)), kept, rejected


# ----------------------------------------------------------------------------- building

# Characters a lexicon token may hold besides letters, digits and combining marks: ASCII
# punctuation (the IAM-OnDB and Copiste transcriptions), a few symbols of French and
# British text, and any Unicode punctuation mark (a one-character token of its own after
# tokenisation) but typographic ornaments. Tokens with other symbols (⁂, ↑, •, ...) are left out.
LEXICON_SYMBOLS = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»£€°§")
ORNAMENTS = frozenset("⁂•·※†‡⁕⁑")


def lexicon_token_ok(token: str) -> bool:
    import unicodedata

    return all(ch.isalnum() or ch in LEXICON_SYMBOLS
               or (unicodedata.category(ch)[0] in "MP" and ch not in ORNAMENTS) for ch in token)


def count_tokens(corpora: Sequence[str | os.PathLike], lang: str) -> "collections.Counter":
    """Token counts of text corpora (plain, .xz/.gz/.bz2, or split files), tokenised with
    :func:`hybrid_hwr.text.tokenize`, the tokeniser of the LMs and the WER."""
    import collections

    from .lm import read_text_lines
    from .text import tokenize

    counts: collections.Counter = collections.Counter()
    for path in corpora:
        for line in read_text_lines(path):
            counts.update(tokenize(line, lang))
    return counts


def most_frequent(counts, size: int | None = None, min_count: int = 1) -> list[str]:
    """Lexicon words of token ``counts``: most frequent first, ties in code-point order, at
    most ``size``, seen at least ``min_count`` times, symbols as :func:`lexicon_token_ok`."""
    ranked = sorted((t for t, c in counts.items() if c >= min_count and lexicon_token_ok(t)),
                    key=lambda t: (-counts[t], t))
    return ranked if size is None else ranked[:size]
