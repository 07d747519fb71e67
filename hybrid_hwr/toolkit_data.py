"""Line datasets laid out for other toolkits: PyLaia and kraken, imported into our split layout.

PyLaia: a ground-truth file with one line image a line, ``ID TRANSCRIPTION``, the id a
path relative to an image folder, without its extension (``train/im01``); the
transcription is either plain text or PyLaia's character tokens, one symbol per
white-space-separated token with ``<space>`` for the space (``f o r <space> d e t``).
A file is read as tokens when one of its lines holds a ``<space>`` token and every token of
every line is a single character or a ``<...>`` symbol; otherwise as text. An optional image
list (PyLaia's ``*_ids.txt``: one id a line) keeps those ids, in its order.  The image of
``ID`` is ``IMAGES/ID.<ext>`` for the first image extension that exists (or ``IMAGES/ID`` when
the id has one).

kraken: each line image ``NAME.<ext>`` has its transcription beside it in ``NAME.gt.txt``
(UTF-8); a folder is searched recursively, and images without a ``.gt.txt`` are left out.

:func:`import_lines` writes the lines as a dataset of ours: ``OUT/lines/<id>.png`` (8-bit
gray) and ``OUT/<split>.tsv``; ids are the PyLaia ids or the kraken paths relative to the
folder without extension, with every character outside ``[0-9A-Za-z._-]`` replaced by ``_``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

from .data import IMAGE_SUFFIXES, Line, load_image, normalize_text, read_text_bytes
from .errors import HwrError
from .pages import _UNSAFE_ID

SPACE_TOKEN = "<space>"
KRAKEN_SUFFIX = ".gt.txt"
_SYMBOL = re.compile(r"^<[^<>\s]+>$")


def safe_id(name: str) -> str:
    return _UNSAFE_ID.sub("_", name).strip("_") or "_"


def _read_text(path: Path, what: str) -> str:
    raw = read_text_bytes(path, f"the {what}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        number = raw[:exc.start].count(b"\n") + 1
        raise HwrError(f"{path}:{number}: not UTF-8") from None


def _is_token_file(records) -> bool:
    tokens = [t for _, _, text in records for t in text.split()]
    return SPACE_TOKEN in tokens and all(len(t) == 1 or _SYMBOL.match(t) for t in tokens)


def _detokenise(text: str) -> str:
    return "".join(" " if t == SPACE_TOKEN else t for t in text.split())


def read_pylaia(gt_file, images=None, img_list=None) -> list[Line]:
    """The lines of a PyLaia ground-truth file (see the module docstring); ``images``: the image
    folder (default: the file's folder); ``img_list``: a file of ids to keep, in its order."""
    gt_file = Path(gt_file)
    image_dir = Path(images) if images is not None else gt_file.parent
    records, first_seen = [], {}
    for number, row in enumerate(_read_text(gt_file, "PyLaia ground truth").splitlines(), start=1):
        if not row.strip():
            continue
        parts = row.strip().split(maxsplit=1)
        line_id = parts[0]
        if line_id in first_seen:
            raise HwrError(f"{gt_file}:{number}: duplicate id {line_id!r} (first on line {first_seen[line_id]})")
        first_seen[line_id] = number
        records.append((number, line_id, parts[1] if len(parts) > 1 else ""))
    if not records:
        raise HwrError(f"{gt_file}: no line (expected 'ID TRANSCRIPTION' lines)")
    tokens = _is_token_file(records)
    texts = {line_id: normalize_text(_detokenise(text) if tokens else text) for _, line_id, text in records}
    ids = list(texts)
    if img_list is not None:
        ids = [row.strip() for row in _read_text(Path(img_list), "PyLaia image list").splitlines() if row.strip()]
        missing = [i for i in ids if i not in texts]
        if missing:
            raise HwrError(f"{img_list}: {len(missing)} id(s) have no transcription in {gt_file}, e.g. {missing[0]!r}")
        if len(set(ids)) != len(ids):
            raise HwrError(f"{img_list}: an id is listed twice")
    return [Line(line_id, texts[line_id], _image_of(image_dir, line_id)) for line_id in ids]


def _image_of(image_dir: Path, line_id: str) -> Path:
    base = image_dir / line_id
    if base.suffix.lower() in IMAGE_SUFFIXES:
        return base
    for suffix in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES):
        candidate = base.with_name(base.name + suffix)
        if candidate.is_file():
            return candidate
    return base.with_name(base.name + ".png")    # reported as not found when it is read


def read_kraken(folder) -> list[Line]:
    """The lines of a kraken ground-truth folder: every image with a ``.gt.txt`` beside it (recursive)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise HwrError(f"{folder}: no such directory")
    lines = []
    for gt in sorted(folder.rglob("*" + KRAKEN_SUFFIX)):
        stem = gt.name[:-len(KRAKEN_SUFFIX)]
        images = [gt.with_name(stem + s) for s in IMAGE_SUFFIXES + tuple(s.upper() for s in IMAGE_SUFFIXES)]
        image = next((p for p in images if p.is_file()), None)
        if image is None:
            continue     # a transcription without its image: not a line of the dataset
        line_id = str(gt.relative_to(folder).with_name(stem))
        lines.append(Line(line_id, normalize_text(_read_text(gt, "kraken transcription")), image))
    if not lines:
        raise HwrError(f"{folder}: no line image with a {KRAKEN_SUFFIX} transcription beside it")
    return lines


def import_lines(lines, out_dir, split_name: str = "all", keep_empty: bool = False,
                 on_error: Callable[[str], None] | None = None) -> int:
    """Write ``lines`` as ``out_dir/lines/<id>.png`` + ``out_dir/<split>.tsv``; returns the count.

    A line whose image cannot be read is reported through ``on_error`` and skipped
    (``on_error=None``: it raises); lines without text are skipped unless ``keep_empty``.
    """
    from PIL import Image

    from .fileio import atomic_write_text

    out_dir = Path(out_dir)
    lines_dir = out_dir / "lines"
    lines_dir.mkdir(parents=True, exist_ok=True)
    records, seen = [], {}
    for line in lines:
        line_id = safe_id(line.id)
        if line_id in seen:
            raise HwrError(f"ids {seen[line_id]!r} and {line.id!r} both become {line_id!r}")
        seen[line_id] = line.id
        if not line.text and not keep_empty:
            continue
        try:
            gray = load_image(line.image_path)
        except HwrError as exc:
            if on_error is None:
                raise
            on_error(f"skipped line {line.id}: {exc}")
            continue
        Image.fromarray(gray).save(lines_dir / f"{line_id}.png")
        records.append((line_id, line.text))
    if not records:
        raise HwrError("no line could be imported")
    atomic_write_text(out_dir / f"{split_name}.tsv", "".join(f"{i}\t{t}\n" for i, t in records))
    return len(records)
