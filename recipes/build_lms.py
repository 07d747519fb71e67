#!/usr/bin/env python
"""Build the shipped lexicons, word 3-gram and character 6-gram and 4-gram LMs, and measure them on validation text.

    .venv/bin/python recipes/build_lms.py --corpora ../shared/corpora \
        --valid-en ../shared/data/iamondb/valid.tsv --valid-fr ../shared/data/copiste/valid.tsv

Stages (each skipped when its output exists, unless --force):
  1. lexicon: the N most frequent tokens (``hybrid_hwr.text.tokenize``) of the corpora
     -> lexicons/<lang>-<N/1000>k.txt, most frequent first (ties alphabetical).
     Tokens with symbols other than punctuation and « » £ € ° § (⁂, ↑, ...) are left out
     (``hybrid_hwr.lexicon.lexicon_token_ok``; ``hybrid-hwr lexicon`` does the same).
  2. LM: lmplz over the same tokenised corpora, vocabulary limited to the lexicon,
     pruned (--prune) -> lm/<lang>-3gram.arpa.gz
  3. character LMs: lmplz over the characters of the tokenised corpora (``<sp>`` between
     tokens), pruned (--char-prune, its first N counts for order N), one per
     --char-order -> lm/<lang>-char6gram.arpa.gz and lm/<lang>-char4gram.arpa.gz, for
     open-vocabulary decoding (the 4-gram is the faster speller of out-of-lexicon words:
     fewer contexts, so fewer search tokens and LM queries).
  4. evaluation: perplexity and OOV rate on the validation text, printed as a
     Markdown table (and written to --report FILE as JSON).

English: brown + eltec-eng; French: eltec-fra. ``--add-train TSV`` adds a dataset's
training transcriptions to the corpora (write such LMs elsewhere with --lexicon-dir /
--lm-dir: nothing from IAM-OnDB may be shipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from hybrid_hwr.lexicon import count_tokens, load_lexicon, most_frequent, save_lexicon
from hybrid_hwr.lm import build_lm, evaluate_lm, load_lm, read_text_lines
from hybrid_hwr.text import tokenize

CORPORA = {"en": ["brown.txt.xz", "eltec-eng.txt.xz"], "fr": ["eltec-fra.txt.xz"]}
def evaluate(lm_path: Path, valid: Path, lang: str, unit: str, lexicon_path: Path | None) -> dict:
    texts = list(read_text_lines(valid))
    ev = evaluate_lm(load_lm(lm_path), texts, lang, unit)
    row = {"lm": str(lm_path), "unit": unit, "valid": str(valid), "lines": ev.n_lines,
           "tokens": ev.n_tokens, "lm_oov_rate": ev.oov_rate, "perplexity": ev.perplexity,
           "perplexity_with_oov": ev.perplexity_with_oov, "lm_mb": lm_path.stat().st_size / 1e6}
    if lexicon_path is not None:
        lexicon = set(load_lexicon(lexicon_path))
        tokens = [t for text in texts for t in tokenize(text, lang)]
        row["lexicon"] = str(lexicon_path)
        row["lexicon_oov_rate"] = sum(t not in lexicon for t in tokens) / len(tokens)
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpora", type=Path, required=True, help="folder of the corpora (.txt.xz)")
    ap.add_argument("--lang", nargs="+", default=["en", "fr"], choices=sorted(CORPORA))
    ap.add_argument("--valid-en", type=Path, help="English validation split (.tsv)")
    ap.add_argument("--valid-fr", type=Path, help="French validation split (.tsv)")
    ap.add_argument("--add-train", type=Path, nargs="*", default=[],
                    help="training split(s) whose text is added to the corpora (not for shipping)")
    ap.add_argument("--lexicon-size", type=int, default=50000)
    ap.add_argument("--order", type=int, default=3)
    ap.add_argument("--prune", type=int, nargs="+", default=[0, 1, 1])
    ap.add_argument("--char-order", type=int, nargs="*", default=[6, 4],
                    help="character LM orders (none, or 0: no character LM)")
    ap.add_argument("--char-prune", type=int, nargs="+", default=[0, 0, 1, 1, 2, 2])
    ap.add_argument("--memory", default="4G", help="lmplz -S")
    ap.add_argument("--lexicon-dir", type=Path, default=Path("lexicons"))
    ap.add_argument("--lm-dir", type=Path, default=Path("lm"))
    ap.add_argument("--force", action="store_true", help="rebuild outputs that exist")
    ap.add_argument("--report", type=Path, help="also write the evaluation rows to this JSON file")
    args = ap.parse_args(argv)

    rows = []
    for lang in args.lang:
        corpora = [args.corpora / name for name in CORPORA[lang]] + list(args.add_train)
        size_tag = f"{args.lexicon_size // 1000}k" if args.lexicon_size % 1000 == 0 else str(args.lexicon_size)
        lexicon_path = args.lexicon_dir / f"{lang}-{size_tag}.txt"
        lm_path = args.lm_dir / f"{lang}-{args.order}gram.arpa.gz"
        char_lm_paths = {order: args.lm_dir / f"{lang}-char{order}gram.arpa.gz" for order in args.char_order if order > 0}
        args.lexicon_dir.mkdir(parents=True, exist_ok=True)
        args.lm_dir.mkdir(parents=True, exist_ok=True)

        if args.force or not lexicon_path.exists():
            t0 = time.time()
            counts = count_tokens(corpora, lang)
            words = most_frequent(counts, args.lexicon_size)
            save_lexicon(words, lexicon_path)
            covered = sum(counts[w] for w in words) / sum(counts.values())
            print(f"[{lang}] lexicon {lexicon_path}: {len(words)} of {len(counts)} token types, "
                  f"{covered:.2%} of corpus tokens ({time.time() - t0:.0f} s)", flush=True)
        if args.force or not lm_path.exists():
            t0 = time.time()
            build_lm(corpora, args.order, lm_path, lang=lang, vocab=lexicon_path,
                     prune=args.prune, memory=args.memory)
            print(f"[{lang}] LM {lm_path}: {lm_path.stat().st_size / 1e6:.1f} MB "
                  f"({time.time() - t0:.0f} s)", flush=True)
        for order, char_lm_path in char_lm_paths.items():
            if args.force or not char_lm_path.exists():
                t0 = time.time()
                build_lm(corpora, order, char_lm_path, lang=lang, unit="char",
                         prune=args.char_prune[:order], memory=args.memory)
                print(f"[{lang}] character LM {char_lm_path}: {char_lm_path.stat().st_size / 1e6:.1f} MB "
                      f"({time.time() - t0:.0f} s)", flush=True)

        valid = getattr(args, f"valid_{lang}")
        if valid is not None:
            rows.append(evaluate(lm_path, valid, lang, "word", lexicon_path))
            for char_lm_path in char_lm_paths.values():
                rows.append(evaluate(char_lm_path, valid, lang, "char", None))
    if args.report:
        args.report.write_text(json.dumps(rows, indent=1) + "\n")

    if rows:
        print("\n| LM | validation | tokens | lexicon OOV | LM OOV | perplexity (excl. OOV) "
              "| perplexity (OOV as <unk>) | LM size |")
        print("|---|---|---|---|---|---|---|---|")
        for r in rows:
            lex_oov = f"{r['lexicon_oov_rate']:.2%}" if "lexicon_oov_rate" in r else "-"
            print(f"| {r['lm']} | {r['valid']} | {r['tokens']} {r['unit']}s | {lex_oov} "
                  f"| {r['lm_oov_rate']:.2%} | {r['perplexity']:.1f} | {r['perplexity_with_oov']:.1f} "
                  f"| {r['lm_mb']:.1f} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
