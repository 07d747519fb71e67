"""Train / validation / test splits of a line dataset whose groups never straddle two splits.

Lines of one page (or one writer) look alike, so a line of a page in training and
another in test makes the test optimistic. :func:`split_lines` keeps every *group*
whole: by default the id without its last ``_`` part (the page of the ids that
``hybrid-hwr import`` writes, ``<page>_<line>``), or the first group of ``group_by``, a
regular expression searched in the id (e.g. ``^(wikitexte_\\d+)`` for the text a writer
copied). Groups are shuffled with ``seed`` and given to test, then validation, until each
holds about its fraction of the lines; the rest is training. The same lines and seed give
the same splits.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .data import read_transcriptions
from .errors import HwrError
from .fileio import atomic_write_text

SPLITS = ("train", "valid", "test")


def line_group(line_id: str, group_by: re.Pattern | None = None) -> str:
    """The group of a line id (see the module docstring)."""
    if group_by is None:
        return line_id.rsplit("_", 1)[0] if "_" in line_id else line_id
    match = group_by.search(line_id)
    if match is None:
        raise HwrError(f"--group-by {group_by.pattern!r} does not match line id {line_id!r}")
    return match.group(1) if group_by.groups else match.group(0)


def split_lines(ids, valid: float = 0.1, test: float = 0.1, group_by: str | None = None,
                seed: int = 0) -> dict[str, list[str]]:
    """``{"train": ids, "valid": ids, "test": ids}``, each in the input order."""
    if not (0 <= valid < 1 and 0 <= test < 1 and valid + test < 1):
        raise HwrError(f"split fractions must be >= 0 with valid + test < 1, got valid {valid}, test {test}")
    pattern = None
    if group_by is not None:
        try:
            pattern = re.compile(group_by)
        except re.error as exc:
            raise HwrError(f"--group-by {group_by!r}: not a regular expression ({exc})") from None
    ids = list(ids)
    groups: dict[str, list[str]] = {}
    for line_id in ids:
        groups.setdefault(line_group(line_id, pattern), []).append(line_id)
    order = sorted(groups)
    np.random.default_rng(seed).shuffle(order)
    target = {"test": test * len(ids), "valid": valid * len(ids)}
    chosen = {name: set() for name in SPLITS}
    filled = {"test": 0, "valid": 0}
    for group in order:
        name = next((n for n in ("test", "valid") if filled[n] + len(groups[group]) / 2 <= target[n]), "train")
        chosen[name].add(group)
        if name != "train":
            filled[name] += len(groups[group])
    return {name: [i for i in ids if line_group(i, pattern) in chosen[name]] for name in SPLITS}


def split_dataset(tsv: str | os.PathLike, out_dir: str | os.PathLike, valid: float = 0.1, test: float = 0.1,
                  group_by: str | None = None, seed: int = 0, images: str | os.PathLike | None = None) -> dict:
    """Write ``out_dir/{train,valid,test}.tsv`` from one split file; ``out_dir/lines`` links to
    its image folder (``images``, else ``<dir of tsv>/lines``). Returns {split: line count}."""
    records = read_transcriptions(tsv)
    if not records:
        raise HwrError(f"{tsv}: no line to split")
    text = dict(records)
    parts = split_lines([i for i, _ in records], valid, test, group_by, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, ids in parts.items():
        atomic_write_text(out / f"{name}.tsv", "".join(f"{i}\t{text[i]}\n" for i in ids))
    source = Path(images) if images is not None else Path(tsv).parent / "lines"
    link = out / "lines"
    if source.is_dir() and not link.exists() and source.resolve() != link.resolve():
        link.symlink_to(source.resolve(), target_is_directory=True)
    return {name: len(ids) for name, ids in parts.items()}
