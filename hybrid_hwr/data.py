"""Line datasets: split files, IAM ``lines.txt``, line images and the alphabet.

A dataset is a split file ``<dir>/<split>.tsv`` with one ``id<TAB>text`` record a line
(UTF-8), whose images are ``<dir>/lines/<id>.png``; ``images=DIR`` points elsewhere.
Transcriptions are normalised with :func:`normalize_text` (Unicode NFC, single spaces)
as they are read, so every later stage sees the same characters.

Reading a split checks the file (encoding, columns, ids) but not the images: a missing
or broken image is reported by :func:`load_image` when the line is used, so that a batch
(:func:`iter_images`) can skip that one line and process the others.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import unicodedata
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .errors import HwrError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".pgm", ".pbm", ".ppm")

_WHITESPACE = re.compile(r"\s+")


def normalize_text(s: str) -> str:
    """Unicode NFC, no leading/trailing white space, internal white-space runs -> one space."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", s)).strip()


def sample_dir() -> Path:
    """The small CC-BY sample of real lines shipped inside the package (train.tsv, test.tsv, lines/)."""
    return Path(__file__).resolve().parent / "sample"


@dataclass
class Line:
    """One text line of a dataset: its id, its (normalised) transcription and its image file."""

    id: str
    text: str
    image_path: Path


# ---------------------------------------------------------------------------------------
# Paths that leave their folder

# A line id names a file in the image folder, and a page names its image next to the XML:
# an id like "../x" or "/etc/x", or a page image "../../x.png", would read files elsewhere.
# They are refused unless the user allows them (--allow-outside-paths).
_ALLOW_OUTSIDE = False


def allow_outside_paths(allow: bool = True) -> None:
    """Let line ids and page image names point outside their folder (off by default)."""
    global _ALLOW_OUTSIDE
    _ALLOW_OUTSIDE = bool(allow)


def inside_folder(path: Path, folder: Path) -> bool:
    """Whether ``path`` stays within ``folder`` (always true when outside paths are allowed)."""
    if _ALLOW_OUTSIDE:
        return True
    try:
        return Path(os.path.normpath(path)).is_relative_to(os.path.normpath(folder))
    except ValueError:
        return False


# ---------------------------------------------------------------------------------------
# Split files


def read_text_bytes(path: Path, expected: str) -> bytes:
    """The bytes of text file ``path`` without a UTF-8 byte-order mark; a one-line HwrError
    (naming what was ``expected`` there) when it cannot be read."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise HwrError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise HwrError(f"{path}: is a directory, expected {expected}") from None
    except OSError as exc:
        raise HwrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark written by some editors
        raw = raw[3:]
    return raw


def read_transcriptions(tsv: str | Path) -> list[tuple[str, str]]:
    """The ``(id, normalised text)`` records of a ``id<TAB>text`` file, in file order.

    Blank lines are ignored; the text may be empty (``id<TAB>``). Anything else that is
    wrong (not UTF-8, no TAB, empty or duplicate id) raises ``HwrError("file:LINE: ...")``.
    """
    path = Path(tsv)
    raw = read_text_bytes(path, "a .tsv file")
    records: list[tuple[str, str]] = []
    first_seen: dict[str, int] = {}
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            line = line_bytes.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise HwrError(
                f"{path}:{number}: not UTF-8 (byte 0x{line_bytes[exc.start]:02x} at column {exc.start + 1})"
            ) from None
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if "\t" not in line:
            raise HwrError(f"{path}:{number}: missing TAB between id and text")
        line_id, text = line.split("\t", 1)
        line_id = line_id.strip()
        if not line_id:
            raise HwrError(f"{path}:{number}: empty id before the TAB")
        if line_id in first_seen:
            raise HwrError(f"{path}:{number}: duplicate id {line_id!r} (first on line {first_seen[line_id]})")
        first_seen[line_id] = number
        records.append((line_id, normalize_text(text)))
    return records


def read_split(tsv: str | Path, images: str | Path | None = None, limit: int | None = None) -> list[Line]:
    """The lines of a split file ``<dir>/<split>.tsv``; images in ``<dir>/lines/<id>.png`` or ``images/<id>.png``.

    ``limit`` keeps only the first ``limit`` lines. Images are not opened here.
    """
    path = Path(tsv)
    image_dir = Path(images) if images is not None else path.parent / "lines"
    records = read_transcriptions(path)
    if limit is not None:
        records = records[: max(int(limit), 0)]
    for line_id, _ in records:
        if not inside_folder(image_dir / f"{line_id}.png", image_dir):
            raise HwrError(f"{path}: line id {line_id!r} names a file outside the image folder {image_dir} "
                           "(--allow-outside-paths to read it anyway)")
    return [Line(line_id, text, image_dir / f"{line_id}.png") for line_id, text in records]


def read_iam_lines(lines_txt: str | Path, images_root: str | Path, limit: int | None = None) -> list[Line]:
    """Lines of IAM's ``lines.txt`` (``a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop``).

    ``#`` lines are comments; ``|`` separates words. The image of ``a01-000u-00`` is
    ``<images_root>/a01/a01-000u/a01-000u-00.png``. Lines marked ``err`` (segmentation
    flagged by IAM) are kept, as in the standard IAM splits.
    """
    path = Path(lines_txt)
    root = Path(images_root)
    lines: list[Line] = []
    first_seen: dict[str, int] = {}
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise HwrError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        try:
            line = line_bytes.decode("utf-8").rstrip("\r")
        except UnicodeDecodeError:
            raise HwrError(f"{path}:{number}: not UTF-8") from None
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split(maxsplit=8)
        if len(fields) < 9:
            raise HwrError(f"{path}:{number}: expected 9 fields (id status gray components x y w h text), found {len(fields)}")
        line_id, status = fields[0], fields[1]
        if status not in ("ok", "err"):
            raise HwrError(f"{path}:{number}: status must be 'ok' or 'err', found {status!r}")
        parts = line_id.split("-")
        if len(parts) < 3:
            raise HwrError(f"{path}:{number}: id {line_id!r} is not of the form a01-000u-00")
        if line_id in first_seen:
            raise HwrError(f"{path}:{number}: duplicate id {line_id!r} (first on line {first_seen[line_id]})")
        first_seen[line_id] = number
        form = "-".join(parts[:-1])
        text = normalize_text(fields[8].replace("|", " "))
        lines.append(Line(line_id, text, root / parts[0] / form / f"{line_id}.png"))
        if limit is not None and len(lines) >= limit:
            break
    return lines


def read_inputs(
    inputs: Sequence[str | Path], images: str | Path | None = None, limit: int | None = None
) -> list[Line]:
    """The lines named on a command line: split files (``*.tsv``), IAM ``lines.txt`` and/or image files.

    An image stands for itself: its id is the file stem, its text empty. An IAM
    ``*.txt`` file needs ``images`` (the root holding ``a01/a01-000u/...``). ``limit``
    applies to the whole list. Ids must be unique over all inputs.
    """
    lines: list[Line] = []
    for item in inputs:
        path = Path(item)
        if path.suffix.lower() == ".tsv":
            lines.extend(read_split(path, images=images))
        elif path.suffix.lower() == ".txt":
            if images is None:
                raise HwrError(f"{path}: an IAM lines.txt file needs --images ROOT (the folder holding a01/, a02/, ...)")
            lines.extend(read_iam_lines(path, images, limit=limit))
        else:   # an image; a bad one (a directory, a missing file) is reported and skipped when read
            lines.append(Line(path.stem, "", path))
        if limit is not None and len(lines) >= limit:
            break
    if limit is not None:
        lines = lines[: max(int(limit), 0)]
    seen: dict[str, Line] = {}
    for line in lines:
        if line.id in seen:
            raise HwrError(
                f"duplicate line id {line.id!r} ({seen[line.id].image_path} and {line.image_path})"
            )
        seen[line.id] = line
    return lines


# ---------------------------------------------------------------------------------------
# Images


def load_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """A line image as uint8 (H, W): 0 = black ink .. 255 = white paper.

    ``data``: the file's bytes, read elsewhere (a cluster worker without the data path);
    ``path`` then only names the image in messages.

    Reads any format Pillow reads: gray, palette (e.g. 16-level scans), RGB, RGBA / LA
    (composited on white, so transparent paper is paper), 16-bit and 32-bit gray
    (scaled to 8 bits), float images. Raises HwrError naming the file when it is
    missing, unreadable, truncated or empty.
    """
    from PIL import Image, UnidentifiedImageError

    from .preprocess.gray import image_to_gray

    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette-transparency warnings: handled below
            with Image.open(path if data is None else io.BytesIO(data)) as image:
                image.load()
                gray = image_to_gray(image)
    except FileNotFoundError:
        raise HwrError(f"{path}: image not found") from None
    except IsADirectoryError:
        raise HwrError(f"{path}: is a directory, not an image") from None
    except UnidentifiedImageError:
        size = len(data) if data is not None else path.stat().st_size if path.exists() else 0
        what = "empty file" if size == 0 else "not an image Pillow can read"
        raise HwrError(f"{path}: cannot read image ({what})") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise HwrError(f"{path}: cannot read image ({exc})") from None
    if gray.ndim != 2 or gray.shape[0] == 0 or gray.shape[1] == 0:
        raise HwrError(f"{path}: empty image ({'x'.join(map(str, gray.shape))} pixels)")
    return gray


def report_skipped(line: Line, error: Exception) -> None:
    """Default batch error handler: one warning line on stderr."""
    print(f"hybrid-hwr: warning: skipped line {line.id}: {error}", file=sys.stderr, flush=True)


def iter_images(
    lines: Iterable[Line], on_error: Callable[[Line, HwrError], None] | None = report_skipped
) -> Iterator[tuple[Line, np.ndarray]]:
    """``(line, gray image)`` for every line whose image loads; the others go to ``on_error`` and are skipped.

    ``on_error=None`` lets the first HwrError propagate instead.
    """
    for line in lines:
        try:
            gray = load_image(line.image_path)
        except HwrError as exc:
            if on_error is None:
                raise
            on_error(line, exc)
            continue
        yield line, gray


# ---------------------------------------------------------------------------------------
# Alphabet


class Alphabet:
    """The symbol table: one id per character, in code-point order (so ' ' comes first if present).

    Built from training transcriptions and saved with every model (``to_json`` gives a
    JSON-safe value, ``from_json`` reads it back and checks it).
    """

    def __init__(self, symbols: Iterable[str]):
        symbols = list(symbols)
        for symbol in symbols:
            if not isinstance(symbol, str) or len(symbol) != 1:
                raise HwrError(f"alphabet: symbols must be single characters, found {symbol!r}")
        if len(set(symbols)) != len(symbols):
            raise HwrError("alphabet: duplicate symbols")
        self.symbols: list[str] = sorted(symbols)
        self._index = {symbol: i for i, symbol in enumerate(self.symbols)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Alphabet":
        """Every character of the (normalised) texts."""
        chars: set[str] = set()
        for text in texts:
            chars.update(normalize_text(text))
        return cls(chars)

    def encode(self, text: str) -> np.ndarray:
        """Symbol ids (int32) of a text; HwrError names the first character not in the alphabet."""
        text = unicodedata.normalize("NFC", text)
        ids = np.empty(len(text), dtype=np.int32)
        for position, char in enumerate(text):
            index = self._index.get(char)
            if index is None:
                raise HwrError(
                    f"character {char!r} (U+{ord(char):04X}) at position {position + 1} of {text!r} "
                    "is not in the alphabet"
                )
            ids[position] = index
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        symbols = self.symbols
        return "".join(symbols[int(i)] for i in ids)

    def __len__(self) -> int:
        return len(self.symbols)

    def __contains__(self, char: object) -> bool:
        return char in self._index

    def __iter__(self):
        return iter(self.symbols)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Alphabet) and self.symbols == other.symbols

    def __repr__(self) -> str:
        return f"Alphabet({''.join(self.symbols)!r})"

    def index(self, char: str) -> int:
        return self._index[char]

    def to_json(self) -> dict:
        return {"symbols": list(self.symbols)}

    @classmethod
    def from_json(cls, value) -> "Alphabet":
        """Inverse of :meth:`to_json`; also accepts the JSON text or the bare list of symbols."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise HwrError(f"alphabet: not valid JSON ({exc})") from None
        if isinstance(value, dict):
            value = value.get("symbols")
        if not isinstance(value, list):
            raise HwrError("alphabet: expected a list of symbols")
        return cls(value)
