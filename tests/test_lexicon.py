"""Lexicon files, alphabet checks and the prefix tree arrays."""

from pathlib import Path

import numpy as np
import pytest

from hybrid_hwr.errors import HwrError
from hybrid_hwr.lexicon import (build_prefix_tree, describe_rejected, encode_words, lexicon_tree,
                                load_lexicon, save_lexicon, split_by_alphabet)
from hybrid_hwr.text import tokenize

ROOT = Path(__file__).resolve().parents[1]


def test_load_lexicon_keeps_order_and_drops_duplicates(tmp_path):
    path = tmp_path / "lex.txt"
    path.write_text("the\n\nl'\nÉtat\nthe\n  .  \n", encoding="utf-8")
    assert load_lexicon(path) == ["the", "l'", "État", "."]
    save_lexicon(["a", "b"], path)
    assert load_lexicon(path) == ["a", "b"]


@pytest.mark.parametrize("content, message", [
    (b"", "empty lexicon"),
    (b"\n  \n", "empty lexicon"),
    (b"good\nbad word\n", r"lex.txt:2: a lexicon line holds one word"),
    (b"good\nfine\n\xff\xfe\n", r"lex.txt:3: lexicon is not UTF-8"),
    (b"ok\x00\x01\n", r"lex.txt:1:"),
])
def test_bad_lexicon_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "lex.txt"
    path.write_bytes(content)
    with pytest.raises(HwrError, match=message):
        load_lexicon(path)


def test_missing_lexicon(tmp_path):
    with pytest.raises(HwrError, match="no such lexicon"):
        load_lexicon(tmp_path / "nope.txt")


def test_words_outside_the_alphabet_are_counted_and_returned():
    words = ["cat", "État", "dog", "naïve", "a-b", "c d"]
    kept, rejected = split_by_alphabet(words, list(" abcdgostn-"))
    assert kept == ["cat", "dog", "a-b"]
    assert rejected == {"État": "É", "naïve": "evï", "c d": " "}
    message = describe_rejected(rejected, len(words), "en.txt")
    assert message.startswith("en.txt: 3 of 6 words use characters outside")


def _random_lexicon(rng, n_words, alphabet_size):
    words = set()
    while len(words) < n_words:
        length = rng.integers(1, 7)
        words.add(tuple(rng.integers(0, alphabet_size, length).tolist()))
    return sorted(words)


def test_prefix_tree_enumerates_exactly_the_lexicon():
    rng = np.random.default_rng(0)
    spellings = _random_lexicon(rng, 400, 5)
    rng.shuffle(spellings)
    spellings.append(spellings[7])     # two word ids with one spelling (homophones)
    tree = build_prefix_tree(spellings)
    found = sorted((tuple(s), w) for s, w in tree.words())
    assert found == sorted((tuple(s), w) for w, s in enumerate(spellings))
    # homophones share the end node; node_word is the first of them
    node = tree.word_node[7]
    assert tree.word_node[len(spellings) - 1] == node
    assert list(tree.word_ids[tree.word_start[node]:tree.word_start[node + 1]]) == [7, len(spellings) - 1]
    assert tree.node_word[node] == 7
    # the number of nodes is the number of distinct non-empty prefixes + the root
    prefixes = {tuple(s[:k]) for s in spellings for k in range(1, len(s) + 1)}
    assert tree.n_nodes == len(prefixes) + 1


def test_prefix_tree_arrays_are_consistent_and_breadth_first():
    spellings = [[2, 0], [2, 1, 3], [0], [2, 1], [1, 1, 1, 1]]
    tree = build_prefix_tree(spellings)
    assert tree.char[0] == -1 and tree.parent[0] == -1 and tree.depth[0] == 0
    for node in range(tree.n_nodes):
        kids = list(range(tree.first_child[node], tree.first_child[node] + tree.n_children[node]))
        walked, child = [], tree.first_child[node]
        while child != -1:
            walked.append(int(child))
            child = tree.next_sibling[child]
        assert walked == kids                                 # contiguous ids = sibling chain
        assert list(tree.char[kids]) == sorted(tree.char[kids])
        assert all(tree.parent[k] == node and tree.depth[k] == tree.depth[node] + 1 for k in kids)
        assert tree.node_word[node] == (tree.word_ids[tree.word_start[node]]
                                        if tree.word_start[node + 1] > tree.word_start[node] else -1)
    assert np.all(np.diff(tree.depth) >= 0)                    # breadth-first numbering
    for w, s in enumerate(spellings):
        assert tree.spelling(tree.word_node[w]) == s
    assert all(a.dtype == np.int32 for a in (tree.char, tree.parent, tree.first_child, tree.n_children,
                                              tree.next_sibling, tree.node_word, tree.word_start,
                                              tree.word_ids, tree.word_node))


def test_lexicon_tree_from_words_and_alphabet():
    symbols = sorted(set("".join(["le", "la", "l'", "État", "les"])) | {" "})
    words = ["la", "le", "les", "l'", "État", "Zoé"]
    tree, kept, rejected = lexicon_tree(words, symbols)
    assert kept == ["la", "le", "les", "l'", "État"] and rejected == {"Zoé": "Zoé"}
    spelled = {"".join(symbols[c] for c in s): kept[w] for s, w in tree.words()}
    assert spelled == {w: w for w in kept}
    with pytest.raises(HwrError, match="outside the model's alphabet"):
        lexicon_tree(["Zoé"], symbols)
    with pytest.raises(HwrError):
        build_prefix_tree([])
    with pytest.raises(HwrError, match="not in the model's alphabet"):
        encode_words(["Zoé"], symbols)


@pytest.mark.parametrize("name, lang", [("en-50k.txt", "en"), ("fr-50k.txt", "fr")])
def test_shipped_lexicons_are_tokens_of_the_tokeniser(name, lang):
    words = load_lexicon(ROOT / "lexicons" / name)
    assert len(words) == 50000
    assert all(tokenize(w, lang) == [w] for w in words)
    assert {".", ",", "the" if lang == "en" else "le"} <= set(words)
